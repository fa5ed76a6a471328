"""Grad-CAM heatmaps, batched, cached per model version, split and data (captum wrapper).

Grad-CAM (Selvaraju et al. 2017), as used by the weak-boundary paper (section 4.1) to find
which objects drive a prediction: captum's :class:`~captum.attr.LayerGradCam` on the
workspace's Grad-CAM layer (``[model] gradcam_layer``; ``"auto"`` = the last ``Conv2d``
the forward pass calls), ReLU applied at the layer's resolution, and bilinear interpolation
up to the model input size (the ``F.interpolate`` call of captum's
:meth:`~captum.attr.LayerAttribution.interpolate`, made directly so that showing stored
heatmaps does not import captum).

One *row* is one (image, class) pair. Single-label: the predicted class of every image
(or one chosen class for every image). Multi-label: every predicted label of every image
(or the chosen class). Predictions come from the workspace's inference cache, so the
pass here is one forward + backward per batch.

Heatmaps are kept at the layer's resolution ((R, h, w) float32, small; the workspace stores
them, see :mod:`diagnostics.run_gradcam`); :func:`upsample_cams` brings them to input size on
demand. This is the only module that imports captum.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from workspace.cache import make_loader
from workspace.errors import WorkspaceError
from workspace.models import find_last_conv, is_scripted, select_device

Progress = Callable[[int, int], None]


@dataclass
class GradCamResult:
    """Grad-CAM of one model version on one split.

    Attributes:
        indices: (R,) int64 split positions of the rows.
        classes: (R,) int64 the class each heatmap explains.
        correct: (R,) bool single-label: the prediction is right; multi-label: the class
            is one of the image's labels. For a chosen class: the image's label is it.
        cams: (R, h, w) float32 non-negative Grad-CAM at the layer's resolution.
        input_size: (H, W) of the model input the heatmaps are upsampled to.
        layer: the module name Grad-CAM hooks.
        target: "pred" or the chosen class name.
    """

    indices: np.ndarray
    classes: np.ndarray
    correct: np.ndarray
    cams: np.ndarray
    input_size: tuple[int, int]
    layer: str
    target: str = "pred"
    split: str = ""
    model_version: str = ""

    @property
    def n(self) -> int:
        return len(self.indices)


def resolve_layer(model: nn.Module, layer: str, example: torch.Tensor) -> str:
    """The Grad-CAM layer name (``"auto"`` = last Conv2d called), checked to give (N, C, h, w).

    Raises:
        WorkspaceError: TorchScript model, unknown layer, no conv layer, or a layer whose
            output is not a 4-D feature map.
    """
    if is_scripted(model):
        raise WorkspaceError(
            "Grad-CAM needs forward hooks, which TorchScript models do not run; load the model "
            "as torchvision = '...' or factory = 'module:function' with weights instead"
        )
    name = find_last_conv(model, example) if layer == "auto" else layer
    modules = dict(model.named_modules())
    if name not in modules:
        raise WorkspaceError(f"gradcam_layer {name!r} is not a module of the model "
                             f"(e.g. {', '.join(list(modules)[1:4])})")
    shapes = []
    handle = modules[name].register_forward_hook(lambda m, i, o: shapes.append(tuple(getattr(o, "shape", ()))))
    try:
        with torch.no_grad():
            model(example)
    finally:
        handle.remove()
    if not shapes or len(shapes[-1]) != 4:
        raise WorkspaceError(
            f"gradcam_layer {name!r} outputs shape {shapes[-1] if shapes else 'nothing'}; Grad-CAM "
            "needs a convolutional feature map (N, C, h, w): name a conv layer or block"
        )
    return name


def gradcam_batch(model: nn.Module, layer: str, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of a batch: (B, 3, H, W) inputs, (B,) classes -> (B, h, w) float32 >= 0.

    ReLU is applied at the layer's resolution (``relu_attributions=True``), as in the
    Grad-CAM paper; per-sample targets make one backward pass explain B different classes.
    """
    from captum.attr import LayerGradCam

    module = dict(model.named_modules())[layer]
    cam = LayerGradCam(model, module).attribute(x, target=classes.tolist(), relu_attributions=True)
    return cam[:, 0].detach().float()


