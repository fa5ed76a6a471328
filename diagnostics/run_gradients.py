"""Per-sample gradient scores and the GCE biased model for a workspace (entry module).

Verbs (see :mod:`diagnostics.registry`):

    python -m diagnostics gradients --workspace W [--split train] [--params last|all] [--k K]
        [--lam L] [--biased-model loaded|gce] [--flag-share S] --out scores.csv [--json]
    python -m diagnostics gce --workspace W [--epochs 4] [--lr 1e-3] [--q 0.7]

The CSV has the columns ``index,label,pred,grad_norm,M,D,S,p_s,comp_loss,noisy,log_p_s`` (index =
position in the split; ``noisy`` = the calibrated likely-mislabelled flag of :mod:`diagnostics.noise`),
then the noise evidence ``p_label,p_pred,ce,entropy,noisy_paper,noise_rank`` (``noisy_paper`` =
the PGD paper's rule CE/H >= delta). Score tables, the GCE model's weights and its outputs live in the
workspace's artifact store; GCE training is a job of the job runner (kind "gce"), so the page
can start it in the background, follow its progress and cancel it.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from diagnostics import gce, noise
from diagnostics.gradients import (
    CSV_COLUMNS, PARAM_CHOICES, _check_python_model, classifier_names, effective_share, last_layer_gradients,
    last_layer_scores,
    model_gradients, planted_summary, score_table,
)
from diagnostics.registry import Diagnostic, register_diagnostic
from workspace import jobs
from workspace.artifacts import content_key
from workspace.cache import InferenceOutputs, Progress, make_loader, run_inference
from workspace.cli import UsageError, check_output, finite_float, open_from_args, tqdm_progress, write_output
from workspace.errors import WorkspaceError

SCORES_FORMAT = 6  # bump when a formula changes: invalidates stored score tables
#: the exported CSV: the contract's columns, then the noise evidence (never remove one)
EXPORT_COLUMNS = CSV_COLUMNS + noise.NOISE_COLUMNS
DEFAULT_LAM = 0.0  # S = M: p_s keeps a usable effective sample share (see compute_scores)
PLANTED_KEYS = ("minority_auc", "flip_recall", "clean_flagged", "flip_recall_paper", "clean_flagged_paper")
BIASED_CHOICES = (None, "gce")
GCE_KIND = "gce"
jobs.register_job_kind(GCE_KIND, "diagnostics.run_gradients:execute_gce",
                       description="train the GCE biased model of the PGD paper")


# ---- the GCE biased model ---------------------------------------------------------------------
def gce_key(ws, config: gce.GCEConfig = gce.GCEConfig()) -> str:
    spec = ws.config.model
    arch = f"{spec.kind}:{spec.torchvision or spec.factory or spec.torchscript}"
    return content_key("gce", ws.split("train").fingerprint(), arch, vars(config))


def train_gce_model(ws, config: gce.GCEConfig = gce.GCEConfig(), *, progress: Progress | None = None,
                    device: str = "auto", should_stop=None) -> nn.Module:
    """Train the GCE biased model from scratch on the train split (Adam, no augmentation),
    through the one training loop. Returns it in eval mode on CPU."""
    from workspace.models import select_device
    from workspace.training import fit, seed_everything

    config.validate()
    if ws.multi_label:
        raise WorkspaceError("the GCE biased model is single-label only")
    generator = seed_everything(config.seed)
    dev = select_device(device)
    model = gce.fresh_copy(ws.model()).to(dev)
    labels = torch.as_tensor(ws.split("train").labels)
    data = ws.dataset("train")
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True, generator=generator,
                                         num_workers=0, drop_last=len(data) > config.batch_size)

    def loss_fn(batch):
        x, index, ok = batch
        ok = ok.bool()
        if ok.sum() < 2:
            return None, 0
        return gce.gce_loss(model(x[ok].to(dev)), labels[index[ok]].to(dev), config.q), int(ok.sum())

    def on_step(step, total, loss):
        if progress is not None:
            progress(step, total)

    fit(model, lambda epoch: loader, loss_fn, torch.optim.Adam(model.parameters(), lr=config.lr),
        epochs=config.epochs, steps_per_epoch=len(loader), device=dev, on_step=on_step, should_stop=should_stop)
    return model.to("cpu").eval()


def load_gce_model(ws, config: gce.GCEConfig = gce.GCEConfig()) -> nn.Module | None:
    """The trained GCE model if stored for this data and architecture, else None."""
    state = ws.artifacts.load("gce-model", gce_key(ws, config))
    if state is None:
        return None
    from workspace.models import apply_state_dict

    model = gce.fresh_copy(ws.model())
    apply_state_dict(model, state, source="GCE biased model")
    return model.eval()


def gce_outputs(ws, model: nn.Module, config: gce.GCEConfig = gce.GCEConfig(), *,
                progress: Progress | None = None) -> InferenceOutputs:
    """Outputs (logits, probabilities, embeddings) of the GCE model on the train split, stored."""
    def compute():
        data = ws.split("train")
        out = run_inference(model, make_loader(ws.dataset("train")), tap=ws.embedding_tap(model),
                            labels=data.labels, class_names=data.class_names, task=ws.task, progress=progress)
        out.split, out.model_version = "train", "gce"
        return out

    return ws.artifacts.get_or_compute("gce-outputs", content_key(gce_key(ws, config), ws.outputs_key("train")),
                                       compute)


def execute_gce(ws, job: dict, rep: jobs.Reporter) -> dict:
    """The job entry: train, store the weights, score the train split."""
    config = gce.GCEConfig(**(job["params"] or {}).get("config", {}))
    rep.phase("GCE training", share=(0.0, 0.9))
    model = train_gce_model(ws, config, progress=rep.progress, should_stop=rep.should_stop)
    ws.artifacts.save("gce-model", gce_key(ws, config), {k: v.detach().cpu() for k, v in model.state_dict().items()})
    rep.phase("scoring the train split with the GCE model", share=(0.9, 1.0))
    gce_outputs(ws, model, config, progress=rep.progress)
    return {"key": gce_key(ws, config)}


def gce_job(ws, config: gce.GCEConfig = gce.GCEConfig()) -> dict | None:
    """The newest GCE job for this configuration (None when there is none)."""
    found = [j for j in jobs.list_jobs(ws, kind=GCE_KIND) if j["run_key"] == gce_key(ws, config)]
    return found[-1] if found else None


def gce_status(ws, config: gce.GCEConfig = gce.GCEConfig()) -> dict:
    """``{"status": "none"|"queued"|"running"|"done"|"failed"|"cancelled", "progress", "message", "error",
    "id"}``; "done" whenever the weights are stored."""
    if ws.artifacts.exists("gce-model", gce_key(ws, config)):
        return {"status": "done", "progress": 1.0, "message": "done", "error": None, "id": None}
    job = gce_job(ws, config)
    if job is None:
        return {"status": "none", "progress": 0.0, "message": "", "error": None, "id": None}
    return {"status": job["status"], "progress": job["progress"] or 0.0, "message": job["message"] or "",
            "error": job["error"], "id": job["id"]}


def start_gce_job(ws, config: gce.GCEConfig = gce.GCEConfig()) -> int:
    """Start GCE training as a background job; refuses a second one for the same configuration."""
    config.validate()
    if gce_status(ws, config)["status"] in jobs.ACTIVE:
        raise WorkspaceError("a GCE job is already running for this workspace")
    from workspace.models import select_device

    return jobs.submit(ws, GCE_KIND, queue=select_device("auto").type, params={"config": vars(config)},
                       run_key=gce_key(ws, config))


def load_or_train_gce(ws, config: gce.GCEConfig = gce.GCEConfig(), *, progress=None) -> nn.Module:
    """The GCE model from the store, or trained now in this process (and stored)."""
    model = load_gce_model(ws, config)
    if model is None:
        model = train_gce_model(ws, config, progress=progress)
        ws.artifacts.save("gce-model", gce_key(ws, config), {k: v.detach().cpu() for k, v in model.state_dict().items()})
    return model


# ---- gradients and scores --------------------------------------------------------------------
def _head_layer(ws, model: nn.Module) -> tuple[str, bool]:
    """(classifier module name, whether the cached embedding is exactly its input)."""
    from workspace.models import find_classifier

    tap = ws.embedding_tap(model)
    if tap.module is not None and tap.use_input and isinstance(tap.module, nn.Linear):
        return tap.layer, True
    return find_classifier(model, ws.example_input(), ws.num_classes), False


def _closed_form(ws, model: nn.Module, outputs: InferenceOutputs) -> bool:
    """Whether the cached embeddings are the head's input and the logits exactly head(embedding)."""
    from workspace.layers import head_fits_outputs

    if isinstance(model, torch.jit.ScriptModule):
        return False
    layer, exact_input = _head_layer(ws, model)
    return exact_input and head_fits_outputs(dict(model.named_modules())[layer], outputs)


