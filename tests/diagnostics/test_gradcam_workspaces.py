"""Grad-CAM associations on user workspaces: multi-label CSV data with a mask folder, TorchScript."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diagnostics.associations import aggregate_associations
from diagnostics.run_gradcam import workspace_gradcam, workspace_shares
from diagnostics.mask_sources import load_masks
from workspace.errors import WorkspaceError


@pytest.fixture
def multilabel_workspace(tiny_workspace):
    root = tiny_workspace.parent
    rows = ["path,labels"]
    for k, rel in enumerate(sorted((root / "data").rglob("*.png"))):
        rows.append(f"{rel.relative_to(root).as_posix()},{['cat', 'dog|fox', 'cat|fox'][k % 3]}")
    (root / "all.csv").write_text("\n".join(rows) + "\n")
    (root / "masks").mkdir()
    (root / "masks" / "labels.json").write_text(json.dumps({"1": "sky"}))
    for rel in sorted((root / "data" / "test").rglob("*.png")):
        label_map = np.zeros((12, 12), np.uint8)
        label_map[:6] = 1
        target = root / "masks" / rel.relative_to(root)  # masks/<path inside the split's folder>.png
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_map).save(target)
    text = tiny_workspace.read_text()
    text = text.replace('task = "single_label"', 'task = "multi_label"\nthreshold = 0.3')
    text = text.replace('format = "imagefolder"\ntrain = "data/train"\neval = "data/test"',
                        'format = "csv"\ntrain = "all.csv"\neval = "all.csv"\nmasks = "masks"')
    tiny_workspace.write_text(text)
    return tiny_workspace


def test_multi_label_rows_are_predicted_labels(multilabel_workspace):
    from workspace.core import open_workspace

    ws = open_workspace(multilabel_workspace)
    assert ws.multi_label
    out = ws.outputs("eval")
    result = workspace_gradcam(ws, "eval")
    assert result.n == int(out.preds.sum())  # one row per predicted label
    rows, cls = np.nonzero(out.preds)
    assert result.indices.tolist() == out.indices[rows].tolist() and result.classes.tolist() == cls.tolist()
    assert result.correct.tolist() == (out.labels[rows, cls] > 0.5).tolist()
    masks = load_masks(ws, "eval")
    split = ws.split("eval")
    with_mask = np.array(["/data/test/" in p for p in split.ids])
    assert masks.matched == with_mask.sum() == 9
    shares = workspace_shares(ws, result, masks)
    has = ~np.isnan(shares.shares[:, 0])
    assert has.tolist() == with_mask[result.indices].tolist()
    assert ((shares.shares[has, 0] >= 0) & (shares.shares[has, 0] <= 1)).all()
    df = aggregate_associations(shares.shares, result.classes, result.correct, class_names=ws.class_names,
                                object_names=shares.object_names, threshold=0.0)
    assert not df.empty
    for r in df.to_dict("records"):  # threshold 0: every row with the object present counts
        k = ws.class_names.index(r["class"])
        assert r["count"] == r["present"] == int((has & (result.classes == k)).sum())
        assert r["n_pred"] == int((result.classes == k).sum())


def test_torchscript_model_gives_a_clear_message(tmp_path, tiny_workspace):
    from workspace.core import open_workspace

    root = tiny_workspace.parent
    import importlib.util

    spec = importlib.util.spec_from_file_location("tinynet_ts", root / "tinynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.jit.script(module.build(3)).save(str(root / "model.pt"))
    text = tiny_workspace.read_text().replace('factory = "tinynet:build"\nweights = "weights.pth"',
                                              'torchscript = "model.pt"')
    tiny_workspace.write_text(text)
    ws = open_workspace(tiny_workspace)
    assert ws.capabilities()["gradcam"] is not None
    with pytest.raises(WorkspaceError, match="TorchScript"):
        workspace_gradcam(ws, "eval")
