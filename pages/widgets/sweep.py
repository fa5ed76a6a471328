"""Streamlit widgets of the sweep page: the new-sweep form, live status, grid, trade-off, table, exports."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import ui
from pages.widgets import confusion as wc
from repair import sweep
from repair.figures import sweep_figure
from repair.loop import TrainConfig
from repair.methods import SCOPE_HELP, SCOPES, baseline_methods, get_method, list_methods
from repair.selection import DEFAULT_RHOS, format_setting
from repair.stats import a12_letter
from workspace.errors import WorkspaceError
from workspace.jobs import ACTIVE, format_seconds, job_seconds
from workspace.targets import Target

MISSING = "not in the store"  # the status shown for a run an ended sweep no longer has
EXPORTS = (("csv", "CSV", "text/csv", "csv"), ("markdown", "Markdown", "text/markdown", "md"),
           ("latex", "LaTeX", "text/x-tex", "tex"))


def target(ws, out) -> Target | None:
    """The workspace's repair target (editable); defaults to the most confused pair."""
    pairs = wc.tables(ws, out)["pairs"]
    default = Target(((int(pairs.iloc[0].a_id), int(pairs.iloc[0].b_id)),), ws.class_names) if len(pairs) else \
        Target(((0, 1),), ws.class_names)
    return wc.targets_editor(ws, default, key="sweep_targets_text", source="Sweep page")


def _rhos(text: str) -> list[float]:
    return [float(t) for t in text.replace(";", ",").split(",") if t.strip()]


def settings(ws, parent: str) -> dict | None:
    """The new-sweep form; returns :func:`repair.sweep.create_sweep`'s options, or None on bad input."""
    original, baseline = baseline_methods()
    scope = st.radio("Scope", SCOPES, horizontal=True, key="sweep_scope", index=SCOPES.index("head"),
                     help=" · ".join(f"{s}: {h}" for s, h in SCOPE_HELP.items()))
    model = ws.model(parent)
    offered = [n for n in list_methods() if n not in (original, baseline) and get_method(n).kind != "baseline"]
    usable = [n for n in offered if get_method(n).applicability(model, ws, sweep.method_scope(scope, n)) is None]
    default = [n for n in sweep.default_methods() if n in usable]
    methods = st.multiselect(f"Methods ({baseline} always runs: it is the baseline of the tests)", usable,
                             default=default, key="sweep_methods")
    moved = [n for n in methods if sweep.method_scope(scope, n) != scope and not get_method(n).post_hoc]
    c = st.columns(4)
    rho_text = c[0].text_input("rho grid", ", ".join(f"{r:g}" for r in DEFAULT_RHOS), key="sweep_rhos")
    seeds = c[1].number_input("seeds", 1, 20, 5, key="sweep_seeds", help="per selected setting and the baseline")
    base = TrainConfig.for_workspace(ws)
    epochs = c[2].number_input("epochs", 1, 1000, base.epochs, key="sweep_epochs")
    budget = c[3].number_input("step budget of all-scope runs (0 = none)", 0, 10**6, 0, key="sweep_all_steps",
                               help="caps the runs of methods that run at the all scope (fewer steps: faster)")
    if moved:
        st.caption(f"{', '.join(moved)} cannot run at the {scope} scope: "
                   f"{'they run' if len(moved) > 1 else 'it runs'} at the all scope.")
    paper = st.checkbox("the WR paper's schedule (SGD + Nesterov, lr x0.1 at 50 % and 75 %)", key="sweep_paper")
    try:
        rhos = _rhos(rho_text)
    except ValueError:
        st.error(f"rho grid: {rho_text!r} is not a comma-separated list of numbers")
        return None
    config = (TrainConfig.paper(epochs=int(epochs), augment=base.augment) if paper else base).replace(
        epochs=int(epochs), scope=scope)
    return {"methods": methods, "config": config, "rhos": rhos, "seeds": int(seeds), "parent": parent,
            "scope_max_steps": {"all": int(budget)} if budget else {}}


def status(ws, job: dict) -> None:
    """Progress with elapsed time and ETA, the message, cancel / resume buttons and the log."""
    from workspace import jobs

    elapsed = job_seconds(job)
    eta = "" if job["eta"] is None else f" · ETA {format_seconds(job['eta'])}"
    text = (f"Sweep {job['id']} is {job['status']} ({float(job['progress'] or 0):.0%}"
            + (f" · elapsed {format_seconds(elapsed)}" if elapsed else "") + f"{eta})")
    st.progress(float(job["progress"] or 0.0), text=text)
    if job["message"]:
        st.caption(job["message"])
    if job["status"] == "failed" and job["error"]:
        st.error(f"Sweep {job['id']} failed: {job['error']}")
    c = st.columns([1, 1, 4])
    if job["status"] in ACTIVE:
        if c[0].button("Cancel", key=f"sweep_cancel_{job['id']}", disabled=bool(job["cancel_requested"])):
            jobs.request_cancel(ws, job["id"])
            st.toast(f"Cancelling sweep {job['id']}…")
    elif job["status"] != "done" and c[0].button("Resume", key=f"sweep_resume_{job['id']}",
                                                 help="runs what is left; finished runs are reused"):
        jobs.start_worker(ws, sweep.resume_sweep(ws, job["id"]))
        st.rerun()
    if job["log_tail"]:
        with c[2].expander("Log"):
            st.code(job["log_tail"], language=None)


