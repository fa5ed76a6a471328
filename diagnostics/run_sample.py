"""Everything known about one sample of a workspace (entry module; see :mod:`diagnostics.registry`).

``python -m diagnostics sample --workspace W [--split eval] --index I [--version V] [--top 5]
[--neighbours 8] [--json]`` prints ``{"sample": {"split", "index", "id", "label", "pred",
"correct", "top": [{"class", "prob"}]}, "neighbours": [...], "neighbourhood": {...},
"weakspot": {...}, "scores": {...} | null, "reviews": [...], "appears": [...]}``.

What the sample view shows, for one image (``"<split>:<index>"``, index = position in the split):

- its label, prediction and top-k probabilities, from the cached outputs of its split;
- Grad-CAM of any classes (:func:`sample_gradcam`): rows of a stored full-split Grad-CAM pass
  when the Grad-CAM page made one, else one batch for this image only;
- its nearest neighbours in the representative set (train + eval embeddings, weak-boundary
  paper 4.1) and whether it is a pivotal image at the default radius, k and purity
  (:func:`sample_neighbours`);
- its gradient scores when a score table is already stored (:func:`stored_scores`: never
  computed here);
- the reviews stored for it and where else it shows up (:func:`sample_appearances`).
"""

from __future__ import annotations

import numpy as np

from diagnostics.gradcam import GradCamResult, compute_gradcam, resolve_layer
from diagnostics.neighbours import build_index, search_neighbours
from diagnostics.registry import Diagnostic, register_diagnostic
from diagnostics.run_report import NotComputed, stored_only
from diagnostics.samples import (
    MISLABEL_KIND, PIVOTAL_KIND, neighbour_frame, neighbour_summary, prediction_change, sample_key, top_k,
)
from diagnostics.weakspots import (
    DEFAULT_K, DEFAULT_PURITY, NeighbourTable, build_representative_set, neighbour_purity, suggest_radius,
)
from workspace import jobs
from workspace.artifacts import content_key
from workspace.cache import Progress
from workspace.cli import UsageError, open_from_args, tqdm_progress
from workspace.core import ORIG
from workspace.errors import WorkspaceError

SAMPLE_GRADCAM_FORMAT = 1
SCORE_LAMBDAS = (1.0, 0.0)  # the Gradient scores page's default table, then the pgd sampler's


def sample_info(outputs, index: int, *, top: int = 5) -> dict:
    """Label, prediction and top-k of one image from its split's cached outputs.

    Args:
        outputs: ``InferenceOutputs`` of the sample's split.
        index: position in the split.

    Returns:
        ``{"split", "index", "row", "label", "label_ids", "pred", "pred_ids", "correct",
        "top" (frame of :func:`diagnostics.samples.top_k`)}``; ``label``/``pred`` are names
        (comma-joined for multi-label).

    Raises:
        WorkspaceError: the image failed to load when the outputs were computed.
    """
    hit = np.flatnonzero(outputs.indices == int(index))
    if not len(hit):
        raise WorkspaceError(f"image {outputs.split}:{index} could not be loaded when the outputs were computed, "
                             "so there is nothing to show for it")
    row = int(hit[0])
    names = outputs.class_names
    if outputs.multi_label:
        label_ids = [int(k) for k in np.flatnonzero(outputs.labels[row] > 0.5)]
        pred_ids = [int(k) for k in np.flatnonzero(outputs.preds[row])]
    else:
        label_ids, pred_ids = [int(outputs.labels[row])], [int(outputs.preds[row])]
    return {"split": outputs.split, "index": int(index), "row": row,
            "label": ", ".join(names[k] for k in label_ids) or "(none)", "label_ids": label_ids,
            "pred": ", ".join(names[k] for k in pred_ids) or "(none)", "pred_ids": pred_ids,
            "correct": bool(outputs.correct[row]),
            "top": top_k(outputs.probs[row], names, k=min(top, len(names)))}


