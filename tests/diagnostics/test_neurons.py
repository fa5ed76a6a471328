"""NeuronTune-style neuron scores, the masked head and its retraining, on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from diagnostics import neurons as N
from workspace.errors import Cancelled, WorkspaceError

# Held-out embeddings, 3 neurons: 0 = the class feature, 1 = high on the errors of every
# class (spurious), 2 = constant.
HELDOUT = np.array([
    # class 0, correct
    [2.0, 0.0, 1.0], [3.0, 0.0, 1.0], [2.5, 0.0, 1.0],
    # class 0, misclassified
    [1.0, 2.0, 1.0], [1.5, 3.0, 1.0],
    # class 1, correct
    [0.0, 0.0, 1.0], [0.5, 0.0, 1.0], [0.0, 1.0, 1.0],
    # class 1, misclassified
    [1.0, 2.0, 1.0], [2.0, 2.0, 1.0],
])
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
PREDS = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0])


def test_neuron_deltas_hand_example():
    d = N.neuron_deltas(HELDOUT, LABELS, PREDS)
    # class 0: medians wrong (1.25, 2.5, 1) - right (2.5, 0, 1)
    # class 1: medians wrong (1.5, 2, 1) - right (0, 0, 1)
    np.testing.assert_allclose(d, [[-1.25, 2.5, 0.0], [1.5, 2.0, 0.0]])


def test_spurious_set_all_and_any_rules():
    scores = N.score_neurons(HELDOUT, LABELS, PREDS)
    np.testing.assert_array_equal(scores.spurious_all, [False, True, False])
    np.testing.assert_array_equal(scores.spurious_any, [True, True, False])
    np.testing.assert_array_equal(scores.mask("all"), [1.0, 0.0, 1.0])
    assert scores.summary()["spurious_all"] == 1 and scores.summary()["spurious_any"] == 2
    # a margin: neuron 1 (deltas 2.5 and 2.0) survives lambda 1.9, not 2.1
    np.testing.assert_array_equal(N.spurious_neurons(scores.deltas, lam=1.9), [False, True, False])
    assert not N.spurious_neurons(scores.deltas, lam=2.1).any()
    with pytest.raises(WorkspaceError, match="all, any"):
        N.spurious_neurons(scores.deltas, rule="most")


def test_classes_without_errors_or_successes_are_left_out():
    labels = np.append(LABELS, [2, 2])
    preds = np.append(PREDS, [2, 2])  # class 2: only correct samples
    v = np.vstack([HELDOUT, [[9.0, -9.0, 0.0], [9.0, -9.0, 0.0]]])
    d = N.neuron_deltas(v, labels, preds)
    assert np.isnan(d[2]).all()
    np.testing.assert_array_equal(N.spurious_neurons(d), [False, True, False])  # class 2 does not veto
    assert not N.spurious_neurons(np.full((2, 3), np.nan)).any()


def test_sfit_sums_absolute_deltas_of_unmasked_neurons():
    assert N.sfit(HELDOUT, LABELS, PREDS) == pytest.approx(1.25 + 2.5 + 1.5 + 2.0)
    assert N.sfit(HELDOUT, LABELS, PREDS, mask=np.array([1.0, 0.0, 1.0])) == pytest.approx(1.25 + 1.5)
    assert N.sfit(HELDOUT, LABELS, LABELS) == 0.0  # no errors: no class is valid


# ---- the masked head ---------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(3, 2))

    def forward(self, x):
        return self.head(self.body(x))


def test_masked_linear_zeroes_inputs_and_keeps_state_names():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    masked = N.MaskedLinear.from_linear(lin, [1, 0, 1])
    x = torch.randn(5, 3)
    torch.testing.assert_close(masked(x), lin(x * torch.tensor([1.0, 0.0, 1.0])))
    assert set(masked.state_dict()) == {"weight", "bias", "mask"}
    with pytest.raises(WorkspaceError, match="mask"):
        N.MaskedLinear.from_linear(lin, [1, 0])


def test_install_and_read_back_from_a_state_dict():
    torch.manual_seed(0)
    model = Net()
    x = torch.randn(6, 4)
    head = N.install_masked_head(model, "head.1", np.array([1, 0, 1], dtype=np.float32))
    assert model.head[1] is head
    state = model.state_dict()
    np.testing.assert_array_equal(N.mask_from_state_dict(state, "head.1"), [1, 0, 1])
    assert N.mask_from_state_dict(Net().state_dict(), "head.1") is None
    fresh = Net()
    assert N.load_masked_state_dict(fresh, state, head="head.1")
    torch.testing.assert_close(fresh(x), model(x))
    assert not N.load_masked_state_dict(Net(), Net().state_dict(), head="head.1")
    with pytest.raises(WorkspaceError, match="no module"):
        N.install_masked_head(Net(), "head.7", [1, 1, 1])
    with pytest.raises(WorkspaceError, match="not the nn.Linear"):
        N.install_masked_head(Net(), "head.0", [1, 1, 1])


# ---- regulation ---------------------------------------------------------------------------------
def _embeddings(n: int, rng, present: np.ndarray):
    """Neuron 0 = the class (noisy), neuron 1 = a spurious feature (3 where ``present``),
    neuron 2 = noise."""
    y = rng.integers(0, 2, n) if present is None else present[1]
    v = np.stack([y * 2.0 - 1.0 + rng.normal(0, 0.5, n), present[0] * 3.0 + rng.normal(0, 0.1, n),
                  rng.normal(0, 1, n)], axis=1)
    return v.astype(np.float32), y.astype(np.int64)


def test_spurious_neuron_found_zeroed_and_ignored_by_the_retrained_head():
    rng = np.random.default_rng(0)
    # train: the spurious feature sits on 97 % of class 1 and 3 % of class 0 (a shortcut)
    train_y = rng.integers(0, 2, 2000)
    train_v, _ = _embeddings(2000, rng, (rng.random(2000) < np.where(train_y == 1, 0.97, 0.03), train_y))
    # held out: the feature appears on 40 % of both classes, and the model errs exactly there
    held_y = rng.integers(0, 2, 600)
    present = rng.random(600) < 0.4
    held_v, _ = _embeddings(600, rng, (present, held_y))
    preds = np.where(present, 1 - held_y, held_y)
    head = nn.Linear(3, 2)
    original = head.weight.detach().clone()
    # lambda 0.3: sampling noise moves the other neurons' deltas by about +-0.1
    result = N.neurontune(train_v, train_y, held_v, held_y, preds, head=head, lam=0.3, epochs=15, lr=0.05)
    np.testing.assert_array_equal(result.scores.spurious_all, [False, True, False])
    np.testing.assert_array_equal(result.mask, [1.0, 0.0, 1.0])
    retrained = result.retraining.head
    shifted = held_v.copy()
    shifted[:, 1] = rng.normal(0, 10, len(shifted))
    with torch.no_grad():  # the zeroed neuron has no say in the output
        torch.testing.assert_close(retrained(torch.from_numpy(shifted)), retrained(torch.from_numpy(held_v)))
        preds_after = retrained(torch.from_numpy(held_v)).argmax(1).numpy()
    masked_accuracy = (preds_after == held_y).mean()
    assert masked_accuracy > 0.9
    assert float((retrained.weight[1, 0] - retrained.weight[0, 0]).detach()) > 0.5  # it reads the class neuron
    # an unmasked head retrained the same way leans on the shortcut and fails the held-out set
    plain = N.retrain_head(train_v, train_y, held_v, held_y, head=head, mask=np.ones(3), epochs=15, lr=0.05)
    with torch.no_grad():
        plain_accuracy = (plain.head(torch.from_numpy(held_v)).argmax(1).numpy() == held_y).mean()
    assert plain_accuracy < masked_accuracy - 0.05
    # the returned head is the epoch with the lowest SFit
    r = result.retraining
    assert len(r.sfit) == 16 and r.sfit[r.best_epoch] == min(r.sfit)
    assert N.sfit(held_v, held_y, preds_after, mask=result.mask) == pytest.approx(min(r.sfit))
    assert torch.equal(head.weight, original)  # the model's head is untouched


def test_retrain_head_checks_options_and_cancels():
    rng = np.random.default_rng(0)
    v, y = _embeddings(50, rng, (rng.random(50) < 0.5, rng.integers(0, 2, 50)))
    head = nn.Linear(3, 2)
    with pytest.raises(WorkspaceError, match="original, random"):
        N.retrain_head(v, y, v, y, head=head, mask=np.ones(3), init="zeros")
    with pytest.raises(WorkspaceError, match="takes 3 inputs"):
        N.retrain_head(v[:, :2], y, v, y, head=head, mask=np.ones(3))
    with pytest.raises(WorkspaceError, match="every neuron"):
        N.retrain_head(v, y, v, y, head=head, mask=np.zeros(3))
    with pytest.raises(Cancelled):
        N.retrain_head(v, y, v, y, head=head, mask=np.ones(3), should_stop=lambda: True)
    seen = []
    N.retrain_head(v, y, v, y, head=head, mask=np.ones(3), epochs=4, batch_size=10, max_steps=6,
                   on_step=lambda s, t, loss: seen.append((s, t, loss)))
    assert [s for s, _, _ in seen] == list(range(1, 7)) and all(t == 6 and np.isfinite(l) for _, t, l in seen)


def test_balanced_indices_sample_classes_equally():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    idx = N.balanced_indices(labels, 30000, torch.Generator().manual_seed(0)).numpy()
    share = np.bincount(labels[idx], minlength=3) / len(idx)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.02)


# ---- page helpers ----------------------------------------------------------------------------
def test_top_activating_rows():
    v = np.array([[0.1, 5.0], [0.9, 1.0], [0.5, 3.0]])
    frame = N.top_activating(v, k=2)
    assert list(frame.columns) == ["neuron", "rank", "row", "activation"]
    assert frame[frame.neuron == 0]["row"].tolist() == [1, 2]
    assert frame[frame.neuron == 1]["row"].tolist() == [0, 2]
    assert frame[frame.neuron == 1]["activation"].tolist() == [5.0, 3.0]
    assert N.top_activating(v, k=5, neurons=[1])["row"].tolist() == [0, 2, 1]


def test_class_neuron_deltas_sorted_highest_first():
    d = N.neuron_deltas(HELDOUT, LABELS, PREDS)
    frame = N.class_neuron_deltas(d, 0, spurious=np.array([False, True, False]))
    assert frame["neuron"].tolist() == [1, 2, 0]
    assert frame["delta"].tolist() == [2.5, 0.0, -1.25]
    assert frame["spurious"].tolist() == [True, False, False]
    with pytest.raises(WorkspaceError):
        N.class_neuron_deltas(d, 5)


def test_worst_group_accuracy():
    correct = np.array([True, True, False, True, False, False, True])
    groups = np.array(["a", "a", "a", "b", "b", "c", "c"])
    value, group = N.worst_group_accuracy(correct, groups)
    # a: 2/3, b: 1/2, c: 1/2 -> the first of the tied worst groups
    assert value == pytest.approx(0.5) and group == "b"
    table = N.group_accuracies(correct, groups)
    assert table["n"].tolist() == [3, 2, 2]
    assert N.worst_group_accuracy(np.array([], bool), np.array([]))[1] is None


# ---- the shapes demo ------------------------------------------------------------------------------
def test_regulation_lifts_the_worst_grass_group_on_the_shapes_demo(demo_ws, demo_train, demo_eval):
    """Groups: triangle or not x grass or not (grass sits on 85 % of train triangles and 30 % of
    every eval class). Scored and selected on one half of eval, measured on the other."""
    from workspace.demo import SHAPE_CLASSES
    from workspace.demo_workspace import DATA_VERSION

    with np.load(demo_ws.state_dir / f"shapes-data-v{DATA_VERSION}.npz") as data:
        grass = data["eval_grass"][demo_eval.indices]
    ev = demo_eval
    triangle = ev.labels == SHAPE_CLASSES.index("triangle")
    groups = np.char.add(np.where(triangle, "triangle", "other"), np.where(grass, "+grass", "-grass"))
    perm = np.random.default_rng(0).permutation(ev.n)
    held, test = perm[: ev.n // 2], perm[ev.n // 2:]
    result = N.neurontune(demo_train.embeddings, demo_train.labels, ev.embeddings[held], ev.labels[held],
                          ev.preds[held], head=demo_ws.model().fc, lam=0.5, rule="any", epochs=20)
    assert result.scores.summary()["spurious_all"] == 0  # no neuron errs for every class
    assert 0 < result.mask.size - result.mask.sum() < 20  # measured 9 of 64
    with torch.no_grad():
        after = result.retraining.head(torch.from_numpy(ev.embeddings[test])).argmax(1).numpy()
    before = ev.preds[test]
    worst_before, group = N.worst_group_accuracy(before == ev.labels[test], groups[test])
    worst_after, _ = N.worst_group_accuracy(after == ev.labels[test], groups[test])
    assert group == "other+grass"  # grass pulls other classes toward triangle
    # measured: worst 0.686 -> 0.729, mean 0.814 -> 0.838
    assert worst_after > worst_before + 0.02
    assert (after == ev.labels[test]).mean() >= (before == ev.labels[test]).mean()
