"""FAISS weakspots and pivotal images."""

import streamlit as st

from pages import ui

ws = ui.workspace()
st.title("FAISS weakspots and pivotal images")
ui.not_implemented("FAISS weakspots and pivotal images", "issue 6")
