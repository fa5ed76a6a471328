"""Streamlit pieces of the Neurons page: the spurious sets, per-class deltas, a neuron's gallery."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from diagnostics import neurons
from pages import ui


def summary(found: dict) -> None:
    s = found["scores"]
    c = st.columns(4)
    c[0].metric("Neurons", f"{s.deltas.shape[1]:,}")
    c[1].metric("Classes with mistakes and hits", f"{int(s.valid.sum())} of {len(s.valid)}")
    c[2].metric("Spurious for every class", f"{int(s.spurious_all.sum()):,}",
                help="Rule 'all' (the default): a neuron whose delta exceeds lambda in every class; these are "
                     "zeroed by the neurontune repair.")
    c[3].metric("Spurious for some class", f"{int(s.spurious_any.sum()):,}",
                help=f"Rule 'any': a neuron whose delta exceeds lambda ({s.lam:g}) in at least one class. At a "
                     "small lambda most neurons qualify; only the rule 'any' would zero them.")
    st.caption(f"Scored on the {found['split']} split ({found['outputs'].n:,} samples).")


def class_deltas(ws, found: dict) -> None:
    s = found["scores"]
    st.subheader("Per-neuron delta for one class")
    valid = [k for k in range(len(s.valid)) if s.valid[k]]
    if not valid:
        ui.empty_chart("No class has both misclassified and correctly classified held-out samples.")
        return
    k = st.selectbox("Class", valid, format_func=lambda i: ws.class_names[i], key="nt_class")
    frame = neurons.class_neuron_deltas(s.deltas, k, spurious=s.spurious_all)
    show = frame.head(60)
    colours = ["#b2182b" if sp else "#7f7f7f" for sp in show["spurious"]]
    fig = go.Figure(go.Bar(x=show["neuron"].astype(str), y=show["delta"], marker_color=colours))
    # neuron ids are numbers: without a category axis plotly places the bars by id and loses the sort
    fig.update_layout(height=300, xaxis={"type": "category", "title": "neuron (sorted by delta, largest first; "
                                                                       "red: spurious for every class)"},
                      yaxis_title="delta (median activation, wrong − right)", margin={"t": 20})
    st.plotly_chart(fig, key="nt_deltas")


def neuron_gallery(ws, found: dict) -> None:
    """What a neuron "sees": the held-out images that activate it most."""
    s, out = found["scores"], found["outputs"]
    st.subheader("What a neuron sees")
    spurious = np.flatnonzero(s.spurious_all | s.spurious_any)
    options = list(spurious) + [i for i in range(s.deltas.shape[1]) if i not in set(spurious)]
    neuron = st.selectbox("Neuron", options, key="nt_neuron",
                          format_func=lambda i: f"{i}" + (" (spurious)" if s.spurious_all[i] or s.spurious_any[i]
                                                         else ""))
    top = neurons.top_activating(np.asarray(out.embeddings), k=12, neurons=[int(neuron)])
    rows = top["row"].to_numpy()
    names = ws.class_names
    ui.thumbnails(ws, found["split"], out.indices[rows],
                  [f"{names[int(out.labels[r])]} → {names[int(out.preds[r])]}" for r in rows], columns=6, width=96)
