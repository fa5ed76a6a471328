"""The GCE-trained "biased model" of the PGD paper ("Mitigating Dataset Bias Using Per-Sample
Gradients from a Biased Classifier", Algorithm 2, step 1).

A copy of the workspace's architecture, re-initialised, is trained on the raw train split with
the generalised cross-entropy ``L = (1 - p_y^q) / q`` (Zhang & Sabuncu 2018, q = 0.7), which
down-weights hard (bias-conflicting) samples so the model leans on the easy, biased cue; its
per-sample gradients then single out the minority. The loaded model is never touched: the
architecture is deep-copied and every module with ``reset_parameters`` is re-initialised.

This module holds the pieces (loss, configuration, the fresh copy); training runs through the
one training loop as a job (:mod:`diagnostics.run_gradients`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from workspace.errors import WorkspaceError
from workspace.training import MAX_LR


@dataclass(frozen=True)
class GCEConfig:
    q: float = 0.7
    epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0

    def validate(self) -> None:
        if not (math.isfinite(self.q) and 0.0 < self.q <= 1.0):
            raise WorkspaceError(f"GCE q must be in (0, 1], got {self.q}")
        if self.epochs < 1 or self.batch_size < 1:
            raise WorkspaceError("GCE epochs and batch size must be >= 1")
        if not (math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise WorkspaceError(f"GCE lr must be a finite number in (0, {MAX_LR:g}], got {self.lr:g}")


def gce_loss(logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Mean generalised cross-entropy ``(1 - p_y^q) / q`` ((B, K) logits, (B,) labels)."""
    p_y = torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).clamp_min(1e-12)
    return ((1.0 - p_y.pow(q)) / q).mean()


def fresh_copy(model: nn.Module) -> nn.Module:
    """A re-initialised deep copy of ``model`` (the loaded model is left as it is)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise WorkspaceError("training a GCE biased model needs a Python model; TorchScript cannot be re-initialised")
    new = copy.deepcopy(model)
    reset = 0
    for module in new.modules():
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
            reset += 1
    if reset == 0:
        raise WorkspaceError("no layer of the model can be re-initialised (no reset_parameters)")
    return new
