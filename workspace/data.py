"""Data splits: listing images and labels, decoding them, and the model's transform.

A split is an :class:`ImageSplit`: an ordered list of sample ids (file paths, or names for
in-memory demo images), their labels and a way to decode image ``i``. Positions in that
order are the sample *indices* every other module uses, so listing is deterministic
(sorted paths for ImageFolder, file order for CSV).

Labels are ``(N,)`` int64 class indices for single-label tasks and ``(N, K)`` float32
multi-hot rows for multi-label tasks.

Listing is strict about what would otherwise go wrong silently: a file that appears twice
in a CSV with two different labels is an error, an exact duplicate row a warning (kept
once), an empty class folder a warning, and every data path (CSV rows, symlinks) must stay
inside the workspace folder unless the workspace allows otherwise. Warnings travel with
the split (``split.warnings``) for the Overview page and ``workspace info``.

Reopening a big workspace need not list and stat every file again: with a ``cache_dir``
the listing is stored and reused while the folders it came from are unchanged (see
:func:`list_imagefolder`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from workspace.config import DataSpec, TransformSpec
from workspace.errors import WorkspaceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LISTING_VERSION = 1
# A folder modified this close to the moment it was listed may have changed within the
# file system's timestamp granularity (up to 2 s on FAT/exFAT); such a listing is not
# trusted on reopen (the "racily clean" rule of git's index).
RACY_NS = 2_000_000_000


class ImageSplit:
    """An ordered, labelled list of images. Subclasses implement :meth:`load`.

    Attributes:
        warnings: one-line notes found while listing (empty class folders, duplicate CSV
            rows), for the Overview page and ``workspace info``.
    """

    def __init__(self, ids: list[str], labels: np.ndarray, class_names: tuple[str, ...]):
        if len(ids) != len(labels):
            raise ValueError("ids and labels differ in length")
        self.ids = ids
        self.labels = labels
        self.class_names = class_names
        self.warnings: list[str] = []

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


def to_rgb(img: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB, scaling high-bit-depth samples instead of clipping.

    PIL's own ``convert("RGB")`` clips 16-bit and 32-bit grey values at 255 (a 16-bit PNG
    comes out almost white). Here integer samples are scaled by the range of their type:
    ``uint16`` ("I;16", 16-bit PNG and TIFF) by ``v / 65535 * 255`` (= ``v / 257``); mode
    "I" (int32) by 65535 when its values fit 16 bits, which is how Pillow stores 16-bit
    files, else by the full int32 range; float images ("F") are taken as ``[0, 1]`` when
    their maximum is at most 1, else as ``[0, 255]``, with NaN as 0. Palette, LA, CMYK,
    RGBA and the other 8-bit modes convert as PIL does (alpha dropped; a palette with a
    transparent entry goes through RGBA, as PIL recommends).

    Args:
        img: an opened PIL image of any mode.

    Returns:
        An "RGB" image of the same size.
    """
    mode = img.mode
    if mode == "F" or mode.startswith("I"):
        a = np.asarray(img) if mode != "I;16S" else np.asarray(img.convert("I"))
        if a.dtype.kind == "f":
            a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            scale = 1.0 if a.size and a.max() <= 1.0 else 255.0
            v = np.clip(a, 0.0, scale) / scale * 255.0
        elif a.dtype.kind == "u":
            v = a.astype(np.float64) / np.iinfo(a.dtype).max * 255.0
        elif a.size and a.min() >= 0 and a.max() <= 65535:
            v = a.astype(np.float64) / 65535.0 * 255.0
        else:
            info = np.iinfo(a.dtype)
            v = (a.astype(np.float64) - info.min) / (float(info.max) - info.min) * 255.0
        return Image.fromarray(np.rint(v).astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


class FileSplit(ImageSplit):
    """Images stored as files; ``ids`` are absolute paths."""

    def load(self, index: int) -> Image.Image:
        with Image.open(self.ids[index]) as img:
            return to_rgb(img)

    def _extend_fingerprint(self, h) -> None:
        # size and mtime of every file: a replaced image invalidates the cache
        for path in self.ids:
            try:
                st = os.stat(path)
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


# ---- confinement ------------------------------------------------------------------------
def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _confined(path: Path | str, confine_to: Path | None, what: str) -> None:
    """Raise when ``path`` (resolved, symlinks followed) leaves ``confine_to``."""
    if confine_to is None:
        return
    real = os.path.realpath(path)
    if not _inside(real, os.path.realpath(confine_to)):
        raise WorkspaceError(f"{what} ({real}) is outside the workspace folder {confine_to}; "
                             "move it inside or set allow_outside = true in workspace.toml")


# ---- the listing cache ------------------------------------------------------------------
def _stamp(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def _listing_file(cache_dir: Path, params: dict) -> Path:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"listing-{key}.json"


def _load_listing(cache_dir: Path, params: dict) -> FileSplit | None:
    """The stored listing for ``params`` if every stamped path is unchanged, else None."""
    try:
        entry = json.loads(_listing_file(cache_dir, params).read_text(encoding="utf-8"))
        if entry.get("version") != LISTING_VERSION or entry.get("params") != params:
            return None
        limit = entry["listed_at"] - RACY_NS
        for path, stamp in entry["stamps"].items():
            if stamp[0] >= limit or _stamp(path) != stamp:
                return None
        class_names = tuple(entry["class_names"])
        if entry["multi_label"]:
            labels = np.zeros((len(entry["labels"]), len(class_names)), dtype=np.float32)
            for row, positives in enumerate(entry["labels"]):
                labels[row, positives] = 1.0
        else:
            labels = np.asarray(entry["labels"], dtype=np.int64)
        split = FileSplit(list(entry["ids"]), labels, class_names)
        split.warnings = list(entry["warnings"])
        split._fingerprint = entry["fingerprint"]
        return split
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # absent, unreadable or from another version: list again


def _save_listing(cache_dir: Path, params: dict, split: FileSplit, stamps: dict, listed_at: int) -> None:
    if split.multi_label:
        labels = [np.flatnonzero(row).tolist() for row in split.labels]
    else:
        labels = split.labels.tolist()
    entry = {"version": LISTING_VERSION, "params": params, "listed_at": listed_at, "stamps": stamps,
             "ids": split.ids, "labels": labels, "multi_label": split.multi_label,
             "class_names": list(split.class_names), "warnings": split.warnings,
             "fingerprint": split.fingerprint()}
    target = _listing_file(cache_dir, params)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".listing-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry, f)
        os.replace(tmp, target)  # readers see the old entry or the new one, never half
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)  # the cache is a convenience: a read-only state folder only costs time


# ---- ImageFolder ------------------------------------------------------------------------
def _walk_images(folder: str, confine_to: Path | None, stamps: dict, notes: list[str]) -> list[str]:
    """Image files under ``folder`` (recursively, sorted), stamping every folder visited.

    Symlinked folders are not entered (as ``Path.rglob`` on Python 3.11); symlinked files
    are read and must resolve inside ``confine_to``.
    """
    files: list[str] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            stamps[current] = _stamp(current)
            entries = list(os.scandir(current))
        except OSError as exc:
            raise WorkspaceError(f"cannot read the folder {current}: {exc.strerror or exc}") from None
        for entry in entries:
            link = entry.is_symlink()
            if entry.is_dir():
                if link:
                    notes.append(f"{entry.path} is a symlinked folder; its images are not listed")
                else:
                    stack.append(entry.path)
                continue
            if os.path.splitext(entry.name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            if link:
                _confined(entry.path, confine_to, f"{entry.path} is a symlink whose target")
            if entry.is_file():
                files.append(entry.path)
    return sorted(files)


def list_imagefolder(root: Path, class_names: tuple[str, ...] | None, *, confine_to: Path | None = None,
                     cache_dir: Path | None = None, recheck: bool = False) -> FileSplit:
    """List ``root/<class>/<image>`` files (recursively), sorted by class then path.

    With ``cache_dir`` the listing (ids, labels, class names, warnings and the split's
    fingerprint) is stored there, keyed by the split path and the arguments, and reused
    on the next call while the modification time of the split folder and of every folder
    under it is unchanged: a warm reopen stats a handful of folders instead of listing
    and statting every file. Adding, removing or renaming an image changes its folder's
    time and is seen. **Limit:** overwriting an image's content in place (same name)
    does not touch its folder, so it is not seen until a call with ``recheck=True`` (the
    CLI's ``--recheck``, the page's "Reload workspace").

    Args:
        root: the split folder.
        class_names: the classes to expect, or None to take the sorted subfolder names.
        confine_to: every image must resolve inside this folder (symlinks followed);
            None allows any location.
        cache_dir: where to keep the listing (the workspace's state folder); None = no cache.
        recheck: list and stat everything again, then refresh the stored listing.

    Returns:
        The split; ``labels`` (N,) int64; ``warnings`` names empty or missing class folders.

    Raises:
        WorkspaceError: not a folder, no class folders, an unknown class folder, no images,
            a split folder or symlinked image outside ``confine_to``.
    """
    root = Path(root)
    if not root.is_dir():
        raise WorkspaceError(f"imagefolder split is not a folder: {root}")
    _confined(root, confine_to, f"split folder {root}")
    params = {"kind": "imagefolder", "root": str(root), "classes": list(class_names) if class_names else None,
              "confine_to": str(confine_to) if confine_to else None, "suffixes": list(IMAGE_SUFFIXES)}
    if cache_dir is not None and not recheck:
        cached = _load_listing(cache_dir, params)
        if cached is not None:
            return cached
    listed_at = time.time_ns()
    stamps = {str(root): _stamp(str(root))}
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
    ids, labels, warnings = [], [], []
    for k, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            warnings.append(f"class '{name}' has no folder in {root}")
            continue
        files = _walk_images(str(folder), confine_to, stamps, warnings)
        if not files:
            warnings.append(f"class folder {folder} has no images")
        ids += files
        labels += [k] * len(files)
    if not ids:
        raise WorkspaceError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    split = FileSplit(ids, np.asarray(labels, dtype=np.int64), tuple(class_names))
    split.warnings = warnings
    if cache_dir is not None:
        _save_listing(cache_dir, params, split, stamps, listed_at)
    return split


# ---- CSV --------------------------------------------------------------------------------
def _read_csv_rows(path: Path) -> list[tuple[int, dict]]:
    """``(line number, row)`` of a UTF-8 CSV with a ``path`` column (a BOM is accepted)."""
    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"csv split is not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise WorkspaceError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                             f"{exc.start}: {exc.reason}); save the CSV with UTF-8 encoding") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = reader.fieldnames
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise WorkspaceError(f"{path}:{reader.line_num}: not a readable CSV: {exc}") from None
    if not fields:
        raise WorkspaceError(f"{path} is empty (expected a header path,label)")
    if "path" not in fields:
        raise WorkspaceError(f"{path} needs a 'path' column, found {', '.join(map(str, fields))}")
    if not rows:
        raise WorkspaceError(f"{path} has no rows (expected a header path,label)")
    return rows


def _check_separator(separator) -> None:
    if not isinstance(separator, str) or not separator:
        raise WorkspaceError(f"[data] label_separator must be non-empty text, got {separator!r}")


def csv_class_names(path: Path, *, multi_label: bool, separator: str) -> tuple[str, ...]:
    """Sorted label names found in a CSV split (used for ``classes = "auto"``)."""
    _check_separator(separator)
    names: set[str] = set()
    for line, row in _read_csv_rows(path):
        names.update(_row_labels(row, multi_label, separator, path, line))
    return tuple(sorted(names))


def _row_labels(row: dict, multi_label: bool, separator: str, path: Path, line: int) -> list[str]:
    column = "labels" if multi_label and "labels" in row else "label"
    if column not in row:
        raise WorkspaceError(f"{path} needs a '{column}' column")
    value = (row[column] or "").strip()
    if not multi_label:
        if not value:
            raise WorkspaceError(f"{path}:{line}: empty label")
        return [value]
    return [v.strip() for v in value.split(separator) if v.strip()]


def read_csv_split(path: Path, class_names: tuple[str, ...], *, multi_label: bool = False, separator: str = "|",
                   confine_to: Path | None = None, cache_dir: Path | None = None,
                   recheck: bool = False) -> FileSplit:
    """Read a ``path,label`` (or ``path,labels`` multi-label) CSV; paths relative to the CSV.

    A file listed twice with the same label(s) is kept once (a warning); with different
    labels it is an error naming both lines. With ``cache_dir`` the result is stored and
    reused while the CSV's modification time and size are unchanged (the images it names
    are not re-checked until ``recheck=True``; see :func:`list_imagefolder`).

    Args:
        path: the CSV file (UTF-8, header ``path,label`` or ``path,labels``).
        class_names: the K classes; every label must be one of them.
        multi_label: read ``labels`` (else ``label``) split by ``separator``.
        separator: the multi-label separator, non-empty.
        confine_to: every row's file must resolve inside this folder; None = anywhere.
        cache_dir: where to keep the parsed listing; None = no cache.
        recheck: parse again and refresh the stored listing.

    Returns:
        The split; labels (N,) int64 or (N, K) float32 multi-hot.

    Raises:
        WorkspaceError: not UTF-8, missing columns, an empty path or label, an unknown
            label, conflicting labels for one file, a path outside ``confine_to``;
            naming the file and line.
    """
    path = Path(path)
    _check_separator(separator)
    params = {"kind": "csv", "path": str(path), "classes": list(class_names), "multi_label": multi_label,
              "separator": separator, "confine_to": str(confine_to) if confine_to else None}
    if cache_dir is not None and not recheck:
        cached = _load_listing(cache_dir, params)
        if cached is not None:
            return cached
    listed_at = time.time_ns()
    stamps = {str(path): _stamp(str(path))} if path.is_file() else {}
    index = {name: k for k, name in enumerate(class_names)}
    ids, labels = [], []
    seen: dict[str, tuple[int, object, str]] = {}  # resolved file -> (line, label key, as written)
    duplicates: list[tuple[int, int]] = []
    for line, row in _read_csv_rows(path):
        rel = (row.get("path") or "").strip()
        if not rel:
            raise WorkspaceError(f"{path}:{line}: empty path")
        names = _row_labels(row, multi_label, separator, path, line)
        unknown = [n for n in names if n not in index]
        if unknown:
            raise WorkspaceError(f"{path}:{line}: unknown label {unknown[0]!r}")
        target = os.path.realpath(path.parent / rel)
        if confine_to is not None and not _inside(target, os.path.realpath(confine_to)):
            raise WorkspaceError(f"{path}:{line}: {rel} resolves to {target}, outside the workspace folder "
                                 f"{confine_to}; move it inside or set allow_outside = true in workspace.toml")
        key = frozenset(names) if multi_label else names[0]
        shown = separator.join(names) if multi_label else names[0]
        if target in seen:
            first_line, first_key, first_shown = seen[target]
            if first_key != key:
                raise WorkspaceError(f"{path}: {rel} has two different labels: line {first_line} "
                                     f"{first_shown!r} and line {line} {shown!r}")
            duplicates.append((line, first_line))
            continue
        seen[target] = (line, key, shown)
        ids.append(target)
        if multi_label:
            row_labels = np.zeros(len(class_names), dtype=np.float32)
            row_labels[[index[n] for n in names]] = 1.0
            labels.append(row_labels)
        else:
            labels.append(index[names[0]])
    if multi_label:
        split = FileSplit(ids, np.stack(labels), class_names)
    else:
        split = FileSplit(ids, np.asarray(labels, dtype=np.int64), class_names)
    if duplicates:
        first = ", ".join(f"line {a} repeats line {b}" for a, b in duplicates[:3])
        split.warnings.append(f"{path}: {len(duplicates)} duplicate row(s) kept once ({first}"
                              f"{', ...' if len(duplicates) > 3 else ''})")
    if cache_dir is not None:
        _save_listing(cache_dir, params, split, stamps, listed_at)
    return split


def load_splits(spec: DataSpec, *, multi_label: bool, cache_dir: Path | None = None,
                recheck: bool = False) -> dict[str, ImageSplit]:
    """Every split of a workspace, sharing one class list.

    Args:
        spec: the workspace's ``[data]``; ``spec.confine_to`` confines every data path.
        multi_label: the task; multi-label data must be CSV.
        cache_dir: where listings are kept between opens (see :func:`list_imagefolder`);
            None lists every file each time.
        recheck: ignore stored listings (and refresh them).

    Returns:
        ``{"train", "eval"}``, plus ``"reserved"`` and ``"validation"`` when the
        workspace names them; each split's ``warnings`` lists what looked wrong.

    Raises:
        WorkspaceError: the first problem with a split, in one line.
    """
    kw = {"confine_to": spec.confine_to, "cache_dir": cache_dir, "recheck": recheck}
    names = ["train", "eval"] + [s for s in ("reserved", "validation") if getattr(spec, s) is not None]
    if spec.format == "imagefolder":
        if multi_label:
            raise WorkspaceError("multi-label data must use format = 'csv' (path,labels)")
        train = list_imagefolder(spec.train, spec.classes, **kw)
        return {"train": train, **{s: list_imagefolder(getattr(spec, s), train.class_names, **kw)
                                   for s in names[1:]}}
    _check_separator(spec.label_separator)
    classes = spec.classes or csv_class_names(
        spec.train, multi_label=multi_label, separator=spec.label_separator
    )
    return {
        split: read_csv_split(getattr(spec, split), classes, multi_label=multi_label,
                              separator=spec.label_separator, **kw)
        for split in names
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
