"""Building the user's model and finding the layers the diagnostics hook into.

Three ways to get a model:

* ``torchvision = "resnet18"`` + ``weights``: the architecture from torchvision with the
  head sized to the workspace's classes; nothing is downloaded.
* ``factory = "pkg.module:build"`` + optional ``weights``: the user's own code, imported
  from the workspace folder. This runs arbitrary code and is therefore an explicit opt-in.
* ``torchscript = "model.pt"``: a scripted model. PyTorch does not run Python forward
  hooks on scripted modules, so the embedding is only available when the script exports an
  ``embed(x)`` method, and Grad-CAM and the w-bn repair (which need hooks or module
  surgery) are unavailable. :func:`model_capabilities` says which features work.

Checkpoints are read as found in the wild (:func:`read_weights`): ``torch.save`` files,
always with ``torch.load(..., weights_only=True)``, and ``.safetensors``; wrapper prefixes,
checkpoint containers and EMA weights are recognised, and BatchNorm layers saved before
``num_batches_tracked`` existed are filled as PyTorch does. Weights that do not fit are an
error, never a partial load.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from workspace.config import ModelSpec
from workspace.errors import WorkspaceError

DEVICE_TYPES = ("cpu", "cuda", "mps")


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when available, else MPS, else CPU (or the device the user names, checked).

    Raises:
        WorkspaceError: an unknown device name, or one this machine does not have.
    """
    preference = str(preference or "auto").strip().lower()
    if preference != "auto":
        kind, _, number = preference.partition(":")
        if kind not in DEVICE_TYPES or (number and not number.isdigit()) or (number and kind != "cuda"):
            raise WorkspaceError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps")
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise WorkspaceError(f"device {preference!r} asked for but CUDA is not available on this machine")
            if number and int(number) >= torch.cuda.device_count():
                raise WorkspaceError(f"device {preference!r}: this machine has {torch.cuda.device_count()} GPU(s)")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
            raise WorkspaceError("device 'mps' asked for but Apple MPS is not available on this machine")
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --------------------------------------------------------------------------------------
# Checkpoints as found in the wild
# --------------------------------------------------------------------------------------

#: Container keys that hold exponential-moving-average weights; preferred when present
#: (timm saves ``state_dict_ema``, torchvision's reference scripts ``model_ema``).
EMA_KEYS = ("state_dict_ema", "model_ema")
#: Container keys that hold the plain weights (our own repair checkpoints use ``model``;
#: PyTorch Lightning ``.ckpt`` files use ``state_dict``).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
#: Key prefixes that wrappers add: DataParallel / DDP and torchvision's EMA (``module.``),
#: ``torch.compile`` (``_orig_mod.``), LightningModules holding the network as an
#: attribute (``model.`` / ``net.``). They may be stacked (``module._orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
#: Prefixes that :func:`load_checkpoint` strips without seeing the model: they come only
#: from wrappers, whereas ``model.`` / ``net.`` may be the user's own attribute names.
_MODEL_FREE_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED_LAYERS = 6
_WEIGHT_SUFFIXES = (".pt", ".pth", ".th", ".ckpt", ".bin", ".safetensors", ".tar")


@dataclass(frozen=True)
class LoadedWeights:
    """A state_dict that fits a model, and how it was read from its file.

    Attributes:
        state: the state_dict with exactly the model's keys and shapes, ready for
            ``model.load_state_dict(state)`` (strict).
        path: the weights file.
        source_key: the container key the weights came from (``"state_dict"``,
            ``"state_dict_ema"``, ...), or None for a plain state_dict.
        prefix: the key prefix stripped (``"module."``, ``"model."``, ...), ``""`` for none.
        filled_buffers: BatchNorm ``num_batches_tracked`` keys the file lacked (saved by
            PyTorch before 0.4.1), filled with 0 as PyTorch's own loader does.
        notes: anything else worth telling the user (other containers not used, keys
            outside the prefix that were left out).
    """

    state: dict[str, torch.Tensor]
    path: Path
    source_key: str | None = None
    prefix: str = ""
    filled_buffers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def is_ema(self) -> bool:
        return self.source_key in EMA_KEYS

    def summary(self) -> str:
        """One line for people, e.g. ``"state_dict_ema (EMA weights) of r.ckpt; prefix
        'module.' stripped; 55 BatchNorm num_batches_tracked filled"``."""
        if self.source_key is None:
            parts = [f"{self.path.name} (plain state_dict)"]
        else:
            parts = [f"{self.source_key}{' (EMA weights)' if self.is_ema else ''} of {self.path.name}"]
        if self.prefix:
            parts.append(f"prefix {self.prefix!r} stripped")
        if self.filled_buffers:
            parts.append(f"{len(self.filled_buffers)} BatchNorm num_batches_tracked filled")
        return "; ".join(parts + list(self.notes))


