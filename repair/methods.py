"""The repair-method registry ("Repairing Group-Level Errors for DNNs Using Weighted
Regularization" (WR), section 3, plus PGD's resampling).

A method is a small class that declares what it is and plugs into the one fine-tuning loop
(:mod:`repair.loop`) through hooks with safe defaults; methods never step the optimizer and
nothing outside this module tests a method's name:

* declarations: ``stage`` (baseline/input/model/loss/output), ``kind`` ("baseline",
  "fine-tuning" or "post-hoc"), ``param`` (its trade-off parameter with range, scale and sweep
  grid, or None), the scopes it supports (:meth:`Method.scope_reason`), ``deterministic``;
* ``applicability(model, ws, scope)``: why it cannot run here (None when it can);
* ``prepare(ws, parent, progress)``: load what it needs before training (PGD's p_s);
* input stage: ``sample_weights(labels, ctx)``; model stage: ``extra_batch_classes(ctx)`` (an
  extra batch of ``extra_batch_size`` target-class rows that only shifts BatchNorm statistics),
  ``prepare_model(model, ctx)`` / ``finish_model(model)``; loss stage:
  ``loss(logits, labels, embeddings, ctx)``, with ``joined_batch_classes(ctx)`` (extra
  target-class samples that join every batch and its loss);
* post-hoc: ``apply(probs, preds, ctx, threshold)`` -> the new predictions.

``TargetContext`` carries the repair goal (targets as class-index tuples, ``Y_target``, rho, the
task and the scope). The UI, the CLI and the tests enumerate :func:`list_methods`;
:func:`get_method` raises with the valid names.

Two methods come in two readings, registered side by side: the paper's text as we read it
(``w-bn``, ``w-dbr``) and what the authors' released code runs (``w-bn-code``, ``w-dbr-code``);
each code variant differs from its text variant in one declaration.
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
KINDS = ("baseline", "fine-tuning", "post-hoc")
SCOPES = ("all", "last-block", "head")
SCOPE_HELP = {
    "all": "every layer trains (images decoded once and augmented as tensors)",
    "last-block": "the last stage and the head train; earlier layers are frozen, in eval mode",
    "head": "only the final Linear trains, on the cached embeddings: no image decoding, no backbone pass",
}


@dataclass(frozen=True)
class Param:
    """A method's trade-off parameter.

    Attributes:
        name: "rho" for every WR method.
        default: the value a page starts at.
        low, high: the valid range (inclusive).
        scale: "linear" (slider steps of ``step``) or "log" (a log grid from high to low).
        grid: the values a sweep tries first (WR 4.3).
        help: one line for the UI.
        search: a sweep goes on down the w-os sequence 0.1, 0.01, 0.001, 1e-4 until the target
            error is ``lambda1`` below the baseline's (WR 4.4: the useful scale of a post-hoc
            rho differs between data sets).
    """

    name: str = "rho"
    default: float = 0.5
    low: float = 0.0
    high: float = 1.0
    scale: str = "linear"
    step: float = 0.05
    grid: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    help: str = "1 = plain fine-tuning; smaller puts more weight on the targets"
    search: bool = False

    def validate(self, value: float) -> float:
        value = float(value)
        if not (self.low <= value <= self.high) or value != value:
            raise ValueError(f"{self.name} must be in [{self.low:g}, {self.high:g}], got {value}")
        return value

    def choices(self) -> list[float]:
        """The values a slider offers, from ``high`` down (log scale: 10 per decade + the grid)."""
        if self.scale == "log":
            from diagnostics.wos import rho_grid

            return [float(r) for r in rho_grid(low=self.low)]
        n = int(round((self.high - self.low) / self.step))
        return [round(self.high - i * self.step, 10) for i in range(n + 1)]


@dataclass(frozen=True)
class TargetContext:
    """What a method needs to know about the repair goal.

    Attributes:
        targets: pairs ``(a, b)`` (confusion) or triplets ``(positive, negative, anchor)``
            (bias) of class indices.
        rho: trade-off in [0, 1]; 1 means plain fine-tuning for every WR method.
        num_classes: K.
        task: "single_label" or "multi_label".
        scope: "all", "last-block" or "head".
    """

    targets: tuple[tuple[int, ...], ...]
    rho: float
    num_classes: int
    task: str = "single_label"
    scope: str = "all"

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(tuple(int(c) for c in t) for t in self.targets))
        if not 0.0 <= float(self.rho) <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho}")
        sizes = {len(t) for t in self.targets}
        if not self.targets or sizes not in ({2}, {3}):
            raise ValueError("targets must be one or more pairs, or one or more triplets")
        for t in self.targets:
            if len(set(t)) != len(t) or not all(0 <= c < self.num_classes for c in t):
                raise ValueError(f"bad target {t}: classes must differ and be in [0, {self.num_classes})")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")

    @classmethod
    def of(cls, target, rho: float, task: str, scope: str = "all") -> "TargetContext":
        """From a :class:`workspace.targets.Target`."""
        return cls(target.groups, rho, len(target.class_names), task, scope)

    @property
    def kind(self) -> str:
        return "confusion" if len(self.targets[0]) == 2 else "bias"

    @property
    def classes(self) -> list[int]:
        """``Y_target``: every class named in the targets (WR 3.2.4)."""
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
    kind = "fine-tuning"
    param: Param | None = Param()
    needs_embeddings = False
    #: scope -> why the method cannot use it (absent = supported)
    unsupported_scopes: dict[str, str] = {}
    #: rows of the extra batch of :meth:`extra_batch_classes` (None: the run's batch size)
    extra_batch_size: int | None = None
    #: how many samples of :meth:`joined_batch_classes` join every batch
    joined_batch_size: int = 0

    @property
    def finetunes(self) -> bool:
        return self.kind == "fine-tuning"

    @property
    def post_hoc(self) -> bool:
        return self.kind != "fine-tuning"

    @property
    def deterministic(self) -> bool:
        """Same result for every seed (post-hoc methods): sweeps run them once."""
        return self.post_hoc

    @property
    def uses_rho(self) -> bool:
        return self.param is not None

    @property
    def uses_loop(self) -> bool:
        """Trains through the fine-tuning loop's hooks (False: its own :meth:`train` procedure)."""
        return type(self).train is Method.train

    def scope_reason(self, scope: str) -> str | None:
        """Why the method cannot run at ``scope`` (None when it can; post-hoc ignores scopes)."""
        if scope not in SCOPES:
            return f"scope must be one of {', '.join(SCOPES)}"
        if self.post_hoc:
            return None
        return self.unsupported_scopes.get(scope)

    def applicability(self, model: nn.Module | None = None, ws=None, scope: str = "all") -> str | None:
        """Why the method cannot run here (None when it can)."""
        return self.scope_reason(scope)

    def prepare(self, ws, parent: str, progress=None) -> None:
        """Load what the method needs before training (default: nothing)."""

    def sample_weights(self, labels: np.ndarray, ctx: TargetContext) -> np.ndarray | None:
        return None

    def extra_batch_classes(self, ctx: TargetContext) -> list[int] | None:
        """Classes of an extra batch fed with every regular batch only to shift BatchNorm
        statistics (its rows get no loss); None: no extra batch."""
        return None

    def joined_batch_classes(self, ctx: TargetContext) -> list[int] | None:
        """Classes of ``joined_batch_size`` extra samples appended to every batch: they pass
        through the model with it and count in the loss; None: none."""
        return None

    def prepare_model(self, model: nn.Module, ctx: TargetContext) -> nn.Module:
        return model

    def finish_model(self, model: nn.Module) -> nn.Module:
        return model

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor | None,
             ctx: TargetContext) -> torch.Tensor:
        return base_loss(logits, labels, multi_label=ctx.multi_label)

    def apply(self, probs: np.ndarray, preds: np.ndarray, ctx: TargetContext, *, threshold: float = 0.5):
        """Post-hoc methods: the predictions after the method (default: unchanged)."""
        return preds

    def train(self, ws, ctx: TargetContext, config, *, parent: str, **callbacks):
        """Fine-tuning methods: produce the repaired model (default: the one loop with this method's
        hooks, :func:`repair.loop.finetune`). A method with its own procedure overrides this and
        still trains through :func:`workspace.training.fit`.

        Returns:
            ``(model, history, final_eval_outputs)`` as :func:`repair.loop.finetune` does.
        """
        from repair.loop import finetune

        return finetune(ws, self, ctx, config, parent=parent, **callbacks)


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"repair method {cls.name!r} is unnamed or already registered")
    if cls.stage not in STAGES or cls.kind not in KINDS:
        raise ValueError(f"repair method {cls.name!r}: bad stage {cls.stage!r} or kind {cls.kind!r}")
    _REGISTRY[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str, **config) -> Method:
    if name not in _REGISTRY:
        raise ValueError(f"unknown repair method {name!r}; valid: {', '.join(list_methods())}")
    return _REGISTRY[name](**config)