def sample_gradcam(ws, split: str, index: int, classes, *, version: str = ORIG, device: str = "auto"
                   ) -> GradCamResult:
    """Grad-CAM of one image for the given classes, without running the whole split.

    Rows already stored by a full-split pass (:func:`diagnostics.run_gradcam.workspace_gradcam`,
    for the predicted class or for one chosen class) are reused; the others are computed with
    :func:`diagnostics.gradcam.compute_gradcam` for this image only (one batch) and stored.

    Args:
        classes: class ids to explain (e.g. the prediction and the label).

    Returns:
        A :class:`~diagnostics.gradcam.GradCamResult` with one row per class, in order
        (``correct`` = the class is the image's label).

    Raises:
        WorkspaceError: a model without Grad-CAM (TorchScript, no conv layer).
    """
    from diagnostics.run_gradcam import cached_gradcam, gradcam_key

    classes = [int(c) for c in classes]
    reason = ws.capabilities(version).get("gradcam")
    if reason:
        raise WorkspaceError(f"Grad-CAM is not available for model {version}: {reason}")
    labels = ws.split(split).labels
    is_label = [bool(labels[index, c] > 0.5) if labels.ndim == 2 else int(labels[index]) == c for c in classes]
    size = tuple(int(s) for s in ws.example_input(1).shape[-2:])
    found: dict[int, np.ndarray] = {}
    layer = None
    for target in (None, *dict.fromkeys(ws.class_names[c] for c in classes)):
        stored = cached_gradcam(ws, split, version, target=target)
        if stored is None:
            continue
        for c in classes:
            rows = np.flatnonzero((stored.indices == index) & (stored.classes == c))
            if c not in found and len(rows):
                found[c], layer = stored.cams[rows[0]], stored.layer
    missing = sorted({c for c in classes if c not in found})  # sorted: one stored entry per set of classes
    if missing:
        def compute() -> GradCamResult:
            model = ws.model(version)
            name = resolve_layer(model, ws.config.model.gradcam_layer, ws.example_input())
            idx = np.full(len(missing), int(index), dtype=np.int64)
            cams = compute_gradcam(model, ws.dataset(split), layer=name, indices=idx,
                                   classes=np.asarray(missing, dtype=np.int64), batch_size=len(missing), device=device)
            return GradCamResult(idx, np.asarray(missing, dtype=np.int64), np.zeros(len(missing), bool), cams, size,
                                 name, "pred", split, version)

        key = content_key(gradcam_key(ws, split, version, None), int(index), missing)
        part = ws.artifacts.get_or_compute("gradcam-sample", key, compute, slot=f"{version}/{split}/{int(index)}",
                                           version=SAMPLE_GRADCAM_FORMAT)
        found.update({int(c): cam for c, cam in zip(part.classes, part.cams)})
        layer = part.layer
    cams = np.stack([found[c] for c in classes]).astype(np.float32)
    return GradCamResult(np.full(len(classes), int(index), dtype=np.int64), np.asarray(classes, dtype=np.int64),
                         np.asarray(is_label, bool), cams, size, layer or ws.config.model.gradcam_layer, "pred",
                         split, version)


def sample_neighbours(ws, split: str, index: int, *, version: str = ORIG, k: int = 8,
                      progress: Progress | None = None) -> dict:
    """The nearest neighbours of one image in the representative set, and its weakspot status.

    A misclassified image is a query of the weakspot search, so its neighbours come from
    :func:`diagnostics.run_weakspots.neighbour_data` (the Weakspots page's stored table,
    computed once if missing); a correctly classified one is searched alone with an exact
    FAISS index. Pivotal status uses the defaults of the Weakspots page and the CLI (k 20,
    purity 0.7, the suggested radius: the median distance to the 20th neighbour).

    Returns:
        ``{"frame"`` (:func:`diagnostics.samples.neighbour_frame`, k rows), ``"summary"``
        (:func:`diagnostics.samples.neighbour_summary`), ``"weakspot"``: ``{"query": bool,
        "pivotal": bool | None, "radius", "k", "purity", "sample_purity", "n_within"}``,
        ``"index"`` (the FAISS index used)}.

    Raises:
        WorkspaceError: multi-label, no embeddings, an image that failed to load.
    """
    from diagnostics.run_weakspots import K_MAX, neighbour_data

    if k < 1:
        raise WorkspaceError(f"k must be at least 1, got {k}")
    train = ws.outputs("train", version, progress=progress)
    evals = ws.outputs("eval", version, progress=progress)
    rep = build_representative_set(train, evals)
    row = rep.row_of(split, index)
    label, pred = int(rep.labels[row]), int(rep.preds[row])
    weakspot = {"query": label != pred, "pivotal": None, "radius": None, "k": DEFAULT_K, "purity": DEFAULT_PURITY,
                "sample_purity": None, "n_within": None}
    if label != pred and k <= K_MAX:
        box = neighbour_data(ws, version, progress=progress)
        table = box["table"]
        q = int(np.flatnonzero(table.queries == row)[0])
        dist, rows = table.distances[q, :k], table.neighbours[q, :k]
        one = NeighbourTable(table.queries[q:q + 1], table.distances[q:q + 1], table.neighbours[q:q + 1], table.index)
        radius = float(suggest_radius(box["sample"], k=DEFAULT_K).suggested)
        purity, n_within = neighbour_purity(rep, one, radius=radius, k=DEFAULT_K)
        pure = float(purity[0]) if np.isfinite(purity[0]) else None
        weakspot.update(radius=radius, sample_purity=pure, n_within=int(n_within[0]),
                        pivotal=bool(n_within[0] >= 1 and pure is not None and pure >= DEFAULT_PURITY - 1e-9))
        described = table.index
    else:
        index_ = build_index(rep.embeddings, kind="flat")
        d, r = search_neighbours(index_, rep.embeddings, np.array([row]), k)
        dist, rows, described = d[0], r[0], index_.describe()
    frame = neighbour_frame(rep.labels, rep.preds, rep.splits, rep.indices, rows, dist, rep.class_names)
    return {"frame": frame, "summary": neighbour_summary(frame, label=label, pred=pred, class_names=rep.class_names),
            "weakspot": weakspot, "index": described}


