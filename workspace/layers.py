"""The coarse structure of a model: its stem, its stages and its head, found from the module tree.

Several features act on "the last block", "the head" or "layer subsets" of a model the user
brought, without knowing its code: the repair scopes (``last-block`` trains the last stage and
the head; ``head`` only the final ``nn.Linear``) and BIR's candidate layer subsets
("Retaining Beneficial Information from Detrimental Data for DNN Repair", Appendix A.2: for a
ResNet, Layer 1 = the first convolution, Layers 2-4 = the three stages, Layer 5 = the
fully-connected layer).

:func:`model_units` finds them the same way for any ``nn.Module``:

1. the parameterised leaf modules in the order the forward pass calls them;
2. grouped by their top-level child (``layer1.0.conv1`` -> ``layer1``); when one group holds
   most of the parameters and has children of its own (``features`` of a VGG), it is split
   one level further;
3. runs of top-level leaves (``conv1``, ``bn1``) form one unit, split after a pooling layer
   (VGG-style feature stacks);
4. the final classifier (the last ``nn.Linear`` with K outputs) is always a unit of its own, the
   head; what shared a group with it (a VGG classifier's hidden layers) stays a unit before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workspace.errors import WorkspaceError

POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class Unit:
    """A group of modules trained or frozen together.

    Attributes:
        name: e.g. ``"layer3"``, ``"conv1+bn1"``, ``"linear"``.
        modules: names of the leaf modules it holds (with parameters or buffers).
        role: "stem", "stage" or "head".
    """

    name: str
    modules: tuple[str, ...]
    role: str

    def parameter_names(self, model: nn.Module) -> list[str]:
        owned = set(self.modules)
        return [n for n, _ in model.named_parameters() if n.rpartition(".")[0] in owned]


def _call_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    order: list[tuple[str, nn.Module]] = []
    seen: set[str] = set()
    handles = []
    for name, module in model.named_modules():
        if name and len(list(module.children())) == 0:
            def hook(m, i, o, n=name):
                if n not in seen:
                    seen.add(n)
                    order.append((n, m))
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()  # never let the probe touch BatchNorm running statistics
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def _size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def model_units(model: nn.Module, example: torch.Tensor, num_classes: int) -> list[Unit]:
    """Stem, stages and head of ``model`` in forward order (see the module docstring).

    Raises:
        WorkspaceError: a TorchScript model (no hooks) or no final ``nn.Linear`` with K outputs.
    """
    if isinstance(model, torch.jit.ScriptModule):
        raise WorkspaceError("TorchScript models have no module tree to select layers from")
    order = _call_order(model, example)
    head = next((n for n, m in reversed(order) if isinstance(m, nn.Linear) and m.out_features == num_classes), None)
    if head is None:
        raise WorkspaceError(f"could not find the final nn.Linear with {num_classes} outputs")
    total = sum(_size(m) for _, m in order) or 1

    def group_key(name: str, depth: int) -> str:
        return ".".join(name.split(".")[:depth])

    depth = 1
    while True:
        sizes: dict[str, int] = {}
        for name, m in order:
            sizes[group_key(name, depth)] = sizes.get(group_key(name, depth), 0) + _size(m)
        big = max(sizes, key=sizes.get)
        split_further = (sizes[big] > 0.6 * total and len(sizes) < 4
                         and any(n.startswith(big + ".") and n.count(".") >= depth for n, _ in order))
        if not split_further or depth >= 4:
            break
        depth += 1

    units: list[list[str]] = []
    keys: list[str | None] = []
    for name, m in order:
        if name == head:
            continue
        key = group_key(name, depth)
        is_leaf_group = key == name  # a top-level leaf such as conv1
        current = keys[-1] if keys else None
        if units and ((not is_leaf_group and current == key) or (is_leaf_group and current is None)):
            units[-1].append(name)
        else:
            units.append([name])
            keys.append(None if is_leaf_group else key)
        if is_leaf_group and isinstance(m, POOLING):
            keys[-1] = "|closed|"  # a pooling layer ends a run of leaves
    modules = dict(order)
    result: list[Unit] = []
    for names, key in zip(units, keys):
        kept = tuple(n for n in names if _has_state(modules[n]))
        if not kept:
            continue
        if key not in (None, "|closed|"):
            label = key
        else:
            label = kept[0] if len(kept) == 1 else (f"{kept[0]}+{kept[1]}" if len(kept) == 2 else f"{kept[0]}…{kept[-1]}")
        result.append(Unit(label, kept, "stage"))
    if result:
        result[0] = Unit(result[0].name, result[0].modules, "stem")
    result.append(Unit(head, (head,), "head"))
    return result


def head_unit(units: list[Unit]) -> Unit:
    return units[-1]


def last_block(units: list[Unit]) -> list[Unit]:
    """The ``last-block`` scope: the last unit before the head, and the head."""
    return units[-2:] if len(units) >= 2 else units[-1:]


def freeze_except(model: nn.Module, trainable: list[Unit]) -> tuple[list[str], list[str]]:
    """Set ``requires_grad`` so only the units' parameters train.

    Returns:
        ``(trainable parameter names, frozen module names)``; the caller keeps the frozen
        modules in eval mode while training (so their BatchNorm statistics do not move).
    """
    owned = {m for u in trainable for m in u.modules}
    names = []
    for n, p in model.named_parameters():
        train = n.rpartition(".")[0] in owned
        p.requires_grad_(train)
        if train:
            names.append(n)
    frozen = [n for n, m in model.named_modules() if n and len(list(m.children())) == 0 and n not in owned
              and _has_state(m)]
    return names, frozen


def train_mode_setter(model: nn.Module, frozen_modules: list[str]):
    """A ``set_train_mode`` for the training loop: ``model.train()``, frozen modules in eval."""
    modules = dict(model.named_modules())

    def set_mode() -> None:
        model.train()
        for n in frozen_modules:
            modules[n].eval()

    return set_mode


# ---- a head with a fixed neuron mask (NeuronTune-style regulation) ---------------------------------
class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose input is multiplied by a fixed mask: ``W (x * mask) + b``.

    The mask is a buffer, so it is saved in (and restored from) the state dict under
    ``<head>.mask`` next to ``<head>.weight`` and ``<head>.bias``, which keep their names.

    Args:
        in_features, out_features, bias: as for ``nn.Linear``.
        mask: (in_features,) 0/1 keep-mask (1 keeps a neuron).
    """

    def __init__(self, in_features: int, out_features: int, mask, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        mask = torch.as_tensor(np.asarray(mask, dtype=np.float32), device=device)
        if mask.shape != (in_features,):
            raise WorkspaceError(f"the neuron mask has {tuple(mask.shape)} entries; the head takes {in_features}")
        self.register_buffer("mask", mask.to(self.weight.dtype))

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask) -> "MaskedLinear":
        """A masked copy of ``linear`` (same weights, device and dtype)."""
        out = cls(linear.in_features, linear.out_features, mask, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(linear.weight)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.mask, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, masked={int((self.mask == 0).sum())}"


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name) if parent_name else model
        getattr(parent, child)
    except AttributeError:
        raise WorkspaceError(f"the model has no module {name!r}") from None
    return parent, child


