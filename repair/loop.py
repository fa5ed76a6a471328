"""The one fine-tuning loop every repair method plugs into (STYLE.md "one loop").

SGD with momentum and a cosine learning-rate decay on the workspace's train split (its train transform: light
augmentation), the method's hooks for sampling weights, an extra batch, model preparation
and the loss; evaluation on the eval split after every epoch (and every
``eval_every_steps`` steps for long epochs) giving accuracy, the target error and the full
confusion matrix. CUDA (with autocast and a GradScaler) > MPS > CPU; on CPU the result is
deterministic given the seed.

The caller passes callbacks: ``on_step(step, total_steps, loss)``, ``on_eval(metric)``,
``should_stop() -> bool`` (checked every step; True raises :class:`Cancelled`) and
``log(text)``. The workspace's cached model is deep-copied, never modified.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from diagnostics.confusion import confusion_counts, error_matrix, target_error
from repair.methods import Method, TargetContext, in_classes
from repair.wbn import weighted_bn
from workspace.cache import InferenceOutputs, make_loader, run_inference
from workspace.models import select_device


class Cancelled(Exception):
    """Raised inside the loop when ``should_stop()`` says so."""


@dataclass
class TrainConfig:
    """Fine-tuning settings (defaults come from the workspace's ``[train]``)."""

    epochs: int = 3
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"
    eval_every_steps: int = 0  # 0: every epoch, plus 4 times per epoch past 400 steps
    augment: bool = True  # the workspace's train transform (light augmentation); False: eval transform

    @classmethod
    def for_workspace(cls, ws, **overrides) -> "TrainConfig":
        t = ws.config.train
        base = cls(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, weight_decay=t.weight_decay,
                   momentum=t.momentum, augment=t.augment != "none")
        return base.replace(**{k: v for k, v in overrides.items() if v is not None})

    def replace(self, **changes) -> "TrainConfig":
        out = TrainConfig(**{**asdict(self), **changes})
        out.validate()
        return out

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("lr must be > 0, weight decay >= 0 and momentum in [0, 1)")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def eval_metrics(outputs: InferenceOutputs, ctx: TargetContext) -> dict:
    """Accuracy, target error and the confusion matrix of eval outputs.

    Returns:
        ``{"accuracy", "target_error", "confusion"}``; ``confusion`` is the (K, K) count
        matrix (single-label) or the type2conf matrix (multi-label), as nested lists.
    """
    K = outputs.num_classes
    errors = error_matrix(outputs.labels, outputs.preds, K, task=outputs.task)
    conf = errors if outputs.multi_label else confusion_counts(outputs.labels, outputs.preds, K)
    return {"accuracy": outputs.accuracy, "target_error": target_error(errors, ctx.targets),
            "confusion": np.asarray(conf).tolist()}


def evaluate(ws, model, device, *, progress=None) -> InferenceOutputs:
    data = ws.split("eval")
    model.eval()
    out = run_inference(model, make_loader(ws.dataset("eval"), batch_size=256), tap=ws.embedding_tap(model),
                        labels=data.labels, class_names=data.class_names, task=ws.task,
                        threshold=ws.config.threshold, device=device, progress=progress)
    out.split = "eval"
    return out


def _train_loader(ws, config: TrainConfig, weights: np.ndarray | None, generator, indices=None):
    dataset = ws.dataset("train", train=config.augment, indices=indices)
    n = len(dataset)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n,) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("sampling weights must be finite, non-negative and not all zero")
        sampler = torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights), n, replacement=True,
                                                         generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    loader = make_loader(dataset, batch_size=config.batch_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, num_workers=loader.num_workers,
        drop_last=n > config.batch_size, pin_memory=loader.pin_memory, generator=generator,
    )


def _cycle(loader):
    while True:
        yield from loader


def _labels_of(ws, index: torch.Tensor, device) -> torch.Tensor:
    labels = ws.split("train").labels[index.numpy()]
    return torch.as_tensor(labels, dtype=torch.float32 if ws.multi_label else torch.int64).to(device)


