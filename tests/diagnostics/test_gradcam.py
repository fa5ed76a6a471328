"""Grad-CAM: a hand-made region model, batching, per-row classes, cache, clear errors."""

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from diagnostics.associations import relevance_shares
from diagnostics.gradcam import (
    compute_gradcam, gradcam_batch, resolve_layer, target_rows, upsample_cams,
)
from diagnostics.run_gradcam import workspace_gradcam
from workspace.data import ArraySplit, ImageDataset
from workspace.errors import WorkspaceError

SIZE = 16


def region_mask(y0, y1, x0, x1, size=SIZE):
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


class RegionNet(nn.Module):
    """Class 0's logit depends only on the pixels inside ``region`` (inputs are gated)."""

    def __init__(self, region: np.ndarray):
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region).float()[None, None])
        self.conv1 = nn.Conv2d(3, 4, 1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():  # positive weights: relevance is positive where the input is
            self.conv1.weight.abs_()
            self.conv2.weight.abs_()
            self.head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        h = self.pool(torch.relu(self.conv1(x * self.region)))
        h = torch.relu(self.conv2(h))  # (N, 4, 8, 8): the Grad-CAM layer
        return self.head(h.mean(dim=(2, 3)))


def test_region_model_relevance_share_above_0_8():
    region = region_mask(2, 8, 8, 14)
    model = RegionNet(region).eval()
    assert resolve_layer(model, "auto", torch.zeros(1, 3, SIZE, SIZE)) == "conv2"
    x = torch.rand(6, 3, SIZE, SIZE) + 0.1
    cam = gradcam_batch(model, "conv2", x, torch.zeros(6, dtype=torch.long)).numpy()  # (6, 8, 8)
    assert cam.shape == (6, 8, 8) and (cam >= 0).all()
    up = upsample_cams(cam, (SIZE, SIZE))
    elsewhere = region_mask(10, 16, 0, 6)
    shares = relevance_shares(up, np.stack([np.stack([region, elsewhere])] * 6))
    assert (shares[:, 0] > 0.8).all(), shares[:, 0]
    assert (shares[:, 1] < 0.05).all(), shares[:, 1]
    # the logit really only depends on the region
    x2 = x.clone()
    x2[:, :, ~torch.from_numpy(region)] = torch.rand_like(x2[:, :, ~torch.from_numpy(region)])
    assert torch.allclose(model(x)[:, 0], model(x2)[:, 0])


def _array_dataset(n=7, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(20, 255, size=(n, size, size, 3), dtype=np.uint8)
    split = ArraySplit(images, np.arange(n) % 2, ("a", "b"))
    tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    return ImageDataset(split, tf)


def test_batched_equals_one_by_one_with_per_row_classes():
    torch.manual_seed(1)
    model = RegionNet(region_mask(0, 16, 0, 16)).eval()
    with torch.no_grad():
        model.head.weight.normal_()
    ds = _array_dataset()
    indices = np.array([3, 0, 6, 1, 1, 5])  # unsorted, with a repeat (multi-label rows)
    classes = np.array([0, 1, 0, 1, 0, 1])
    batched = compute_gradcam(model, ds, layer="conv2", indices=indices, classes=classes, batch_size=4, device="cpu")
    for r, (i, k) in enumerate(zip(indices, classes)):
        x = ds[int(i)][0][None]
        single = gradcam_batch(model, "conv2", x, torch.tensor([int(k)])).numpy()[0]
        np.testing.assert_allclose(batched[r], single, rtol=1e-4, atol=1e-6)
    assert not np.allclose(batched[3], batched[4])  # same image, other class


def test_progress_is_reported_and_cancel_raises():
    model = RegionNet(region_mask(0, 16, 0, 16)).eval()
    ds = _array_dataset()
    seen = []
    compute_gradcam(model, ds, layer="conv2", indices=np.arange(7), classes=np.zeros(7, int), batch_size=3,
                    device="cpu", progress=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 7), (6, 7), (7, 7)]

    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_gradcam(model, ds, layer="conv2", indices=np.arange(7), classes=np.zeros(7, int),
                        batch_size=3, device="cpu", progress=cancel)


def test_target_rows_single_and_multi_label():
    idx, cls, ok = target_rows(np.array([1, 0, 2]), np.array([1, 1, 2]), np.array([4, 5, 9]), task="single_label")
    assert idx.tolist() == [4, 5, 9] and cls.tolist() == [1, 0, 2] and ok.tolist() == [True, False, True]
    preds = np.array([[True, True, False], [False, False, False], [False, False, True]])
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    idx, cls, ok = target_rows(preds, labels, np.array([0, 1, 2]), task="multi_label")
    assert idx.tolist() == [0, 0, 2] and cls.tolist() == [0, 1, 2] and ok.tolist() == [True, False, False]
    idx, cls, ok = target_rows(preds, labels, np.array([0, 1, 2]), task="multi_label", target=1)
    assert cls.tolist() == [1, 1, 1] and ok.tolist() == [False, False, True]


def test_scripted_convless_and_bad_layer_give_clear_errors():
    example = torch.zeros(1, 3, SIZE, SIZE)
    scripted = torch.jit.script(RegionNet(region_mask(0, 4, 0, 4)))
    with pytest.raises(WorkspaceError, match="TorchScript"):
        resolve_layer(scripted, "auto", example)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2))
    with pytest.raises(WorkspaceError, match="no Conv2d"):
        resolve_layer(mlp, "auto", example)
    with pytest.raises(WorkspaceError, match="not a module"):
        resolve_layer(RegionNet(region_mask(0, 4, 0, 4)), "nope", example)
    with pytest.raises(WorkspaceError, match=r"\(N, C, h, w\)"):
        resolve_layer(RegionNet(region_mask(0, 4, 0, 4)), "head", example)


