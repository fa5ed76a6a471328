"""Weighted batch normalisation for w-bn (WR paper section 3.3, Figure 6).

Each training step feeds one concatenated batch ``[x; x_target]``: the regular batch ``x``
(``n_regular`` rows) followed by an extra batch drawn only from the target classes. Every
BatchNorm layer then normalises *both* parts with the mixed statistics

    mean = rho * E[x] + (1 - rho) * E[x_target]
    var  = rho * E[(x - mean)^2] + (1 - rho) * E[(x_target - mean)^2]
         = rho * Var[x] + (1 - rho) * Var[x_target] + rho (1 - rho) (E[x] - E[x_target])^2

i.e. the mean and variance of the batch in which the regular samples carry total weight
rho and the target samples 1 - rho ("assigns more weights to those data when estimating
the BN statistics", section 3.3). We read "the mix of the statistics" this way rather than
mixing the two variances alone, which would ignore the spread between the two groups and
shrink the variance for every non-target input. Running statistics are updated with the
same mix (unbiased variances, as PyTorch does). Only the regular batch's loss is back-propagated (the loop slices the
logits); the target part's statistics are detached, so the extra batch shifts the
statistics but receives no gradient from the loss, the dashed box of Figure 6.

The layers are patched in place (their ``forward`` is swapped), so parameter and buffer
names do not change and the fine-tuned weights load into the unmodified architecture.
Outside :func:`weighted_bn` (or in eval mode) the layers behave as ordinary BatchNorm.

Two modes (:data:`MODES`):

* ``"mixed"`` (default): the paper's text as read above, on every BatchNorm layer.
* ``"code"``: what the authors' released code does (its ``dnnrepair_BatchNorm2d``): only the
  last :data:`CODE_LAYERS` BatchNorm layers (in module order) are weighted; every layer
  normalises the whole batch with the *regular* batch's own statistics, so the forward pass of
  the regular samples is plain BatchNorm; only the running statistics mix,
  ``rho * stats(x) + (1 - rho) * stats(x_target)``, each with its unbiased variance and no
  between-group term. The earlier layers' running statistics follow the regular batch alone
  (rho = 1). The extra batch therefore changes nothing during training and acts only at
  evaluation, through the last layers' running statistics.
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from workspace.models import is_scripted

#: "mixed": the paper's text (every layer, mixed batch statistics); "code": the released code.
MODES = ("mixed", "code")
#: How many of the last BatchNorm layers the released code weights.
CODE_LAYERS = 3


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def not_applicable_reason(model: nn.Module) -> str | None:
    """Why w-bn cannot run on ``model`` (None when it can)."""
    if is_scripted(model):
        return "w-bn is not applicable: TorchScript models cannot have their BatchNorm layers re-weighted"
    if not batchnorm_layers(model):
        return "w-bn is not applicable: the model has no BatchNorm layer"
    return None


def _weighted_forward(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    n = getattr(self, "_wbn_n_regular", None)
    if not self.training or n is None or n >= x.shape[0]:
        return self._wbn_original_forward(x)
    rho = float(self._wbn_rho)
    dims = [0] + list(range(2, x.dim()))  # per-channel statistics: (N, C, ...) -> (C,)
    regular, target = x[:n], x[n:].detach()
    v_x, m_x = torch.var_mean(regular.float(), dims, correction=0)  # float32 statistics under AMP
    v_t, m_t = torch.var_mean(target.float(), dims, correction=0)
    mean = rho * m_x + (1 - rho) * m_t
    between = rho * (1 - rho) * (m_x - m_t) ** 2
    var = rho * v_x + (1 - rho) * v_t + between
    if self.track_running_stats and self.running_mean is not None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
            m_reg = max(regular.numel() // regular.shape[1], 2)
            m_tgt = max(target.numel() // target.shape[1], 2)
            unbiased = rho * v_x * m_reg / (m_reg - 1) + (1 - rho) * v_t * m_tgt / (m_tgt - 1) + between
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
    shape = [1, -1] + [1] * (x.dim() - 2)
    scale = torch.rsqrt(var + self.eps)  # (C,): fold normalisation and affine into one multiply-add
    shift = -mean * scale
    if self.affine:
        scale, shift = scale * self.weight, shift * self.weight + self.bias
    return torch.addcmul(shift.view(shape), x, scale.view(shape))


def _code_forward(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """The released code's layer: regular-batch normalisation, mixed running statistics."""
    n = getattr(self, "_wbn_n_regular", None)
    if not self.training or n is None or n >= x.shape[0]:
        return self._wbn_original_forward(x)
    rho = float(self._wbn_rho)
    dims = [0] + list(range(2, x.dim()))
    regular = x[:n]
    v_x, m_x = torch.var_mean(regular.float(), dims, correction=0)
    if self.track_running_stats and self.running_mean is not None:
        with torch.no_grad():
            target = x[n:].float()
            v_t, m_t = torch.var_mean(target, dims, correction=0)
            self.num_batches_tracked.add_(1)
            momentum = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
            m_reg = max(regular.numel() // regular.shape[1], 2)
            m_tgt = max(target.numel() // target.shape[1], 2)
            mean = rho * m_x + (1 - rho) * m_t
            unbiased = rho * v_x * m_reg / (m_reg - 1) + (1 - rho) * v_t * m_tgt / (m_tgt - 1)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean)
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
    shape = [1, -1] + [1] * (x.dim() - 2)
    scale = torch.rsqrt(v_x + self.eps)
    shift = -m_x * scale
    if self.affine:
        scale, shift = scale * self.weight, shift * self.weight + self.bias
    return torch.addcmul(shift.view(shape), x, scale.view(shape))


def patch_model(model: nn.Module, rho: float, *, mode: str = "mixed") -> list[_BatchNorm]:
    """Swap every BatchNorm layer's forward for the weighted one (idempotent).

    Args:
        rho: the regular batch's weight in [0, 1].
        mode: "mixed" (the paper's text: every layer) or "code" (the released code: regular-batch
            normalisation everywhere, rho on the running statistics of the last
            :data:`CODE_LAYERS` layers only, rho = 1 on the others).

    Returns:
        The patched layers, in module order.
    """
    if mode not in MODES:
        raise ValueError(f"w-bn mode must be one of {', '.join(MODES)}, got {mode!r}")
    layers = batchnorm_layers(model)
    forward = _weighted_forward if mode == "mixed" else _code_forward
    for i, bn in enumerate(layers):
        if hasattr(bn, "_wbn_original_forward"):
            del bn.forward  # re-patching in another mode: start from the class's forward again
        bn._wbn_original_forward = bn.forward
        bn.forward = types.MethodType(forward, bn)
        weighted = mode == "mixed" or i >= len(layers) - CODE_LAYERS
        bn._wbn_rho = float(rho) if weighted else 1.0
        bn._wbn_n_regular = None
    return layers


def unpatch_model(model: nn.Module) -> None:
    """Restore plain BatchNorm behaviour (the weights are untouched)."""
    for bn in batchnorm_layers(model):
        if hasattr(bn, "_wbn_original_forward"):
            del bn.forward  # the instance attribute; the class method shows again
            for name in ("_wbn_original_forward", "_wbn_rho", "_wbn_n_regular"):
                if hasattr(bn, name):
                    delattr(bn, name)


@contextmanager
def weighted_bn(model: nn.Module, n_regular: int):
    """Within the block, the first ``n_regular`` rows of a batch are the regular batch."""
    layers = batchnorm_layers(model)
    for bn in layers:
        bn._wbn_n_regular = int(n_regular)
    try:
        yield
    finally:
        for bn in layers:
            bn._wbn_n_regular = None
