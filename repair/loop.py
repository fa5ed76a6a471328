"""Repair fine-tuning: a method's hooks on the one training loop (:func:`workspace.training.fit`).

A run fine-tunes a copy of a model version on the workspace's train split and evaluates on the
eval split (accuracy, the target error and the full confusion matrix) at every epoch end and every
``eval_every_steps`` steps. The loaded model is never modified.

Scopes (:data:`repair.methods.SCOPES`):

* ``all``: every parameter trains. Images come from the decoded split (decoded once into
  uint8 tensors, augmented as tensors; :mod:`workspace.tensors`) when it fits the memory budget,
  else from a DataLoader that decodes per batch.
* ``last-block``: the last stage and the head train (:func:`workspace.layers.last_block`);
  every other layer is frozen and kept in eval mode, so its BatchNorm statistics do not move.
* ``head``: only the final ``nn.Linear`` trains, on the cached embeddings of the parent version
  (its input): no image is decoded and no backbone runs, so an epoch over 50,000 samples takes
  seconds on a CPU. There is no augmentation at this scope (the embeddings are fixed).

Optimiser: SGD with momentum and, by default, a cosine decay to 0 over the run (fine-tuning
ends where the original training ended); ``schedule="paper"`` is the WR paper's: Nesterov
momentum, lr x0.1 at 50 % and 75 % of the epochs. CUDA (autocast + GradScaler) > MPS > CPU;
on CPU a run is deterministic given the seed.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np
import torch
from torch import nn

from diagnostics.confusion import confusion_counts, error_matrix, target_error
from repair import distributed
from repair.methods import SCOPES, Method, TargetContext, in_classes
from repair.wbn import weighted_bn
from workspace.cache import InferenceOutputs, decide, make_loader, run_inference, to_probs
from workspace.errors import WorkspaceError
from workspace.layers import freeze_except, head_fits_outputs, last_block, model_units, train_mode_setter
from workspace.models import select_device
from workspace.tensors import TensorBatches, decoded
from workspace.training import MAX_LR, fit, seed_everything, set_threads

SCHEDULES = ("cosine", "paper")
AUGMENTS = ("flip_crop", "crop", "none")


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
    augment: bool = True  # the workspace's augmentation; False: none
    scope: str = "all"
    train_fraction: float = 1.0  # a random share of the train split (quick runs)
    max_steps: int | None = None  # a step budget
    schedule: str = "cosine"

    @classmethod
    def for_workspace(cls, ws, **overrides) -> "TrainConfig":
        t = ws.config.train
        base = cls(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, weight_decay=t.weight_decay,
                   momentum=t.momentum, augment=t.augment != "none")
        return base.replace(**{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_dict(cls, data: dict | None) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    @classmethod
    def paper(cls, **overrides) -> "TrainConfig":
        """The WR paper's schedule (its released code): SGD + Nesterov, lr 0.1 -> 0.01 at 50 % ->
        0.001 at 75 % of the epochs, weight decay 1e-4, batch 128."""
        return cls(lr=0.1, weight_decay=1e-4, batch_size=128, momentum=0.9, schedule="paper").replace(**overrides)

    def replace(self, **changes) -> "TrainConfig":
        out = TrainConfig(**{**asdict(self), **changes})
        out.validate()
        return out

    def validate(self) -> None:
        """Raises ValueError (one line) on any bad setting, before any work starts."""
        def finite(x):
            return isinstance(x, (int, float)) and math.isfinite(float(x))
        if not (isinstance(self.epochs, int) and self.epochs >= 1) or not (isinstance(self.batch_size, int)
                                                                            and self.batch_size >= 1):
            raise ValueError("epochs and batch size must be whole numbers >= 1")
        if not (finite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.lr > MAX_LR:
            raise ValueError(f"lr must be at most {MAX_LR:g} (larger steps diverge at once), got {self.lr:g}")
        if not (finite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        if not (finite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if not (finite(self.train_fraction) and 0 < self.train_fraction <= 1):
            raise ValueError(f"train fraction must be in (0, 1], got {self.train_fraction}")
        if self.max_steps is not None and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max steps must be a whole number >= 1, got {self.max_steps}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.eval_every_steps < 0:
            raise ValueError("eval every steps must be >= 0")


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


# ---- data ----------------------------------------------------------------------------------------
def _train_indices(ws, config: TrainConfig) -> np.ndarray:
    n = len(ws.split("train"))
    if config.train_fraction >= 1.0:
        return np.arange(n)
    rng = np.random.default_rng(config.seed + 7)
    return np.sort(rng.choice(n, size=max(2, int(round(n * config.train_fraction))), replace=False))


def _draw(indices: np.ndarray, weights: np.ndarray | None, generator: torch.Generator) -> np.ndarray:
    """One epoch's order: a weighted draw with replacement, or a permutation."""
    if weights is None:
        return indices[torch.randperm(len(indices), generator=generator).numpy()]
    w = np.asarray(weights, dtype=np.float64)[indices]
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sampling weights must be finite, non-negative and not all zero")
    drawn = torch.multinomial(torch.as_tensor(w), len(indices), replacement=True, generator=generator)
    return indices[drawn.numpy()]


