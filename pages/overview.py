"""Overview: classes, split sizes, accuracy, model versions, the findings report and a searchable thumbnail grid."""

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from diagnostics.confusion import per_class_metrics
from diagnostics.report import NOT_COMPUTED
from diagnostics.run_report import report_path, write_report
from pages import ui
from pages.widgets import galleries as G
from pages.widgets import overview as OV
from pages.widgets.controls import image_grid, pager
from workspace.errors import WorkspaceError

PAGE_SIZE = 64  # thumbnails per page: 8 rows of 8

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
cols[1].metric("Train images", f"{len(ws.split('train')):,}")
cols[2].metric("Eval images", f"{len(ws.split('eval')):,}")
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
if ws.num_classes <= 60:
    fig = px.bar(counts, x="class", y="images", color="split", barmode="group", title="Images per class")
else:  # a bar per class is unreadable: the classes sorted by size, named on hover
    counts = counts.sort_values(["split", "images"], ascending=[True, False])
    counts["rank"] = counts.groupby("split").cumcount() + 1
    # svg: past 1,000 points plotly express draws with WebGL, whose context alone took 0.4 s of the
    # browser's main thread (a line is one path either way)
    fig = px.line(counts, x="rank", y="images", color="split", hover_data=["class"], render_mode="svg",
                  title=f"Images per class, {ws.num_classes:,} classes sorted by size")
st.plotly_chart(fig, key="class_counts")

per_class = st.expander("Per-class precision, recall and F1 (eval)", key="ov_per_class_open", on_change="rerun")
if per_class.open:  # drawn when opened: one row per class
    per_class.dataframe(per_class_metrics(out.labels, out.preds, ws.class_names, task=out.task), hide_index=True,
                        key="ov_per_class", column_config={c: st.column_config.NumberColumn(format="%.3f")
                                                           for c in ("precision", "recall", "f1")})

st.subheader("Model versions")
st.dataframe(OV.versions_table(ws), hide_index=True, key="versions_table",
             column_config={"accuracy": st.column_config.NumberColumn(format="%.2f%%")})

if ws.planted:
    with st.expander("Planted ground truth (demo)"):
        st.json({k: (v if not isinstance(v, list) or len(v) < 12 else f"{len(v)} train indices")
                 for k, v in ws.planted.items()})

st.subheader("Findings report")
st.caption("One self-contained HTML file (opens without a network) and a JSON twin: confused pairs, biased "
           "triplets, reviewed associations, flagged samples, weakspots and repairs, from what is computed so far "
           "(nothing is computed for it; missing sections say so).")
if st.button("Build the findings report", key="ov_report", icon=":material/summarize:"):
    try:
        written = write_report(ws, report_path(ws, version), version, overwrite=True)
    except WorkspaceError as exc:
        st.error(f"Cannot write the report: {exc}")
    else:
        missing = [k for k, v in written["sections"].items() if v == NOT_COMPUTED]
        st.success(f"Report written to `{written['html']}`" + (f"; not computed yet: {', '.join(missing)}." if missing
                                                                 else "."))
        c1, c2 = st.columns(2)
        for col, (kind, mime) in zip((c1, c2), (("html", "text/html"), ("json", "application/json"))):
            col.download_button(f"Download {kind.upper()}", Path(written[kind]).read_bytes(), mime=mime,
                                file_name=Path(written[kind]).name, key=f"ov_report_{kind}", on_click="ignore")


@st.fragment
def eval_images() -> None:
    """The searchable, paged thumbnails (a fragment: paging reruns only this part)."""
    found, active = G.gallery_search(ws, out, key="ov_search")
    per_class = st.slider("Images per class", 1, 8, 4, key="thumbs_per_class")
    rows = G.per_class_rows(out, found, per_class)
    if active:
        st.caption(f"{len(found):,} eval image{'s' if len(found) != 1 else ''} match; up to {per_class} per label "
                   "class shown.")
    rows = rows[pager(len(rows), key="ov_thumbs", page_size=PAGE_SIZE, reset_on=(per_class, len(found)))]
    names = ws.class_names
    captions = [f"{names[int(out.labels[r])]} → {names[int(out.preds[r])]}"
                + ("" if out.labels[r] == out.preds[r] else " ❌") if not ws.multi_label
                else ", ".join(names[k] for k in np.flatnonzero(out.labels[r] > 0.5)) for r in rows]
    image_grid(ws, [("eval", int(i), c) for i, c in zip(out.indices[rows], captions)])


st.subheader("Eval images")
eval_images()
