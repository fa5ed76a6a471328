"""Bias triplets."""

import streamlit as st

from pages import ui

ws = ui.workspace()
st.title("Bias triplets")
ui.not_implemented("bias triplets", "issue 3")
