"""Streamlit widgets of the repair page: targets editor, settings, job status, before/after."""

from __future__ import annotations

import streamlit as st

from diagnostics.confusion import parse_targets
from pages import ui
from repair import jobs
from repair.figures import compare_outputs, confusion_diff_figure, curves_figure
from repair.loop import TrainConfig

WOS_RHOS = [1.0, 0.7, 0.5, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 1e-4]
ACTIVE = ("queued", "running")


def default_targets(ws) -> str:
    """The targets from the diagnostics pages, else the demo's planted pair, else classes 0,1."""
    chosen = st.session_state.get(ui.TARGETS)
    if chosen and chosen.get("targets"):
        return "; ".join(",".join(t) for t in chosen["targets"])
    if ws.planted and ws.planted.get("confused_pair"):
        return ",".join(ws.planted["confused_pair"])
    return ",".join(ws.class_names[:2])


def targets_editor(ws):
    """Editable targets text; returns index tuples, or None (with an error shown)."""
    source = st.session_state.get(ui.TARGETS_SOURCE)
    text = st.text_input("Targets: A,B (pair), A,B;C,D (pairs) or P,N,C (bias triplet)", value=default_targets(ws),
                         key="repair_targets_text", help=f"Prefilled from {source}" if source else
                         "Use 'Use as repair target' on the confusion, triplet, Grad-CAM or weakspot pages")
    if source:
        st.caption(f"Prefilled from the {source}.")
    try:
        targets = parse_targets(text, ws.class_names)
    except ValueError as exc:
        st.error(f"Targets: {exc}")
        return None
    kind = "confusion" if len(targets[0]) == 2 else "bias"
    st.session_state[ui.TARGETS] = {"kind": kind, "targets": [[ws.class_names[c] for c in t] for t in targets]}
    return targets


def settings(ws, method: str, uses_rho: bool):
    """rho (log steps for w-os) and the training settings; returns (rho, TrainConfig)."""
    if method == "w-os":
        rho = st.select_slider("rho (log scale; 1 = no change)", WOS_RHOS, value=0.1, key="repair_rho_wos")
    elif uses_rho:
        rho = st.slider("rho (1 = plain fine-tuning, smaller = more weight on the targets)", 0.0, 1.0, 0.5, 0.05,
                        key="repair_rho")
    else:
        rho = 1.0
    base = TrainConfig.for_workspace(ws)
    with st.expander("Training settings", expanded=False):
        c = st.columns(5)
        epochs = c[0].number_input("epochs", 1, 1000, base.epochs, key="repair_epochs")
        lr = c[1].number_input("learning rate", 1e-5, 1.0, base.lr, format="%.4f", key="repair_lr")
        batch = c[2].number_input("batch size", 1, 4096, base.batch_size, key="repair_batch")
        wd = c[3].number_input("weight decay", 0.0, 0.1, base.weight_decay, format="%.5f", key="repair_wd")
        seed = c[4].number_input("seed", 0, 2**31 - 1, 0, key="repair_seed")
    return float(rho), base.replace(epochs=int(epochs), lr=float(lr), batch_size=int(batch),
                                    weight_decay=float(wd), seed=int(seed))


def run_status(ws, run: dict) -> None:
    """Progress, message, log tail and a cancel button of one queued/running run."""
    head = f"Run {run['id']}: {run['method']} (rho {run['rho']}) is {run['status']}"
    st.progress(float(run["progress"] or 0.0), text=f"{head} ({float(run['progress'] or 0):.0%})")
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
    if metrics:
        st.plotly_chart(curves_figure(metrics, title=f"Run {run['id']}: {run['method']} ({run['status']})"),
                        key=f"repair_curves_{run['id']}")
    else:
        st.caption(f"Run {run['id']}: no evaluation yet.")


def before_after(ws, run: dict) -> None:
    """Confusion difference and fixed/broken galleries of a finished run (WR Figure 7)."""
    before = ui.outputs(ws, "eval", run["parent_version"] or "orig")
    after = ui.outputs(ws, "eval", run["model_version"])
    cmp = compare_outputs(before, after)
    c = st.columns(3)
    c[0].metric("Accuracy", f"{after.accuracy:.2%}", f"{after.accuracy - before.accuracy:+.2%}")
    c[1].metric("Fixed (wrong → right)", len(cmp["fixed"]))
    c[2].metric("Broken (right → wrong)", len(cmp["broken"]))
    if cmp["before_rates"] is not None:
        st.plotly_chart(confusion_diff_figure(cmp["before_rates"], cmp["after_rates"], ws.class_names),
                        key="repair_confusion_diff")
    names = ws.class_names
    lookup = {int(i): k for k, i in enumerate(after.indices)}
    for title, idx in (("Fixed", cmp["fixed"]), ("Broken", cmp["broken"])):
        st.markdown(f"**{title}** ({len(idx)}; first 16)")
        shown = [int(i) for i in idx[:16]]
        caps = None if ws.multi_label else [f"{names[after.labels[lookup[i]]]} → {names[after.preds[lookup[i]]]}"
                                            for i in shown]
        ui.thumbnails(ws, "eval", shown, caps, columns=8, width=72)
