"""The one training loop: every model the project trains goes through :func:`fit`.

Repair fine-tuning (every method and scope), the GCE biased model of the PGD paper and the
layer updates of BIR differ only in what a batch is, what the loss is and which optimizer
updates which parameters. They pass those in; the loop owns the rest, written once (the
shape of minGPT's ``Trainer`` with callbacks):

* epochs over a batch source (``batches(epoch)`` -> an iterable), an optional step budget;
* ``loss_fn(batch) -> (loss, n)`` under autocast (CUDA: float16 AMP with a GradScaler);
* optimizer and scheduler steps, gradient clipping, a non-finite loss stopping the run
  with a clear message;
* ``on_step(step, total, loss)`` after every step, ``on_eval(epoch, step, mean_loss)`` every
  ``eval_every`` steps and at every epoch end, ``should_stop()`` before every step
  (True raises :class:`~workspace.errors.Cancelled`).

Device selection, seeding and the training mode of frozen layers are the caller's: the loop
never changes ``model.train()`` state except through ``set_train_mode``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from workspace.errors import Cancelled, WorkspaceError

# the largest learning rate any setting accepts: beyond it a step diverges at once (and 1e300 is not
# even a float32); SGD and Adam on image classifiers use 1e-5 .. 1
MAX_LR = 10.0


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_threads(device: torch.device) -> int:
    """Use every core of the machine for CPU training (PyTorch's default may be fewer)."""
    import os

    if device.type == "cpu":
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


@dataclass
class FitResult:
    steps: int
    last_loss: float | None
    stopped_early: bool = False


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: Callable[[Any], tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    device: torch.device,
    scheduler=None,
    amp: bool | None = None,
    max_steps: int | None = None,
    grad_clip: float | None = None,
    eval_every: int = 0,
    set_train_mode: Callable[[], None] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_eval: Callable[[float, int, float | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    stop_epoch: Callable[[int, float], bool] | None = None,
) -> FitResult:
    """Train ``model`` in place.

    Args:
        batches: ``batches(epoch)`` gives that epoch's batches (any objects ``loss_fn`` reads).
        loss_fn: ``loss_fn(batch) -> (loss, n)``; n = samples in the batch (for the mean loss);
            return ``(None, 0)`` to skip a batch (e.g. every image failed to decode).
        steps_per_epoch: for progress and the evaluation schedule.
        amp: autocast + GradScaler; default: on for CUDA only.
        max_steps: stop after this many steps in total (a quick run's budget).
        eval_every: also call ``on_eval`` every this many steps (0: only at epoch ends).
        set_train_mode: called before every epoch and after every evaluation (default:
            ``model.train()``); frozen-layer scopes pass their own.
        stop_epoch: ``stop_epoch(epoch, mean_loss) -> bool`` after each epoch: True ends the
            run (early stopping on a training loss that stopped falling).

    Raises:
        Cancelled: ``should_stop()`` returned True.
        WorkspaceError: the loss became NaN or infinite.
    """
    amp = device.type == "cuda" if amp is None else bool(amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    set_train_mode = set_train_mode or model.train
    total = epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, int(max_steps))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    step, last = 0, None
    for epoch in range(epochs):
        set_train_mode()
        running, seen = 0.0, 0
        for batch in batches(epoch):
            if should_stop is not None and should_stop():
                raise Cancelled()
            with torch.autocast(device.type, enabled=amp):
                loss, n = loss_fn(batch)
            if loss is None:
                continue
            if not torch.isfinite(loss):
                raise WorkspaceError(f"the training loss became {loss.item()} at step {step}; lower the "
                                     "learning rate (or check the data for broken images)")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            step += 1
            last = float(loss.item())
            running, seen = running + last * n, seen + n
            if on_step is not None:
                on_step(step, total, last)
            at_end = step >= total
            if eval_every and step % eval_every == 0 and step % steps_per_epoch and not at_end:
                if on_eval is not None:
                    on_eval(step / steps_per_epoch, step, running / max(seen, 1))
                set_train_mode()
            if at_end:
                break
        mean = running / max(seen, 1) if seen else None
        if on_eval is not None:
            on_eval(step / steps_per_epoch if step >= total else float(epoch + 1), step, mean)
        if step >= total:
            break
        if stop_epoch is not None and mean is not None and stop_epoch(epoch, mean):
            return FitResult(step, last, stopped_early=True)
    return FitResult(step, last)


class Patience:
    """``stop_epoch`` for :func:`fit`: stop once the loss has not improved by ``min_delta``
    for ``patience`` epochs ("until the loss stops improving")."""

    def __init__(self, patience: int = 2, min_delta: float = 1e-4):
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best, self.bad = float("inf"), 0

    def __call__(self, epoch: int, loss: float) -> bool:
        if loss < self.best - self.min_delta:
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience
