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
