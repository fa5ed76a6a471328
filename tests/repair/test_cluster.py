"""Sweeps on Ray (an optional extra): the same table as the local executor, and a lost worker retried."""

import os
import shutil

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-cluster.txt)")

from repair import sweep  # noqa: E402
from repair.cluster import CRASH_ONCE_ENV  # noqa: E402
from repair.loop import TrainConfig  # noqa: E402
from workspace import jobs  # noqa: E402
from workspace.core import open_workspace  # noqa: E402
from workspace.targets import Target  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def _copy(tiny_workspace, tmp_path, name):
    dest = tmp_path / name
    shutil.copytree(tiny_workspace.parent, dest, ignore=shutil.ignore_patterns(".groupfix"))
    return open_workspace(dest / "workspace.toml")


def _sweep(ws, executor):
    sweep_id = sweep.create_sweep(ws, Target(((0, 1),), ws.class_names), ["orig-ft", "w-aug", "w-os"],
                                  config=TrainConfig(epochs=1, batch_size=4, lr=0.05, device="cpu", scope="head"),
                                  rhos=(0.3, 0.7), seeds=2, executor=executor)
    job = jobs.run_job(ws, sweep_id)
    assert job["status"] == "done", job["error"]
    return sweep.sweep_result(ws, sweep_id)


def _numbers(result):
    grid = sorted((g["method"], g["rho"], g["seed"], round(g["accuracy"], 9), round(g["target_error"], 9))
                  for g in result["grid"] if g["status"] == "done")
    table = [(r["method"], r["rho"], r["accuracy_mean"], r["target_error_mean"], r["rank_sum"])
             for r in result["table"]]
    return grid, table


def test_ray_sweep_gives_the_local_table(local_ray, tiny_workspace, tmp_path):
    local = _sweep(_copy(tiny_workspace, tmp_path, "local"), "local")
    on_ray = _sweep(_copy(tiny_workspace, tmp_path, "ray"), "ray")
    assert _numbers(local) == _numbers(on_ray)
    assert len(local["grid"]) >= 7  # orig-ft x 2 seeds, w-aug x 2 rhos (+ a seed), w-os x 2 rhos


def test_a_killed_worker_is_retried(local_ray, tiny_workspace, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    result = _sweep(_copy(tiny_workspace, tmp_path, "crash"), "ray")
    assert marker.exists()  # a task's worker process died once...
    assert all(g["status"] == "done" for g in result["grid"] if g["method"] != "orig")  # ...and was retried
    assert os.environ[CRASH_ONCE_ENV] == str(marker)
