"""NeuronTune-style neuron scores and last-layer regulation (our reading of the method).

NeuronTune (Zheng et al., "NeuronTune: Towards Self-Guided Spurious Bias Mitigation")
probes a model's embedding space for neurons that drive spurious predictions and regulates
them post hoc, without group annotations. We have only its abstract and related work; what
follows is our reading, not the paper's algorithm:

1. **Scores** (:func:`neuron_deltas`) on a held-out set, from the penultimate embeddings
   ``v`` (the head's input) and the model's predictions: for every class ``y`` and embedding
   dimension ``i``,
   ``delta_i^y = median(v_i | class y, misclassified) - median(v_i | class y, correct)``.
   A class with no misclassified or no correct sample has NaN deltas and is left out.
2. **Spurious set** (:func:`spurious_neurons`): ``S = {i : delta_i^y > lambda for every
   class y}`` (rule "all", lambda 0): a neuron that is more active on the errors of *every*
   class than on its successes pushes samples toward wrong classes whatever the class, the
   signature of a shortcut rather than of a class feature. Rule "any" (for some class) is
   the loose variant; :class:`NeuronScores` reports both sizes.
3. **Regulation** (:func:`retrain_head`): the neurons in ``S`` are zeroed by a fixed mask in
   front of the head (:class:`MaskedLinear`, the mask saved in the state dict) and the head is
   retrained on the *training* embeddings with class-balanced sampling (Adam through
   :func:`workspace.training.fit`).
4. **Selection without group labels**: ``SFit = sum over m and y of |delta_m^y|``, computed on
   the held-out set with the masked model (masked embeddings, the retrained head's
   predictions; NaN classes left out). Lower is better: no neuron then separates a class's
   errors from its successes. Among the masked original head (epoch 0) and the head after
   every epoch, the lowest SFit wins (ties: the earlier one). A head that misclassifies every
   held-out sample of a class drops that class from SFit; we accept that blind spot (it is
   visible in the per-class accuracy) rather than invent a penalty, but refuse a mask that
   drops every neuron (a constant head would score a perfect 0).

Everything here works on arrays and small ``nn.Linear`` heads; no file I/O.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from workspace.errors import WorkspaceError
from workspace.training import fit
from workspace.layers import MaskedLinear, install_masked_head, mask_from_state_dict  # noqa: F401 - re-exported

RULES = ("all", "any")
INITS = ("original", "random")

Progress = Callable[[int, int], None]
StopCheck = Callable[[], bool]


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise WorkspaceError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


def _arrays(embeddings, labels, preds=None):
    v = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    if v.ndim != 2 or labels.shape != (len(v),):
        raise WorkspaceError(f"neuron scores need (N, D) embeddings and (N,) class labels, got "
                             f"{v.shape} and {labels.shape}")
    if preds is not None:
        preds = np.asarray(preds)
        if preds.shape != labels.shape:
            raise WorkspaceError(f"predictions must be (N,) like the labels, got {preds.shape}")
    return v, labels.astype(np.int64), None if preds is None else preds.astype(np.int64)


# ---- scores ------------------------------------------------------------------------------------
def neuron_deltas(embeddings: np.ndarray, labels: np.ndarray, preds: np.ndarray, *,
                  num_classes: int | None = None) -> np.ndarray:
    """``delta[y, i] = median(v_i | y, wrong) - median(v_i | y, right)`` (module docstring, step 1).

    Args:
        embeddings: (N, D) float penultimate embeddings (the head's input) of held-out samples.
        labels: (N,) int true classes.
        preds: (N,) int predicted classes.
        num_classes: K (default: ``max(labels, preds) + 1``).

    Returns:
        (K, D) float64; a row is NaN when its class has no misclassified or no correctly
        classified sample.
    """
    v, labels, preds = _arrays(embeddings, labels, preds)
    k = int(num_classes if num_classes is not None else max(labels.max(initial=-1), preds.max(initial=-1)) + 1)
    deltas = np.full((k, v.shape[1]), np.nan)
    right = preds == labels
    for y in range(k):
        in_class = labels == y
        wrong_rows, right_rows = v[in_class & ~right], v[in_class & right]
        if len(wrong_rows) and len(right_rows):
            deltas[y] = np.median(wrong_rows, axis=0) - np.median(right_rows, axis=0)
    return deltas


def spurious_neurons(deltas: np.ndarray, *, lam: float = 0.0, rule: str = "all") -> np.ndarray:
    """The spurious set ``S`` (module docstring, step 2).

    Args:
        deltas: (K, D) from :func:`neuron_deltas` (NaN rows are left out).
        lam: lambda, the margin a delta must exceed (default 0).
        rule: "all" (``delta > lam`` for every valid class, default) or "any" (for some class).

    Returns:
        (D,) bool; all False when no class is valid (no evidence either way).
    """
    _check_choice("rule", rule, RULES)
    deltas = np.asarray(deltas, dtype=np.float64)
    valid = ~np.isnan(deltas).any(axis=1)
    if not valid.any():
        return np.zeros(deltas.shape[1], dtype=bool)
    above = deltas[valid] > lam
    return above.all(axis=0) if rule == "all" else above.any(axis=0)


@dataclass
class NeuronScores:
    """Per-class neuron deltas and the spurious sets of both rules.

    Attributes:
        deltas: (K, D) float64 (NaN rows: classes left out).
        valid: (K,) bool, classes with both misclassified and correct samples.
        spurious_all: (D,) bool, rule "all"; ``spurious_any``: rule "any".
        lam: the lambda used.
    """

    deltas: np.ndarray
    valid: np.ndarray
    spurious_all: np.ndarray
    spurious_any: np.ndarray
    lam: float

    def spurious(self, rule: str = "all") -> np.ndarray:
        _check_choice("rule", rule, RULES)
        return self.spurious_all if rule == "all" else self.spurious_any

    def mask(self, rule: str = "all") -> np.ndarray:
        """(D,) float32 keep-mask for :class:`MaskedLinear`: 0 for spurious neurons, else 1."""
        return (~self.spurious(rule)).astype(np.float32)

    def summary(self) -> dict:
        return {"neurons": int(self.deltas.shape[1]), "valid_classes": int(self.valid.sum()),
                "spurious_all": int(self.spurious_all.sum()), "spurious_any": int(self.spurious_any.sum()),
                "lambda": self.lam}


def score_neurons(embeddings: np.ndarray, labels: np.ndarray, preds: np.ndarray, *, lam: float = 0.0,
                  num_classes: int | None = None) -> NeuronScores:
    """:func:`neuron_deltas` and :func:`spurious_neurons` under both rules, in one call."""
    deltas = neuron_deltas(embeddings, labels, preds, num_classes=num_classes)
    return NeuronScores(deltas=deltas, valid=~np.isnan(deltas).any(axis=1),
                        spurious_all=spurious_neurons(deltas, lam=lam, rule="all"),
                        spurious_any=spurious_neurons(deltas, lam=lam, rule="any"), lam=float(lam))


def sfit(embeddings: np.ndarray, labels: np.ndarray, preds: np.ndarray, *, mask: np.ndarray | None = None,
         num_classes: int | None = None) -> float:
    """SFit (module docstring, step 4): ``sum over classes and neurons of |delta|``, lower is better.

    Args:
        embeddings: (N, D) held-out embeddings (before masking).
        labels, preds: (N,) int; ``preds`` from the masked model.
        mask: (D,) keep-mask applied to the embeddings first (masked neurons contribute 0).

    Returns:
        The sum over valid classes; 0.0 when no class is valid.
    """
    v = np.asarray(embeddings, dtype=np.float64)
    if mask is not None:
        v = v * np.asarray(mask, dtype=np.float64)[None, :]
    deltas = neuron_deltas(v, labels, preds, num_classes=num_classes)
    return float(np.nansum(np.abs(deltas)))


# ---- the masked head -----------------------------------------------------------------------------
def load_masked_state_dict(model: nn.Module, state: dict, *, head: str) -> bool:
    """Load ``state`` into ``model``, first installing a masked head when the state has a mask.

    Returns:
        True when a :class:`MaskedLinear` was installed.
    """
    mask = mask_from_state_dict(state, head)
    if mask is not None:
        install_masked_head(model, head, mask)
    model.load_state_dict(state)
    return mask is not None


# ---- regulation: retrain the masked head -----------------------------------------------------------
@dataclass
class HeadRetraining:
    """Result of :func:`retrain_head`.

    Attributes:
        head: the selected :class:`MaskedLinear` (CPU, float32).
        sfit: SFit on the held-out set after every epoch; index 0 is the masked head before
            retraining.
        best_epoch: the index of the lowest SFit (the returned head).
        epoch_losses: mean training loss of every epoch.
        heldout_accuracy: held-out accuracy after every epoch (index 0 as for ``sfit``).
    """

    head: MaskedLinear
    sfit: list[float]
    best_epoch: int
    epoch_losses: list[float] = field(default_factory=list)
    heldout_accuracy: list[float] = field(default_factory=list)


def balanced_indices(labels: np.ndarray, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws with replacement, each class equally likely (absent classes never)."""
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    counts = torch.bincount(labels).double()
    weights = 1.0 / counts[labels]
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def retrain_head(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    heldout_embeddings: np.ndarray,
    heldout_labels: np.ndarray,
    *,
    head: nn.Linear,
    mask: np.ndarray,
    init: str = "original",
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    max_steps: int | None = None,
    should_stop: StopCheck | None = None,
) -> HeadRetraining:
    """Retrain the head behind a fixed neuron mask (module docstring, steps 3-4).

    Each epoch draws N training embeddings with class-balanced sampling (with replacement);
    Adam minimises the cross-entropy of the masked head. After every epoch the head is
    scored by SFit on the held-out set; the lowest SFit (epoch 0: the masked head before
    retraining) is returned.

    Args:
        train_embeddings: (N, D) float32 training embeddings (the head's input).
        train_labels: (N,) int64.
        heldout_embeddings, heldout_labels: (M, D), (M,): the set the neurons were scored on.
        head: the model's ``nn.Linear`` head (never modified).
        mask: (D,) keep-mask (:meth:`NeuronScores.mask`).
        init: "original" (start from ``head``'s weights, default) or "random" (re-initialised).
        epochs, lr, batch_size, weight_decay: the Adam schedule.
        progress: ``progress(done, total)`` after every step; ``should_stop`` before every step.
        on_step: ``on_step(step, total, loss)`` after every step (a run's live loss curve).
        max_steps: stop after this many steps (a quick run's budget).

    Returns:
        :class:`HeadRetraining`.

    Raises:
        WorkspaceError: a bad option, shapes that do not match the head, a mask that drops
            every neuron.
        Cancelled: ``should_stop()`` returned True.
    """
    _check_choice("init", init, INITS)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise WorkspaceError(f"epochs and batch size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    x, y, _ = _arrays(train_embeddings, train_labels)
    hx, hy, _ = _arrays(heldout_embeddings, heldout_labels)
    if x.shape[1] != head.in_features or hx.shape[1] != head.in_features:
        raise WorkspaceError(f"the head takes {head.in_features} inputs; the embeddings have "
                             f"{x.shape[1]} (train) and {hx.shape[1]} (held-out)")
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape == (head.in_features,) and not mask.any():
        # the head could only output its bias, and SFit (no class with both right and wrong
        # samples) would call that perfect
        raise WorkspaceError("the spurious set covers every neuron; raise lambda or use the rule 'all'")
    device = torch.device(device)
    k = head.out_features
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y)
    hxt = torch.as_tensor(hx, dtype=torch.float32, device=device)
    masked = MaskedLinear.from_linear(copy.deepcopy(head).float().cpu(), mask).to(device)
    if init == "random":
        torch.manual_seed(seed)
        masked.reset_parameters()
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(y) / batch_size)

    def batches(epoch: int):
        order = balanced_indices(y, len(y), gen)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield xt[idx], yt[idx]

    def loss_fn(batch):
        bx, by = batch
        return F.cross_entropy(masked(bx.to(device)), by.to(device)), len(by)

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        preds = masked(hxt).argmax(1).cpu().numpy()
        return sfit(hx, hy, preds, mask=masked.mask.cpu().numpy(), num_classes=k), float((preds == hy).mean())

    first_sfit, first_acc = evaluate()
    record = {"sfit": [first_sfit], "acc": [first_acc], "loss": []}
    best = {"sfit": first_sfit, "epoch": 0, "state": copy.deepcopy(masked.state_dict())}

    def on_eval(epoch: float, step: int, mean: float | None) -> None:
        value, acc = evaluate()
        record["sfit"].append(value)
        record["acc"].append(acc)
        if mean is not None:
            record["loss"].append(mean)
        if value < best["sfit"]:
            best.update(sfit=value, epoch=len(record["sfit"]) - 1, state=copy.deepcopy(masked.state_dict()))

    optimizer = torch.optim.Adam(masked.parameters(), lr=lr, weight_decay=weight_decay)

    def stepped(step: int, total: int, loss: float) -> None:
        if progress is not None:
            progress(step, total)
        if on_step is not None:
            on_step(step, total, loss)

    fit(masked, batches, loss_fn, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, device=device,
        amp=False, max_steps=max_steps, on_step=stepped, on_eval=on_eval, should_stop=should_stop)
    masked.load_state_dict(best["state"])
    return HeadRetraining(head=masked.cpu().eval(), sfit=record["sfit"], best_epoch=best["epoch"],
                          epoch_losses=record["loss"], heldout_accuracy=record["acc"])


