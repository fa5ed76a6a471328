"""The workspace file (``workspace.toml``) of DESIGN.md section 3.

A workspace names a model, its data splits and the transform that feeds the model.
Paths are relative to the folder holding the file. Parsing validates everything that
can be checked without loading a model or an image, and reports the first problem as a
:class:`~workspace.errors.WorkspaceError`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from workspace.errors import WorkspaceError

TASKS = ("single_label", "multi_label")
DATA_FORMATS = ("imagefolder", "csv")
AUGMENTATIONS = ("flip_crop", "crop", "none")


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
    format: str
    train: Path
    eval: Path
    classes: tuple[str, ...] | None  # None = "auto"
    masks: Path | None = None
    label_separator: str = "|"


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


def _path(root: Path, value, what: str, *, must_exist: bool = True) -> Path:
    if not isinstance(value, str) or not value:
        raise WorkspaceError(f"{what} must be a non-empty path string, got {value!r}")
    path = (root / value).resolve()
    if must_exist and not path.exists():
        raise WorkspaceError(f"{what} not found: {path}")
    return path


def _choice(value, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise WorkspaceError(f"{what} = {value!r} is not valid; choose one of {', '.join(valid)}")
    return value


def _classes(root: Path, value) -> tuple[str, ...] | None:
    if value in (None, "auto"):
        return None
    if isinstance(value, list):
        names = [str(v) for v in value]
    elif isinstance(value, str):
        path = _path(root, value, "classes file")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        raise WorkspaceError(f"classes must be 'auto', a list or a file path, got {value!r}")
    if len(set(names)) != len(names):
        raise WorkspaceError("classes contains duplicate names")
    if len(names) < 2:
        raise WorkspaceError("a classifier needs at least 2 classes")
    return tuple(names)


def parse_config(raw: dict, root: Path, *, source: Path | None = None) -> WorkspaceConfig:
    """Validate a parsed workspace TOML document.

    Args:
        raw: the TOML document as a dict.
        root: folder that relative paths are resolved against.
        source: the file it came from, for messages.

    Raises:
        WorkspaceError: the first problem found, in one line.
    """
    root = Path(root).resolve()
    for section in ("model", "data"):
        if not isinstance(raw.get(section), dict):
            raise WorkspaceError(f"workspace file needs a [{section}] section")
    m = raw["model"]
    kinds = [k for k in ("torchscript", "torchvision", "factory") if m.get(k)]
    if len(kinds) != 1:
        raise WorkspaceError(
            "[model] needs exactly one of torchscript = 'file.pt', torchvision = 'resnet18' "
            f"or factory = 'module:function' (found {', '.join(kinds) or 'none'})"
        )
    factory = m.get("factory")
    if factory is not None and (not isinstance(factory, str) or ":" not in factory):
        raise WorkspaceError(f"factory must look like 'package.module:function', got {factory!r}")
    model = ModelSpec(
        torchscript=_path(root, m["torchscript"], "torchscript model") if m.get("torchscript") else None,
        torchvision=m.get("torchvision"),
        factory=factory,
        weights=_path(root, m["weights"], "model weights") if m.get("weights") else None,
        embedding_layer=str(m.get("embedding_layer", "auto")),
        gradcam_layer=str(m.get("gradcam_layer", "auto")),
    )
    d = raw["data"]
    fmt = _choice(d.get("format", "imagefolder"), DATA_FORMATS, "[data] format")
    for split in ("train", "eval"):
        if not d.get(split):
            raise WorkspaceError(f"[data] needs a {split} = '...' entry")
    data = DataSpec(
        format=fmt,
        train=_path(root, d["train"], "train split"),
        eval=_path(root, d["eval"], "eval split"),
        classes=_classes(root, d.get("classes", "auto")),
        masks=_path(root, d["masks"], "masks") if d.get("masks") else None,
        label_separator=str(d.get("label_separator", "|")),
    )
    t = raw.get("transform", {})
    try:
        transform = TransformSpec(
            resize=int(t.get("resize", 32)),
            crop=int(t["crop"]) if t.get("crop") else None,
            mean=tuple(float(v) for v in t.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(float(v) for v in t.get("std", (0.229, 0.224, 0.225))),
        )
    except (TypeError, ValueError) as exc:
        raise WorkspaceError(f"[transform] has a bad value: {exc}") from None
    if len(transform.mean) != 3 or len(transform.std) != 3 or min(transform.std) <= 0:
        raise WorkspaceError("[transform] mean and std need 3 values each, std > 0")
    if transform.resize < 8:
        raise WorkspaceError(f"[transform] resize must be at least 8 pixels, got {transform.resize}")
    tr = raw.get("train", {})
    try:
        train = TrainSpec(
            lr=float(tr.get("lr", 0.01)),
            epochs=int(tr.get("epochs", 3)),
            batch_size=int(tr.get("batch_size", 128)),
            weight_decay=float(tr.get("weight_decay", 5e-4)),
            momentum=float(tr.get("momentum", 0.9)),
            augment=_choice(tr.get("augment", "flip_crop"), AUGMENTATIONS, "[train] augment"),
        )
    except (TypeError, ValueError) as exc:
        raise WorkspaceError(f"[train] has a bad value: {exc}") from None
    task = _choice(raw.get("task", "single_label"), TASKS, "task")
    threshold = float(raw.get("threshold", 0.5))
    if not 0.0 < threshold < 1.0:
        raise WorkspaceError(f"threshold must be in (0, 1), got {threshold}")
    state = raw.get("state_dir")
    return WorkspaceConfig(
        name=str(raw.get("name") or root.name),
        task=task,
        root=root,
        model=model,
        data=data,
        transform=transform,
        train=train,
        threshold=threshold,
        state_dir=_path(root, state, "state_dir", must_exist=False) if state else None,
        source=source,
    )


def load_config(path: str | Path) -> WorkspaceConfig:
    """Read ``workspace.toml`` (or a folder holding one).

    Raises:
        WorkspaceError: missing file, TOML syntax error or an invalid entry.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "workspace.toml"
    if not path.is_file():
        raise WorkspaceError(f"workspace file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(raw, path.parent, source=path.resolve())
