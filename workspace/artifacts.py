"""The artifact store: every computed array of a workspace, on disk, under a content key.

One store per workspace (``<state>/artifacts``). An *artifact* is a value computed from the
workspace's model and data: inference outputs, gradient scores, Grad-CAM maps, object shares,
neighbour tables, a biased model's weights. Each lives in its own folder::

    <state>/artifacts/<kind>/<slot>/<key>/meta.json + <name>.npy ...

* ``kind`` names what it is ("outputs", "gradient-scores", ...), with a format ``version``
  that is part of the key: bumping it invalidates every older entry of that kind.
* ``slot`` groups entries that replace each other (e.g. ``orig/eval``): saving a new key in a
  slot removes the older keys there, so a changed model or data set never leaves stale files.
* ``key`` is derived from content (model checksum, data fingerprint, options): callers build
  it with :func:`content_key`.

Writes are atomic: an entry is written into a temporary folder and renamed into place, so a
crash or a full disk never leaves a half-written entry that could be read back. Arrays are
plain ``.npy`` files, so large ones can be memory-mapped (``mmap=True``). A temporary folder
left by a killed writer is never read, and the next save in its slot removes it.

A store opened ``read_only`` (a state folder that cannot be written) still computes what is
missing: :meth:`ArtifactStore.get_or_compute` returns the value without storing it, and an
explicit :meth:`ArtifactStore.save` says why it cannot.

Values are encoded by type (:func:`encode` / :func:`decode`): a ``pandas.DataFrame`` (columns
and ``attrs``), a dataclass of arrays and JSON fields (its class is recorded and must live in
this project's packages), a ``dict`` of torch tensors (a state_dict, read back with
``weights_only=True``) or a plain ``dict`` of arrays and JSON values.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from workspace.errors import WorkspaceError

#: packages whose dataclasses may be decoded (a state folder never names other code)
TRUSTED_PACKAGES = ("workspace.", "diagnostics.", "repair.")
META = "meta.json"
TMP_PREFIX = ".tmp-"  # + "<host>~<pid>-": a writer's temporary folder, never read


def _tmp_prefix() -> str:
    return f"{TMP_PREFIX}{socket.gethostname().replace('-', '_')}~{os.getpid()}-"


def _abandoned(tmp: Path) -> bool:
    """Whether a temporary folder's writer is gone: its process on this host ended, or (another
    host's, or named before the owner was recorded) it is a day old."""
    owner = tmp.name[len(TMP_PREFIX):].split("-", 1)[0]
    host, _, pid = owner.rpartition("~")
    if host != socket.gethostname().replace("-", "_") or not pid.isdigit():
        try:
            return time.time() - tmp.stat().st_mtime > 86400
        except OSError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def content_key(*parts: object) -> str:
    """A short, stable hash of the parts (strings, numbers, JSON-able values)."""
    text = "\x1f".join(p if isinstance(p, str) else json.dumps(p, sort_keys=True, default=str) for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ---- encoding ------------------------------------------------------------------------------
def _json_value(value):
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def encode(value: Any) -> tuple[dict[str, np.ndarray], dict]:
    """Split a value into named arrays and JSON metadata (see the module docstring)."""
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        arrays = {f"col{i}": value[c].to_numpy() for i, c in enumerate(value.columns)}
        return arrays, {"type": "frame", "columns": [str(c) for c in value.columns],
                        "attrs": _json_value(dict(value.attrs))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        arrays, fields = {}, {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if isinstance(v, np.ndarray):
                arrays[f.name] = v
            elif v is None:
                fields[f.name] = None
            else:
                fields[f.name] = _json_value(v)
        cls = type(value)
        return arrays, {"type": "dataclass", "class": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(value, dict):
        import torch

        if value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return {}, {"type": "state_dict"}
        arrays = {k: v for k, v in value.items() if isinstance(v, np.ndarray)}
        rest = {k: _json_value(v) for k, v in value.items() if k not in arrays}
        return arrays, {"type": "dict", "fields": rest}
    raise TypeError(f"cannot store a {type(value).__name__} as an artifact")


def _import_class(path: str):
    module, _, name = path.partition(":")
    if not module.startswith(TRUSTED_PACKAGES):
        raise ValueError(f"artifact names a class outside this project: {path}")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def decode(arrays: dict[str, np.ndarray], meta: dict, folder: Path) -> Any:
    import pandas as pd

    kind = meta.get("type")
    if kind == "frame":
        frame = pd.DataFrame({c: arrays[f"col{i}"] for i, c in enumerate(meta["columns"])})
        frame.attrs.update(meta.get("attrs") or {})
        return frame
    if kind == "dataclass":
        cls = _import_class(meta["class"])
        values = dict(meta.get("fields") or {})
        values.update(arrays)
        for f in dataclasses.fields(cls):  # JSON turns tuples into lists: restore them
            if isinstance(values.get(f.name), list) and str(f.type).startswith("tuple"):
                values[f.name] = tuple(values[f.name])
        return cls(**values)
    if kind == "state_dict":
        import torch

        return torch.load(folder / "state_dict.pt", map_location="cpu", weights_only=True)
    if kind == "dict":
        return {**(meta.get("fields") or {}), **arrays}
    raise ValueError(f"unknown artifact type {kind!r}")


# ---- the store -----------------------------------------------------------------------------
class ArtifactStore:
    """Artifacts of one workspace under ``folder`` (see the module docstring).

    Args:
        folder: ``<state>/artifacts``.
        read_only: the state folder cannot be written: values are computed but not stored.
    """

    def __init__(self, folder: str | Path, *, read_only: bool = False):
        self.folder = Path(folder)
        self.read_only = bool(read_only)

    def _entry(self, kind: str, key: str, slot: str) -> Path:
        for part in (kind, key, *slot.split("/")):
            if not part or part in (".", "..") or os.sep in part:
                raise ValueError(f"bad artifact path part {part!r}")
        return self.folder / kind / slot / key

    def exists(self, kind: str, key: str, *, slot: str = "_", version: int = 1) -> bool:
        return (self._entry(kind, self._full_key(key, version), slot) / META).is_file()

    @staticmethod
    def _full_key(key: str, version: int) -> str:
        return f"{key}-v{int(version)}"

    def load(self, kind: str, key: str, *, slot: str = "_", version: int = 1, mmap: bool = False) -> Any | None:
        """The stored value, or None when absent, damaged or of another format version."""
        folder = self._entry(kind, self._full_key(key, version), slot)
        try:
            meta = json.loads((folder / META).read_text())
            if meta.get("version") != int(version):
                return None
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
                      for name in meta.get("arrays", [])}
            return decode(arrays, meta, folder)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError, RuntimeError):
            return None  # damaged (or from an incompatible build): recomputed, never trusted

    def save(self, kind: str, key: str, value: Any, *, slot: str = "_", version: int = 1,
             keep_others: bool = False) -> Path:
        """Store ``value`` atomically; older keys in the same slot are removed unless ``keep_others``.

        Raises:
            WorkspaceError: the state folder cannot be written (read-only, disk full).
        """
        full = self._full_key(key, version)
        folder = self._entry(kind, full, slot)
        if self.read_only:
            raise WorkspaceError(f"the state folder {self.folder.parent} is read-only: cannot save the {kind} "
                                 "artifact (viewing works; copy the workspace or set state_dir to a writable folder)")
        arrays, meta = encode(value)
        meta = {**meta, "version": int(version), "kind": kind, "arrays": sorted(arrays)}
        parent = folder.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=parent, prefix=_tmp_prefix()))
            try:
                for name, array in arrays.items():
                    np.save(tmp / f"{name}.npy", np.asarray(array), allow_pickle=False)
                if meta["type"] == "state_dict":
                    import torch

                    try:
                        torch.save({k: v.detach().cpu() for k, v in value.items()}, tmp / "state_dict.pt")
                    except RuntimeError as exc:  # torch's zip writer reports a full disk as "unexpected pos ..."
                        raise OSError(errno.EIO, "torch could not write the file "
                                                 f"({' '.join(str(exc).split())[:120]}); is the disk full?") from exc
                (tmp / META).write_text(json.dumps(meta))  # written last: its presence marks completeness
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        except OSError as exc:
            raise WorkspaceError(f"cannot write the {kind} artifact under {parent}: {exc.strerror or exc}") from None
        for other in parent.iterdir():
            if other.name == full or not other.is_dir():
                continue
            if other.name.startswith(TMP_PREFIX):  # another writer's work in progress, unless it was killed
                if _abandoned(other):
                    shutil.rmtree(other, ignore_errors=True)
            elif not keep_others:
                shutil.rmtree(other, ignore_errors=True)
        return folder

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Any], *, slot: str = "_",
                       version: int = 1, rebuild: bool = False, mmap: bool = False) -> Any:
        """The stored value of ``(kind, slot, key)``, or ``compute()`` stored and returned.

        ``compute`` takes no arguments: close over a progress callback; raising from it
        (a cancel) stores nothing. A read-only store returns the computed value without storing it.
        """
        if not rebuild:
            found = self.load(kind, key, slot=slot, version=version, mmap=mmap)
            if found is not None:
                return found
        value = compute()
        if not self.read_only:
            self.save(kind, key, value, slot=slot, version=version)
        return value

    def remove(self, kind: str, *, slot: str | None = None) -> None:
        """Forget every entry of a kind (or of one slot of it)."""
        if self.read_only:
            return
        target = self.folder / kind if slot is None else self.folder / kind / slot
        shutil.rmtree(target, ignore_errors=True)

    def sweep_temporary(self) -> int:
        """Remove temporary folders left by killed writers (live writers' are kept). Returns how many."""
        removed = 0
        if self.folder.is_dir() and not self.read_only:
            for tmp in list(self.folder.rglob(f"{TMP_PREFIX}*")):
                if tmp.is_dir() and _abandoned(tmp):
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed += 1
        return removed
