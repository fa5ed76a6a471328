"""Sweeps (WR paper 4.3-4.4): the plan on hand-set results, resume keys, the job end to end on the tiny
workspace, kill -9 midway and resume without recomputing, cancel, the CLI and the figure."""

import json
import math
import os
import signal
import time

import pandas as pd
import pytest

from repair import sweep
from repair.__main__ import main
from repair.figures import sweep_figure
from repair.loop import TrainConfig
from repair.sweep import Item, SweepSpec, plan
from workspace import jobs
from workspace.cli import run_cli
from workspace.core import open_workspace
from workspace.targets import Target

ORIGINAL = {"accuracy": 0.80, "target_error": 0.20}
# seed-0 results of a hand-made grid: (method, rho) -> (accuracy, target error)
GRID = {("orig-ft", None): (0.81, 0.21), ("pgd", None): (0.805, 0.19),
        ("w-aug", 0.3): (0.78, 0.14), ("w-aug", 0.7): (0.80, 0.16),
        ("w-os", 0.3): (0.79, 0.19), ("w-os", 0.7): (0.80, 0.20),
        ("w-os", 0.1): (0.78, 0.17), ("w-os", 0.01): (0.75, 0.12)}
SPEC = SweepSpec(methods=("orig-ft", "pgd", "w-aug", "w-os"), rhos=(0.3, 0.7), seeds=3)


def fake(known: dict, failed=()):
    def result(item: Item):
        if (item.method, item.rho) in failed:
            return "failed", None
        if item.seed == 0 and (item.method, item.rho) in known:
            acc, err = known[(item.method, item.rho)]
            return "done", {"accuracy": acc, "target_error": err}
        return None, None
    return result


def settings_of(items, phase):
    return [(i.method, i.rho, i.seed) for i in items if i.phase == phase]


def test_plan_grid_then_the_w_os_search_then_selection_then_seeds():
    items, selection, complete = plan(SPEC, "head", ORIGINAL, fake(GRID))
    assert settings_of(items, "grid") == [("orig-ft", None, 0), ("pgd", None, 0), ("w-aug", 0.3, 0), ("w-aug", 0.7, 0),
                                          ("w-os", 0.3, 0), ("w-os", 0.7, 0)]
    # orig-ft's target error 0.21: w-os goes on until <= 0.75 * 0.21 = 0.1575: 0.1 gives 0.17, 0.01 gives 0.12
    assert settings_of(items, "search") == [("w-os", 0.1, 0), ("w-os", 0.01, 0)]
    # selection against orig (0.80, 0.20; bound 0.15): w-aug(0.3) by rule a (0.14), and w-aug(0.7) by rule d
    # (0.3 does not beat orig's accuracy, 0.7 beats it on both counts); w-os(0.01) by rule a; pgd has no rho
    rows = [(m, None if math.isnan(r) else r, rule) for m, r, rule in
            zip(selection["method"], selection["rho"], selection["rule"])]
    assert rows == [("w-aug", 0.3, "a"), ("w-aug", 0.7, "d"), ("w-os", 0.01, "a"), ("pgd", None, "-")]
    # seeds 1 and 2 for orig-ft and every selected setting except the deterministic w-os
    expected = [(m, r, s) for s in (1, 2) for m, r in (("orig-ft", None), ("w-aug", 0.3), ("w-aug", 0.7), ("pgd", None))]
    assert settings_of(items, "seeds") == expected and not complete
    assert {i.scope for i in items} == {"head"}


def test_plan_waits_for_pending_runs_and_goes_on_without_failed_ones():
    partial = {k: v for k, v in GRID.items() if k != ("w-os", 0.1)}
    items, selection, complete = plan(SPEC, "head", ORIGINAL, fake(partial))
    assert selection is None and not complete
    assert settings_of(items, "search") == [("w-os", 0.1, 0)]  # asked for, not yet run: nothing after it
    items, selection, _ = plan(SPEC, "head", ORIGINAL, fake(GRID, failed=[("w-aug", 0.3)]))
    assert [(m, r) for m, r in zip(selection["method"], selection["rho"]) if m == "w-aug"] == [("w-aug", 0.7)]
    items, selection, _ = plan(SPEC, "head", None, fake(GRID))
    assert selection is None  # no selection before the original's numbers are known


