"""The confusion matrix, confused pairs and the w-os what-if slider."""

import streamlit as st

from pages import ui

ws = ui.workspace()
st.title("The confusion matrix, confused pairs and the w-os what-if slider")
ui.not_implemented("the confusion matrix, confused pairs and the w-os what-if slider", "issue 3")