def baseline_methods() -> tuple[str, str]:
    """The names of the untouched model and of plain fine-tuning (the sweep's reference rows)."""
    return Orig.name, OrigFT.name


@register
class Orig(Method):
    name, stage, kind, param = "orig", "baseline", "baseline", None
    description = "The model as loaded (baseline, no change)."


@register
class OrigFT(Method):
    name, stage, param = "orig-ft", "baseline", None
    description = "Fine-tuned with the plain loss and the same schedule as the others (baseline)."


@register
class WAug(Method):
    name, stage = "w-aug", "input"
    description = "Samples non-target classes with probability scaled by rho (WR 3.2)."

    def sample_weights(self, labels, ctx):
        target = in_classes(np.asarray(labels), ctx.classes, ctx.multi_label)
        return np.where(target, 1.0, float(ctx.rho))


@register
class WBN(Method):
    name, stage = "w-bn", "model"
    description = ("BatchNorm statistics mix rho * regular batch + (1 - rho) * a target-class "
                   "batch; only the regular batch's loss is back-propagated (WR 3.3).")
    unsupported_scopes = {"head": "the head has no BatchNorm layer: w-bn re-weights BatchNorm statistics"}
    #: :data:`repair.wbn.MODES`: "mixed" is the paper's text as we read it
    bn_mode = "mixed"

    def applicability(self, model=None, ws=None, scope="all"):
        return self.scope_reason(scope) or (None if model is None else wbn.not_applicable_reason(model))

    def extra_batch_classes(self, ctx):
        return ctx.classes

    def prepare_model(self, model, ctx):
        reason = wbn.not_applicable_reason(model)
        if reason:
            raise ValueError(reason)
        wbn.patch_model(model, ctx.rho, mode=self.bn_mode)
        return model

    def finish_model(self, model):
        wbn.unpatch_model(model)
        return model


