"""Per-sample gradient scores and the noisy-label split."""

import streamlit as st

from pages import ui

ws = ui.workspace()
st.title("Per-sample gradient scores and the noisy-label split")
ui.not_implemented("per-sample gradient scores and the noisy-label split", "issue 5")
