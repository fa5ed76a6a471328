"""Per-sample gradient scores (PGD paper section 4) and the noisy-label split (section 5).

Every training sample ``i`` gets the gradient ``g_i`` of its cross-entropy loss with
respect to the chosen parameters of a "biased" model (by default the loaded model; a GCE
model from :mod:`diagnostics.gce` on request):

* ``params="last"`` (default): the final classifier only. For an ``nn.Linear`` head fed by
  the embedding ``e_i`` the gradient has the exact closed form
  ``(softmax(z_i) - onehot(y_i)) (outer) [e_i, 1]`` (weight rows then bias), computed from the
  cached inference outputs without running the model. When the cached embedding is not the
  head's input, the same gradient is taken with ``torch.func`` (``vmap`` over ``grad``).
* ``params="all"``: every parameter, with ``torch.func.functional_call`` + ``vmap(grad)``
  in chunks (equal to a per-sample loop to 1e-5, see the tests), reduced to the ``k``
  dimensions with the largest summed ``|g|`` over the split (two passes: sum ``|g|``, then gather those dimensions), so memory stays ``O(chunk x P)``.

Scores (:func:`gradient_scores`, per class, PGD section 4.1) and the compensated-loss
noise split (:func:`noise_split`) are pure NumPy functions of the gradients and outputs.
For the last layer, :func:`last_layer_scores` gives the same scores straight from the
outputs without storing any gradient (``O(K (D + 1))`` memory instead of ``N K (D + 1)``),
for ImageNet-sized label spaces; both it and :func:`compensated_loss` read ``np.memmap``
inputs in row blocks.
:func:`train_sampling_probabilities` is the contract the pgd repair uses.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from workspace.cache import InferenceOutputs
from workspace.errors import WorkspaceError

Progress = Callable[[int, int], None]
PARAM_CHOICES = ("last", "all")
BIASED_CHOICES = (None, "gce")
SCORE_COLUMNS = ["index", "label", "pred", "grad_norm", "M", "D", "S", "p_s", "comp_loss", "noisy"]
# the exported CSV: the columns, then the natural log of p_s, exact where p_s underflows
# (with lambda = 1 the vMF direction score spans hundreds of orders of magnitude)
CSV_COLUMNS = SCORE_COLUMNS + ["log_p_s"]
EPS = 1e-12
SCORES_VERSION = 4  # bump when a formula changes: invalidates cached score tables


# ---- per-sample gradients ----------------------------------------------------------------
def last_layer_gradients(probs: np.ndarray, labels: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Exact per-sample gradients of the CE loss w.r.t. a final ``nn.Linear`` (weight, bias).

    For ``z = W e + b`` and ``L = CE(z, y)``: ``dL/dW = (p - onehot(y)) e^T`` and
    ``dL/db = p - onehot(y)``, with ``p = softmax(z)``.

    Args:
        probs: (N, K) float softmax probabilities.
        labels: (N,) int class indices.
        embeddings: (N, D) float inputs of the classifier.

    Returns:
        (N, K * D + K) float32: the flattened weight gradient (row-major, as
        ``weight.reshape(-1)``) followed by the bias gradient.
    """
    probs = np.asarray(probs, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    n, k = probs.shape
    if labels.shape != (n,) or emb.shape[0] != n:
        raise ValueError(f"shapes do not match: probs {probs.shape}, labels {labels.shape}, embeddings {emb.shape}")
    delta = probs.copy()
    delta[np.arange(n), labels] -= 1.0  # (N, K)
    weight = delta[:, :, None] * emb[:, None, :]  # (N, K, D)
    return np.concatenate([weight.reshape(n, -1), delta], axis=1)


def _loss_fn(task: str):
    if task == "multi_label":
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(out, y.float(), reduction="sum")
    return lambda out, y: nn.functional.cross_entropy(out, y)


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         names: list[str] | None = None, task: str = "single_label") -> torch.Tensor:
    """Per-sample loss gradients of one batch with ``torch.func`` (``vmap`` over ``grad``).

    The model runs as it is (use eval mode: BatchNorm then uses its running statistics,
    which is also what makes the per-sample gradients well defined).

    Args:
        x: (B, ...) inputs; y: (B,) int labels (or (B, K) multi-hot for multi-label).
        names: parameter names to differentiate (default: all trainable parameters).

    Returns:
        (B, P) float32, the parameters concatenated in ``names`` order, each flattened.
    """
    from torch.func import functional_call, grad, vmap

    all_params = dict(model.named_parameters())
    names = list(all_params) if names is None else list(names)
    missing = [n for n in names if n not in all_params]
    if missing:
        raise WorkspaceError(f"the model has no parameter {missing[0]!r}")
    params = {n: all_params[n].detach() for n in names}
    # the other parameters enter as constants, so no graph is built for them
    buffers = {**{n: b.detach() for n, b in model.named_buffers()},
               **{n: q.detach() for n, q in all_params.items() if n not in params}}
    loss = _loss_fn(task)

    def sample_loss(p, xi, yi):
        out = functional_call(model, ({**p}, buffers), (xi.unsqueeze(0),), strict=False)
        return loss(out, yi.unsqueeze(0))

    grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([grads[n].reshape(x.shape[0], -1) for n in names], dim=1).detach()