def compute_gradients(ws, model: nn.Module, outputs: InferenceOutputs, *, split: str = "train",
                      params: str = "last", k: int = 256, chunk: int = 64, progress: Progress | None = None,
                      device: str = "auto") -> np.ndarray:
    """Per-sample gradients of ``model`` on ``split``, rows aligned with ``outputs.indices``.

    ``params="last"`` uses the closed form on the cached outputs when exact, else ``vmap``
    over the classifier's parameters; ``params="all"`` runs ``vmap`` over every parameter
    and keeps the ``k`` dominant dimensions.
    """
    from workspace.layers import head_fits_outputs
    from workspace.models import select_device

    if params not in PARAM_CHOICES:
        raise WorkspaceError(f"params must be one of {', '.join(PARAM_CHOICES)}, got {params!r}")
    if outputs.multi_label:
        raise WorkspaceError("gradient scores are single-label only; this workspace is multi-label")
    _check_python_model(model)
    if params == "last":
        layer, exact_input = _head_layer(ws, model)
        head = dict(model.named_modules())[layer]
        if exact_input and head_fits_outputs(head, outputs):
            return last_layer_gradients(outputs.probs, outputs.labels, outputs.embeddings).astype(np.float32)
        names, k_used = classifier_names(model, layer), None
    else:
        names, k_used = None, int(k)
        if k_used < 1:
            raise WorkspaceError(f"--k must be at least 1, got {k}")
    dev = select_device(device)
    work = model if dev.type == "cpu" else copy.deepcopy(model)
    loader = make_loader(ws.dataset(split), batch_size=chunk)
    loader.labels = ws.split(split).labels
    grads, idx = model_gradients(work, loader, names=names, k=k_used, task=ws.task, device=dev, progress=progress)
    order = pd.Series(np.arange(len(idx)), index=idx).reindex(outputs.indices)
    if order.isna().any():
        raise WorkspaceError("the gradient pass and the cached outputs disagree on which images load")
    return grads[order.to_numpy().astype(np.int64)]