def upsample_cams(cams: np.ndarray, size: tuple[int, int], *, batch_size: int = 512) -> np.ndarray:
    """(R, h, w) heatmaps -> (R, H, W) float32 with captum's bilinear interpolation
    (``LayerAttribution.interpolate`` is this ``F.interpolate`` call; importing captum, which
    imports matplotlib, took 0.85 s of the Grad-CAM page's first render)."""
    from torch.nn import functional as F

    out = np.empty((len(cams), *size), dtype=np.float32)
    for start in range(0, len(cams), batch_size):
        part = torch.from_numpy(np.ascontiguousarray(cams[start:start + batch_size]))[:, None]
        up = F.interpolate(part, tuple(size), mode="bilinear")
        out[start:start + batch_size] = up[:, 0].clamp_min(0).numpy()
    return out


def target_rows(preds: np.ndarray, labels: np.ndarray, indices: np.ndarray, *, task: str,
                target: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (index, class, correct) rows to explain, from cached predictions.

    Args:
        preds: (N,) int64 or (N, K) bool predictions of the cached outputs.
        labels: (N,) int64 or (N, K) multi-hot labels.
        indices: (N,) split positions.
        target: None = the predicted class(es); an int = that class for every image.

    Returns:
        indices (R,), classes (R,), correct (R,) bool.
    """
    multi = task == "multi_label"
    if target is not None:
        cls = np.full(len(indices), int(target), dtype=np.int64)
        correct = labels[:, target] > 0.5 if multi else labels == target
        return indices.astype(np.int64), cls, np.asarray(correct, dtype=bool)
    if not multi:
        return indices.astype(np.int64), preds.astype(np.int64), preds == labels
    rows, cls = np.nonzero(preds)
    return indices[rows].astype(np.int64), cls.astype(np.int64), labels[rows, cls] > 0.5


def compute_gradcam(model: nn.Module, dataset, *, layer: str, indices: np.ndarray, classes: np.ndarray,
                    batch_size: int = 128, device: str = "auto", progress: Progress | None = None) -> np.ndarray:
    """Grad-CAM for the given (index, class) rows of a dataset, batched.

    Args:
        model: the classifier (not modified: on an accelerator a copy is moved there).
        dataset: an ``ImageDataset`` yielding ``(x, index, ok)``.
        layer: a module name from :func:`resolve_layer`.
        indices, classes: (R,) rows; an image may appear more than once (multi-label).
        progress: ``progress(done, total)`` after every batch; raise from it to cancel.

    Returns:
        (R, h, w) float32 heatmaps at the layer's resolution (zeros for images that fail
        to load).
    """
    dev = select_device(device)
    if dev.type != "cpu":
        model = copy.deepcopy(model).to(dev)
    model.eval()
    order = np.argsort(indices, kind="stable")
    rows_ds = copy.copy(dataset)
    rows_ds.indices = np.asarray(indices)[order]
    loader = make_loader(rows_ds, batch_size=batch_size)
    cls_sorted = torch.as_tensor(np.asarray(classes)[order], dtype=torch.long)
    chunks, done, total = [], 0, len(order)
    for x, _, ok in loader:
        x = x.to(dev).requires_grad_(False)
        cam = gradcam_batch(model, layer, x, cls_sorted[done:done + len(x)].to(dev))
        cam[~ok.to(dev)] = 0.0
        chunks.append(cam.cpu())
        done += len(x)
        if progress is not None:
            progress(done, total)
    if not chunks:
        raise WorkspaceError("no images to explain (the split is empty or nothing was predicted)")
    cams = torch.cat(chunks).numpy()
    out = np.empty_like(cams)
    out[order] = cams
    return out
