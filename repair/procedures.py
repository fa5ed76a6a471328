"""Repair methods with their own procedure (not the fine-tuning loop's hooks): BIR and NeuronTune-style.

Both still train through :func:`workspace.training.fit` (inside :mod:`diagnostics.bir` and
:mod:`diagnostics.neurons`) and return what :func:`repair.loop.finetune` returns, so a run, a
sweep and the pages treat them like any other method.

* :func:`train_bir`: the stored identification (layer subset, phi) and scores of
  :mod:`diagnostics.run_bir`, the detrimental set at the run's threshold, then the treatment
  (energy-aligned, soft-relabelled detrimental samples plus as many others, the chosen layers
  retrained until the loss on held-out train samples stops falling, its best epoch kept). One
  evaluation at the end.
* :func:`train_neurontune`: neuron scores on the held-out split (:mod:`diagnostics.run_neurons`),
  the spurious set at lambda (rule "all"), the head retrained behind the neuron mask on the cached
  train embeddings with class-balanced sampling and selected by SFit; the masked head is part of the
  new model version. Evaluations from the cached eval embeddings.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from repair.loop import eval_metrics, evaluate, head_module
from workspace.errors import WorkspaceError
from workspace.models import select_device
from workspace.training import seed_everything

TREAT_BATCH = 64  # BIR A.3's CIFAR-10 batch size
VALIDATION_MAX = 5000  # held-out train samples for BIR's treatment stop (10 % of the split up to this)


def _record(history, on_eval, outputs, ctx, *, epoch: float, step: int, loss, log):
    metric = {"epoch": round(float(epoch), 4), "step": int(step), "loss": loss, **eval_metrics(outputs, ctx)}
    history.append(metric)
    if log:
        log(f"epoch {epoch:.2f}: accuracy {metric['accuracy']:.4f}, target error {metric['target_error']:.4f}")
    if on_eval:
        on_eval(metric)


def held_out(n: int, *, seed: int) -> np.ndarray:
    """Sorted positions of 10 % of ``n`` train samples (at least 1, at most VALIDATION_MAX), seeded."""
    size = min(max(n // 10, 1), VALIDATION_MAX, n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)


def train_bir(ws, ctx, config, *, parent: str, threshold: float, on_step=None, on_eval=None, should_stop=None,
              log=None, progress=None, phase=None, probe: bool = False):
    """BIR (Algorithm 1) on the workspace's train split; returns ``(model, history, outputs)``."""
    from diagnostics import bir, run_bir
    from workspace.tensors import normalise

    if probe:
        raise WorkspaceError("bir has no timing probe: its length depends on early stopping")
    seed_everything(config.seed)
    device = select_device(config.device)
    log = log or (lambda text: None)
    # a step budget (a quick run) caps both trainings at one epoch; else the paper's early stopping
    max_epochs = 1 if config.max_steps is not None else 30
    phase = phase or (lambda name: None)
    phase("identifying the layers on the reserved set")
    found = run_bir.identification(ws, parent, max_epochs=max_epochs, progress=progress, should_stop=should_stop)
    phase("scoring the train split (phi against theta)")
    frame = run_bir.raw_scores(ws, parent, found=found, progress=progress, should_stop=should_stop)
    index, score = frame["index"].to_numpy(), frame["score"].to_numpy()
    # the held-out samples that stop the treatment and pick its epoch (bir.treat): 10 % of the
    # train split (at most VALIDATION_MAX), drawn uniformly *before* the selection, as the
    # paper's A.3 splits off its validation data; drawn from what the selection leaves, they
    # would be the samples phi finds easier and would favour any move towards phi
    held_pos = held_out(len(frame), seed=config.seed + 1)
    pool = np.setdiff1d(np.arange(len(frame)), held_pos)
    chosen = bir.select_causes(score[pool], threshold=threshold)
    cause_pos, rest_pos = pool[chosen], pool[bir.sample_remaining(len(pool), chosen, seed=config.seed)]
    causes, rest, held = index[cause_pos], index[rest_pos], index[held_pos]
    log(f"bir: layers {found['chosen']}; {len(causes):,} detrimental train samples at threshold {threshold:.4g} "
        f"(reserved set {found['reserved'].n}), {len(rest):,} others mixed in, {len(held):,} held out to stop")
    phase("reading the train images (decoded once per workspace, then reused)")
    pixels = run_bir._pixels(ws, "train", progress)
    t = ws.config.transform
    labels = ws.split("train").labels

    def tensors(rows):
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        return (normalise(torch.from_numpy(np.asarray(pixels.images[rows])), t.mean, t.std),
                torch.as_tensor(labels[rows], dtype=torch.int64))

    per_epoch = math.ceil((len(causes) + len(rest)) / TREAT_BATCH)
    stage = f"treatment: retraining {found['chosen']} on the aligned and the other samples"
    stepped = None if on_step is None else lambda s, total, loss: on_step(s, total, loss, epoch=s / per_epoch,
                                                                           stage=stage)
    phase(f"aligning the {len(causes):,} detrimental samples with phi (energy step, Eq. 4-5)")
    treatment = bir.treat(ws.model(parent), found["phi"], tensors(causes), tensors(rest), subset=found["subset"],
                          lr=1e-3, batch_size=TREAT_BATCH, max_epochs=max_epochs, seed=config.seed, device=device,
                          on_step=stepped, on_align=progress, max_steps=config.max_steps, should_stop=should_stop,
                          validation=tensors(held) if len(held) else None)
    if treatment.val_losses:
        kept = ("theta's own weights: no epoch lowered it" if treatment.best_epoch == 0
                else f"the weights of epoch {treatment.best_epoch}")
        log(f"bir: held-out loss {treatment.val_losses[0]:.4f} before, "
            + ", ".join(f"{v:.4f}" for v in treatment.val_losses[1:]) + f" after each epoch; kept {kept}")
    model = treatment.model
    outputs = evaluate(ws, model, device)
    history: list[dict] = []
    _record(history, on_eval, outputs, ctx, epoch=len(treatment.epoch_losses), step=len(treatment.epoch_losses),
            loss=treatment.epoch_losses[-1] if treatment.epoch_losses else None, log=log)
    return model.to("cpu").eval(), history, outputs


