"""Streamlit widgets of the repair page: settings, the duration estimate, job status, before/after."""

from __future__ import annotations

import streamlit as st
import torch

from diagnostics.compare import compare_outputs
from diagnostics.figures_confusion import comparison_heatmap
from pages import ui
from pages.widgets import confusion as wc
from pages.widgets.controls import change
from repair.figures import curves_figure
from repair.loop import TrainConfig, estimate_seconds
from repair.methods import TargetContext, get_method
from repair.selection import format_setting
from workspace.errors import Cancelled, WorkspaceError
from workspace.jobs import ACTIVE, format_seconds, job_seconds
from workspace.targets import Target


def targets(ws, out) -> Target | None:
    """The workspace's repair target (editable); defaults to the most confused pair."""
    t = wc.tables(ws, out)
    default = Target(((int(t["pairs"].iloc[0].a_id), int(t["pairs"].iloc[0].b_id)),), ws.class_names) \
        if len(t["pairs"]) else Target(((0, 1),), ws.class_names)
    target = wc.targets_editor(ws, default, key="repair_targets_text", source="Repair page")
    source = ui.target_source(ws)
    if target is not None:
        st.caption(f"{target.kind.capitalize()} target **{target.label}**"
                   + (f" (from the {source})" if source else " (the most confused pair; edit to change)"))
    return target


def settings(ws, method: str, scope: str):
    """The method's parameter and the training settings; returns (rho, TrainConfig)."""
    m = get_method(method)
    param = m.param
    rho = None
    if param is not None and param.scale == "log":
        choices = param.choices()
        wanted = ui.ws_state(ws).get(ui.WOS_RHO, param.default)
        value = min(choices, key=lambda r: abs(r - wanted))
        rho = st.select_slider(f"{param.name} (log scale): {param.help}", choices, value=value,
                               key=f"repair_rho_{m.name}", format_func=lambda r: f"{r:.4g}")
    elif param is not None:
        rho = st.slider(f"{param.name}: {param.help}", param.low, param.high, param.default, param.step,
                        key="repair_rho")
    base = TrainConfig.for_workspace(ws)
    if m.post_hoc:
        return rho, base.replace(scope=scope)
    with st.expander("Training settings", expanded=False):
        c = st.columns(4)
        epochs = c[0].number_input("epochs", 1, 1000, base.epochs, key="repair_epochs")
        lr = c[1].number_input("learning rate", 1e-6, 1.0, base.lr, format="%.5f", key="repair_lr")
        batch = c[2].number_input("batch size", 1, 4096, base.batch_size, key="repair_batch")
        wd = c[3].number_input("weight decay", 0.0, 0.1, base.weight_decay, format="%.5f", key="repair_wd")
        c = st.columns(4)
        seed = c[0].number_input("seed", 0, 2**31 - 1, 0, key="repair_seed")
        fraction = c[1].number_input("train fraction", 0.01, 1.0, 1.0, 0.05, key="repair_fraction",
                                     help="train on this random share of the train split (a quick run)")
        max_steps = c[2].number_input("max steps (0 = no limit)", 0, 10**7, 0, key="repair_max_steps")
        every = c[3].number_input("evaluate every N steps (0 = auto)", 0, 10**6, 0, key="repair_eval_every",
                                  help="auto: every epoch, plus 4 times per epoch for long epochs (head: 4 per epoch)")
        paper = st.checkbox("the WR paper's schedule (SGD + Nesterov, lr x0.1 at 50 % and 75 %)",
                            key="repair_paper_schedule")
        gpus = torch.cuda.device_count()
        if gpus > 1 and scope != "head":
            st.number_input(f"GPUs (data-parallel processes; this machine has {gpus})", 1, gpus, gpus,
                            key="repair_nproc", help="DDP through torchrun: the batch is split over the GPUs")
    return rho, base.replace(epochs=int(epochs), lr=float(lr), batch_size=int(batch), weight_decay=float(wd),
                             seed=int(seed), scope=scope, train_fraction=float(fraction),
                             max_steps=int(max_steps) or None, eval_every_steps=int(every),
                             schedule="paper" if paper else "cosine")


def estimate(ws, method: str, target: Target, rho: float | None, config: TrainConfig, parent: str) -> None:
    """A button that times a few real training steps and extrapolates the run's duration."""
    m = get_method(method)
    if m.post_hoc:
        st.caption("Post-hoc: computed from the cached outputs in well under a second.")
        return
    key = ("estimate", ws.spec, method, target.text, rho, repr(config), parent)
    found = st.session_state.get("_repair_estimate")
    if st.button("Estimate the duration", key="repair_estimate",
                 help="Times a few real training steps on a copy of the model (the first run also decodes the "
                      "images or computes the embeddings it needs, once)"):
        try:
            ctx = TargetContext.of(target, 1.0 if rho is None else rho, ws.task, config.scope)
            m.prepare(ws, parent)
            with ui.ProgressBar("Preparing the timing probe") as bar:
                found = (key, estimate_seconds(ws, m, ctx, config, parent=parent, progress=bar))
            st.session_state["_repair_estimate"] = found
        except (WorkspaceError, ValueError, Cancelled) as exc:
            st.error(f"Cannot estimate: {exc}")
            return
    if found and found[0] == key:
        e = found[1]
        st.info(f"Estimated duration **{format_seconds(e['seconds'])}**: {e['steps']:,} steps at "
                f"{e['per_step']:.3f} s + {e['evaluations']} evaluations at {e['per_evaluation']:.1f} s "
                f"({config.scope} scope, measured now on this machine).")


