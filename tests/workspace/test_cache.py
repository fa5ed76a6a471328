import time

import numpy as np
import pytest
import torch

from tests.conftest import write_imagefolder
from workspace.core import open_workspace
from workspace.errors import WorkspaceError


def test_user_workspace_loads_caches_and_reuses(tiny_workspace, monkeypatch):
    ws = open_workspace(tiny_workspace)
    assert ws.class_names == ("cat", "dog", "fox") and len(ws.split("train")) == 12
    calls = []
    model = ws.model()
    ws.embedding_tap(model)  # finds the "auto" embedding layer with one dummy batch
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda x: calls.append(len(x)) or original(x))
    first = ws.outputs("eval")
    assert sum(calls) == 9 and first.n == 9
    assert first.logits.shape == (9, 3) and first.embeddings.shape == (9, 4)
    assert np.allclose(first.probs.sum(1), 1, atol=1e-5)
    assert first.preds.tolist() == first.logits.argmax(1).tolist()
    assert first.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    again = open_workspace(tiny_workspace).outputs("eval")  # a new process would see the same files
    assert sum(calls) == 9, "the second request must come from the cache"
    assert np.array_equal(again.logits, first.logits)


def test_cache_invalidates_when_weights_change(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    before = ws.outputs("eval")
    state = torch.load(tiny_workspace.parent / "weights.pth")
    state["head.bias"] += 5.0
    time.sleep(0.01)
    torch.save(state, tiny_workspace.parent / "weights.pth")
    after = open_workspace(tiny_workspace).outputs("eval")
    assert not np.allclose(before.logits, after.logits)


def test_corrupt_image_is_skipped_and_reported(tiny_workspace):
    bad = tiny_workspace.parent / "data" / "test" / "dog" / "001.png"
    bad.write_bytes(b"\x89PNG broken")
    out = open_workspace(tiny_workspace).outputs("eval")
    assert out.n == 8 and 4 not in out.indices.tolist()
    assert out.skipped[0]["index"] == 4 and out.skipped[0]["id"].endswith("dog/001.png")
    assert out.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_nan_outputs_are_a_clear_error(tiny_workspace):
    state = torch.load(tiny_workspace.parent / "weights.pth")
    state["head.weight"][:] = float("nan")
    torch.save(state, tiny_workspace.parent / "weights.pth")
    with pytest.raises(WorkspaceError, match="NaN or infinite outputs for 9 images"):
        open_workspace(tiny_workspace).outputs("eval")


def test_model_output_size_mismatch_is_caught_on_open(tiny_workspace):
    write_imagefolder(tiny_workspace.parent / "data" / "train", classes=("cat", "dog", "fox", "owl"), per_class=1)
    write_imagefolder(tiny_workspace.parent / "data" / "test", classes=("cat", "dog", "fox", "owl"), per_class=1)
    with pytest.raises(WorkspaceError, match="do not fit the model|outputs 3 scores"):
        open_workspace(tiny_workspace)


def test_saved_versions_load_and_never_touch_the_original(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    original = (tiny_workspace.parent / "weights.pth").read_bytes()
    model = ws.load_model()
    with torch.no_grad():
        model.head.bias += 1.0
    row = ws.save_version(model, method="w-aug", rho=0.5, targets=[["cat", "dog"]], seed=0)
    assert row["id"] == "v1-w-aug" and row["parent"] == "orig"
    assert (tiny_workspace.parent / "weights.pth").read_bytes() == original
    assert torch.allclose(ws.load_model(row["id"]).head.bias, model.head.bias)
    assert not np.allclose(ws.outputs("eval", row["id"]).logits, ws.outputs("eval").logits)
