"""Streamlit pieces of the Grad-CAM page: cached passes with progress and cancel, the mask-free
views (a confused pair's mistakes, where each class looks), the association gallery, the review
form and the reviewed-associations list."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import streamlit as st

from diagnostics.associations import association_rows, repair_targets
from diagnostics.cam_summary import mean_cams
from diagnostics.figures_gradcam import class_mean_figure, display_size, looks_figure, overlay, pair_mean_figure
from diagnostics.gradcam import upsample_cams
from diagnostics.mask_sources import image_to_input, mask_to_input
from diagnostics import run_gradcam
from diagnostics.run_gradcam import (
    cached_gradcam, class_looks, default_pairs, gradcam_job, pair_summary, start_gradcam_job,
    workspace_gradcam, workspace_regions, workspace_shares,
)
from pages import ui
from workspace import jobs
from workspace.errors import Cancelled, WorkspaceError
from workspace.targets import Target

KIND = "association"
VERDICTS = ("spurious", "legitimate", "unsure")
CANCELLED = "gc_cancelled"
SHARE_FORMAT = {c: st.column_config.NumberColumn(
    c, format="percent", help="over the misclassified images only; None when the class has no misclassified "
                              "image with positive relevance" if c.endswith("_wrong") else None)
    for c in ("centre_share", "border_share", "centre_share_wrong", "border_share_wrong")}


def gradcam(ws, split: str, version: str, target: str | None, outputs, *, stop: bool = True):
    """Grad-CAM rows from the artifact store, or one pass with an ETA bar and a Cancel button.

    A pass stopped midway (Cancel, or a widget changed during it) leaves nothing stored; the
    next run offers to compute again. With ``stop=False`` that offer returns None instead of
    stopping the page.
    """
    try:
        result = cached_gradcam(ws, split, version, target=target)
        if result is not None:
            return result
        if outputs.n > run_gradcam.BACKGROUND_IMAGES:
            background(ws, split, version, target)
            if stop:
                st.stop()
            return None
        run_id = f"{split}|{version}|{target}"
        if st.session_state.get(CANCELLED) == run_id:
            st.warning("The Grad-CAM pass was stopped before it finished (Cancel, or a setting changed "
                       "during the pass); nothing partial was stored.")
            if not st.button("Compute Grad-CAM", key="gc_compute" if target is None else f"gc_compute:{target}"):
                if stop:
                    st.stop()
                return None
        st.session_state[CANCELLED] = run_id  # cleared below; stays set if the run is interrupted
        slot = st.empty()
        # one key per pass: a run may start several passes (the predicted class, then a chosen one)
        slot.button("Cancel", key="gc_cancel" if target is None else f"gc_cancel:{target}",
                    help="Stops the Grad-CAM pass (nothing partial is kept)")
        explained = "the predicted class" if target is None else target
        with ui.ProgressBar(f"Grad-CAM of {explained} ({version}, {split})") as bar:
            result = workspace_gradcam(ws, split, version, target=target, progress=bar, outputs=outputs)
        slot.empty()
        st.session_state[CANCELLED] = None
        return result
    except (WorkspaceError, Cancelled) as exc:
        st.session_state[CANCELLED] = None
        st.error(f"Grad-CAM is not available: {exc}")
        st.stop()


def _job_panel(ws, split: str, version: str, target: str | None) -> None:
    job = gradcam_job(ws, split, version, target)
    state = None if job is None else job["status"]
    explained = "the predicted class" if target is None else target
    suffix = "" if target is None else f":{target}"
    if state in jobs.ACTIVE:
        waiting = " (queued)" if state == "queued" else ""
        st.progress(float(job["progress"] or 0.0),
                    # the job's message names its stage, done/total, elapsed and ETA: said once
                    text=(job["message"] or f"Grad-CAM of {explained} ({version}, {split})") + waiting)
        if st.button("Cancel", key=f"gc_job_cancel{suffix}", help="Stops the Grad-CAM job (nothing partial is kept)"):
            jobs.request_cancel(ws, job["id"])
            st.rerun(scope="fragment")
        return
    if cached_gradcam(ws, split, version, target=target) is not None:
        st.rerun(scope="app")  # done: draw the page with the heatmaps
    if state == "failed":
        st.error(f"The Grad-CAM job failed: {job['error']}")
    elif state == "cancelled":
        st.warning("The Grad-CAM job was cancelled; nothing partial was stored.")
    if st.button("Compute Grad-CAM", key=f"gc_job_start{suffix}", type="primary"):
        start_gradcam_job(ws, split, version, target)
        st.rerun(scope="app")


def background(ws, split: str, version: str, target: str | None) -> None:
    """A pass over many images as a background job: started on the first visit, its progress
    (with ETA) and a Cancel button polled every second while it runs; the page reruns when the
    heatmaps are stored. A failed or cancelled job waits for a click to start again."""
    job = gradcam_job(ws, split, version, target)
    if job is None:
        try:
            start_gradcam_job(ws, split, version, target)
        except WorkspaceError as exc:
            st.error(f"Grad-CAM is not available: {exc}")
            return
        job = gradcam_job(ws, split, version, target)
    running = job is not None and job["status"] in jobs.ACTIVE
    st.fragment(_job_panel, run_every=1.0 if running else None)(ws, split, version, target)


def regions(ws, result):
    """Centre/border shares of every heatmap (stored; computed with an ETA bar)."""
    with ui.ProgressBar("Centre and border share of every heatmap") as bar:
        return workspace_regions(ws, result, progress=bar)


def shares(ws, result, masks):
    """Object shares of every heatmap (stored; computed with an ETA bar)."""
    try:
        with ui.ProgressBar("Relevance share per object") as bar:
            return workspace_shares(ws, result, masks, progress=bar)
    except (WorkspaceError, Cancelled) as exc:
        st.error(f"Cannot measure the object shares: {exc}")
        st.stop()


def _display(means: np.ndarray, size) -> np.ndarray:
    """(G, h, w) mean maps (NaN = none) upsampled for display: to the model input, at most
    :data:`~diagnostics.figures_gradcam.DISPLAY_MAX` pixels a side."""
    empty = ~np.isfinite(means).all(axis=(1, 2))
    up = upsample_cams(np.nan_to_num(means).astype(np.float32), display_size(size))
    up[empty] = np.nan
    return up


def _label(ws, lab) -> str:
    return ws.class_names[int(lab)] if np.ndim(lab) == 0 else ",".join(
        ws.class_names[k] for k in np.nonzero(np.asarray(lab) > 0.5)[0])


def overlays(ws, split: str, result, rows, captions, *, masks=None, obj: str | None = None, width: int = 150) -> None:
    """Images with their heatmap rows overlaid (and an object's outline when masks are given), in
    one image element (a column and an element per image cost the browser ~30 DOM nodes each)."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        st.caption("No images.")
        return
    t = ws.config.transform
    cams = upsample_cams(result.cams[rows], result.input_size)
    images, shown, broken = [], [], []
    for j, row in enumerate(rows):
        index = int(result.indices[row])
        try:
            img = image_to_input(ws.split(split).load(index), resize=t.resize, crop=t.crop)
            mask = None if masks is None or obj is None else masks.objects(index).get(obj)
            mask = None if mask is None else mask_to_input(mask, resize=t.resize, crop=t.crop)
        except Exception as exc:  # noqa: BLE001 - a broken image must not break the page
            broken.append(f"#{index}: cannot load ({type(exc).__name__})")
            continue
        images.append(overlay(img, cams[j], mask))
        shown.append(captions[j])
    if images:
        st.image(images, caption=shown, width=width)
    if broken:
        st.caption("; ".join(broken))


def pair_view(ws, split: str, version: str, outputs, result, regions_, *, limit: int = 12) -> None:
    """A confused pair: mean heat maps of correct samples vs mistakes, differences, galleries."""
    names = ws.class_names
    target = ui.get_target(ws)
    preferred = list(target.groups) if target is not None and target.kind == "confusion" else []
    choices = default_pairs(ws, outputs, preferred=preferred)
    c1, c2 = st.columns([2, 3])
    a, b = c1.selectbox("Pair", choices, key="gc_pair", format_func=lambda p: f"{names[p[0]]} / {names[p[1]]}",
                        help="Default: the repair target if it is a pair, else the most confused pair")
    explain = c2.radio("Explain", [None, a, b], horizontal=True, key="gc_pair_explain",
                       format_func=lambda k: "predicted class" if k is None else names[k],
                       help="Grad-CAM of the predicted class (on a mistake: the wrong class), or of one class of "
                            "the pair on every image (e.g. where the evidence for the true class is)")
    if explain is not None:
        result = gradcam(ws, split, version, names[explain], outputs, stop=False)
        if result is None:
            return
        regions_ = regions(ws, result)
    groups, rows, means, table = pair_summary(ws, result, regions_, outputs, a, b)
    counts = [len(p) for p in groups.values()]
    st.caption(f"{split}: {counts[1]} {names[a]} → {names[b]} and {counts[3]} {names[b]} → {names[a]} mistakes; "
               f"{counts[0]} {names[a]} and {counts[2]} {names[b]} classified correctly. Maps are means of "
               "heatmaps each scaled to unit total relevance, shown relative to a uniform map.")
    st.plotly_chart(pair_mean_figure(_display(means, result.input_size), counts, names=(names[a], names[b]),
                                     input_size=result.input_size), key="gc_pair_means")
    st.dataframe(table, hide_index=True, key="gc_pair_table", column_config={
        **SHARE_FORMAT, "n_empty": st.column_config.NumberColumn("n_empty", help="heatmaps without positive "
                                                                 "relevance (left out of the shares)")})
    t, p = st.radio("Gallery", [(a, b), (b, a)], horizontal=True, key="gc_direction",
                    format_func=lambda d: f"{names[d[0]]} → {names[d[1]]}", index=0 if counts[1] >= counts[3] else 1)
    probs = outputs.probs
    for (gt, gp), title in (((t, p), "Mistakes"), ((t, t), "Correct")):
        pos, r = groups[(gt, gp)], rows[(gt, gp)]
        keep = r >= 0
        pos, r = pos[keep], r[keep]
        order = np.argsort(-probs[pos, gp], kind="stable")[:limit]  # the most confident first
        st.markdown(f"**{title}: {names[gt]} → {names[gp]}** ({len(pos)}, most confident first; heatmap of "
                    f"{'the predicted class' if explain is None else names[explain]})")
        overlays(ws, split, result, r[order],
                 [f"#{int(outputs.indices[q])} p({names[gp]}) {probs[q, gp]:.2f}" for q in pos[order]])


LOOKS_BARS = 60     # classes with a bar pair in the "where it looks" chart
MEAN_MAPS_ALL = 10  # up to this many classes with heatmaps, every class's mean map is drawn
MEAN_MAPS = 5       # past that, the maps drawn at first (one row; the rest: pick them)


def looks_view(ws, result, regions_) -> None:
    """Per predicted class: centre/border shares (a background-looking class stands out) and mean maps.

    Past :data:`LOOKS_BARS` classes the chart keeps the classes that look most at the border
    (the table below it lists every class), and the mean maps start with the
    :data:`MEAN_MAPS` of them, more on demand: a chart of 1,000 bar pairs and 40 small heat maps
    were 10,000 DOM nodes in the browser.
    """
    looks = class_looks(ws, result, regions_)
    st.caption(f"Share of each heatmap's positive relevance in the centre box (the middle "
               f"{regions_.centre_fraction:.0%} of each side, {regions_.centre_area:.0%} of the image) and on the "
               f"border (within {regions_.border_fraction:.1%} of an edge, {regions_.border_area:.0%} of the image), "
               "averaged per predicted class. A class well above the dashed border line looks at the background.")
    by_border = looks.sort_values("border_share", ascending=False, kind="stable")
    if len(looks) > LOOKS_BARS:
        st.caption(f"{len(looks):,} classes: the chart shows the {LOOKS_BARS} that look most at the border; the "
                   "table lists every class (sort it by any column).")
    st.plotly_chart(looks_figure(by_border.head(LOOKS_BARS) if len(looks) > LOOKS_BARS else looks,
                                 centre_area=regions_.centre_area, border_area=regions_.border_area),
                    key="gc_looks_chart")
    st.dataframe(looks, hide_index=True, key="gc_looks_table", column_config=SHARE_FORMAT)
    means, counts = mean_cams(result.cams, result.classes, n_groups=ws.num_classes)
    present = np.flatnonzero(counts > 0)
    if len(present) <= MEAN_MAPS_ALL:
        shown = present
        st.caption("Mean heat map per predicted class")
    else:
        index = {name: k for k, name in enumerate(ws.class_names)}
        default = [index[c] for c in by_border["class"].head(MEAN_MAPS)]
        shown = np.asarray(st.multiselect(
            "Mean heat map per predicted class", present.tolist(), default=default,
            format_func=ws.class_names.__getitem__, key="gc_mean_classes", max_selections=40,
            help=f"{len(present):,} classes have heatmaps; the {MEAN_MAPS} that look most at the border come first"),
            dtype=np.int64)
    if len(shown):
        st.plotly_chart(class_mean_figure(_display(means[shown], result.input_size), counts[shown],
                                          [ws.class_names[k] for k in shown], input_size=result.input_size),
                        key="gc_class_means")


def gallery(ws, split: str, result, shares_, masks, cls: int, obj: str, threshold: float, *, limit: int = 12) -> None:
    """Images behind one association, heatmap overlaid and the object outlined."""
    rows = association_rows(shares_, result, cls, obj, threshold=threshold)
    st.caption(f"{len(rows)} images where **{obj}** holds at least {threshold:.0%} of the positive relevance "
               f"for **{ws.class_names[cls]}** (highest share first; green outline = {obj}).")
    top = rows.head(limit)
    labels = ws.split(split).labels
    overlays(ws, split, result, top["row"].to_numpy(), masks=masks, obj=obj, captions=[
        f"#{r.index} label {_label(ws, labels[int(r.index)])} · share {r.share:.2f}" + ("" if r.correct else " · wrong")
        for r in top.itertuples()])


def review_form(ws, cls_name: str, obj: str, version: str) -> None:
    """Verdict + note for one association, pre-filled from the store; saving updates it."""
    key = f"{cls_name}|{obj}"
    old = ws.store.get_review(KIND, key, model_version=version)
    with st.container(border=True):
        st.markdown(f"**Review:** does *{obj}* legitimately drive *{cls_name}*?")
        if old:
            when = dt.datetime.fromtimestamp(old["updated_at"]).strftime("%Y-%m-%d %H:%M")
            st.caption(f"Reviewed {when} as **{old['verdict']}** for model {version}.")
        verdict = st.radio("Verdict", VERDICTS, horizontal=True, key=f"gc_verdict:{key}",
                           index=VERDICTS.index(old["verdict"]) if old else 2)
        note = st.text_input("Note", value=old["note"] if old else "", key=f"gc_note:{key}")
        if st.button("Save review", key=f"gc_save:{key}", type="primary"):
            ws.store.upsert_review(KIND, key, model_version=version, verdict=verdict, note=note)
            st.success(f"Saved: {cls_name} <- {obj} is {verdict}.")


def reviewed_list(ws, version: str, table: pd.DataFrame, result, shares_, labels) -> None:
    """The reviewed associations: table, CSV export, and "use as repair target"."""
    reviews = ws.store.list_reviews(KIND, model_version=version)
    st.subheader(f"Reviewed associations ({len(reviews)})")
    if not reviews:
        st.caption("No association reviewed yet for this model version.")
        return
    stats = table.set_index(["class", "object"])
    rows = []
    for r in reviews:
        cls_name, _, obj = r["key"].partition("|")
        s = stats.loc[(cls_name, obj)] if (cls_name, obj) in stats.index else None
        rows.append({"class": cls_name, "object": obj, "verdict": r["verdict"], "note": r["note"],
                     "rate": None if s is None else float(s["rate"]), "count": None if s is None else int(s["count"]),
                     "model_version": version,
                     "reviewed": dt.datetime.fromtimestamp(r["updated_at"]).isoformat(timespec="seconds")})
    df = pd.DataFrame(rows)
    st.dataframe(df, hide_index=True, key="gc_reviews")
    st.download_button("Export CSV", df.to_csv(index=False), file_name=f"associations-{version}.csv",
                       mime="text/csv", key="gc_export")
    pairs = repair_targets(reviews, shares_, labels, ws.class_names, result=result)
    if not pairs:
        st.caption("Mark an association *spurious* to turn it into a repair target.")
        return
    st.caption("Repair target from the spurious associations: each class paired with the classes whose images "
               "contain the object and are most often explained as the class.")
    ui.offer_target(ws, Target.from_names(pairs, ws.class_names), key="gc_use_target", source="Grad-CAM page")
    ui.target_links(ws)
