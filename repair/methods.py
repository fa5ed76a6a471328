"""The repair-method registry (WR paper section 3; DESIGN.md section 1 "Repair methods").

A method is a small class plugging into the one fine-tuning loop (:mod:`repair.loop`)
through hooks with safe defaults; methods never step the optimizer:

* ``sample_weights(labels, ctx)``: per-training-sample sampling weights (input stage);
* ``extra_batch_classes(ctx)``: classes of an extra batch fed with every step (w-bn);
* ``prepare_model(model, ctx)`` / ``finish_model(model)``: model preparation (w-bn);
* ``loss(logits, labels, embeddings, ctx)``: the training objective (loss stage).

``TargetContext`` carries the targets (index tuples: pairs = confusion, triplets = bias),
``Y_target``, rho and the task. The UI, the CLI and the tests enumerate
:func:`list_methods`; :func:`get_method` raises with the valid names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repair import wbn

STAGES = ("baseline", "input", "model", "loss", "output")


@dataclass(frozen=True)
class TargetContext:
    """What a method needs to know about the repair goal.

    Attributes:
        targets: pairs ``(a, b)`` (confusion) or triplets ``(positive, negative, anchor)``
            (bias) of class indices.
        rho: trade-off in [0, 1]; 1 means plain fine-tuning for every method.
        num_classes: K.
        task: "single_label" or "multi_label".
    """

    targets: tuple[tuple[int, ...], ...]
    rho: float
    num_classes: int
    task: str = "single_label"

    def __post_init__(self):
        if not 0.0 <= float(self.rho) <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho}")
        sizes = {len(t) for t in self.targets}
        if not self.targets or sizes not in ({2}, {3}):
            raise ValueError("targets must be one or more pairs, or one or more triplets")
        for t in self.targets:
            if len(set(t)) != len(t) or not all(0 <= c < self.num_classes for c in t):
                raise ValueError(f"bad target {t}: classes must differ and be in [0, {self.num_classes})")

    @property
    def kind(self) -> str:
        return "confusion" if len(self.targets[0]) == 2 else "bias"

    @property
    def classes(self) -> list[int]:
        """``Y_target``: every class named in the targets (section 3.2.4)."""
        return sorted({c for t in self.targets for c in t})

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"


def in_classes(labels: torch.Tensor | np.ndarray, classes: Sequence[int], multi_label: bool):
    """(N,) bool: single-label label in ``classes``; multi-label any of ``classes`` present."""
    if multi_label:
        return (labels[:, list(classes)] > 0.5).any(1)
    if isinstance(labels, torch.Tensor):
        return torch.isin(labels, torch.as_tensor(list(classes), device=labels.device))
    return np.isin(labels, list(classes))


def base_loss(logits: torch.Tensor, labels: torch.Tensor, *, multi_label: bool, reduction: str = "mean"):
    """Cross-entropy (single-label) or binary cross-entropy over classes (multi-label)."""
    if multi_label:
        per = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(1)
        return per.mean() if reduction == "mean" else per
    return F.cross_entropy(logits, labels, reduction=reduction)


class Method:
    """Base class: plain fine-tuning with every hook at its safe default."""

    name = ""
    description = ""
    stage = "baseline"
    finetunes = True          # False: post-hoc (w-os) or no-op (orig)
    uses_rho = True
    needs_embeddings = False

    def applicability(self, model: nn.Module | None = None, ws=None) -> str | None:
        """Why the method cannot run here (None when it can)."""
        return None

    def sample_weights(self, labels: np.ndarray, ctx: TargetContext) -> np.ndarray | None:
        return None

    def extra_batch_classes(self, ctx: TargetContext) -> list[int] | None:
        return None

    def prepare_model(self, model: nn.Module, ctx: TargetContext) -> nn.Module:
        return model

    def finish_model(self, model: nn.Module) -> nn.Module:
        return model

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor | None,
             ctx: TargetContext) -> torch.Tensor:
        return base_loss(logits, labels, multi_label=ctx.multi_label)


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"repair method {cls.name!r} is unnamed or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str, **config) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown repair method {name!r}; valid: {', '.join(list_methods())}")
    return _REGISTRY[name](**config)


@register
class Orig(Method):
    name, stage, finetunes, uses_rho = "orig", "baseline", False, False
    description = "The model as loaded (baseline, no change)."


@register
class OrigFT(Method):
    name, stage, uses_rho = "orig-ft", "baseline", False
    description = "Fine-tuned with the plain loss and the same schedule as the others (baseline)."


@register
class WAug(Method):
    name, stage = "w-aug", "input"
    description = "Samples non-target classes with probability scaled by rho (section 3.2)."

    def sample_weights(self, labels, ctx):
        target = in_classes(np.asarray(labels), ctx.classes, ctx.multi_label)
        return np.where(target, 1.0, float(ctx.rho))


@register
class WBN(Method):
    name, stage = "w-bn", "model"
    description = ("BatchNorm statistics mix rho * regular batch + (1 - rho) * a target-class "
                   "batch; only the regular batch's loss is back-propagated (section 3.3).")

    def applicability(self, model=None, ws=None):
        return None if model is None else wbn.not_applicable_reason(model)

    def extra_batch_classes(self, ctx):
        return ctx.classes

    def prepare_model(self, model, ctx):
        reason = wbn.not_applicable_reason(model)
        if reason:
            raise ValueError(reason)
        wbn.patch_model(model, ctx.rho)
        return model

    def finish_model(self, model):
        wbn.unpatch_model(model)
        return model


def confused_mask(logits: torch.Tensor, labels: torch.Tensor, pair: tuple[int, int], *, multi_label: bool):
    """(B,) bool: samples of the pair predicted as the other class of the pair.

    Single-label: label A predicted B, or label B predicted A (``D(Y_target)`` of WR 3.5.1).
    Multi-label: A present, B absent and B predicted (or the reverse), at threshold 0.5.
    """
    a, b = pair
    with torch.no_grad():
        if multi_label:
            present = labels > 0.5
            pred = logits > 0  # sigmoid(z) >= 0.5
            return ((present[:, a] & ~present[:, b] & pred[:, b])
                    | (present[:, b] & ~present[:, a] & pred[:, a]))
        pred = logits.argmax(1)
        return ((labels == a) & (pred == b)) | ((labels == b) & (pred == a))


def pairs_of(target: tuple[int, ...]) -> list[tuple[int, int]]:
    """A pair itself; a triplet (A, B, C) gives {A, C} and {B, C} (WR 3.5.2)."""
    if len(target) == 2:
        return [tuple(target)]
    return [(target[0], target[2]), (target[1], target[2])]


@register
class WLoss(Method):
    name, stage = "w-loss", "loss"
    description = ("rho * loss + (1 - rho) * loss on the confused samples of each target "
                   "(recomputed per batch; section 3.5).")

    def confused_term(self, logits, labels, ctx) -> torch.Tensor:
        per = base_loss(logits, labels, multi_label=ctx.multi_label, reduction="none")
        terms = []
        for t in ctx.targets:
            parts = []
            for pair in pairs_of(t):
                mask = confused_mask(logits, labels, pair, multi_label=ctx.multi_label)
                # an empty D(Y_target) in this batch contributes 0 (not NaN)
                parts.append(per[mask].mean() if mask.any() else per.sum() * 0.0)
            terms.append(sum(parts))
        return sum(terms) / len(terms)

    def loss(self, logits, labels, embeddings, ctx):
        plain = base_loss(logits, labels, multi_label=ctx.multi_label)
        return ctx.rho * plain + (1 - ctx.rho) * self.confused_term(logits, labels, ctx)


def class_centroid(embeddings: torch.Tensor, labels: torch.Tensor, k: int, multi_label: bool):
    """``P(k)``: mean embedding of the batch samples of class k (None if absent)."""
    mask = labels[:, k] > 0.5 if multi_label else labels == k
    return embeddings[mask].mean(0) if mask.any() else None


@register
class WDBR(Method):
    name, stage, needs_embeddings = "w-dbr", "loss", True
    description = ("rho * loss - (1 - rho) * ||P(A) - P(B)|| (confusion) or + (1 - rho) * "
                   "|D(A,C) - D(B,C)| (bias), on penultimate-layer centroids (section 3.6).")

    def applicability(self, model=None, ws=None):
        if ws is not None and ws.capabilities().get("embeddings"):
            return "w-dbr needs penultimate-layer embeddings: " + ws.capabilities()["embeddings"]
        return None

    def distance_term(self, embeddings, labels, ctx) -> torch.Tensor:
        """The regularisation term, signed: -D(A,B) for pairs, +|D(A,C)-D(B,C)| for triplets."""
        zero = embeddings.sum() * 0.0
        terms = []
        for t in ctx.targets:
            cents = [class_centroid(embeddings, labels, k, ctx.multi_label) for k in t]
            if any(c is None for c in cents):
                terms.append(zero)  # a class missing from this batch: no term this step
            elif len(t) == 2:
                terms.append(-torch.linalg.vector_norm(cents[0] - cents[1]))
            else:
                d_ac = torch.linalg.vector_norm(cents[0] - cents[2])
                d_bc = torch.linalg.vector_norm(cents[1] - cents[2])
                terms.append(torch.abs(d_ac - d_bc))
        return sum(terms) / len(terms)

    def loss(self, logits, labels, embeddings, ctx):
        if embeddings is None:
            raise ValueError("w-dbr needs embeddings but the model gave none")
        plain = base_loss(logits, labels, multi_label=ctx.multi_label)
        return ctx.rho * plain + (1 - ctx.rho) * self.distance_term(embeddings.float(), labels, ctx)


@register
class WOS(Method):
    name, stage, finetunes = "w-os", "output", False
    description = ("Post-hoc: scale target-class probabilities by rho for samples predicted as a "
                   "target class, then decide again (section 3.4); no new weights.")


PGD_UNAVAILABLE = "needs the gradient-scores diagnostics (issue 5)"


def _pgd_probabilities():
    try:
        from diagnostics.gradients import train_sampling_probabilities
    except ImportError:
        return None
    return train_sampling_probabilities


@register
class PGD(Method):
    name, stage, uses_rho = "pgd", "input", False
    description = ("PGD: resample training data with the gradient-based probability p_s "
                   "(minority samples more often), as a weighted sampler.")

    def __init__(self, probabilities: np.ndarray | None = None):
        self.probabilities = probabilities

    def applicability(self, model=None, ws=None):
        if _pgd_probabilities() is None:
            return PGD_UNAVAILABLE
        if ws is not None and ws.multi_label:
            return "pgd is not applicable: per-sample gradient scores support single-label workspaces only"
        return None

    def load(self, ws, parent: str = "orig", progress=None) -> None:
        fn = _pgd_probabilities()
        if fn is None:
            raise ValueError(f"pgd is unavailable: {PGD_UNAVAILABLE}")
        self.probabilities = np.asarray(fn(ws, version=parent, progress=progress), dtype=np.float64)

    def sample_weights(self, labels, ctx):
        if self.probabilities is None:
            raise ValueError("pgd: sampling probabilities were not loaded")
        if len(self.probabilities) != len(labels):
            raise ValueError(f"pgd: {len(self.probabilities)} probabilities for {len(labels)} samples")
        return self.probabilities


def method_table(model: nn.Module | None = None, ws=None) -> list[dict]:
    """One row per method: name, stage, kind, description, available, reason."""
    rows = []
    for name in list_methods():
        m = get_method(name)
        reason = m.applicability(model, ws)
        rows.append({"method": name, "stage": m.stage,
                     "kind": "fine-tuning" if m.finetunes else ("post-hoc" if name == "w-os" else "none"),
                     "uses_rho": m.uses_rho, "available": reason is None, "reason": reason or "",
                     "description": m.description})
    return rows