@dataclass
class NeuronTuneResult:
    """Result of :func:`neurontune`: the scores, the rule used and the retrained head."""

    scores: NeuronScores
    rule: str
    retraining: HeadRetraining

    @property
    def mask(self) -> np.ndarray:
        return self.scores.mask(self.rule)


def neurontune(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    heldout_embeddings: np.ndarray,
    heldout_labels: np.ndarray,
    heldout_preds: np.ndarray,
    *,
    head: nn.Linear,
    lam: float = 0.0,
    rule: str = "all",
    **retrain_options,
) -> NeuronTuneResult:
    """Score the neurons on the held-out set, mask the spurious ones and retrain the head.

    Args:
        heldout_preds: (M,) the original model's predictions on the held-out set.
        head: the model's ``nn.Linear`` head (never modified).
        lam, rule: :func:`spurious_neurons`.
        retrain_options: passed to :func:`retrain_head`.

    Returns:
        :class:`NeuronTuneResult`; install its head with :func:`install_masked_head`.
    """
    _check_choice("rule", rule, RULES)
    scores = score_neurons(heldout_embeddings, heldout_labels, heldout_preds, lam=lam,
                           num_classes=head.out_features)
    retraining = retrain_head(train_embeddings, train_labels, heldout_embeddings, heldout_labels, head=head,
                              mask=scores.mask(rule), **retrain_options)
    return NeuronTuneResult(scores=scores, rule=rule, retraining=retraining)