def install_masked_head(model: nn.Module, name: str, mask, *, head: nn.Linear | None = None) -> MaskedLinear:
    """Replace the ``nn.Linear`` at ``name`` (e.g. ``"fc"``) by a :class:`MaskedLinear`, in place.

    Args:
        model: the model to modify (pass a copy to keep the original).
        name: dotted module name of the head.
        mask: (D,) keep-mask.
        head: weights for the new head (e.g. from :func:`retrain_head`); default: the
            current head's weights.

    Returns:
        The installed module.

    Raises:
        WorkspaceError: no such module, or it is not an ``nn.Linear``.
    """
    parent, child = _parent(model, name)
    current = getattr(parent, child)
    if not isinstance(current, nn.Linear):
        raise WorkspaceError(f"{name!r} is a {type(current).__name__}, not the nn.Linear head")
    source = head if head is not None else current
    masked = MaskedLinear.from_linear(source, mask)
    masked.to(device=current.weight.device, dtype=current.weight.dtype)
    setattr(parent, child, masked)
    return masked


def mask_from_state_dict(state: dict, name: str) -> np.ndarray | None:
    """The keep-mask a state dict carries for the head ``name`` (``<name>.mask``), or None."""
    value = state.get(f"{name}.mask")
    return None if value is None else np.asarray(torch.as_tensor(value).detach().cpu().numpy(), dtype=np.float32)


def head_fits_outputs(head: nn.Linear, outputs) -> bool:
    """The cached logits really are ``head(embedding)`` (nothing after the head)."""
    if outputs.embeddings is None or outputs.embeddings.shape[1] != head.in_features:
        return False
    rows = slice(0, min(64, outputs.n))
    with torch.no_grad():
        z = head(torch.from_numpy(np.array(outputs.embeddings[rows], dtype=np.float32))).numpy()
    return bool(np.allclose(z, outputs.logits[rows], rtol=1e-3, atol=1e-3))
