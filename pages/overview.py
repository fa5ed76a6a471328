"""Overview: classes, split sizes, accuracy, model versions and a thumbnail grid."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from pages import ui

ws = ui.workspace()
version = ui.current_version(ws)
st.title(ws.name)
st.caption(f"{ws.task.replace('_', '-')} · {ws.num_classes} classes · workspace `{ws.spec}` · "
           f"state in `{ws.state_dir}`")

if ws.weights_summary:
    st.caption(f"Weights: {ws.weights_summary}.")
for warning in ws.warnings():
    st.warning(warning)
out = ui.outputs(ws, "eval", version)
cols = st.columns(4)
cols[0].metric("Eval accuracy", f"{out.accuracy:.2%}")
cols[1].metric("Train images", len(ws.split("train")))
cols[2].metric("Eval images", len(ws.split("eval")))
cols[3].metric("Model versions", len(ws.versions()))

missing = {k: v for k, v in ws.capabilities(version).items() if v}
for feature, reason in missing.items():
    st.warning(f"**{feature}** is unavailable for this model: {reason}.")

counts = pd.DataFrame({
    "class": list(ws.class_names) * 2,
    "split": ["train"] * ws.num_classes + ["eval"] * ws.num_classes,
    "images": np.concatenate([
        np.bincount(ws.split(s).labels, minlength=ws.num_classes) if not ws.multi_label
        else ws.split(s).labels.sum(0) for s in ("train", "eval")
    ]),
})
st.plotly_chart(px.bar(counts, x="class", y="images", color="split", barmode="group",
                       title="Images per class"), key="class_counts")

st.subheader("Model versions")
st.dataframe(pd.DataFrame(ws.versions())[["id", "parent", "method", "rho", "targets", "seed", "epochs", "path"]],
             hide_index=True, key="versions_table")

if ws.planted:
    with st.expander("Planted ground truth (demo)"):
        st.json({k: (v if not isinstance(v, list) or len(v) < 12 else f"{len(v)} train indices")
                 for k, v in ws.planted.items()})

st.subheader("Eval images")
per_class = st.slider("Images per class", 1, 8, 4, key="thumbs_per_class")
labels = out.labels if not ws.multi_label else out.labels.argmax(1)
picked, captions = [], []
for k, name in enumerate(ws.class_names):
    rows = np.flatnonzero(labels == k)[:per_class]
    picked += out.indices[rows].tolist()
    captions += [f"{name} → {ws.class_names[int(p)]}" if not ws.multi_label else name
                 for p in (out.preds[rows] if not ws.multi_label else rows)]
ui.thumbnails(ws, "eval", picked, captions, columns=8)