def _first_line(exc: BaseException | str, limit: int = 160) -> str:
    """The first sentence of an error, whitespace joined (torch appends long advice)."""
    text = str(exc).strip().split("\n\n")[0]
    text = " ".join(text.split(". ")[0].split()).rstrip(".")
    return text[:limit] + ("..." if len(text) > limit else "")


#: The number torch.save's legacy (pre-1.6, non-zip) format pickles first.
_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head or head[:1] == b"\x80":
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut at the end of the sample
    return True


def _is_safetensors(path: Path, head: bytes) -> bool:
    """``.safetensors`` by name, or by its layout: an 8-byte little-endian header size,
    then the JSON header."""
    if path.suffix == ".safetensors":
        return True
    return len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WorkspaceError(
            f"{path.name} is a .safetensors file; install the safetensors package "
            "(pip install safetensors) to read it"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - the Rust reader raises its own SafetensorError
        raise WorkspaceError(
            f"cannot read {path.name} as safetensors (truncated or corrupt?): {_first_line(exc)}; "
            "copy or download it again"
        ) from None


def _check_zip(path: Path) -> None:
    """Refuse zip archives that are not ``torch.save`` checkpoints, naming what they are."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return  # torch.load reports it (truncated archives land here)
    if any(n.endswith("/constants.pkl") or "/code/__torch__/" in n for n in names):
        raise WorkspaceError(
            f"{path.name} is a TorchScript model, not a state_dict: in the workspace file write "
            f'torchscript = "{path.name}" under [model] instead of torchvision/factory + weights '
            "(or save its weights with torch.save(torch.jit.load(path).state_dict(), 'w.pth'))"
        )
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise WorkspaceError(
            f"{path.name} is a zip archive but not a PyTorch checkpoint (no data.pkl inside; it holds "
            f"{shown or 'nothing'}); point weights at a file written by torch.save or a .safetensors file"
        )


def _read_weights_file(path: Path) -> object:
    """Whatever the file holds (a dict of tensors, a checkpoint dict, ...), read safely.

    Raises:
        WorkspaceError: one line naming the file, what is wrong and what to do.
    """
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        hint = f" (it holds {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})" if inside else ""
        raise WorkspaceError(f"weights {path} is a folder, not a file; name the checkpoint file inside it{hint}")
    if not path.is_file():
        raise WorkspaceError(f"weights file not found: {path}")
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        raise WorkspaceError(f"weights file {path.name} is empty; copy or download it again")
    if _is_safetensors(path, head):
        return _read_safetensors(path)
    if head.startswith(b"version https://git-lfs"):
        raise WorkspaceError(
            f"{path.name} is a Git LFS pointer, not the weights; fetch the real file (git lfs pull)"
        )
    if zipfile.is_zipfile(path):
        _check_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch wraps its weights-only unpickler's reason in advice; the reason comes last.
        reason = str(exc).rpartition("WeightsUnpickler error:")[2] or str(exc)
        if re.search(r"GLOBAL|allowlisted|unrecognized function", reason):
            name = re.search(r"GLOBAL (\S+)", reason)
            what = f": {name.group(1)}" if name else ""
            raise WorkspaceError(
                f"{path.name} needs unsafe unpickling (it stores Python objects, not only tensors{what}), "
                "which is refused; re-save it with torch.save(model.state_dict(), path)"
            ) from None
        detail, error = _first_line(reason), exc
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError, IndexError, RuntimeError, ...
        detail, error = _first_line(exc), exc
    if _looks_like_text(head):
        start = " ".join(head[:40].decode("utf-8", "replace").split())
        raise WorkspaceError(
            f"{path.name} is a text file, not a checkpoint (it begins {start!r}); point weights at a "
            "file written by torch.save or a .safetensors file"
        )
    legacy = head[2:4] == b"\x8a\x0a" and head[4:14] == _LEGACY_MAGIC
    if isinstance(error, EOFError) or "central directory" in detail or head[:2] == b"PK" or legacy:
        raise WorkspaceError(
            f"{path.name} is truncated or corrupt ({type(error).__name__}: {detail}); copy or download it again"
        )
    raise WorkspaceError(
        f"cannot read weights {path.name} ({type(error).__name__}: {detail}); is it a file written by "
        "torch.save or a .safetensors file? If it was copied, it may be truncated: copy it again"
    )


def _holds_tensors(obj: object) -> bool:
    """A state_dict: string keys, some tensor values (an optimizer's int-keyed state is not)."""
    return (isinstance(obj, Mapping) and all(isinstance(k, str) for k in obj)
            and any(isinstance(v, torch.Tensor) for v in obj.values()))


def _state_dict_candidates(obj: object) -> list[tuple[str | None, Mapping]]:
    """The state_dicts a checkpoint holds, best first: EMA, plain containers, then the
    object itself when it is a state_dict."""
    found: list[tuple[str | None, Mapping]] = []
    if isinstance(obj, Mapping):
        for key in EMA_KEYS + STATE_DICT_KEYS:
            if _holds_tensors(obj.get(key)):
                found.append((key, obj[key]))
        if _holds_tensors(obj):
            found.append((None, obj))
    return found


def _no_state_dict_error(path: Path, obj: object) -> WorkspaceError:
    if isinstance(obj, Mapping):
        keys = ", ".join(map(str, list(obj)[:6])) + (", ..." if len(obj) > 6 else "")
        held = f"a dict with keys {keys or 'none'}"
    else:
        held = type(obj).__name__
    return WorkspaceError(
        f"{path.name} holds no state_dict (it holds {held}; expected a dict of tensors, or one under "
        f"{', '.join(EMA_KEYS + STATE_DICT_KEYS)})"
    )


def _strip_prefix(state: Mapping, prefix: str) -> "OrderedDict[str, object]":
    """Keys under ``prefix`` without it; keeps PyTorch's per-module ``_metadata`` (format
    versions) in step so version-aware loaders still see them."""
    out: OrderedDict[str, object] = OrderedDict(
        (k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix)
    )
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        base = prefix[:-1]
        new_meta: OrderedDict[str, dict] = OrderedDict()
        for name, value in meta.items():
            if not prefix:
                new_meta[name] = value
            elif name == base:
                new_meta[""] = value
            elif name.startswith(prefix):
                new_meta[name[len(prefix):]] = value
        out._metadata = new_meta  # type: ignore[attr-defined]
    return out


def _candidate_prefixes(keys) -> list[str]:
    """``""`` and every stack of :data:`WRAPPER_PREFIXES` some key starts with, shortest first."""
    found = {""}
    for key in keys:
        prefix = ""
        while len(prefix) < 64:
            token = next((t for t in WRAPPER_PREFIXES if key.startswith(prefix + t)), None)
            if token is None:
                break
            prefix += token
            found.add(prefix)
    return sorted(found, key=lambda p: (len(p), p))


@dataclass
class _Fit:
    """How one candidate state_dict, read under one prefix, fits the model."""

    state: OrderedDict
    prefix: str
    left_out: list[str]
    filled: list[str]
    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple, tuple]]
    matched: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    @property
    def score(self) -> tuple[int, int, int]:
        # More matching keys wins; then fewer problems; then the shorter prefix, so a
        # prefix is stripped only when that makes the keys fit better.
        problems = len(self.missing) + len(self.unexpected) + len(self.shapes)
        return self.matched, -problems, -len(self.prefix)