def loop_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, names: list[str] | None = None,
                   task: str = "single_label") -> torch.Tensor:
    """The same gradients as :func:`per_sample_gradients`, one backward pass per sample.

    The slow reference used by the tests and the benchmark.
    """
    all_params = dict(model.named_parameters())
    names = list(all_params) if names is None else list(names)
    loss = _loss_fn(task)
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i:i + 1])
        gs = torch.autograd.grad(loss(out, y[i:i + 1]), [all_params[n] for n in names])
        rows.append(torch.cat([g.reshape(-1) for g in gs]).detach())
    return torch.stack(rows)


def _check_python_model(model: nn.Module) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise WorkspaceError("per-sample gradients need a Python model (torch.func cannot differentiate a "
                             "TorchScript module); use a torchvision or factory model")


def classifier_names(model: nn.Module, layer: str) -> list[str]:
    """Parameter names of the classifier module ``layer`` (its weight and bias)."""
    return [f"{layer}.{n}" for n, _ in dict(model.named_modules())[layer].named_parameters()]


def model_gradients(model: nn.Module, loader, *, names: list[str] | None = None, k: int | None = None,
                    task: str = "single_label", device: torch.device | str = "cpu",
                    progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample gradients over a loader of ``(x, index, ok)`` with labels attached.

    Args:
        loader: yields ``(x, index, ok)``; ``loader.labels`` are the split's labels by index.
        names: parameters to differentiate (default all).
        k: keep only the ``k`` dimensions with the largest summed ``|g|`` over all samples
            (two passes over the data). None keeps every dimension (only sensible for a
            small parameter set such as the classifier).
        progress: ``progress(done, total)``; raise from it to cancel.

    Returns:
        ``(grads, indices)``: (N, P or k) float32 and the (N,) split positions of the rows
        (images that failed to load are left out).
    """
    _check_python_model(model)
    device = torch.device(device)
    model = model.to(device).eval()
    labels_all = torch.as_tensor(np.asarray(loader.labels))
    passes = 1 if k is None else 2
    total = passes * len(loader.dataset)
    done = 0

    def batches():
        nonlocal done
        for x, index, ok in loader:
            ok = ok.bool()
            x, index = x[ok], index[ok]
            if len(index):
                yield x.to(device), labels_all[index].to(device), index
            done += len(ok)
            if progress is not None:
                progress(done, total)

    if k is None:
        rows, idx = [], []
        for x, y, index in batches():
            rows.append(per_sample_gradients(model, x, y, names=names, task=task).cpu())
            idx.append(index)
        if not rows:
            raise WorkspaceError("none of the images could be loaded")
        return torch.cat(rows).numpy(), torch.cat(idx).numpy().astype(np.int64)
    total_abs = None
    for x, y, _ in batches():  # pass 1: summed |g| per dimension
        s = per_sample_gradients(model, x, y, names=names, task=task).abs().sum(0, dtype=torch.float64)
        total_abs = s if total_abs is None else total_abs + s
    if total_abs is None:
        raise WorkspaceError("none of the images could be loaded")
    keep = torch.topk(total_abs, min(int(k), total_abs.numel())).indices.to(device)
    rows, idx = [], []
    for x, y, index in batches():  # pass 2: gather the k dominant dimensions
        rows.append(per_sample_gradients(model, x, y, names=names, task=task)[:, keep].cpu())
        idx.append(index)
    return torch.cat(rows).numpy(), torch.cat(idx).numpy().astype(np.int64)


# ---- scores (PGD section 4.1 / 4.2) --------------------------------------------------------
def _logsumexp(x: np.ndarray) -> float:
    top = float(np.max(x))
    return top + float(np.log(np.exp(x - top).sum()))


def log_magnitude_scores(norms: np.ndarray) -> np.ndarray:
    """``log M(i)``, ``M(i) = (1/||g_i||) / sum_j (1/||g_j||)`` over one class. (N,) -> (N,)."""
    neg_log = -np.log(np.maximum(np.asarray(norms, dtype=np.float64), EPS))
    return neg_log - _logsumexp(neg_log)


def magnitude_scores(norms: np.ndarray) -> np.ndarray:
    """``M(i) = (1/||g_i||) / sum_j (1/||g_j||)`` over one class. (N,) -> (N,), sums to 1."""
    return np.exp(log_magnitude_scores(norms))


def vmf_fit(directions: np.ndarray) -> tuple[np.ndarray, float]:
    """Approximate MLE of a von Mises-Fisher fit (PGD Appendix G, Banerjee et al. 2005).

    Args:
        directions: (N, d) unit vectors.

    Returns:
        ``(u, kappa)``: mean direction ``sum v / ||sum v||`` and
        ``kappa = r (d - r^2) / (1 - r^2)`` with ``r = ||sum v|| / N`` (capped when r -> 1).
    """
    v = np.asarray(directions, dtype=np.float64)
    n, d = v.shape
    total = v.sum(axis=0)
    length = float(np.linalg.norm(total))
    if length < EPS:
        return np.zeros(d), 0.0  # no preferred direction: uniform on the sphere
    r = min(length / n, 1.0 - 1e-9)
    return total / length, r * (d - r * r) / (1.0 - r * r)


def log_direction_scores(grads: np.ndarray) -> np.ndarray:
    """``log D(i)``, ``D(i) = p_dir(i) / sum_j p_dir(j)``, ``p_dir`` the vMF density of ``g_i/||g_i||``.

    ``log p_dir(i) = kappa u.v_i + const`` normalised with a log-sum-exp. In high dimension
    ``kappa`` is large (hundreds), so ``D`` itself underflows for most samples: rank and
    combine scores in log space.
    """
    g = np.asarray(grads, dtype=np.float64)
    v = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), EPS)
    u, kappa = vmf_fit(v)
    logp = kappa * (v @ u)
    return logp - _logsumexp(logp)


def direction_scores(grads: np.ndarray) -> np.ndarray:
    """``D(i)`` over one class: (N, P) -> (N,), sums to 1; highest for the sample closest to
    the mean direction."""
    return np.exp(log_direction_scores(grads))


def log_aggregate_scores(log_m: np.ndarray, log_d: np.ndarray, *, lam: float = 1.0) -> np.ndarray:
    """``log S`` for the weighted harmonic mean ``S = (1 + lam^2) M D / (lam^2 M + D)``.

    PGD section 4.2 (F-beta form): ``1/S = (1/M + lam^2/D) / (1 + lam^2)``. ``lam = 1`` is
    the plain harmonic mean, ``lam = 0`` gives ``S = M``, large ``lam`` tends to ``D``.
    """
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    log_m, log_d = np.asarray(log_m, dtype=np.float64), np.asarray(log_d, dtype=np.float64)
    log_l2 = 2.0 * np.log(lam) if lam > 0 else -np.inf
    return np.log1p(lam ** 2) + log_m + log_d - np.logaddexp(log_l2 + log_m, log_d)


def aggregate_scores(m: np.ndarray, d: np.ndarray, *, lam: float = 1.0) -> np.ndarray:
    """``S = (1 + lam^2) M D / (lam^2 M + D)`` in linear space (see :func:`log_aggregate_scores`)."""
    with np.errstate(divide="ignore"):
        return np.exp(log_aggregate_scores(np.log(m), np.log(d), lam=lam))


def _score_frame(norms: np.ndarray, log_m: np.ndarray, log_d: np.ndarray, log_scale: np.ndarray, *,
                 lam: float) -> pd.DataFrame:
    """The score table from per-sample gradient norms and log M, log D and the class-size log
    scale: S, then ``p_s = min_j S'(j) / S'(i)`` with ``S' = S x class size`` (see
    :func:`gradient_scores`), floored at the smallest positive double."""
    n = len(norms)
    log_s = log_aggregate_scores(log_m, log_d, lam=lam)
    log_cmp = log_s + log_scale
    log_p = (log_cmp.min() - log_cmp) if n else log_cmp
    p_s = np.maximum(np.exp(log_p), np.finfo(np.float64).tiny)
    return pd.DataFrame({"grad_norm": norms, "M": np.exp(log_m), "D": np.exp(log_d), "S": np.exp(log_s),
                         "p_s": p_s, "log_p_s": log_p, "log_M": log_m, "log_D": log_d, "log_S": log_s})


def gradient_scores(grads: np.ndarray, labels: np.ndarray, *, lam: float = 1.0,
                    balance_classes: bool = True) -> pd.DataFrame:
    """M, D, S and p_s of every sample, computed per class (PGD paper, section 4).

    Everything is computed in log space; ``p_s = min_j S(j) / S(i)``.

    Args:
        grads: (N, P) per-sample gradients.
        labels: (N,) int class indices (the given, possibly noisy, labels).
        lam: the balance lambda of the harmonic mean (default 1).
        balance_classes: M and D sum to 1 within each class, so a class's scores scale with
            1/N_c. With True (default) ``S`` is multiplied by the class size before taking
            ``p_s``, so rejection sampling keeps the class proportions; for equal class
            sizes this is exactly the paper's ``p_s``. False: the formula as written (with
            unequal classes, large classes would be favoured).

    Returns:
        DataFrame, one row per sample in input order: ``grad_norm, M, D, S, p_s`` and
        their natural logs ``log_p_s, log_M, log_D, log_S`` (exact where D, S or p_s
        underflow; p_s is floored at the smallest positive double so it stays in (0, 1]).
    """
    grads = np.asarray(grads, dtype=np.float64)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise WorkspaceError("gradient scores are defined per class for single-label data; "
                             "multi-label workspaces are not supported")
    if len(grads) != len(labels):
        raise ValueError(f"{len(grads)} gradients but {len(labels)} labels")
    n = len(labels)
    norms = np.linalg.norm(grads, axis=1)
    log_m, log_d, log_scale = np.zeros(n), np.zeros(n), np.zeros(n)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        log_m[rows] = log_magnitude_scores(norms[rows])
        log_d[rows] = log_direction_scores(grads[rows])
        log_scale[rows] = np.log(len(rows)) if balance_classes else 0.0
    return _score_frame(norms, log_m, log_d, log_scale, lam=lam)


# ---- the same scores without storing any gradient (last layer, closed form) -----------------
#: A class with at most this many rows is scored through its two (n, n) Gram matrices;
#: a larger one through its (K, D + 1) gradient sum, in row chunks (bounded memory).
GRAM_ROWS = 4096


def _file_of(array: np.ndarray):
    """``(path, byte offset of array[0, 0])`` of a read-only ``np.memmap`` whose rows are
    contiguous, else None."""
    import mmap

    mm = getattr(array, "_mmap", None)
    if (not isinstance(mm, mmap.mmap) or getattr(array, "mode", "") != "r" or array.ndim != 2
            or array.strides[1] != array.itemsize or array.strides[0] < 0 or not array.filename):
        return None
    view = np.frombuffer(mm, dtype=np.uint8)                     # the mapping's first byte
    mapped_from = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY  # as np.memmap maps it
    return array.filename, array.ctypes.data - view.ctypes.data + mapped_from


class _RowReader:
    """Rows of an (N, C) array, read without keeping a whole memory-mapped file resident.

    Pages read through a mapping count as this process's resident memory (on recent
    kernels a whole large folio per touched row), so gathering scattered rows of an 8 GB
    ``np.memmap`` shows 8 GB resident. A read-only memmap is therefore read with
    ``os.preadv`` from its file (the OS page cache still serves repeated reads); any other
    array is indexed directly.
    """

    def __init__(self, array: np.ndarray):
        self.array = array
        found = _file_of(array)
        self.fd = os.open(found[0], os.O_RDONLY) if found else None
        self.offset = found[1] if found else 0

    def take(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C) in the array's dtype; ``rows`` ascending."""
        if self.fd is None:
            return np.asarray(self.array[rows])
        out = np.empty((len(rows), self.array.shape[1]), dtype=self.array.dtype)
        # one read per run of consecutive rows
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        firsts, lasts = np.r_[0, breaks], np.r_[breaks, len(rows)]
        stride, width = self.array.strides[0], out.shape[1] * out.itemsize
        if stride != width:
            for first, last in zip(firsts.tolist(), lasts.tolist()):
                self._read(int(rows[first]), out[first:last])
            return out
        # the rows are byte ranges: one pread each, in a tight loop (a class's rows are
        # scattered, so this is a syscall per row; a short read finishes in _pread)
        view, fd = memoryview(out.reshape(-1).view(np.uint8)), self.fd
        ats = (self.offset + rows[firsts].astype(np.int64) * stride).tolist()
        for first, last, at in zip((firsts * width).tolist(), (lasts * width).tolist(), ats):
            part = view[first:last]
            got = os.preadv(fd, [part], at)
            if got != last - first:
                self._pread(part[max(got, 0):], at + max(got, 0))
        return out

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (clipped to the array), in the array's dtype."""
        if self.fd is None:
            return np.asarray(self.array[start:stop])
        out = np.empty((max(0, min(stop, len(self.array)) - start), self.array.shape[1]), dtype=self.array.dtype)
        if len(out):
            self._read(start, out)
        return out

    def _read(self, row: int, out: np.ndarray) -> None:
        stride, width = self.array.strides[0], out.shape[1] * out.itemsize
        if stride == width:                                      # the rows are one byte range
            self._pread(memoryview(out.reshape(-1).view(np.uint8)), self.offset + row * stride)
        else:
            for j in range(len(out)):
                self._pread(memoryview(out[j].view(np.uint8)), self.offset + (row + j) * stride)

    def _pread(self, buffer: memoryview, at: int) -> None:
        while len(buffer):
            got = os.preadv(self.fd, [buffer], at)
            if got <= 0:
                raise OSError(f"could not read {self.array.filename} at byte {at}")
            buffer, at = buffer[got:], at + got

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _class_rows(probs: _RowReader, embeddings: _RowReader, rows: np.ndarray, c: int):
    """``a_i = p_i - onehot(c)`` (n, K) and ``e_i`` (n, D), float64, for the given rows."""
    a = probs.take(rows).astype(np.float64)
    e = embeddings.take(rows).astype(np.float64)
    a[:, c] -= 1.0
    return a, e


