"""BIR for a workspace (entry module; see :mod:`diagnostics.registry`): the reserved set, cause
identification (stored), the per-sample scores and the repair ("Retaining Beneficial Information
from Detrimental Data for DNN Repair", section 2, Algorithm 1).

``python -m diagnostics bir --workspace W --out scores.csv [--threshold T] [--top-k K] --json`` writes
``index,label,score,detrimental`` for every train sample (index = position in the split) and prints
``{"layers", "layer_losses", "threshold", "detrimental_count", "reserved_size"}``.

The clean reserved set ``D_r`` is the workspace's ``[data] reserved`` split (the demo generates
300 samples), plus the train samples a person confirmed "not mislabelled" on the Gradient scores
page, or both. The identification (layer choice, phi) is stored in the artifact store and reused by
the repair method ``bir`` (:mod:`repair.methods`).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diagnostics import bir
from diagnostics.registry import Diagnostic, register_diagnostic
from workspace import jobs
from workspace.artifacts import content_key
from workspace.cache import Progress
from workspace.cli import UsageError, check_output, finite_float, open_from_args, tqdm_progress, write_output
from workspace.errors import WorkspaceError
from workspace.tensors import decode_split, normalise

IDENTIFICATION_FORMAT = 1
SMALL_RESERVED = 100  # BIR A.6: identification degrades with 30 clean samples
CONFIRMED_CLEAN = "not mislabelled"  # the Gradient scores page's review verdict


@dataclass
class Reserved:
    """The reserved set ``D_r`` as tensors.

    Attributes:
        x: (R, 3, H, W) float32 normalised inputs. y: (R,) int64 labels.
        sources: how many came from the reserved split and from confirmed train samples.
        per_class: (K,) counts.
    """

    x: torch.Tensor
    y: torch.Tensor
    sources: dict
    per_class: np.ndarray

    @property
    def n(self) -> int:
        return len(self.y)

    def warning(self) -> str | None:
        if self.n < SMALL_RESERVED:
            return (f"the reserved set has only {self.n} samples: cause identification degrades below about "
                    f"{SMALL_RESERVED} (BIR Appendix A.6 measures it at 30)")
        return None


class PixelBatches:
    """Re-iterable ``(x, y)`` batches of a decoded split (normalised on the fly), in split order."""

    def __init__(self, pixels, labels, rows, *, mean, std, batch_size: int = 256):
        self.pixels, self.labels, self.rows = pixels, np.asarray(labels), np.asarray(rows)
        self.mean, self.std, self.batch_size = mean, std, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self):
        for s in range(0, len(self.rows), self.batch_size):
            rows = self.rows[s:s + self.batch_size]
            x = normalise(torch.from_numpy(np.ascontiguousarray(self.pixels.images[rows])), self.mean, self.std)
            yield x, torch.as_tensor(self.labels[rows], dtype=torch.int64)


def _pixels(ws, split: str, progress: Progress | None = None):
    from workspace.tensors import decoded

    found = decoded(ws, split, progress=progress)
    return found if found is not None else decode_split(ws, split, progress=progress)


def reserved_set(ws, version: str = "orig", *, use_split: bool = True, use_confirmed: bool = True,
                 progress: Progress | None = None) -> Reserved:
    """``D_r`` from the reserved split and/or the confirmed clean train samples.

    Raises:
        WorkspaceError: a multi-label workspace, or no reserved sample at all (with what to do).
    """
    if ws.multi_label:
        raise WorkspaceError("BIR needs a single-label workspace (its losses are softmax cross-entropies)")
    t = ws.config.transform
    xs, ys, sources = [], [], {"reserved split": 0, "confirmed train samples": 0}
    if use_split and ws.has_split("reserved"):
        pixels = _pixels(ws, "reserved", progress)
        rows = np.flatnonzero(pixels.ok)
        xs.append(normalise(torch.from_numpy(np.asarray(pixels.images[rows])), t.mean, t.std))
        ys.append(torch.as_tensor(ws.split("reserved").labels[rows], dtype=torch.int64))
        sources["reserved split"] = len(rows)
    if use_confirmed:
        confirmed = sorted(int(r["key"].split(":", 1)[1]) for r in ws.store.list_reviews("mislabel",
                                                                                        model_version=version)
                           if r["verdict"] == CONFIRMED_CLEAN and r["key"].startswith("train:"))
        if confirmed:
            pixels = _pixels(ws, "train", progress)
            rows = np.asarray([i for i in confirmed if pixels.ok[i]], dtype=np.int64)
            xs.append(normalise(torch.from_numpy(np.asarray(pixels.images[rows])), t.mean, t.std))
            ys.append(torch.as_tensor(ws.split("train").labels[rows], dtype=torch.int64))
            sources["confirmed train samples"] = len(rows)
    if not xs or sum(len(y) for y in ys) == 0:
        raise WorkspaceError("BIR needs a small clean reserved set: set [data] reserved = \"...\" in workspace.toml "
                             "(a folder or CSV like train, ~100+ correctly labelled samples), or confirm train "
                             "samples \"not mislabelled\" on the Gradient scores page")
    y = torch.cat(ys)
    return Reserved(torch.cat(xs), y, sources, np.bincount(y.numpy(), minlength=ws.num_classes))


def _slot(version: str, settings: dict) -> str:
    """One artifact slot per version *and* settings: a quick run's one-epoch identification must
    not replace the page's (a slot keeps only its newest key)."""
    return f"{version}-{content_key(settings)[:8]}"