@register
class WBNCode(WBN):
    name, bn_mode, extra_batch_size = "w-bn-code", "code", 128
    description = ("w-bn as the authors' released code runs it: rho only on the running statistics of the last "
                   "three BatchNorm layers (rho * regular + (1 - rho) * target, unbiased variances); the forward "
                   "pass normalises with the regular batch's own statistics; an extra target batch of 128.")


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
                   "(re-picked in every batch from the current argmax; WR 3.5).")

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
    """``P(k)``: mean representation of the batch samples of class k (None if absent).

    In data-parallel training the batch is split over the processes: the sums and counts are
    all-reduced (with gradients), so every rank gets the centroid of the whole global batch.
    """
    mask = labels[:, k] > 0.5 if multi_label else labels == k
    total, count = embeddings[mask].sum(0), mask.sum().to(embeddings.dtype)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.distributed.nn.functional import all_reduce

        total = all_reduce(total)
        count = count.detach().clone()
        torch.distributed.all_reduce(count)
    return total / count if count > 0 else None


@register
class WDBR(Method):
    name, stage, needs_embeddings = "w-dbr", "loss", True
    description = ("rho * loss - (1 - rho) * ||P(A) - P(B)|| (confusion) or + (1 - rho) * "
                   "|D(A,C) - D(B,C)| (bias) on class centroids of penultimate embeddings (WR 3.6); "
                   "at head scope the centroids are of softmax outputs, since cached embeddings do not move.")

    def applicability(self, model=None, ws=None, scope="all"):
        reason = self.scope_reason(scope)
        if reason is None and scope != "head" and ws is not None and ws.capabilities().get("embeddings"):
            reason = "w-dbr needs penultimate-layer embeddings: " + ws.capabilities()["embeddings"]
        return reason

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

    def representation(self, logits: torch.Tensor, embeddings: torch.Tensor | None, ctx: TargetContext):
        """(B, D) the per-sample representation whose class means are compared."""
        if ctx.scope == "head":
            return output_probabilities(logits, ctx)
        if embeddings is None:
            raise ValueError("w-dbr needs embeddings but the model gave none")
        return embeddings

    def loss(self, logits, labels, embeddings, ctx):
        rep = self.representation(logits, embeddings, ctx)
        plain = base_loss(logits, labels, multi_label=ctx.multi_label)
        return ctx.rho * plain + (1 - ctx.rho) * self.distance_term(rep.float(), labels, ctx)