def compute_scores(ws, version: str = "orig", *, split: str = "train", params: str = "last", k: int = 256,
                   lam: float = DEFAULT_LAM, biased_model: str | None = None, progress: Progress | None = None,
                   rebuild: bool = False) -> pd.DataFrame:
    """The score table of a split, from the artifact store or one computation.

    Args:
        version: model version whose outputs drive the noise flags and, when
            ``biased_model`` is None, the gradients.
        lam: the balance lambda of S (default 0: ``S = M``). With ``lam > 0`` the vMF
            direction score enters; in the dimension of a classifier gradient its
            concentration is in the hundreds, D spans hundreds of orders of magnitude and
            p_s collapses onto a handful of samples (``attrs["effective_share"]`` ~ 1/N on
            the demo and on a CIFAR-10 ResNet-56), which no sampler can use.
        biased_model: None (the model version itself) or ``"gce"`` (the GCE-trained biased
            model of the PGD paper, Algorithm 2 step 1, trained first if missing).
        progress: ``progress(done, total)`` over the passes; raise from it to cancel.

    Returns:
        :func:`diagnostics.gradients.score_table`'s frame with ``noisy`` replaced by the
        calibrated flag and the evidence of :func:`diagnostics.noise.noise_table` added
        (``p_label, p_pred, ce, entropy, noisy_paper, noise_rank``; export with
        :data:`EXPORT_COLUMNS`). When scoring the train split, the eval split's outputs are
        the flag's held-out baseline. ``frame.attrs``: the attrs of
        :func:`diagnostics.noise.noise_table` (``delta``, ``noise_count``, ``noise_default``,
        ``confident_errors``, ``heldout_share``, ...), ``heldout_split``, ``source``, ``lam``,
        ``effective_share`` and, on the demo, the planted recovery of both flags
        (``flip_recall``/``clean_flagged`` for the calibrated flag,
        ``flip_recall_paper``/``clean_flagged_paper`` for the paper's).
    """
    if params not in PARAM_CHOICES:
        raise WorkspaceError(f"params must be one of {', '.join(PARAM_CHOICES)}, got {params!r}")
    if biased_model not in BIASED_CHOICES:
        raise WorkspaceError(f"biased_model must be None or 'gce', got {biased_model!r}")
    if not (lam >= 0 and np.isfinite(lam)):
        raise WorkspaceError(f"lambda must be a finite number >= 0, got {lam}")
    if ws.multi_label:
        raise WorkspaceError("gradient scores and the noise split are single-label only; this workspace is multi-label")
    if biased_model == "gce" and split != "train":
        raise WorkspaceError("the GCE biased model scores the train split only")
    source_key = gce_key(ws) if biased_model == "gce" else version
    # the eval outputs enter the train table through the flag's held-out baseline
    heldout_key = ws.outputs_key("eval", version) if split == "train" else None
    key = content_key(ws.outputs_key(split, version), source_key, params, k if params == "all" else 0, f"{lam:g}",
                      heldout_key)

    def compute() -> pd.DataFrame:
        outputs = ws.outputs(split, version, progress=progress)
        if biased_model == "gce":
            model = load_or_train_gce(ws, progress=progress)
            bias_out = gce_outputs(ws, model, progress=progress)
        else:
            model, bias_out = ws.model(version), outputs
        if params == "last" and _closed_form(ws, model, bias_out):
            # exact last-layer scores from per-class sums: no N x K(D+1) gradient matrix in memory
            scores = last_layer_scores(bias_out.probs, bias_out.labels, bias_out.embeddings, lam=lam)
            frame = score_table(bias_out, None, lam=lam, noise_outputs=outputs, scores=scores)
        else:
            grads = compute_gradients(ws, model, bias_out, split=split, params=params, k=k, progress=progress)
            frame = score_table(bias_out, grads, lam=lam, noise_outputs=outputs)
        # the held-out baseline of the calibrated flag: the eval split when scoring train
        heldout = ws.outputs("eval", version, progress=progress) if split == "train" else None
        frame = _with_noise_flags(frame, outputs, heldout)
        frame.attrs.update({"source": biased_model or version, "version": version, "params": params,
                            "k": int(k) if params == "all" else None, "lam": float(lam),
                            "effective_share": effective_share(frame["p_s"].to_numpy())})
        if split == "train":
            frame.attrs.update(planted_summary(frame, ws.planted))
            paper = planted_summary(frame.assign(noisy=frame["noisy_paper"]), ws.planted)
            frame.attrs.update({f"{name}_paper": paper[name] for name in ("flip_recall", "clean_flagged")
                                if name in paper})
        return frame

    return ws.artifacts.get_or_compute("gradient-scores", key, compute, slot=f"{version}/{split}",
                                       version=SCORES_FORMAT, rebuild=rebuild)


