"""Building the user's model and finding the layers the diagnostics hook into.

Three ways to get a model (DESIGN.md section 3):

* ``torchvision = "resnet18"`` + ``weights``: the architecture from torchvision with the
  head sized to the workspace's classes; nothing is downloaded.
* ``factory = "pkg.module:build"`` + optional ``weights``: the user's own code, imported
  from the workspace folder. This runs arbitrary code and is therefore an explicit opt-in.
* ``torchscript = "model.pt"``: a scripted model. PyTorch does not run Python forward
  hooks on scripted modules, so the embedding is only available when the script exports an
  ``embed(x)`` method, and Grad-CAM and the w-bn repair (which need hooks or module
  surgery) are unavailable. :func:`model_capabilities` says which features work.

Checkpoints are always read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from workspace.config import ModelSpec
from workspace.errors import WorkspaceError

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when available, else MPS, else CPU (or the device the user names)."""
    if preference != "auto":
        if preference.startswith("cuda") and not torch.cuda.is_available():
            raise WorkspaceError(f"device {preference!r} asked for but CUDA is not available")
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from a raw state_dict or a checkpoint dict holding one.

    Accepts ``{"state_dict" | "model_state_dict" | "model": state_dict, ...}`` and strips
    a ``module.`` prefix (DataParallel / DDP checkpoints).

    Raises:
        WorkspaceError: missing file, a checkpoint that needs unsafe unpickling, or no
            tensors found.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WorkspaceError(
            f"{path.name} needs unsafe unpickling (it stores Python objects, not only tensors), "
            "which is refused; re-save it with torch.save(model.state_dict(), path)"
            + (f" [{first[:160]}]" if first else "")
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WorkspaceError(f"cannot read weights {path.name}: {exc}") from None
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WorkspaceError(
            f"{path.name} holds no state_dict (expected a dict of tensors, or one under "
            f"{', '.join(STATE_DICT_KEYS)})"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict`` with a one-line message naming what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:3]))
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])})")
        raise WorkspaceError(f"weights {source} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state)


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


def call_factory(factory: str, root: Path, num_classes: int) -> nn.Module:
    """Import ``module:function`` from the workspace folder and build the model.

    The function is called with ``num_classes=K`` when it accepts that argument.
    """
    module_name, _, func_name = factory.partition(":")
    with _on_sys_path(root):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
            raise WorkspaceError(f"cannot import factory module {module_name!r} from {root}: {exc}") from None
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


def build_model(spec: ModelSpec, root: Path, num_classes: int) -> nn.Module:
    """Build the architecture and load the workspace's weights (eval mode, CPU)."""
    if spec.kind == "torchscript":
        try:
            model = torch.jit.load(str(spec.torchscript), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise WorkspaceError(f"cannot load TorchScript model {spec.torchscript.name}: {exc}") from None
        return model.eval()
    if spec.kind == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(spec.torchvision, weights=None, num_classes=num_classes)
        except (ValueError, KeyError) as exc:
            raise WorkspaceError(f"unknown torchvision architecture {spec.torchvision!r}: {exc}") from None
    else:
        model = call_factory(spec.factory, root, num_classes)
    if spec.weights is not None:
        apply_state_dict(model, load_checkpoint(spec.weights), source=spec.weights.name)
    return model.eval()


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
