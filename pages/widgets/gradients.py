"""Streamlit widgets of the gradient-score page: options, the GCE job panel, the noise flag, galleries."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd
import streamlit as st

from diagnostics import gce
from diagnostics import gradients as G
from diagnostics import run_gradients as R
from diagnostics.figures_gradients import format_log, format_value
from pages import ui
from workspace import jobs
from workspace.errors import Cancelled, WorkspaceError

LAZY_ROWS = 2000  # tables longer than this load their rows lazily
HIGHEST, LOWEST = "Highest p_s (likely minority)", "Lowest p_s (most typical)"   # gallery tabs
LOADED, GCE = "loaded model", "GCE biased model (PGD paper, q = 0.7)"
VERDICTS = {"mislabelled": "confirm mislabelled", "not mislabelled": "not mislabelled"}
GLOSSARY = {
    "M": "magnitude score, 1/‖g‖ normalised over the class: high = small gradient, a typical sample",
    "D": "direction score, von Mises-Fisher likelihood of the gradient's direction in its class: high = the usual "
         "direction",
    "S": "weighted harmonic mean of M and D (lambda = 0: S = M)",
    "p_s": "min S / S, the pgd rejection sampler's keep probability: high = rare, likely bias-conflicting minority",
    "compensated loss": "L~ = CE / H, the given label's cross-entropy over the prediction's entropy (PGD eq. 2)",
    "likely mislabelled": "among the paper's flags (L~ ≥ delta), per (label, prediction) pair, as many as the model "
                          "is confidently wrong beyond its own rate on held-out data (confident learning), highest L~ "
                          "first",
}


@dataclass(frozen=True)
class Options:
    biased_model: str | None
    params: str
    k: int
    lam: float


def gce_unavailable(ws) -> str | None:
    """Why the GCE biased model cannot be trained for this workspace (None: it can)."""
    from workspace.models import is_scripted

    if ws.multi_label:
        return "the GCE biased model is single-label only"
    if is_scripted(ws.model()):
        return "a TorchScript model cannot be re-initialised and trained"
    return None


def options(ws) -> Options:
    """The scoring options; the GCE biased model (PGD Algorithm 2, step 1) comes first where it applies."""
    c1, c2, c3, c4 = st.columns(4)
    sources = [LOADED] if gce_unavailable(ws) else [GCE, LOADED]
    source = c1.radio("Biased model", sources, key="grad_source",
                      help="The PGD paper scores samples with a model trained from scratch with the GCE loss, which "
                           "leans on the easy (biased) cue, so bias-conflicting samples stand out; the loaded model "
                           "is the quick alternative. The mislabelled flag always uses the selected model version.")
    params = c2.radio("Parameters", ["last", "all"], key="grad_params",
                      format_func=lambda p: {"last": "last layer (exact closed form)",
                                             "all": "all parameters (top-k dims)"}[p])
    k = int(c3.number_input("k dominant dims", min_value=1, max_value=100_000, value=256, step=32, key="grad_k",
                            disabled=params != "all"))
    lam = float(c4.number_input(
        "lambda (M vs D balance)", min_value=0.0, max_value=100.0, value=R.DEFAULT_LAM, step=0.5, key="grad_lam",
        help="S = (1 + lambda^2) M D / (lambda^2 M + D). 0 (default): S = M, the magnitude-only sampler. Any "
             "lambda > 0 lets the direction score in; in gradient space it spans hundreds of orders of magnitude, "
             "so p_s collapses onto a few samples (watch the effective sample share)."))
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


def resolve_source(ws, opts: Options) -> Options:
    """The options actually scored: the loaded model until the GCE model exists (said on the page)."""
    if opts.biased_model == "gce" and not gce_ready(ws):
        st.info("Until the GCE biased model is trained, the scores below come from the loaded model.")
        return replace(opts, biased_model=None)
    return opts


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


def noise_flag(frame: pd.DataFrame) -> pd.DataFrame:
    """The likely-mislabelled slider (how many of the paper's flags to keep) and what the flag used.

    Returns the frame with ``noisy`` at the chosen count (the stored table is not changed).
    """
    a = frame.attrs
    paper, default, n = int(frame["noisy_paper"].sum()), int(a["noise_default"]), len(frame)
    if paper == 0:
        st.caption("No sample reaches the paper's threshold (compensated loss ≥ delta): nothing to flag.")
        return frame
    count = int(st.slider(
        "Samples flagged as likely mislabelled (most suspicious first)", 0, paper, default, key=f"grad_flag_n_{paper}",
        help=f"Default {default}; up to the {paper} samples of the paper's rule. Left: keep only the strongest "
             "evidence; right: add the paper's other flags by compensated loss."))
    frame = R.flag_count(frame, count) if count != default else frame
    a = frame.attrs
    t = [x for x in a.get("class_thresholds", []) if x is not None] or [float("nan")]
    held = ("" if a.get("heldout_share") is None else
            f", {a['heldout_share']:.1%} on the held-out {a['heldout_split']} split, whose labels are taken as "
            "correct; the excess per (label, prediction) pair is flagged")
    st.caption(
        f"Flagged **{a['noise_count']:,}** of {n:,} samples (**{a['noisy_share']:.2%}**), default {default:,}. "
        f"Paper's rule (compensated loss ≥ delta = {a['delta']:.3f}): {paper:,} ({a['noisy_paper_share']:.2%}). "
        f"Threshold used: the model puts at least its average self-confidence in another class "
        f"(per-class thresholds {min(t):.2f} to {max(t):.2f}) on {a['confident_errors'] / max(n, 1):.1%} of these "
        f"samples{held}.")
    return frame


def planted_recovery(frame: pd.DataFrame, planted: dict | None) -> None:
    """Demo ground truth: flipped labels found by the flag at the chosen count and by the paper's rule."""
    now = G.planted_summary(frame, planted)
    if "flip_recall" not in now:
        return
    c1, c2 = st.columns(2)
    c1.metric("Flipped labels flagged (this count)", f"{now['flip_recall']:.1%}",
              delta=f"clean flagged {now['clean_flagged']:.2%}", delta_color="off", delta_arrow="off",
              help=f"demo ground truth: {len(planted['flipped_labels'])} planted flips")
    c2.metric("Flipped labels flagged (paper's rule)", f"{frame.attrs['flip_recall_paper']:.1%}",
              delta=f"clean flagged {frame.attrs['clean_flagged_paper']:.2%}", delta_color="off",
              delta_arrow="off")


def caption(row, names) -> str:
    """The evidence under an image: label, prediction, p(label), p(pred), CE, entropy, p_s."""
    return (f"#{int(row.index)} label **{names[int(row.label)]}** → {names[int(row.pred)]}"
            f"{' · ⚑ flagged' if row.noisy else ''}  \n"
            f"p(label) {format_value(row.p_label)} · p(pred) {format_value(row.p_pred)}  \n"
            f"CE {format_value(row.ce)} · entropy {format_value(row.entropy)}  \n"
            f"p_s {format_log(row.log_p_s)}")


def review_gallery(ws, rows: pd.DataFrame, version: str, *, tag: str, columns: int = 6) -> None:
    """Images with their evidence and "confirm mislabelled" / "not mislabelled" buttons."""
    if rows.empty:
        st.caption("No samples.")
        return
    names = ws.class_names
    data = ws.split("train")
    for j, row in enumerate(rows.itertuples()):
        if j % columns == 0:  # a fresh row of columns keeps the images aligned under captions of any height
            cols = st.columns(columns)
        index = int(row.index)
        key = f"train:{index}"
        with cols[j % columns]:
            try:
                st.image(data.load(index), width=96)
            except Exception as exc:  # noqa: BLE001 - a broken image must not break the page
                st.caption(f"cannot load ({type(exc).__name__})")
            st.caption(caption(row, names))
            for verdict, text in VERDICTS.items():
                if st.button(text, key=f"rev_{tag}_{verdict[:3]}_{index}"):
                    ws.store.upsert_review("mislabel", key, model_version=version, verdict=verdict)
            review = ws.store.get_review("mislabel", key, model_version=version)
            if review is not None:
                st.caption(f"reviewed: *{review['verdict']}*")


@st.fragment
def galleries(ws, view: pd.DataFrame, version: str) -> None:
    """The four review galleries (flagged, highest / lowest p_s, the paper's rule only) and their
    size. A fragment: the size slider and the review buttons rerun only the galleries."""
    n = int(st.slider("Images per gallery", 6, 36, 12, step=6, key="grad_n"))
    by_p = view.sort_values("log_p_s", ascending=False)
    flagged = view[view["noisy"]].sort_values("noise_rank")
    paper_only = view[view["noisy_paper"] & ~view["noisy"]].sort_values("noise_rank")
    # only the open tab's gallery is drawn (four of them were 3,000 DOM nodes at 12 images each)
    g1, g2, g3, g4 = st.tabs([f"Flagged likely mislabelled ({len(flagged):,})", HIGHEST, LOWEST,
                              f"Paper's rule only ({len(paper_only):,})"], key="grad_gallery", on_change="rerun")
    if g1.open:
        with g1:
            review_gallery(ws, flagged.head(n), version, tag="noisy")
    if g2.open:
        with g2:
            review_gallery(ws, by_p.head(n), version, tag="hi")
    if g3.open:
        with g3:
            review_gallery(ws, by_p.tail(n).iloc[::-1], version, tag="lo")
    if g4.open:
        with g4:
            st.caption("Samples above the paper's threshold that the calibrated flag leaves out, most suspicious "
                       "first.")
            review_gallery(ws, paper_only.head(n), version, tag="paper")


def score_table(view: pd.DataFrame, class_names) -> None:
    """The exported table, one row per scored sample (sortable), label and prediction named
    (the CSV keeps the class indices)."""
    config = {c: st.column_config.NumberColumn(c, format="%.3e")
              for c in ("M", "D", "S", "p_s", "p_label", "entropy", "comp_loss")}
    config.update({c: st.column_config.NumberColumn(c, format="%.3f") for c in ("grad_norm", "p_pred", "ce")})
    config["log_p_s"] = st.column_config.NumberColumn("log_p_s", format="%.2f")
    names = pd.Series(list(class_names))
    shown = view[R.EXPORT_COLUMNS].assign(label=names[view["label"].to_numpy()].to_numpy(),
                                          pred=names[view["pred"].to_numpy()].to_numpy())
    # past LAZY_ROWS the browser fetches the rows it shows and sorts on the server: a 20,000-row
    # table sent whole was 2.4 MB per rerun
    st.dataframe(shown, hide_index=True, key="grad_table", height=320, lazy=len(view) > LAZY_ROWS,
                 column_config=config)


def exports(ws, version: str, frame: pd.DataFrame, opts: Options) -> None:
    """CSV downloads: the score table shown, and the pgd sampling weights the repair uses
    (:func:`diagnostics.run_gradients.train_sampling_probabilities`: same biased model, last
    layer, lambda 0). Each CSV is written when its button is clicked (both on every run were
    0.3 s of the page's script at 20,000 train samples)."""
    c1, c2 = st.columns(2)
    tag = f"{opts.biased_model or 'loaded'}-{opts.params}"
    c1.download_button("Download scores (CSV)", lambda: frame[R.EXPORT_COLUMNS].to_csv(index=False),
                       file_name=f"gradient-scores-{tag}-lam{opts.lam:g}.csv", mime="text/csv", key="grad_dl_scores")
    try:
        sampler = R.compute_scores(ws, version, lam=R.DEFAULT_LAM, biased_model=opts.biased_model)
    except WorkspaceError as exc:
        c2.error(f"Cannot compute the pgd sampling weights: {exc}")
        return
    c2.download_button("Download pgd sampling weights (CSV)",
                       lambda: R.sampling_weights_frame(ws, sampler).to_csv(index=False),
                       file_name=f"pgd-sampling-weights-{opts.biased_model or 'loaded'}.csv", mime="text/csv",
                       key="grad_dl_weights")
