"""Grad-CAM, where it looks, and object associations for a workspace (entry module; see
:mod:`diagnostics.registry`).

* ``python -m diagnostics gradcam --workspace W [--split eval] [--threshold T] [--target CLASS]
  [--sort rate|priority|wrong|excess|lift] [--hide-trivial] [--json]`` (needs object masks)
  prints ``{"associations": [{"class", "object", "count", "rate", "share_mean", "count_correct",
  "count_wrong"}]}``, sorted by rate descending by default (``--sort priority``: the reviewer's
  order of :func:`diagnostics.associations.rank_associations`).
* ``python -m diagnostics gradcam-summary --workspace W [--split eval] [--pair A,B]
  [--explain CLASS] [--json]`` (no masks needed) prints where the model looks
  (:mod:`diagnostics.cam_summary`): per predicted class the mean share of relevance in the
  centre and on the border, and for a pair (default: the most confused) the same for the
  A->A, A->B, B->B and B->A groups.

Heatmaps, region shares and object shares live in the workspace's artifact store, keyed by the
model version's outputs key (weights, data, transform), the Grad-CAM layer, the explained class
and, for object shares, the masks. A pass over more than :data:`BACKGROUND_IMAGES` images runs as
a job of the job runner (kind "gradcam"), so the page stays responsive, shows its progress with
an ETA and can cancel it.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from diagnostics.associations import (
    DEFAULT_THRESHOLD, RANKINGS, ObjectShares, aggregate_associations, compute_object_shares, rank_associations,
)
from diagnostics.cam_summary import (
    BORDER, CENTRE, CamRegions, pair_choices, pair_groups, pair_rows, region_masks, region_shares, summarise_groups,
    where_it_looks,
)
from diagnostics.confusion import error_matrix
from diagnostics.gradcam import GradCamResult, compute_gradcam, resolve_layer, target_rows, upsample_cams
from diagnostics.mask_sources import MASKS_HELP, load_masks, masks_fingerprint
from diagnostics.registry import Diagnostic, register_diagnostic
from workspace import jobs
from workspace.artifacts import content_key
from workspace.cache import Progress
from workspace.cli import UsageError, finite_float, open_from_args, tqdm_progress
from workspace.errors import WorkspaceError
from workspace.targets import Target

GRADCAM_FORMAT = 2
SHARES_FORMAT = 2
REGIONS_FORMAT = 2
#: region shares are measured on heatmaps upsampled to at most this many pixels a side: the
#: bilinear maps are smooth, so a finer grid changes the shares by well under a percent
REGION_GRID = 64
KEYS = ("class", "object", "count", "rate", "share_mean", "count_correct", "count_wrong")
#: a page's first pass over more images than this runs as a background job (50,000 8 x 8 images
#: of a tiny net took 8 s on 2 CPU cores, a CIFAR-10 ResNet-56 far longer; the demo's 6,000
#: train images stay in the page)
BACKGROUND_IMAGES = 6000
GRADCAM_KIND = "gradcam"
jobs.register_job_kind(GRADCAM_KIND, "diagnostics.run_gradcam:execute_gradcam",
                       description="Grad-CAM heatmaps of a split and their centre/border shares")


def gradcam_key(ws, split: str, version: str, target: str | None) -> str:
    return content_key(ws.outputs_key(split, version), ws.config.model.gradcam_layer, target or "pred")


def cached_gradcam(ws, split: str = "eval", version: str = "orig", *, target: str | None = None
                   ) -> GradCamResult | None:
    """The stored result if present and current (never runs the model)."""
    return ws.artifacts.load("gradcam", gradcam_key(ws, split, version, target),
                             slot=f"{version}/{split}/{target or 'pred'}", version=GRADCAM_FORMAT)


def workspace_gradcam(ws, split: str = "eval", version: str = "orig", *, target: str | None = None,
                      progress: Progress | None = None, batch_size: int = 128, device: str = "auto",
                      rebuild: bool = False, outputs=None) -> GradCamResult:
    """Grad-CAM of a model version on a split, from the artifact store or one batched pass.

    Args:
        target: None = explain the predicted class(es); a class name = that class.
        progress: ``progress(done, total)``; raise from it to cancel (nothing is stored).
        outputs: the split's ``InferenceOutputs`` if the caller has them.

    Raises:
        WorkspaceError: TorchScript or conv-less model, bad layer, unknown class name.
    """
    target_idx = None
    if target is not None:
        if target not in ws.class_names:
            raise WorkspaceError(f"unknown class {target!r}; valid: {', '.join(ws.class_names)}")
        target_idx = ws.class_names.index(target)

    def compute() -> GradCamResult:
        model = ws.model(version)
        layer = resolve_layer(model, ws.config.model.gradcam_layer, ws.example_input())
        out = outputs if outputs is not None else ws.outputs(split, version)
        indices, classes, correct = target_rows(out.preds, out.labels, out.indices, task=ws.task, target=target_idx)
        cams = compute_gradcam(model, ws.dataset(split), layer=layer, indices=indices, classes=classes,
                               batch_size=batch_size, device=device, progress=progress)
        size = tuple(int(s) for s in ws.example_input(1).shape[-2:])
        return GradCamResult(indices, classes, np.asarray(correct, bool), cams, size, layer, target or "pred",
                             split, version)

    return ws.artifacts.get_or_compute("gradcam", gradcam_key(ws, split, version, target), compute,
                                       slot=f"{version}/{split}/{target or 'pred'}", version=GRADCAM_FORMAT,
                                       rebuild=rebuild)


def workspace_shares(ws, result: GradCamResult, masks, *, progress: Progress | None = None) -> ObjectShares:
    """:func:`diagnostics.associations.compute_object_shares` for a workspace, stored."""
    t = ws.config.transform
    key = content_key(gradcam_key(ws, result.split, result.model_version, None if result.target == "pred"
                                  else result.target), masks_fingerprint(masks), t.resize, t.crop)

    def compute() -> ObjectShares:
        if hasattr(masks, "prepare"):  # a segmentation model: label maps first (cached)
            masks.prepare(progress)
        return compute_object_shares(result, masks, resize=t.resize, crop=t.crop, progress=progress)

    return ws.artifacts.get_or_compute("object-shares", key, compute,
                                       slot=f"{result.model_version}/{result.split}/{result.target}",
                                       version=SHARES_FORMAT)


def workspace_regions(ws, result: GradCamResult, *, centre: float = CENTRE, border: float = BORDER,
                      progress: Progress | None = None, batch_size: int = 512) -> CamRegions:
    """Centre and border shares of every heatmap row (:mod:`diagnostics.cam_summary`), stored.

    Heatmaps are upsampled (bilinear, as everywhere on the page) to the model input size,
    capped at :data:`REGION_GRID` pixels a side, in batches.

    Args:
        progress: ``progress(done, total)``; raise from it to cancel (nothing is stored).
    """
    key = content_key(gradcam_key(ws, result.split, result.model_version,
                                  None if result.target == "pred" else result.target), centre, border, REGION_GRID)

    def compute() -> CamRegions:
        h, w = result.input_size
        scale = min(1.0, REGION_GRID / max(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        inner, band = region_masks(size, centre=centre, border=border)
        out_c = np.zeros(result.n, dtype=np.float32)
        out_b = np.zeros(result.n, dtype=np.float32)
        for start in range(0, result.n, batch_size):
            up = upsample_cams(result.cams[start:start + batch_size], size)
            out_c[start:start + len(up)] = region_shares(up, inner)
            out_b[start:start + len(up)] = region_shares(up, band)
            if progress is not None:
                progress(start + len(up), result.n)
        return CamRegions(out_c, out_b, float(inner.mean()), float(band.mean()), centre, border)

    return ws.artifacts.get_or_compute("cam-regions", key, compute,
                                       slot=f"{result.model_version}/{result.split}/{result.target}",
                                       version=REGIONS_FORMAT)


# ---- the background job ------------------------------------------------------------------------
def execute_gradcam(ws, job: dict, rep: jobs.Reporter) -> dict:
    """The job entry: the heatmaps of ``params`` (split, version, target), then their region shares."""
    params = job["params"] or {}
    split, version, target = params["split"], params["version"], params.get("target")

    def progress(done: int, total: int) -> None:
        rep.check()  # Cancel: raises, nothing partial is stored
        rep.progress(done, total)

    rep.phase(f"Grad-CAM of {target or 'the predicted class'} ({version}, {split})", share=(0.0, 0.9))
    result = workspace_gradcam(ws, split, version, target=target, progress=progress)
    rep.phase("centre and border share of every heatmap", share=(0.9, 1.0))
    workspace_regions(ws, result, progress=progress)
    return {"key": gradcam_key(ws, split, version, target), "heatmaps": int(result.n)}


def gradcam_job(ws, split: str, version: str, target: str | None = None) -> dict | None:
    """The newest Grad-CAM job for (split, version, target) on the current data and weights, or None."""
    key = gradcam_key(ws, split, version, target)
    found = [j for j in jobs.list_jobs(ws, kind=GRADCAM_KIND) if j["run_key"] == key]
    return found[-1] if found else None


def start_gradcam_job(ws, split: str, version: str, target: str | None = None) -> int:
    """Start the Grad-CAM pass as a background job; refuses a second one for the same pass.

    Returns:
        The job id.
    """
    job = gradcam_job(ws, split, version, target)
    if job is not None and job["status"] in jobs.ACTIVE:
        raise WorkspaceError(f"a Grad-CAM job for {target or 'the predicted class'} on {split} is already running")
    if target is not None and target not in ws.class_names:
        raise WorkspaceError(f"unknown class {target!r}; valid: {', '.join(ws.class_names)}")
    from workspace.models import select_device

    return jobs.submit(ws, GRADCAM_KIND, queue=select_device("auto").type,
                       params={"split": split, "version": version, "target": target},
                       run_key=gradcam_key(ws, split, version, target))


def class_looks(ws, result: GradCamResult, regions: CamRegions):
    """:func:`diagnostics.cam_summary.where_it_looks` per explained class of a result."""
    return where_it_looks(regions.centre, regions.border, result.classes, result.correct,
                          class_names=ws.class_names)


def default_pairs(ws, outputs, *, preferred=()) -> list[tuple[int, int]]:
    """Pairs to offer for the mistakes view: ``preferred`` (the repair target) first, then the most confused."""
    errors = error_matrix(outputs.labels, outputs.preds, ws.num_classes, task=ws.task)
    return pair_choices(errors, preferred=preferred)


def pair_summary(ws, result: GradCamResult, regions: CamRegions, outputs, a: int, b: int):
    """The four groups of a pair with their heatmap rows, mean maps and centre/border shares.

    Returns:
        ``(groups, rows, means, table)``: positions ``{(true, pred): (M,)}`` into ``outputs``,
        the heatmap rows aligned with them, means (4, h, w) at the layer's resolution in the
        order A->A, A->B, B->B, B->A, and the :func:`~diagnostics.cam_summary.summarise_groups`
        frame (``group`` = ``"A -> B"`` with class names).
    """
    groups = pair_groups(outputs.labels, outputs.preds, a, b, task=ws.task)
    target = None if result.target == "pred" else ws.class_names.index(result.target)
    rows = pair_rows(groups, outputs.indices, result.indices, result.classes, target=target)
    named = {f"{ws.class_names[t]} -> {ws.class_names[p]}": r for (t, p), r in rows.items()}
    means, table = summarise_groups(result.cams, regions.centre, regions.border, named)
    return groups, rows, means, table


def _args(p) -> None:
    p.add_argument("--split", default="eval", choices=["eval", "train"], help="train or eval (default eval)")
    p.add_argument("--threshold", type=finite_float, default=DEFAULT_THRESHOLD,
                   help="relevance share at which an object counts as driving the prediction (default 0.3)")
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--target", default=None, metavar="CLASS",
                   help="explain this class for every image instead of the predicted class")
    p.add_argument("--top", type=int, default=0, help="keep only the first N associations (0 = all)")
    p.add_argument("--sort", default="rate", choices=list(RANKINGS),
                   help="order: rate (default), or priority = the reviewer's order (wrong predictions first, then "
                        "excess over the object's base rate; rows where the object is the class go last)")
    p.add_argument("--hide-trivial", action="store_true",
                   help="leave out rows whose object is the class itself (e.g. plus <- plus)")


def run(args: argparse.Namespace) -> dict:

    if not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.top < 0:
        raise UsageError(f"--top must be >= 0, got {args.top}")
    ws = open_from_args(args)
    ws.version(args.version)
    masks = load_masks(ws, args.split)
    if masks is None:
        raise WorkspaceError("this workspace has no object masks (`python -m diagnostics gradcam-summary` works "
                             "without them). " + " ".join(MASKS_HELP.split()))
    for warning in getattr(masks, "warnings", []) or []:
        print(f"warning: {warning}", file=sys.stderr)
    with tqdm_progress("inference") as progress:
        outputs = ws.outputs(args.split, args.version, progress=progress)
    with tqdm_progress("grad-cam") as progress:
        result = workspace_gradcam(ws, args.split, args.version, target=args.target, progress=progress,
                                   outputs=outputs)
    with tqdm_progress("object shares") as progress:
        shares = workspace_shares(ws, result, masks, progress=progress)
    df = aggregate_associations(shares.shares, result.classes, result.correct, class_names=ws.class_names,
                                object_names=shares.object_names, threshold=args.threshold)
    legit = [tuple(r["key"].split("|", 1)) for r in ws.store.list_reviews("association", model_version=args.version)
             if r["verdict"] == "legitimate"]
    df = rank_associations(df, legitimate=legit, by=args.sort)
    if args.hide_trivial:
        df = df[~df["trivial"]]
    if args.top > 0:
        df = df.head(args.top)
    rows = [{k: (round(float(r[k]), 6) if k in ("rate", "share_mean") else r[k]) for k in KEYS}
            for r in df.to_dict("records")]
    rows = [{k: (int(v) if k.startswith("count") else v) for k, v in r.items()} for r in rows]
    text = "\n".join(f"{r['class']:>14} <- {r['object']:<14} rate {r['rate']:.3f}  count {r['count']}"
                     f" ({r['count_correct']} correct, {r['count_wrong']} wrong)  share {r['share_mean']:.3f}"
                     for r in rows[:30])
    return {"associations": rows, "text": text or "no associations"}


register_diagnostic(Diagnostic("gradcam", "Grad-CAM object associations per predicted class", _args, run,
                               page="gradcam", example=("--top", "5")))


def _summary_args(p) -> None:
    p.add_argument("--split", default="eval", choices=["eval", "train"], help="train or eval (default eval)")
    p.add_argument("--version", default="orig", help="model version (default orig)")
    p.add_argument("--pair", default=None, metavar="A,B", help="the pair whose mistakes to summarise "
                   "(default: the most confused pair)")
    p.add_argument("--explain", default=None, metavar="CLASS",
                   help="for the pair: explain this class on every image instead of the predicted class")


def _fmt(x: float) -> float | None:
    return None if x != x else round(float(x), 6)  # NaN (an empty group) -> null


def run_summary(args: argparse.Namespace) -> dict:
    ws = open_from_args(args)
    ws.version(args.version)
    pair = None
    if args.pair is not None:
        try:
            target = Target.parse(args.pair, ws.class_names)
        except ValueError as exc:
            raise UsageError(f"--pair: {exc}") from None
        if target.kind != "confusion" or len(target.groups) != 1:
            raise UsageError(f"--pair takes one pair A,B, got {args.pair!r}")
        pair = target.groups[0]
    if args.explain is not None and args.explain not in ws.class_names:
        raise UsageError(f"--explain: unknown class {args.explain!r}; valid: {', '.join(ws.class_names)}")
    with tqdm_progress("inference") as progress:
        outputs = ws.outputs(args.split, args.version, progress=progress)
    with tqdm_progress("grad-cam") as progress:
        result = workspace_gradcam(ws, args.split, args.version, progress=progress, outputs=outputs)
    with tqdm_progress("centre/border shares") as progress:
        regions = workspace_regions(ws, result, progress=progress)
    looks = class_looks(ws, result, regions)
    a, b = pair or default_pairs(ws, outputs)[0]
    if args.explain is not None:
        with tqdm_progress(f"grad-cam of {args.explain}") as progress:
            result = workspace_gradcam(ws, args.split, args.version, target=args.explain, progress=progress,
                                       outputs=outputs)
        with tqdm_progress("centre/border shares") as progress:
            regions = workspace_regions(ws, result, progress=progress)
    _, _, _, table = pair_summary(ws, result, regions, outputs, a, b)
    classes = [{"class": r["class"], "n": int(r["n"]), "n_wrong": int(r["n_wrong"]), "n_empty": int(r["n_empty"]),
                **{k: _fmt(r[k]) for k in ("centre_share", "border_share", "centre_share_wrong",
                                           "border_share_wrong")}} for r in looks.to_dict("records")]
    groups = [{"group": r["group"], "n": int(r["n"]), "n_empty": int(r["n_empty"]), "centre_share": _fmt(r["centre_share"]),
               "border_share": _fmt(r["border_share"])} for r in table.to_dict("records")]
    pct = lambda x: "   -" if x is None else f"{x:4.0%}"  # noqa: E731
    width = max([16] + [len(c["class"]) for c in classes] + [len(g["group"]) for g in groups])
    lines = [f"share of Grad-CAM relevance (uniform map: centre {regions.centre_area:.0%}, border "
             f"{regions.border_area:.0%}; empty = maps without positive relevance, left out)",
             f"{'predicted class':>{width}}  {'n':>6}  {'empty':>5}  centre  border  (wrong: centre border)"]
    lines += [f"{c['class']:>{width}}  {c['n']:>6}  {c['n_empty']:>5}    {pct(c['centre_share'])}    "
              f"{pct(c['border_share'])}          {pct(c['centre_share_wrong'])}   {pct(c['border_share_wrong'])}"
              for c in classes]
    lines += ["", f"pair {ws.class_names[a]} / {ws.class_names[b]}, explaining "
                  f"{args.explain or 'the predicted class'}:"]
    lines += [f"{g['group']:>{width}}  {g['n']:>6}  {g['n_empty']:>5}    {pct(g['centre_share'])}    "
              f"{pct(g['border_share'])}" for g in groups]
    return {"centre_area": round(regions.centre_area, 6), "border_area": round(regions.border_area, 6),
            "classes": classes,
            "pair": {"a": ws.class_names[a], "b": ws.class_names[b], "explain": args.explain or "pred",
                     "groups": groups},
            "text": "\n".join(lines)}


register_diagnostic(Diagnostic("gradcam-summary", "Where Grad-CAM looks (no masks needed): centre/border shares "
                               "per class and for a confused pair's mistakes", _summary_args, run_summary,
                               page="gradcam", example=("--pair", "disk,oval")))