def grid_view(state: sweep.SweepState) -> None:
    """Every run of the sweep with its status (pending runs included)."""
    grid = state.grid.copy()
    if state.job["status"] == "done":
        # an ended sweep runs nothing more: a run still "pending" is gone from the store (deleted or
        # from an older store), and calling it pending would promise a result that never comes
        grid.loc[grid["status"] == "pending", "status"] = MISSING
    counts = grid["status"].value_counts().to_dict()
    st.caption(" · ".join(f"{n} {s}" for s, n in counts.items())
               + ("" if state.complete or state.job["status"] == "done"
                  else " · more runs follow once these finish (w-os search, seeds)"))
    grid["setting"] = [format_setting(m, None if pd.isna(r) else r) for m, r in zip(grid["method"], grid["rho"])]
    st.dataframe(grid[["setting", "seed", "scope", "phase", "status", "accuracy", "target_error", "run_id", "reused",
                       "selected"]], hide_index=True, key="sweep_grid",
                 column_config={"accuracy": st.column_config.NumberColumn(format="%.4f"),
                                "target_error": st.column_config.NumberColumn(format="%.4f")})


def tradeoff(state: sweep.SweepState, lambda1: float, lambda2: float) -> None:
    if not (state.grid["run_id"].notna() & (state.grid["status"] == "done")).any():
        ui.empty_chart("The trade-off chart appears with the first finished run.")
        return
    st.plotly_chart(sweep_figure(state.grid, original=state.original, baseline=baseline_methods()[1],
                                 lambda1=lambda1, lambda2=lambda2), key="sweep_tradeoff")


def table(state: sweep.SweepState) -> None:
    """The WR Table 2 layout: mean +- std, ranks, rank sums, p-values, A12 with its letter; exports."""
    if state.table is None:
        if state.job["status"] == "done":
            st.warning(f"This sweep has ended without a result table: runs of its grid are {MISSING}. "
                       "Launch the sweep again to compute them.")
        else:
            st.info("The table appears once every grid run has finished and each method's rho is selected.")
        return
    if not state.complete:
        st.caption("Provisional: some seeds are still running.")
    t = state.table
    view = pd.DataFrame({
        "setting": [format_setting(m, None if pd.isna(r) else r) for m, r in zip(t["method"], t["rho"])],
        "accuracy": [f"{m:.4f}" + ("" if pd.isna(s) else f" ± {s:.4f}") for m, s in zip(t["accuracy_mean"],
                                                                                         t["accuracy_std"])],
        state.error_name.lower(): [f"{m:.4f}" + ("" if pd.isna(s) else f" ± {s:.4f}")
                                   for m, s in zip(t["target_error_mean"], t["target_error_std"])],
        "acc rank": t["accuracy_rank"], "error rank": t["target_error_rank"], "rank sum": t["rank_sum"],
        "top 2": t["top2"], "p (error)": t["p_target_error"],
        "A12 (error)": [_a12(a) for a in t["a12_target_error"]], "p (accuracy)": t["p_accuracy"],
        "A12 (accuracy)": [_a12(a) for a in t["a12_accuracy"]], "repaired": t["repaired"], "verdict": t["verdict"]})
    st.dataframe(view, hide_index=True, key="sweep_table",
                 column_config={"p (error)": st.column_config.NumberColumn(format="%.3f"),
                                "p (accuracy)": st.column_config.NumberColumn(format="%.3f"),
                                "verdict": st.column_config.TextColumn(width="large")})
    cols = st.columns(len(EXPORTS))
    for col, (fmt, label, mime, ext) in zip(cols, EXPORTS):
        col.download_button(f"Download {label}", sweep.export_table(state, fmt), file_name=f"sweep-{state.job['id']}.{ext}",
                            mime=mime, key=f"sweep_download_{fmt}")


def _a12(value) -> str:
    return "" if pd.isna(value) else f"{value:.2f} ({a12_letter(value)})"


def keep(ws, state: sweep.SweepState) -> None:
    """Turn a finished fine-tuning run of the sweep into a model version (runs its setting again)."""
    grid = state.grid
    runs = grid[(grid["status"] == "done") & grid["run_id"].notna()
                & ~grid["method"].map(lambda m: get_method(m).post_hoc)]
    if runs.empty:
        return
    labels = {int(r.run_id): f"run {int(r.run_id)}: {format_setting(r.method, None if pd.isna(r.rho) else r.rho)} "
                             f"seed {r.seed}" + (" (selected)" if r.selected else "") for r in runs.itertuples()}
    c = st.columns([3, 1])
    pick = c[0].selectbox("Keep a run as a model version", list(labels), format_func=labels.get, key="sweep_keep_run",
                          help="Sweep runs keep metrics only: this runs the setting again as a repair run (same seed: "
                               "on CPU the same weights) and saves the result as a new model version.")
    if c[1].button("Keep as model version", key="sweep_keep"):
        try:
            new = sweep.keep_as_version(ws, pick)
            st.success(f"Run {new} started: it saves {labels[pick].split(': ', 1)[1]} as a new model version "
                       "(see the Repair page).")
        except (WorkspaceError, ValueError) as exc:
            st.error(f"Cannot keep run {pick}: {exc}")


def sweep_label(job: dict) -> str:
    names = "; ".join(",".join(t) for t in (job["targets"] or {}).get("targets", []))
    return f"sweep {job['id']} on {names}: {job['status']} ({len((job['params'] or {}).get('methods', []))} methods)"


__all__ = ["target", "settings", "status", "grid_view", "tradeoff", "table", "keep", "sweep_label"]