def finetune(ws, method: Method, ctx: TargetContext, config: TrainConfig, *, parent: str = "orig",
             on_step: Callable | None = None, on_eval: Callable | None = None,
             should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] | None = None):
    """Fine-tune a copy of model ``parent`` with ``method``.

    Returns:
        ``(model, history, final_outputs)``: the trained model (CPU, eval mode, plain
        BatchNorm), the list of metric dicts (``epoch``, ``step``, ``accuracy``,
        ``target_error``, ``loss``, ``confusion``) and the last eval outputs.

    Raises:
        Cancelled: ``should_stop()`` returned True.
        ValueError: the method cannot run on this model or data.
    """
    config.validate()
    if ctx.task != ws.task or ctx.num_classes != ws.num_classes:
        raise ValueError(f"targets are for a {ctx.task} task with {ctx.num_classes} classes, the workspace is "
                         f"{ws.task} with {ws.num_classes}")
    log = log or (lambda text: None)
    reason = method.applicability(ws.model(parent), ws)
    if reason:
        raise ValueError(reason)
    generator = seed_everything(config.seed)
    device = select_device(config.device)
    model = copy.deepcopy(ws.model(parent)).to(device)
    model = method.prepare_model(model, ctx)
    tap = ws.embedding_tap(model.eval()) if method.needs_embeddings else None
    labels_all = ws.split("train").labels
    loader = _train_loader(ws, config, method.sample_weights(labels_all, ctx), generator)
    extra = None
    extra_classes = method.extra_batch_classes(ctx)
    if extra_classes is not None:
        idx = np.flatnonzero(in_classes(labels_all, extra_classes, ctx.multi_label))
        if len(idx) < 2:
            raise ValueError("the train split has fewer than 2 samples of the target classes")
        extra = _cycle(_train_loader(ws, config, None, torch.Generator().manual_seed(config.seed + 1), idx))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * config.epochs
    # cosine decay to 0 over the run: fine-tuning ends where the original training ended
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    every = config.eval_every_steps or (steps_per_epoch // 4 if steps_per_epoch >= 400 else 0)
    history, outputs, step = [], None, 0
    log(f"{method.name}: {config.epochs} epochs x {steps_per_epoch} steps on {device} "
        f"(rho={ctx.rho}, lr={config.lr}, batch={config.batch_size}, seed={config.seed})")

    def run_eval(epoch: float, loss: float | None):
        nonlocal outputs
        outputs = evaluate(ws, model, device)
        metric = {"epoch": round(epoch, 4), "step": step, "loss": loss, **eval_metrics(outputs, ctx)}
        history.append(metric)
        log(f"epoch {epoch:.2f}: accuracy {metric['accuracy']:.4f}, target error {metric['target_error']:.4f}")
        if on_eval:
            on_eval(metric)
        model.train()

    for epoch in range(config.epochs):
        model.train()
        running, seen = 0.0, 0
        for x, index, ok in loader:
            if should_stop and should_stop():
                raise Cancelled()
            x, index = x[ok], index[ok]
            if len(index) == 0:
                continue
            x, y = x.to(device, non_blocking=True), _labels_of(ws, index, device)
            n = len(x)
            if extra is not None:
                xt, _, okt = next(extra)
                x = torch.cat([x, xt[okt].to(device, non_blocking=True)])
            with torch.autocast(device.type, enabled=use_amp):
                if extra is not None:
                    with weighted_bn(model, n):
                        logits = model(x)[:n]  # only the regular batch's loss (Figure 6)
                    emb = None
                elif tap is not None:
                    logits, emb = tap.forward(x)
                else:
                    logits, emb = model(x), None
                loss = method.loss(logits.float(), y, None if emb is None else emb.float(), ctx)
            if not torch.isfinite(loss):
                raise ValueError(f"the loss became {loss.item()} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            running, seen = running + loss.item() * n, seen + n
            if on_step:
                on_step(step, total, loss.item())
            if every and step % every == 0 and step % steps_per_epoch:
                run_eval(step / steps_per_epoch, running / max(seen, 1))
        run_eval(float(epoch + 1), running / max(seen, 1))
    model = method.finish_model(model).to("cpu").eval()
    return model, history, outputs
