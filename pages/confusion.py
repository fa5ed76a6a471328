"""Confusion matrix (rates and counts), version difference, most confused pairs and their mistakes."""

import numpy as np
import streamlit as st

from diagnostics.compare import compare_outputs
from diagnostics.confusion import pair_mistakes, per_class_metrics
from diagnostics.figures_confusion import comparison_heatmap, confusion_heatmap
from pages import ui
from pages.widgets import confusion as w
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
              delta_color="off")

st.subheader("Confusion matrix")
if ws.multi_label:
    st.caption("Multi-label: cell (A, B) = P(A and B predicted | A present, B absent).")
shown = w.heatmap_classes(t["pairs"], len(names))
if len(shown) < len(names):
    st.caption(f"{len(names)} classes: showing the {len(shown)} classes of the most confused pairs "
               "(rates are still over all predictions).")
sub = np.ix_(shown, shown)
st.plotly_chart(confusion_heatmap(t["rates"][sub], [names[i] for i in shown],
                                  counts=None if t["counts"] is None else t["counts"][sub],
                                  show="rates" if ws.multi_label else show, title=f"{version} on {split}"),
                key="conf_heatmap")
with st.expander("Per-class accuracy, precision, recall and F1"):
    metrics = per_class_metrics(out.labels, out.preds, names, task=out.task)
    metrics.insert(1, "accuracy", t["per_class"])
    st.dataframe(metrics, key="conf_per_class", hide_index=True,
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("accuracy", "precision", "recall", "f1")})

st.subheader("Difference between two versions")
others = [v["id"] for v in ws.versions() if v["id"] != version]
if not others:
    st.caption("Only one model version so far: repairs add versions you can compare here.")
else:
    other = st.selectbox(f"Compare {version} with", others, key="conf_compare")
    cmp = compare_outputs(out, ui.outputs(ws, split, other))
    d1, d2, d3 = st.columns(3)
    d1.metric(f"Accuracy of {other}", f"{cmp.accuracy[1]:.2%}", f"{cmp.accuracy[1] - cmp.accuracy[0]:+.2%}")
    d2.metric("Fixed (wrong → right)", f"{len(cmp.fixed):,}")
    d3.metric("Broken (right → wrong)", f"{len(cmp.broken):,}")
    st.plotly_chart(comparison_heatmap(cmp, names, rows=shown, title=f"{other} − {version} (rates; green = better)"),
                    key="conf_diff_heatmap")

st.subheader("Most confused pairs")
n_pairs = max(len(t["pairs"]), 1)
top_k = int(st.number_input("Show the top", 1, n_pairs, min(10, n_pairs), key="conf_top"))
pairs = t["pairs"].head(top_k)
st.dataframe(pairs.drop(columns=["a_id", "b_id"]).rename(
    columns={"conf": error_name, "a_to_b": "A→B", "b_to_a": "B→A"}), key="conf_pairs", hide_index=True)
if pairs.empty:
    st.stop()
labels = [f"{r.a} / {r.b} ({r.conf:.3f})" for r in pairs.itertuples()]
pick = st.selectbox("Pair", range(len(pairs)), format_func=lambda i: labels[i], key="conf_pair")
row = pairs.iloc[pick]
a, b = int(row.a_id), int(row.b_id)
w.use_as_target(ws, Target(((a, b),), names), key="conf_use_target", source="confusion page")

limit = int(st.slider("Images per direction", 4, 64, 16, step=4, key="conf_gallery_n"))
for x, y in ((a, b), (b, a)):
    found = pair_mistakes(out.labels, out.preds, x, y, task=out.task)
    share = "" if ws.multi_label else f" ({len(found) / max(np.count_nonzero(out.labels == x), 1):.1%} of {names[x]})"
    st.markdown(f"**{names[x]} → {names[y]}**: {len(found)} mistakes{share}")
    w.gallery(ws, out, found, x, y, limit=limit)
