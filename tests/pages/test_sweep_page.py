"""AppTest of the sweep page: launch (the worker launch patched), live status with cancel, the finished
sweep's grid, trade-off, table, exports and "keep as model version"."""

import os
import time

import pytest
from streamlit.testing.v1 import AppTest

from pages import ui
from repair import sweep
from repair.loop import TrainConfig
from tests.conftest import REPO
from tests.pages.helpers import seeded
from workspace import jobs
from workspace.core import open_workspace
from workspace.targets import Target


def page(workspace) -> AppTest:
    """The page on its own (app.py routes to it once it is listed there)."""
    at = AppTest.from_file(str(REPO / "pages" / "sweep.py"), default_timeout=120)
    at.session_state[ui.WORKSPACE] = str(workspace)
    spec = str(open_workspace(workspace).spec)
    for key, value in seeded(spec, target={"kind": "confusion", "targets": [["cat", "dog"]]},
                             source="confusion page").items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def started(monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "start_worker", lambda ws, job_id: calls.append(job_id) or 0)
    return calls


def test_launch_a_sweep(tiny_workspace, started):
    at = page(tiny_workspace)
    assert at.text_input(key="sweep_targets_text").value == "cat,dog"
    assert any("No sweep yet" in i.value for i in at.info)
    at.multiselect(key="sweep_methods").set_value(["w-aug", "w-bn", "w-os"]).run()
    assert any("w-bn cannot run at the head scope" in c.value for c in at.caption)
    at.text_input(key="sweep_rhos").set_value("0.3, 0.7").run()
    at.number_input(key="sweep_seeds").set_value(2).run()
    at.number_input(key="sweep_epochs").set_value(2).run()
    at.number_input(key="sweep_all_steps").set_value(7).run()
    at.button(key="sweep_launch").click().run()
    assert not at.exception, at.exception
    ws = open_workspace(tiny_workspace)
    (row,) = sweep.list_sweeps(ws)
    assert started == [row["id"]] and row["status"] == "queued"
    assert row["params"]["methods"] == ["orig-ft", "w-aug", "w-bn", "w-os"]
    assert row["params"]["rhos"] == [0.3, 0.7] and row["params"]["seeds"] == 2
    assert row["params"]["scope_max_steps"] == {"all": 7} and row["config"]["epochs"] == 2
    assert row["config"]["scope"] == "head" and row["targets"]["targets"] == [["cat", "dog"]]
    assert any(f"Sweep {row['id']} started" in s.value for s in at.success)
    # the new sweep is shown with its pending grid
    assert at.selectbox(key="sweep_pick").value == row["id"]
    grid = next(d.value for d in at.dataframe if "phase" in d.value.columns)
    assert grid["setting"].tolist()[:3] == ["orig", "orig-ft", "w-aug(0.3)"]
    assert grid["status"].tolist()[0] == "done" and set(grid["status"][1:]) == {"pending"}  # orig: the cached eval


def test_a_running_sweep_shows_progress_eta_and_cancels(tiny_workspace, started):
    ws = open_workspace(tiny_workspace)
    sweep_id = sweep.create_sweep(ws, Target(((0, 1),), ws.class_names), ["w-aug"],
                                  config=TrainConfig(epochs=1, batch_size=4, device="cpu", scope="head"),
                                  rhos=(0.5,), seeds=2)
    ws.store.update_run(sweep_id, status="running", pid=os.getpid(), started_at=time.time() - 30, progress=0.4,
                        eta=45.0, message="2/5 to compute: w-aug(0.5) seed 0 (head) 50%")
    at = page(tiny_workspace)
    texts = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith(f"Sweep {sweep_id} is running (40%") and "ETA 0:45" in t for t in texts), texts
    at.button(key=f"sweep_cancel_{sweep_id}").click().run()
    assert ws.store.get_run(sweep_id)["cancel_requested"] == 1
    ws.store.update_run(sweep_id, status="cancelled", pid=None)
    at.run()
    assert not at.exception and at.button(key=f"sweep_resume_{sweep_id}")
    at.button(key=f"sweep_resume_{sweep_id}").click().run()
    assert started == [sweep_id] and ws.store.get_run(sweep_id)["status"] == "queued"


def test_a_finished_sweep_shows_grid_tradeoff_table_exports_and_keeps_a_run(tiny_workspace, started):
    ws = open_workspace(tiny_workspace)
    sweep_id = sweep.create_sweep(ws, Target(((0, 1),), ws.class_names), ["w-loss", "w-os"],
                                  config=TrainConfig(epochs=1, batch_size=4, device="cpu", scope="head"),
                                  rhos=(0.3, 0.7), seeds=2)
    assert jobs.run_job(ws, sweep_id)["status"] == "done"
    at = page(tiny_workspace)
    grid = next(d.value for d in at.dataframe if "phase" in d.value.columns)
    assert set(grid["status"]) == {"done"} and grid["setting"].iloc[0] == "orig"
    assert len(at.get("plotly_chart")) == 1
    table = next(d.value for d in at.dataframe if "rank sum" in d.value.columns)
    assert table["setting"].tolist()[:2] == ["orig", "orig-ft"] and {"p (error)", "A12 (error)"} <= set(table)
    downloads = at.get("download_button")
    assert sorted(d.proto.label for d in downloads) == ["Download CSV", "Download LaTeX", "Download Markdown"]
    # keep the selected w-loss setting's seed-1 run as a model version: a repair run of the same setting
    state = sweep.sweep_state(ws, sweep_id)
    run_id = int(state.grid[(state.grid["method"] == "w-loss") & (state.grid["seed"] == 1)]["run_id"].iloc[0])
    at.selectbox(key="sweep_keep_run").set_value(run_id).run()
    at.button(key="sweep_keep").click().run()
    assert not at.exception, at.exception
    kept = ws.store.get_run(started[-1])
    child = ws.store.get_run(run_id)
    assert (kept["method"], kept["rho"], kept["seed"], kept["parent_run"]) == ("w-loss", child["rho"], 1, None)
    assert any(f"Run {kept['id']} started" in s.value for s in at.success)