def _key(ws, version: str, reserved: Reserved, settings: dict) -> str:
    fingerprint = content_key(reserved.y.numpy().tolist(), float(reserved.x.double().sum()))
    return content_key(ws.outputs_key("train", version), fingerprint, settings)


def identification(ws, version: str = "orig", *, reserved: Reserved | None = None, lr: float = 1e-3,
                   batch_size: int = 16, patience: int = 2, max_epochs: int = 30, device: str = "auto",
                   progress: Progress | None = None, should_stop=None) -> dict:
    """The layer choice and phi for a model version (stored; computed once).

    Returns:
        ``{"subsets": [names], "losses": {name: loss}, "initial_loss", "chosen", "phi_loss", "epochs",
        "phi": nn.Module, "reserved": Reserved}``.
    """
    from workspace.layers import model_units
    from workspace.models import select_device

    reserved = reserved or reserved_set(ws, version, progress=progress)
    settings = {"lr": lr, "batch_size": batch_size, "patience": patience, "max_epochs": max_epochs, "bn": "frozen"}
    key, slot = _key(ws, version, reserved, settings), _slot(version, settings)
    model = ws.model(version)
    units = model_units(model, ws.example_input(), ws.num_classes)
    subsets = bir.candidate_subsets(units)

    def compute() -> dict:
        found = bir.identify_layers(model, (reserved.x, reserved.y), subsets=subsets, lr=lr, batch_size=batch_size,
                                    patience=patience, max_epochs=max_epochs, device=select_device(device),
                                    progress=progress, should_stop=should_stop)
        ws.artifacts.save("bir-phi", key, found.phi_state(), slot=slot)
        return {"subsets": [s.name for s in found.subsets], "losses": found.losses,
                "initial_loss": found.initial_loss, "chosen": found.chosen.name, "phi_loss": found.phi_loss,
                "epochs": found.epochs, "key": key}

    info = ws.artifacts.get_or_compute("bir-identification", key, compute, slot=slot,
                                       version=IDENTIFICATION_FORMAT)
    state = ws.artifacts.load("bir-phi", key, slot=slot)
    if state is None:  # the phi weights went missing: identify again
        info = ws.artifacts.get_or_compute("bir-identification", key, compute, slot=slot,
                                           version=IDENTIFICATION_FORMAT, rebuild=True)
        state = ws.artifacts.load("bir-phi", key, slot=slot)
    phi = ws.load_model(version)
    phi.load_state_dict(state)
    chosen = next(s for s in subsets if s.name == info["chosen"])
    return {**info, "phi": phi.eval(), "subset": chosen, "reserved": reserved, "slot": slot}


def raw_scores(ws, version: str = "orig", *, found: dict | None = None, device: str = "auto",
               progress: Progress | None = None, should_stop=None) -> pd.DataFrame:
    """``s(z) = L(z; phi) - L(z; theta)`` of every train sample that decoded (Eq. 1), stored.

    Returns:
        DataFrame ``index, label, score`` (one row per train sample in the inference cache).
    """
    from workspace.models import select_device

    found = found or identification(ws, version, progress=progress, should_stop=should_stop)
    key = content_key(found["key"], "scores")

    def compute() -> pd.DataFrame:
        theta = ws.outputs("train", version, progress=progress)
        pixels = _pixels(ws, "train", progress)
        t = ws.config.transform
        batches = PixelBatches(pixels, ws.split("train").labels, theta.indices, mean=t.mean, std=t.std)
        dev = select_device(device)
        logits_phi = bir.model_logits(found["phi"].to(dev), batches, device=dev, progress=progress,
                                      should_stop=should_stop)
        found["phi"].to("cpu")
        s = bir.cause_scores(np.asarray(theta.logits), logits_phi, np.asarray(theta.labels))
        return pd.DataFrame({"index": np.asarray(theta.indices), "label": np.asarray(theta.labels), "score": s})

    return ws.artifacts.get_or_compute("bir-scores", key, compute, slot=found["slot"], version=IDENTIFICATION_FORMAT)