def stored_scores(ws, split: str, index: int, *, version: str = ORIG) -> dict | None:
    """The sample's row of a stored gradient-score table, or None when none is stored.

    Looks for the tables the Gradient scores page and the pgd repair compute by default
    (loaded model, last layer, lambda 1 then lambda 0) and never computes one.

    Returns:
        ``{"M", "D", "S", "p_s", "log_p_s", "comp_loss", "noisy", "delta", "lam", "rows"}``
        or None (not computed yet, multi-label, or the image is not in the table).
    """
    from diagnostics.run_gradients import compute_scores

    if ws.multi_label:
        return None
    view = stored_only(ws)
    for lam in SCORE_LAMBDAS:
        try:
            frame = compute_scores(view, version, split=split, lam=lam)
        except NotComputed:
            continue
        hit = frame[frame["index"] == int(index)]
        if hit.empty:
            return None
        r = hit.iloc[0]
        return {"M": float(r["M"]), "D": float(r["D"]), "S": float(r["S"]), "p_s": float(r["p_s"]),
                "log_p_s": float(r["log_p_s"]), "comp_loss": float(r["comp_loss"]), "noisy": bool(r["noisy"]),
                "delta": float(frame.attrs.get("delta", np.nan)), "lam": lam, "rows": len(frame)}
    return None


def sample_reviews(ws, split: str, index: int) -> list[dict]:
    """Every review stored for the sample (mislabel verdicts, notes on pivotal images), any model version.

    Returns:
        ``{"kind", "model_version", "verdict", "note", "updated_at"}`` rows, newest last.
    """
    key = sample_key(split, index)
    rows = [r for kind in (MISLABEL_KIND, PIVOTAL_KIND) for r in ws.store.list_reviews(kind) if r["key"] == key]
    return [{"kind": r["kind"], "model_version": r["model_version"], "verdict": r["verdict"], "note": r["note"] or "",
             "updated_at": r["updated_at"]} for r in sorted(rows, key=lambda r: r["updated_at"])]


def repair_changes(ws, split: str, index: int) -> list[dict]:
    """Repair runs whose new model version fixed or broke this image (cached outputs only).

    Returns:
        ``{"run_id", "method", "rho", "parent", "model_version", "change"}`` rows, ``change``
        "fixed" or "broken"; runs whose outputs are not cached are left out.
    """
    found = []
    for run in jobs.list_jobs(ws, kind=jobs.REPAIR_KIND):
        if run["status"] != "done" or not run["model_version"]:
            continue
        parent = run["parent_version"] or ORIG
        try:
            before, after = ws.cached_outputs(split, parent), ws.cached_outputs(split, run["model_version"])
        except WorkspaceError:
            continue  # a version whose file is gone
        if before is None or after is None:
            continue
        b, a = np.flatnonzero(before.indices == index), np.flatnonzero(after.indices == index)
        if not len(b) or not len(a):
            continue
        change = prediction_change(bool(before.correct[b[0]]), bool(after.correct[a[0]]))
        if change:
            found.append({"run_id": run["id"], "method": run["method"], "rho": run["rho"], "parent": parent,
                          "model_version": run["model_version"], "change": change})
    return found