class _ImageSource:
    """Training batches of images: decoded tensors when they fit, else a decoding DataLoader."""

    def __init__(self, ws, config: TrainConfig, device, *, progress=None, should_stop=None):
        self.ws, self.config, self.device = ws, config, device
        self.augment = ws.config.train.augment if config.augment else "none"
        self.pixels = decoded(ws, "train", progress=progress)
        self.should_stop = should_stop
        t = ws.config.transform
        self.mean, self.std = t.mean, t.std

    def batches(self, order: np.ndarray, generator: torch.Generator, *, batch_size: int, drop_last: bool):
        if self.pixels is not None:
            return TensorBatches(self.pixels, order, batch_size=batch_size, mean=self.mean, std=self.std,
                                 augment=self.augment, generator=generator, drop_last=drop_last,
                                 device=self.device, should_stop=self.should_stop)
        dataset = self.ws.dataset("train", train=self.augment != "none", indices=order)
        base = make_loader(dataset, batch_size=batch_size)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                           num_workers=base.num_workers, drop_last=drop_last,
                                           pin_memory=base.pin_memory)


def evaluate(ws, model, device, *, progress=None, tap=None) -> InferenceOutputs:
    """Outputs of ``model`` on the eval split (decoded tensors when available).

    With several processes each scores its shard and the shards are gathered, so every rank
    returns the outputs of the whole split.
    """
    data = ws.split("eval")
    model = distributed.unwrap(model)
    model.eval()
    pixels = decoded(ws, "eval")
    t = ws.config.transform
    rows = distributed.shard(np.arange(len(data)))
    if pixels is not None:
        loader = TensorBatches(pixels, rows, batch_size=256, mean=t.mean, std=t.std)
    else:
        loader = make_loader(ws.dataset("eval", indices=rows), batch_size=256)
    out = run_inference(model, loader, tap=tap or ws.embedding_tap(model), labels=data.labels,
                        class_names=data.class_names, task=ws.task, threshold=ws.config.threshold,
                        device=device, progress=progress)
    out.split = "eval"
    if distributed.active():
        parts = distributed.gather_outputs([out])
        cat = (lambda name: None if getattr(parts[0], name) is None
               else np.concatenate([getattr(p, name) for p in parts]))
        order = np.argsort(cat("indices"), kind="stable")
        out = InferenceOutputs(**{name: (None if cat(name) is None else cat(name)[order])
                                  for name in ("logits", "probs", "preds", "labels", "embeddings", "indices")},
                               class_names=out.class_names, task=out.task, threshold=out.threshold, split="eval",
                               skipped=[s for p in parts for s in p.skipped])
    return out


def _labels(ws, index: torch.Tensor, device) -> torch.Tensor:
    labels = ws.split("train").labels[index.numpy()]
    return torch.as_tensor(labels, dtype=torch.float32 if ws.multi_label else torch.int64).to(device)


def _optimizer(params, config: TrainConfig, total: int):
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                                nesterov=config.schedule == "paper" and config.momentum > 0)
    if config.schedule == "paper":
        def factor(i):
            return 1.0 if i < 0.5 * total else (0.1 if i < 0.75 * total else 0.01)
    else:
        def factor(i):
            return 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def head_module(ws, model: nn.Module) -> tuple[str, nn.Linear]:
    """The final Linear whose input is the cached embedding (the ``head`` scope trains it)."""
    tap = ws.embedding_tap(model)
    if tap.module is None or not tap.use_input or not isinstance(tap.module, nn.Linear):
        raise WorkspaceError("the head scope needs the cached embedding to be the input of the final nn.Linear "
                             "(embedding_layer = \"auto\"); use the last-block or all scope")
    return tap.layer, tap.module


