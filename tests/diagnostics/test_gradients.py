"""Per-sample gradients, PGD scores and the noise split against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from diagnostics import gradients as G
from workspace.errors import WorkspaceError


class SmallNet(nn.Module):
    """conv + BN + pool + linear head (BN in eval mode: per-sample gradients are well defined)."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, k)

    def embed(self, x):
        return torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1)

    def forward(self, x):
        return self.head(self.embed(x))


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = SmallNet().double()
    with torch.no_grad():  # non-trivial running statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return model, x, y


def test_vmap_equals_per_sample_loop_all_parameters(small):
    model, x, y = small
    fast = G.per_sample_gradients(model, x, y)
    slow = G.loop_gradients(model, x, y)
    assert fast.shape == (6, sum(p.numel() for p in model.parameters()))
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0)
    assert slow.abs().max() > 1e-3  # not trivially zero


def test_closed_form_last_layer_equals_vmap_and_loop(small):
    model, x, y = small
    names = ["head.weight", "head.bias"]
    with torch.no_grad():
        probs = torch.softmax(model(x), 1).numpy()
        emb = model.embed(x).numpy()
    closed = G.last_layer_gradients(probs, y.numpy(), emb)
    vm = G.per_sample_gradients(model, x, y, names=names).numpy()
    loop = G.loop_gradients(model, x, y, names=names).numpy()
    assert closed.shape == (6, 3 * 4 + 3)
    np.testing.assert_allclose(closed, vm, atol=1e-5, rtol=0)
    np.testing.assert_allclose(closed, loop, atol=1e-5, rtol=0)


def test_last_layer_gradient_hand_example():
    # p = (0.7, 0.2, 0.1), y = 0, e = (1, 2): dW = (p - onehot) e^T, db = p - onehot
    g = G.last_layer_gradients(np.array([[0.7, 0.2, 0.1]]), np.array([0]), np.array([[1.0, 2.0]]))
    np.testing.assert_allclose(g[0], [-0.3, -0.6, 0.2, 0.4, 0.1, 0.2, -0.3, 0.2, 0.1], atol=1e-6)


class _Loader:
    """A minimal loader of (x, index, ok) batches with the labels attached."""

    def __init__(self, x, y, batch):
        self.dataset = list(range(len(x)))
        self.labels = y.numpy()
        self.x, self.batch = x, batch
        self.ok = torch.ones(len(x), dtype=torch.bool)
        self.ok[2] = False  # a sample that failed to load

    def __iter__(self):
        for s in range(0, len(self.x), self.batch):
            idx = torch.arange(s, min(s + self.batch, len(self.x)))
            yield self.x[idx], idx, self.ok[idx]


def test_model_gradients_top_k_keeps_dominant_dimensions_and_skips_bad_images(small):
    model, x, y = small
    calls = []
    grads, idx = G.model_gradients(model, _Loader(x, y, 4), k=5, progress=lambda d, t: calls.append((d, t)))
    full = G.loop_gradients(model, x, y)
    keep_rows = [0, 1, 3, 4, 5]
    assert idx.tolist() == keep_rows
    top = torch.topk(full[keep_rows].abs().sum(0), 5).indices
    np.testing.assert_allclose(grads, full[keep_rows][:, top].numpy(), atol=1e-5)
    assert calls[-1] == (12, 12)  # two passes over 6 samples


def test_magnitude_scores_hand_example():
    np.testing.assert_allclose(G.magnitude_scores(np.array([1.0, 2.0, 4.0])), [4 / 7, 2 / 7, 1 / 7])


def test_vmf_fit_hand_example():
    u, kappa = G.vmf_fit(np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(u, [1 / math.sqrt(2)] * 2)
    r = math.sqrt(2) / 2
    assert kappa == pytest.approx(r * (2 - r * r) / (1 - r * r))  # 2.1213...


def test_direction_score_highest_for_sample_closest_to_mean_direction():
    angles = np.array([0.0, 0.1, -0.15, 0.3, 1.2])  # the mean direction is near angle 0.1
    grads = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1.0], [5.0], [0.5], [2.0], [3.0]])
    d = G.direction_scores(grads)
    u, _ = G.vmf_fit(grads / np.linalg.norm(grads, axis=1, keepdims=True))
    closest = int(np.argmax(grads @ u / np.linalg.norm(grads, axis=1)))
    assert int(np.argmax(d)) == closest and int(np.argmin(d)) == 4
    assert d.sum() == pytest.approx(1.0)


