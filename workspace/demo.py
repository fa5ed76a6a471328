"""The built-in demo workspaces, generated on first use with no download.

``demo`` ("shapes"): 32x32 images of ten shape classes on random backgrounds, with known
ground truth for every diagnostic:

* a confusable pair: ``disk`` / ``oval``: ovals are only 1.3-1.8 times longer than wide,
  and both classes are rare in train (0.35 times the other classes' frequency; eval is
  balanced), so the model under-learns the difference: the pair is confused, yet learnable,
  so a repair that focuses on the confused samples (w-loss) can fix much of it;
* a biased triplet ``(oval, ring, disk)``: small shapes of every class but ``ring`` blur
  into round blobs, and most small blobs are disks or ovals, so the model confuses ``disk``
  with ``oval`` most, a little with every filled class, and never with ``ring``;
* a spurious context object: ``grass`` (a green strip at the bottom) is in 85 % of the
  training ``triangle`` images and 5 % of the others, but in 30 % of every eval class;
* bias-conflicting minority samples: the training images that break that correlation
  (triangles without grass, other classes with grass);
* 4 % of the training labels flipped to a random other class.

Every image has an object label map (0 background, 1 the main shape, 2 grass, 3 cloud),
so Grad-CAM associations can be checked against ground truth.

``demo-digits``: scikit-learn's real 8x8 handwritten digits, upscaled and coloured with a
class-correlated colour in a ``bias`` fraction of the training images and a random colour
in the rest (the PGD paper's Colored MNIST protocol); eval colours are random.
``demo-digits:0.99`` sets the bias ratio.

The shapes demo model ships in ``assets/`` (made by ``python -m workspace.demo build``);
the digits model is trained on first use in a few seconds. Both are :class:`DemoNet`,
a small CNN with BatchNorm.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

SHAPE_CLASSES = ("disk", "oval", "ring", "square", "frame", "triangle", "plus", "star", "bar", "crescent")
OBJECT_NAMES = ("background", "shape", "grass", "cloud")  # ids in the label maps; 1 = the shape's class
PLANTED_SHAPES = {
    "confused_pair": ["disk", "oval"],
    "biased_triplet": ["oval", "ring", "disk"],
    "spurious": {"object": "grass", "class": "triangle"},
}
IMAGE_SIZE = 32
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
ASSET_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "demo_shapes.pt"
DATA_SEED = 20261123
N_TRAIN, N_EVAL = 6000, 3000
GRASS_TRAIN_TARGET, GRASS_TRAIN_OTHER, GRASS_EVAL = 0.85, 0.05, 0.3
FLIP_RATE = 0.04
# relative class frequencies in train (eval is balanced): the confusable pair is also rare
TRAIN_FREQUENCY = {"disk": 0.35, "oval": 0.35}
# share of small, blob-like shapes per class: round classes are often small, ring never
TINY_RATE = {"disk": 0.3, "oval": 0.3, "ring": 0.0}
TINY_RATE_OTHER = 0.06

Progress = Callable[[int, int], None]


# ---- drawing ------------------------------------------------------------------------
_SS = 2  # supersampling factor for soft edges
_G = (np.arange(IMAGE_SIZE * _SS) + 0.5) / _SS
_YY, _XX = np.meshgrid(_G, _G, indexing="ij")


def _coverage(mask: np.ndarray) -> np.ndarray:
    """(32*SS, 32*SS) bool -> (32, 32) float coverage in [0, 1]."""
    return mask.reshape(IMAGE_SIZE, _SS, IMAGE_SIZE, _SS).mean(axis=(1, 3))


def shape_mask(kind: str, cx: float, cy: float, s: float, angle: float, ratio: float = 1.0) -> np.ndarray:
    """Supersampled boolean mask of one shape centred at (cx, cy) with radius ``s``."""
    dx, dy = _XX - cx, _YY - cy
    c, si = math.cos(angle), math.sin(angle)
    u, v = c * dx + si * dy, -si * dx + c * dy
    r2 = u * u + v * v
    if kind == "disk":
        return r2 <= s * s
    if kind == "oval":
        a, b = s * math.sqrt(ratio), s / math.sqrt(ratio)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "ring":
        return (r2 <= s * s) & (r2 >= (0.55 * s) ** 2)
    if kind == "square":
        return np.maximum(abs(u), abs(v)) <= 0.85 * s
    if kind == "frame":
        m = np.maximum(abs(u), abs(v))
        return (m <= 0.85 * s) & (m >= 0.45 * s)
    if kind == "triangle":
        out = np.ones_like(u, dtype=bool)
        for k in range(3):
            t = math.pi / 2 + 2 * math.pi * k / 3
            out &= (u * math.cos(t) + v * math.sin(t)) <= 0.5 * s
        return out
    if kind == "plus":
        return ((abs(u) <= 0.3 * s) & (abs(v) <= s)) | ((abs(v) <= 0.3 * s) & (abs(u) <= s))
    if kind == "star":
        phi = np.arctan2(v, u)
        return np.sqrt(r2) <= s * (0.62 + 0.38 * np.cos(5 * phi))
    if kind == "bar":
        return (abs(u) <= 1.1 * s) & (abs(v) <= 0.3 * s)
    if kind == "crescent":
        return (r2 <= s * s) & ((u - 0.5 * s) ** 2 + v * v > (0.85 * s) ** 2)
    raise ValueError(f"unknown shape {kind!r}")


_BLUR = np.exp(-0.5 * (np.arange(-2, 3) / 1.0) ** 2)
_BLUR /= _BLUR.sum()


def _blur(a: np.ndarray) -> np.ndarray:
    """Separable Gaussian blur (sigma 1 px) of a 2-D array."""
    a = np.apply_along_axis(lambda r: np.convolve(r, _BLUR, mode="same"), 0, a)
    return np.apply_along_axis(lambda r: np.convolve(r, _BLUR, mode="same"), 1, a)


def _far_colour(rng: np.random.Generator, other: np.ndarray, min_dist: float = 120.0) -> np.ndarray:
    for _ in range(50):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - other) >= min_dist:
            return colour
    return 255.0 - other


def render_shape_image(rng: np.random.Generator, kind: str, *, grass: bool, cloud: bool,
                       tiny: bool) -> tuple[np.ndarray, np.ndarray]:
    """One (32, 32, 3) uint8 image and its (32, 32) uint8 object label map."""
    h = IMAGE_SIZE
    base = rng.uniform(20, 235, 3)
    ramp = np.linspace(-1, 1, h)[:, None, None] * rng.uniform(-30, 30, 3)
    img = np.broadcast_to(base, (h, h, 3)) + ramp
    labels = np.zeros((h, h), dtype=np.uint8)
    if cloud:
        m = np.zeros_like(_XX, dtype=bool)
        cx, cy = rng.uniform(6, 26), rng.uniform(3, 8)
        for _ in range(3):
            m |= shape_mask("disk", cx + rng.uniform(-4, 4), cy + rng.uniform(-1.5, 1.5), rng.uniform(2, 3.5), 0)
        cov = _coverage(m)
        img = img * (1 - cov[..., None]) + cov[..., None] * rng.uniform(215, 250)
        labels[cov > 0.5] = 3
    if grass:
        top = h - rng.uniform(5, 8) + np.sin(_XX / rng.uniform(1.5, 3) + rng.uniform(0, 6)) * 0.8
        cov = _coverage(_YY >= top)
        green = np.array([rng.uniform(30, 90), rng.uniform(130, 210), rng.uniform(20, 70)])
        texture = rng.normal(0, 18, (h, h, 1))
        img = img * (1 - cov[..., None]) + cov[..., None] * (green + texture)
        labels[cov > 0.5] = 2
    s = rng.uniform(2.2, 3.0) if tiny else rng.uniform(5.0, 9.5)
    cx, cy = rng.uniform(11, 21), rng.uniform(10, 20)
    ratio = rng.uniform(1.3, 1.8)
    if tiny:
        # too small to show its outline: a soft round or elongated blob, whatever the class
        # (round for disks, elongated for ovals, either for the rest)
        blob = kind if kind in ("disk", "oval") else ("disk", "oval")[int(rng.integers(2))]
        cov = _coverage(shape_mask(blob, cx, cy, s, rng.uniform(0, 2 * math.pi), ratio + 0.3))
        cov = np.clip(_blur(cov) * 1.6, 0, 1)
    else:
        cov = _coverage(shape_mask(kind, cx, cy, s, rng.uniform(0, 2 * math.pi), ratio))
    colour = _far_colour(rng, img[int(cy), int(cx)])
    img = img * (1 - cov[..., None]) + cov[..., None] * colour
    labels[cov > 0.5] = 1
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), labels


def generate_shapes(seed: int = DATA_SEED, n_train: int = N_TRAIN, n_eval: int = N_EVAL,
                    progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Generate the shapes demo deterministically.

    Returns:
        ``train_images`` (N, 32, 32, 3) uint8, ``train_labels`` (N,) int64 (with flipped
        labels), ``train_true`` (N,) the true classes, ``train_masks`` (N, 32, 32) uint8,
        ``train_grass`` (N,) bool, and the same ``eval_*`` arrays (eval labels are clean),
        plus ``flipped`` and ``minority`` (train indices).
    """
    rng = np.random.default_rng(seed)
    k = len(SHAPE_CLASSES)
    target = SHAPE_CLASSES.index(PLANTED_SHAPES["spurious"]["class"])
    out: dict[str, np.ndarray] = {}
    total, done = n_train + n_eval, 0
    for split, n in (("train", n_train), ("eval", n_eval)):
        if split == "train":
            freq = np.array([TRAIN_FREQUENCY.get(name, 1.0) for name in SHAPE_CLASSES])
            counts = np.floor(freq / freq.sum() * n).astype(int)
            counts[np.argsort(-freq, kind="stable")[: n - counts.sum()]] += 1
            true = np.repeat(np.arange(k), counts)
        else:
            true = np.tile(np.arange(k), n // k + 1)[:n]
        rng.shuffle(true)
        if split == "train":
            p_grass = np.where(true == target, GRASS_TRAIN_TARGET, GRASS_TRAIN_OTHER)
        else:
            p_grass = np.full(n, GRASS_EVAL)
        grass = rng.random(n) < p_grass
        cloud = rng.random(n) < 0.35
        p_tiny = np.array([TINY_RATE.get(name, TINY_RATE_OTHER) for name in SHAPE_CLASSES])[true]
        tiny = rng.random(n) < p_tiny
        images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        masks = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        for i in range(n):
            images[i], masks[i] = render_shape_image(
                rng, SHAPE_CLASSES[true[i]], grass=bool(grass[i]), cloud=bool(cloud[i]), tiny=bool(tiny[i])
            )
            done += 1
            if progress is not None and done % 500 == 0:
                progress(done, total)
        labels = true.astype(np.int64).copy()
        if split == "train":
            flipped = np.sort(rng.choice(n, size=int(round(FLIP_RATE * n)), replace=False))
            labels[flipped] = (true[flipped] + rng.integers(1, k, len(flipped))) % k
            conflicting = (true == target) != grass
            out["flipped"] = flipped.astype(np.int64)
            out["minority"] = np.flatnonzero(conflicting).astype(np.int64)
        out.update({f"{split}_images": images, f"{split}_labels": labels, f"{split}_true": true,
                    f"{split}_masks": masks, f"{split}_grass": grass})
    return out


RESERVED_SEED = DATA_SEED + 7919  # any seed other than the train/eval one
N_RESERVED = 300


def generate_shapes_reserved(n: int = N_RESERVED, seed: int = RESERVED_SEED) -> dict[str, np.ndarray]:
    """A small clean reserved set for the shapes demo (BIR's ``D_r``).

    Drawn like the training images (grass with the training rates: 85 % of triangles, 5 % of
    the others; the same small-blob and cloud rates) but with balanced classes and correct
    labels, from its own seed, so it never repeats a train or eval image.

    Returns:
        ``images`` (n, 32, 32, 3) uint8, ``labels`` (n,) int64 (n // 10 per class, the rest
        to the first classes), ``masks`` (n, 32, 32) uint8, ``grass`` (n,) bool.
    """
    rng = np.random.default_rng(seed)
    k = len(SHAPE_CLASSES)
    target = SHAPE_CLASSES.index(PLANTED_SHAPES["spurious"]["class"])
    labels = np.tile(np.arange(k), n // k + 1)[:n]
    rng.shuffle(labels)
    grass = rng.random(n) < np.where(labels == target, GRASS_TRAIN_TARGET, GRASS_TRAIN_OTHER)
    cloud = rng.random(n) < 0.35
    tiny = rng.random(n) < np.array([TINY_RATE.get(name, TINY_RATE_OTHER) for name in SHAPE_CLASSES])[labels]
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    masks = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i in range(n):
        images[i], masks[i] = render_shape_image(rng, SHAPE_CLASSES[labels[i]], grass=bool(grass[i]),
                                                 cloud=bool(cloud[i]), tiny=bool(tiny[i]))
    return {"images": images, "labels": labels.astype(np.int64), "masks": masks, "grass": grass}


DIGIT_COLOURS = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
], dtype=np.float64)