def _low_precision(x: np.ndarray) -> bool:
    """Whether ``x`` is stored in float32 or narrower, so its products may run in float32."""
    return np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize <= 4


def _error_gram(p: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """``a_i . a_j`` and ``||a_i||^2`` for ``a_i = p_i - onehot(c)``: (n, K) -> (n, n), (n,) float64.

    Float64 probabilities: in float64. Float32 or float16 ones: ``a_i . a_j =
    (1 - p_ic)(1 - p_jc) + sum_{k != c} p_ik p_jk``, the first term exact in float64 and the
    sum (non-negative terms, so no cancellation: relative error about ``eps_32``) in float32.
    The diagonal is exact.
    """
    if not _low_precision(p):
        a = np.asarray(p, dtype=np.float64).copy()
        a[:, c] -= 1.0
        sq = np.einsum("ij,ij->i", a, a)
        gram = a @ a.T
    else:
        q = np.array(p, dtype=np.float32)               # a copy: its column c is zeroed
        own = q[:, c].astype(np.float64) - 1.0          # a_ic, exact
        q[:, c] = 0.0
        sq = np.einsum("ij,ij->i", q, q, dtype=np.float64) + own * own
        gram = np.multiply.outer(own, own)
        gram += q @ q.T
    np.fill_diagonal(gram, sq)
    return gram, sq


def _embedding_gram(e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[e_i; 1] . [e_j; 1] = G_ij + h_i + h_j`` for one class's embeddings, and ``||e_i||^2``.

    Float64 embeddings: ``G = E E^T`` in float64 and ``h = 1/2``. Embeddings stored in
    float32 or float16 (as the inference cache stores them): ``G`` runs in float32 (sgemm,
    twice the speed of dgemm; at K = 1,000, D = 2,048 it is two thirds of the work), on
    the rows less the class mean ``m`` (rounded to float32) when ``m`` carries more than
    half of their squared norm, as with ReLU features: float32 then rounds the products of
    the spread only (error about ``eps_32 |e_i - m| |e_j - m|`` instead of
    ``eps_32 |e_i| |e_j|``), and the mean's terms ``h_i = m . (e_i - m) + (m . m + 1) / 2``
    are float64. ``G``'s diagonal is rounded; ``||e_i||^2`` is exact.

    Args:
        e: (n, D) float embeddings.

    Returns:
        ``(G, h, sq)``: (n, n) float32 or float64, (n,) float64, (n,) float64.
    """
    if not _low_precision(e):
        e = np.asarray(e, dtype=np.float64)
        return e @ e.T, np.full(len(e), 0.5), np.einsum("ij,ij->i", e, e)
    e = np.asarray(e, dtype=np.float32)                 # float16 -> float32 is exact
    sq = np.einsum("ij,ij->i", e, e, dtype=np.float64)
    m = e.mean(axis=0, dtype=np.float64).astype(np.float32)
    m64 = m.astype(np.float64)
    if len(e) < 2 or 2.0 * len(e) * float(m64 @ m64) <= float(sq.sum()):
        return e @ e.T, np.full(len(e), 0.5), sq         # no dominant common part: centring gains nothing
    e = e - m                                           # the spread, rounded to float32
    h = e.astype(np.float64) @ m64
    h += (float(m64 @ m64) + 1.0) / 2.0
    return e @ e.T, h, sq


def _class_projections(probs: _RowReader, embeddings: _RowReader, rows: np.ndarray, c: int, *,
                       chunk: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Norms ``||g_i||``, ``T_i = g_i . S`` and ``||S||`` for one class, no g_i stored.

    ``g_i = a_i [e_i; 1]^T`` (``a_i = p_i - onehot(c)``) and
    ``S = sum_j g_j / ||g_j||``, the sum of the class's normalised gradients. Then
    ``||g_i|| = ||a_i|| ||[e_i; 1]||`` and
    ``T_i = sum_j (a_i . a_j) ([e_i;1] . [e_j;1]) / ||g_j|| = a_i^T S [e_i; 1]``, and
    ``||S||^2 = sum_i T_i / ||g_i||``. Small classes use the two Gram matrices (n^2 (K + D)
    multiply-adds, halved by the symmetric product; float32 products for float32/float16
    inputs, see :func:`_error_gram` and :func:`_embedding_gram`), large ones ``S`` itself
    (4 n K (D + 1), float64), in chunks of rows.
    """
    n, k, d = len(rows), probs.array.shape[1], embeddings.array.shape[1]
    if n <= min(GRAM_ROWS, 4 * k * (d + 1) // (k + d + 1) + 1):
        gram, a_sq = _error_gram(probs.take(rows), c)   # (n, n) a_i . a_j
        spread, h, e_sq = _embedding_gram(embeddings.take(rows))  # [e_i;1] . [e_j;1] = G_ij + h_i + h_j
        norms = np.sqrt(a_sq) * np.sqrt(e_sq + 1.0)
        w = 1.0 / np.maximum(norms, EPS)
        # T = (A o (G + h 1^T + 1 h^T)) w = (A o G) w + h o (A w) + A (h o w): no (n, n)
        # float64 copy of G; the diagonal term is corrected to the exact ||[e_i; 1]||^2
        aw = gram @ np.stack([w, h * w], axis=1)
        fix = a_sq * (e_sq + 1.0 - np.diagonal(spread) - 2.0 * h) * w
        gram *= spread
        del spread
        t = gram @ w + h * aw[:, 0] + aw[:, 1] + fix
        return norms, t, float(np.sqrt(max(float(w @ t), 0.0)))
    # large class: S = [S_e | s_1] (K, D + 1) summed over row chunks, then T in a second pass
    s_e, s_1 = np.zeros((k, d)), np.zeros(k)
    norms = np.empty(n)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        a, e = _class_rows(probs, embeddings, rows[part], c)
        norms[part] = np.sqrt(np.einsum("ij,ij->i", a, a)) * np.sqrt(np.einsum("ij,ij->i", e, e) + 1.0)
        aw = a / np.maximum(norms[part], EPS)[:, None]
        s_e += aw.T @ e
        s_1 += aw.sum(axis=0)
    t = np.empty(n)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        a, e = _class_rows(probs, embeddings, rows[part], c)
        t[part] = np.einsum("ij,ij->i", a @ s_e, e) + a @ s_1
    return norms, t, float(np.sqrt(np.sum(s_e * s_e) + s_1 @ s_1))


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _map_in_order(fn: Callable, items, workers: int):
    """``fn(item)`` for every item, yielded in order, ``workers`` at a time.

    With several workers each runs a single-threaded BLAS: the classes' products are
    too small (about 1,000 x 2,000) for BLAS threads to keep two cores busy, and idle
    OpenBLAS threads spin, slowing the file reads and element-wise work between
    products. At most ``2 workers`` items are in flight, so memory stays that of a few
    classes; on an error the items not started are cancelled.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        pending = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def last_layer_scores(probs: np.ndarray, labels: np.ndarray, embeddings: np.ndarray, *, lam: float = 1.0,
                      balance_classes: bool = True, chunk: int = 4096, threads: int | None = None) -> pd.DataFrame:
    """:func:`gradient_scores` of the last-layer gradients without materialising them.

    The same frame as ``gradient_scores(last_layer_gradients(probs, labels, embeddings),
    labels, lam=lam, balance_classes=balance_classes)`` (PGD paper section 4.1), without
    the ``N x K (D + 1)`` gradient matrix: the gradient of sample i w.r.t. a final
    ``nn.Linear`` is ``g_i = (p_i - y_i) [e_i; 1]^T``, so its norm is
    ``||p_i - y_i|| ||[e_i; 1]||`` and the vMF fit of a class needs only the inner products
    ``g_i . S`` with the class's summed normalised gradient ``S`` (see
    :func:`_class_projections`). Classes are processed a few at a time (rows grouped by
    label; ``threads`` classes in parallel): memory ``O(threads n_c (n_c + K + D))`` for
    classes of ``n_c`` rows, time about ``N n_c (K + D) / 2`` multiply-adds (symmetric
    products). At 1,000,000 x 1,000 classes x 2,048 (float32 probabilities, float16
    embeddings, both memmapped) that is about 30 s on two shared cores with the inputs in
    the OS page cache (about 70 s when they are read from disk), with a peak RSS of 0.8 GB,
    imports included (``python -m tests.benchmarks scale``).

    Precision. The reference rounds every gradient entry to float32. Here float64 inputs
    are worked in float64 throughout (agreement with float64 gradients: about 1e-12
    relative). A float32 or float16 input (what the inference cache stores) has its Gram
    product (``a_i . a_j`` for the probabilities, ``e_i . e_j`` for the embeddings) taken
    in float32, split or centred so that float32 rounds only small non-cancelling terms
    (:func:`_error_gram`, :func:`_embedding_gram`); norms, ``M`` and everything after the
    products stay float64. The vMF concentration ``kappa`` grows with ``K (D + 1)`` and
    multiplies any rounding. Against the float64 gradients of the same float32 inputs (ReLU-like embeddings, the
    label's logit +4): at K = 100, D = 64 (3,000 to 5,000 rows, ``log D`` spanning 2,300
    to 2,600) the reference's ``log D`` moves by at most 1.3e-4 and this function's by
    1.3e-4 to 1.8e-4 (max relative change of ``log p_s`` 2.4e-7 and 2.8e-7 to 8.8e-7;
    float32 products without the split and centring: 2.8e-3); at K = 1,000, D = 2,048
    with classes of 1,000 rows, ``log D`` (span 1.65e5) moves by at most 8e-3, relative
    1.7e-5, and ``log p_s`` by at most 2.2e-6 relative (Spearman correlation with the
    float64 result 1 - 2e-12); the reference there moves by 4.7e-3 on a class of 150
    rows. Inputs whose float32 products are exact (e.g. dyadic) agree to about 1e-12.

    Args:
        probs: (N, K) float softmax probabilities (float16/32/64; a ``np.memmap`` is read
            in row blocks and never copied whole).
        labels: (N,) int class indices in [0, K).
        embeddings: (N, D) float inputs of the classifier (may be a ``np.memmap``).
        lam: the balance lambda of the harmonic mean (default 1).
        balance_classes: see :func:`gradient_scores`.
        chunk: rows per block for classes larger than :data:`GRAM_ROWS` (or than the
            size where the gradient sum is cheaper), scored through their gradient sum;
            smaller classes are read whole.
        threads: classes scored at the same time, each with a single-threaded BLAS (the
            process's BLAS thread count is set to 1 meanwhile and restored after); default:
            the CPUs this process may use. 1 scores the classes one after another with BLAS
            as configured. The result does not depend on it.

    Returns:
        DataFrame, one row per sample in input order: ``grad_norm, M, D, S, p_s, log_p_s,
        log_M, log_D, log_S`` (the columns of :func:`gradient_scores`).

    Raises:
        WorkspaceError: multi-label labels (gradient scores are single-label).
        ValueError: shapes that do not match, labels outside [0, K), ``lam < 0``,
            ``chunk < 1`` or ``threads < 1``.
    """
    labels = np.asarray(labels)
    probs = probs if isinstance(probs, np.ndarray) else np.asarray(probs, dtype=np.float64)
    embeddings = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings, dtype=np.float64)
    if labels.ndim != 1:
        raise WorkspaceError("gradient scores are defined per class for single-label data; "
                             "multi-label workspaces are not supported")
    if probs.ndim != 2 or embeddings.ndim != 2 or not (len(probs) == len(labels) == len(embeddings)):
        raise ValueError(f"shapes do not match: probs {probs.shape}, labels {labels.shape}, "
                         f"embeddings {embeddings.shape}")
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    n, k = probs.shape
    labels = labels.astype(np.int64, copy=False)
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be class indices in [0, {k}), found {labels.min()}..{labels.max()}")
    dims = k * (embeddings.shape[1] + 1)                # P: the gradient's dimension
    order = np.argsort(labels, kind="stable")             # rows grouped by class
    counts = np.bincount(labels, minlength=k)
    starts = np.cumsum(counts) - counts
    norms, log_m, log_d, log_scale = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    readers = _RowReader(probs), _RowReader(embeddings)
    classes = np.flatnonzero(counts)

    def project(c: int):
        rows = order[starts[c]:starts[c] + counts[c]]
        return rows, _class_projections(*readers, rows, int(c), chunk=chunk)

    workers = min(_available_cpus() if threads is None else int(threads), len(classes))
    try:
        for rows, (class_norms, t, length) in _map_in_order(project, classes, workers):
            norms[rows] = class_norms
            log_m[rows] = log_magnitude_scores(class_norms)
            if length < EPS:
                logp = np.zeros(len(rows))              # no preferred direction (as vmf_fit)
            else:
                # vmf_fit's kappa and u . v_i = (g_i . S) / (||g_i|| ||S||)
                r = min(length / len(rows), 1.0 - 1e-9)
                kappa = r * (dims - r * r) / (1.0 - r * r)
                logp = kappa * (t / np.maximum(class_norms, EPS) / length)
            log_d[rows] = logp - _logsumexp(logp)
            log_scale[rows] = np.log(len(rows)) if balance_classes else 0.0
    finally:
        for reader in readers:
            reader.close()
    return _score_frame(norms, log_m, log_d, log_scale, lam=lam)


# ---- noise split (PGD section 5, eq. 2) ----------------------------------------------------
def compensated_loss(probs: np.ndarray, labels: np.ndarray, *, chunk: int | None = None) -> tuple[np.ndarray, float]:
    """``L~_i = CE_i / H(softmax f(x_i))`` and ``delta = sum CE / sum H``.

    Args:
        probs: (N, K) softmax probabilities (a ``np.memmap`` is read in row blocks).
        labels: (N,) int given labels.
        chunk: rows per block (default: about 4M entries, i.e. 32 MB of float64 per
            temporary); the result does not depend on it.

    Returns:
        ``(comp_loss (N,), delta)``. ``H`` is floored at 1e-12 (a one-hot prediction).
    """
    probs = probs if isinstance(probs, np.ndarray) else np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, k = probs.shape
    step = max(1, int(chunk) if chunk else (1 << 22) // max(k, 1))
    ce, h = np.empty(n), np.empty(n)
    reader = _RowReader(probs)
    for start in range(0, n, step):
        p = np.clip(reader.slice(start, start + step).astype(np.float64), EPS, 1.0)   # (B, K)
        part = labels[start:start + step]
        ce[start:start + len(part)] = -np.log(p[np.arange(len(part)), part])
        h[start:start + len(part)] = -(p * np.log(p)).sum(axis=1)
    reader.close()
    delta = float(ce.sum() / max(h.sum(), EPS))
    return ce / np.maximum(h, EPS), delta


def noise_split(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Flag likely mislabelled samples: ``L~_i >= delta`` (PGD eq. 2).

    Returns:
        ``(noisy (N,) bool, comp_loss (N,), delta)``.
    """
    comp, delta = compensated_loss(probs, labels)
    return comp >= delta, comp, delta


# ---- the score table ---------------------------------------------------------------------
def score_table(outputs: InferenceOutputs, grads: np.ndarray | None, *, lam: float = 1.0,
                noise_outputs: InferenceOutputs | None = None, scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per scored sample with the CLI's columns.

    Args:
        outputs: outputs of the biased model (rows aligned with ``grads``).
        grads: (N, P) per-sample gradients of those rows, or None with ``scores``.
        noise_outputs: outputs of the model used for the noise split (default ``outputs``;
            the paper uses a CE-trained "noise model", i.e. the loaded model).
        scores: the :func:`gradient_scores` frame of those rows when already computed
            (e.g. by :func:`last_layer_scores`, which needs no ``grads``).

    Returns:
        Columns ``index, label, pred, grad_norm, M, D, S, p_s, log_p_s, comp_loss, noisy, correct``.
    """
    if outputs.multi_label:
        raise WorkspaceError("gradient scores and the noise split are single-label only")
    if scores is None:
        if grads is None:
            raise ValueError("score_table needs the gradients or their scores")
        scores = gradient_scores(grads, outputs.labels, lam=lam)
    noise = noise_outputs if noise_outputs is not None else outputs
    comp_loss, delta = compensated_loss(noise.probs, noise.labels)
    comp = pd.Series(comp_loss, index=noise.indices)
    frame = pd.DataFrame({"index": outputs.indices, "label": outputs.labels, "pred": outputs.preds})
    frame = pd.concat([frame, scores.reset_index(drop=True)], axis=1)
    frame["comp_loss"] = comp.reindex(outputs.indices).to_numpy()
    frame["noisy"] = frame["comp_loss"] >= delta
    frame["correct"] = frame["label"] == frame["pred"]
    frame.attrs["delta"] = delta
    return frame


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``positive`` (Mann-Whitney, ties averaged)."""
    from scipy.stats import rankdata

    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def planted_summary(frame: pd.DataFrame, planted: dict | None) -> dict:
    """Recovery of the demo's planted ground truth (empty when there is none).

    Returns:
        ``minority_auc`` (ROC AUC of p_s for minority samples), ``flip_recall`` (share of
        flipped labels flagged noisy), ``clean_flagged`` (share of the other samples flagged).
    """
    if not planted:
        return {}
    out = {}
    idx = frame["index"].to_numpy()
    minority = np.isin(idx, planted.get("minority") or [])
    if minority.any():
        out["minority_auc"] = roc_auc(frame["log_p_s"].to_numpy(), minority)
    flipped = np.isin(idx, planted.get("flipped_labels") or [])
    if flipped.any():
        noisy = frame["noisy"].to_numpy()
        out["flip_recall"] = float(noisy[flipped].mean())
        out["clean_flagged"] = float(noisy[~flipped].mean())
    return out


def effective_share(p_s: np.ndarray) -> float:
    """Effective sample size of sampling weights as a share of N: ``(sum p)^2 / (N sum p^2)``.

    1 for uniform weights, 1/N when one sample takes all the mass (a degenerate sampler).
    """
    p = np.asarray(p_s, dtype=np.float64)
    return float(p.sum() ** 2 / (len(p) * (p ** 2).sum())) if len(p) else float("nan")

