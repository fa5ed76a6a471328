"""Streamlit pieces of the Grad-CAM page: cached computation with progress, the gallery,
the review form and the reviewed-associations list."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import streamlit as st

from diagnostics.associations import association_rows, repair_targets
from diagnostics.figures_gradcam import overlay
from diagnostics.gradcam import upsample_cams
from diagnostics.mask_sources import image_to_input, mask_to_input
from diagnostics.run_gradcam import cached_gradcam, workspace_gradcam, workspace_shares
from pages import ui
from workspace.errors import WorkspaceError
from workspace.targets import Target

KIND = "association"
VERDICTS = ("spurious", "legitimate", "unsure")
CANCELLED = "gc_cancelled"


def gradcam_and_shares(ws, split: str, version: str, masks, target: str | None):
    """Grad-CAM rows and object shares (disk-cached; computed with progress and a cancel)."""
    try:
        result = cached_gradcam(ws, split, version, target=target)
        if result is None:
            run_id = f"{split}|{version}|{target}"
            if st.session_state.get(CANCELLED) == run_id:
                st.warning("The Grad-CAM pass was stopped before it finished (Cancel, or a setting changed "
                           "during the pass); nothing partial was stored.")
                if not st.button("Compute Grad-CAM", key="gc_compute"):
                    st.stop()
            outputs = ui.outputs(ws, split, version)
            st.session_state[CANCELLED] = run_id  # cleared below; stays set if the run is interrupted
            slot = st.empty()
            slot.button("Cancel", key="gc_cancel", help="Stops the Grad-CAM pass (nothing partial is kept)")
            with ui.ProgressBar(f"Grad-CAM of {version} on {split}") as bar:
                result = workspace_gradcam(ws, split, version, target=target, progress=bar, outputs=outputs)
            slot.empty()
            st.session_state[CANCELLED] = None
        with ui.ProgressBar("Relevance share per object") as bar:
            shares = workspace_shares(ws, result, masks, progress=bar)
    except WorkspaceError as exc:
        st.session_state[CANCELLED] = None
        st.error(f"Grad-CAM is not available: {exc}")
        st.stop()
    return result, shares


def gallery(ws, split: str, result, shares, masks, cls: int, obj: str, threshold: float, *, limit: int = 12) -> None:
    """Images behind one association, heatmap overlaid and the object outlined."""
    rows = association_rows(shares, result, cls, obj, threshold=threshold)
    st.caption(f"{len(rows)} images where **{obj}** holds at least {threshold:.0%} of the positive relevance "
               f"for **{ws.class_names[cls]}** (highest share first; green outline = {obj}).")
    if rows.empty:
        return
    t = ws.config.transform
    top = rows.head(limit)
    cams = upsample_cams(result.cams[top["row"].to_numpy()], result.input_size)
    labels = ws.split(split).labels
    cols = st.columns(6)
    for j, r in enumerate(top.itertuples()):
        with cols[j % 6]:
            try:
                img = image_to_input(ws.split(split).load(int(r.index)), resize=t.resize, crop=t.crop)
                mask = masks.objects(int(r.index)).get(obj)
                mask = None if mask is None else mask_to_input(mask, resize=t.resize, crop=t.crop)
            except Exception as exc:  # noqa: BLE001 - a broken image must not break the page
                st.caption(f"#{r.index}: cannot load ({type(exc).__name__})")
                continue
            lab = labels[int(r.index)]
            label = ws.class_names[int(lab)] if np.ndim(lab) == 0 else ",".join(
                ws.class_names[k] for k in np.nonzero(lab > 0.5)[0])
            st.image(overlay(img, cams[j], mask), width="stretch",
                     caption=f"#{r.index} label {label} · share {r.share:.2f}" + ("" if r.correct else " · wrong"))


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


def reviewed_list(ws, version: str, table: pd.DataFrame, result, shares, labels) -> None:
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
    pairs = repair_targets(reviews, shares, labels, ws.class_names, result=result)
    if not pairs:
        st.caption("Mark an association *spurious* to turn it into a repair target.")
        return
    st.caption("Repair target from the spurious associations: each class paired with the classes whose images "
               "contain the object and are most often explained as the class.")
    ui.offer_target(ws, Target.from_names(pairs, ws.class_names), key="gc_use_target", source="Grad-CAM page")
    ui.target_links(ws)
