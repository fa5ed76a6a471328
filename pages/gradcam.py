"""Grad-CAM object associations (weak-boundary paper 4.1) and their human review."""

import streamlit as st

from diagnostics.associations import DEFAULT_THRESHOLD, aggregate_associations
from diagnostics.figures_gradcam import association_heatmap
from diagnostics.mask_sources import MASKS_HELP, load_masks
from pages import ui
from pages.widgets import gradcam as w
from workspace.errors import WorkspaceError

ws = ui.workspace()
version = ui.current_version(ws)
st.title("Grad-CAM object associations")
st.caption("Which objects drive each predicted class? For every image, Grad-CAM relevance of the predicted "
           "class is split over the object masks; an object *drives* the prediction when it holds at least "
           "the threshold share of the positive relevance (weak-boundary paper, section 4.1).")

reason = ws.capabilities(version).get("gradcam")
if reason:
    st.error(f"Grad-CAM is not available for model {version}: {reason}.")
    st.stop()

c1, c2, c3 = st.columns([1, 2, 2])
split = c1.selectbox("Split", ["eval", "train"], key="gc_split")
threshold = c2.slider("Relevance share threshold", 0.05, 0.95, DEFAULT_THRESHOLD, 0.05, key="gc_threshold",
                      help="An object is associated with the prediction when its share of the positive "
                           "Grad-CAM relevance is at least this")
explain = c3.selectbox("Explain", ["predicted class", *ws.class_names], key="gc_target",
                       help="Grad-CAM of the predicted class (default) or of one chosen class for every image")
target = None if explain == "predicted class" else explain

try:
    masks = load_masks(ws, split)
except WorkspaceError as exc:
    st.error(f"Cannot read the object masks: {exc}")
    st.stop()
for warning in getattr(masks, "warnings", []) or []:
    st.warning(warning)
if masks is None:
    st.info("This workspace has no object masks, so associations cannot be measured.\n\n" + MASKS_HELP)
    st.stop()

result, shares = w.gradcam_and_shares(ws, split, version, masks, target)
table = aggregate_associations(shares.shares, result.classes, result.correct, class_names=ws.class_names,
                               object_names=shares.object_names, threshold=threshold)
if table.empty:
    st.warning(f"No object of the masks appears in the {split} images that were explained.")
    st.stop()

st.subheader("Class x object associations")
value = st.radio("Colour by", ["rate", "share_mean", "count"], horizontal=True, key="gc_value",
                 help="rate = images where the object drives the class / images predicted as the class")
st.plotly_chart(association_heatmap(table, value=value, class_names=ws.class_names), key="gc_heatmap")
st.dataframe(table, hide_index=True, key="gc_table", column_config={
    "rate": st.column_config.ProgressColumn("rate", format="%.3f", min_value=0.0, max_value=1.0),
    "share_mean": st.column_config.NumberColumn("share_mean", format="%.3f"),
    "n_pred": st.column_config.NumberColumn("n_pred", help="images predicted as the class"),
    "present": st.column_config.NumberColumn("present", help="of those, images containing the object"),
    "rate_present": st.column_config.NumberColumn("rate_present", format="%.3f",
                                                  help="count / present: how often it drives the class when there"),
})

st.subheader("Inspect and review one association")
reviewed = {r["key"] for r in ws.store.list_reviews(w.KIND, model_version=version)}
keys = [f"{r['class']}|{r['object']}" for r in table.to_dict("records")
        if r["count"] > 0 or f"{r['class']}|{r['object']}" in reviewed]  # reviewed ones stay editable
if not keys:
    st.info("No association passes the threshold; lower it to see more.")
else:
    rates = table.set_index(["class", "object"])["rate"]
    pick = st.selectbox("Association (highest rate first)", keys, key="gc_assoc",
                        format_func=lambda k: f"{k.split('|')[0]} <- {k.split('|')[1]}  "
                                              f"(rate {rates[tuple(k.split('|'))]:.3f})")
    cls_name, _, obj = pick.partition("|")
    w.review_form(ws, cls_name, obj, version)
    w.gallery(ws, split, result, shares, masks, ws.class_names.index(cls_name), obj, threshold)

w.reviewed_list(ws, version, table, result, shares, ws.split(split).labels)
