"""One sample: the image, label and prediction, top-k, Grad-CAM, neighbours, where it appears, reviews.

Opened from any gallery (each thumbnail links here) or by URL: ``?split=eval&index=123`` with the
workspace and model version.
"""

import streamlit as st

from pages import ui
from pages.widgets import galleries as G
from pages.widgets import sample as S

ws = ui.workspace()
version = ui.current_version(ws)
st.title("Sample")
st.caption("Everything known about one image: the model's prediction and top-k probabilities, Grad-CAM of the "
           "prediction and of the label, its nearest neighbours in embedding space (weakspots), its gradient "
           "scores when they are computed, the repair runs that changed it, and its reviews.")

split, index = ui.current_sample(ws)
G.find_sample(ws, version)
S.navigation(ws, split, index)
out = ui.outputs(ws, split, version)
info = S.header(ws, out, split, index)
S.gradcam(ws, split, index, version, info)
box = S.neighbours(ws, split, index, version, info)
S.appearances(ws, split, index, version, box)
S.reviews(ws, split, index, version)
