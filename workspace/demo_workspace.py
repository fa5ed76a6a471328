"""Opening the built-in demos as ordinary :class:`~workspace.core.Workspace` objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from workspace import demo
from workspace.cache import Progress
from workspace.config import DataSpec, ModelSpec, TrainSpec, TransformSpec, WorkspaceConfig
from workspace.core import Workspace, groupfix_home
from workspace.data import ArraySplit
from workspace.errors import WorkspaceError
from workspace.masks import LabelMapMasks

REPO = Path(__file__).resolve().parent.parent
DATA_VERSION = 2  # bump when generate_shapes/generate_digits change


def _load_or_make(path: Path, make) -> dict[str, np.ndarray]:
    if path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass  # damaged: regenerate
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    return data


def _config(name: str, weights: Path, class_names, augment: str) -> WorkspaceConfig:
    return WorkspaceConfig(
        name=name,
        task="single_label",
        root=REPO,
        model=ModelSpec(factory="workspace.demo:build_demo_model", weights=weights),
        data=DataSpec(format="demo", train=REPO, eval=REPO, classes=tuple(class_names)),
        transform=TransformSpec(resize=demo.IMAGE_SIZE, mean=demo.MEAN, std=demo.STD),
        train=TrainSpec(lr=0.005, epochs=6, batch_size=128, augment=augment),
    )


def _train_and_save(path: Path, images, labels, progress: Progress | None, epochs: int) -> None:
    model = demo.train_demo_model(images, labels, epochs=epochs, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)


def open_shapes_demo(progress: Progress | None = None) -> Workspace:
    state = groupfix_home() / "demo"
    data = _load_or_make(state / f"shapes-data-v{DATA_VERSION}.npz", lambda: demo.generate_shapes(progress=progress))
    weights = demo.ASSET_WEIGHTS
    if not weights.is_file():  # a checkout without the shipped weights: train them once
        weights = state / "demo_shapes.pt"
        if not weights.is_file():
            _train_and_save(weights, data["train_images"], data["train_labels"], progress, epochs=25)
    names = demo.SHAPE_CLASSES
    splits, masks = {}, {}
    for split in ("train", "eval"):
        splits[split] = ArraySplit(data[f"{split}_images"], data[f"{split}_labels"], names)
        per_image = [{1: names[t], 2: "grass", 3: "cloud"} for t in data[f"{split}_true"]]
        masks[split] = LabelMapMasks(data[f"{split}_masks"], per_image)
    reserved = _load_or_make(state / f"shapes-reserved-v{DATA_VERSION}.npz", demo.generate_shapes_reserved)
    splits["reserved"] = ArraySplit(reserved["images"], reserved["labels"], names)
    target = names.index(demo.PLANTED_SHAPES["spurious"]["class"])
    grass = (data["eval_masks"] == 2).any(axis=(1, 2))
    group = 2 * (data["eval_true"] != target) + (~grass)  # the spurious cue (grass) x the class it fakes
    planted = {
        **demo.PLANTED_SHAPES,
        "flipped_labels": data["flipped"].tolist(),
        "true_labels": data["train_true"].tolist(),
        "minority": data["minority"].tolist(),
        "groups": {"eval": {"names": [f"{names[target]} with grass", f"{names[target]} without grass",
                                      "other classes with grass", "other classes without grass"],
                            "ids": group.astype(int).tolist()}},
    }
    return Workspace(_config("demo (shapes)", weights, names, "flip_crop"), state_dir=state,
                     splits=splits, planted=planted, masks=masks, spec="demo")


def open_digits_demo(bias: float = 0.95, progress: Progress | None = None) -> Workspace:
    if not 0.0 < bias < 1.0:
        raise WorkspaceError(f"demo-digits bias ratio must be in (0, 1), got {bias}")
    state = groupfix_home() / f"demo-digits-{bias:g}"
    data = _load_or_make(state / f"digits-data-v{DATA_VERSION}.npz", lambda: demo.generate_digits(bias))
    weights = state / "digits.pt"
    if not weights.is_file():
        _train_and_save(weights, data["train_images"], data["train_labels"], progress, epochs=8)
    names = tuple(str(d) for d in range(10))
    splits = {s: ArraySplit(data[f"{s}_images"], data[f"{s}_labels"], names) for s in ("train", "eval")}
    planted = {
        "confused_pair": None,
        "biased_triplet": None,
        "spurious": {"object": "colour", "class": None},
        "flipped_labels": [],
        "minority": data["minority"].tolist(),
        "bias_ratio": bias,
        "groups": {"eval": {"names": ["colour of its class", "colour of another class"],
                            "ids": (data["eval_colour"] != data["eval_labels"]).astype(int).tolist()}},
    }
    # digits are drawn without flips: a mirrored 2 is not a 2
    return Workspace(_config(f"demo-digits (bias {bias:g})", weights, names, "crop"), state_dir=state,
                     splits=splits, planted=planted, spec=f"demo-digits:{bias:g}")


def open_demo(spec: str, progress: Progress | None = None) -> Workspace:
    if spec == "demo":
        return open_shapes_demo(progress)
    _, _, ratio = spec.partition(":")
    try:
        bias = float(ratio) if ratio else 0.95
    except ValueError:
        raise WorkspaceError(f"demo-digits bias must be a number, as in demo-digits:0.99 (got {ratio!r})") from None
    return open_digits_demo(bias, progress)