# ---- the run -----------------------------------------------------------------------------------
def finetune(ws, method: Method, ctx: TargetContext, config: TrainConfig, *, parent: str = "orig",
             on_step: Callable | None = None, on_eval: Callable | None = None,
             should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] | None = None,
             progress: Callable | None = None, phase: Callable[[str], None] | None = None, probe: bool = False):
    """Fine-tune a copy of model ``parent`` with ``method`` at ``config.scope``.

    Args:
        on_step: ``on_step(step, total_steps, loss)`` after every step.
        on_eval: ``on_eval(metric)`` after every evaluation (see Returns).
        should_stop: checked every step; True raises :class:`~workspace.errors.Cancelled`.
        progress: ``progress(done, total)`` of preparatory passes (decoding, embeddings).
        phase: ``phase(name)`` announces a stage of preparation (its progress gets its own ETA).
        probe: a timing probe: no evaluation at all (use with ``config.max_steps``).

    Returns:
        ``(model, history, final_outputs)``: the trained model (CPU, eval mode, plain
        BatchNorm), the list of metric dicts (``epoch``, ``step``, ``accuracy``,
        ``target_error``, ``loss``, ``confusion``) and the last eval outputs.

    Raises:
        Cancelled: ``should_stop()`` returned True.
        ValueError: the method cannot run on this model, data or scope.
    """
    config.validate()
    ctx = TargetContext(ctx.targets, ctx.rho, ctx.num_classes, ctx.task, config.scope)
    if ctx.task != ws.task or ctx.num_classes != ws.num_classes:
        raise ValueError(f"targets are for a {ctx.task} task with {ctx.num_classes} classes, the workspace is "
                         f"{ws.task} with {ws.num_classes}")
    log = log or (lambda text: None)
    if phase is not None:
        phase(f"preparing the data ({config.scope} scope)")
    reason = method.applicability(ws.model(parent), ws, config.scope)
    if reason:
        raise ValueError(reason)
    generator = seed_everything(config.seed)
    device = distributed.init(select_device(config.device))
    if distributed.world_size() > 1 and config.scope == "head":
        raise ValueError("the head scope trains in seconds in one process; run it without --nproc")
    previous_threads = torch.get_num_threads()
    if config.scope == "head" and device.type == "cpu":
        torch.set_num_threads(1)  # the head's steps are tiny products: threads would only synchronise
    threads = torch.get_num_threads() if config.scope == "head" else set_threads(device)
    history: list[dict] = []
    state = {"outputs": None}

    def record(epoch: float, step: int, loss: float | None, outputs: InferenceOutputs) -> None:
        state["outputs"] = outputs
        metric = {"epoch": round(epoch, 4), "step": step, "loss": loss, **eval_metrics(outputs, ctx)}
        history.append(metric)
        log(f"epoch {epoch:.2f}: accuracy {metric['accuracy']:.4f}, target error {metric['target_error']:.4f}")
        if on_eval:
            on_eval(metric)

    if should_stop is not None and distributed.world_size() > 1:
        should_stop = distributed.agreed(should_stop)  # every rank stops at the same step
    runner = _finetune_head if config.scope == "head" else _finetune_images
    try:
        model = runner(ws, method, ctx, config, parent=parent, device=device, generator=generator,
                       record=None if probe else record, on_step=on_step, should_stop=should_stop, log=log,
                       progress=progress, threads=threads)
    finally:
        torch.set_num_threads(previous_threads)
    return model, history, state["outputs"]


