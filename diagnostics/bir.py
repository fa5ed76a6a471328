"""BIR: cause identification and model treatment with a small clean reserved set.

From "Retaining Beneficial Information from Detrimental Data for DNN Repair" (Huang et al.,
section 2, Algorithm 1, Appendix A.2-A.5). Everything here works on a plain ``nn.Module``
and tensors (or batch iterables); every training step goes through
:func:`workspace.training.fit`.

Steps (Algorithm 1):

1. :func:`candidate_subsets`: the pre-defined layer subsets of A.2 built from the model's
   units (:func:`workspace.layers.model_units`): every single unit, the prefixes {1-2} and
   {1-3}, and all units.
2. :func:`identify_layers` (section 2.1.1, A.3): from theta, one epoch of Adam (lr 1e-3,
   batch 16) on the reserved set ``D_r`` for each subset, the rest frozen; the subset with
   the smallest loss is trained on until its loss stops improving: the enhanced model phi.
3. :func:`cause_scores` (Eq. 1): ``s(z) = L(z; phi) - L(z; theta)`` per training sample from
   both models' logits; :func:`select_causes`: ``s > log 1.05`` (A.5) or the top K.
4. :func:`treat` (section 2.2, A.3): each identified sample is aligned by one gradient step
   on the energy ``E(x) = -logsumexp f_phi(x)`` (Eq. 3, 4, eta = 1.0) and relabelled with
   the soft label ``softmax f_phi(x~)`` (Eq. 5); from theta, the selected layers are trained
   on the aligned samples plus as many randomly chosen remaining training samples (with
   their own labels) until the training loss stops falling (or, with held-out samples, until
   their loss stops falling, the best epoch kept: our departure, see :func:`treat`).

:func:`repair_bir` runs the four steps on in-memory tensors.

Where the paper is silent, we chose:

* **Selection loss** ("the training loss estimated after a one-epoch update", A.3): the mean
  cross-entropy over all of ``D_r`` of the model *after* the epoch, evaluated in eval mode.
  The epoch's running loss would average over the states the model passed through and,
  with BatchNorm in train mode, over batch statistics of 16 samples; the post-update loss
  is what the subset reached and is comparable across subsets. Equal losses (e.g. a subset
  whose extra layers get no gradient) go to the subset with fewer parameters.
* **Stopping** ("stopped after no progress on the training loss"): :class:`Patience` on the
  epoch's running training loss (``patience`` epochs, default 2, without an improvement of
  ``1e-4``), with an epoch cap (``max_epochs``).
* **BatchNorm** (``bn``): frozen layers are always in eval mode (their statistics never move).
  In the trained units, ``bn="frozen"`` (default) keeps BatchNorm in eval mode too: its affine
  weights train but its running statistics stay those of the training set. Batches of 16
  from a few hundred reserved samples give noisy statistics, and replacing the running
  statistics would change phi's loss on every training sample for a reason unrelated to
  what ``D_r`` teaches, blurring ``s(z)``. ``bn="train"`` uses batch statistics and updates
  the running statistics of the trained units (plain fine-tuning).
* **Scoring and alignment** run in eval mode (per-sample losses, and the energy gradient of
  one sample does not depend on the others in its batch).
* **Alignment** happens in the model's normalised input space and ``x~`` is not clipped to
  the valid pixel range (Eq. 4 has no projection; the classifier consumes ``x~`` as is).
* **Soft-label loss**: ``-sum_k y~_k log softmax(f(x~))_k`` (cross-entropy with the soft
  label; its gradient equals that of the KL divergence to ``y~``); the remaining samples use
  the same loss with one-hot labels, and the batch loss is the mean over the batch.
* **Remaining samples**: as many as identified ones, drawn uniformly without replacement
  from the other training samples (all of them when there are fewer), seeded.
* **Treatment stop** (``validation``): the paper stops on the training loss; a repair run
  holds out 10 % of the other training samples and stops on their loss instead, keeping the
  best epoch (theta when no epoch beats it). On the shapes demo the training-loss stop ran
  20 epochs and cost 4.9 points of eval accuracy; the held-out stop kept epoch 4 (-3.4).
* Single-label classification only (the paper's losses are softmax cross-entropies).

Memory: in-memory tensors are aligned once and the aligned copies are kept (as large as the
identified inputs: about 12 KB per 32x32 RGB image, 0.6 MB per 224x224 one, so thousands of
224x224 samples need gigabytes). For large images pass ``causes`` (and ``remaining``) to
:func:`treat` as re-iterable batch sources (a ``DataLoader`` of ``(x, y)``): each cause batch
is then aligned on the fly every epoch (one extra forward and backward pass of phi per
batch) and nothing is kept.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from workspace.errors import Cancelled, WorkspaceError
from workspace.layers import Unit, freeze_except, train_mode_setter
from workspace.training import Patience, fit

BN_MODES = ("frozen", "train")
LOG_1_05 = math.log(1.05)  # the threshold A.5 recommends

Progress = Callable[[int, int], None]
StopCheck = Callable[[], bool]
TensorPair = tuple[torch.Tensor, torch.Tensor]
Data = Union[TensorPair, Iterable[TensorPair]]


# ---- layer subsets ------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerSubset:
    """A candidate set of units to update (BIR Appendix A.2).

    Attributes:
        name: readable: a unit's name (``"layer1"``), a prefix (``"conv1+bn1..layer2"``) or
            ``"all"``.
        units: the units, in forward order.
    """

    name: str
    units: tuple[Unit, ...]

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(m for u in self.units for m in u.modules)

    def parameter_names(self, model: nn.Module) -> list[str]:
        return [n for u in self.units for n in u.parameter_names(model)]


def candidate_subsets(units: Sequence[Unit]) -> list[LayerSubset]:
    """The candidate subsets of BIR Appendix A.2 for units ``1..U`` in forward order.

    Each single unit, the prefixes {1-2} and {1-3}, and all units ({1-5} for a ResNet-20:
    8 candidates; 9 for a ResNet-50's 6 units). A prefix equal to all units is listed once,
    as ``"all"``.

    Args:
        units: from :func:`workspace.layers.model_units` (stem, stages, head).

    Returns:
        The subsets: singles first, then the prefixes, then ``"all"``.
    """
    units = list(units)
    if not units:
        raise WorkspaceError("the model has no units to update")
    subsets = [LayerSubset(u.name, (u,)) for u in units]
    for k in (2, 3):
        if k < len(units):
            subsets.append(LayerSubset(f"{units[0].name}..{units[k - 1].name}", tuple(units[:k])))
    if len(units) > 1:
        subsets.append(LayerSubset("all", tuple(units)))
    return subsets


# ---- data -----------------------------------------------------------------------------
def _is_pair(data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


class _Source:
    """Epoch-wise batches of ``(x, y)`` from tensors (shuffled, seeded) or a re-iterable."""

    def __init__(self, data: Data, *, batch_size: int, shuffle: bool, seed: int = 0):
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, seed
        if _is_pair(data):
            x, y = data
            if len(x) != len(y):
                raise ValueError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
            self.tensors: TensorPair | None = (x, y)
            self.iterable = None
            self.n: int | None = len(y)
            self.steps = math.ceil(len(y) / self.batch_size)
        else:
            if iter(data) is data:
                raise TypeError("batch sources must be re-iterable (a DataLoader or a list of batches), "
                                "not a one-shot iterator")
            try:
                self.steps = len(data)  # type: ignore[arg-type]
            except TypeError:
                raise TypeError("batch sources need a len() (the number of batches per epoch)") from None
            self.tensors, self.iterable = None, data
            dataset = getattr(data, "dataset", None)
            self.n = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None

    def __call__(self, epoch: int = 0) -> Iterator[TensorPair]:
        if self.tensors is None:
            for batch in self.iterable:
                yield batch[0], batch[1]
            return
        x, y = self.tensors
        if self.shuffle:
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        else:
            order = torch.arange(len(y))
        for start in range(0, len(y), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield x[idx], y[idx]


def _check_single_label(y: torch.Tensor) -> None:
    if y.ndim != 1:
        raise WorkspaceError("BIR needs single-label data: labels must be class indices (N,), "
                             f"got shape {tuple(y.shape)}")


def _check_choice(name: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise WorkspaceError(f"{name} must be one of {', '.join(valid)}, got {value!r}")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value > 0:
            raise WorkspaceError(f"{name} must be positive, got {value}")


# ---- evaluation ---------------------------------------------------------------------------
@torch.no_grad()
def model_logits(model: nn.Module, data: Data, *, device: torch.device | str = "cpu", batch_size: int = 256,
                 progress: Progress | None = None, should_stop: StopCheck | None = None) -> np.ndarray:
    """Logits of ``model`` in eval mode over ``data`` in its order.

    Args:
        model: already on ``device`` (its train/eval mode is restored after).
        data: ``(x, y)`` tensors ((N, C, H, W) float32 normalised inputs, (N,) labels; the
            labels are ignored) or a re-iterable of ``(x, y, ...)`` batches.

    Returns:
        (N, K) float32.

    Raises:
        Cancelled: ``should_stop()`` returned True.
    """
    device = torch.device(device)
    source = _Source(data, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i, (x, _) in enumerate(source()):
            if should_stop is not None and should_stop():
                raise Cancelled()
            out.append(model(x.to(device)).float().cpu())
            if progress is not None:
                progress(i + 1, source.steps)
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def mean_loss(model: nn.Module, data: Data, *, device: torch.device | str = "cpu", batch_size: int = 256) -> float:
    """Mean cross-entropy of ``model`` (eval mode, already on ``device``) over all of ``data``."""
    device = torch.device(device)
    source = _Source(data, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        for x, y in source():
            y = y.to(device)
            total += float(F.cross_entropy(model(x.to(device)).float(), y, reduction="sum"))
            n += len(y)
    finally:
        model.train(was_training)
    return total / max(n, 1)


# ---- training helpers ---------------------------------------------------------------------
def _mode_setter(model: nn.Module, frozen_modules: list[str], bn: str) -> Callable[[], None]:
    base = train_mode_setter(model, frozen_modules)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]

    def set_mode() -> None:
        base()
        if bn == "frozen":
            for m in norms:
                m.eval()

    return set_mode


def _prepare(model: nn.Module, subset: LayerSubset, device: torch.device, lr: float, bn: str):
    """A trainable copy of ``model``: only ``subset`` has gradients; its Adam optimizer."""
    work = copy.deepcopy(model).to(device)
    names, frozen = freeze_except(work, list(subset.units))
    params = dict(work.named_parameters())
    if not names:
        raise WorkspaceError(f"the layer subset {subset.name!r} has no parameters to train")
    optimizer = torch.optim.Adam([params[n] for n in names], lr=lr)
    return work, optimizer, _mode_setter(work, frozen, bn)


def _hard_loss(model: nn.Module, device: torch.device):
    def loss_fn(batch):
        x, y = batch
        y = y.to(device)
        return F.cross_entropy(model(x.to(device)), y), len(y)

    return loss_fn


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k targets_k log softmax(logits)_k``."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class _Steps:
    """Global progress over several training runs and passes."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, max(int(total), 1), 0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.progress is not None:
            self.progress(self.done, self.total)

    def on_step(self, step: int, total: int, loss: float) -> None:
        self.advance(1)

    def finish(self) -> None:
        self.done = self.total - 1
        self.advance(1)


# ---- step 1: cause identification ----------------------------------------------------------
@dataclass
class Identification:
    """Result of :func:`identify_layers`.

    Attributes:
        subsets: the candidates, in the order tried.
        losses: subset name -> mean cross-entropy over ``D_r`` (eval mode) after one epoch.
        initial_loss: the same loss of theta before any update.
        chosen: the subset with the smallest loss (ties: fewer parameters, then order).
        phi: the enhanced model (a trained copy of theta), eval mode, on CPU.
        phi_loss: its loss over ``D_r`` after the continued training.
        epochs: epochs the chosen subset trained in total (the selection epoch included).
        epoch_losses: running training loss of each of those epochs.
    """

    subsets: list[LayerSubset]
    losses: dict[str, float]
    initial_loss: float
    chosen: LayerSubset
    phi: nn.Module
    phi_loss: float
    epochs: int
    epoch_losses: list[float] = field(default_factory=list)

    def phi_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.phi.state_dict().items()}


