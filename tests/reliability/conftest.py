"""A small valid workspace on disk that each reliability test breaks in one way.

``bad_ws`` is a folder ``ws/`` (inside the test's tmp folder, so ``../outside`` exists and is
outside it) holding PNG ImageFolder splits, CSV splits over the same images, an empty
weights file and :data:`BASE` as ``workspace.toml``. :func:`tree_digest` hashes every
path, size, mtime, content and symlink target under a folder, so a test can prove that
reading a bad workspace wrote nothing into it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BASE = """\
name = "bad-inputs"
task = "single_label"
[model]
torchvision = "resnet18"
weights = "w.pth"
[data]
format = "imagefolder"
train = "train"
eval = "test"
[transform]
resize = 32
[train]
lr = 0.01
"""

CSV_BASE = BASE.replace('format = "imagefolder"', 'format = "csv"').replace(
    'train = "train"', 'train = "train.csv"').replace('eval = "test"', 'eval = "test.csv"')


def tree_digest(root: Path) -> str:
    """Hash of everything under ``root``: names, kinds, sizes, mtimes, bytes, link targets."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        h.update(f"D {os.path.relpath(dirpath, root)} {os.lstat(dirpath).st_mtime_ns}\n".encode())
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            h.update(f"F {os.path.relpath(path, root)} {st.st_size} {st.st_mtime_ns}\n".encode())
            if os.path.islink(path):
                h.update(os.readlink(path).encode())
            else:
                h.update(Path(path).read_bytes())
    return h.hexdigest()


def write_png(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def bad_ws(tmp_path) -> Path:
    """``tmp_path/ws``: a valid workspace (config + imagefolder + csv splits), no model."""
    root = tmp_path / "ws"
    for split in ("train", "test"):
        for k, name in enumerate(("cat", "dog")):
            for i in range(2):
                write_png(root / split / name / f"{i}.png", 60 * k + 10 * i)
    (root / "w.pth").write_bytes(b"")
    (root / "train.csv").write_text("path,label\ntrain/cat/0.png,cat\ntrain/cat/1.png,cat\n"
                                    "train/dog/0.png,dog\ntrain/dog/1.png,dog\n")
    (root / "test.csv").write_text("path,label\ntest/cat/0.png,cat\ntest/dog/0.png,dog\n")
    (root / "workspace.toml").write_text(BASE)
    (tmp_path / "outside").mkdir()
    write_png(tmp_path / "outside" / "x.png", 200)
    return root