def output_probabilities(logits: torch.Tensor, ctx: TargetContext) -> torch.Tensor:
    """(B, K) softmax (single-label) or sigmoid (multi-label) outputs, in float32."""
    return torch.sigmoid(logits.float()) if ctx.multi_label else torch.softmax(logits.float(), 1)


@register
class WDBRCode(WDBR):
    name, needs_embeddings, joined_batch_size = "w-dbr-code", False, 10
    description = ("w-dbr as the authors' released code runs it: class representation = the mean softmax output "
                   "of the batch's samples of each class, compared by L2 distance, at every scope; 10 extra "
                   "target-class samples join every batch.")

    def applicability(self, model=None, ws=None, scope="all"):
        return self.scope_reason(scope)  # softmax outputs: no embedding layer needed

    def joined_batch_classes(self, ctx):
        return ctx.classes

    def representation(self, logits, embeddings, ctx):
        return output_probabilities(logits, ctx)


@register
class WOS(Method):
    name, stage, kind = "w-os", "output", "post-hoc"
    param = Param(default=0.1, low=1e-4, high=1.0, scale="log", grid=(0.1, 0.01, 0.001, 1e-4), search=True,
                  help="multiplies target-class probabilities of samples predicted as a target class; "
                       "1 = no change (log scale)")
    description = ("Post-hoc: scale target-class probabilities by rho for samples predicted as a "
                   "target class, then decide again (WR 3.4); no new weights.")

    def apply(self, probs, preds, ctx, *, threshold=0.5):
        from diagnostics.wos import apply_wos

        return apply_wos(probs, ctx.targets, ctx.rho, task=ctx.task, threshold=threshold, preds=preds)


@register
class PGD(Method):
    name, stage, param = "pgd", "input", None
    description = ("PGD: resample training data with the gradient-based probability p_s "
                   "(minority samples more often), as a weighted sampler.")

    def __init__(self, probabilities: np.ndarray | None = None):
        self.probabilities = probabilities

    def applicability(self, model=None, ws=None, scope="all"):
        if ws is not None and ws.multi_label:
            return "pgd is not applicable: per-sample gradient scores support single-label workspaces only"
        if ws is not None and ws.capabilities().get("embeddings"):
            return "pgd needs per-sample gradient scores, which need embeddings: " + ws.capabilities()["embeddings"]
        return self.scope_reason(scope)

    def prepare(self, ws, parent: str, progress=None) -> None:
        from diagnostics.run_gradients import train_sampling_probabilities

        self.probabilities = np.asarray(train_sampling_probabilities(ws, parent, progress=progress),
                                        dtype=np.float64)

    def sample_weights(self, labels, ctx):
        if self.probabilities is None:
            raise ValueError("pgd: sampling probabilities were not loaded")
        if len(self.probabilities) != len(labels):
            raise ValueError(f"pgd: {len(self.probabilities)} probabilities for {len(labels)} samples")
        return self.probabilities


ONLY_OWN_LAYERS = "BIR picks its own layer subset on the reserved set (scope all)"