def _shape(value) -> tuple | None:
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


def _batchnorm_modules(model: nn.Module) -> set[str]:
    return {
        name for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def _fit(own: Mapping, batchnorms: set[str], state: Mapping, prefix: str) -> _Fit:
    scoped = _strip_prefix(state, prefix)
    left_out = [k for k in state if not k.startswith(prefix)]
    filled = []
    for key in own:
        layer, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked" and key not in scoped and layer in batchnorms:
            # What BatchNorm's own _load_from_state_dict does for checkpoints saved before
            # the buffer existed; done here so the key check below can stay strict.
            scoped[key] = torch.tensor(0, dtype=torch.long)
            filled.append(key)
    missing = [k for k in own if k not in scoped]
    unexpected = [k for k in scoped if k not in own]
    shapes = [(k, _shape(scoped[k]), _shape(v)) for k, v in own.items()
              if k in scoped and _shape(scoped[k]) != _shape(v)]
    matched = sum(1 for k in own if k in scoped) - len(shapes) - len(filled)
    return _Fit(scoped, prefix, left_out, filled, missing, unexpected, shapes, matched)


def _best_fit(model_state: Mapping, batchnorms: set[str], state: Mapping) -> tuple[_Fit, list[str]]:
    prefixes = _candidate_prefixes(state)
    fits = [_fit(model_state, batchnorms, state, p) for p in prefixes]
    return max(fits, key=lambda f: f.score), prefixes


def _dims(shape: tuple | None) -> str:
    if shape is None:
        return "non-tensor"
    return "x".join(map(str, shape)) if shape else "scalar"


def _misfit_message(fit: _Fit, model_keys: list[str], *, source: str, tried: str) -> str:
    """One line grouping what does not fit by layer (module path), model order first."""
    layers: dict[str, dict[str, list[str]]] = {}

    def add(key: str, kind: str) -> None:
        layer, _, leaf = key.rpartition(".")
        layers.setdefault(layer or "(top level)", {}).setdefault(kind, []).append(leaf)

    missing = set(fit.missing)
    shapes = {k: (ckpt, own) for k, ckpt, own in fit.shapes}
    for key in model_keys:
        if key in missing:
            add(key, "missing")
        elif key in shapes:
            # one kind per shape pair, so a BatchNorm reads "weight, bias, ... 16 vs model 64"
            ckpt, own = shapes[key]
            add(key, f"{_dims(ckpt)} vs model {_dims(own)}")
    for key in fit.unexpected:
        add(key, "unexpected")
    texts = []
    for layer, kinds in layers.items():
        parts, shape_parts = [], []
        for kind, leaves in kinds.items():
            if kind in ("missing", "unexpected"):
                parts.append(f"{kind} {', '.join(leaves)}")
            else:
                shape_parts.append(f"{', '.join(leaves)} {kind}")
        if shape_parts:
            parts.append("shape " + "; ".join(shape_parts) if len(shape_parts) == 1
                         else "shapes " + ", ".join(shape_parts))
        texts.append(f"{layer}: {' and '.join(parts)}")
    listed = "; ".join(texts[:_MAX_LISTED_LAYERS])
    if len(texts) > _MAX_LISTED_LAYERS:
        listed += f"; and {len(texts) - _MAX_LISTED_LAYERS} more layers"
    counts = ", ".join(f"{n} {what}" for n, what in (
        (len(fit.missing), "missing"), (len(fit.unexpected), "unexpected"), (len(fit.shapes), "with another shape"),
    ) if n)
    total = len(fit.missing) + len(fit.unexpected) + len(fit.shapes)
    hint = ""
    if fit.matched == 0 and fit.state:
        if not set(fit.state) & set(model_keys):
            hint = (f"none of its keys is the model's (they start {', '.join(list(fit.state)[:2])}), "
                    "so it is probably for another architecture; ")
        else:
            hint = "no key matches in both name and shape, so it is probably for another architecture; "
    used = f"prefix {fit.prefix!r} stripped" if fit.prefix else "no prefix stripped"
    layer_word = "layer" if len(texts) == 1 else "layers"
    return (f"weights {source} do not fit the model: {hint}{total} keys in {len(texts)} {layer_word} "
            f"({counts}): {listed}" + (f" [{used}; tried {tried}]" if tried else ""))


def _tried_prefixes(prefixes: list[str]) -> str:
    return "prefixes " + ", ".join(repr(p) if p else "none" for p in prefixes)


def _fit_candidates(model: nn.Module, candidates: list[tuple[str | None, Mapping]],
                    *, source: str) -> tuple[str | None, _Fit, list[str | None]]:
    """The first candidate (in preference order) that fits under some prefix, and the
    keys of the candidates before it that did not fit.

    Raises:
        WorkspaceError: none fits; the message describes the closest one.
    """
    own = model.state_dict()
    batchnorms = _batchnorm_modules(model)
    results = []
    for key, state in candidates:
        fit, prefixes = _best_fit(own, batchnorms, state)
        if fit.ok:
            return key, fit, [k for k, *_ in results]
        results.append((key, fit, prefixes))
    key, fit, prefixes = max(results, key=lambda r: r[1].score)
    all_prefixes = sorted({p for *_, ps in results for p in ps}, key=lambda p: (len(p), p))
    tried = _tried_prefixes(all_prefixes) if len(all_prefixes) > 1 else ""
    if any(k is not None for k, *_ in results):
        tried = "; ".join(filter(None, ["containers " + ", ".join(k or "(top level)" for k, *_ in results), tried]))
        source = f"{key or '(top level)'} of {source}"
    raise WorkspaceError(_misfit_message(fit, list(own), source=source, tried=tried))


def read_weights(path: Path, model: nn.Module) -> LoadedWeights:
    """Read a weights file as found in the wild and fit its keys to ``model``, strictly.

    Accepted files: ``torch.save`` checkpoints (read with ``weights_only=True``, so unsafe
    pickles are refused) and ``.safetensors``. Accepted layouts: a plain state_dict, or a
    dict holding one under ``state_dict_ema`` / ``model_ema`` (EMA weights, preferred when
    they fit), ``state_dict``, ``model_state_dict``, ``model``, ``net`` or ``weights``
    (other entries such as ``optimizer`` or Lightning's ``hyper_parameters`` are ignored).
    Keys may carry wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``, ``net.``,
    stacked): each candidate prefix is tried and the one under which most keys fit is
    stripped (keys outside it are left out and said so). BatchNorm layers saved before
    ``num_batches_tracked`` existed get it filled with 0, as PyTorch's own loader does.
    The model is not modified.

    Args:
        path: the weights file.
        model: the architecture the weights are for; only its ``state_dict()`` keys and
            shapes are read.

    Returns:
        :class:`LoadedWeights` whose ``state`` has exactly the model's keys and shapes.

    Raises:
        WorkspaceError: an unreadable or unsafe file, or weights that do not fit: the one
            line groups the missing / unexpected / mis-shaped keys by layer and names the
            containers and prefixes tried.
    """
    path = Path(path)
    obj = _read_weights_file(path)
    candidates = _state_dict_candidates(obj)
    if not candidates:
        raise _no_state_dict_error(path, obj)
    key, fit, misfits = _fit_candidates(model, candidates, source=path.name)
    notes = []
    if misfits:
        notes.append(f"{', '.join(k or '(top level)' for k in misfits)} also present but does not fit the model")
    unused = [k for k, _ in candidates if k is not None and k != key and k not in misfits]
    if unused:
        notes.append(f"{', '.join(unused)} also present, not used")
    if fit.left_out:
        n = len(fit.left_out)
        shown = ", ".join(fit.left_out[:3]) + (", ..." if n > 3 else "")
        notes.append(f"{n} key{'s' if n != 1 else ''} outside {fit.prefix!r} left out ({shown})")
    return LoadedWeights(state=fit.state, path=path, source_key=key, prefix=fit.prefix,
                         filled_buffers=tuple(fit.filled), notes=tuple(notes))


def load_weights(model: nn.Module, path: Path) -> LoadedWeights:
    """:func:`read_weights`, then load the result into ``model`` (strict).

    Returns:
        The :class:`LoadedWeights` loaded; ``summary()`` says what was done.
    """
    loaded = read_weights(path, model)
    model.load_state_dict(loaded.state)
    return loaded


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a weights file without knowing the model.

    Same files and containers as :func:`read_weights` (EMA preferred); strips the
    ``module.`` / ``_orig_mod.`` prefixes only when every key has them (``model.`` and
    ``net.`` may be the user's own names, so only :func:`apply_state_dict`, which sees the
    model, strips those).

    Raises:
        WorkspaceError: missing, unreadable or unsafe file, or no tensors found.
    """
    path = Path(path)
    obj = _read_weights_file(path)
    candidates = _state_dict_candidates(obj)
    if not candidates:
        raise _no_state_dict_error(path, obj)
    state = candidates[0][1]
    while True:
        token = next((t for t in _MODEL_FREE_PREFIXES if all(k.startswith(t) for k in state)), None)
        if token is None:
            return state if isinstance(state, dict) else dict(state)
        state = _strip_prefix(state, token)


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load ``state`` into ``model`` strictly, after the same prefix search and
    ``num_batches_tracked`` filling as :func:`read_weights`.

    Raises:
        WorkspaceError: the keys do not fit; one line grouped by layer.
    """
    _, fit, _ = _fit_candidates(model, [(None, state)], source=source)
    model.load_state_dict(fit.state)


@contextmanager
def _on_sys_path(folder: Path):
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        try:
            sys.path.remove(str(folder))
        except ValueError:
            pass


def _forget_foreign_modules(module_name: str, root: Path) -> None:
    """Drop an already imported module of the same name from another folder.

    Two workspaces may both have a ``models.py``; Python's module cache would hand the second
    workspace the first one's code. Only modules whose file lies outside ``root`` are dropped
    (a workspace's own module is imported once and reused).
    """
    top = module_name.split(".")[0]
    root = Path(root).resolve()
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        file = getattr(sys.modules[name], "__file__", None)
        if file is not None and root not in Path(file).resolve().parents:
            if name.split(".")[0] in sys.stdlib_module_names or "site-packages" in file:
                continue  # never shadow an installed package
            del sys.modules[name]


def call_factory(factory: str, root: Path, num_classes: int) -> nn.Module:
    """Import ``module:function`` from the workspace folder and build the model.

    The function is called with ``num_classes=K`` when it accepts that argument.
    """
    module_name, _, func_name = factory.partition(":")
    _forget_foreign_modules(module_name, root)
    write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in the user's folder: their files are only read
    try:
        with _on_sys_path(root):
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
                raise WorkspaceError(f"cannot import factory module {module_name!r} from {root}: {exc}") from None
    finally:
        sys.dont_write_bytecode = write_bytecode
    func = getattr(module, func_name, None)
    if not callable(func):
        raise WorkspaceError(f"factory module {module_name!r} has no function {func_name!r}")
    try:
        params = inspect.signature(func).parameters
        model = func(num_classes=num_classes) if "num_classes" in params else func()
    except Exception as exc:  # noqa: BLE001
        raise WorkspaceError(f"factory {factory} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise WorkspaceError(f"factory {factory} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_model_with_weights(spec: ModelSpec, root: Path,
                             num_classes: int) -> tuple[nn.Module, LoadedWeights | None]:
    """Build the architecture and load the workspace's weights (eval mode, CPU).

    Returns:
        The model, and how its weights were read (None for TorchScript models and for
        models without a ``weights`` file); ``LoadedWeights.summary()`` is the line to show.

    Raises:
        WorkspaceError: see :func:`read_weights`; a TorchScript file given as ``weights``
            is refused with a message pointing at ``torchscript = "..."``.
    """
    if spec.kind == "torchscript":
        try:
            model = torch.jit.load(str(spec.torchscript), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise WorkspaceError(f"cannot load TorchScript model {spec.torchscript.name}: {exc}") from None
        return model.eval(), None
    if spec.kind == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(spec.torchvision, weights=None, num_classes=num_classes)
        except (ValueError, KeyError) as exc:
            raise WorkspaceError(f"unknown torchvision architecture {spec.torchvision!r}: {exc}") from None
    else:
        model = call_factory(spec.factory, root, num_classes)
    loaded = load_weights(model, spec.weights) if spec.weights is not None else None
    return model.eval(), loaded


def build_model(spec: ModelSpec, root: Path, num_classes: int) -> nn.Module:
    """Build the architecture and load the workspace's weights (eval mode, CPU).

    :func:`build_model_with_weights` also says how the weights were read.
    """
    return build_model_with_weights(spec, root, num_classes)[0]


def is_scripted(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def _leaf_call_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Leaf modules in the order the forward pass calls them."""
    order: list[tuple[str, nn.Module]] = []
    handles = []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:
            handles.append(module.register_forward_hook(lambda m, i, o, n=name: order.append((n, m))))
    was_training = model.training
    model.eval()  # never let the probe pass touch BatchNorm running statistics
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order


def find_classifier(model: nn.Module, example: torch.Tensor, num_classes: int) -> str:
    """Name of the final classifier: the last ``nn.Linear`` called with K outputs.

    Raises:
        WorkspaceError: no such layer (the user must name ``embedding_layer``).
    """
    for name, module in reversed(_leaf_call_order(model, example)):
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            return name
    raise WorkspaceError(
        f"could not find the final nn.Linear with {num_classes} outputs; set "
        "embedding_layer = '<module name>' in the workspace file"
    )


def find_last_conv(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last ``nn.Conv2d`` the forward pass calls (Grad-CAM's default layer)."""
    for name, module in reversed(_leaf_call_order(model, example)):
        if isinstance(module, nn.Conv2d):
            return name
    raise WorkspaceError("the model has no Conv2d layer for Grad-CAM; set gradcam_layer in the workspace file")


class EmbeddingTap:
    """Captures the embedding (penultimate features) during a forward pass.

    ``auto`` taps the *input* of the final classifier; a module name taps that module's
    *output*. Either way the embedding is flattened to ``(N, D)``.
    """

    def __init__(self, model: nn.Module, layer: str, example: torch.Tensor, num_classes: int,
                 use_input: bool | None = None):
        self.model = model
        self.value: torch.Tensor | None = None
        self.scripted = is_scripted(model)
        if self.scripted:
            self.layer = "embed()" if hasattr(model, "embed") else None
            self.module = None
            return
        modules = dict(model.named_modules())
        if layer == "auto":
            self.layer = find_classifier(model, example, num_classes)
            self.use_input = True
        else:
            if layer not in modules:
                raise WorkspaceError(f"embedding_layer {layer!r} is not a module of the model")
            self.layer, self.use_input = layer, bool(use_input)
        self.module = modules[self.layer]

    @property
    def available(self) -> bool:
        return self.layer is not None

    def _store(self, tensor: torch.Tensor) -> None:
        self.value = tensor.flatten(1)

    @contextmanager
    def attached(self):
        """Within the block, every forward pass leaves its embedding in ``self.value``."""
        if self.module is None:
            yield self
            return
        if self.use_input:
            handle = self.module.register_forward_pre_hook(lambda m, inp: self._store(inp[0]))
        else:
            handle = self.module.register_forward_hook(lambda m, inp, out: self._store(out))
        try:
            yield self
        finally:
            handle.remove()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and embeddings of a batch (embeddings None when unavailable)."""
        if self.scripted:
            logits = self.model(x)
            return logits, (self.model.embed(x).flatten(1) if self.layer else None)
        self.value = None
        with self.attached():
            logits = self.model(x)
        return logits, self.value


def check_output_size(model: nn.Module, example: torch.Tensor, num_classes: int) -> None:
    """Raise a clear error when the model's output does not have K columns."""
    try:
        with torch.no_grad():
            out = model(example)
    except Exception as exc:  # noqa: BLE001
        raise WorkspaceError(
            f"the model fails on a {tuple(example.shape)} input: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise WorkspaceError(
            f"the model must return a (N, K) logits tensor, got {type(out).__name__} "
            f"{tuple(getattr(out, 'shape', ()))}"
        )
    if out.shape[1] != num_classes:
        raise WorkspaceError(
            f"the model outputs {out.shape[1]} scores per image but the data has {num_classes} "
            "classes; use a model trained on these classes or fix [data] classes"
        )


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def model_capabilities(model: nn.Module) -> dict[str, str | None]:
    """Features that cannot run on this model, with the reason; None means available."""
    scripted = is_scripted(model)
    embed = hasattr(model, "embed")
    hooks = "TorchScript models run no Python hooks; use torchvision or factory models"
    return {
        "embeddings": None if (not scripted or embed) else hooks + " (or export an embed(x) method)",
        "gradcam": hooks if scripted else None,
        "w-bn": hooks if scripted else (None if has_batchnorm(model) else "the model has no BatchNorm layer"),
    }
