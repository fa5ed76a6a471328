"""Repair methods and fine-tuning jobs."""

import streamlit as st

from pages import ui

ws = ui.workspace()
st.title("Repair methods and fine-tuning jobs")
ui.not_implemented("repair methods and fine-tuning jobs", "issue 7")