def scores(ws, version: str = "orig", *, threshold: float = bir.LOG_1_05, top_k: int | None = None,
           found: dict | None = None, device: str = "auto", progress: Progress | None = None,
           should_stop=None) -> pd.DataFrame:
    """The scores with the detrimental flag: ``s > threshold`` (A.5) or the ``top_k`` highest.

    Returns:
        DataFrame ``index, label, score, detrimental``.
    """
    frame = raw_scores(ws, version, found=found, device=device, progress=progress, should_stop=should_stop).copy()
    flag = np.zeros(len(frame), dtype=bool)
    flag[bir.select_causes(frame["score"].to_numpy(), threshold=threshold, top_k=top_k)] = True
    frame["detrimental"] = flag
    return frame


JOB_KIND = "bir"
jobs.register_job_kind(JOB_KIND, "diagnostics.run_bir:execute", description="BIR cause identification and scores")


def execute(ws, job: dict, rep: jobs.Reporter) -> dict:
    """The job entry: the identification, then the scores of every train sample (both stored)."""
    version = job["parent_version"] or "orig"
    rep.phase("BIR: choosing the layers and training phi on the reserved set", share=(0.0, 0.7))
    found = identification(ws, version, progress=rep.progress, should_stop=rep.should_stop)
    rep.phase("BIR: scoring every train sample", share=(0.7, 1.0))
    frame = raw_scores(ws, version, found=found, progress=rep.progress, should_stop=rep.should_stop)
    return {"chosen": found["chosen"], "scored": len(frame)}


def start_job(ws, version: str = "orig") -> int:
    """Identification and scores as a background job (one per version at a time)."""
    from workspace.models import select_device

    if any(j["status"] in jobs.ACTIVE and j["parent_version"] == version for j in jobs.list_jobs(ws, kind=JOB_KIND)):
        raise WorkspaceError(f"a BIR job is already running for {version}")
    reserved_set(ws, version)  # a missing reserved set is reported now, not in the job
    return jobs.submit(ws, JOB_KIND, queue=select_device("auto").type, parent_version=version)


def stored(ws, version: str = "orig") -> dict | None:
    """The stored identification and scores of a version (None when not computed; never computes)."""
    try:
        reserved = reserved_set(ws, version)
    except WorkspaceError:
        return None
    settings = {"lr": 1e-3, "batch_size": 16, "patience": 2, "max_epochs": 30, "bn": "frozen"}
    key, slot = _key(ws, version, reserved, settings), _slot(version, settings)
    info = ws.artifacts.load("bir-identification", key, slot=slot, version=IDENTIFICATION_FORMAT)
    if info is None:
        return None
    frame = ws.artifacts.load("bir-scores", content_key(key, "scores"), slot=slot, version=IDENTIFICATION_FORMAT)
    return {**info, "reserved": reserved, "scores": frame}


def _args(p) -> None:
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--threshold", type=finite_float, default=bir.LOG_1_05,
                   help="s(z) above which a sample is detrimental (default log 1.05, BIR A.5)")
    p.add_argument("--top-k", type=int, default=None, help="flag the K highest scores instead of a threshold")
    p.add_argument("--out", required=True, type=Path, help="CSV file to write (never overwritten)")


def run(args: argparse.Namespace) -> dict:
    out = check_output(args.out)  # before the long computation
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    ws = open_from_args(args)
    ws.version(args.version)
    with tqdm_progress("BIR identification") as progress:
        found = identification(ws, args.version, progress=progress)
    with tqdm_progress("BIR scores") as progress:
        frame = scores(ws, args.version, threshold=args.threshold, top_k=args.top_k, found=found, progress=progress)
    write_output(out, lambda tmp: frame.to_csv(tmp, index=False))
    result = {"out": str(out), "layers": found["chosen"], "layer_losses": found["losses"],
              "threshold": None if args.top_k else float(args.threshold), "top_k": args.top_k,
              "detrimental_count": int(frame["detrimental"].sum()), "reserved_size": found["reserved"].n,
              "reserved_sources": found["reserved"].sources}
    if ws.planted and ws.planted.get("flipped_labels"):
        from diagnostics.gradients import roc_auc

        flipped = np.isin(frame["index"], ws.planted["flipped_labels"])
        result["flip_auc"] = roc_auc(frame["score"].to_numpy(), flipped)
    result["text"] = (f"layers {found['chosen']}; {result['detrimental_count']} of {len(frame)} train samples "
                      f"detrimental; reserved set {found['reserved'].n}; wrote {out}")
    warning = None if args.top_k else bir.selection_warning(result["detrimental_count"], len(frame),
                                                            phi_loss=found["phi_loss"],
                                                            theta_loss=found["initial_loss"])
    if warning:  # the page's warning, with the CLI's option for top K
        result["warning"] = warning
        result["text"] += "\nwarning: " + warning.replace("pick *top K*", "pass --top-k")
    return result


register_diagnostic(Diagnostic("bir", "BIR cause identification: detrimental train samples from a clean reserved set",
                               _args, run, page="bir", example=("--out", "{tmp}/bir.csv")))
