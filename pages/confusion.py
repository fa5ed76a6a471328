"""Confusion matrix (rates and counts), two versions side by side, most confused pairs and their mistakes."""

import numpy as np
import streamlit as st

from diagnostics.confusion import per_class_metrics
from diagnostics.figures_confusion import confusion_heatmap, matrix_overview
from pages import ui
from pages.widgets import confusion as w
from pages.widgets.controls import counted_select
from workspace.targets import Target

ws = ui.workspace()
st.title("Confusion matrix and confused pairs")
error_name = "type2conf" if ws.multi_label else "type1conf"

c1, c2, c3 = st.columns(3)
with c1:
    version = w.pick_version(ws, "conf_version")
with c2:
    split = st.selectbox("Split", w.SPLITS, key="conf_split")
with c3:
    show = st.radio("Colour by", ["rates", "counts"], horizontal=True, key="conf_show",
                    disabled=ws.multi_label, help="Hover shows both")
out = ui.outputs(ws, split, version)
if out.n == 0:
    st.error(f"No usable images in the {split} split.")
    st.stop()
t = w.tables(ws, out)
names = list(out.class_names)
top_pair = t["pairs"].iloc[0] if len(t["pairs"]) else None

m1, m2, m3 = st.columns(3)
m1.metric("Accuracy" if not ws.multi_label else "Exact-match accuracy", f"{out.accuracy:.2%}")
m2.metric("Images", f"{out.n:,}")
if top_pair is not None:
    m3.metric("Most confused pair", f"{top_pair.a} / {top_pair.b}", f"{error_name} {top_pair.conf:.3f}",
              delta_color="off", delta_arrow="off")

st.subheader("Confusion matrix")
if ws.multi_label:
    st.caption("Multi-label: cell (A, B) = P(A and B predicted | A present, B absent).")
shown = w.class_view(t["pairs"], names, key="conf")
if not shown:
    ui.empty_chart("No class picked: raise “Top-confused classes” or add classes by name.")
else:
    sub = np.ix_(shown, shown)
    st.plotly_chart(confusion_heatmap(t["rates"][sub], [names[i] for i in shown],
                                      counts=None if t["counts"] is None else t["counts"][sub],
                                      show="rates" if ws.multi_label else show, title=f"{version} on {split}"),
                    key="conf_heatmap")
if len(names) > w.HEATMAP_LIMIT and st.toggle(f"Overview of all {len(names):,} classes",
                                              value=len(names) <= w.OVERVIEW_OPEN_LIMIT, key="conf_overview",
                                              help="Zoom by dragging; double-click resets"):
    st.plotly_chart(matrix_overview(t["rates"], names, title=f"{version} on {split}: off-diagonal rates"),
                    key="conf_overview_chart")
    st.caption("Every class; the diagonal (per-class accuracy) is left blank so the confusions show. Hover names "
               "the classes; add them to the view above to read their numbers.")
per_class = st.expander("Per-class accuracy, precision, recall and F1", key="conf_per_class_open", on_change="rerun")
if per_class.open:  # drawn when opened: one row per class
    metrics = per_class_metrics(out.labels, out.preds, names, task=out.task)
    metrics.insert(1, "accuracy", t["per_class"])
    per_class.dataframe(metrics, key="conf_per_class", hide_index=True,
                        column_config={c: st.column_config.NumberColumn(format="%.3f")
                                       for c in ("accuracy", "precision", "recall", "f1")})

st.subheader("Two versions side by side")
w.compare_versions(ws, out, version, split, shown or list(range(min(len(names), w.HEATMAP_LIMIT))))

st.subheader("Most confused pairs")
n_pairs = max(len(t["pairs"]), 1)
top_k = int(st.number_input("Show the top", 1, n_pairs, min(10, n_pairs), key="conf_top"))
pairs = t["pairs"].head(top_k)
st.dataframe(pairs.drop(columns=["a_id", "b_id"]).rename(
    columns={"conf": error_name, "a_to_b": "A→B", "b_to_a": "B→A"}), key="conf_pairs", hide_index=True,
    column_config={c: st.column_config.NumberColumn(format="%.3f") for c in (error_name, "A→B", "B→A")})
if pairs.empty:
    st.stop()
labels = {(int(r.a_id), int(r.b_id)): f"{r.a} / {r.b} ({r.conf:.3f})" for r in pairs.itertuples()}
a, b = counted_select(st, "Pair", list(labels), labels.__getitem__, key="conf_pair")
w.use_as_target(ws, Target(((a, b),), names), key="conf_use_target", source="confusion page")
# past HEATMAP_LIMIT classes the galleries are drawn when opened (the page's first render stays under 1 s)
mistakes = st.expander(f"Mistakes of {names[a]} / {names[b]}", expanded=len(names) <= w.HEATMAP_LIMIT,
                       key="conf_mistakes_open", on_change="rerun")
if mistakes.open:
    with mistakes:
        w.pair_galleries(ws, out, a, b, key="conf")
