"""The :class:`Workspace`: one model, its data, its state folder and its model versions.

``open_workspace("demo")`` opens the built-in shapes demo, ``"demo-digits"`` (or
``"demo-digits:0.99"``) the colored-digits demo, and any other string is a path to a
``workspace.toml`` (or the folder holding one).

State lives in the workspace's state folder (``state_dir`` in the file, else
``.groupfix/`` next to it; demos under ``$GROUPFIX_HOME``, default ``~/.groupfix``):
``store.sqlite`` (see :mod:`workspace.store`), ``artifacts/`` (every computed array, see
:mod:`workspace.artifacts`), ``models/`` (weights of repaired model versions) and ``jobs/``
(job logs). The user's own files are only read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workspace.artifacts import ArtifactStore, content_key
from workspace.cache import OUTPUTS_FORMAT, InferenceOutputs, Progress, make_loader, run_inference
from workspace.config import ModelSpec, WorkspaceConfig, load_config
from workspace.data import ImageDataset, ImageSplit, build_transform, load_splits
from workspace.errors import WorkspaceError
from workspace.layers import MaskedLinear, install_masked_head
from workspace.models import (
    EmbeddingTap, apply_state_dict, build_model_with_weights, check_output_size, is_scripted, load_checkpoint,
    model_capabilities, select_device,
)
from workspace.store import Store

SPLITS = ("train", "eval")
OPTIONAL_SPLITS = ("reserved", "validation")
ORIG = "orig"


def groupfix_home() -> Path:
    """Where demos and the recent-workspaces list live (``$GROUPFIX_HOME`` or ~/.groupfix)."""
    return Path(os.environ.get("GROUPFIX_HOME", Path.home() / ".groupfix")).expanduser()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Workspace:
    """A loaded workspace. Cheap to create; models and splits load on first use."""

    def __init__(self, config: WorkspaceConfig, *, state_dir: Path | None = None,
                 splits: dict[str, ImageSplit] | None = None, planted: dict | None = None,
                 masks: dict | None = None, spec: str | None = None, recheck: bool = False,
                 register: bool = True):
        self.config = config
        self.spec = spec or str(config.source or config.root)
        self.state_dir = Path(state_dir or config.state_dir or config.root / ".groupfix")
        try:
            if not self.state_dir.is_dir():
                self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot create the state folder {self.state_dir}: {exc}") from None
        self.store = Store(self.state_dir / "store.sqlite")
        self.artifacts = ArtifactStore(self.state_dir / "artifacts", read_only=self.store.read_only)
        self._splits = splits
        self.planted = planted
        self._masks = masks
        self._models: dict[str, nn.Module] = {}
        self._lock = threading.Lock()
        self._recheck = recheck
        self.weights_summary: str | None = None
        if register:  # open_workspace registers only after the model loaded: a bad file changes nothing
            self.register_orig()

    # ---- basics ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def multi_label(self) -> bool:
        return self.task == "multi_label"

    @property
    def splits(self) -> dict[str, ImageSplit]:
        if self._splits is None:
            cache = None if self.store.read_only else self.state_dir / "listing"
            self._splits = load_splits(self.config.data, multi_label=self.multi_label, cache_dir=cache,
                                       recheck=self._recheck)
        return self._splits

    def warnings(self) -> list[str]:
        """Data warnings of every split (empty class folders, duplicate CSV rows, ...)."""
        return [w for s in self.splits.values() for w in getattr(s, "warnings", [])]

    def split(self, name: str) -> ImageSplit:
        """A split: "train", "eval", or an optional one the workspace defines ("reserved", "validation")."""
        if name not in SPLITS and name not in OPTIONAL_SPLITS:
            raise WorkspaceError(f"split must be one of {', '.join(SPLITS + OPTIONAL_SPLITS)}, got {name!r}")
        if name not in self.splits:
            raise WorkspaceError(f"this workspace has no {name} split (set [data] {name} = \"...\" in workspace.toml)")
        return self.splits[name]

    def has_split(self, name: str) -> bool:
        return name in self.splits

    def groups(self, split: str = "eval") -> tuple[np.ndarray, list[str]] | None:
        """Group ids (N,) per split position and the group names, when the workspace defines groups
        (the demos do: the samples that break the planted spurious correlation), else None."""
        found = ((self.planted or {}).get("groups") or {}).get(split)
        if not found:
            return None
        return np.asarray(found["ids"], dtype=np.int64), list(found["names"])

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.splits["train"].class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def masks(self, split: str):
        """Ground-truth object masks of a split, or None (see :mod:`diagnostics` Grad-CAM)."""
        return None if self._masks is None else self._masks.get(split)

    # ---- model versions --------------------------------------------------------------
    def register_orig(self) -> None:
        """Record the loaded model file as version "orig" (its path and checksum) in the store."""
        if self.store.read_only:
            return  # viewing a read-only workspace: the store is shown as it was written
        file = self.config.model.file
        sha = file_sha256(file) if file is not None else None
        row = self.store.get_model_version(ORIG)
        if row is None:
            self.store.add_model_version(ORIG, path=str(file or ""), sha256=sha,
                                         note=f"loaded model ({self.config.model.kind})")
        elif row["sha256"] != sha or row["path"] != str(file or ""):
            # the user replaced the model file: "orig" now means the new file
            self.store.update_model_version(ORIG, sha256=sha, path=str(file or ""))

    def versions(self) -> list[dict]:
        return self.store.list_model_versions()

    def version(self, version: str) -> dict:
        """The stored row of a model version (``path`` is where its weights are now, see below).

        A repaired version's weights live in this state folder's ``models/``; the row records the
        absolute path it was saved at, so when the state folder was copied or moved, the file of
        the same name in this state folder is the one meant (never the original folder's).
        """
        row = self.store.get_model_version(version)
        if row is None:
            valid = ", ".join(v["id"] for v in self.versions())
            raise WorkspaceError(f"unknown model version {version!r}; valid: {valid}")
        if version != ORIG and row["path"]:
            saved = Path(row["path"])
            own = self.state_dir / "models" / saved.name
            if saved.parent.name == "models" and own != saved and own.is_file():
                row["path"] = str(own)
        return row

    def models_dir(self) -> Path:
        path = self.state_dir / "models"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"cannot create {path}: {exc.strerror or exc}") from None
        return path

    def new_version_id(self, method: str) -> str:
        """``v<N>-<method>``: the first N past the number of versions whose id and file are both free
        (a file without a row is what a killed save leaves: never reused)."""
        taken = {v["id"] for v in self.versions()}
        n = len(taken)
        while f"v{n}-{method}" in taken or (self.state_dir / "models" / f"v{n}-{method}.pt").exists():
            n += 1
        return f"v{n}-{method}"

    def save_version(self, model: nn.Module, *, method: str, parent: str = ORIG, **provenance) -> dict:
        """Save a repaired model as a new version (never overwriting any file).

        The weights are written to a temporary file and moved into place under a name reserved
        atomically, so a full disk or a crash never leaves a half-written version, and two runs
        finishing at once get two ids.

        Returns:
            The stored version row (``id``, ``path``, ``sha256`` and the provenance).

        Raises:
            WorkspaceError: a read-only state folder, or the file cannot be written (disk full).
        """
        self.store.require_writable("a model version")
        folder = self.models_dir()
        path = None
        try:
            fd, name = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
            os.close(fd)
            tmp = Path(name)
            try:
                try:
                    if is_scripted(model):
                        model.save(str(tmp))
                    else:
                        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
                except RuntimeError as exc:  # torch's zip writer reports a full disk as "unexpected pos ..."
                    raise OSError(errno.EIO, f"torch could not write the file ({' '.join(str(exc).split())[:120]}); "
                                             "is the disk full?") from exc
                sha = file_sha256(tmp)
                for _ in range(1000):
                    vid = self.new_version_id(method)
                    candidate = folder / f"{vid}.pt"
                    try:
                        os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                    except FileExistsError:  # another run took this id a moment ago
                        continue
                    path = candidate
                    break
                else:
                    raise OSError(errno.EEXIST, f"no free version id for {method}")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            if path is not None:
                path.unlink(missing_ok=True)
            raise WorkspaceError(f"cannot save the {method} model version in {folder}: {exc.strerror or exc}") from None
        try:
            return self.store.add_model_version(vid, path=str(path), sha256=sha, parent=parent, method=method,
                                                **provenance)
        except BaseException:
            path.unlink(missing_ok=True)  # no row, no file
            raise

    def build_architecture(self) -> nn.Module:
        """The model as the workspace file builds it (with the workspace's weights).

        ``weights_summary`` then says how the weights were read (container, prefix, EMA, filled
        BatchNorm counters)."""
        model, loaded = build_model_with_weights(self.config.model, self.config.root, self.num_classes)
        self.weights_summary = loaded.summary() if loaded is not None else None
        return model

    def load_model(self, version: str = ORIG) -> nn.Module:
        """A fresh copy of a model version in eval mode on CPU (safe to train or modify)."""
        row = self.version(version) if version != ORIG else None  # orig is the workspace file's model
        model = self.build_architecture()
        if version != ORIG:
            if is_scripted(model):
                model = torch.jit.load(row["path"], map_location="cpu")
            else:
                state = load_checkpoint(Path(row["path"]))
                for key in [k for k in state if k.endswith(".mask")]:  # a head regulated by a neuron mask
                    name = key[: -len(".mask")]
                    module = dict(model.named_modules()).get(name)
                    if isinstance(module, nn.Linear) and not isinstance(module, MaskedLinear):
                        install_masked_head(model, name, state[key].numpy())
                apply_state_dict(model, state, source=row["id"])
        check_output_size(model, self.example_input(), self.num_classes)
        return model.eval()

    def model(self, version: str = ORIG) -> nn.Module:
        """A shared, cached copy of a model version. Do not modify it; use :meth:`load_model`."""
        with self._lock:
            if version not in self._models:
                self._models[version] = self.load_model(version)
            return self._models[version]

    def capabilities(self, version: str = ORIG) -> dict[str, str | None]:
        return model_capabilities(self.model(version))

    # ---- data and inference ----------------------------------------------------------
    def example_input(self, batch: int = 2) -> torch.Tensor:
        t = self.config.transform
        size = t.crop or t.resize
        return torch.zeros(batch, 3, size, size)

    def transform(self, *, train: bool = False):
        return build_transform(self.config.transform, train=train, augment=self.config.train.augment)

    def dataset(self, split: str, *, train: bool = False, indices=None) -> ImageDataset:
        return ImageDataset(self.split(split), self.transform(train=train), indices)

    def embedding_tap(self, model: nn.Module) -> EmbeddingTap:
        """The embedding hook for ``model`` (the "auto" layer is found once per workspace)."""
        layer = getattr(self, "_embedding_layer", None) or self.config.model.embedding_layer
        tap = EmbeddingTap(model, layer, self.example_input(), self.num_classes,
                           use_input=getattr(self, "_embedding_use_input", None))
        if not tap.scripted:
            self._embedding_layer, self._embedding_use_input = tap.layer, tap.use_input
        return tap

    def outputs_key(self, split: str, version: str = ORIG) -> str:
        """The content key of a version's outputs on a split (weights, data, transform, layer, task)."""
        row = self.version(version)
        t = self.config.transform
        return content_key(version, str(row["sha256"]), self.split(split).fingerprint(), self.task,
                           [t.resize, t.crop, list(t.mean), list(t.std)],
                           self.config.model.embedding_layer, str(self.config.threshold))

    def cached_outputs(self, split: str = "eval", version: str = ORIG) -> InferenceOutputs | None:
        """The cached outputs if they exist and are current, else None (never runs the model)."""
        return self.artifacts.load("outputs", self.outputs_key(split, version), slot=f"{version}/{split}",
                                   version=OUTPUTS_FORMAT, mmap=True)

    def save_outputs(self, outputs: InferenceOutputs, split: str, version: str) -> None:
        """Store outputs computed elsewhere (e.g. the last evaluation of a fine-tuning run)."""
        outputs.split, outputs.model_version = split, version
        self.artifacts.save("outputs", self.outputs_key(split, version), outputs, slot=f"{version}/{split}",
                            version=OUTPUTS_FORMAT)

    def outputs(self, split: str = "eval", version: str = ORIG, *, progress: Progress | None = None,
                rebuild: bool = False, device: str = "auto", batch_size: int = 256) -> InferenceOutputs:
        """Inference outputs of a model version on a split, from the artifact store or one model pass.

        Args:
            progress: ``progress(done, total)`` during a model pass; raise from it to cancel.
            rebuild: ignore an existing entry.
            device: "auto", "cpu", "cuda[:i]" or "mps" (checked even when the cache is reused).
        """
        dev = select_device(device)

        def compute() -> InferenceOutputs:
            model = self.model(version)
            data = self.split(split)
            outputs = run_inference(
                model, make_loader(self.dataset(split), batch_size=batch_size),
                tap=self.embedding_tap(model), labels=data.labels, class_names=data.class_names,
                task=self.task, threshold=self.config.threshold, device=dev, progress=progress,
            )
            if dev.type != "cpu":
                model.to("cpu")
            outputs.split, outputs.model_version = split, version
            return outputs

        # memory-mapped: a 1,000,000 x 1,000 cache opens without reading its gigabytes
        outputs = self.artifacts.get_or_compute("outputs", self.outputs_key(split, version), compute,
                                                slot=f"{version}/{split}", version=OUTPUTS_FORMAT, rebuild=rebuild,
                                                mmap=True)
        outputs.split, outputs.model_version = split, version
        return outputs


def _recent_file() -> Path:
    return groupfix_home() / "recent.json"


def recent_workspaces() -> list[str]:
    try:
        return [s for s in json.loads(_recent_file().read_text()) if isinstance(s, str)]
    except (OSError, ValueError):
        return []


def remember_workspace(spec: str) -> None:
    items = [spec] + [s for s in recent_workspaces() if s != spec]
    try:
        _recent_file().parent.mkdir(parents=True, exist_ok=True)
        _recent_file().write_text(json.dumps(items[:10]))
    except OSError:
        pass  # the recent list is a convenience; never fail a load over it


def open_workspace(spec: str | Path, *, progress: Progress | None = None, recheck: bool = False) -> Workspace:
    """Open a workspace by name (``demo``, ``demo-digits[:bias]``) or workspace-file path.

    Args:
        recheck: list every data folder again instead of trusting the listing cache (which is
            checked by folder modification times, so an image replaced in place is only seen
            after a recheck).

    Raises:
        WorkspaceError: anything wrong with the file, the model or the data, in one line.
    """
    spec = str(spec).strip()
    if spec == "demo" or spec.startswith("demo-digits"):
        from workspace.demo_workspace import open_demo

        return open_demo(spec, progress=progress)
    ws = Workspace(load_config(spec), spec=str(Path(spec).expanduser().resolve()), recheck=recheck, register=False)
    ws.load_model(ORIG)  # fail now, with the reason, rather than on the first page (and before any store write)
    ws.register_orig()
    return ws


__all__ = ["Workspace", "open_workspace", "recent_workspaces", "remember_workspace", "ORIG",
           "SPLITS", "groupfix_home", "file_sha256", "ModelSpec", "select_device"]
