"""Decoded splits: every image of a split decoded once into a uint8 tensor, for fast training.

Fine-tuning on a CPU spent most of a step decoding JPEGs and running PIL transforms, every
epoch again. When a split fits a memory budget, it is decoded once (resized and cropped to the
model's input size, *before* normalisation, exactly as the workspace's transform does) into an
``(N, 3, H, W)`` uint8 array kept in the artifact store (a plain ``.npy``, memory-mapped when
read back). Training batches are then gathered from it, augmented as whole tensors
(:func:`augment_batch`: reflect-padded random crops and horizontal flips, the same operations as
the workspace's "flip_crop" transform) and normalised (:func:`normalise`).

Splits too large for the budget keep the DataLoader path (decoding per batch, in worker
processes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from workspace.cache import Progress, make_loader
from workspace.data import build_transform
from workspace.errors import Cancelled

DECODED_FORMAT = 1
DEFAULT_BUDGET = 4 * 1024**3  # bytes of uint8 pixels per split


@dataclass
class DecodedSplit:
    """A split as uint8 pixels.

    Attributes:
        images: (N, 3, H, W) uint8, rows in split order.
        ok: (N,) bool, False for images that failed to decode (their pixels are zero).
    """

    images: np.ndarray
    ok: np.ndarray

    @property
    def n(self) -> int:
        return len(self.ok)


def decoded_size(ws, split: str) -> int:
    t = ws.config.transform
    side = t.crop or t.resize
    return len(ws.split(split)) * 3 * side * side


def _pixels_transform(ws):
    """The workspace's eval transform without its last two steps (to float, normalise)."""
    from torchvision.transforms import v2

    full = build_transform(ws.config.transform, train=False)
    return v2.Compose(full.transforms[:-2])


class _PixelDataset(torch.utils.data.Dataset):
    def __init__(self, split, transform):
        self.split, self.transform = split, transform

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        try:
            return self.transform(self.split.load(i)), True
        except Exception:  # noqa: BLE001 - a broken image is marked, never fatal
            return None, False


def _collate(items):
    return items


def decode_split(ws, split: str, *, progress: Progress | None = None, batch_size: int = 256) -> DecodedSplit:
    """Decode every image of a split to uint8 at the model's input size (no augmentation)."""
    data = ws.split(split)
    t = ws.config.transform
    side = t.crop or t.resize
    images = np.zeros((len(data), 3, side, side), dtype=np.uint8)
    ok = np.zeros(len(data), dtype=bool)
    array = getattr(data, "images", None)
    if array is not None and array.shape[1:3] == (side, side) and t.crop is None:
        images[:] = np.transpose(array, (0, 3, 1, 2))  # in-memory demo images already at size
        ok[:] = True
        if progress is not None:
            progress(len(data), len(data))
        return DecodedSplit(images, ok)
    loader = make_loader(_PixelDataset(data, _pixels_transform(ws)), batch_size=batch_size)
    loader = torch.utils.data.DataLoader(loader.dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=loader.num_workers, collate_fn=_collate)
    done = 0
    for items in loader:
        for x, good in items:
            if good:
                images[done] = x.numpy()
                ok[done] = True
            done += 1
        if progress is not None:
            progress(done, len(data))
    return DecodedSplit(images, ok)


def decoded(ws, split: str, *, progress: Progress | None = None, budget: int = DEFAULT_BUDGET) -> DecodedSplit | None:
    """The decoded split from the artifact store (built once), or None when over ``budget`` bytes."""
    if decoded_size(ws, split) > budget:
        return None
    t = ws.config.transform
    from workspace.artifacts import content_key

    key = content_key(ws.split(split).fingerprint(), [t.resize, t.crop])
    return ws.artifacts.get_or_compute("decoded", key, lambda: decode_split(ws, split, progress=progress),
                                       slot=split, version=DECODED_FORMAT, mmap=True)


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, pad: int, flip: bool = True) -> torch.Tensor:
    """Reflect-padded random crops (offsets 0..2*pad) and random horizontal flips of a batch.

    The same operations as ``RandomCrop(size, padding=pad, padding_mode="reflect")`` followed by
    ``RandomHorizontalFlip()``, drawn independently per image. (B, C, H, W) -> (B, C, H, W).
    """
    b, c, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        rows = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator) + torch.arange(h)  # (B, H)
        cols = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator) + torch.arange(w)  # (B, W)
    else:
        padded = x
        rows = torch.arange(h).expand(b, h)
        cols = torch.arange(w).expand(b, w)
    if flip:
        flipped = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (or [0, 255] float) pixels -> the model's normalised float input."""
    x = x.float().div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


class TensorBatches:
    """Batches ``(x, index, ok)`` of a decoded split, like the DataLoader path gives.

    Args:
        decoded: the split's pixels.
        order: the split positions to visit, in order (a sampler's draw).
        augment: "flip_crop", "crop" or "none".
    """

    def __init__(self, decoded: DecodedSplit, order: np.ndarray, *, batch_size: int, mean, std,
                 augment: str = "none", generator: torch.Generator | None = None, drop_last: bool = False,
                 device: torch.device | None = None, should_stop=None):
        self.decoded, self.order = decoded, np.asarray(order, dtype=np.int64)
        self.batch_size, self.mean, self.std = int(batch_size), mean, std
        self.augment, self.generator = augment, generator or torch.Generator().manual_seed(0)
        self.drop_last, self.device, self.should_stop = drop_last, device, should_stop

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self):
        side = self.decoded.images.shape[-1]
        for b in range(len(self)):
            if self.should_stop is not None and self.should_stop():
                raise Cancelled()
            index = self.order[b * self.batch_size:(b + 1) * self.batch_size]
            sorted_index = np.sort(index)  # sequential reads of a memory-mapped file
            pixels = torch.from_numpy(np.ascontiguousarray(self.decoded.images[sorted_index]))
            restore = np.argsort(np.argsort(index))
            x = pixels[torch.from_numpy(restore)]
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
            x = normalise(x, self.mean, self.std)
            if self.augment in ("flip_crop", "crop"):
                x = augment_batch(x, self.generator, pad=max(1, side // 8), flip=self.augment == "flip_crop")
            yield x, torch.from_numpy(index), torch.from_numpy(self.decoded.ok[index])
