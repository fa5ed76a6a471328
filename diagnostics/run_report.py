"""The findings report and the CI gate of a workspace (entry module; see :mod:`diagnostics.registry`).

Verbs:

``python -m diagnostics report --workspace W --out report.html [--version V] [--top 10] [--overwrite] [--json]``
    writes a self-contained HTML report (plotly.js inline, opens without a network) and its JSON
    twin ``report.json`` next to it: the most confused pairs, the most biased triplets, the
    reviewed Grad-CAM associations, the flagged samples (mislabel reviews, the noise split of
    stored gradient scores), the weakspot pairs, and the repair runs with their numbers and
    trade-off figures. It only reads what the workspace has stored (cached outputs, stored
    tables, the review and run store) and never runs a model: a section whose inputs are
    missing says "not computed yet" and how to compute it. ``--json`` prints the JSON twin.

``python -m diagnostics gate --workspace W [--max-pair-conf 0.10] [--min-accuracy 0.8] [--max-cd 0.2] [--version V] [--split eval] [--json]``
    checks bounds on a model version's outputs (computed if missing) so a training pipeline can
    stop a model that regressed on a group. Exit status 0 when every bound holds, **1** when one
    is broken (the JSON lists the offending pairs and triplets), 2 on bad input. A bound is
    broken when a pair's confusion (type1conf; type2conf for multi-label) is above
    ``--max-pair-conf``, a triplet's cd above ``--max-cd``, or the accuracy (exact-match for
    multi-label) below ``--min-accuracy``.

References: WR = Zhong, Tian et al., "Repairing Group-Level Errors for DNNs Using Weighted
Regularization" (type1conf/type2conf and cd, section 2.2; "repaired", 2.2.3); PGD = "Mitigating
Dataset Bias Using Per-Sample Gradients from a Biased Classifier" (the compensated-loss noise split,
section 5); weak-boundary paper = Dammu et al., "Addressing Weak Decision Boundaries in Image
Classification by Leveraging Web Search and Generative Models" (weakspots, pivotal images and
Grad-CAM associations, section 4.1).

:func:`stored_only` gives a read-only view of a workspace in which any computation raises
:class:`NotComputed`: the report (and the sample view) call the ordinary workspace-level
functions (:func:`diagnostics.run_gradients.compute_scores`,
:func:`diagnostics.run_weakspots.neighbour_data`) through it, so they read exactly the stored
entries those functions would have written, and nothing is computed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from diagnostics.confusion import (
    confusion_counts, confusion_rates, directional_errors, error_matrix, rank_biased_triplets, rank_confused_pairs,
)
from diagnostics.registry import Diagnostic, register_diagnostic
from diagnostics.report import (
    EMPTY, NOT_APPLICABLE, NOT_COMPUTED, OK, Section, render_html, render_json,
)
from diagnostics.samples import ASSOCIATION_KIND, MISLABEL_KIND, PIVOTAL_KIND
from workspace import jobs
from workspace.cli import UsageError, finite_float, open_from_args, tqdm_progress, write_output
from workspace.core import ORIG
from workspace.errors import WorkspaceError

HEATMAP_LIMIT = 40     # classes drawn in the report's confusion heatmap
GATE_LIST_LIMIT = 50   # offending pairs / triplets listed by the gate


# ---- a read-only view of a workspace ----------------------------------------------------------
class NotComputed(WorkspaceError):
    """What was asked for is not stored, and a stored-only view never computes it."""


class _StoredArtifacts:
    """An artifact store whose ``get_or_compute`` only reads (and whose writes are refused)."""

    def __init__(self, artifacts):
        self._artifacts = artifacts

    def get_or_compute(self, kind: str, key: str, compute, *, slot: str = "_", version: int = 1,
                       rebuild: bool = False, mmap: bool = False):
        found = None if rebuild else self._artifacts.load(kind, key, slot=slot, version=version, mmap=mmap)
        if found is None:
            raise NotComputed(f"{kind} not computed yet")
        return found

    def save(self, kind: str, *args, **kwargs):
        raise NotComputed(f"a stored-only view does not write ({kind})")

    def __getattr__(self, name):
        return getattr(self._artifacts, name)


class _StoredWorkspace:
    """A workspace whose outputs and artifacts come from the store only (see :func:`stored_only`)."""

    def __init__(self, ws):
        self._ws = ws
        self.artifacts = _StoredArtifacts(ws.artifacts)

    def outputs(self, split: str = "eval", version: str = ORIG, **_):
        found = self._ws.cached_outputs(split, version)
        if found is None:
            raise NotComputed(f"the outputs of {version} on {split} are not computed yet")
        return found

    def model(self, version: str = ORIG):
        raise NotComputed(f"a stored-only view does not run model {version}")

    load_model = model

    def __getattr__(self, name):
        return getattr(self._ws, name)


def stored_only(ws):
    """A view of ``ws`` that reads stored outputs and artifacts and raises :class:`NotComputed`
    instead of computing or writing anything (model access included)."""
    return ws if isinstance(ws, _StoredWorkspace) else _StoredWorkspace(ws)


# ---- the report -----------------------------------------------------------------------------
def _when(timestamp) -> str:
    return dt.datetime.fromtimestamp(float(timestamp)).isoformat(timespec="seconds") if timestamp else ""


def _heatmap_classes(pairs: pd.DataFrame, k: int) -> list[int]:
    if k <= HEATMAP_LIMIT:
        return list(range(k))
    shown: list[int] = []
    for a, b in zip(pairs["a_id"], pairs["b_id"]):
        shown += [int(c) for c in (a, b) if int(c) not in shown]
        if len(shown) >= HEATMAP_LIMIT:
            break
    return sorted(shown[:HEATMAP_LIMIT])


def _confusion_sections(ws, version: str, top: int) -> list[Section]:
    from diagnostics.figures_confusion import confusion_heatmap

    hint = (f"compute the eval outputs of {version}: open the Overview page, or run `python -m diagnostics "
            f"confusion --workspace {ws.spec} --version {version}`")
    try:
        out = stored_only(ws).outputs("eval", version)
    except NotComputed:
        return [Section("pairs", "Most confused pairs", NOT_COMPUTED, f"Not computed yet: {hint}."),
                Section("triplets", "Most biased triplets", NOT_COMPUTED, f"Not computed yet: {hint}.")]
    k, names = out.num_classes, out.class_names
    errors = error_matrix(out.labels, out.preds, k, task=out.task)
    directional = directional_errors(out.labels, out.preds, k, task=out.task)
    pairs = rank_confused_pairs(errors, names, directional=directional)
    measure = "type2conf" if out.multi_label else "type1conf"
    shown = _heatmap_classes(pairs, k)
    rates = directional if out.multi_label else confusion_rates(confusion_counts(out.labels, out.preds, k))
    counts = None if out.multi_label else confusion_counts(out.labels, out.preds, k)
    sub = np.ix_(shown, shown)
    fig = confusion_heatmap(rates[sub], [names[i] for i in shown], counts=None if counts is None else counts[sub],
                            title=f"{'directional type2conf' if out.multi_label else 'confusion'} on eval"
                                  + (f" ({len(shown)} of {k} classes)" if len(shown) < k else ""))
    pair_table = pairs.head(top)[["a", "b", "conf", "a_to_b", "b_to_a"]].rename(columns={"conf": measure})
    sections = [Section("pairs", "Most confused pairs", OK if (pair_table[measure] > 0).any() else EMPTY,
                        f"{measure} on the {out.n:,} eval images, highest first (a_to_b = share of a predicted "
                        "as b).", tables=[(f"top {top} pairs", pair_table)], figures=[fig])]
    if k < 3:
        sections.append(Section("triplets", "Most biased triplets", NOT_APPLICABLE, "Triplets need 3 classes."))
    else:
        trip = rank_biased_triplets(errors, names, top=top)[["positive", "negative", "anchor", "cd", "error_pos",
                                                             "error_neg"]]
        sections.append(Section("triplets", "Most biased triplets", OK if (trip["cd"] > 0).any() else EMPTY,
                                f"cd = |error(positive, anchor) - error(negative, anchor)| with error = {measure}.",
                                tables=[(f"top {top} triplets", trip)]))
    return sections


def _associations_section(ws) -> Section:
    reviews = ws.store.list_reviews(ASSOCIATION_KIND)
    if not reviews:
        return Section("associations", "Reviewed Grad-CAM associations", EMPTY,
                       "No association reviewed yet: review them on the Grad-CAM associations page.")
    rows = []
    for r in reviews:
        cls, _, obj = r["key"].partition("|")
        rows.append({"class": cls, "object": obj, "verdict": r["verdict"], "note": r["note"] or "",
                     "model_version": r["model_version"], "reviewed": _when(r["updated_at"])})
    frame = pd.DataFrame(rows)
    counts = frame["verdict"].value_counts()
    return Section("associations", "Reviewed Grad-CAM associations", OK,
                   "Objects that drive a predicted class (weak-boundary paper 4.1), as a person judged them.",
                   tables=[("reviews", frame)], data={f"{v}": int(n) for v, n in counts.items()})


def _sample_id(ws, key: str) -> str:
    split, _, index = key.partition(":")
    try:
        return ws.split(split).ids[int(index)]
    except (WorkspaceError, ValueError, IndexError):
        return ""


def _flagged_section(ws, version: str, top: int) -> Section:
    from diagnostics.run_gradients import compute_scores

    reviews = ws.store.list_reviews(MISLABEL_KIND)
    tables, data, notes = [], {}, []
    if reviews:
        tables.append(("mislabel reviews", pd.DataFrame([
            {"sample": r["key"], "id": _sample_id(ws, r["key"]), "verdict": r["verdict"], "note": r["note"] or "",
             "model_version": r["model_version"], "reviewed": _when(r["updated_at"])} for r in reviews])))
        data["confirmed mislabelled"] = sum(r["verdict"] == "mislabelled" for r in reviews)
    frame = None
    if not ws.multi_label:
        for lam in (1.0, 0.0):
            try:
                frame = compute_scores(stored_only(ws), version, split="train", lam=lam)
                break
            except NotComputed:
                continue
    if frame is not None:
        noisy = frame[frame["noisy"]].sort_values("comp_loss", ascending=False)
        data.update({"flagged by the noise split": int(len(noisy)), "train samples scored": int(len(frame)),
                     "delta": float(frame.attrs.get("delta", np.nan))})
        names = np.asarray(ws.class_names, dtype=object)
        shown = noisy.head(top)
        tables.append((f"most likely mislabelled (top {top} of {len(noisy)})", pd.DataFrame({
            "sample": [f"train:{i}" for i in shown["index"]], "label": names[shown["label"].to_numpy(int)],
            "pred": names[shown["pred"].to_numpy(int)], "comp_loss": shown["comp_loss"].to_numpy()})))
    else:
        notes.append("The noise split is not computed yet: open the Gradient scores page or run `python -m "
                     f"diagnostics gradients --workspace {ws.spec} --out scores.csv`.")
    if not tables:
        return Section("flagged", "Flagged samples", NOT_APPLICABLE if ws.multi_label else NOT_COMPUTED,
                       " ".join(notes) or "No mislabel review stored yet.")
    notes.insert(0, "Likely mislabelled samples: compensated loss CE/H >= delta (PGD paper, section 5), and the "
                    "verdicts a person stored.")
    return Section("flagged", "Flagged samples", OK, " ".join(notes), tables=tables, data=data)


def _weakspots_section(ws, version: str, top: int) -> Section:
    from diagnostics.figures_weakspots import figure_pair_heatmap
    from diagnostics.run_weakspots import neighbour_data
    from diagnostics.weakspots import (
        DEFAULT_K, DEFAULT_PURITY, count_weakspots_by_pair, find_pivotal_images, suggest_radius, weakspot_matrix,
    )

    title = "Weakspots"
    if ws.multi_label:
        return Section("weakspots", title, NOT_APPLICABLE, "Weakspots need a single-label task.")
    try:
        box = neighbour_data(stored_only(ws), version)
    except NotComputed:
        return Section("weakspots", title, NOT_COMPUTED, "Not computed yet: open the Weakspots page or run "
                       f"`python -m diagnostics weakspots --workspace {ws.spec} --version {version}`.")
    rep, table = box["rep"], box["table"]
    k = min(DEFAULT_K, table.k)
    radius = float(suggest_radius(box["sample"], k=k).suggested)
    pivotal = find_pivotal_images(rep, table, radius=radius, k=k, purity=DEFAULT_PURITY)
    pairs = count_weakspots_by_pair(pivotal, rep.class_names)
    tables = [(f"weak pairs (top {top})", pairs.head(top)[["a", "b", "count", "a_to_b", "b_to_a"]])]
    notes = ws.store.list_reviews(PIVOTAL_KIND)
    if notes:
        tables.append(("notes on pivotal images", pd.DataFrame([
            {"sample": r["key"], "id": _sample_id(ws, r["key"]), "note": r["note"] or "",
             "model_version": r["model_version"]} for r in notes])))
    figures = [figure_pair_heatmap(weakspot_matrix(pivotal, len(rep.class_names)), rep.class_names)] \
        if len(pivotal) and len(rep.class_names) <= HEATMAP_LIMIT else []
    return Section("weakspots", title, OK if len(pivotal) else EMPTY,
                   f"Pivotal images (weak-boundary paper 4.1) at the defaults: radius {radius:.4g} (suggested), k {k}, "
                   f"purity {DEFAULT_PURITY}. {table.index}.", tables=tables, figures=figures,
                   data={"misclassified samples tested": int(len(table.queries)), "pivotal images": int(len(pivotal)),
                         "class pairs with weakspots": int(len(pairs))})


def _repairs_section(ws) -> Section:
    from diagnostics.figures_runs import runs_frame, tradeoff_figure

    runs = jobs.list_jobs(ws, kind=jobs.REPAIR_KIND)
    if not runs:
        return Section("repairs", "Repairs", EMPTY, "No repair run yet: try the What-if and Repair pages.")
    frame = runs_frame(runs)
    figures = []
    done = frame[(frame["status"] == "done") & frame["accuracy"].notna()]
    for text in list(dict.fromkeys(done["targets"]))[:3]:  # the three most recent targets
        base = next((r["baseline"] for r in runs if r["baseline"] and
                     "; ".join(",".join(g) for g in (r["targets"] or {}).get("targets", [])) == text), None)
        fig = tradeoff_figure(frame[frame["targets"] == text], baseline=base)
        fig.update_layout(title=f"Trade-off on {text}")
        figures.append(fig)
    shown = frame.drop(columns=["progress", "message"])
    return Section("repairs", "Repairs", OK, "Every repair run (newest first): accuracy and target error of the "
                   "parent before (baseline) and of the result; the shaded region of each trade-off holds the "
                   "repaired models (WR paper 2.2.3: target error -25 %, accuracy -1 % at most).",
                   tables=[("runs", shown)], figures=figures,
                   data={"runs": int(len(frame)), "finished": int((frame["status"] == "done").sum())})


def collect_sections(ws, version: str = ORIG, *, top: int = 10) -> tuple[dict, list[Section]]:
    """The report's metadata and one :class:`~diagnostics.report.Section` per :data:`SECTION_IDS`,
    from stored data only (never runs a model).

    Raises:
        WorkspaceError: an unknown model version.
    """
    ws.version(version)
    outputs = {s: ws.cached_outputs(s, version) for s in ("train", "eval")}
    meta = {"workspace": ws.spec, "task": ws.task.replace("_", "-"), "classes": ws.num_classes,
            "model version": version, "generated": dt.datetime.now().isoformat(timespec="seconds")}
    data = {"classes": ws.num_classes, "model versions": len(ws.versions())}
    for split, out in outputs.items():
        data[f"{split} images"] = len(ws.split(split))
        data[f"{split} accuracy"] = float(out.accuracy) if out is not None else "not computed yet"
    missing = [s for s, o in outputs.items() if o is None]
    summary = Section("summary", "Summary", OK if not missing else NOT_COMPUTED,
                      f"{ws.name}: {ws.num_classes} classes, model version {version}."
                      + (f" Outputs not computed yet on: {', '.join(missing)}." if missing else ""), data=data)
    sections = [summary, *_confusion_sections(ws, version, top), _associations_section(ws),
                _flagged_section(ws, version, top), _weakspots_section(ws, version, top), _repairs_section(ws)]
    return meta, sections


def build_report(ws, version: str = ORIG, *, top: int = 10) -> tuple[str, dict]:
    """``(html, json)`` of the findings report (see the module docstring)."""
    meta, sections = collect_sections(ws, version, top=top)
    title = f"Groupfix findings: {ws.name}"
    return render_html(title, meta, sections), render_json(title, meta, sections)


def write_report(ws, out: str | Path, version: str = ORIG, *, top: int = 10, overwrite: bool = False) -> dict:
    """Write ``out`` (HTML) and its JSON twin (same name, ``.json``).

    Returns:
        ``{"html", "json"}`` paths and ``"sections"``: ``{id: status}``.

    Raises:
        WorkspaceError: an existing file without ``overwrite``, a missing folder, a write error.
    """
    out = Path(out)
    twin = out.with_suffix(".json")
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"the report file must end in .html, got {out.name}")
    for path in (out, twin):
        if path.exists() and not overwrite:
            raise UsageError(f"{path} exists; refusing to overwrite it (choose another name or pass --overwrite)")
    if not out.parent.is_dir():
        raise UsageError(f"folder {out.parent} does not exist")
    page, data = build_report(ws, version, top=top)
    text = json.dumps(data, indent=2, allow_nan=False)
    twin_existed = twin.exists()

    def html_then_twin(tmp: Path) -> None:
        # both files are complete in temporary files before either takes its name: a failure leaves neither
        tmp.write_text(page, encoding="utf-8")
        write_output(twin, lambda tmp_json: tmp_json.write_text(text, encoding="utf-8"), overwrite=overwrite)

    try:
        write_output(out, html_then_twin, overwrite=overwrite)
    except WorkspaceError:
        if not twin_existed and not out.exists():
            twin.unlink(missing_ok=True)  # the twin moved in but the page did not
        raise
    return {"html": str(out), "json": str(twin), "sections": {k: v["status"] for k, v in data["sections"].items()},
            "report": data}


def report_path(ws, version: str = ORIG) -> Path:
    """Where the Overview page's report goes: ``<state>/reports/findings-<version>.html`` (folder created).

    Raises:
        WorkspaceError: the state folder cannot be written.
    """
    folder = Path(ws.state_dir) / "reports"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return folder / f"findings-{version}.html"


def _report_args(p) -> None:
    p.add_argument("--out", required=True, type=Path, help="the HTML file to write (its .json twin goes beside it)")
    p.add_argument("--version", default=ORIG, help="model version (default orig)")
    p.add_argument("--top", type=int, default=10, help="rows per ranking (default 10)")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files")


def run_report(args: argparse.Namespace) -> dict:
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    ws = open_from_args(args)
    written = write_report(ws, args.out, args.version, top=args.top, overwrite=args.overwrite)
    missing = [k for k, v in written["sections"].items() if v == NOT_COMPUTED]
    written["text"] = (f"wrote {written['html']} and {written['json']}"
                       + (f"; not computed yet: {', '.join(missing)}" if missing else ""))
    return written


# ---- the gate -------------------------------------------------------------------------------
def evaluate_gate(outputs, *, max_pair_conf: float | None = None, min_accuracy: float | None = None,
                  max_cd: float | None = None, limit: int = GATE_LIST_LIMIT) -> dict:
    """Check bounds on one outputs object (the ``gate`` verb).

    Args:
        outputs: ``InferenceOutputs`` of one split.
        max_pair_conf: the largest allowed pair confusion (type1conf, or type2conf for
            multi-label; WR paper 2.2); broken when a pair is strictly above it.
        min_accuracy: the least allowed accuracy (exact-match for multi-label); broken when
            strictly below.
        max_cd: the largest allowed triplet bias cd (WR paper 2.2.2).
        limit: offending pairs and triplets listed (worst first).

    Returns:
        ``{"passed", "accuracy", "n", "bounds", "worst_pair_conf", "worst_cd", "violations":
        {"accuracy": {...} | None, "pairs": [{"a", "b", "conf"}], "pairs_over": int,
        "triplets": [{"positive", "negative", "anchor", "cd"}], "triplets_over": int or
        ">=limit"}}``.
    """
    k, names = outputs.num_classes, outputs.class_names
    errors = error_matrix(outputs.labels, outputs.preds, k, task=outputs.task)
    result = {"passed": True, "accuracy": float(outputs.accuracy), "n": int(outputs.n),
              "bounds": {"max_pair_conf": max_pair_conf, "min_accuracy": min_accuracy, "max_cd": max_cd},
              "violations": {"accuracy": None, "pairs": [], "pairs_over": 0, "triplets": [], "triplets_over": 0}}
    v = result["violations"]
    pairs = rank_confused_pairs(errors, names, top=None)
    result["worst_pair_conf"] = float(pairs["conf"].iloc[0]) if len(pairs) else 0.0
    if min_accuracy is not None and outputs.accuracy < min_accuracy:
        v["accuracy"] = {"accuracy": float(outputs.accuracy), "min_accuracy": float(min_accuracy)}
    if max_pair_conf is not None:
        over = pairs[pairs["conf"] > max_pair_conf]
        v["pairs_over"] = int(len(over))
        v["pairs"] = [{"a": r.a, "b": r.b, "conf": float(r.conf)} for r in over.head(limit).itertuples()]
    result["worst_cd"] = None
    if k >= 3:
        # one more than listed tells whether the list is complete without ranking every triplet
        trip = rank_biased_triplets(errors, names, top=limit + 1)
        result["worst_cd"] = float(trip["cd"].iloc[0])
        if max_cd is not None:
            over = trip[trip["cd"] > max_cd]
            v["triplets"] = [{"positive": r.positive, "negative": r.negative, "anchor": r.anchor, "cd": float(r.cd)}
                             for r in over.head(limit).itertuples()]
            v["triplets_over"] = int(len(over)) if len(over) <= limit else f">={limit}"
    result["passed"] = v["accuracy"] is None and not v["pairs"] and not v["triplets"]
    return result


def _gate_args(p) -> None:
    p.add_argument("--max-pair-conf", type=finite_float, default=None,
                   help="largest allowed pair confusion (type1conf; type2conf for multi-label), in [0, 1]")
    p.add_argument("--min-accuracy", type=finite_float, default=None,
                   help="least allowed accuracy (exact-match for multi-label), in [0, 1]")
    p.add_argument("--max-cd", type=finite_float, default=None, help="largest allowed triplet bias cd, in [0, 1]")
    p.add_argument("--version", default=ORIG, help="model version (default orig)")
    p.add_argument("--split", default="eval", choices=["eval", "train"], help="which split (default eval)")


def run_gate(args: argparse.Namespace) -> dict:
    bounds = {"--max-pair-conf": args.max_pair_conf, "--min-accuracy": args.min_accuracy, "--max-cd": args.max_cd}
    if all(v is None for v in bounds.values()):
        raise UsageError("give at least one bound: --max-pair-conf, --min-accuracy or --max-cd")
    for flag, value in bounds.items():
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"{flag} must be in [0, 1], got {value}")
    ws = open_from_args(args)
    ws.version(args.version)
    with tqdm_progress(f"{args.version} on {args.split}") as progress:
        out = ws.outputs(args.split, args.version, progress=progress)
    if out.n == 0:
        raise WorkspaceError(f"the {args.split} split has no usable images")
    result = evaluate_gate(out, max_pair_conf=args.max_pair_conf, min_accuracy=args.min_accuracy,
                           max_cd=args.max_cd)
    result.update(version=args.version, split=args.split)
    v = result["violations"]
    lines = [f"{'PASS' if result['passed'] else 'FAIL'}: {args.version} on {args.split}, accuracy "
             f"{result['accuracy']:.4f} ({result['n']} images)"]
    if v["accuracy"]:
        lines.append(f"  accuracy {v['accuracy']['accuracy']:.4f} < {args.min_accuracy}")
    lines += [f"  pair {p['a']} / {p['b']}: {p['conf']:.4f} > {args.max_pair_conf}" for p in v["pairs"][:10]]
    lines += [f"  triplet {t['positive']} / {t['negative']} | {t['anchor']}: cd {t['cd']:.4f} > {args.max_cd}"
              for t in v["triplets"][:10]]
    result["text"] = "\n".join(lines)
    result["_exit_code"] = 0 if result["passed"] else 1
    return result


register_diagnostic(Diagnostic("report", "a self-contained HTML findings report (and its JSON twin) from stored results",
                               _report_args, run_report, page="overview", example=("--out", "{tmp}/report.html")))
register_diagnostic(Diagnostic("gate", "CI gate: exit 1 when accuracy, pair confusion or triplet bias breaks a bound",
                               _gate_args, run_gate, example=("--max-pair-conf", "1.0")))