def _with_noise_flags(frame: pd.DataFrame, outputs: InferenceOutputs,
                      heldout: InferenceOutputs | None) -> pd.DataFrame:
    """The score table with the calibrated flag as ``noisy`` and the evidence columns after it."""
    table = noise.noise_table(outputs.probs, outputs.labels,
                              heldout_probs=None if heldout is None else heldout.probs,
                              heldout_labels=None if heldout is None else heldout.labels)
    table.index = outputs.indices
    rows = table.reindex(frame["index"].to_numpy())
    attrs = dict(frame.attrs)
    frame = frame.copy()
    for column in noise.NOISE_COLUMNS:
        frame[column] = rows[column].to_numpy()
    # a row the noise model did not score (an image it could not load) is never flagged
    for column in ("noisy", "noisy_paper"):
        frame[column] = rows[column].eq(True).to_numpy()
    frame["noise_rank"] = rows["noise_rank"].fillna(0).to_numpy(dtype=np.int64)
    frame.attrs = {**attrs, **table.attrs, "heldout_split": None if heldout is None else heldout.split}
    return frame


def flag_count(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """The score table with ``noisy`` re-drawn to flag ``count`` samples (``attrs`` updated).

    The ``count`` most suspicious samples by ``noise_rank`` (the default flags first, then the
    paper's other flags, each by compensated loss: :func:`diagnostics.noise.flag_top`); the
    stored table is not changed.
    """
    out = frame.copy()
    out["noisy"] = noise.flag_top(out["noise_rank"].to_numpy(), int(count))
    out.attrs = {**frame.attrs, **noise.noise_summary(out, delta=frame.attrs["delta"])}
    return out


def flag_share(frame: pd.DataFrame, share: float | None = None) -> pd.DataFrame:
    """:func:`flag_count` at ``round(share * N)`` samples; None keeps the stored flag."""
    return frame if share is None else flag_count(frame, noise.count_for_share(share, len(frame)))


def train_sampling_probabilities(ws, version: str = "orig", *, progress: Progress | None = None,
                                 biased_model: str | None = None, lam: float = 0.0) -> np.ndarray:
    """p_s of every train sample, for the pgd repair's rejection sampler (PGD Algorithm 1).

    Args:
        version: the model version (the biased model when ``biased_model`` is None).
        biased_model: None or ``"gce"``.
        lam: the balance lambda of S. Default 0 (``S = M``, so ``p_s = ||g_i|| / max_j ||g_j||``
            per class: the magnitude-only sampler of the published PGD paper, ICLR 2023).
            With ``lam > 0`` the vMF direction score enters; in the dimension of a classifier
            gradient its concentration ``kappa`` is in the hundreds, D spans hundreds of orders
            of magnitude and p_s collapses onto a handful of samples, which a rejection sampler
            cannot use.

    Returns:
        (len(ws.split("train")),) float64 in (0, 1], aligned with train split positions;
        samples skipped at load get 1.
    """
    frame = compute_scores(ws, version, split="train", biased_model=biased_model, lam=lam, progress=progress)
    p_s = np.ones(len(ws.split("train")), dtype=np.float64)
    p_s[frame["index"].to_numpy()] = frame["p_s"].to_numpy()
    return p_s


def sampling_weights_frame(ws, frame: pd.DataFrame) -> pd.DataFrame:
    """The pgd export: one row per train position, ``index, p_s, noisy`` (skipped: p_s 1)."""
    n = len(ws.split("train"))
    p_s = np.ones(n)
    noisy = np.zeros(n, dtype=bool)
    p_s[frame["index"].to_numpy()] = frame["p_s"].to_numpy()
    noisy[frame["index"].to_numpy()] = frame["noisy"].to_numpy()
    return pd.DataFrame({"index": np.arange(n), "p_s": p_s, "noisy": noisy})


# ---- the commands ----------------------------------------------------------------------------
def _gradients_args(p) -> None:
    p.add_argument("--split", default="train", choices=["train", "eval"])
    p.add_argument("--params", default="last", choices=list(PARAM_CHOICES),
                   help="last layer (default, exact closed form) or all parameters reduced to --k dims")
    p.add_argument("--k", type=int, default=256, help="dominant dimensions kept with --params all (default 256)")
    p.add_argument("--lam", type=finite_float, default=DEFAULT_LAM,
                   help="balance lambda of the harmonic mean of M and D (default 0: S = M; any lambda > 0 lets "
                        "the vMF direction score in, which concentrates p_s on a handful of samples)")
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--biased-model", default="loaded", choices=["loaded", "gce"],
                   help="score with the loaded model (default) or a GCE-trained biased model")
    p.add_argument("--flag-share", type=finite_float, default=None,
                   help="flag this share of the split as likely mislabelled, most suspicious first, e.g. 0.001 "
                        "(default: the confident-learning count beyond the model's held-out error rate)")
    p.add_argument("--out", required=True, type=Path, help="CSV file to write (never overwritten)")