# ---- helpers for a "Neurons" page ----------------------------------------------------------------
def top_activating(embeddings: np.ndarray, *, k: int = 10, neurons: Sequence[int] | None = None) -> pd.DataFrame:
    """The ``k`` rows with the highest activation of each neuron.

    Args:
        embeddings: (N, D) float.
        neurons: which dimensions (default all).

    Returns:
        DataFrame, one row per (neuron, rank): ``neuron`` int, ``rank`` int (0 = highest),
        ``row`` int (position in ``embeddings``), ``activation`` float.
    """
    v = np.asarray(embeddings, dtype=np.float64)
    if v.ndim != 2:
        raise WorkspaceError(f"embeddings must be (N, D), got {v.shape}")
    cols = np.arange(v.shape[1]) if neurons is None else np.asarray(neurons, dtype=np.int64)
    if cols.size and (cols.min() < 0 or cols.max() >= v.shape[1]):
        raise WorkspaceError(f"neurons must be in [0, {v.shape[1]}), got {cols.min()}..{cols.max()}")
    k = min(int(k), len(v))
    order = np.argsort(-v[:, cols], axis=0, kind="stable")[:k]  # (k, len(cols))
    return pd.DataFrame({
        "neuron": np.repeat(cols, k),
        "rank": np.tile(np.arange(k), len(cols)),
        "row": order.T.ravel(),
        "activation": np.take_along_axis(v[:, cols], order, axis=0).T.ravel(),
    })


