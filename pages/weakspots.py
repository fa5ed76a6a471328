"""Weakspots in the decision boundary and their pivotal images (weak-boundary paper 4.1)."""

import streamlit as st

from diagnostics import figures_weakspots as figs
from diagnostics.weakspots import suggest_radius, weakspot_matrix
from pages import ui
from pages.widgets import weakspots as w
from pages.widgets.confusion import heatmap_classes

ws = ui.workspace()
version = ui.current_version(ws)
st.title("Weakspots and pivotal images")
st.caption(
    "Train and eval embeddings are indexed with FAISS. A misclassified sample (labelled A, "
    "predicted B) is a **pivotal image** of a weakspot between A and B when, among its k "
    "nearest other samples that lie within L2 radius d, at least t_perp are labelled B *and* "
    "predicted B: it sits inside a region the model firmly calls B.")
if ws.multi_label:
    st.info("Weakspots need a single-label task (label A predicted as B); this workspace is multi-label.")
    st.stop()

train, eval_ = ui.outputs(ws, "train", version), ui.outputs(ws, "eval", version)
if train.embeddings is None or eval_.embeddings is None:
    st.error(f"Model version {version} gives no embeddings, so there is nothing to search. "
             "Set `[model] embedding_layer` in workspace.toml to a layer that feeds the classifier "
             "(a TorchScript model needs an exported `embed(x)` method instead).")
    st.stop()
box = w.neighbour_data(ws, version)
rep, table = box["rep"], box["table"]
if not len(table.queries):
    st.success("The model makes no mistakes on train or eval: there are no weakspots to find.")
    st.stop()

span = suggest_radius(box["sample"], k=table.k)  # slider range: nearest .. k_max-th distances
c1, c2, c3 = st.columns(3)
k = c1.slider("k (neighbours)", 1, table.k, min(20, table.k), key="ws_k")
purity = c2.slider("purity t_perp", 0.5, 1.0, 0.7, 0.05, key="ws_purity",
                   help="Share of the neighbours within d that must be labelled and predicted B")
suggested = suggest_radius(box["sample"], k=k)
low, high = float(min(span.low, suggested.suggested)), float(max(span.high, suggested.suggested))
w.init_state("ws_radius", float(suggested.suggested), low, high)
radius = c3.slider("radius d (L2)", low, high, step=(high - low) / 200, format="%.3f", key="ws_radius",
                   help=f"Suggested for k={k}: {suggested.suggested:.3f} (median distance "
                   f"to the k-th neighbour); range from the 5% nearest-neighbour to the 95% {table.k}-th "
                   "neighbour distance")
c3.button("Suggested radius", key="ws_radius_reset",
          on_click=lambda v=float(suggested.suggested): st.session_state.update(ws_radius=v))

pivotal, pairs = w.pivotal_at(box, radius=radius, k=k, purity=purity)
m1, m2, m3 = st.columns(3)
m1.metric("Misclassified samples tested", f"{len(table.queries):,}")
m2.metric("Pivotal images (weakspots)", f"{len(pivotal):,}")
m3.metric("Class pairs with weakspots", f"{len(pairs):,}")
st.caption(f"Index: {table.index}. Representative set: {rep.n:,} samples "
           f"({train.n:,} train + {eval_.n:,} eval), model version {version}.")

st.subheader("Weakspots per radius")
counts = w.radius_counts(box, span, radius=radius, found=len(pivotal), k=k, purity=purity)
st.plotly_chart(figs.figure_counts_by_radius(counts, radius=radius, suggested=suggested.suggested),
                key="ws_counts_chart")

st.subheader("Weakspots per class pair")
left, right = st.columns([3, 2])
with left:
    names = rep.class_names
    if pairs.empty:
        ui.empty_chart("No weakspots at these settings: a larger radius d or a lower purity finds some.")
    else:
        matrix = weakspot_matrix(pivotal, len(names))
        shown = heatmap_classes(pairs, len(names))
        if len(shown) < len(names):
            st.caption(f"{len(names):,} classes: the {len(shown)} classes of the pairs with the most weakspots.")
        st.plotly_chart(figs.figure_pair_heatmap(matrix, names, classes=shown), key="ws_pair_heatmap")
        if len(names) > figs.ANNOTATED_LIMIT and st.toggle(f"All {len(names):,} classes", key="ws_pair_overview"):
            st.plotly_chart(figs.figure_pair_heatmap(matrix, names), key="ws_pair_overview_chart")
with right:
    if pairs.empty:
        st.caption("No weakspots at these settings.")
    else:
        w.pairs_table(pairs)
        w.target_picker(ws, pairs)

st.subheader("Pivotal images and their nearest neighbours")
w.pivotal_gallery(ws, version, rep, table, pivotal, pairs, k=k, radius=radius)

notes = st.expander("Notes on pivotal images", key="ws_notes_open", on_change="rerun")
if notes.open:  # drawn when opened
    with notes:
        w.notes(ws, version, pivotal)

if st.checkbox("Show a 2-D map of the embeddings (PCA)", key="ws_map"):
    xy = w.embedding_map(box)
    hover = [f"{s}:{i} {rep.class_names[a]}→{rep.class_names[b]}"
             for s, i, a, b in zip(rep.splits, rep.indices, rep.labels, rep.preds)]
    st.plotly_chart(figs.figure_embedding_map(xy, rep.labels, rep.class_names, pivotal["row"], hover=hover),
                    key="ws_map_chart")