def run_gradients(args: argparse.Namespace) -> dict:
    """The gradients verb: write the score table as CSV and report the flags and p_s."""
    out = check_output(args.out)  # before the long computation
    if args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    if args.lam < 0:
        raise UsageError(f"--lam must be >= 0, got {args.lam}")
    if args.flag_share is not None and not 0 <= args.flag_share <= 1:
        raise UsageError(f"--flag-share must be in [0, 1], got {args.flag_share}")
    ws = open_from_args(args)
    ws.version(args.version)
    with tqdm_progress("gradients") as progress:
        frame = compute_scores(ws, args.version, split=args.split, params=args.params, k=args.k, lam=args.lam,
                               biased_model=None if args.biased_model == "loaded" else "gce", progress=progress)
    frame = flag_share(frame, args.flag_share)
    write_output(out, lambda tmp: frame[EXPORT_COLUMNS].to_csv(tmp, index=False))
    a = frame.attrs
    result = {
        "out": str(out), "split": args.split, "rows": len(frame), "params": args.params,
        "biased_model": args.biased_model, "lam": float(args.lam), "columns": EXPORT_COLUMNS,
        "delta": float(a["delta"]), "noisy": a["noise_count"], "noisy_share": a["noisy_share"],
        "noise_default": a["noise_default"], "confident_errors": a["confident_errors"],
        "heldout_share": a["heldout_share"], "noisy_paper": int(frame["noisy_paper"].sum()),
        "noisy_paper_share": a["noisy_paper_share"], "effective_share": float(a["effective_share"]),
        "p_s": {"min": float(frame["p_s"].min()), "median": float(frame["p_s"].median())},
        **{k: a[k] for k in PLANTED_KEYS if k in a},
    }
    planted = "".join(f"; {k} {result[k]:.3f}" for k in PLANTED_KEYS if k in result)
    held = ("" if result["heldout_share"] is None else
            f", {result['heldout_share']:.2%} on the held-out {a['heldout_split']} split")
    result["text"] = (
        f"wrote {len(frame)} rows to {out}\n"
        f"likely mislabelled: {result['noisy']} ({result['noisy_share']:.2%}; default {result['noise_default']}: "
        f"confident errors {result['confident_errors'] / max(len(frame), 1):.2%} of the split{held})\n"
        f"paper's rule CE/H >= delta {result['delta']:.3f}: {result['noisy_paper']} "
        f"({result['noisy_paper_share']:.2%})\n"
        f"p_s (lambda {args.lam:g}): effective sample share {result['effective_share']:.3f}, median p_s "
        f"{result['p_s']['median']:.3g}{planted}")
    return result


