"""Panels of the sample view: the image with label and prediction, Grad-CAM, neighbours,
where the sample shows up on the other pages, and its reviews."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from diagnostics import run_sample as R
from diagnostics.samples import MISLABEL_KIND, MISLABEL_VERDICTS, sample_key, topk_figure
from pages import ui
from workspace.errors import Cancelled, WorkspaceError

PAGES = {"gradients": ("pages/gradients.py", "Gradient scores", ":material/insights:"),
         "weakspots": ("pages/weakspots.py", "Weakspots", ":material/scatter_plot:"),
         "repair": ("pages/repair.py", "Repair", ":material/build:")}


def _enlarged(img: Image.Image, size: int = 256) -> np.ndarray:
    """Small images scaled up by a whole factor (nearest), so pixels stay sharp."""
    scale = max(1, size // max(img.size))
    return np.asarray(img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img)


def navigation(ws, split: str, index: int) -> None:
    """Links to the previous and next image of the split."""
    n = len(ws.split(split))
    c1, c2, _ = st.columns([1, 1, 4])
    with c1:
        if index > 0:
            ui.sample_link(ws, split, index - 1, label=f"← {split}:{index - 1}", help="previous image")
    with c2:
        if index + 1 < n:
            ui.sample_link(ws, split, index + 1, label=f"{split}:{index + 1} →", help="next image")


def header(ws, out, split: str, index: int) -> dict:
    """The image, its label, prediction and top-k probabilities; returns :func:`run_sample.sample_info`."""
    try:
        info = R.sample_info(out, index, top=min(5, ws.num_classes))
    except WorkspaceError as exc:
        st.error(str(exc))
        st.stop()
    path = ws.split(split).ids[index]
    st.subheader(f"{split}:{index}")
    st.caption(f"`{path}`")
    left, right = st.columns([2, 3])
    with left:
        try:
            st.image(_enlarged(ws.split(split).load(index)), caption=f"{split}:{index}")
        except Exception as exc:  # noqa: BLE001 - a broken image must not break the page
            st.error(f"Cannot load the image: {type(exc).__name__}: {exc}")
    with right:
        c1, c2 = st.columns(2)
        c1.metric("Label", info["label"])
        c2.metric("Prediction", info["pred"], "right" if info["correct"] else "wrong", delta_arrow="off",
                  delta_color="green" if info["correct"] else "red")
        label_names = [ws.class_names[k] for k in info["label_ids"]]
        st.plotly_chart(topk_figure(info["top"], label=label_names, title="Top-k probabilities (label in green)"),
                        key="sample_topk")
    return info


@st.cache_data(show_spinner=False, max_entries=64)
def _gradcam(spec: str, outputs_key: str, split: str, index: int, classes: tuple, version: str, _ws):
    from diagnostics.gradcam import upsample_cams

    result = R.sample_gradcam(_ws, split, index, list(classes), version=version)
    return upsample_cams(result.cams, result.input_size), result.layer


def gradcam(ws, split: str, index: int, version: str, info: dict) -> None:
    """Grad-CAM of the prediction and of the label, side by side (one image only, never the whole split)."""
    from diagnostics.figures_gradcam import overlay
    from diagnostics.mask_sources import image_to_input

    st.subheader("Grad-CAM")
    reason = ws.capabilities(version).get("gradcam")
    if reason:
        st.info(f"Grad-CAM is not available for model {version}: {reason}.")
        return
    pred = info["pred_ids"][0] if info["pred_ids"] else int(info["top"]["class_id"].iloc[0])
    label = info["label_ids"][0] if info["label_ids"] else None
    shown = [("prediction", pred)] + ([("label", label)] if label is not None and label != pred else [])
    try:
        with st.spinner("Grad-CAM of this image…"):
            cams, layer = _gradcam(ws.spec, ws.outputs_key(split, version), split, index,
                                   tuple(c for _, c in shown), version, ws)
        t = ws.config.transform
        img = image_to_input(ws.split(split).load(index), resize=t.resize, crop=t.crop)
    except Exception as exc:  # noqa: BLE001 - WorkspaceError, or an image that does not load
        st.warning(f"Cannot compute Grad-CAM for this image: {exc}")
        return
    cols = st.columns(3)
    for j, ((what, cls), cam) in enumerate(zip(shown, cams)):
        cols[j].image(overlay(img, cam), caption=f"of the {what}: {ws.class_names[cls]}")
    cols[len(shown)].caption(f"Grad-CAM (captum LayerGradCam on `{layer}`), red = most relevant to the class."
                             + ("" if len(shown) > 1 else " The prediction is the label."))


@st.cache_resource(show_spinner=False, max_entries=8)
def _memo(spec: str, version: str, train_key: str, eval_key: str) -> dict:
    return {}  # per (workspace, version, data): {(split, index, k): sample_neighbours(...)}, kept across reruns


def _neighbour_box(ws, split: str, index: int, version: str, k: int) -> dict | None:
    try:
        memo = _memo(ws.spec, version, ws.outputs_key("train", version), ws.outputs_key("eval", version))
        if (split, index, k) not in memo:
            with ui.ProgressBar("Searching the neighbours") as bar:
                found = R.sample_neighbours(ws, split, index, version=version, k=k, progress=bar)
            if len(memo) > 256:
                memo.clear()
            memo[(split, index, k)] = found
        return memo[(split, index, k)]
    except (WorkspaceError, Cancelled) as exc:
        st.warning(f"Cannot search the neighbours: {exc}")
        return None


def neighbours(ws, split: str, index: int, version: str, info: dict) -> dict | None:
    """The nearest neighbours in embedding space (train + eval) and the weakspot status."""
    st.subheader("Nearest neighbours")
    if ws.multi_label:
        st.info("Neighbours and weakspots are shown for single-label workspaces.")
        return None
    other = "train" if split == "eval" else "eval"
    if ws.cached_outputs(other, version) is None and not st.session_state.get(f"sample_nb_go_{version}"):
        st.info(f"Neighbours are searched in the train and eval embeddings; the {other} outputs of {version} "
                "are not computed yet (one pass over the split).")
        if not st.button(f"Compute the {other} outputs", key=f"sample_nb_go_{version}"):
            return None
    ui.outputs(ws, other, version)
    k = int(st.slider("Neighbours", 1, 24, 8, key="sample_k"))
    box = _neighbour_box(ws, split, index, version, k)
    if box is None:
        return None
    s, w, names = box["summary"], box["weakspot"], ws.class_names
    if s["k"]:
        st.caption(f"{s['k']} nearest ({box['index']}): {s['same_label']:.0%} labelled {info['label']} (its label), "
                   f"{s['labelled_as_pred']:.0%} labelled {info['pred']} (its prediction), {s['wrong']:.0%} "
                   f"misclassified; mean distance {s['mean_distance']:.3g}.")
    if not w["query"]:
        st.caption("Correctly classified: not a weakspot query.")
    elif w["pivotal"] is None:
        st.caption("Misclassified; its weakspot status is shown for up to 50 neighbours.")
    else:
        purity = "no neighbour within d" if w["sample_purity"] is None else f"{w['sample_purity']:.0%} pure"
        text = (f"at the defaults (radius {w['radius']:.3g} suggested, k {w['k']}, purity {w['purity']}): "
                f"{purity}, {w['n_within']} neighbours within d")
        (st.warning if w["pivotal"] else st.caption)(
            f"**Pivotal image** of a weakspot {info['label']} → {info['pred']}, {text}." if w["pivotal"]
            else f"Misclassified but not pivotal {text}.")
    f = box["frame"]
    ui.sample_grid(ws, [(r.split, int(r.index), f"{'❌ ' if not r.correct else ''}{names[r.label]} / "
                         f"{names[r.pred]} · d={r.distance:.2f}") for r in f.itertuples()], columns=8, width=72)
    return box


def appearances(ws, split: str, index: int, version: str, box: dict | None) -> None:
    """Where the sample shows up: gradient scores (stored only), weakspots, repair runs, reviews."""
    st.subheader("Where it appears")
    scores = R.stored_scores(ws, split, index, version=version)
    if ws.multi_label:
        st.caption("Gradient scores: single-label workspaces only.")
    elif scores is None:
        c1, c2 = st.columns([3, 2])
        c1.caption(f"Gradient scores of the {split} split: **not computed yet** (they are computed on the "
                   "Gradient scores page, never from here).")
        with c2:
            st.page_link(PAGES["gradients"][0], label="Compute them on Gradient scores", icon=PAGES["gradients"][2])
    else:
        c = st.columns(4)
        c[0].metric("p_s", f"10^{scores['log_p_s'] / np.log(10):.1f}", help="PGD sampling probability (minority: high)")
        c[1].metric("Compensated loss", f"{scores['comp_loss']:.2f}", help=f"CE/H; delta = {scores['delta']:.2f}")
        c[2].metric("Noise split", "flagged" if scores["noisy"] else "clean")
        c[3].caption(f"From the stored score table (lambda {scores['lam']:g}, {scores['rows']:,} samples).")
    rows = R.sample_appearances(scores=scores, weakspot=None if box is None else box["weakspot"],
                                changes=R.repair_changes(ws, split, index), reviews=[])
    if not rows:
        st.caption("Not flagged mislabelled, not a pivotal image, not changed by a finished repair run.")
    for r in rows:
        c1, c2 = st.columns([3, 2])
        c1.markdown(f"- {r['what']}")
        path, title, icon = PAGES[r["page"]]
        with c2:
            st.page_link(path, label=title, icon=icon)


def reviews(ws, split: str, index: int, version: str) -> None:
    """The reviews stored for this sample (every model version) and a form to add a mislabel review."""
    st.subheader("Reviews")
    stored = R.sample_reviews(ws, split, index)
    if stored:
        st.dataframe(pd.DataFrame([{"kind": r["kind"], "model version": r["model_version"], "verdict": r["verdict"],
                                    "note": r["note"], "updated": dt.datetime.fromtimestamp(r["updated_at"])
                                    .isoformat(timespec="seconds")} for r in stored]),
                     hide_index=True, key="sample_reviews")
    else:
        st.caption("No review stored for this image yet.")
    key = sample_key(split, index)
    old = ws.store.get_review(MISLABEL_KIND, key, model_version=version)
    with st.container(border=True):
        st.markdown(f"**Is {key} mislabelled?** (for model {version}; shown on Gradient scores and in the report)")
        # no verdict until the user picks one: a preselected "mislabelled" is one click from a wrong review
        verdict = st.radio("Verdict", MISLABEL_VERDICTS, horizontal=True, key=f"sample_verdict:{key}",
                           index=MISLABEL_VERDICTS.index(old["verdict"]) if old and old["verdict"] in MISLABEL_VERDICTS
                           else None)
        st.text_input("Note", value=(old or {}).get("note") or "", key=f"sample_note:{key}")
        st.button("Save review", key="sample_save_review", type="primary", on_click=_save_review,
                  args=(ws, key, version), disabled=verdict is None,
                  help="Pick a verdict first" if verdict is None else None)


def _save_review(ws, key: str, version: str) -> None:
    """Runs before the rerun, so the list above already shows the saved review."""
    verdict, note = st.session_state[f"sample_verdict:{key}"], st.session_state[f"sample_note:{key}"]
    try:
        ws.store.upsert_review(MISLABEL_KIND, key, model_version=version, verdict=verdict, note=note)
    except WorkspaceError as exc:
        st.toast(f"Cannot save the review: {exc}", icon=":material/error:")
    else:
        st.toast(f"Saved: {key} is {verdict} (model {version}).", icon=":material/check:")
