"""The workspace file (``workspace.toml``): its schema, and parsing it into dataclasses.

A workspace names a model, its data splits and the transform that feeds the model.
Paths are relative to the folder holding the file. Parsing validates everything that
can be checked without loading a model or an image against :data:`SCHEMA`: an unknown
section or key is an error that suggests the nearest valid name (a typo such as
``weigths`` must never silently open a model with random weights), and every value's
type and range is checked (NaN and infinities are refused). The first problem is
reported as a :class:`~workspace.errors.WorkspaceError` of one line naming the file, the
line and the key, e.g. ``/ws/workspace.toml:5: [model] unknown key 'weigths'; did you
mean 'weights'?``.

Every data path (splits, masks, a classes file) must lie inside the workspace folder
unless the file sets ``allow_outside = true``; :class:`DataSpec` carries that folder as
``confine_to`` so :mod:`workspace.data` can hold CSV rows and symlinks to the same rule.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Callable

from workspace.errors import WorkspaceError

TASKS = ("single_label", "multi_label")
DATA_FORMATS = ("imagefolder", "csv")
AUGMENTATIONS = ("flip_crop", "crop", "none")
MODEL_KINDS = ("torchscript", "torchvision", "factory")


@dataclass(frozen=True)
class ModelSpec:
    """How to build the model.

    Exactly one of ``torchscript``, ``torchvision`` or ``factory`` is set.
    ``weights`` is required for ``factory`` models whose function does not load its own
    weights, optional otherwise (a torchvision architecture without weights is random).
    """

    torchscript: Path | None = None
    torchvision: str | None = None
    factory: str | None = None
    weights: Path | None = None
    embedding_layer: str = "auto"
    gradcam_layer: str = "auto"

    @property
    def kind(self) -> str:
        if self.torchscript is not None:
            return "torchscript"
        if self.torchvision is not None:
            return "torchvision"
        return "factory"

    @property
    def file(self) -> Path | None:
        """The file whose checksum identifies the loaded model."""
        return self.torchscript if self.torchscript is not None else self.weights


@dataclass(frozen=True)
class DataSpec:
    """The ``[data]`` section with paths resolved.

    Attributes:
        reserved: a small clean split (folder or CSV, same format as ``train``) for the
            BIR repair method, or None.
        validation: a held-out split (same format as ``train``), or None.
        confine_to: the folder every data path (CSV rows and symlinks included) must stay
            inside: the workspace folder, or None with ``allow_outside = true`` and for
            in-memory demo data.
    """

    format: str
    train: Path
    eval: Path
    classes: tuple[str, ...] | None  # None = "auto"
    masks: Path | None = None
    label_separator: str = "|"
    reserved: Path | None = None
    validation: Path | None = None
    confine_to: Path | None = None


@dataclass(frozen=True)
class TransformSpec:
    resize: int = 32
    crop: int | None = None  # centre crop after resize; None = resize only (square)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainSpec:
    """Fine-tuning defaults for the repair page; every value can be overridden per run."""

    lr: float = 0.01
    epochs: int = 3
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    augment: str = "flip_crop"


@dataclass(frozen=True)
class WorkspaceConfig:
    name: str
    task: str
    root: Path  # folder holding the workspace file
    model: ModelSpec
    data: DataSpec
    transform: TransformSpec = field(default_factory=TransformSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    threshold: float = 0.5  # multi-label decision threshold
    state_dir: Path | None = None
    source: Path | None = None  # the workspace file itself
    allow_outside: bool = False  # data paths may point outside the workspace folder


# ---- value checks ----------------------------------------------------------------------
class _Bad(Exception):
    """A value that fails its check; the message completes ``<key> = <value> ...``."""


_TOML_TYPES = ((bool, "true/false"), (int, "a whole number"), (float, "a number"), (str, "text"),
               (list, "a list"), (dict, "a table"), (datetime, "a date-time"), (date, "a date"),
               (time, "a time"))


def _kind(value) -> str:
    return next((name for t, name in _TOML_TYPES if isinstance(value, t)), type(value).__name__)


def _got(value) -> str:
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"got {text} ({_kind(value)})"


def _text(*, empty_ok: bool = False) -> Callable:
    def check(value):
        if not isinstance(value, str):
            raise _Bad(f"must be text in quotes, {_got(value)}")
        if not empty_ok and not value.strip():
            raise _Bad("must not be empty")
        return value
    return check


def _path_text(*, optional: bool = False) -> Callable:
    # an optional path may be "" (a workspace file's `masks = ""` means "none")
    def check(value):
        if not isinstance(value, str):
            raise _Bad(f"must be a path in quotes, {_got(value)}")
        if not value.strip() and not optional:
            raise _Bad("must be a non-empty path")
        return value
    return check


def _choice(valid: tuple[str, ...]) -> Callable:
    def check(value):
        if value not in valid:
            raise _Bad(f"is not valid ({_got(value)}); choose one of {', '.join(valid)}")
        return value
    return check


def _bool(value):
    if not isinstance(value, bool):
        raise _Bad(f"must be true or false (no quotes), {_got(value)}")
    return value


def _int(lo: int, hi: int) -> Callable:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"must be a whole number, {_got(value)}")
        if not lo <= value <= hi:
            raise _Bad(f"must be between {lo} and {hi}, got {value}")
        return value
    return check


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"must be a number, {_got(value)}")
    if not math.isfinite(value):
        raise _Bad(f"must be a finite number, got {value}")
    return float(value)


def _float(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable:
    def check(value):
        value = _number(value)
        if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise _Bad(f"must be in {interval}, got {value:g}")
        return value
    return check


def _three(*, positive: bool) -> Callable:
    def check(value):
        if not isinstance(value, list) or len(value) != 3:
            raise _Bad(f"= {value!r}: mean and std need 3 values each (one per RGB channel)")
        out = tuple(_number(v) for v in value)
        if positive and min(out) <= 0:
            raise _Bad(f"values must be > 0, got {list(out)}")
        return out
    return check


def _factory(value):
    value = _text(empty_ok=True)(value)
    if not value:
        return value  # "" = not set, like the other two model kinds
    module, _, function = value.partition(":")
    if not module.strip() or not function.strip():
        raise _Bad(f"must look like 'package.module:function', got {value!r}")
    return value


def _classes(value):
    if isinstance(value, str):
        if not value.strip():
            raise _Bad("must be 'auto', a list of names or a file path, not empty")
        return value
    if not isinstance(value, list):
        raise _Bad(f"must be 'auto', a list of names or a file path, {_got(value)}")
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip()]
    if bad:
        raise _Bad(f"names must be non-empty text, {_got(bad[0])}")
    return [str(v) for v in value]


# None = top-level keys. Every key the parser reads is listed here, and only these.
SCHEMA: dict[str | None, dict[str, Callable]] = {
    None: {
        "name": _text(empty_ok=True),
        "task": _choice(TASKS),
        "threshold": _float(0.0, 1.0, lo_open=True, hi_open=True),
        "state_dir": _path_text(),
        "allow_outside": _bool,
    },
    "model": {
        "torchscript": _path_text(optional=True),
        "torchvision": _text(empty_ok=True),
        "factory": _factory,
        "weights": _path_text(optional=True),
        "embedding_layer": _text(),
        "gradcam_layer": _text(),
    },
    "data": {
        "format": _choice(DATA_FORMATS),
        "train": _path_text(),
        "eval": _path_text(),
        "classes": _classes,
        "masks": _path_text(optional=True),
        "label_separator": _text(),
        "reserved": _path_text(optional=True),
        "validation": _path_text(optional=True),
    },
    "transform": {
        "resize": _int(8, 8192),
        "crop": _int(8, 8192),
        "mean": _three(positive=False),
        "std": _three(positive=True),
    },
    "train": {
        "lr": _float(0.0, 10.0, lo_open=True),
        "epochs": _int(1, 100_000),
        "batch_size": _int(1, 1_000_000),
        "weight_decay": _float(0.0, 1.0),
        "momentum": _float(0.0, 1.0, hi_open=True),
        "augment": _choice(AUGMENTATIONS),
    },
}
SECTIONS = tuple(s for s in SCHEMA if s is not None)


# ---- locating a key in the file's text --------------------------------------------------
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def _key_line(text: str | None, section: str | None, key: str | None) -> int | None:
    """1-based line of ``key =`` inside ``[section]`` (or of the header when key is None).

    tomllib gives no positions, so the text is scanned: headers switch the current
    section; a key matches bare, quoted or dotted (``model.weights = ...`` at the top).
    """
    if text is None:
        return None
    current: str | None = None
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1).strip().strip('"\'')
            if current == section and header_line is None:
                header_line = number
                if key is None:
                    return number
            continue
        if key is None:
            if section is not None and current is None and _assigns(line, section):
                return number  # `model = ...` written as a value
            continue
        if current == section and _assigns(line, key):
            return number
        if current is None and section is not None and _assigns(line, f"{section}.{key}"):
            return number
    if header_line is None and section is not None and key is not None:
        return _key_line(text, section, None)  # an inline table: `model = {...}`
    return header_line


def _assigns(line: str, key: str) -> bool:
    escaped = re.escape(key).replace(r"\.", r"\s*\.\s*")
    return re.match(rf"""^\s*(["']?){escaped}\1\s*=""", line) is not None


class _Source:
    """Formats errors as ``<file>:<line>: <message>``, reading the file's text lazily."""

    def __init__(self, source: Path | None):
        self.source = source
        self._text: str | None = None
        self._read = False

    def text(self) -> str | None:
        if not self._read:
            self._read = True
            try:
                self._text = self.source.read_text(encoding="utf-8") if self.source else None
            except (OSError, UnicodeDecodeError):
                self._text = None
        return self._text

    def error(self, section: str | None, key: str | None, message: str) -> WorkspaceError:
        where = str(self.source) if self.source else "workspace file"
        line = _key_line(self.text(), section, key)
        return WorkspaceError(f"{where}:{line}: {message}" if line else f"{where}: {message}")


def _label(section: str | None, key: str) -> str:
    return f"[{section}] {key}" if section else key


def _suggest(name: str, valid, *, brackets: bool = False) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    shown = [f"[{v}]" if brackets else v for v in valid]
    if close:
        best = f"[{close[0]}]" if brackets else repr(close[0])
        return f"did you mean {best}? (valid: {', '.join(shown)})"
    return f"valid: {', '.join(shown)}"


def _check_schema(raw: dict, src: _Source) -> dict[str | None, dict[str, Any]]:
    """Unknown sections/keys first (a typo explains later errors), then every value."""
    top_known = set(SCHEMA[None])
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise src.error(key, None, f"{key} = {value!r} is not valid: [{key}] is a section, "
                                           f"write its keys under a [{key}] line")
            continue
        if key in top_known:
            continue
        if isinstance(value, dict):
            raise src.error(key, None, f"unknown section [{key}]; {_suggest(key, SECTIONS, brackets=True)}")
        home = next((s for s in SECTIONS if key in SCHEMA[s]), None)
        hint = (f"'{key}' belongs under [{home}]" if home
                else _suggest(key, sorted(top_known | set(SECTIONS))))
        raise src.error(None, key, f"unknown top-level key '{key}'; {hint}")
    for section in SECTIONS:
        for key in raw.get(section, {}):
            if key not in SCHEMA[section]:
                home = next((s for s in SECTIONS if key in SCHEMA[s]), None)
                if key in SCHEMA[None]:  # TOML puts keys after a header into that section
                    hint = f"'{key}' is a top-level key: move it above the first [section] line"
                elif home:
                    hint = f"'{key}' belongs under [{home}]"
                else:
                    hint = _suggest(key, SCHEMA[section])
                raise src.error(section, key, f"[{section}] unknown key '{key}'; {hint}")
    values: dict[str | None, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        given = raw if section is None else raw.get(section, {})
        values[section] = {}
        for key, check in keys.items():
            if key not in given:
                continue
            try:
                values[section][key] = check(given[key])
            except _Bad as exc:
                raise src.error(section, key, f"{_label(section, key)} {exc}") from None
    return values


# ---- paths ------------------------------------------------------------------------------
class _Paths:
    def __init__(self, root: Path, src: _Source, confine: bool):
        self.root, self.src, self.confine = root, src, confine

    def resolve(self, section: str | None, key: str, value: str, what: str, *, must_exist: bool = True,
                data: bool = False) -> Path:
        path = (self.root / Path(value).expanduser()).resolve()
        if data and self.confine and not path.is_relative_to(self.root):
            raise self.src.error(section, key, (
                f"{_label(section, key)} = {value!r} is outside the workspace folder {self.root} "
                f"({path}); move the data inside it or set allow_outside = true at the top of the file"))
        if must_exist and not path.exists():
            raise self.src.error(section, key, f"{what} not found ({_label(section, key)} = {value!r}): {path}")
        return path


def _classes_value(value, paths: _Paths) -> tuple[str, ...] | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, list):
        names = value
    else:
        path = paths.resolve("data", "classes", value, "classes file", data=True)
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise paths.src.error("data", "classes", f"[data] classes file {path} cannot be read: {exc}") from None
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise paths.src.error("data", "classes", f"[data] classes has duplicate names: {', '.join(duplicates[:5])}")
    if len(names) < 2:
        raise paths.src.error("data", "classes", f"[data] classes: a classifier needs at least 2 classes, "
                                                 f"got {len(names)}")
    return tuple(names)


def parse_config(raw: dict, root: Path, *, source: Path | None = None) -> WorkspaceConfig:
    """Validate a parsed workspace TOML document against :data:`SCHEMA`.

    Args:
        raw: the TOML document as a dict.
        root: folder that relative paths are resolved against (the workspace folder).
        source: the file it came from; its text is read (only on error) to give the
            line of the offending key.

    Returns:
        The config; data paths are resolved, exist, and lie inside ``root`` unless
        ``allow_outside = true``.

    Raises:
        WorkspaceError: the first problem found, in one line ``<file>:<line>: <message>``:
            an unknown section or key (with the nearest valid name), a value of the wrong
            type or out of range, a missing file, a data path outside the folder.
    """
    root = Path(root).resolve()
    src = _Source(Path(source) if source else None)
    if not isinstance(raw, dict):
        raise src.error(None, None, "the workspace file must be a TOML document of keys and sections")
    v = _check_schema(raw, src)
    top, m, d, t, tr = v[None], v["model"], v["data"], v["transform"], v["train"]
    for section in ("model", "data"):
        if section not in raw:
            raise src.error(None, None, f"the workspace file needs a [{section}] section")

    kinds = [k for k in MODEL_KINDS if m.get(k)]
    if len(kinds) != 1:
        raise src.error("model", kinds[1] if len(kinds) > 1 else None, (
            "[model] needs exactly one of torchscript = 'file.pt', torchvision = 'resnet18' "
            f"or factory = 'module:function' (found {', '.join(kinds) or 'none'})"))
    allow_outside = top.get("allow_outside", False)
    paths = _Paths(root, src, confine=not allow_outside)
    model = ModelSpec(
        torchscript=paths.resolve("model", "torchscript", m["torchscript"], "torchscript model") if m.get("torchscript") else None,
        torchvision=m.get("torchvision") or None,
        factory=m.get("factory"),
        weights=paths.resolve("model", "weights", m["weights"], "model weights") if m.get("weights") else None,
        embedding_layer=m.get("embedding_layer", "auto"),
        gradcam_layer=m.get("gradcam_layer", "auto"),
    )

    task = top.get("task", "single_label")
    fmt = d.get("format", "imagefolder")
    for split in ("train", "eval"):
        if split not in d:
            raise src.error("data", None, f"[data] needs a {split} = '...' entry")
    if task == "multi_label" and fmt != "csv":
        raise src.error("data", "format", "task = 'multi_label' needs [data] format = 'csv' (path,labels)")

    def data_path(key: str) -> Path | None:
        what = "masks" if key == "masks" else f"{key} split"
        return paths.resolve("data", key, d[key], what, data=True) if d.get(key) else None

    data = DataSpec(
        format=fmt,
        train=data_path("train"),
        eval=data_path("eval"),
        classes=_classes_value(d.get("classes"), paths),
        masks=data_path("masks"),
        label_separator=d.get("label_separator", "|"),
        reserved=data_path("reserved"),
        validation=data_path("validation"),
        confine_to=None if allow_outside else root,
    )

    transform = TransformSpec(
        resize=t.get("resize", 32),
        crop=t.get("crop"),
        mean=t.get("mean", (0.485, 0.456, 0.406)),
        std=t.get("std", (0.229, 0.224, 0.225)),
    )
    if transform.crop is not None and transform.crop > transform.resize:
        raise src.error("transform", "crop", f"[transform] crop = {transform.crop} is larger than "
                                             f"resize = {transform.resize}; the centre crop must fit")
    train = TrainSpec(**tr)
    state = top.get("state_dir")
    return WorkspaceConfig(
        name=top.get("name") or root.name,
        task=task,
        root=root,
        model=model,
        data=data,
        transform=transform,
        train=train,
        threshold=top.get("threshold", 0.5),
        state_dir=paths.resolve(None, "state_dir", state, "state_dir", must_exist=False) if state else None,
        source=Path(source) if source else None,
        allow_outside=allow_outside,
    )


def load_config(path: str | Path) -> WorkspaceConfig:
    """Read ``workspace.toml`` (or a folder holding one).

    Raises:
        WorkspaceError: missing file, TOML syntax error or an invalid entry (see
            :func:`parse_config`), in one line.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "workspace.toml"
    if not path.is_file():
        raise WorkspaceError(f"workspace file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise WorkspaceError(f"{path}:{line}: not UTF-8 text ({exc.reason}, byte 0x{data[exc.start]:02x} "
                             f"at offset {exc.start}); save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise WorkspaceError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(raw, path.parent, source=path.resolve())