def class_neuron_deltas(deltas: np.ndarray, class_index: int, *, spurious: np.ndarray | None = None) -> pd.DataFrame:
    """The neurons of one class sorted by delta, highest first.

    Args:
        deltas: (K, D) from :func:`neuron_deltas`.
        class_index: y.
        spurious: (D,) bool spurious set to flag (optional).

    Returns:
        DataFrame, one row per neuron: ``neuron`` int, ``delta`` float (NaN when the class
        was left out), ``spurious`` bool.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    if not 0 <= class_index < len(deltas):
        raise WorkspaceError(f"class index must be in [0, {len(deltas)}), got {class_index}")
    row = deltas[class_index]
    frame = pd.DataFrame({"neuron": np.arange(len(row)), "delta": row,
                          "spurious": np.zeros(len(row), bool) if spurious is None else np.asarray(spurious, bool)})
    return frame.sort_values("delta", ascending=False, kind="stable", na_position="last").reset_index(drop=True)


def group_accuracies(correct: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Accuracy per group: columns ``group``, ``n``, ``accuracy``, sorted by group."""
    correct, groups = np.asarray(correct, dtype=bool), np.asarray(groups)
    if correct.shape != groups.shape or correct.ndim != 1:
        raise WorkspaceError(f"correct and groups must be (N,) alike, got {correct.shape} and {groups.shape}")
    frame = pd.DataFrame({"group": groups, "correct": correct})
    return frame.groupby("group", sort=True)["correct"].agg(n="size", accuracy="mean").reset_index()


def worst_group_accuracy(correct: np.ndarray, groups: np.ndarray) -> tuple[float, Hashable]:
    """The lowest per-group accuracy and its group (the first such group on ties).

    Args:
        correct: (N,) bool, prediction right.
        groups: (N,) group ids (any hashable values).

    Returns:
        ``(accuracy, group)``; ``(nan, None)`` for no samples.
    """
    table = group_accuracies(correct, groups)
    if table.empty:
        return float("nan"), None
    i = int(table["accuracy"].to_numpy().argmin())
    return float(table["accuracy"].iloc[i]), table["group"].iloc[i]
