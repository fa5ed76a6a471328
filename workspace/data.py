"""Data splits: listing images and labels, decoding them, and the model's transform.

A split is an :class:`ImageSplit`: an ordered list of sample ids (file paths, or names for
in-memory demo images), their labels and a way to decode image ``i``. Positions in that
order are the sample *indices* every other module uses, so listing is deterministic
(sorted paths for ImageFolder, file order for CSV).

Labels are ``(N,)`` int64 class indices for single-label tasks and ``(N, K)`` float32
multi-hot rows for multi-label tasks.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from workspace.config import DataSpec, TransformSpec
from workspace.errors import WorkspaceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageSplit:
    """An ordered, labelled list of images. Subclasses implement :meth:`load`."""

    def __init__(self, ids: list[str], labels: np.ndarray, class_names: tuple[str, ...]):
        if len(ids) != len(labels):
            raise ValueError("ids and labels differ in length")
        self.ids = ids
        self.labels = labels
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    def load(self, index: int) -> Image.Image:
        """Decode image ``index`` as RGB. Raises on a corrupt or missing file."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hash of what the split holds, so caches notice when the data changes.

        Computed once per split object (re-open the workspace to pick up changed files).
        """
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update("\n".join(self.ids).encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        h.update("\n".join(self.class_names).encode())
        self._extend_fingerprint(h)
        return h.hexdigest()[:16]

    def _extend_fingerprint(self, h) -> None:
        pass


class FileSplit(ImageSplit):
    """Images stored as files; ``ids`` are absolute paths."""

    def load(self, index: int) -> Image.Image:
        with Image.open(self.ids[index]) as img:
            return img.convert("RGB")

    def _extend_fingerprint(self, h) -> None:
        # size and mtime of every file: a replaced image invalidates the cache
        for path in self.ids:
            try:
                st = Path(path).stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"missing")


class ArraySplit(ImageSplit):
    """Images held in memory as a ``(N, H, W, 3)`` uint8 array (the demos)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names, ids=None):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError("images must be (N, H, W, 3) uint8")
        ids = ids if ids is not None else [f"{i:06d}" for i in range(len(images))]
        super().__init__(ids, labels, tuple(class_names))
        self.images = images

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def _extend_fingerprint(self, h) -> None:
        h.update(np.ascontiguousarray(self.images).tobytes())


