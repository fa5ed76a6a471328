"""Repair: pick targets, a scope and a method, estimate, launch a job, watch the trade-off live."""

import pandas as pd
import streamlit as st

from pages import ui
from pages.widgets import repair as W
from repair import runs
from diagnostics.figures_runs import runs_frame, tradeoff_figure
from repair.methods import SCOPE_HELP, SCOPES, baseline_methods, get_method, method_table
from repair.selection import format_setting
from workspace.errors import WorkspaceError

ws = ui.workspace()
st.title("Repair")
st.caption("Fine-tuning runs are background jobs (one per device at a time, the others queue); every result is a "
           "new model version, and the loaded model file is never modified.")
parent = ui.current_version(ws)
target = W.targets(ws, ui.outputs(ws, "eval", parent))
if target is None:
    st.stop()

scope = st.radio("Scope", SCOPES, horizontal=True, key="repair_scope", format_func=lambda s: s,
                 help=" · ".join(f"{s}: {h}" for s, h in SCOPE_HELP.items()))
st.caption(f"**{scope}**: {SCOPE_HELP[scope]}.")
table = pd.DataFrame(method_table(ws.model(parent), ws, scope=scope))
with st.expander("Methods: stage, parameter, scopes and applicability", expanded=False):
    st.dataframe(table[["method", "stage", "kind", "parameter", "scopes", "available"]], hide_index=True,
                 key="repair_methods_table")
    st.markdown("\n".join(f"- **{r['method']}** ({r['stage']} stage, {r['kind']}): {r['description']}"
                           + (f" Not at {r['not at']}." if r["not at"] else "")
                           + ("" if r["available"] else f" **Not available here:** {r['reason']}")
                           for r in table.to_dict("records")))
choices = table[table["kind"] != "baseline"]["method"].tolist()
available = table.set_index("method")["available"]
# the first method that can run here is preselected: an n/a default would open on a disabled Launch
first = next((i for i, m in enumerate(choices) if available[m]), 0)
method = st.radio("Method", choices, index=first, horizontal=True, key="repair_method",
                  format_func=lambda m: m if table.set_index("method").loc[m, "available"] else f"{m} (n/a)")
row = table.set_index("method").loc[method]
st.caption(f"**{method}** ({row['stage']} stage, {row['kind']}): {row['description']}")
if not row["available"]:
    st.warning(row["reason"] if row["reason"].startswith(method) else f"{method} is not applicable here: "
               f"{row['reason']}")
rho, config = W.settings(ws, method, scope)
W.estimate(ws, method, target, rho, config, parent)

if st.button("Launch", key="repair_launch", type="primary", disabled=not row["available"]):
    try:
        run_id = runs.submit(ws, method, target, rho, config, parent=parent, nproc=W.processes(scope))
        kind = "started" if get_method(method).finetunes else "computed"
        # kept across the rerun a finished run triggers below
        st.session_state["_repair_flash"] = (f"Run {run_id} {kind} ({method}, rho {rho if rho is not None else '-'}, "
                                             f"{scope} scope, from {parent}).")
    except (ValueError, WorkspaceError) as exc:
        st.error(f"Cannot launch: {exc}")
flash = st.empty()  # filled after the live view, which reruns the page when a run has just finished


@st.fragment(run_every=2.0)
def live() -> None:
    """Polls the store: active runs update without a page reload; a run that ends refreshes the page."""
    all_runs = runs.list_runs(ws)  # also marks runs whose worker died as failed
    active = [r for r in all_runs if r["status"] in W.ACTIVE]
    st.subheader("Running and queued")
    if not active:
        st.caption("No run is active.")
    for run in active:
        W.run_status(ws, run)
        W.live_curves(ws, run)
    for run in [r for r in all_runs if r["status"] == "failed"][-3:]:
        st.error(f"Run {run['id']} ({run['method']}) failed: {run['error'] or 'no error recorded'}")
    finished = sum(r["status"] not in W.ACTIVE for r in all_runs)
    if st.session_state.get("repair_run_count", finished) != finished:
        st.session_state["repair_run_count"] = finished
        st.rerun(scope="app")  # the runs table, trade-off and before/after below include the new result
    st.session_state["repair_run_count"] = finished


live()
if st.session_state.get("_repair_flash"):
    flash.success(st.session_state.pop("_repair_flash"))

all_runs = runs.list_runs(ws)
frame = runs_frame(all_runs)
mine = frame[frame["targets"] == "; ".join(",".join(g) for g in target.names)]
st.subheader(f"Trade-off on {target.label}")
base = next((r["baseline"] for r in all_runs if r["baseline"] and r["targets"] == target.to_dict()
             and r["parent_version"] == parent), None)
c = st.columns(2)
lambda1 = c[0].slider("repaired: target error drops by at least", 0.05, 0.9, 0.25, 0.05, key="repair_lambda1")
lambda2 = c[1].slider("repaired: accuracy drops by at most", 0.0, 0.1, 0.01, 0.005, key="repair_lambda2")
if mine.empty:
    st.info("No run on these targets yet: the trade-off chart appears with the first finished run.")
else:
    st.plotly_chart(tradeoff_figure(mine, baseline=base, lambda1=lambda1, lambda2=lambda2,
                                    reference=baseline_methods()[1]), key="repair_tradeoff")
    st.dataframe(mine.drop(columns=["targets", "progress"]), hide_index=True, key="repair_runs_table",
                 column_config={"minutes": st.column_config.NumberColumn(format="%.2f")})

st.subheader("Before / after")
finished = [r for r in reversed(all_runs) if r["status"] == "done" and r["model_version"]]
if not finished:
    st.caption("A finished fine-tuning run shows here: accuracy and target error before and after, the confusion "
               "change, fixed and broken images.")
else:
    pick = st.selectbox("Run", finished, key="repair_compare_run",
                        format_func=lambda r: f"run {r['id']}: {format_setting(r['method'], r['rho'])} -> {r['model_version']}")
    W.live_curves(ws, pick)
    W.before_after(ws, pick, target)
    st.caption(f"Switch the sidebar's model version to {pick['model_version']} to inspect it on every page.")
