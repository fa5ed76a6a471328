"""A small valid workspace on disk that each reliability test breaks in one way.

``bad_ws`` is a folder ``ws/`` (inside the test's tmp folder, so ``../outside`` exists and is
outside it) holding PNG ImageFolder splits, CSV splits over the same images, an empty
weights file and :data:`BASE` as ``workspace.toml``. :func:`tree_digest` hashes every
path, size, mtime, content and symlink target under a folder, so a test can prove that
reading a bad workspace wrote nothing into it; :func:`content_digest` does the same for a state
folder (bytes only: SQLite touches the folder's times), and :func:`make_read_only` makes a folder
read-only even for root.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Callable

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
    return make_bad_ws(tmp_path)


def make_bad_ws(tmp_path: Path) -> Path:
    """What :func:`bad_ws` returns, built under any folder."""
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


TRANSIENT = ("-shm",)  # SQLite's shared-memory index: derived, created and dropped by every reader


def content_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (and ``"<dir>/": "dir"`` per folder).

    Unlike :func:`tree_digest` it ignores modification times, which SQLite changes on the folder
    of a store every time it is opened (its ``-wal`` and ``-shm`` files come and go): it proves
    that no byte stored changed and no file appeared or vanished. A non-empty ``-wal`` counts
    (it holds committed rows); an empty one and ``-shm`` do not.
    """
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.endswith(TRANSIENT) or (name.endswith("-wal") and os.path.getsize(path) == 0):
                continue
            rel = os.path.relpath(path, root)
            out[rel] = "link:" + os.readlink(path) if os.path.islink(path) else hashlib.sha256(
                Path(path).read_bytes()).hexdigest()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The paths whose digest differs (added, removed or changed), sorted."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def make_read_only(folder: Path) -> Callable[[], None]:
    """Make ``folder`` read-only for this process and its children; returns the undo.

    As root (where permission bits do not stop writes) the folder is bind-mounted read-only
    over itself; otherwise its permission bits are cleared. Skips the test when neither works.
    """
    folder = Path(folder)
    if os.geteuid() != 0:  # pragma: no cover - CI as a user
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if not p.is_symlink()}
        for p, mode in modes.items():
            p.chmod(mode & ~0o222)

        def undo() -> None:
            for p, mode in modes.items():
                p.chmod(mode)
        return undo
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount a read-only folder here: {bind.stderr.strip()}")
    ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True)
    if ro.returncode != 0:
        subprocess.run(["umount", str(folder)], check=False)
        pytest.skip(f"cannot remount read-only here: {ro.stderr.strip()}")

    def undo() -> None:
        # lazy: a workspace cached by the test process may still hold memory-mapped files there
        subprocess.run(["umount", "-l", str(folder)], check=True)
    return undo
