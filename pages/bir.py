"""BIR: detrimental training data found with a small clean reserved set, and the repair that keeps
what is useful in it ("Retaining Beneficial Information from Detrimental Data for DNN Repair")."""

import streamlit as st

from diagnostics import run_bir
from pages import ui
from pages.widgets import bir as W

ws = ui.workspace()
version = ui.current_version(ws)
st.title("BIR: detrimental training data")
st.caption("A small clean *reserved set* shows which layers can learn from clean data (one epoch per candidate "
           "layer subset); training them gives phi. A train sample whose loss under phi is higher than under the "
           "model, s(z) = L(z; phi) − L(z; θ) > log 1.05, is *detrimental* (mislabelled or misleading). The repair "
           "moves each detrimental image one energy step towards phi's view, relabels it with phi's soft label, "
           "and retrains the chosen layers on those plus as many other samples (the Repair section below).")
if ws.multi_label:
    st.info("BIR needs a single-label workspace (its losses are softmax cross-entropies).")
    st.stop()

reserved = W.reserved_summary(ws, version)
if reserved is None:
    st.stop()
found = run_bir.stored(ws, version)
if found is None or found.get("scores") is None:
    W.job_panel(ws, version)
    W.finished_runs(ws, version)
    st.stop()
W.layer_losses(found)
flagged = W.scores_view(ws, version, found)
W.samples(ws, version, found, flagged)
W.launch(ws, version)
