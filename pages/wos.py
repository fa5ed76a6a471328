"""The w-os what-if slider: post-hoc repair of the chosen targets, instantly."""

import streamlit as st

from pages import ui

ws = ui.workspace()
st.title("What-if: w-os post-hoc repair")
ui.not_implemented("the w-os what-if slider", "issue 3")
