"""Sweep: which repair really works (WR paper 4.3-4.4): a rho grid per method, the paper's
selection, seeds, ranks, rank-sum tests and A12 against orig-ft, as one background job."""

import streamlit as st

from pages import ui
from pages.widgets import sweep as W
from repair import sweep

ws = ui.workspace()
st.title("Sweep: which repair really works")
st.caption("Every method once per rho (w-os searches down to 1e-4), the paper's rho selection per method, the "
           "selected settings and orig-ft again with more seeds, then ranks, Wilcoxon rank-sum p-values and "
           "Vargha-Delaney A12 against orig-ft. One background job; a stopped sweep resumes without recomputing "
           "a finished run.")
parent = ui.current_version(ws)
target = W.target(ws, ui.outputs(ws, "eval", parent))
if target is None:
    st.stop()

sweeps = [s for s in sweep.list_sweeps(ws)]
with st.expander("New sweep", expanded=not sweeps):
    options = W.settings(ws, parent)
    if st.button("Launch the sweep", key="sweep_launch", type="primary", disabled=options is None):
        try:
            sweep_id = sweep.submit_sweep(ws, target, **options)
            st.session_state["_sweep_flash"] = f"Sweep {sweep_id} started on {target.label} from {parent}."
            st.session_state["sweep_pick"] = sweep_id
            st.rerun()
        except ValueError as exc:
            st.error(f"Cannot launch: {exc}")
if st.session_state.get("_sweep_flash"):
    st.success(st.session_state.pop("_sweep_flash"))
if not sweeps:
    st.info("No sweep yet: pick the methods and launch one above.")
    st.stop()

by_id = {s["id"]: s for s in sweeps}
if st.session_state.get("sweep_pick") not in by_id:
    st.session_state["sweep_pick"] = sweeps[-1]["id"]
picked = st.selectbox("Sweep", list(reversed(by_id)), key="sweep_pick", format_func=lambda i: W.sweep_label(by_id[i]))
c = st.columns(2)
lambda1 = c[0].slider("repaired: target error drops by at least", 0.05, 0.9, 0.25, 0.05, key="sweep_lambda1")
lambda2 = c[1].slider("repaired: accuracy drops by at most", 0.0, 0.1, 0.01, 0.005, key="sweep_lambda2")


def live() -> None:
    """Polls the store while the sweep runs: status, the grid filling in, the trade-off."""
    state = sweep.sweep_state(ws, picked)
    W.status(ws, state.job)
    st.subheader("Grid")
    W.grid_view(state)
    st.subheader(f"Trade-off on {state.target.label}")
    W.tradeoff(state, lambda1, lambda2)
    was = st.session_state.get("_sweep_status")
    st.session_state["_sweep_status"] = (picked, state.job["status"])
    if was is not None and was[0] == picked and was[1] != state.job["status"]:
        st.rerun(scope="app")  # the table below follows a sweep that has just ended


active = by_id[picked]["status"] in W.ACTIVE
st.fragment(run_every=2.0 if active else None)(live)()

state = sweep.sweep_state(ws, picked)
st.subheader("Result table (WR Table 2 layout)")
W.table(state)
if state.selection is not None and len(state.selection):
    with st.expander("Why these settings (the paper's selection rule, section 4.4)"):
        st.dataframe(state.selection, hide_index=True, key="sweep_selection")
W.keep(ws, state)