def run_status(ws, run: dict) -> None:
    """Progress (elapsed, ETA), message, log tail and a cancel button of one queued/running run."""
    from workspace import jobs

    head = (f"Run {run['id']}: {format_setting(run['method'], run['rho'])}, "
            f"{(run['config'] or {}).get('scope', 'all')} scope, is {run['status']}")
    elapsed = job_seconds(run)
    eta = "" if run["eta"] is None else f" · ETA {format_seconds(run['eta'])}"
    st.progress(float(run["progress"] or 0.0),
                text=f"{head} ({float(run['progress'] or 0):.0%}" + (f" · elapsed {format_seconds(elapsed)}"
                                                                       if elapsed else "") + f"{eta})")
    if run["message"]:
        st.caption(run["message"])
    cols = st.columns([1, 4])
    if cols[0].button("Cancel", key=f"repair_cancel_{run['id']}", disabled=bool(run["cancel_requested"])):
        jobs.request_cancel(ws, run["id"])
        st.toast(f"Cancelling run {run['id']}…")
    if run["log_tail"]:
        with cols[1].expander("Log"):
            st.code(run["log_tail"], language=None)


def live_curves(ws, run: dict) -> None:
    metrics = ws.store.run_metrics(run["id"])
    if any(m["accuracy"] is not None for m in metrics) or any(m["loss"] is not None for m in metrics):
        st.plotly_chart(curves_figure(metrics, title=f"Run {run['id']}: {run['method']} ({run['status']})"),
                        key=f"repair_curves_{run['id']}")
    else:
        st.caption(f"Run {run['id']}: no training step or evaluation yet.")
    if run["status"] not in ACTIVE and run.get("log_tail"):
        with st.expander(f"Run {run['id']}'s log"):
            st.code(run["log_tail"], language=None)


def before_after(ws, run: dict, target: Target | None) -> None:
    """Accuracy and target error before/after, the confusion change (green = better), and the
    fixed / broken galleries of a finished run (WR paper Figure 7)."""
    run_target = Target.from_dict(run["targets"], ws.class_names) or target
    before = ui.outputs(ws, "eval", run["parent_version"] or "orig")
    after = ui.outputs(ws, "eval", run["model_version"])
    cmp = compare_outputs(before, after, run_target.groups if run_target else None)
    c = st.columns(4)
    c[0].metric("Accuracy", f"{cmp.accuracy[1]:.2%}", **change(cmp.accuracy[1] - cmp.accuracy[0], "+.2%"))
    if cmp.target_error is not None:
        c[1].metric(f"Target error ({run_target.label})", f"{cmp.target_error[1]:.4f}",
                    **change(cmp.target_error[1] - cmp.target_error[0], "+.4f", lower_is_better=True))
    c[2].metric("Fixed (wrong → right)", f"{len(cmp.fixed):,}")
    c[3].metric("Broken (right → wrong)", f"{len(cmp.broken):,}")
    if cmp.identical:
        st.info(f"{run['model_version']} makes the same predictions as {run['parent_version'] or 'orig'} on all "
                f"{cmp.n:,} eval images: nothing to compare (the run's log above says why).")
        return
    st.plotly_chart(comparison_heatmap(cmp, ws.class_names, rows=wc.heatmap_classes(wc.tables(ws, before)["pairs"],
                                                                                   ws.num_classes),
                                       title="after − before (rates; green = better)"), key="repair_confusion_diff")
    names = ws.class_names
    lookup = {int(i): k for k, i in enumerate(after.indices)}
    for title, idx in (("Fixed", cmp.fixed), ("Broken", cmp.broken)):
        st.markdown(f"**{title}** ({len(idx):,}; first 16)")
        shown = [int(i) for i in idx[:16]]
        caps = None if ws.multi_label else [f"{names[after.labels[lookup[i]]]} → {names[after.preds[lookup[i]]]}"
                                            for i in shown]
        ui.thumbnails(ws, "eval", shown, caps, columns=8, width=72)


def processes(scope: str) -> int:
    """The data-parallel process count picked in the settings (1 without several GPUs)."""
    return int(st.session_state.get("repair_nproc", 1)) if scope != "head" and torch.cuda.device_count() > 1 else 1


__all__ = ["ACTIVE", "processes", "targets", "settings", "estimate", "run_status", "live_curves", "before_after"]