def _finetune_images(ws, method, ctx, config, *, parent, device, generator, record, on_step, should_stop, log,
                     progress, threads):
    model = copy.deepcopy(ws.model(parent)).to(device)
    model = method.prepare_model(model, ctx)
    set_mode = model.train
    trainable = list(model.parameters())
    if config.scope == "last-block":
        units = last_block(model_units(model, ws.example_input().to(device), ws.num_classes))
        names, frozen = freeze_except(model, units)
        set_mode = train_mode_setter(model, frozen)
        params = dict(model.named_parameters())
        trainable = [params[n] for n in names]
        log(f"last-block scope: training {', '.join(u.name for u in units)} ({len(names)} tensors); "
            f"{len(frozen)} layers frozen in eval mode")
    tap = ws.embedding_tap(model.eval()) if method.needs_embeddings else None
    labels_all = ws.split("train").labels
    indices = _train_indices(ws, config)
    weights = method.sample_weights(labels_all, ctx)
    source = _ImageSource(ws, config, device, progress=progress, should_stop=should_stop)
    world = distributed.world_size()
    batch = distributed.per_rank_batch(config.batch_size)  # the global batch is split over the ranks
    per_rank = len(indices) // world
    drop_last = per_rank > batch
    steps_per_epoch = (per_rank // batch) if drop_last else 1
    extra = None
    extra_classes = method.extra_batch_classes(ctx)
    # w-bn: an extra batch that only shifts BatchNorm statistics; w-dbr-code: target samples that
    # join every batch and count in the loss
    joined = extra_classes is None and method.joined_batch_classes(ctx) is not None
    if extra_classes is not None or joined:
        classes = extra_classes if extra_classes is not None else method.joined_batch_classes(ctx)
        size = method.joined_batch_size if joined else (method.extra_batch_size or config.batch_size)
        size = distributed.per_rank_batch(size) if size % world == 0 else max(1, size // world)
        extra_idx = indices[in_classes(labels_all[indices], classes, ctx.multi_label)]
        if len(extra_idx) < 2 * world:
            raise ValueError("the train split has fewer than 2 samples of the target classes per process")
        extra_gen = torch.Generator().manual_seed(config.seed + 1)

        def extra_batches():
            while True:
                order = _draw(extra_idx, None, extra_gen)
                yield from source.batches(distributed.shard(order[:len(order) - len(order) % world]), extra_gen,
                                          batch_size=size, drop_last=len(extra_idx) // world > size)
        extra = extra_batches()
    total = steps_per_epoch * config.epochs if config.max_steps is None else min(
        steps_per_epoch * config.epochs, config.max_steps)
    optimizer, schedule = _optimizer(trainable, config, total)
    every = config.eval_every_steps or (steps_per_epoch // 4 if steps_per_epoch >= 400 else 0)
    # w-bn mixes its own BatchNorm statistics per rank: rank 0's must not overwrite them every step
    net = distributed.wrap(model, device, broadcast_buffers=extra is None)
    log(f"{method.name}: {config.epochs} epochs x {steps_per_epoch} steps on {device} ({threads} threads"
        + (f", {world} processes" if world > 1 else "") + f"), scope {config.scope}, rho={ctx.rho}, lr={config.lr}, "
        f"batch={config.batch_size}, seed={config.seed}, "
        f"images {'decoded once' if source.pixels is not None else 'decoded per batch'}")

    def batches(epoch):
        if world > 1 and weights is None:  # the usual DistributedSampler: shared seed, set_epoch, a slice per rank
            sampler = torch.utils.data.DistributedSampler(range(len(indices)), num_replicas=world,
                                                          rank=distributed.rank(), shuffle=True, seed=config.seed,
                                                          drop_last=True)
            sampler.set_epoch(epoch)
            order = indices[np.fromiter(sampler, dtype=np.int64)]
        else:  # a weighted draw (w-aug, pgd) is drawn globally with the shared seed, then sliced per rank
            order = _draw(indices, weights, generator)
            order = distributed.shard(order[:len(order) - len(order) % world])
        return source.batches(order, generator, batch_size=batch, drop_last=drop_last)

    def forward(x):
        """Logits, and the embeddings when the method reads them."""
        if tap is None:
            return net(x), None
        with tap.attached():
            logits = net(x)
        return logits, tap.value

    def loss_fn(batch_):
        x, index, ok = batch_
        ok = ok.bool()
        x, index = x[ok.to(x.device)], index[ok]
        if len(index) == 0:
            return None, 0
        x, y = x.to(device, non_blocking=True), _labels(ws, index, device)
        n = len(x)
        emb = None
        if extra is not None and joined:
            xt, it, okt = next(extra)
            okt = okt.bool()
            x = torch.cat([x, xt[okt.to(xt.device)].to(device, non_blocking=True)])
            y = torch.cat([y, _labels(ws, it[okt], device)])
            logits, emb = forward(x)
        elif extra is not None:
            xt, _, okt = next(extra)
            x = torch.cat([x, xt[okt.bool().to(xt.device)].to(device, non_blocking=True)])
            with weighted_bn(model, n):
                logits = net(x)[:n]  # only the regular batch's loss (WR Figure 6)
        else:
            logits, emb = forward(x)
        return method.loss(logits.float(), y, None if emb is None else emb.float(), ctx), n

    def on_eval(epoch, step, loss):
        distributed.average_batchnorm_statistics(model)
        if record is not None:
            record(epoch, step, loss, evaluate(ws, model, device))

    fit(net, batches, loss_fn, optimizer, epochs=config.epochs, steps_per_epoch=steps_per_epoch, device=device,
        scheduler=schedule, max_steps=config.max_steps, eval_every=every, set_train_mode=set_mode,
        on_step=on_step, on_eval=on_eval, should_stop=should_stop)
    for p in model.parameters():
        p.requires_grad_(True)
    return method.finish_model(model).to("cpu").eval()


def _head_outputs(head: nn.Module, base: InferenceOutputs, device) -> InferenceOutputs:
    """The model's outputs with a new head, from the cached embeddings (exact: logits = head(e))."""
    chunks = [np.zeros((0, len(base.class_names)), np.float32)]
    with torch.no_grad():
        for s in range(0, base.n, 65536):  # a copy per chunk: the memmapped cache is read-only
            e = torch.from_numpy(np.array(base.embeddings[s:s + 65536], dtype=np.float32)).to(device)
            chunks.append(head(e).float().cpu().numpy())
    logits = np.concatenate(chunks)
    probs = to_probs(logits, base.task)
    return InferenceOutputs(logits=logits, probs=probs, preds=decide(probs, base.task, base.threshold),
                            labels=base.labels, embeddings=base.embeddings, indices=base.indices,
                            class_names=base.class_names, task=base.task, threshold=base.threshold,
                            split=base.split, skipped=base.skipped)


def _finetune_head(ws, method, ctx, config, *, parent, device, generator, record, on_step, should_stop, log,
                   progress, threads):
    base_model = ws.model(parent)
    name, head = head_module(ws, base_model)
    train = ws.outputs("train", parent, progress=progress)
    evals = ws.outputs("eval", parent, progress=progress)
    if not head_fits_outputs(head, evals):
        raise WorkspaceError("the head scope needs the model's logits to be exactly head(embedding); this model "
                             "transforms them after the final Linear: use the last-block or all scope")
    new_head = copy.deepcopy(head).to(device).float()
    with warnings.catch_warnings():  # the memmapped cache is read-only, and only ever read here (no copy)
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        emb_all = torch.from_numpy(np.ascontiguousarray(train.embeddings)).float()
    label_dtype = torch.float32 if ws.multi_label else torch.int64
    labels_all = torch.as_tensor(train.labels, dtype=label_dtype)
    rows_of = np.full(len(ws.split("train")), -1, dtype=np.int64)
    rows_of[train.indices] = np.arange(train.n)
    indices = _train_indices(ws, config)
    indices = indices[rows_of[indices] >= 0]  # images that failed to decode have no embedding
    weights = method.sample_weights(ws.split("train").labels, ctx)
    joined = method.joined_batch_classes(ctx)
    if joined is not None:  # target samples joining every batch (w-dbr-code)
        joined_rows = rows_of[indices[in_classes(ws.split("train").labels[indices], joined, ctx.multi_label)]]
        joined_gen = torch.Generator().manual_seed(config.seed + 1)
    drop_last = len(indices) > config.batch_size
    steps_per_epoch = (len(indices) // config.batch_size) if drop_last else 1
    total = steps_per_epoch * config.epochs if config.max_steps is None else min(
        steps_per_epoch * config.epochs, config.max_steps)
    optimizer, schedule = _optimizer(list(new_head.parameters()), config, total)
    every = config.eval_every_steps or max(1, steps_per_epoch // 4)
    log(f"{method.name}: head scope ({name}), {config.epochs} epochs x {steps_per_epoch} steps on {device} over "
        f"{len(indices):,} cached embeddings (rho={ctx.rho}, lr={config.lr}, batch={config.batch_size}, "
        f"seed={config.seed}; no augmentation at this scope)")

    def batches(epoch):
        order = rows_of[_draw(indices, weights, generator)]
        for s in range(0, len(order) - (len(order) % config.batch_size if drop_last else 0), config.batch_size):
            if should_stop is not None and should_stop():
                from workspace.errors import Cancelled

                raise Cancelled()
            rows = torch.from_numpy(order[s:s + config.batch_size])
            if joined is not None and len(joined_rows):
                pick = torch.randint(len(joined_rows), (method.joined_batch_size,), generator=joined_gen)
                rows = torch.cat([rows, torch.from_numpy(joined_rows[pick.numpy()])])
            yield emb_all[rows].to(device), labels_all[rows].to(device)

    def loss_fn(batch):
        emb, y = batch
        logits = new_head(emb)
        return method.loss(logits.float(), y, emb, ctx), len(y)

    def on_eval(epoch, step, loss):
        if record is not None:
            new_head.eval()
            record(epoch, step, loss, _head_outputs(new_head, evals, device))

    fit(new_head, batches, loss_fn, optimizer, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
        device=device, scheduler=schedule, max_steps=config.max_steps, eval_every=every,
        on_step=on_step, on_eval=on_eval, should_stop=should_stop)
    model = copy.deepcopy(base_model)
    parent_module, _, attr = name.rpartition(".")
    owner = model.get_submodule(parent_module) if parent_module else model
    trained = new_head.to("cpu").eval()
    setattr(owner, attr, trained.to(next(head.parameters()).dtype))
    return model.eval()


def head_train_outputs(ws, model: nn.Module, parent: str) -> InferenceOutputs | None:
    """Train-split outputs of a head-scope result, from the parent's cached embeddings (no model pass)."""
    base = ws.cached_outputs("train", parent)
    if base is None or base.embeddings is None:
        return None
    _, head = head_module(ws, model)
    return _head_outputs(head, base, torch.device("cpu"))


def estimate_seconds(ws, method: Method, ctx: TargetContext, config: TrainConfig, *, parent: str = "orig",
                     steps: int = 4, progress: Callable | None = None) -> dict:
    """How long a run will take, from a short timing probe of the real training step.

    Runs ``steps`` steps (the first one, a warm-up, is not counted) on a copy of the model and
    one evaluation batch, and extrapolates to the run's steps and evaluations. The preparation
    a first run also needs (decoding the splits, the parent's embeddings at head scope) happens
    here too, once, and is stored for the run.

    Returns:
        ``{"seconds", "per_step", "steps", "evaluations", "per_evaluation"}``.
    """
    import time

    times: list[float] = []
    probe_config = config.replace(max_steps=max(2, steps), epochs=1)

    def on_step(step, total, loss):
        times.append(time.perf_counter())

    method.train(ws, ctx, probe_config, parent=parent, on_step=on_step, progress=progress, probe=True)
    per_step = (times[-1] - times[0]) / max(len(times) - 1, 1) if len(times) > 1 else float("nan")
    n_train = len(_train_indices(ws, config))
    if config.scope == "head":
        n_train = min(n_train, ws.cached_outputs("train", parent).n)
    steps_per_epoch = max(1, n_train // config.batch_size) if n_train > config.batch_size else 1
    total = steps_per_epoch * config.epochs if config.max_steps is None else min(
        steps_per_epoch * config.epochs, config.max_steps)
    every = config.eval_every_steps or (steps_per_epoch // 4 if steps_per_epoch >= 400 else 0)
    if config.scope == "head":
        every = config.eval_every_steps or max(1, steps_per_epoch // 4)
    evaluations = config.epochs + (total // every if every else 0)
    if config.scope == "head":
        per_eval = 0.0  # logits of cached embeddings: milliseconds
    else:
        device = select_device(config.device)
        model = copy.deepcopy(ws.model(parent)).to(device).eval()
        pixels = decoded(ws, "eval")
        n_eval = len(ws.split("eval"))
        start = time.perf_counter()
        t = ws.config.transform
        with torch.no_grad():
            if pixels is not None:
                batch = next(iter(TensorBatches(pixels, np.arange(min(256, pixels.n)), batch_size=256, mean=t.mean,
                                                std=t.std)))[0]
            else:
                batch = next(iter(make_loader(ws.dataset("eval", indices=np.arange(min(256, n_eval))),
                                              batch_size=256)))[0]
            model(batch.to(device))
        per_eval = (time.perf_counter() - start) * n_eval / max(1, min(256, n_eval))
    seconds = per_step * total + per_eval * evaluations
    return {"seconds": float(seconds), "per_step": float(per_step), "steps": int(total),
            "evaluations": int(evaluations), "per_evaluation": float(per_eval)}
