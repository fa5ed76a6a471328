"""Neurons: which embedding neurons drive the mistakes (NeuronTune-style; our reading of the method)."""

import streamlit as st

from diagnostics import run_neurons
from pages import ui
from pages.widgets import neurons as W
from workspace.errors import WorkspaceError

ws = ui.workspace()
version = ui.current_version(ws)
st.title("Neurons")
st.caption("For each class and each embedding neuron (the head's input): delta = median activation on the "
           "class's misclassified held-out samples − median on its correctly classified ones. A neuron with "
           "delta > λ for every class fires more when the model is wrong, whatever the class: a *spurious* neuron. "
           "The **neurontune** repair zeroes those neurons and retrains the head with class-balanced sampling. "
           "This is our reading of NeuronTune (Zheng et al.), whose full method we do not have.")
if ws.multi_label:
    st.info("Neuron scores need a single-label workspace.")
    st.stop()
lam = st.slider("λ: the margin a delta must exceed", 0.0, 2.0, 0.0, 0.05, key="nt_lambda")
try:
    found = run_neurons.neuron_scores(ws, version, lam=lam)
except WorkspaceError as exc:
    st.error(str(exc))
    st.stop()
if found["warning"]:
    st.warning(found["warning"].capitalize() + ".")
W.summary(found)
W.class_deltas(ws, found)
W.neuron_gallery(ws, found)
st.page_link("pages/repair.py", label="Repair with neurontune (head scope)", icon=":material/build:")
