"""A synthetic many-class workspace on disk, for page tests and the page benchmark.

:func:`make_many_class_workspace` writes an ImageFolder workspace (tiny 8 x 8 PNGs, one folder
per class), a small factory model with ``K`` outputs, and synthetic inference outputs for the
``orig`` version straight into the workspace's artifact store, so pages open it without running
the model. The outputs have a known structure:

* every class ``c`` has a *sibling* ``c ^ 1`` it is confused with (``SIBLING_RATE`` of its
  images are predicted as the sibling), and ``RANDOM_RATE`` of its images go to a random class;
* the pair (0, 1) is confused more than any other (``TOP_RATE`` each way), so it is the most
  confused pair;
* embeddings (16-D, non-negative like the ReLU output they stand for) sit near the centre of the
  predicted class, nudged a little towards the labelled class, so misclassified samples have
  pure neighbourhoods of their prediction: the weakspots page finds pivotal images;
* the outputs are what the factory model's head gives on those embeddings: the stored weights
  have a head whose rows are the class centres (a nearest-centre classifier, scaled by
  ``LOGIT_SCALE``), the logits are exactly ``head(embedding)`` and the probabilities their
  softmax, so the exact last-layer closed form of the gradient scores applies, as on a real model.

Everything is seeded; the same arguments give the same files and outputs.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

SIBLING_RATE = 0.10
RANDOM_RATE = 0.10
TOP_RATE = 0.40
EMBED_DIM = 16
CENTRE_SEED = 1234
LOGIT_SCALE = 0.2     # logits = LOGIT_SCALE * (e . c_k - |c_k|^2 / 2): the prediction is the nearest centre
TOWARD_LABEL = 0.15   # a misclassified embedding moves this share of the way to its label's centre

MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    class ManyNet(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.embed = nn.Linear(8, 16)
            self.head = nn.Linear(16, num_classes)

        def forward(self, x):
            x = torch.flatten(self.pool(torch.relu(self.conv(x))), 1)
            return self.head(torch.relu(self.embed(x)))

    def build(num_classes=10):
        return ManyNet(num_classes)
''')


def class_names(k: int) -> list[str]:
    """``n0000`` .. ``n{k-1}``: sorted, so ImageFolder lists them in index order."""
    return [f"n{i:04d}" for i in range(k)]


def _write_pngs(root: Path, names: list[str], per_class: int, rng: np.random.Generator) -> None:
    from PIL import Image

    colours = rng.integers(40, 216, size=(len(names), 3))
    for k, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(-30, 31, size=(per_class, 8, 8, 3))
        images = np.clip(colours[k][None, None, None, :] + noise, 0, 255).astype(np.uint8)
        for i in range(per_class):
            Image.fromarray(images[i]).save(folder / f"{i:04d}.png", compress_level=1)


def synthetic_predictions(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) int64 predictions with the planted structure of the module docstring."""
    u = rng.random(len(labels))
    sibling = labels ^ 1
    sibling = np.where(sibling >= k, labels, sibling)
    rate = np.where(labels <= 1, TOP_RATE, SIBLING_RATE)
    preds = labels.copy()
    preds = np.where(u < rate, sibling, preds)
    random_class = rng.integers(0, k, len(labels))
    preds = np.where((u >= rate) & (u < rate + RANDOM_RATE), random_class, preds)
    return preds.astype(np.int64)


def class_centres(k: int) -> np.ndarray:
    """(k, EMBED_DIM) float32 non-negative class centres (the same for every split and seed)."""
    return np.abs(np.random.default_rng(CENTRE_SEED).normal(0.0, 3.0, size=(k, EMBED_DIM))).astype(np.float32)


