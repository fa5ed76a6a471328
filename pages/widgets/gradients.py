"""Streamlit widgets of the gradient-score page: options, the GCE job panel, review galleries."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from diagnostics import gce
from diagnostics import gradients as G
from diagnostics import run_gradients as R
from pages import ui
from workspace import jobs
from workspace.errors import Cancelled, WorkspaceError

LOADED, GCE = "loaded model", "GCE biased model (q = 0.7)"
VERDICTS = {"mislabelled": "confirm mislabelled", "not mislabelled": "not mislabelled"}


@dataclass(frozen=True)
class Options:
    biased_model: str | None
    params: str
    k: int
    lam: float


def options() -> Options:
    """The scoring options (which model's gradients, which parameters, lambda)."""
    c1, c2, c3, c4 = st.columns(4)
    source = c1.radio("Biased model", [LOADED, GCE], key="grad_source",
                      help="Gradients of the loaded model, or of a model trained from scratch with the GCE "
                           "loss (PGD paper, Algorithm 2 step 1), which leans harder on the biased cue")
    params = c2.radio("Parameters", ["last", "all"], key="grad_params",
                      format_func=lambda p: {"last": "last layer (exact closed form)",
                                             "all": "all parameters (top-k dims)"}[p])
    k = int(c3.number_input("k dominant dims", min_value=1, max_value=100_000, value=256, step=32, key="grad_k",
                            disabled=params != "all"))
    lam = float(c4.number_input("lambda (M vs D balance)", min_value=0.0, max_value=100.0, value=1.0, step=0.5,
                                key="grad_lam", help="S = (1 + lambda^2) M D / (lambda^2 M + D); 1 = harmonic mean"))
    return Options(None if source == LOADED else "gce", params, k, lam)


def _job_panel(ws) -> None:
    status = R.gce_status(ws)
    state = status.get("status", "none")
    if state in jobs.ACTIVE:
        st.progress(float(status.get("progress") or 0.0), text=f"GCE training ({state}): {status.get('message', '')}")
        if st.button("Cancel GCE training", key="gce_cancel"):
            jobs.request_cancel(ws, status["id"])
            st.info("Cancel requested; the job stops at its next step.")
    elif state == "done":
        if st.session_state.get("_gce_was_running"):
            st.session_state["_gce_was_running"] = False
            st.rerun()
        st.success("GCE biased model trained.")
    else:
        if state == "failed":
            st.error(f"GCE training failed: {status.get('error')}")
        elif state == "cancelled":
            st.warning("GCE training was cancelled.")
        cfg = gce.GCEConfig()
        st.caption(f"Trains a fresh copy of the architecture with the GCE loss (q = {cfg.q}, {cfg.epochs} epochs, "
                   f"Adam lr {cfg.lr:g}) as a background job; the loaded model is not touched.")
        if st.button("Train GCE biased model", key="gce_start", type="primary"):
            try:
                R.start_gce_job(ws)
            except WorkspaceError as exc:
                st.error(str(exc))
                return
            st.session_state["_gce_was_running"] = True
            st.rerun()
    st.session_state["_gce_was_running"] = state in jobs.ACTIVE or st.session_state.get("_gce_was_running", False)


def gce_ready(ws) -> bool:
    """Show the GCE job panel (polling while it runs); True when the model is trained."""
    running = R.gce_status(ws).get("status") in jobs.ACTIVE
    st.fragment(_job_panel, run_every=2.0 if running else None)(ws)
    return R.gce_status(ws).get("status") == "done"


def compute(ws, version: str, opts: Options) -> pd.DataFrame | None:
    """The score table with a progress bar; the all-parameter pass waits for a click."""
    ui.outputs(ws, "train", version)  # the train pass, with its own progress bar
    if opts.params == "all" and not st.session_state.get(f"_grad_all_{opts.k}"):
        st.info("All-parameter gradients need a pass of torch.func over the whole train split (two passes: "
                "select the k dominant dimensions, then gather them).")
        if not st.button("Compute all-parameter gradients", key="grad_all_go"):
            return None
        st.session_state[f"_grad_all_{opts.k}"] = True
    try:
        with ui.ProgressBar("Per-sample gradients") as bar:
            frame = R.compute_scores(ws, version, params=opts.params, k=opts.k, lam=opts.lam,
                                     biased_model=opts.biased_model, progress=bar)
    except (WorkspaceError, Cancelled) as exc:
        st.error(f"Cannot compute gradient scores: {exc}")
        return None
    return frame


def review_gallery(ws, rows: pd.DataFrame, version: str, *, tag: str, columns: int = 6) -> None:
    """Images with label/prediction/p_s and "confirm mislabelled" / "not mislabelled" buttons."""
    if rows.empty:
        st.caption("No samples.")
        return
    names = ws.class_names
    data = ws.split("train")
    cols = st.columns(columns)
    for j, row in enumerate(rows.itertuples()):
        index = int(row.index)
        key = f"train:{index}"
        with cols[j % columns]:
            try:
                st.image(data.load(index), width=96)
            except Exception as exc:  # noqa: BLE001 - a broken image must not break the page
                st.caption(f"cannot load ({type(exc).__name__})")
            st.caption(f"#{index} label **{names[int(row.label)]}** → {names[int(row.pred)]}  \n"
                       f"p_s 10^{row.log_p_s / 2.302585:.1f} · L~ {row.comp_loss:.2f}")
            for verdict, text in VERDICTS.items():
                if st.button(text, key=f"rev_{tag}_{verdict[:3]}_{index}"):
                    ws.store.upsert_review("mislabel", key, model_version=version, verdict=verdict)
            review = ws.store.get_review("mislabel", key, model_version=version)
            if review is not None:
                st.caption(f"reviewed: *{review['verdict']}*")


def exports(ws, version: str, frame: pd.DataFrame, opts: Options) -> None:
    """CSV downloads: the score table shown, and the pgd sampling weights the repair uses
    (:func:`diagnostics.run_gradients.train_sampling_probabilities`: same biased model, last
    layer, lambda 0)."""
    c1, c2 = st.columns(2)
    tag = f"{opts.biased_model or 'loaded'}-{opts.params}"
    c1.download_button("Download scores (CSV)", frame[G.CSV_COLUMNS].to_csv(index=False),
                       file_name=f"gradient-scores-{tag}-lam{opts.lam:g}.csv", mime="text/csv", key="grad_dl_scores")
    try:
        sampler = R.compute_scores(ws, version, lam=0.0, biased_model=opts.biased_model)
    except WorkspaceError as exc:
        c2.error(f"Cannot compute the pgd sampling weights: {exc}")
        return
    c2.download_button("Download pgd sampling weights (CSV)",
                       R.sampling_weights_frame(ws, sampler).to_csv(index=False),
                       file_name=f"pgd-sampling-weights-{opts.biased_model or 'loaded'}.csv", mime="text/csv",
                       key="grad_dl_weights")
