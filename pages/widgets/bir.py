"""Streamlit pieces of the BIR page: the reserved set, the identification job, layer losses, scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from diagnostics import bir, run_bir
from pages import ui
from workspace import jobs
from workspace.errors import WorkspaceError


def reserved_summary(ws, version: str):
    """The reserved set per class and where it came from; None (with what to do) when there is none."""
    try:
        reserved = run_bir.reserved_set(ws, version)
    except WorkspaceError as exc:
        st.warning(str(exc))
        return None
    c = st.columns(3)
    c[0].metric("Reserved samples", f"{reserved.n:,}")
    c[1].metric("From the reserved split", f"{reserved.sources['reserved split']:,}")
    c[2].metric("Confirmed clean on Gradient scores", f"{reserved.sources['confirmed train samples']:,}")
    st.caption("Reserved samples per class")  # the bar chart has no title of its own
    st.bar_chart(pd.DataFrame({"reserved samples": reserved.per_class}, index=list(ws.class_names)), height=200)
    if reserved.warning():
        st.warning(reserved.warning())
    return reserved


@st.fragment(run_every=2.0)
def _status(ws, version: str) -> None:
    job = next((j for j in reversed(jobs.list_jobs(ws, kind=run_bir.JOB_KIND)) if j["parent_version"] == version),
               None)
    if job is None:
        return
    if job["status"] in jobs.ACTIVE:
        eta = "" if job["eta"] is None else f" · ETA {jobs.format_seconds(job['eta'])}"
        st.progress(float(job["progress"] or 0), text=f"BIR job {job['id']} {job['status']}{eta}")
        st.caption(job["message"] or "")
        if st.button("Cancel", key="bir_cancel"):
            jobs.request_cancel(ws, job["id"])
    elif job["status"] == "done" and not st.session_state.get("_bir_shown") == job["id"]:
        st.session_state["_bir_shown"] = job["id"]
        st.rerun(scope="app")
    elif job["status"] == "failed":
        st.error(f"BIR job {job['id']} failed: {job['error']}")


def job_panel(ws, version: str) -> None:
    st.info("Cause identification has not run for this model version yet. It trains each candidate layer subset "
            "one epoch on the reserved set, continues the best one (phi), then scores every train sample: a "
            "background job with progress and an ETA.")
    if st.button("Identify detrimental samples", key="bir_start", type="primary"):
        try:
            run_bir.start_job(ws, version)
        except WorkspaceError as exc:
            st.error(str(exc))
    _status(ws, version)


def layer_losses(found: dict) -> None:
    st.subheader("Which layers learn from the clean data")
    losses = pd.Series(found["losses"])
    colours = ["#1f77b4" if name == found["chosen"] else "#c7c7c7" for name in losses.index]
    fig = go.Figure(go.Bar(x=losses.index, y=losses.values, marker_color=colours))
    fig.add_hline(y=found["initial_loss"], line_dash="dot", annotation_text="before any update")
    fig.update_layout(height=300, yaxis_title="reserved-set loss after 1 epoch", margin={"t": 20})
    st.plotly_chart(fig, key="bir_losses")
    st.caption(f"Chosen: **{found['chosen']}** (lowest loss), trained {found['epochs']} epochs to phi "
               f"(reserved-set loss {found['phi_loss']:.3f}).")


def scores_view(ws, version: str, found: dict) -> pd.DataFrame:
    """The score histogram with the threshold; returns the flagged rows."""
    frame = found["scores"]
    st.subheader("Scores s(z) of every train sample")
    c = st.columns(2)
    mode = c[0].radio("Detrimental when", ["s(z) > threshold", "top K"], horizontal=True, key="bir_mode")
    if mode == "top K":
        k = int(c[1].number_input("K", 1, len(frame), min(len(frame), max(1, len(frame) // 100)), key="bir_k"))
        flag = np.zeros(len(frame), bool)
        flag[bir.select_causes(frame["score"].to_numpy(), top_k=k)] = True
        threshold = None
    else:
        threshold = float(c[1].number_input("threshold", -5.0, 5.0, float(bir.LOG_1_05), 0.01, format="%.4f",
                                            key="bir_threshold", help="BIR A.5: log 1.05"))
        flag = frame["score"].to_numpy() > threshold
    fig = go.Figure(go.Histogram(x=frame["score"], nbinsx=80))
    if threshold is not None:
        fig.add_vline(x=threshold, line_color="#b2182b", annotation_text="threshold")
    fig.update_layout(height=280, xaxis_title="s(z) = L(z; phi) − L(z; θ)", yaxis_type="log", margin={"t": 20})
    st.plotly_chart(fig, key="bir_hist")
    st.caption(f"{int(flag.sum()):,} of {len(frame):,} train samples detrimental ({flag.mean():.1%}).")
    warning = None if threshold is None else bir.selection_warning(
        int(flag.sum()), len(frame), phi_loss=found.get("phi_loss"), theta_loss=found.get("initial_loss"))
    if warning:
        st.warning(warning, icon=":material/warning:")
    return frame[flag].sort_values("score", ascending=False)


def samples(ws, version: str, found: dict, flagged: pd.DataFrame) -> None:
    st.subheader("Highest-scored samples")
    from diagnostics.run_report import stored_only

    noisy = None
    try:
        from diagnostics.run_gradients import compute_scores

        table = compute_scores(stored_only(ws), version)
        noisy = set(table.loc[table["noisy"], "index"].tolist())
    except WorkspaceError:
        pass
    if noisy is not None and len(flagged):
        both = len(noisy & set(flagged["index"].tolist()))
        st.caption(f"{both:,} of the {len(flagged):,} detrimental samples are also flagged likely mislabelled on "
                   f"Gradient scores ({len(noisy):,} flagged there).")
    elif noisy is None:
        st.caption("Gradient scores are not computed yet: compute them to see the overlap with their mislabel flag.")
    top = flagged.head(24)
    names = ws.class_names
    ui.thumbnails(ws, "train", top["index"].tolist(),
                  [f"#{r.index} {names[int(r.label)]} s={r.score:.2f}" for r in top.itertuples()], columns=8, width=80)


def launch(ws, version: str) -> None:
    """The link to the Repair page and the before/after of this version's finished BIR runs."""
    from repair.methods import BIR

    st.subheader("Repair")
    st.caption(f"The repair method **{BIR.name}** (Repair page) reuses this identification: it aligns the "
               "detrimental samples (an energy step, soft labels) and retrains the chosen layers on them plus as "
               "many others, until the loss on 10 % held-out train samples stops falling; it keeps the best epoch, "
               "and the model's own weights when no epoch lowers that loss.")
    st.page_link("pages/repair.py", label=f"Repair with {BIR.name}", icon=":material/build:")
    finished_runs(ws, version)


def finished_runs(ws, version: str) -> None:
    """Before/after of this version's finished BIR runs (drawn also before the page's own
    identification exists: a repair run identifies for itself)."""
    from repair import runs
    from repair.methods import BIR

    done = [r for r in runs.list_runs(ws, method=BIR.name)
            if r["status"] == "done" and (r["parent_version"] or "orig") == version and r["final"]]
    if done:
        st.caption(f"Finished {BIR.name} runs from {version}, before → after:")
        st.dataframe(pd.DataFrame([_before_after(r) for r in reversed(done)]), hide_index=True, key="bir_runs")


def _before_after(run: dict) -> dict:
    before, after = run["baseline"] or {}, run["final"] or {}

    def pair(key: str) -> str:
        if before.get(key) is None or after.get(key) is None:
            return "-"
        return f"{before[key]:.3f} → {after[key]:.3f}"

    kept = next((line.split("; kept ", 1)[1] for line in (run["log_tail"] or "").splitlines() if "; kept " in line),
                "-")
    return {"run": run["id"], "threshold": f"{run['rho']:.4g}", "accuracy": pair("accuracy"),
            "target error": pair("target_error"), "worst group": pair("worst_group_accuracy"),
            "kept": kept, "version": run["model_version"]}