def test_plan_runs_methods_at_their_scope_and_deterministic_methods_once():
    spec = SweepSpec(methods=("orig-ft", "w-bn", "w-os"), rhos=(0.5,), seeds=2, method_scopes={})
    items, _, _ = plan(spec, "head", ORIGINAL, lambda item: ("done", {"accuracy": 0.8, "target_error": 0.1}))
    assert {(i.method, i.scope) for i in items} == {("orig-ft", "head"), ("w-bn", "all"), ("w-os", "head")}
    assert [(i.method, i.seed) for i in items if i.phase == "seeds"] == [("orig-ft", 1), ("w-bn", 1)]
    spec = SweepSpec(methods=("orig-ft", "w-bn"), rhos=(0.5,), seeds=1, method_scopes={"w-bn": "last-block"})
    assert {i.scope for i in plan(spec, "head", ORIGINAL, fake({}))[0] if i.method == "w-bn"} == {"last-block"}


# ---- the job on the tiny workspace ---------------------------------------------------------------
def tiny_config(**kw):
    return TrainConfig(**{"epochs": 1, "batch_size": 4, "lr": 0.05, "device": "cpu", "scope": "head", **kw})


def test_resume_keys_follow_the_content(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    spec = SweepSpec(methods=("orig-ft", "w-aug", "w-os"), rhos=(0.5,), seeds=2)
    pair = Target(((0, 1),), ws.class_names)
    keys = sweep.Keys(ws, pair, tiny_config(), spec, "orig")
    item = Item("w-aug", 0.5, 0, "head", "grid")
    assert keys(item) == sweep.Keys(ws, pair, tiny_config(device="auto"), spec, "orig")(item)  # device: no
    assert keys(item) == keys(Item("w-aug", 0.5, 0, "head", "seeds"))  # the phase is not content
    different = [keys(Item("w-aug", 0.3, 0, "head", "grid")), keys(Item("w-aug", 0.5, 1, "head", "grid")),
                 keys(Item("w-aug", 0.5, 0, "all", "grid")), keys(Item("w-loss", 0.5, 0, "head", "grid")),
                 sweep.Keys(ws, pair, tiny_config(epochs=2), spec, "orig")(item),
                 sweep.Keys(ws, Target(((0, 2),), ws.class_names), tiny_config(), spec, "orig")(item)]
    assert len({keys(item), *different}) == 7
    # a post-hoc run depends on neither the seed nor the training settings
    wos = Item("w-os", 0.1, 0, "head", "grid")
    assert keys(wos) == sweep.Keys(ws, pair, tiny_config(epochs=5, lr=0.1), spec, "orig")(wos)


def test_sweep_job_end_to_end_json_table_exports_and_reuse(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    pair = Target(((0, 1),), ws.class_names)
    sweep_id = sweep.create_sweep(ws, pair, ["w-aug", "w-os"], config=tiny_config(), rhos=(0.3, 0.7), seeds=2)
    row = jobs.run_job(ws, sweep_id)
    assert row["status"] == "done", row["error"]
    out = row["result"]
    assert set(out) >= {"sweep_id", "targets", "grid", "table"} and out["sweep_id"] == sweep_id and out["complete"]
    assert out["targets"] == {"kind": "confusion", "targets": [["cat", "dog"]]}
    assert all({"method", "rho", "seed", "accuracy", "target_error", "status"} <= set(g) for g in out["grid"])
    assert out["grid"][0]["method"] == "orig" and all(g["status"] == "done" for g in out["grid"])
    children = ws.store.list_runs(parent_run=sweep_id)
    assert sorted(g["run_id"] for g in out["grid"][1:]) == [c["id"] for c in children]
    assert all(c["kind"] == "repair" and c["run_key"] and c["model_version"] is None for c in children)
    # every grid run's numbers are its run's final numbers
    for g in out["grid"][1:]:
        final = ws.store.get_run(g["run_id"])["final"]
        assert (g["accuracy"], g["target_error"]) == (final["accuracy"], final["target_error"])
    grid_runs = [(g["method"], g["rho"], g["seed"]) for g in out["grid"] if g["phase"] == "grid"]
    assert grid_runs[:5] == [("orig", None, 0), ("orig-ft", None, 0), ("w-aug", 0.3, 0), ("w-aug", 0.7, 0),
                             ("w-os", 0.3, 0)]
    table = {r["method"]: r for r in out["table"]}
    assert {"orig", "orig-ft", "w-aug", "w-os"} == set(table)
    assert [r["seed"] for r in table["orig-ft"]["runs"]] == [0, 1] and len(table["w-os"]["runs"]) == 1
    assert "deterministic" in table["w-os"]["verdict"]
    json.dumps(out, allow_nan=False)
    state = sweep.sweep_state(ws, sweep_id)
    assert sweep.export_table(state, "csv").startswith("method,rho,")
    assert "| Method |" in sweep.export_table(state, "markdown")
    assert r"\begin{tabular}" in sweep.export_table(state, "latex")
    with pytest.raises(ValueError, match="csv, markdown, latex"):
        sweep.export_table(state, "html")
    # the same sweep again: nothing is recomputed, every run is reused
    n_runs = len(ws.store.list_runs(kind="repair"))
    again = jobs.run_job(ws, sweep.create_sweep(ws, pair, ["w-aug", "w-os"], config=tiny_config(), rhos=(0.3, 0.7),
                                                seeds=2))
    assert again["status"] == "done" and len(ws.store.list_runs(kind="repair")) == n_runs
    assert all(g["reused"] for g in again["result"]["grid"][1:])
    assert again["result"]["table"] == out["table"]
    # a sweep stored before its key version was recorded (version 1) still finds its runs after
    # the keys changed: it keeps the keys it was created with
    assert ws.store.get_run(sweep_id)["params"]["key_version"] == sweep.KEY_VERSION
    params = ws.store.get_run(sweep_id)["params"]
    old_keys = sweep.Keys(ws, pair, tiny_config(), sweep.SweepSpec.from_dict(params), "orig", version=1)
    for child in ws.store.list_runs(parent_run=sweep_id):
        spec_item = next(g for g in out["grid"] if g["run_id"] == child["id"])
        item = Item(spec_item["method"], spec_item["rho"], spec_item["seed"], "head", spec_item["phase"])
        ws.store.update_run(child["id"], run_key=old_keys(item))
    ws.store.update_run(sweep_id, params={k: v for k, v in params.items() if k != "key_version"})
    assert sweep.sweep_result(ws, sweep_id)["table"] == out["table"]


def test_keep_as_version_runs_the_setting_again_with_the_same_numbers(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    sweep_id = sweep.create_sweep(ws, Target(((0, 1),), ws.class_names), ["w-loss", "w-os"],
                                  config=tiny_config(epochs=3, scope="all"), rhos=(0.5,), seeds=1)
    assert jobs.run_job(ws, sweep_id)["status"] == "done"
    grid = sweep.sweep_state(ws, sweep_id).grid
    child = ws.store.get_run(int(grid[grid["method"] == "w-loss"]["run_id"].iloc[0]))
    new = ws.store.get_run(sweep.keep_as_version(ws, child["id"], background=False))
    assert new["status"] == "done" and new["parent_run"] is None and new["model_version"]
    assert (new["method"], new["rho"], new["seed"], new["config"]) == (child["method"], child["rho"], child["seed"],
                                                                        child["config"])
    assert new["final"] == child["final"]  # CPU: the same seed, the same model
    version = ws.version(new["model_version"])
    assert version["method"] == "w-loss" and version["run_id"] == new["id"]
    wos = int(grid[grid["method"] == "w-os"]["run_id"].iloc[0])
    with pytest.raises(Exception, match="post-hoc"):
        sweep.keep_as_version(ws, wos)


def _wait(ws, sweep_id, condition, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        children = ws.store.list_runs(parent_run=sweep_id)
        if condition(children):
            return children
        time.sleep(0.1)
    raise AssertionError(f"sweep {sweep_id} never got there: {[(c['id'], c['status']) for c in children]}")


def slow_config():
    # head scope on 12 images, one per step, evaluated at epoch ends only: a fraction of a second per run
    return tiny_config(epochs=4, batch_size=1, eval_every_steps=10**6)


def test_kill_9_midway_then_resume_recomputes_no_finished_run(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    pair = Target(((0, 1),), ws.class_names)
    sweep_id = sweep.create_sweep(ws, pair, ["w-aug", "w-loss"], config=slow_config(), rhos=(0.3, 0.7), seeds=2)
    pid = jobs.start_worker(ws, sweep_id)
    children = _wait(ws, sweep_id, lambda rows: sum(r["status"] == "done" for r in rows) >= 2
                     and any(r["status"] == "running" for r in rows))
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    before = {r["run_key"]: r["id"] for r in ws.store.list_runs(parent_run=sweep_id) if r["status"] == "done"}
    rows = {r["id"]: r for r in jobs.list_jobs(ws)}
    assert rows[sweep_id]["status"] == "failed" and "killed" in rows[sweep_id]["error"]
    killed = [r for r in rows.values() if r["parent_run"] == sweep_id and r["status"] == "failed"]
    assert len(killed) == 1 and len(before) >= 2
    stopped = sweep.sweep_result(ws, sweep_id)
    assert not stopped["complete"] and stopped["table"] == []
    assert {g["status"] for g in stopped["grid"]} >= {"done", "failed"}

    code = run_cli(main, ["sweep", "--workspace", str(tiny_workspace), "--resume", str(sweep_id), "--json"])
    assert code == 0
    after = sweep.sweep_result(ws, sweep_id)
    assert after["status"] == "done" and after["complete"] and after["table"]
    done = [r for r in ws.store.list_runs(parent_run=sweep_id) if r["status"] == "done"]
    by_key: dict[str, list[int]] = {}
    for r in done:
        by_key.setdefault(r["run_key"], []).append(r["id"])
    assert all(len(ids) == 1 for ids in by_key.values())  # no key computed twice
    assert all(by_key[key] == [run_id] for key, run_id in before.items())  # finished runs kept, not redone
    assert killed[0]["run_key"] in by_key and by_key[killed[0]["run_key"]][0] > killed[0]["id"]  # redone
    assert {g["run_id"] for g in after["grid"][1:]} == {ids[0] for ids in by_key.values()}


def test_cancel_stops_the_sweep_and_its_running_run(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    sweep_id = sweep.create_sweep(ws, Target(((0, 1),), ws.class_names), ["w-aug"],
                                  config=tiny_config(epochs=200, batch_size=1, eval_every_steps=10**6),
                                  rhos=(0.5,), seeds=1)
    jobs.start_worker(ws, sweep_id)
    running = _wait(ws, sweep_id, lambda rows: any(r["status"] == "running" for r in rows))
    jobs.request_cancel(ws, sweep_id)
    deadline = time.time() + 60
    while time.time() < deadline and ws.store.get_run(sweep_id)["status"] in jobs.ACTIVE:
        time.sleep(0.2)
    assert ws.store.get_run(sweep_id)["status"] == "cancelled"
    assert ws.store.get_run(running[0]["id"])["status"] == "cancelled"
    with pytest.raises(Exception, match="cancel it first"):
        ws.store.update_run(sweep_id, status="running", pid=os.getpid())
        sweep.resume_sweep(ws, sweep_id)


# ---- the CLI -----------------------------------------------------------------------------------
def test_cli_sweep_json_and_one_line_errors(tiny_workspace, nobn_workspace, capsys):
    args = ["sweep", "--workspace", str(tiny_workspace), "--targets", "cat,dog", "--methods", "w-os",
            "--rhos", "0.5", "--seeds", "2", "--scope", "head", "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--json"]
    assert run_cli(main, args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [g["method"] for g in out["grid"]][:3] == ["orig", "orig-ft", "w-os"] and out["table"]
    assert run_cli(main, ["sweep", "--workspace", str(tiny_workspace), "--show", str(out["sweep_id"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["table"] == out["table"]
    bad = [(["--targets", "cat,dog", "--methods", "w-zz"], "valid: "),
           (["--targets", "cat,dog", "--rhos", "0,0.5"], "every rho must be in (0, 1]"),
           (["--targets", "cat,dog", "--resume", "1"], "give --targets"),
           (["--targets", "cat,emu"], "unknown class 'emu'"),
           (["--targets", "cat,dog", "--method-scope", "w-aug=everywhere"], "scope must be one of")]
    for extra, message in bad:
        assert run_cli(main, ["sweep", "--workspace", str(tiny_workspace), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert run_cli(main, ["sweep", "--workspace", str(nobn_workspace), "--targets", "cat,dog", "--methods", "w-bn"]) == 2
    assert capsys.readouterr().err.strip() == "error: w-bn is not applicable: the model has no BatchNorm layer"


# ---- the figure --------------------------------------------------------------------------------
def test_sweep_figure_rings_the_selected_means_and_shades_the_repaired_region():
    nan = float("nan")
    grid = pd.DataFrame([
        ["orig", nan, 0, 0.80, 0.20, "done", None, False],
        ["orig-ft", nan, 0, 0.81, 0.21, "done", 1, True], ["orig-ft", nan, 1, 0.79, 0.19, "done", 4, True],
        ["w-aug", 0.3, 0, 0.78, 0.14, "done", 2, True], ["w-aug", 0.3, 1, 0.76, 0.10, "done", 5, True],
        ["w-aug", 0.7, 0, 0.80, 0.16, "done", 3, False], ["w-aug", 0.9, 0, nan, nan, "running", 6, False]],
        columns=["method", "rho", "seed", "accuracy", "target_error", "status", "run_id", "selected"])
    fig = sweep_figure(grid, original=ORIGINAL, baseline="orig-ft", lambda1=0.25, lambda2=0.01)
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"orig-ft", "orig-ft seeds", "w-aug", "w-aug seeds", "selected (mean over seeds)", "orig"}
    assert list(traces["w-aug"].x) == [0.14, 0.16] and list(traces["w-aug seeds"].y) == [0.76]
    assert traces["orig-ft"].marker.symbol == "diamond" and traces["orig"].x == (0.20,)
    ring = traces["selected (mean over seeds)"]
    assert list(ring.x) == pytest.approx([0.20, 0.12]) and list(ring.y) == pytest.approx([0.80, 0.77])
    region = fig.layout.shapes[0]
    assert region.x1 == pytest.approx(0.15) and region.y0 == pytest.approx(0.792)


def test_resume_abandons_the_unfinished_runs_of_the_stopped_sweep(tiny_workspace):
    """A child created just before the kill (queued, no process yet) must not block the device queue."""
    from repair import runs

    ws = open_workspace(tiny_workspace)
    pair = Target(((0, 1),), ws.class_names)
    sweep_id = sweep.create_sweep(ws, pair, ["w-aug"], config=tiny_config(), rhos=(0.5,), seeds=1)
    orphan = runs.create_run(ws, "w-aug", pair, 0.5, tiny_config(), parent_run=sweep_id, run_key="k")
    ws.store.update_run(sweep_id, status="failed", error="the worker process 1 ended without reporting (killed?)")
    assert sweep.resume_sweep(ws, sweep_id) == sweep_id
    assert ws.store.get_run(sweep_id)["status"] == "queued" and ws.store.get_run(sweep_id)["error"] is None
    assert ws.store.get_run(orphan)["status"] == "failed" and "abandoned" in ws.store.get_run(orphan)["error"]
    assert jobs.jobs_ahead(ws.store, sweep_id) == []


def test_create_sweep_refuses_bad_settings_before_any_work(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    pair = Target(((0, 1),), ws.class_names)
    for options, message in (({"seeds": 0}, "seeds must be"), ({"rhos": ()}, "grid is empty"),
                             ({"lambda1": 1.5}, "lambda1 must be"), ({"method_scopes": {"w-loss": "all"}}, "not in the sweep"),
                             ({"scope_max_steps": {"all": 0}}, "budgets must be")):
        with pytest.raises(ValueError, match=message):
            sweep.create_sweep(ws, pair, ["w-aug"], config=tiny_config(), **options)
    assert ws.store.list_runs() == []
    # without a method list: every method with a rho that can run here, the baseline first
    sweep_id = sweep.create_sweep(ws, pair, config=tiny_config())
    methods = ws.store.get_run(sweep_id)["params"]["methods"]
    assert methods[0] == "orig-ft" and {"w-aug", "w-bn", "w-bn-code", "w-dbr", "w-dbr-code", "w-loss", "w-os"} <= set(methods)
    assert "pgd" not in methods and "orig" not in methods