def test_workspace_gradcam_is_cached_on_disk(tiny_workspace):
    from workspace.core import open_workspace

    ws = open_workspace(tiny_workspace)
    first = workspace_gradcam(ws, "eval")
    out = ws.outputs("eval")
    assert first.layer == "conv" and first.cams.shape == (9, 12, 12) and first.input_size == (12, 12)
    assert first.classes.tolist() == out.preds.tolist()
    files = list((ws.state_dir / "artifacts" / "gradcam").rglob("meta.json"))
    assert len(files) == 1
    again = open_workspace(tiny_workspace)
    again.model = None  # a cache hit must not touch the model
    second = workspace_gradcam(again, "eval")
    np.testing.assert_array_equal(first.cams, second.cams)
    chosen = workspace_gradcam(ws, "eval", target="dog")
    assert len(list((ws.state_dir / "artifacts" / "gradcam").rglob("meta.json"))) == 2  # one per target
    assert chosen.classes.tolist() == [1] * 9 and chosen.target == "dog"
    assert chosen.correct.tolist() == (out.labels == 1).tolist()
    with pytest.raises(WorkspaceError, match="unknown class"):
        workspace_gradcam(ws, "eval", target="zebra")
    # new weights: a new entry replaces the stale one of the same split and target
    ws.outputs_key = lambda split, version="orig", _k=ws.outputs_key: _k(split, version) + "x"
    workspace_gradcam(ws, "eval")
    assert len(list((ws.state_dir / "artifacts" / "gradcam").rglob("meta.json"))) == 2


def test_upsampling_is_captums_bilinear_interpolation_with_relu():
    from captum.attr import LayerAttribution

    cams = np.random.default_rng(0).normal(size=(5, 4, 6)).astype(np.float32)  # negatives too
    expected = LayerAttribution.interpolate(torch.from_numpy(cams)[:, None], (32, 48),
                                            interpolate_mode="bilinear")[:, 0].clamp_min(0).numpy()
    np.testing.assert_array_equal(upsample_cams(cams, (32, 48), batch_size=2), expected)