@register
class BIR(Method):
    name, stage = "bir", "input"
    param = Param(name="threshold", default=0.04879016416943205, low=0.0, high=1.0, step=0.01,
                  grid=(0.0, 0.0198, 0.0488, 0.0953, 0.1823),
                  help="s(z) = L(z; phi) - L(z; theta) above which a train sample is detrimental (log 1.05)")
    unsupported_scopes = {"head": ONLY_OWN_LAYERS, "last-block": ONLY_OWN_LAYERS}
    description = ("BIR: a clean reserved set picks the layers that learn from clean data (phi); train samples "
                   "phi finds worse are aligned (an energy step) and soft-relabelled, and those layers are "
                   "retrained on them plus as many others (\"Retaining Beneficial Information from Detrimental "
                   "Data for DNN Repair\", Algorithm 1) until the loss on 10 % held-out train samples stops "
                   "falling, its best epoch kept (theta's weights when none is better). The target is only "
                   "evaluated, not optimised.")

    def applicability(self, model=None, ws=None, scope="all"):
        reason = self.scope_reason(scope)
        if reason is None and ws is not None:
            if ws.multi_label:
                return "bir is not applicable: its losses are single-label cross-entropies"
            if not ws.has_split("reserved") and not any(
                    r["verdict"] == "not mislabelled" for r in ws.store.list_reviews("mislabel")):
                return ("bir needs a clean reserved set: [data] reserved in workspace.toml, or train samples "
                        "confirmed \"not mislabelled\" on the Gradient scores page")
        return reason

    def train(self, ws, ctx, config, *, parent, on_step=None, on_eval=None, should_stop=None, log=None,
              progress=None, phase=None, probe=False):
        from repair.procedures import train_bir

        return train_bir(ws, ctx, config, parent=parent, threshold=float(ctx.rho), on_step=on_step,
                         on_eval=on_eval, should_stop=should_stop, log=log, progress=progress, phase=phase,
                         probe=probe)


@register
class NeuronTune(Method):
    name, stage = "neurontune", "model"
    param = Param(name="lambda", default=0.0, low=0.0, high=1.0, step=0.05, grid=(0.0, 0.1, 0.25, 0.5, 1.0),
                  help="the margin a neuron's delta must exceed in every class to count as spurious")
    unsupported_scopes = {"all": "NeuronTune retrains the last layer only (scope head)",
                          "last-block": "NeuronTune retrains the last layer only (scope head)"}
    description = ("NeuronTune-style (our reading): embedding neurons that fire more on the misclassified than on "
                   "the correct held-out samples of every class are zeroed, and the head is retrained with "
                   "class-balanced sampling, selected by SFit.")

    def applicability(self, model=None, ws=None, scope="all"):
        reason = self.scope_reason(scope)
        if reason is None and ws is not None:
            if ws.multi_label:
                return "neurontune is not applicable on multi-label workspaces"
            if ws.capabilities().get("embeddings"):
                return "neurontune needs embeddings: " + ws.capabilities()["embeddings"]
        return reason

    def train(self, ws, ctx, config, *, parent, on_step=None, on_eval=None, should_stop=None, log=None,
              progress=None, phase=None, probe=False):
        from repair.procedures import train_neurontune

        return train_neurontune(ws, ctx, config, parent=parent, lam=float(ctx.rho), on_step=on_step,
                                on_eval=on_eval, should_stop=should_stop, log=log, progress=progress, phase=phase,
                                probe=probe)


def method_table(model: nn.Module | None = None, ws=None, *, scope: str = "all") -> list[dict]:
    """One row per method: name, stage, kind, parameter, scopes, availability at ``scope``, description."""
    rows = []
    for name in list_methods():
        m = get_method(name)
        reason = m.applicability(model, ws, scope)
        scopes = "-" if m.post_hoc else ", ".join(s for s in SCOPES if m.scope_reason(s) is None)
        not_scopes = "; ".join(f"{s}: {m.scope_reason(s)}" for s in SCOPES
                               if not m.post_hoc and m.scope_reason(s) is not None)
        rows.append({"method": name, "stage": m.stage, "kind": m.kind,
                     "uses_rho": m.uses_rho, "parameter": "-" if m.param is None else
                     f"{m.param.name} in [{m.param.low:g}, {m.param.high:g}] ({m.param.scale})",
                     "scopes": scopes, "not at": not_scopes, "available": reason is None,
                     "reason": reason or "", "description": m.description})
    return rows