def head_weights(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The head of the stored model: (k, EMBED_DIM) weight and (k,) bias, float32.

    ``LOGIT_SCALE * (e . c_k - |c_k|^2 / 2)`` is, up to a term that is the same for every class,
    ``-LOGIT_SCALE / 2 * |e - c_k|^2``: the argmax is the nearest class centre.
    """
    c = class_centres(k)
    return LOGIT_SCALE * c, (-0.5 * LOGIT_SCALE * (c.astype(np.float64) ** 2).sum(1)).astype(np.float32)


def _head_logits(embeddings: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """head(embedding) exactly as torch's ``nn.Linear`` computes it (float32)."""
    import torch

    with torch.no_grad():
        return torch.nn.functional.linear(torch.from_numpy(embeddings), torch.from_numpy(weight),
                                          torch.from_numpy(bias)).numpy()


def synthetic_outputs(labels: np.ndarray, k: int, *, split: str, seed: int, names: list[str]):
    """Synthetic :class:`~workspace.cache.InferenceOutputs` for ``labels`` (see the module docstring).

    The embeddings are drawn around the planted prediction's centre; where the noise would carry
    one closer to another centre it is put back on its prediction's centre (and the nudge towards
    the label dropped), so ``argmax head(embedding)`` is the planted prediction for every sample.
    """
    import torch

    from workspace.cache import InferenceOutputs

    rng = np.random.default_rng(seed)
    n = len(labels)
    preds = synthetic_predictions(labels, k, rng)
    centres = class_centres(k)
    weight, bias = head_weights(k)
    toward = np.where(preds != labels, TOWARD_LABEL, 0.0).astype(np.float32)[:, None]
    base = centres[preds] + toward * (centres[labels] - centres[preds])
    embeddings = np.maximum(base + rng.normal(0.0, 0.5, size=(n, EMBED_DIM)).astype(np.float32), 0.0)
    for fallback in (centres[preds] + toward * (centres[labels] - centres[preds]), centres[preds]):
        wrong = _head_logits(embeddings, weight, bias).argmax(1) != preds
        embeddings[wrong] = np.maximum(fallback[wrong], 0.0)
    logits = _head_logits(embeddings, weight, bias)
    if not np.array_equal(logits.argmax(1), preds):
        raise AssertionError("two class centres coincide: the head cannot give the planted predictions")
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    return InferenceOutputs(logits=logits, probs=probs, preds=preds, labels=labels.astype(np.int64),
                            embeddings=embeddings, indices=np.arange(n, dtype=np.int64), class_names=tuple(names),
                            split=split, model_version="orig")


def make_many_class_workspace(root: Path, *, classes: int, eval_per_class: int, train_per_class: int,
                              seed: int = 0) -> Path:
    """Write the workspace under ``root`` (once: an existing one is reused) and return its file.

    Args:
        root: an empty or earlier-used folder.
        classes: K.
        eval_per_class, train_per_class: images per class in each split.

    Returns:
        The path of ``root / "workspace.toml"``; its orig outputs are in the artifact store.
    """
    import torch

    from workspace.core import open_workspace

    root = Path(root)
    done = root / ".complete"
    if not done.is_file():
        rng = np.random.default_rng(seed)
        names = class_names(classes)
        _write_pngs(root / "eval", names, eval_per_class, rng)
        _write_pngs(root / "train", names, train_per_class, rng)
        (root / "manynet.py").write_text(MODEL)
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"manynet_{classes}", root / "manynet.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        torch.manual_seed(seed)
        model = module.build(classes)
        weight, bias = head_weights(classes)
        with torch.no_grad():   # the head the synthetic outputs are computed with (see the module docstring)
            model.head.weight.copy_(torch.from_numpy(weight))
            model.head.bias.copy_(torch.from_numpy(bias))
        torch.save(model.state_dict(), root / "weights.pth")
        (root / "workspace.toml").write_text(textwrap.dedent(f'''
            name = "synthetic {classes} classes"
            task = "single_label"
            [model]
            factory = "manynet:build"
            weights = "weights.pth"
            [data]
            format = "imagefolder"
            train = "train"
            eval = "eval"
            [transform]
            resize = 8
            mean = [0.5, 0.5, 0.5]
            std = [0.25, 0.25, 0.25]
        '''))
        ws = open_workspace(root / "workspace.toml")
        for offset, split in enumerate(("eval", "train")):
            labels = np.asarray(ws.split(split).labels, dtype=np.int64)
            ws.save_outputs(synthetic_outputs(labels, classes, split=split, seed=seed + 1 + offset,
                                              names=list(ws.class_names)), split, "orig")
        done.write_text("ok\n")
    return root / "workspace.toml"