def identify_layers(
    model: nn.Module,
    reserved: Data,
    *,
    subsets: Sequence[LayerSubset],
    lr: float = 1e-3,
    batch_size: int = 16,
    patience: int = 2,
    max_epochs: int = 30,
    bn: str = "frozen",
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> Identification:
    """Pick the layer subset and train the enhanced model phi (BIR 2.1.1, Algorithm 1 lines 2-4).

    For every subset, from a copy of theta: one epoch of Adam on ``reserved`` with the other
    layers frozen (in eval mode); the subset with the smallest post-epoch loss over
    ``reserved`` (eval mode, see the module docstring) is trained on, with its optimizer
    state, until the epoch's running loss stops improving for ``patience`` epochs (at most
    ``max_epochs`` epochs in total). With in-memory tensors every candidate sees the same
    batches in the same order (a batch source shuffles as its own sampler does).

    Args:
        model: theta, the trained model (never modified).
        reserved: ``D_r``: ``(x, y)`` tensors ((N, C, H, W) float32 normalised inputs, (N,)
            int64 labels) or a re-iterable of ``(x, y)`` batches (shuffled by its own sampler).
        subsets: candidates, e.g. ``candidate_subsets(model_units(model, example, K))``.
        lr, batch_size: Adam learning rate and batch size (A.3: 1e-3 and 16).
        patience, max_epochs: stopping of the continued training.
        bn: "frozen" (default) or "train": BatchNorm of the trained units (module docstring).
        seed: shuffling of in-memory tensors.
        progress: ``progress(done, total)`` after every step; jumps to the end when the
            training stops early.
        should_stop: checked before every step.

    Returns:
        :class:`Identification`.

    Raises:
        WorkspaceError: no candidates, a bad option, multi-label labels, a subset without
            parameters, a non-finite loss.
        Cancelled: ``should_stop()`` returned True.
    """
    _check_choice("bn", bn, BN_MODES)
    _check_positive(lr=lr, batch_size=batch_size, max_epochs=max_epochs)
    subsets = list(subsets)
    if not subsets:
        raise WorkspaceError("BIR needs at least one candidate layer subset")
    device = torch.device(device)
    source = _Source(reserved, batch_size=batch_size, shuffle=True, seed=seed)
    if source.tensors is not None:
        _check_single_label(source.tensors[1])
    steps = _Steps(progress, (len(subsets) + max_epochs - 1) * source.steps)
    eval_batch = max(batch_size, 256)

    losses: dict[str, float] = {}
    initial = float("nan")
    best = None  # ((loss, n_params, order), subset, model, optimizer, setter, running loss)
    for order, subset in enumerate(subsets):
        work, optimizer, setter = _prepare(model, subset, device, lr, bn)
        if order == 0:  # still an exact copy of theta
            initial = mean_loss(work, reserved, device=device, batch_size=eval_batch)
        running: list[float] = []
        fit(work, source, _hard_loss(work, device), optimizer, epochs=1, steps_per_epoch=source.steps,
            device=device, set_train_mode=setter, on_step=steps.on_step, should_stop=should_stop,
            on_eval=lambda e, s, m: running.append(m) if m is not None else None)
        loss = mean_loss(work, reserved, device=device, batch_size=eval_batch)
        losses[subset.name] = loss
        n_params = sum(p.numel() for p in optimizer.param_groups[0]["params"])
        key = (loss, n_params, order)
        if best is None or key < best[0]:
            best = (key, subset, work, optimizer, setter, running[-1] if running else loss)
        else:
            del work, optimizer

    _, chosen, phi, optimizer, setter, first = best
    stopper = Patience(patience)
    stopper(0, first)
    epoch_losses = [first]
    if max_epochs > 1:
        fit(phi, lambda e: source(e + 1), _hard_loss(phi, device), optimizer, epochs=max_epochs - 1,
            steps_per_epoch=source.steps, device=device, set_train_mode=setter,
            on_step=steps.on_step, should_stop=should_stop, stop_epoch=stopper,
            on_eval=lambda e, s, m: epoch_losses.append(m) if m is not None else None)
    steps.finish()
    phi_loss = mean_loss(phi, reserved, device=device, batch_size=eval_batch)
    for p in phi.parameters():
        p.requires_grad_(True)
    phi = phi.to("cpu").eval()
    return Identification(subsets=subsets, losses=losses, initial_loss=initial, chosen=chosen, phi=phi,
                          phi_loss=phi_loss, epochs=len(epoch_losses), epoch_losses=epoch_losses)


def per_sample_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy of every sample: ``logsumexp(logits) - logits[label]``.

    Args:
        logits: (N, K) float.
        labels: (N,) int class indices.

    Returns:
        (N,) float64.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or labels.shape != (len(z),):
        raise ValueError(f"logits must be (N, K) and labels (N,), got {z.shape} and {labels.shape}")
    top = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return lse - z[np.arange(len(z)), labels]


def cause_scores(logits_theta: np.ndarray, logits_phi: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """BIR Eq. 1: ``s(z) = L(z; phi) - L(z; theta)`` for every training sample.

    A sample the reserved set "disagrees with" (its loss rises once phi has learned from
    ``D_r``) gets a positive score.

    Args:
        logits_theta: (N, K) logits of theta (eval mode).
        logits_phi: (N, K) logits of phi (eval mode), same samples and order.
        labels: (N,) int64 training labels (as given, possibly wrong).

    Returns:
        (N,) float64 scores.
    """
    if np.shape(logits_theta) != np.shape(logits_phi):
        raise ValueError(f"logits of theta and phi differ in shape: {np.shape(logits_theta)} vs "
                         f"{np.shape(logits_phi)}")
    return per_sample_loss(logits_phi, labels) - per_sample_loss(logits_theta, labels)


def select_causes(scores: np.ndarray, *, threshold: float = LOG_1_05, top_k: int | None = None) -> np.ndarray:
    """The identified cause set ``D^_c`` (Algorithm 1 line 6, Appendix A.5).

    Args:
        scores: (N,) from :func:`cause_scores`.
        threshold: keep ``s > threshold``; default ``log(1.05)`` (A.5's recommendation;
            Algorithm 1 uses 0).
        top_k: when given, the ``top_k`` highest scores instead, whatever the threshold (the
            paper's experiments use the true number of corrupted samples).

    Returns:
        (M,) int64 positions, highest score first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        if top_k < 0:
            raise WorkspaceError(f"top_k must be >= 0, got {top_k}")
        return order[: int(top_k)].astype(np.int64)
    return order[scores[order] > threshold].astype(np.int64)


#: above this share of the train split, a threshold selection gets a warning. Measured label-error
#: rates of public datasets are mostly a few percent (Northcutt et al. 2021, "Pervasive Label Errors
#: in Test Sets": CIFAR-10 test 0.08 %, ImageNet validation 5.8 %, CIFAR-100 test 5.9 %, QuickDraw
#: 10.1 %); a share above 10 % is more likely the threshold than the data
MANY_FLAGGED = 0.10


def selection_warning(n_flagged: int, n_total: int, *, phi_loss: float | None = None,
                      theta_loss: float | None = None) -> str | None:
    """A one-paragraph warning when a threshold calls more than :data:`MANY_FLAGGED` of the train
    split detrimental (None otherwise).

    Eq. 1 scores every sample phi is more sure about than theta: a phi that fits the small reserved
    set far better than theta (its loss there much lower) is sharper everywhere, and a fixed
    threshold then also flags clean samples theta was merely unsure of (seen on the shared
    CIFAR-10 ResNet-56: a third of the clean train split above log 1.05). The paper's experiments
    select the true number of corrupted samples (top K); the warning says so.
    """
    if n_total <= 0 or n_flagged / n_total <= MANY_FLAGGED:
        return None
    fit = ""
    if phi_loss is not None and theta_loss is not None:
        fit = (f" phi fitted the reserved set to a loss of {phi_loss:.3f} (the model's: {theta_loss:.3f}), so it is "
               f"more confident than the model on most images, clean ones included.")
    return (f"{n_flagged / n_total:.0%} of the train split is above the threshold, far more than the few percent "
            f"of wrong labels a curated dataset usually has.{fit} Treat the threshold as a ranking: look at the "
            f"highest scores first, or pick *top K* with the number of bad samples you expect (the paper's "
            f"experiments use the true count).")


def sample_remaining(n: int, causes: np.ndarray, *, size: int | None = None, seed: int = 0) -> np.ndarray:
    """Positions of randomly chosen training samples outside the cause set (A.3).

    Args:
        n: training set size.
        causes: (M,) cause positions.
        size: how many (default M); all the others when fewer remain.

    Returns:
        (min(size, n - M),) int64 positions, sorted.
    """
    others = np.setdiff1d(np.arange(n), np.asarray(causes, dtype=np.int64))
    size = len(causes) if size is None else int(size)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(others, size=min(size, len(others)), replace=False)).astype(np.int64)


# ---- step 2: alignment and treatment -------------------------------------------------------
def energy(logits: torch.Tensor) -> torch.Tensor:
    """BIR Eq. 3: ``E(x) = -logsumexp_k f(x)_k`` ((B, K) logits -> (B,))."""
    return -torch.logsumexp(logits, dim=1)


def align_inputs(phi: nn.Module, x: torch.Tensor, *, eta: float = 1.0) -> torch.Tensor:
    """BIR Eq. 4: one gradient step on the energy, ``x~ = x - eta * grad_x E_phi(x)``.

    phi is put in eval mode for the step (restored after) so each sample's gradient is its
    own. Not clipped to the pixel range (module docstring).

    Args:
        phi: the enhanced model.
        x: (B, C, H, W) (or (B, D)) float inputs in the model's normalised space.
        eta: step size (A.3: 1.0).

    Returns:
        ``x~``, same shape, dtype and device as ``x``, detached.
    """
    was_training = phi.training
    phi.eval()
    try:
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(phi(xg)).sum(), xg)
    finally:
        phi.train(was_training)
    return (x.detach() - eta * grad).detach()


@torch.no_grad()
def soft_labels(phi: nn.Module, x_tilde: torch.Tensor) -> torch.Tensor:
    """BIR Eq. 5: ``y~ = softmax(f_phi(x~))`` ((B, K) float32 rows summing to 1), eval mode."""
    was_training = phi.training
    phi.eval()
    try:
        return torch.softmax(phi(x_tilde).float(), dim=1)
    finally:
        phi.train(was_training)


def align_batch(phi: nn.Module, x: torch.Tensor, *, eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy-based alignment of one batch (BIR 2.2): ``(x~, y~)``."""
    x_tilde = align_inputs(phi, x, eta=eta)
    return x_tilde, soft_labels(phi, x_tilde)


def align_samples(phi: nn.Module, data: Data, *, eta: float = 1.0, device: torch.device | str = "cpu",
                  batch_size: int = 256, progress: Progress | None = None,
                  should_stop: StopCheck | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned copies of all of ``data`` on CPU: ``x~`` (N, C, H, W) float32, ``y~`` (N, K) float32.

    ``phi`` must already be on ``device``. Empty data gives empty tensors of shapes (0,), (0, 0).
    ``progress(done, total)`` counts batches (one forward and backward pass of phi each).
    """
    device = torch.device(device)
    source = _Source(data, batch_size=batch_size, shuffle=False)
    xs, ys = [], []
    for i, (x, _) in enumerate(source()):
        if should_stop is not None and should_stop():
            raise Cancelled()
        x_tilde, y_tilde = align_batch(phi, x.to(device), eta=eta)
        xs.append(x_tilde.cpu())
        ys.append(y_tilde.cpu())
        if progress is not None:
            progress(i + 1, source.steps)
    if not xs:  # nothing identified
        return torch.zeros(0), torch.zeros(0, 0)
    return torch.cat(xs), torch.cat(ys)


@dataclass
class Treatment:
    """Result of :func:`treat`.

    Attributes:
        model: the repaired copy of theta (eval mode, CPU).
        subset: the layers that were updated.
        n_treated: aligned (identified) samples; ``n_remaining``: remaining samples mixed in.
        epoch_losses: running training loss of every epoch.
        stopped_early: the loss stopped falling before ``max_epochs``.
        val_losses: with a validation set, its mean loss before training (theta) and after
            every epoch; empty without one.
        best_epoch: with a validation set, the epoch whose weights were kept (0: theta's,
            nothing learned helped on the validation set); None without one.
    """

    model: nn.Module
    subset: LayerSubset
    n_treated: int
    n_remaining: int
    epoch_losses: list[float]
    stopped_early: bool
    val_losses: list[float] = field(default_factory=list)
    best_epoch: int | None = None

    @property
    def epochs(self) -> int:
        return len(self.epoch_losses)


def treat(
    model: nn.Module,
    phi: nn.Module,
    causes: Data,
    remaining: Data,
    *,
    subset: LayerSubset,
    eta: float = 1.0,
    lr: float = 1e-3,
    batch_size: int = 64,
    patience: int = 2,
    max_epochs: int = 30,
    bn: str = "frozen",
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_align: Progress | None = None,
    max_steps: int | None = None,
    validation: Data | None = None,
    should_stop: StopCheck | None = None,
) -> Treatment:
    """Model treatment (BIR 2.2, Algorithm 1 lines 7-8, Appendix A.3).

    The identified samples are aligned with phi (:func:`align_batch`: Eq. 4 then Eq. 5);
    from a copy of theta, only ``subset`` is trained (Adam) on the aligned samples with
    their soft labels together with ``remaining`` with their own labels, until the epoch's
    running loss stops falling for ``patience`` epochs (at most ``max_epochs``).

    With ``validation`` (our departure from A.3, which stops on the training loss): the
    mean cross-entropy on those held-out samples (their own labels, eval mode) is measured
    before training and after every epoch; training stops once it has not improved for
    ``patience`` epochs and the weights of its best epoch are kept, theta's own when no
    epoch beat it. The paper's stop lets a few thousand mostly clean samples, trained for
    tens of epochs, overfit (on the demo it cost 5 points of accuracy); A.3 holds out 10 %
    of the training data for the base model's early stopping, and we do the same here.

    Args:
        model: theta (never modified).
        phi: the enhanced model from :func:`identify_layers` (never modified).
        causes: the identified samples ``(x, y)`` (their labels are replaced by soft
            labels), tensors or a re-iterable of batches.
        remaining: the randomly chosen remaining samples ``(x, y)`` (see
            :func:`sample_remaining`), of the same kind as ``causes``.
        subset: the layers to update (``Identification.chosen``).
        eta: alignment step (A.3: 1.0).
        lr, batch_size: Adam learning rate (1e-3) and batch size (A.3: 16 for MNIST, 64 for
            CIFAR-10). Tensors: aligned and remaining samples are shuffled together. Batch
            sources: each step joins the next batch of each (an epoch ends with the shorter).
        bn: "frozen" or "train" (module docstring).
        on_step: ``on_step(step, total, loss)`` after every step (a run's live loss curve).
        on_align: ``on_align(done, total)`` over the batches of the up-front alignment of
            in-memory ``causes`` (thousands of samples take minutes on a CPU).
        max_steps: stop after this many steps (a quick run's budget; early stopping aside).
        validation: held-out ``(x, y)`` (tensors or a re-iterable of batches) for the
            stopping and the choice of epoch above; None: the paper's training-loss stop.

    Returns:
        :class:`Treatment`.

    Raises:
        WorkspaceError: a bad option, an empty treatment set, a non-finite loss.
        Cancelled: ``should_stop()`` returned True.
    """
    _check_choice("bn", bn, BN_MODES)
    _check_positive(lr=lr, batch_size=batch_size, max_epochs=max_epochs)
    device = torch.device(device)
    phi = copy.deepcopy(phi).to(device).eval()
    for p in phi.parameters():
        p.requires_grad_(False)  # only the input gets a gradient in the energy step
    work, optimizer, setter = _prepare(model, subset, device, lr, bn)

    if _is_pair(causes) and _is_pair(remaining):
        _check_single_label(causes[1])
        _check_single_label(remaining[1])
        x_tilde, y_tilde = align_samples(phi, causes, eta=eta, device=device, progress=on_align,
                                         should_stop=should_stop)
        x_rest, y_rest = remaining
        inputs, targets = [], []
        if len(y_tilde):
            inputs.append(x_tilde)
            targets.append(y_tilde)
        if len(y_rest):
            with torch.no_grad():
                k = y_tilde.shape[1] if len(y_tilde) else phi(x_rest[:1].to(device)).shape[1]
            inputs.append(x_rest.float())
            targets.append(F.one_hot(y_rest.long(), k).float())
        if not inputs:
            raise WorkspaceError("BIR treatment needs at least one identified or remaining sample")
        inputs, targets = torch.cat(inputs), torch.cat(targets)
        source = _Source((inputs, targets), batch_size=batch_size, shuffle=True, seed=seed)
        n_treated, n_remaining = len(y_tilde), len(y_rest)
        batches = source
        steps_per_epoch = source.steps

        def loss_fn(batch):
            x, t = batch
            return _soft_cross_entropy(work(x.to(device)), t.to(device)), len(t)
    else:
        if _is_pair(causes) or _is_pair(remaining):
            raise TypeError("causes and remaining must both be tensors or both be batch sources")
        cause_src = _Source(causes, batch_size=batch_size, shuffle=True, seed=seed)
        rest_src = _Source(remaining, batch_size=batch_size, shuffle=True, seed=seed + 1)
        steps_per_epoch = min(cause_src.steps, rest_src.steps)
        n_treated, n_remaining = cause_src.n or 0, rest_src.n or 0

        def batches(epoch):
            for (xc, _), (xr, yr) in zip(cause_src(epoch), rest_src(epoch)):
                yield xc, xr, yr

        def loss_fn(batch):
            xc, xr, yr = batch
            with torch.autocast(device.type, enabled=False):  # the energy step in full precision
                xc_tilde, yc_tilde = align_batch(phi, xc.to(device).float(), eta=eta)
            x = torch.cat([xc_tilde, xr.to(device).to(xc_tilde.dtype)])
            t = torch.cat([yc_tilde, F.one_hot(yr.to(device).long(), yc_tilde.shape[1]).float()])
            return _soft_cross_entropy(work(x), t), len(t)

    if steps_per_epoch == 0:
        raise WorkspaceError("BIR treatment needs at least one identified or remaining sample")
    total = max_epochs * steps_per_epoch if max_steps is None else min(max_epochs * steps_per_epoch, int(max_steps))
    steps = _Steps(progress, total)

    def stepped(step: int, total: int, loss: float) -> None:
        steps.on_step(step, total, loss)
        if on_step is not None:
            on_step(step, total, loss)

    epoch_losses: list[float] = []
    val_losses: list[float] = []
    best: dict = {}
    eval_batch = max(batch_size, 256)

    def validate() -> None:
        loss = mean_loss(work, validation, device=device, batch_size=eval_batch)
        if not math.isfinite(loss):
            raise WorkspaceError(f"the validation loss became {loss} in the BIR treatment")
        val_losses.append(loss)
        if not best or loss < best["loss"] - 1e-4:
            best.update(loss=loss, epoch=len(val_losses) - 1,
                        state={k: v.detach().clone() for k, v in work.state_dict().items()})

    def on_eval(epoch: float, step: int, mean: float | None) -> None:
        if mean is not None:
            epoch_losses.append(mean)
        if validation is not None:
            validate()

    if validation is not None:
        validate()  # theta itself is a candidate: epoch 0
        stopper = Patience(patience)
        stopper(0, val_losses[0])

        def stop_epoch(epoch: int, mean: float) -> bool:
            return stopper(epoch + 1, val_losses[-1])
    else:
        stop_epoch = Patience(patience)
    result = fit(work, batches, loss_fn, optimizer, epochs=max_epochs, steps_per_epoch=steps_per_epoch,
                 device=device, set_train_mode=setter, max_steps=max_steps, on_step=stepped, should_stop=should_stop,
                 stop_epoch=stop_epoch, on_eval=on_eval)
    steps.finish()
    if validation is not None:
        work.load_state_dict(best["state"])
    for p in work.parameters():
        p.requires_grad_(True)
    return Treatment(model=work.to("cpu").eval(), subset=subset, n_treated=n_treated, n_remaining=n_remaining,
                     epoch_losses=epoch_losses, stopped_early=result.stopped_early, val_losses=val_losses,
                     best_epoch=best.get("epoch"))


# ---- everything, on in-memory tensors ---------------------------------------------------------
@dataclass
class BIRResult:
    """Result of :func:`repair_bir`.

    Attributes:
        identification: layer selection and phi.
        scores: (N,) float64 ``s(z)`` of every training sample.
        causes: (M,) int64 identified positions, highest score first.
        remaining: (R,) int64 positions of the remaining samples mixed into the treatment.
        treatment: the repaired model and its training record.
    """

    identification: Identification
    scores: np.ndarray
    causes: np.ndarray
    remaining: np.ndarray
    treatment: Treatment


def repair_bir(
    model: nn.Module,
    train: TensorPair,
    reserved: TensorPair,
    *,
    subsets: Sequence[LayerSubset],
    threshold: float = LOG_1_05,
    top_k: int | None = None,
    eta: float = 1.0,
    lr: float = 1e-3,
    identify_batch_size: int = 16,
    treat_batch_size: int = 64,
    patience: int = 2,
    max_epochs: int = 30,
    bn: str = "frozen",
    logits_theta: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> BIRResult:
    """BIR Algorithm 1 end to end on in-memory tensors.

    Args:
        model: theta (never modified).
        train: ``(x, y)``: (N, C, H, W) float32 normalised inputs, (N,) int64 labels.
        reserved: ``D_r`` in the same form.
        subsets: candidate layer subsets (:func:`candidate_subsets`).
        threshold, top_k: cause selection (:func:`select_causes`).
        logits_theta: (N, K) theta's eval-mode logits on ``train`` if already computed (the
            inference cache), else computed here.
        max_epochs: cap of both the continued phi training and the treatment.
        Others: as in :func:`identify_layers` and :func:`treat`.

    Returns:
        :class:`BIRResult`.
    """
    x, y = train
    _check_single_label(y)
    weights = (4, 1, 1, 4)  # rough share of the time per stage, for one progress bar

    def stage(i: int) -> Progress | None:
        if progress is None:
            return None
        start = sum(weights[:i])
        return lambda d, t: progress(int(1000 * (start + weights[i] * d / max(t, 1)) / sum(weights)), 1000)

    ident = identify_layers(model, reserved, subsets=subsets, lr=lr, batch_size=identify_batch_size,
                            patience=patience, max_epochs=max_epochs, bn=bn, device=device, seed=seed,
                            progress=stage(0), should_stop=should_stop)
    if logits_theta is None:
        theta = copy.deepcopy(model).to(device)
        logits_theta = model_logits(theta, train, device=device, progress=stage(1), should_stop=should_stop)
        del theta
    logits_phi = model_logits(ident.phi.to(device), train, device=device, progress=stage(2),
                              should_stop=should_stop)
    ident.phi.to("cpu")
    scores = cause_scores(logits_theta, logits_phi, y.numpy())
    causes = select_causes(scores, threshold=threshold, top_k=top_k)
    rest = sample_remaining(len(y), causes, seed=seed)
    ci, ri = torch.from_numpy(np.sort(causes)), torch.from_numpy(rest)
    treatment = treat(model, ident.phi, (x[ci], y[ci]), (x[ri], y[ri]), subset=ident.chosen, eta=eta, lr=lr,
                      batch_size=treat_batch_size, patience=patience, max_epochs=max_epochs, bn=bn,
                      device=device, seed=seed, progress=stage(3), should_stop=should_stop)
    return BIRResult(identification=ident, scores=scores, causes=causes, remaining=rest, treatment=treatment)
