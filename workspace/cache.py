"""The inference cache: one model pass over a split, stored on disk and reused.

:func:`run_inference` feeds a split through the model once and returns
:class:`InferenceOutputs` (logits, probabilities, predictions, labels, embeddings and
the split positions they belong to). The workspace keeps them in its artifact store
(:mod:`workspace.artifacts`) under a key made of the model version's checksum and the data's
fingerprint, so a second request is a file read; any change to the weights, the images,
the labels or the transform produces a new key.

Images that fail to decode are left out of the arrays and listed in ``skipped``;
``indices`` maps every row back to its position in the split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from workspace.errors import WorkspaceError
from workspace.models import EmbeddingTap

Progress = Callable[[int, int], None]
OUTPUTS_FORMAT = 2  # the artifact format of InferenceOutputs; bump when its fields change


@dataclass
class InferenceOutputs:
    """One model pass over one split.

    Attributes:
        logits: (N, K) float32.
        probs: (N, K) float32; softmax (single-label) or sigmoid (multi-label).
        preds: (N,) int64 argmax, or (N, K) bool ``probs >= threshold`` for multi-label.
        labels: (N,) int64, or (N, K) float32 multi-hot.
        embeddings: (N, D) float32 penultimate features, or None when the model gives none.
        indices: (N,) int64 positions in the split (skipped images leave gaps).
        class_names: the K class names.
        task: "single_label" or "multi_label".
        skipped: ``{"index", "id", "error"}`` for every image that failed to load.
    """

    logits: np.ndarray
    probs: np.ndarray
    preds: np.ndarray
    labels: np.ndarray
    embeddings: np.ndarray | None
    indices: np.ndarray
    class_names: tuple[str, ...]
    task: str = "single_label"
    threshold: float = 0.5
    split: str = ""
    model_version: str = ""
    skipped: list[dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.indices)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: prediction equals the label (all labels, for multi-label)."""
        if self.multi_label:
            return np.all(self.preds == (self.labels > 0.5), axis=1)
        return self.preds == self.labels

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy (exact-match accuracy for multi-label)."""
        return float(self.correct.mean()) if self.n else float("nan")


def decide(probs: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Predictions from probabilities: argmax, or ``probs >= threshold`` for multi-label."""
    if task == "multi_label":
        return probs >= threshold
    return probs.argmax(axis=1).astype(np.int64)


def to_probs(logits: torch.Tensor | np.ndarray, task: str) -> np.ndarray:
    logits = torch.as_tensor(logits, dtype=torch.float32)
    probs = torch.sigmoid(logits) if task == "multi_label" else torch.softmax(logits, dim=1)
    return probs.numpy()


def make_loader(dataset, *, batch_size: int = 256, num_workers: int | None = None):
    """The DataLoader the inference pass (and its benchmark baseline) uses."""
    if num_workers is None:
        num_workers = 0 if getattr(dataset.split, "images", None) is not None else min(4, os.cpu_count() or 1)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        pin_memory=torch.cuda.is_available(), persistent_workers=False,
    )


def run_inference(
    model: torch.nn.Module,
    loader,
    *,
    tap: EmbeddingTap,
    labels: np.ndarray,
    class_names: tuple[str, ...],
    task: str = "single_label",
    threshold: float = 0.5,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> InferenceOutputs:
    """Run the model once over ``loader`` (batches of ``(x, index, ok)``: a DataLoader over an
    :class:`~workspace.data.ImageDataset`, or :class:`~workspace.tensors.TensorBatches`).

    Args:
        labels: the split's labels, indexed by split position.
        progress: called as ``progress(done, total)`` after every batch; raising from it
            cancels the pass.

    Raises:
        WorkspaceError: NaN or infinite outputs, or every image failed to load.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    logits_all, emb_all, idx_all, bad = [], [], [], []
    dataset = getattr(loader, "dataset", None)
    total, done = (len(dataset) if dataset is not None else len(loader.order)), 0
    use_amp = device.type == "cuda"
    with torch.inference_mode():
        for x, index, ok in loader:
            x = x.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                logits, emb = tap.forward(x)
            ok = ok.bool()
            logits_all.append(logits.float()[ok.to(device)].cpu())
            if emb is not None:
                emb_all.append(emb.float()[ok.to(device)].cpu())
            idx_all.append(index[ok])
            bad += index[~ok].tolist()
            done += len(index)
            if progress is not None:
                progress(done, total)
    if not idx_all or sum(len(i) for i in idx_all) == 0:
        raise WorkspaceError(f"none of the {total} images could be loaded")
    logits = torch.cat(logits_all).numpy()
    indices = torch.cat(idx_all).numpy().astype(np.int64)
    finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        first = int(indices[~finite][0])
        raise WorkspaceError(
            f"the model produced NaN or infinite outputs for {int((~finite).sum())} images "
            f"(first: index {first}); check the weights and the [transform] normalisation"
        )
    probs = to_probs(logits, task)
    if dataset is not None and hasattr(dataset, "problem"):
        skipped = [vars(dataset.problem(i)) for i in bad]
    else:
        skipped = [{"index": int(i), "id": str(i), "error": "failed to decode"} for i in bad]
    return InferenceOutputs(
        logits=logits,
        probs=probs,
        preds=decide(probs, task, threshold),
        labels=labels[indices],
        embeddings=torch.cat(emb_all).numpy() if emb_all else None,
        indices=indices,
        class_names=tuple(class_names),
        task=task,
        threshold=threshold,
        skipped=skipped,
    )
