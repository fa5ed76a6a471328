"""The loop, repair runs on the job runner (worker processes, queue, SIGKILL recovery) and the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from diagnostics.confusion import error_matrix, target_error
from diagnostics.wos import apply_wos
from repair import runs
from repair.__main__ import main
from repair.loop import TrainConfig, finetune
from repair.methods import TargetContext, get_method, list_methods
from workspace import jobs
from workspace.core import file_sha256, open_workspace
from workspace.targets import Target

# the methods that plug into the fine-tuning loop's hooks (bir and neurontune have their own
# procedures: tests/repair/test_procedures.py and the registry tests)
FINETUNING = [m for m in list_methods() if get_method(m).finetunes and get_method(m).uses_loop]


def T(ws, *groups):
    return Target(groups or ((0, 1),), ws.class_names)


def tiny_config(**kw):
    return TrainConfig(**{"epochs": 1, "batch_size": 4, "lr": 0.05, "seed": 0, "device": "cpu", **kw})


def wait_status(ws, run_id, statuses, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = jobs.list_jobs(ws) and ws.store.get_run(run_id)
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} stuck in {ws.store.get_run(run_id)['status']}")


@pytest.mark.parametrize("name", FINETUNING)
def test_every_finetuning_method_trains_two_steps(tiny_workspace, name):
    ws = open_workspace(tiny_workspace)
    before = {k: v.clone() for k, v in ws.model().state_dict().items()}
    ctx = TargetContext(((0, 1),), 0.5, 3)
    evals = []
    method = get_method(name)
    method.prepare(ws, "orig")  # pgd: the gradient scores of the tiny workspace
    model, history, outputs = finetune(ws, method, ctx, tiny_config(batch_size=6), on_eval=evals.append)
    assert len(history) == 1 and history == evals and history[0]["epoch"] == 1.0 and history[0]["step"] == 2
    assert 0 <= history[0]["accuracy"] <= 1 and len(history[0]["confusion"]) == 3
    assert sum(map(sum, history[0]["confusion"])) == 9 and outputs.n == 9
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items() if v.is_floating_point())
    assert all(torch.equal(v, ws.model().state_dict()[k]) for k, v in before.items())  # cache untouched
    assert set(model.state_dict()) == set(before) and "forward" not in vars(model.bn)


@pytest.mark.parametrize("name", FINETUNING)
@pytest.mark.parametrize("targets", [((0, 1),), ((0, 1, 2),)], ids=["pair", "triplet"])
def test_every_finetuning_method_runs_on_a_multi_label_workspace(multi_label_workspace, name, targets):
    ws = open_workspace(multi_label_workspace)
    ctx = TargetContext(targets, 0.5, 3, ws.task)
    method = get_method(name)
    if method.applicability(ws.model(), ws):
        pytest.skip(f"{name}: {method.applicability(ws.model(), ws)}")
    model, history, outputs = finetune(ws, method, ctx, tiny_config(batch_size=6))
    assert outputs.multi_label and outputs.preds.shape == (12, 3)
    assert len(history) == 1 and 0 <= history[0]["accuracy"] <= 1
    assert history[0]["target_error"] == pytest.approx(target_error(
        error_matrix(outputs.labels, outputs.preds, 3, task="multi_label"), targets))


def test_pgd_is_listed_not_applicable_on_multi_label(multi_label_workspace):
    from repair.methods import method_table

    rows = {r["method"]: r for r in method_table(None, open_workspace(multi_label_workspace))}
    assert not rows["pgd"]["available"] and "single-label" in rows["pgd"]["reason"]
    assert all(r["reason"] for r in rows.values() if not r["available"])
    # every method of the loop except the gradient-score sampler works on multi-label data
    assert {m for m in FINETUNING if not rows[m]["available"]} == {m for m in FINETUNING
                                                                  if get_method(m).stage == "input"
                                                                  and not get_method(m).uses_rho}


def test_config_defaults_come_from_the_workspace_train_section(tiny_workspace):
    tiny_workspace.write_text(tiny_workspace.read_text() + "[train]\nlr = 0.002\nepochs = 7\naugment = \"none\"\n")
    config = TrainConfig.for_workspace(open_workspace(tiny_workspace), epochs=2)
    assert (config.lr, config.epochs, config.augment) == (0.002, 2, False)


def test_finetuning_is_deterministic_on_cpu_given_the_seed(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    ctx = TargetContext(((0, 1),), 0.3, 3)
    a = finetune(ws, get_method("w-aug"), ctx, tiny_config(epochs=2))[0].state_dict()
    b = finetune(ws, get_method("w-aug"), ctx, tiny_config(epochs=2))[0].state_dict()
    c = finetune(ws, get_method("w-aug"), ctx, tiny_config(epochs=2, seed=1))[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_cli_run_writes_run_metrics_and_a_new_version(tiny_workspace, capsys):
    ws = open_workspace(tiny_workspace)
    sha = file_sha256(tiny_workspace.parent / "weights.pth")
    code = main(["run", "--workspace", str(tiny_workspace), "--method", "w-bn", "--targets", "cat,dog",
                 "--rho", "0.5", "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "done" and out["method"] == "w-bn" and out["rho"] == 0.5
    assert out["targets"] == {"kind": "confusion", "targets": [["cat", "dog"]]}
    assert [e["epoch"] for e in out["epochs"]] == [1.0, 2.0]
    assert out["final"] == {k: out["epochs"][-1][k] for k in ("accuracy", "target_error")}
    assert set(out["baseline"]) == {"accuracy", "target_error"}
    version = ws.version(out["model_version"]["id"])
    assert version["method"] == "w-bn" and version["parent"] == "orig" and version["rho"] == 0.5
    assert version["run_id"] == out["run_id"] and version["epochs"] == 2 and version["seed"] == 0
    assert file_sha256(tiny_workspace.parent / "weights.pth") == sha  # the loaded file is never touched
    metrics = ws.store.run_metrics(out["run_id"])
    evals = [m for m in metrics if m["accuracy"] is not None]
    assert [m["epoch"] for m in evals] == [0, 1.0, 2.0] and len(evals[-1]["extra"]["confusion"]) == 3
    steps = [m for m in metrics if m["accuracy"] is None]  # the training loss of every step (12 images, batch 4)
    assert [m["step"] for m in steps] == [1, 2, 3, 4, 5, 6] and all(m["loss"] > 0 for m in steps)
    # the new version's eval cache is written by the run, and loads as a model
    cached = ws.cached_outputs("eval", version["id"])
    assert cached is not None and cached.accuracy == pytest.approx(out["final"]["accuracy"])
    assert ws.load_model(version["id"]) is not None
    assert main(["list", "--workspace", str(tiny_workspace), "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [out["run_id"]]


def test_cli_w_bn_without_batchnorm_is_one_line_exit_2(nobn_workspace, capsys):
    from workspace.cli import run_cli

    code = run_cli(main, ["run", "--workspace", str(nobn_workspace), "--method", "w-bn", "--targets", "cat,dog",
                          "--rho", "0.5", "--epochs", "1"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: w-bn is not applicable: the model has no BatchNorm layer"]
    assert open_workspace(nobn_workspace).store.list_runs() == []  # nothing half-written


def test_cli_bad_targets_and_method(tiny_workspace, capsys):
    from workspace.cli import run_cli

    assert run_cli(main, ["run", "--workspace", str(tiny_workspace), "--method", "w-aug", "--targets", "cat,emu"]) == 2
    assert "unknown class 'emu'" in capsys.readouterr().err
    assert run_cli(main, ["run", "--workspace", str(tiny_workspace), "--method", "w-zz", "--targets", "cat,dog"]) == 2
    assert "valid: " in capsys.readouterr().err


def test_w_os_run_equals_the_what_if_numbers(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    run_id = runs.create_run(ws, "w-os", T(ws), 0.3, tiny_config())
    run = jobs.run_job(ws, run_id)
    out = ws.outputs("eval")
    preds = apply_wos(out.probs, [(0, 1)], 0.3, task=out.task)
    assert run["status"] == "done" and run["model_version"] is None
    assert run["final"]["accuracy"] == pytest.approx(float((preds == out.labels).mean()))
    assert run["final"]["target_error"] == pytest.approx(
        target_error(error_matrix(out.labels, preds, 3), [(0, 1)]))
    assert run["baseline"]["accuracy"] == pytest.approx(out.accuracy)


def test_queue_one_running_job_per_device(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    a = runs.create_run(ws, "orig-ft", T(ws), None, tiny_config())
    b = runs.create_run(ws, "w-aug", T(ws), 0.5, tiny_config())
    post_hoc = runs.create_run(ws, "w-os", T(ws), 0.1, tiny_config())
    ws.store.update_run(a, status="running", pid=os.getpid())
    assert jobs.jobs_ahead(ws.store, b) == [a] and jobs.jobs_ahead(ws.store, a) == []
    assert jobs.jobs_ahead(ws.store, post_hoc) == []  # post-hoc runs never queue
    ws.store.update_run(a, status="done")
    assert jobs.jobs_ahead(ws.store, b) == []
    ws.store.update_run(b, cancel_requested=1)
    assert jobs.wait_for_turn(ws.store, b) is False


def test_stale_run_of_a_dead_process_is_failed_and_queued_cancel(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    a = runs.create_run(ws, "orig-ft", T(ws), None, tiny_config())
    ws.store.update_run(a, status="running", pid=dead.pid)
    rows = {r["id"]: r for r in jobs.list_jobs(ws)}
    assert rows[a]["status"] == "failed" and "ended without reporting" in rows[a]["error"]
    b = runs.create_run(ws, "orig-ft", T(ws), None, tiny_config())
    assert jobs.request_cancel(ws, b)["status"] == "cancelled"


def test_worker_process_runs_and_sigkill_mid_epoch_marks_failed(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    sha = file_sha256(tiny_workspace.parent / "weights.pth")
    # a long run (many epochs of the tiny data), killed while it trains
    long_run = runs.submit(ws, "orig-ft", T(ws), None, tiny_config(epochs=2000, batch_size=2))
    deadline = time.time() + 90
    while time.time() < deadline:
        run = ws.store.get_run(long_run)
        if run["status"] == "running" and run["progress"] > 0.002:
            break
        time.sleep(0.2)
    assert run["status"] == "running" and 0 < run["progress"] < 1 and jobs.pid_alive(run["pid"])
    os.kill(run["pid"], signal.SIGKILL)
    time.sleep(0.3)
    failed = {r["id"]: r for r in jobs.list_jobs(ws)}[long_run]
    assert failed["status"] == "failed" and "killed" in failed["error"]
    # the store stays readable and a new worker run goes through to a new version
    new = runs.submit(ws, "w-loss", T(ws), 0.5, tiny_config())
    done = wait_status(ws, new, ("done", "failed", "cancelled"))
    assert done["status"] == "done", done["error"]
    assert ws.version(done["model_version"])["run_id"] == new
    assert "done: accuracy" in done["log_tail"]
    assert file_sha256(tiny_workspace.parent / "weights.pth") == sha

# cancelling a running worker is driven from the page: tests/pages/test_repair_page.py


def test_pgd_uses_the_gradient_scores_when_they_exist(tiny_workspace, monkeypatch):
    import numpy as np

    from diagnostics import run_gradients

    calls = []

    def train_sampling_probabilities(ws, version="orig", *, progress=None):
        calls.append(version)
        return np.linspace(0.1, 1.0, len(ws.split("train")))

    monkeypatch.setattr(run_gradients, "train_sampling_probabilities", train_sampling_probabilities)
    ws = open_workspace(tiny_workspace)
    run = jobs.run_job(ws, runs.create_run(ws, "pgd", T(ws), None, tiny_config()))
    assert run["status"] == "done", run["error"]
    assert calls == ["orig"] and ws.version(run["model_version"])["method"] == "pgd"


def test_evaluation_every_n_steps_writes_fractional_epochs(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    ctx = TargetContext(((0, 1),), 0.5, 3)
    _, history, _ = finetune(ws, get_method("orig-ft"), ctx, tiny_config(batch_size=3, eval_every_steps=2))
    assert [(m["epoch"], m["step"]) for m in history] == [(0.5, 2), (1.0, 4)]


def test_cli_bar_names_the_stage_without_its_count():
    from repair.__main__ import _stage

    assert _stage("bir: scoring the train split (phi against theta): 66/196") == \
        "bir: scoring the train split (phi against theta)"
    assert _stage("step 1,200/3,000, loss 0.5123") == "step"  # the thousands comma is not the loss separator
    long = _stage("a" * 100)
    assert len(long) == 64 and long.endswith("…")
