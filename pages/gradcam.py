"""Grad-CAM object associations and reviews."""

import streamlit as st

from pages import ui

ws = ui.workspace()
st.title("Grad-CAM object associations and reviews")
ui.not_implemented("Grad-CAM object associations and reviews", "issue 4")
