"""The shared real model for benchmarks: the public CIFAR-10 ResNet-56 on the CIFAR-10 JPEGs.

``../shared/data/real-models/cifar10-resnet56`` (weights exactly as published, a factory module, a
workspace file) is copied to the git-ignored ``data/resnet56`` and the JPEG tarballs of
``../shared/data/cifar10-jpeg`` are extracted next to it, once. Without ``../shared`` (a user's
machine) :func:`real_workspace` returns None and the benchmarks fall back to the demo.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
TARGET = REPO / "data" / "resnet56"


def prepare() -> Path | None:
    """``data/resnet56/workspace.toml``, prepared from ``../shared`` if needed; None without it."""
    model = SHARED / "real-models" / "cifar10-resnet56"
    if (TARGET / "workspace.toml").is_file() and (TARGET / "train").is_dir() and (TARGET / "test").is_dir():
        return TARGET / "workspace.toml"
    if not (model / "workspace.toml").is_file() or not (SHARED / "cifar10-jpeg" / "train.tar.gz").is_file():
        return None
    TARGET.mkdir(parents=True, exist_ok=True)
    for f in model.iterdir():
        if f.is_file():
            shutil.copyfile(f, TARGET / f.name)
    for split in ("train", "test"):
        if not (TARGET / split).is_dir():
            with tarfile.open(SHARED / "cifar10-jpeg" / f"{split}.tar.gz") as tar:
                tar.extractall(TARGET, filter="data")
    return TARGET / "workspace.toml"


def real_workspace():
    path = prepare()
    if path is None:
        return None
    from workspace.core import open_workspace

    return open_workspace(path)