def train_neurontune(ws, ctx, config, *, parent: str, lam: float, on_step=None, on_eval=None, should_stop=None,
                     log=None, progress=None, phase=None, probe: bool = False, rule: str = "all"):
    """NeuronTune-style regulation of the head; returns ``(model, history, outputs)``."""
    from diagnostics import neurons, run_neurons
    from repair.loop import _head_outputs
    from workspace.layers import install_masked_head

    seed_everything(config.seed)
    device = select_device(config.device)
    log = log or (lambda text: None)
    if phase is not None:
        phase("scoring the embedding neurons")
    found = run_neurons.neuron_scores(ws, parent, lam=lam, progress=progress)
    mask = found["scores"].mask(rule)
    if not mask.any():
        raise WorkspaceError(f"at lambda {lam:g} every neuron is spurious: nothing would be left for the head")
    base_model = ws.model(parent)
    name, head = head_module(ws, base_model)
    train = ws.outputs("train", parent, progress=progress)
    held = found["outputs"]
    log(f"neurontune: {int((mask == 0).sum())} of {len(mask)} neurons zeroed (rule {rule}, lambda {lam:g}, scored on "
        f"{found['split']}); retraining {name} with class-balanced sampling"
        + (f"; {found['warning']}" if found["warning"] else ""))
    epochs = 2 if probe else int(config.epochs)
    result = neurons.retrain_head(np.asarray(train.embeddings), np.asarray(train.labels),
                                  np.asarray(held.embeddings), np.asarray(held.labels), head=head, mask=mask,
                                  epochs=epochs, lr=1e-3, batch_size=config.batch_size, seed=config.seed,
                                  device=device, on_step=on_step, max_steps=None if probe else config.max_steps,
                                  should_stop=should_stop)
    model = copy.deepcopy(base_model)
    install_masked_head(model, name, mask, head=result.head)
    evals = ws.outputs("eval", parent)
    _, new_head = head_module(ws, model)
    outputs = _head_outputs(new_head.eval(), evals, torch.device("cpu"))
    history: list[dict] = []
    _record(history, on_eval, outputs, ctx, epoch=epochs, step=epochs,
            loss=result.epoch_losses[-1] if result.epoch_losses else None, log=log)
    log(f"neurontune: SFit {result.sfit[0]:.3g} -> {min(result.sfit):.3g} (epoch {result.best_epoch} kept)")
    return model.eval(), history, outputs