def generate_digits(bias: float = 0.95, seed: int = 0) -> dict[str, np.ndarray]:
    """Colored digits from scikit-learn's real 8x8 digits (PGD paper's Colored MNIST).

    Each training digit is drawn in its class colour with probability ``bias`` and in a
    random other class's colour otherwise (the bias-conflicting minority). Eval digits get
    a uniformly random colour, so a model that learned colour fails there.
    """
    if not 0.0 < bias < 1.0:
        raise ValueError("bias ratio must be in (0, 1)")
    from sklearn.datasets import load_digits
    from PIL import Image

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    n_train = int(len(order) * 0.67)
    out: dict[str, np.ndarray] = {}
    for split, idx in (("train", order[:n_train]), ("eval", order[n_train:])):
        labels = digits.target[idx].astype(np.int64)
        if split == "train":
            aligned = rng.random(len(idx)) < bias
            colour_class = np.where(aligned, labels, (labels + rng.integers(1, 10, len(idx))) % 10)
            out["minority"] = np.flatnonzero(~aligned).astype(np.int64)
        else:
            colour_class = rng.integers(0, 10, len(idx))
        images = np.empty((len(idx), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            gray = Image.fromarray((digits.images[i] / 16.0 * 255).astype(np.uint8))
            g = np.asarray(gray.resize((24, 24), Image.BILINEAR), dtype=np.float64) / 255.0
            canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64)
            oy, ox = rng.integers(2, 7, 2)
            canvas[oy:oy + 24, ox:ox + 24] = g
            img = canvas[..., None] * DIGIT_COLOURS[colour_class[j]] + rng.normal(0, 4, (IMAGE_SIZE, IMAGE_SIZE, 3))
            images[j] = np.clip(img, 0, 255).astype(np.uint8)
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = labels
        out[f"{split}_colour"] = colour_class.astype(np.int64)
    return out


# ---- the model ------------------------------------------------------------------------
def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DemoNet(nn.Module):
    """A small CNN with BatchNorm: 4 conv blocks, global average pooling, a linear head.

    The last conv block gives the (N, 4w, 8, 8) maps Grad-CAM uses; the 4w-d pooled vector
    feeding ``fc`` is the embedding (w = ``width``, 16 by default: 64-d embeddings).
    """

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            *_block(3, width), nn.MaxPool2d(2),
            *_block(width, 2 * width), nn.MaxPool2d(2),
            *_block(2 * width, 4 * width),
            *_block(4 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build_demo_model(num_classes: int = 10) -> DemoNet:
    """The ``factory`` for the demo workspaces."""
    return DemoNet(num_classes)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 normalised with the demo's mean/std."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shifts (reflect-padded crops) and horizontal flips of a batch."""
    n, c, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen) + torch.arange(h)  # (n, h)
    cols = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen) + torch.arange(w)  # (n, w)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def train_demo_model(images: np.ndarray, labels: np.ndarray, *, epochs: int = 25, seed: int = 0,
                     lr: float = 0.05, progress: Progress | None = None) -> DemoNet:
    """Train :class:`DemoNet` from scratch on CPU (SGD, one-cycle cosine schedule)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DemoNet(int(labels.max()) + 1)
    x_all, y_all = images_to_tensor(images), torch.from_numpy(labels)
    batch = 128
    steps = epochs * math.ceil(len(y_all) / batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.25)
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_all), generator=gen)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            loss = nn.functional.cross_entropy(model(_augment(x_all[idx], gen)), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress is not None:
                progress(step, steps)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """``python -m workspace.demo build``: regenerate the data and retrain the shipped weights."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ASSET_WEIGHTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.time()
    data = generate_shapes()
    print(f"generated {N_TRAIN}+{N_EVAL} images in {time.time() - start:.1f}s")
    start = time.time()
    model = train_demo_model(data["train_images"], data["train_labels"], epochs=args.epochs,
                             progress=lambda d, t: d % 50 == 0 and print(f"step {d}/{t}", flush=True))
    print(f"\ntrained in {time.time() - start:.1f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    with torch.no_grad():
        pred = model(images_to_tensor(data["eval_images"])).argmax(1).numpy()
    print(f"eval accuracy {np.mean(pred == data['eval_labels']):.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
