"""Repair: pick targets and a method, launch a fine-tuning job, watch the trade-off live."""

import pandas as pd
import streamlit as st

from pages import ui
from pages.widgets import repair as W
from repair import jobs
from repair.figures import runs_frame, targets_label, tradeoff_figure
from repair.methods import get_method, method_table

ws = ui.workspace()
st.title("Repair")
st.caption("Fine-tuning runs are background jobs (one per device at a time, the others queue); every "
           "result is a new model version, and the loaded model file is never modified.")

targets = W.targets_editor(ws)
if targets is None:
    st.stop()
label = targets_label(st.session_state[ui.TARGETS])

table = pd.DataFrame(method_table(ws.model(ui.current_version(ws)), ws))
with st.expander("Methods: stage and applicability", expanded=False):
    st.dataframe(table[["method", "stage", "kind", "available", "reason", "description"]], hide_index=True,
                 key="repair_methods_table")
available = table[table["method"] != "orig"]
method = st.radio("Method", available["method"].tolist(), index=available["method"].tolist().index("w-bn")
                  if "w-bn" in available["method"].tolist() else 0, horizontal=True, key="repair_method",
                  format_func=lambda m: m if table.set_index("method").loc[m, "available"] else f"{m} (n/a)")
row = table.set_index("method").loc[method]
st.caption(f"**{method}** ({row['stage']} stage): {row['description']}")
if not row["available"]:
    st.warning(row["reason"] if row["reason"].startswith(method) else f"{method} is not applicable here: {row['reason']}")
rho, config = W.settings(ws, method, bool(row["uses_rho"]))
parent = ui.current_version(ws)

if st.button("Launch", key="repair_launch", type="primary", disabled=not row["available"]):
    try:
        if get_method(method).finetunes:
            run_id = jobs.submit(ws, method, targets, rho, config, parent=parent)
            st.success(f"Run {run_id} started ({method}, rho {rho}, from {parent}).")
        else:  # post-hoc: computed from the cached outputs, at once
            run_id = jobs.create_run(ws, method, targets, rho, config, parent=parent)
            result = jobs.execute_run(ws, run_id)
            st.success(f"Run {run_id} ({method}) {result['status']}.")
    except ValueError as exc:
        st.error(f"Cannot launch: {exc}")


@st.fragment(run_every=2.0)
def live() -> None:
    """Polls the store: status and curves of active runs update without a page reload."""
    runs = jobs.list_runs(ws)  # also marks runs whose worker died as failed
    active = [r for r in runs if r["status"] in W.ACTIVE]
    st.subheader("Running and queued")
    if not active:
        st.caption("No run is active.")
    for run in active:
        W.run_status(ws, run)
        W.live_curves(ws, run)
    failed = [r for r in runs if r["status"] == "failed"][-3:]
    for run in failed:
        st.error(f"Run {run['id']} ({run['method']}) failed: {(run['error'] or '').splitlines()[0]}")
    st.session_state["repair_run_count"] = sum(r["status"] not in W.ACTIVE for r in runs)


live()

runs = jobs.list_runs(ws)
frame = runs_frame(runs)
mine = frame[frame["targets"] == label]
st.subheader(f"Trade-off on {label}")
base = next((r["baseline"] for r in runs if r["baseline"] and targets_label(r["targets"]) == label
             and r["parent_version"] == parent), None)
c = st.columns(2)
lambda1 = c[0].slider("repaired: target error drops by at least", 0.05, 0.9, 0.25, 0.05, key="repair_lambda1")
lambda2 = c[1].slider("repaired: accuracy drops by at most", 0.0, 0.1, 0.01, 0.005, key="repair_lambda2")
if mine.empty:
    st.caption("No run on these targets yet.")
else:
    st.plotly_chart(tradeoff_figure(mine, baseline=base, lambda1=lambda1, lambda2=lambda2), key="repair_tradeoff")
    st.dataframe(mine.drop(columns=["targets", "progress"]), hide_index=True, key="repair_runs_table",
                 column_config={"minutes": st.column_config.NumberColumn(format="%.2f")})

st.subheader("Before / after")
finished = [r for r in reversed(runs) if r["status"] == "done" and r["model_version"]]
if not finished:
    st.caption("A finished fine-tuning run shows here: confusion change, fixed and broken images.")
else:
    pick = st.selectbox("Run", finished, key="repair_compare_run",
                        format_func=lambda r: f"run {r['id']}: {r['method']} rho {r['rho']} -> {r['model_version']}")
    W.live_curves(ws, pick)
    W.before_after(ws, pick)
    st.caption(f"Switch the sidebar's model version to {pick['model_version']} to inspect it on every page.")