def test_direction_scores_do_not_overflow_in_high_dimension():
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(50, 2000)) + 3.0  # concentrated: kappa in the thousands
    log_d = G.log_direction_scores(grads)
    assert np.isfinite(log_d).all() and np.log(np.exp(log_d).sum()) == pytest.approx(0.0, abs=1e-9)


def test_aggregate_weighted_harmonic_mean():
    assert G.aggregate_scores(np.array([0.5]), np.array([0.25]))[0] == pytest.approx(1 / 3)
    assert G.aggregate_scores(np.array([0.5]), np.array([0.25]), lam=0.0)[0] == pytest.approx(0.5)
    # lam = 2: (1 + 4) * 0.5 * 0.25 / (4 * 0.5 + 0.25)
    assert G.aggregate_scores(np.array([0.5]), np.array([0.25]), lam=2.0)[0] == pytest.approx(0.625 / 2.25)


def test_gradient_scores_per_class_and_p_s():
    # class 0: three aligned gradients of norms 1, 2, 4 (D uniform); class 1: two opposite
    grads = np.array([[1.0, 0], [2.0, 0], [4.0, 0], [0, 1.0], [0, -1.0]])
    frame = G.gradient_scores(grads, np.array([0, 0, 0, 1, 1]), balance_classes=False)
    np.testing.assert_allclose(frame["M"][:3], [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(frame["D"][:3], [1 / 3] * 3, atol=1e-6)
    np.testing.assert_allclose(frame["D"][3:], [0.5, 0.5])  # no mean direction
    s = frame["S"].to_numpy()
    np.testing.assert_allclose(s[0], 2 * (4 / 7) * (1 / 3) / (4 / 7 + 1 / 3))
    np.testing.assert_allclose(frame["p_s"], s.min() / s)
    assert frame["p_s"].max() == 1.0 and (frame["p_s"] > 0).all()
    # the large-gradient (atypical) sample gets the highest p_s within class 0
    assert frame["p_s"][2] > frame["p_s"][1] > frame["p_s"][0]
    balanced = G.gradient_scores(grads, np.array([0, 0, 0, 1, 1]))
    np.testing.assert_allclose(balanced["S"], s)  # S itself is unchanged
    cmp = s * np.array([3, 3, 3, 2, 2])
    np.testing.assert_allclose(balanced["p_s"], cmp.min() / cmp)


def test_noise_split_hand_example():
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.9, 0.1]])
    labels = np.array([0, 0, 1])
    noisy, comp, delta = G.noise_split(probs, labels)
    ce = np.array([-math.log(0.9), math.log(2), -math.log(0.1)])
    h9 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    np.testing.assert_allclose(comp, ce / np.array([h9, math.log(2), h9]))
    assert delta == pytest.approx(ce.sum() / (2 * h9 + math.log(2)))  # 2.3085
    assert noisy.tolist() == [False, False, True]


def test_roc_auc_matches_hand_count():
    assert G.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    assert math.isnan(G.roc_auc(np.array([1.0]), np.array([True])))


def test_multi_label_is_refused():
    with pytest.raises(WorkspaceError, match="single-label"):
        G.gradient_scores(np.ones((2, 3)), np.ones((2, 3)))


def test_planted_summary():
    frame = pd.DataFrame({"index": [0, 1, 2, 3], "p_s": [0.1, 0.9, 0.2, 0.8], "log_p_s": np.log([0.1, 0.9, 0.2, 0.8]),
                          "noisy": [True, False, True, False]})
    out = G.planted_summary(frame, {"minority": [1, 3], "flipped_labels": [0]})
    assert out == {"minority_auc": 1.0, "flip_recall": 1.0, "clean_flagged": pytest.approx(1 / 3)}
    assert G.planted_summary(frame, None) == {}