def sample_appearances(*, scores: dict | None, weakspot: dict | None, changes: list[dict],
                       reviews: list[dict]) -> list[dict]:
    """Where the sample shows up on other pages: ``{"page", "what"}`` rows (page = file stem)."""
    rows = []
    if scores is not None and scores["noisy"]:
        rows.append({"page": "gradients", "what": f"flagged likely mislabelled (compensated loss "
                                                  f"{scores['comp_loss']:.2f} >= delta {scores['delta']:.2f})"})
    if weakspot is not None and weakspot.get("pivotal"):
        rows.append({"page": "weakspots", "what": f"pivotal image ({weakspot['sample_purity']:.0%} pure within "
                                                  f"d = {weakspot['radius']:.3g}, k {weakspot['k']})"})
    for c in changes:
        rows.append({"page": "repair", "what": f"{c['change']} by run {c['run_id']} ({c['method']}, rho {c['rho']}) "
                                               f"-> {c['model_version']}"})
    for r in reviews:
        what = f"reviewed {r['verdict']}" if r["kind"] == MISLABEL_KIND else f"note: {r['note']}"
        rows.append({"page": "gradients" if r["kind"] == MISLABEL_KIND else "weakspots",
                     "what": f"{what} (model {r['model_version']})"})
    return rows


# ---- the command ----------------------------------------------------------------------------
def _args(p) -> None:
    p.add_argument("--split", default="eval", choices=["eval", "train"], help="the sample's split (default eval)")
    p.add_argument("--index", type=int, required=True, help="position of the image in the split")
    p.add_argument("--version", default=ORIG, help="model version (default orig)")
    p.add_argument("--top", type=int, default=5, help="how many classes in the top-k (default 5)")
    p.add_argument("--neighbours", type=int, default=8, help="nearest neighbours shown (default 8; 0 = skip)")


def _clean(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def run(args) -> dict:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    if args.neighbours < 0:
        raise UsageError(f"--neighbours must be >= 0, got {args.neighbours}")
    ws = open_from_args(args)
    ws.version(args.version)
    n = len(ws.split(args.split))
    if not 0 <= args.index < n:
        raise UsageError(f"--index must lie in [0, {n}) for the {args.split} split, got {args.index}")
    with tqdm_progress(f"{args.version} on {args.split}") as progress:
        out = ws.outputs(args.split, args.version, progress=progress)
    info = sample_info(out, args.index, top=args.top)
    sample = {k: info[k] for k in ("split", "index", "label", "pred", "correct")}
    sample["id"] = ws.split(args.split).ids[args.index]
    sample["top"] = [{"class": r["class"], "prob": float(r["prob"])} for r in info["top"].to_dict("records")]
    result: dict = {"sample": sample, "neighbours": [], "neighbourhood": None, "weakspot": None}
    if args.neighbours and not ws.multi_label:
        with tqdm_progress("neighbours") as progress:
            nb = sample_neighbours(ws, args.split, args.index, version=args.version, k=args.neighbours,
                                   progress=progress)
        result["neighbours"] = [{k: r[k] for k in ("split", "index", "label_name", "pred_name", "distance")}
                                for r in nb["frame"].to_dict("records")]
        result["neighbourhood"], result["weakspot"] = nb["summary"], nb["weakspot"]
    result["scores"] = stored_scores(ws, args.split, args.index, version=args.version)
    result["reviews"] = sample_reviews(ws, args.split, args.index)
    result["appears"] = sample_appearances(scores=result["scores"], weakspot=result["weakspot"],
                                           changes=repair_changes(ws, args.split, args.index),
                                           reviews=result["reviews"])
    result = _clean(result)
    top = ", ".join(f"{t['class']} {t['prob']:.3f}" for t in sample["top"])
    result["text"] = "\n".join([f"{args.split}:{args.index} ({sample['id']}): label {sample['label']}, predicted "
                                f"{sample['pred']} ({'right' if sample['correct'] else 'wrong'}); top: {top}",
                                *(f"  {a['page']}: {a['what']}" for a in result["appears"])])
    return result


register_diagnostic(Diagnostic("sample", "everything known about one image: prediction, neighbours, scores, reviews",
                               _args, run, page="sample", example=("--index", "0", "--neighbours", "3")))
