"""Data-parallel fine-tuning: 2 Gloo processes on the CPU against one process, same code path.

Each run goes through the CLI (``--nproc 2`` starts torchrun through the job runner). The global
batch of 8 is split into 4 per rank, so the averaged gradient equals the single-process one except
for BatchNorm, whose batch statistics are per rank (no SyncBatchNorm on a CPU): weights differ by
a few percent. Stated tolerance: the final accuracy and target error agree within one eval sample
(1/18), and every learned weight within 25 % of its tensor's largest magnitude (BatchNorm running
statistics are per-rank estimates, averaged once per epoch: not compared).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, write_tiny_workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ddp_workspace(tmp_path_factory):
    return write_tiny_workspace(tmp_path_factory.mktemp("ddp"), train_per_class=16, test_per_class=6)


def _run(workspace, method, nproc):
    cmd = [sys.executable, "-m", "repair", "run", "--workspace", str(workspace), "--method", method,
           "--targets", "cat,dog", "--rho", "0.5", "--epochs", "2", "--batch-size", "8", "--lr", "0.01",
           "--device", "cpu", "--no-augment", "--nproc", str(nproc), "--json"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "done", out["error"]
    return out


@pytest.mark.parametrize("method", ["orig-ft", "w-aug", "w-bn", "w-dbr"])
def test_two_processes_match_one(ddp_workspace, method):
    one, two = _run(ddp_workspace, method, 1), _run(ddp_workspace, method, 2)
    tol = 1 / 18 + 1e-9
    assert abs(one["final"]["accuracy"] - two["final"]["accuracy"]) <= tol
    assert abs(one["final"]["target_error"] - two["final"]["target_error"]) <= 2 * tol
    assert [e["epoch"] for e in one["epochs"]] == [e["epoch"] for e in two["epochs"]] == [1.0, 2.0]
    a = torch.load(one["model_version"]["path"], weights_only=True)
    b = torch.load(two["model_version"]["path"], weights_only=True)
    for k in a:
        if a[k].is_floating_point() and "running" not in k:
            assert (a[k] - b[k]).abs().max() <= 0.25 * a[k].abs().max() + 1e-6, k
