"""The repair methods with their own procedure: neurontune's masked head is a model version like any
other; bir refuses without a reserved set and runs with one."""

import numpy as np
import pytest
import torch

from repair import runs
from repair.loop import TrainConfig
from workspace import jobs
from workspace.core import open_workspace
from workspace.layers import MaskedLinear
from workspace.targets import Target


def test_neurontune_version_keeps_its_mask(tiny_workspace, monkeypatch):
    from diagnostics import neurons

    ws = open_workspace(tiny_workspace)
    real = neurons.score_neurons

    def one_spurious(*a, **k):  # make neuron 2 spurious so the mask is not all ones
        s = real(*a, **k)
        s.spurious_all = np.zeros_like(s.spurious_all)
        s.spurious_all[2] = True
        return s

    monkeypatch.setattr(neurons, "score_neurons", one_spurious)
    run_id = runs.create_run(ws, "neurontune", Target(((0, 1),), ws.class_names), 0.0,
                             TrainConfig(epochs=2, batch_size=4, device="cpu", scope="head"))
    job = jobs.run_job(ws, run_id)
    assert job["status"] == "done", job["error"]
    # the procedure names its own stages (each gets its own ETA), not the generic data preparation
    assert "neurontune: scoring the embedding neurons" in job["log_tail"], job["log_tail"]
    assert "preparing the data" not in job["log_tail"], job["log_tail"]
    model = ws.load_model(job["model_version"])
    assert isinstance(model.head, MaskedLinear) and model.head.mask.tolist() == [1.0, 1.0, 0.0, 1.0]
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        emb = model.pool(torch.relu(model.bn(model.conv(x)))).flatten(1)
        emb_changed = emb.clone()
        emb_changed[:, 2] += 100.0  # the zeroed neuron no longer matters
        assert torch.allclose(model.head(emb), model.head(emb_changed))
    cached = ws.cached_outputs("eval", job["model_version"])
    assert cached is not None and cached.accuracy == pytest.approx(job["final"]["accuracy"])


def test_bir_needs_a_reserved_set(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    with pytest.raises(ValueError, match="clean reserved set"):
        runs.create_run(ws, "bir", Target(((0, 1),), ws.class_names), 0.05, TrainConfig(device="cpu"))


def test_bir_run_stops_on_held_out_samples_and_plots_its_own_epochs(isolated_demo):
    """A bir run on the demo: the treatment's held-out stop is logged, the kept epoch named, and
    the step losses sit at their epoch of the treatment (not of the workspace's epoch count)."""
    import re

    run_id = runs.create_run(isolated_demo, "bir", Target(((0, 1),), isolated_demo.class_names), 0.05,
                             TrainConfig(device="cpu", max_steps=6, epochs=5))
    job = jobs.run_job(isolated_demo, run_id)
    assert job["status"] == "done", job["error"]
    log = job["log_tail"]
    found = re.search(r"([\d,]+) detrimental .*?([\d,]+) others mixed in, ([\d,]+) held out to stop", log)
    assert found, log
    causes, rest, held = (int(g.replace(",", "")) for g in found.groups())
    n = len(isolated_demo.split("train").labels)
    assert held == n // 10 and causes + rest + held <= n
    assert re.search(r"bir: held-out loss [\d.]+ before, [\d.]+ after each epoch; kept ", log), log
    # the training stage names the layers bir chose, not a scope (bir trains only its own layers)
    chosen = re.search(r"bir: layers (\S+);", log).group(1)
    assert f"bir: treatment: retraining {chosen} on the aligned" in log, log
    assert "scope)" not in log, log
    per_epoch = -(-(causes + rest) // 64)
    steps = [m for m in isolated_demo.store.run_metrics(run_id) if m["accuracy"] is None and m["loss"] is not None]
    assert [m["step"] for m in steps] == list(range(1, 7))
    assert [m["epoch"] for m in steps] == pytest.approx([s / per_epoch for s in range(1, 7)], abs=1e-4)  # stored rounded
    # the saved version says the epochs it trained (one, capped by the step budget), not the config's 5
    version = next(v for v in isolated_demo.versions() if v.get("run_id") == run_id)
    assert version["epochs"] == 1