def _gce_args(g) -> None:
    g.add_argument("--epochs", type=int, default=4)
    g.add_argument("--lr", type=finite_float, default=1e-3)
    g.add_argument("--q", type=finite_float, default=0.7)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--seed", type=int, default=0)


def run_gce(args: argparse.Namespace) -> dict:
    """Train the GCE model in this process, as a job of the job runner (so the page sees it)."""
    from workspace.models import select_device

    config = gce.GCEConfig(q=args.q, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    config.validate()
    ws = open_from_args(args)
    job_id = jobs.create_job(ws, GCE_KIND, queue=select_device("auto").type, params={"config": vars(config)},
                             run_key=gce_key(ws, config))
    with tqdm_progress("GCE training") as progress:
        job = jobs.run_foreground(ws, job_id, on_progress=lambda done, total, message, eta: progress(done, total))
    if job["status"] != "done":
        raise WorkspaceError(f"GCE training {job['status']}: {job['error'] or ''}".strip().rstrip(":"))
    return {"status": "done", "job_id": job_id, "key": gce_key(ws, config),
            "text": f"GCE biased model trained (job {job_id})"}


register_diagnostic(Diagnostic("gradients", "per-sample gradient scores (PGD) and the noisy-label split",
                               _gradients_args, run_gradients, page="gradients",
                               example=("--out", "{tmp}/scores.csv")))
register_diagnostic(Diagnostic("gce", "train the GCE (q=0.7) biased model of the PGD paper", _gce_args, run_gce,
                               page="gradients", example=("--epochs", "1")))