def list_imagefolder(root: Path, class_names: tuple[str, ...] | None) -> FileSplit:
    """List ``root/<class>/<image>`` files, sorted by class then path.

    Args:
        root: the split folder.
        class_names: the classes to expect, or None to take the sorted subfolder names.

    Raises:
        WorkspaceError: not a folder, no class folders, an unknown class folder, no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise WorkspaceError(f"imagefolder split is not a folder: {root}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise WorkspaceError(f"no class folders in {root} (expected {root}/<class>/<image>.jpg)")
    if class_names is None:
        class_names = tuple(folders)
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise WorkspaceError(
            f"{root} has class folder(s) {', '.join(unknown[:5])} that are not among the "
            f"{len(class_names)} classes ({', '.join(class_names[:5])}...)"
        )
    ids, labels = [], []
    for k, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(
            str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        ids += files
        labels += [k] * len(files)
    if not ids:
        raise WorkspaceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return FileSplit(ids, np.asarray(labels, dtype=np.int64), tuple(class_names))


def _read_csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise WorkspaceError(f"csv split is not a file: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise WorkspaceError(f"{path} has no rows (expected a header path,label)")
    if "path" not in rows[0]:
        raise WorkspaceError(f"{path} needs a 'path' column, found {', '.join(rows[0])}")
    return rows


def csv_class_names(path: Path, *, multi_label: bool, separator: str) -> tuple[str, ...]:
    """Sorted label names found in a CSV split (used for ``classes = "auto"``)."""
    names: set[str] = set()
    for row in _read_csv_rows(path):
        names.update(_row_labels(row, multi_label, separator, path))
    return tuple(sorted(names))


def _row_labels(row: dict, multi_label: bool, separator: str, path: Path) -> list[str]:
    column = "labels" if multi_label and "labels" in row else "label"
    if column not in row:
        raise WorkspaceError(f"{path} needs a '{column}' column")
    value = (row[column] or "").strip()
    if not multi_label:
        return [value]
    return [v.strip() for v in value.split(separator) if v.strip()]


def read_csv_split(
    path: Path, class_names: tuple[str, ...], *, multi_label: bool = False, separator: str = "|"
) -> FileSplit:
    """Read a ``path,label`` (or ``path,labels`` multi-label) CSV; paths relative to the CSV.

    Raises:
        WorkspaceError: missing columns or an unknown label, naming the line.
    """
    path = Path(path)
    index = {name: k for k, name in enumerate(class_names)}
    ids, labels = [], []
    for line, row in enumerate(_read_csv_rows(path), start=2):
        names = _row_labels(row, multi_label, separator, path)
        unknown = [n for n in names if n not in index]
        if unknown or (not multi_label and not names[0]):
            raise WorkspaceError(f"{path}:{line}: unknown label {unknown[0] if unknown else ''!r}")
        ids.append(str((path.parent / row["path"]).resolve()))
        if multi_label:
            row_labels = np.zeros(len(class_names), dtype=np.float32)
            row_labels[[index[n] for n in names]] = 1.0
            labels.append(row_labels)
        else:
            labels.append(index[names[0]])
    if multi_label:
        return FileSplit(ids, np.stack(labels), class_names)
    return FileSplit(ids, np.asarray(labels, dtype=np.int64), class_names)


def load_splits(spec: DataSpec, *, multi_label: bool) -> dict[str, ImageSplit]:
    """Both splits of a workspace, sharing one class list."""
    if spec.format == "imagefolder":
        if multi_label:
            raise WorkspaceError("multi-label data must use format = 'csv' (path,labels)")
        train = list_imagefolder(spec.train, spec.classes)
        return {"train": train, "eval": list_imagefolder(spec.eval, train.class_names)}
    classes = spec.classes or csv_class_names(
        spec.train, multi_label=multi_label, separator=spec.label_separator
    )
    return {
        split: read_csv_split(
            getattr(spec, split), classes, multi_label=multi_label, separator=spec.label_separator
        )
        for split in ("train", "eval")
    }


def build_transform(spec: TransformSpec, *, train: bool = False, augment: str = "none"):
    """The model's input transform: resize (and crop), optional light augmentation, normalise.

    Args:
        spec: the workspace's ``[transform]``.
        train: add the augmentation named by ``augment`` ("flip_crop", "crop" or "none").
    """
    size = spec.crop or spec.resize
    steps: list = [v2.ToImage()]
    if spec.crop:
        steps += [v2.Resize(spec.resize, antialias=True), v2.CenterCrop(spec.crop)]
    else:
        steps += [v2.Resize((spec.resize, spec.resize), antialias=True)]
    if train and augment in ("flip_crop", "crop"):
        steps.append(v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect"))
    if train and augment == "flip_crop":
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(spec.mean), list(spec.std))]
    return v2.Compose(steps)


@dataclass
class LoadProblem:
    index: int
    id: str
    error: str


class ImageDataset(torch.utils.data.Dataset):
    """``(image tensor, index, ok)`` for the given positions of a split.

    A file that fails to decode yields a zero image with ``ok = False`` instead of
    stopping the whole pass; callers drop such samples and report them.
    """

    def __init__(self, split: ImageSplit, transform, indices=None):
        self.split = split
        self.transform = transform
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices)
        self._size = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = int(self.indices[position])
        try:
            x = self.transform(self.split.load(index))
            self._size = x.shape
            return x, index, True
        except Exception:  # noqa: BLE001 - any decode failure is reported, not fatal
            return torch.zeros(self._size or self._fallback_shape()), index, False

    def _fallback_shape(self):
        return self.transform(Image.new("RGB", (32, 32))).shape

    def problem(self, index: int) -> LoadProblem:
        """Why image ``index`` fails to load (decodes it again, for the report)."""
        try:
            self.transform(self.split.load(index))
            return LoadProblem(index, self.split.ids[index], "loaded on retry")
        except Exception as exc:  # noqa: BLE001
            return LoadProblem(index, self.split.ids[index], f"{type(exc).__name__}: {exc}")
