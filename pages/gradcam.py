"""Grad-CAM: where the model looks (any workspace), and object associations with their review
(weak-boundary paper 4.1; needs object masks)."""

import streamlit as st

from diagnostics.associations import DEFAULT_THRESHOLD, RANKINGS, aggregate_associations, rank_associations
from diagnostics.figures_gradcam import association_heatmap
from diagnostics.mask_sources import MASKS_HELP, load_masks
from pages import ui
from pages.widgets import gradcam as w
from workspace.errors import WorkspaceError

SORTS = {"priority": "priority (wrong predictions, then surprise)", "wrong": "wrong predictions",
         "excess": "surprise (excess images)", "lift": "surprise (lift)", "rate": "rate"}

ws = ui.workspace()
version = ui.current_version(ws)
st.title("Grad-CAM")
st.caption("Where does the model look? Grad-CAM heatmaps of the predicted class: the mistakes of a confused pair "
           "against its correct samples, and per class how much relevance falls on the centre vs the border. "
           "With object masks, which objects drive each class (weak-boundary paper, section 4.1).")

reason = ws.capabilities(version).get("gradcam")
if reason:
    st.error(f"Grad-CAM is not available for model {version}: {reason}.")
    st.stop()

split = st.selectbox("Split", ["eval", "train"], key="gc_split")
try:
    masks = load_masks(ws, split)
except WorkspaceError as exc:
    st.error(f"Cannot read the object masks, so only the views without masks are shown: {exc}")
    masks = None
for warning in getattr(masks, "warnings", []) or []:
    st.warning(warning)
if masks is None:
    st.info("This workspace has no object masks: with them the page would also show which objects (grass, sky, "
            "a watermark...) drive each class and let you review them; add them with `masks = ...` in "
            "workspace.toml (see below). The views without masks follow.")
    with st.expander("How to provide object masks"):
        st.markdown(MASKS_HELP)

outputs = ui.outputs(ws, split, version)
result = w.gradcam(ws, split, version, None, outputs)
regions = w.regions(ws, result)
names = (["Object associations"] if masks is not None else []) + ["Mistakes of a pair", "Where it looks"]
# only the open tab is drawn (each is a few charts and galleries; all three were 12,000 DOM nodes)
tabs = dict(zip(names, st.tabs(names, key="gc_view", on_change="rerun")))
if tabs["Mistakes of a pair"].open:
    with tabs["Mistakes of a pair"]:
        w.pair_view(ws, split, version, outputs, result, regions)
if tabs["Where it looks"].open:
    with tabs["Where it looks"]:
        w.looks_view(ws, result, regions)
if masks is None or not tabs["Object associations"].open:
    st.stop()

with tabs["Object associations"]:
    c1, c2 = st.columns(2)
    threshold = c1.slider("Relevance share threshold", 0.05, 0.95, DEFAULT_THRESHOLD, 0.05, key="gc_threshold",
                          help="An object is associated with the prediction when its share of the positive "
                               "Grad-CAM relevance is at least this")
    explain = c2.selectbox("Explain", ["predicted class", *ws.class_names], key="gc_target",
                           help="Grad-CAM of the predicted class (default) or of one chosen class for every image")
    target = None if explain == "predicted class" else explain
    explained = result if target is None else w.gradcam(ws, split, version, target, outputs)
    shares = w.shares(ws, explained, masks)
    table = aggregate_associations(shares.shares, explained.classes, explained.correct, class_names=ws.class_names,
                                   object_names=shares.object_names, threshold=threshold)
    if table.empty:
        st.warning(f"No object of the masks appears in the {split} images that were explained.")
        st.stop()
    reviews = ws.store.list_reviews(w.KIND, model_version=version)
    legit = [tuple(r["key"].split("|", 1)) for r in reviews if r["verdict"] == "legitimate"]

    value = st.radio("Colour by", ["rate", "share_mean", "count"], horizontal=True, key="gc_value",
                     help="rate = images where the object drives the class / images predicted as the class")
    st.plotly_chart(association_heatmap(table, value=value, class_names=ws.class_names), key="gc_heatmap")

    s1, s2 = st.columns([3, 2])
    by = s1.radio("Sort by", list(RANKINGS), format_func=lambda k: SORTS.get(k, k), horizontal=True, key="gc_sort",
                  help="priority: wrong predictions the object drives first, then excess = count minus what the "
                       "object's rate over all classes predicts for this class (a surprise, in images)")
    show_trivial = s2.checkbox("Show trivial rows", value=False, key="gc_show_trivial",
                               help="Rows whose object is the class itself (e.g. plus <- plus) or that a reviewer "
                                    "marked legitimate; they are not findings and come last")
    ranked = rank_associations(table, legitimate=legit, by=by)
    shown = ranked if show_trivial else ranked[~ranked["trivial"]]
    st.caption(f"{len(shown)} (class, object) rows, {int((shown['count'] > 0).sum())} with an image at share ≥ "
               f"{threshold:.0%}"
               + ("" if show_trivial else f" ({int(ranked['trivial'].sum())} trivial rows hidden)") + ".")
    # excess is signed: -0.04 printed "-0.0"; rounded first (+ 0.0 turns -0.0 into 0.0)
    st.dataframe(shown.assign(excess=shown["excess"].round(1) + 0.0), hide_index=True, key="gc_table", column_config={
        "rate": st.column_config.ProgressColumn("rate", format="%.3f", min_value=0.0, max_value=1.0),
        "share_mean": st.column_config.NumberColumn("share_mean", format="%.3f"),
        "n_pred": st.column_config.NumberColumn("n_pred", help="images predicted as the class"),
        "present": st.column_config.NumberColumn("present", help="of those, images containing the object"),
        "rate_present": st.column_config.NumberColumn("rate_present", format="%.3f",
                                                      help="count / present: how often it drives the class when there"),
        "excess": st.column_config.NumberColumn("excess", format="%.1f",
                                                help="count - present x the object's rate over all classes"),
        "lift": st.column_config.NumberColumn("lift", format="%.2f",
                                              help="rate_present / the object's rate over all classes"),
    })

    st.subheader("Inspect and review one association")
    reviewed = {r["key"] for r in reviews}
    keys = [f"{r['class']}|{r['object']}" for r in ranked.to_dict("records")
            if (r["count"] > 0 and (show_trivial or not r["trivial"]))
            or f"{r['class']}|{r['object']}" in reviewed]  # reviewed ones stay editable
    if not keys:
        st.info("No association passes the threshold; lower it to see more.")
    else:
        # the options carry no counts: a select keeps showing a label from the run it was picked in
        pick = st.selectbox(f"Association (in {SORTS.get(by, by)} order)", keys, key="gc_assoc",
                            format_func=lambda k: " <- ".join(k.split("|")))
        cls_name, _, obj = pick.partition("|")
        row = ranked.set_index(["class", "object"]).loc[(cls_name, obj)]
        st.caption(f"**{cls_name} <- {obj}**: {int(row['count'])} of {int(row['n_pred'])} images explained as "
                   f"{cls_name} (rate {row['rate']:.3f}) have at least {threshold:.0%} of the relevance on {obj}: "
                   f"{int(row['count_wrong'])} wrong, {int(row['count_correct'])} correct.")
        w.review_form(ws, cls_name, obj, version)
        w.gallery(ws, split, explained, shares, masks, ws.class_names.index(cls_name), obj, threshold)

    w.reviewed_list(ws, version, table, explained, shares, ws.split(split).labels)
