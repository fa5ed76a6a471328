"""Choosing among repairs: the rho grid, the selection rule and the result table (WR paper,
"Repairing Group-Level Errors for DNNs Using Weighted Regularization", sections 4.3, 4.4,
Table 2 and Appendix A). Pure functions over plain numbers and pandas frames.

* :func:`plan_grid` / :func:`next_wos_rho`: which (method, rho) settings to run. Every
  method runs rho in :data:`DEFAULT_RHOS`; the post-hoc w-os goes on to 0.01, 0.001, 1e-4 in
  turn until one lowers the target error by lambda1 relative to the baseline's.
* :func:`select_rhos`: the paper's per-method choice among the grid's rhos.
* :func:`build_table`: the Table 2 layout: mean +- std over seeds, ranks, rank sums,
  rank-sum tests and A12 against the baseline, a verdict in words, the "repaired" flag.
* :func:`table_to_json_rows`, :func:`table_to_csv`, :func:`table_to_markdown`,
  :func:`table_to_latex`: exports of that table.

Method names are never tested here: the caller says which rows are the original model,
the baseline and the deterministic (post-hoc) methods.
"""

from __future__ import annotations

import io
import json
import math
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from repair.methods import baseline_methods
from repair.stats import a12_letter, compare_groups, rank_trade_off
from workspace.errors import WorkspaceError

ORIGINAL, BASELINE = baseline_methods()  # the untouched model and plain fine-tuning, from the registry

#: The paper's grid (section 4.4).
DEFAULT_RHOS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: The rhos w-os tries in turn, from the first, until the target error drops far enough.
WOS_RHOS = (0.1, 0.01, 0.001, 1e-4)
#: The selection rules, in the order the paper applies them (section 4.4).
RULES = {
    "a": "target error at least lambda1 below the original's: highest accuracy among those",
    "b": "no rho lowers the target error by lambda1; highest accuracy among those not raising it",
    "c": "every rho raises the target error; highest accuracy",
    "d": "also kept: the chosen rho does not beat the original on both accuracy and target error, this one does",
}
#: Columns of :func:`build_table`.
TABLE_COLUMNS = ["method", "rho", "accuracy_mean", "accuracy_std", "target_error_mean", "target_error_std",
                 "accuracy_rank", "target_error_rank", "rank_sum", "top2", "p_target_error",
                 "a12_target_error", "p_accuracy", "a12_accuracy", "verdict", "repaired", "runs"]
#: Keys of one row of :func:`table_to_json_rows` (the sweep's JSON contract).
JSON_KEYS = ["method", "rho", "accuracy_mean", "accuracy_std", "target_error_mean", "target_error_std",
             "accuracy_rank", "target_error_rank", "rank_sum", "p_target_error", "a12_target_error",
             "p_accuracy", "a12_accuracy", "verdict", "runs"]
DETERMINISTIC_NOTE = "deterministic (post-hoc): no seed variation"

# Absolute slack on threshold comparisons: 0.75 * 0.096 is 0.07200000000000001 in floating point.
_EPS = 1e-12


def _check_fraction(name: str, value: float, *, open_low: bool = False) -> float:
    value = float(value)
    ok = (0.0 < value < 1.0) if open_low else (0.0 <= value < 1.0)
    if not (np.isfinite(value) and ok):
        raise WorkspaceError(f"{name} must be in {'(0' if open_low else '[0'}, 1), got {value}")
    return value


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise WorkspaceError(f"the {what} must be a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise WorkspaceError(f"the {what} lack the column(s) {', '.join(missing)} "
                             f"(have: {', '.join(map(str, frame.columns)) or 'none'})")


def _rho_key(rho) -> float | None:
    if rho is None:
        return None
    rho = float(rho)
    # 1e-4 computed as 10 ** -4 and read back from JSON must land on the same row
    return None if math.isnan(rho) else round(rho, 12)


def format_setting(method: str, rho: float | None) -> str:
    """The paper's row label: "w-bn(0.7)", "w-os(0.0001)", "bir(0.04879)", or just the name.

    Four significant digits: enough to tell the grid's settings apart (0.9995 is not "1"),
    short enough for a legend (BIR's default threshold log 1.05 = 0.0487902 reads 0.04879).
    """
    key = _rho_key(rho)
    return str(method) if key is None else f"{method}({key:.4g})"


def plan_grid(methods: Iterable[str], *, rhos: Iterable[float] = DEFAULT_RHOS) -> list[tuple[str, float]]:
    """Every (method, rho) of the grid, methods in the given order, rhos as given.

    The w-os extension (0.01, 0.001, 1e-4) is not planned up front: ask :func:`next_wos_rho`
    after each w-os result.

    Args:
        methods: method names (e.g. from the registry).
        rhos: the grid (default :data:`DEFAULT_RHOS`, WR paper section 4.4); each in (0, 1].

    Returns:
        ``[(method, rho), ...]``, one per method and rho.
    """
    rhos = [float(r) for r in rhos]
    bad = [r for r in rhos if not (np.isfinite(r) and 0.0 < r <= 1.0)]
    if bad:
        raise WorkspaceError(f"every rho must be in (0, 1], got {', '.join(f'{r:g}' for r in bad)}")
    return [(str(m), r) for m in methods for r in rhos]


def next_wos_rho(results_so_far: Mapping[float, float] | pd.DataFrame, orig_ft_target_error: float, *,
                 lambda1: float = 0.25) -> float | None:
    """The next w-os rho to try, or None when done (WR paper section 4.4).

    w-os is cheap but its useful rho depends on the data set, so it starts at 0.1 and goes
    on to 0.01, 0.001 and 1e-4 (:data:`WOS_RHOS`) in turn until one reaches a target error of
    at most ``(1 - lambda1)`` times the baseline's (the paper: "reduce confusion/bias by at
    least 25% when compared with that of orig-ft"). Any tried rho that reaches it (also one
    of the ordinary grid's, e.g. 0.3) ends the search.

    Args:
        results_so_far: w-os target error per rho tried so far, as ``{rho: target_error}``
            or a DataFrame with columns ``rho`` and ``target_error`` (several rows of one rho
            are averaged). May be empty.
        orig_ft_target_error: the baseline's (orig-ft's) target error.
        lambda1: the least relative drop asked for (default 0.25, the paper's 25 %).

    Returns:
        The first rho of :data:`WOS_RHOS` not yet tried, or None when a tried rho already
        reaches the bound or all four were tried.

    Raises:
        WorkspaceError: a target error is not a finite number or lambda1 is outside [0, 1).
    """
    lambda1 = _check_fraction("lambda1", lambda1)
    base = float(orig_ft_target_error)
    if not np.isfinite(base):
        raise WorkspaceError(f"the baseline target error must be a finite number, got {orig_ft_target_error}")
    if isinstance(results_so_far, pd.DataFrame):
        _require_columns(results_so_far, ["rho", "target_error"], "w-os results")
        tried = results_so_far.groupby(results_so_far["rho"].map(_rho_key))["target_error"].mean().to_dict()
    else:
        tried = {_rho_key(r): float(e) for r, e in dict(results_so_far).items()}
    if not all(np.isfinite(e) for e in tried.values()):
        raise WorkspaceError("every w-os target error so far must be a finite number")
    bound = (1.0 - lambda1) * base
    if any(e <= bound + _EPS for e in tried.values()):
        return None
    for rho in WOS_RHOS:
        if _rho_key(rho) not in tried:
            return rho
    return None


def _mean_by_setting(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, rho) in first-appearance order: mean accuracy and target error."""
    frame = frame.assign(_rho=frame["rho"].map(_rho_key), _order=np.arange(len(frame)))
    rows = []
    for (method, rho), g in frame.groupby(["method", "_rho"], dropna=False, sort=False):
        rho = None if rho is None or (isinstance(rho, float) and math.isnan(rho)) else float(rho)
        rows.append({"method": method, "rho": rho, "accuracy": float(g["accuracy"].mean()),
                     "target_error": float(g["target_error"].mean()), "_order": int(g["_order"].min())})
    return pd.DataFrame(rows, columns=["method", "rho", "accuracy", "target_error", "_order"])


def _check_metrics(frame: pd.DataFrame, what: str) -> None:
    values = frame[["accuracy", "target_error"]].to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise WorkspaceError(f"the {what} have accuracy or target error values that are not finite numbers")


def select_rhos(grid: pd.DataFrame, *, original: str = ORIGINAL, baseline: str = BASELINE,
                lambda1: float = 0.25) -> pd.DataFrame:
    """Pick each method's rho(s) from the grid as the WR paper does (section 4.4, Appendix A).

    Per method, against the *original* model's accuracy and target error:

    (a) among the rhos whose target error is at most ``(1 - lambda1)`` times the original's,
        the one with the highest accuracy;
    (b) otherwise, among the rhos whose target error does not rise above the original's,
        the one with the highest accuracy;
    (c) otherwise, the rho with the highest accuracy;
    (d) and when the chosen rho does not beat the original on both counts (accuracy >= the
        original's and target error < the original's) while another rho does, that rho is
        kept as well.

    Departures from the paper, which does not say: ties in accuracy go to the lower target
    error, then the larger rho; when several rhos qualify for (d), the one with the lowest
    target error is kept (then the higher accuracy, then the larger rho): this reproduces
    w-os(0.3) over w-os(0.7) in the paper's Table 7 -> Table 2 (CIFAR-10, MobileNetV2).

    Args:
        grid: one row per run with columns ``method``, ``rho``, ``accuracy``,
            ``target_error`` (more columns, e.g. ``seed``, are ignored; several runs of one
            setting are averaged). Must contain the original model's row(s).
        original: the method name of the original model's rows (their rho is ignored).
        baseline: the method name of the baseline's rows (e.g. orig-ft), which are skipped.
        lambda1: the least relative drop of rule (a) (default 0.25, the paper's 25 %).

    Returns:
        DataFrame, one row per selected setting (methods in first-appearance order, the (d)
        row after its method's first choice), columns ``method``, ``rho`` (float),
        ``accuracy``, ``target_error`` (means), ``rule`` ("a", "b", "c" or "d", see
        :data:`RULES`) and ``reason`` (one sentence with the numbers).

    Raises:
        WorkspaceError: a column is missing, the original's rows are missing, a value is
            not finite, or lambda1 is outside [0, 1).
    """
    lambda1 = _check_fraction("lambda1", lambda1)
    _require_columns(grid, ["method", "rho", "accuracy", "target_error"], "grid results")
    _check_metrics(grid, "grid results")
    orig_rows = grid[grid["method"] == original]
    if orig_rows.empty:
        raise WorkspaceError(f"the grid results have no row for the original model {original!r}")
    orig_acc, orig_err = float(orig_rows["accuracy"].mean()), float(orig_rows["target_error"].mean())
    bound = (1.0 - lambda1) * orig_err
    settings = _mean_by_setting(grid[~grid["method"].isin([original, baseline])])
    unset = settings[settings["rho"].isna()]
    if not unset.empty:
        raise WorkspaceError(f"the grid results of {', '.join(map(str, unset['method']))} have no rho")

    def best(rows: pd.DataFrame, *, by_error: bool = False) -> pd.Series:
        keys, asc = (["target_error", "accuracy", "rho"], [True, False, False]) if by_error else \
            (["accuracy", "target_error", "rho"], [False, True, False])
        return rows.sort_values(keys, ascending=asc, kind="stable").iloc[0]

    out = []
    for method in pd.unique(settings["method"]):
        rows = settings[settings["method"] == method]
        low = rows[rows["target_error"] <= bound + _EPS]
        same = rows[rows["target_error"] <= orig_err + _EPS]
        if not low.empty:
            pick, rule = best(low), "a"
            why = (f"target error {pick['target_error']:.4g} <= {bound:.4g} ({1 - lambda1:.0%} of the original's "
                   f"{orig_err:.4g}); highest accuracy ({pick['accuracy']:.4g}) of {len(low)} such rho(s)")
        elif not same.empty:
            pick, rule = best(same), "b"
            why = (f"no rho reaches target error {bound:.4g}; highest accuracy ({pick['accuracy']:.4g}) of "
                   f"{len(same)} rho(s) not above the original's {orig_err:.4g}")
        else:
            pick, rule = best(rows), "c"
            why = (f"every rho raises the target error above the original's {orig_err:.4g}; "
                   f"highest accuracy ({pick['accuracy']:.4g})")
        out.append({**pick[["method", "rho", "accuracy", "target_error"]].to_dict(), "rule": rule, "reason": why})

        def beats(r) -> bool:
            return r["accuracy"] >= orig_acc - _EPS and r["target_error"] < orig_err - _EPS

        if not beats(pick):
            others = rows[(rows["rho"] != pick["rho"]) & rows.apply(beats, axis=1).astype(bool)]
            if not others.empty:
                extra = best(others, by_error=True)
                out.append({**extra[["method", "rho", "accuracy", "target_error"]].to_dict(), "rule": "d",
                            "reason": (f"{format_setting(method, pick['rho'])} does not beat the original "
                                       f"(accuracy {orig_acc:.4g}, target error {orig_err:.4g}); this rho does "
                                       f"(accuracy {extra['accuracy']:.4g}, target error "
                                       f"{extra['target_error']:.4g})")})
    frame = pd.DataFrame(out, columns=["method", "rho", "accuracy", "target_error", "rule", "reason"])
    return frame.astype({"rho": float, "accuracy": float, "target_error": float})


# ----------------------------------------------------------------------------------- table


def _pct(rel: float) -> str:
    v = 100.0 * rel
    digits = 0 if abs(v) >= 9.95 else 1 if abs(v) >= 0.995 else 2
    return f"{v:+.{digits}f} %".replace("+0.00 %", "0 %").replace("-0.00 %", "0 %")


def _change(value: float, ref: float) -> str:
    """Relative change of ``value`` against ``ref`` in words ("-10 %"), absolute when ref is 0."""
    if ref == 0:
        return f"{value - ref:+.4g} (from 0)"
    return _pct((value - ref) / abs(ref))


def format_p(p: float) -> str:
    """A p-value as the verdicts print it: two significant digits, "< 0.001" below 0.001."""
    if p < 0.001:
        return "< 0.001"
    text = f"{p:.2g}"
    return text if "." in text else f"{text}.0"


def _select_runs(runs: pd.DataFrame, selected, original: str, baseline: str) -> pd.DataFrame:
    if selected is None:
        return runs
    if isinstance(selected, pd.DataFrame):
        _require_columns(selected, ["method", "rho"], "selected settings")
        pairs = list(zip(selected["method"], selected["rho"]))
    else:
        pairs = [(m, r) for m, r in selected]
    wanted = {(str(m), _rho_key(r)) for m, r in pairs}
    keys = list(zip(runs["method"].astype(str), runs["rho"].map(_rho_key)))
    have = set(keys)
    missing = [format_setting(m, r) for m, r in sorted(wanted - have, key=str)]
    if missing:
        raise WorkspaceError(f"no runs for the selected setting(s) {', '.join(missing)}")
    keep = [m in (original, baseline) or (m, r) in wanted for m, r in keys]
    return runs[np.asarray(keep, dtype=bool)]


def _compare_to_baseline(row: dict, acc: np.ndarray, err: np.ndarray, base_acc: np.ndarray, base_err: np.ndarray,
                         *, baseline: str, deterministic: bool, alpha: float, screen_alpha: float) -> list[str]:
    """Fill the row's p-values and A12 (WR paper 4.3.2) and return the verdict's phrases."""
    te_words = f"target error {_change(row['target_error_mean'], base_err.mean())} vs {baseline}"
    if deterministic:
        return [f"{te_words}, accuracy {_change(row['accuracy_mean'], base_acc.mean())} vs {baseline}",
                DETERMINISTIC_NOTE]
    if not row["target_error_mean"] < base_err.mean():
        return [f"{te_words}, not lower: not tested"]
    te = compare_groups(err, base_err)
    if te.reason:
        return [f"{te_words}, not tested ({te.reason})"]
    row["p_target_error"], row["a12_target_error"] = te.p_value, te.a12
    sig = "" if te.p_value < alpha else ", not significant"
    parts = [f"{te_words}, p = {format_p(te.p_value)}, {te.magnitude}{sig}"]
    # the paper tests accuracy only where the target error is lower "at least at the 0.10 level"
    if not te.p_value < screen_alpha:
        return parts + [f"accuracy not tested (target error not lower at {screen_alpha:g})"]
    ac = compare_groups(acc, base_acc)
    row["p_accuracy"], row["a12_accuracy"] = ac.p_value, ac.a12
    if ac.p_value < alpha:
        return parts + [f"accuracy {_change(row['accuracy_mean'], base_acc.mean())} vs {baseline}, "
                        f"p = {format_p(ac.p_value)}, {ac.magnitude}"]
    return parts + [f"accuracy unchanged, p = {format_p(ac.p_value)}"]


def build_table(runs: pd.DataFrame, *, deterministic: Iterable[str] = (), baseline: str = BASELINE,
                original: str = ORIGINAL, selected=None, alpha: float = 0.05, screen_alpha: float = 0.10,
                lambda1: float = 0.25, lambda2: float = 0.01, rank_decimals: int | None = 4) -> pd.DataFrame:
    """The result table of a sweep in the layout of the WR paper's Table 2 (sections 4.3, 5).

    Rows: the original model, the baseline, then each (method, rho) setting (methods in
    first-appearance order, rhos ascending). Per row, over its runs (seeds):

    * ``accuracy_mean``/``_std`` and ``target_error_mean``/``_std``: mean and *sample*
      standard deviation (ddof = 1; NaN with a single run).
    * ``accuracy_rank`` (descending), ``target_error_rank`` (ascending): competition ranks
      ("1224") of the means rounded to ``rank_decimals``, over all rows including the
      original and the baseline, as in the paper; ``rank_sum`` their sum; ``top2`` the rows
      with the two smallest rank sums (three or more when tied, section 5).
    * Tests against the baseline (section 4.3.2), two-sided Wilcoxon rank-sum p-value and
      Vargha-Delaney A12 (method first, so A12 < 0.5 means lower): target error is tested
      only for settings whose mean target error is below the baseline's; accuracy only for
      those whose target error is lower with p < ``screen_alpha`` (0.10). Methods in
      ``deterministic`` (post-hoc, e.g. w-os: the same output whatever the seed) are not
      tested; their verdict says so. The original and the baseline are not tested.
    * ``verdict``: the row in words, e.g. "w-dbr(0.9): target error -10 % vs orig-ft,
      p = 0.009, large; accuracy unchanged, p = 0.68; not repaired (...)". A test counts as
      significant when p < ``alpha``.
    * ``repaired``: the WR paper's criterion (section 2.2.3) against the *original* model:
      mean target error at least ``lambda1`` lower (relative) and mean accuracy at most
      ``lambda2`` lower (relative). False for the original itself.

    Args:
        runs: long DataFrame, one row per run, columns ``method``, ``rho`` (NaN/None for
            the original and the baseline), ``seed``, ``accuracy``, ``target_error``.
        deterministic: names of the post-hoc methods (no seed variation).
        baseline: the method name of the baseline rows (the paper's orig-ft).
        original: the method name of the original model's rows (the paper's orig).
        selected: optional settings to keep: the frame of :func:`select_rhos` or an iterable
            of ``(method, rho)``; the original and the baseline are always kept. Default:
            every setting in ``runs``.
        alpha: significance level of the verdicts (default 0.05).
        screen_alpha: level the target-error test must reach before accuracy is tested
            (default 0.10, the paper's "at least at the 0.10 level").
        lambda1: least relative drop of target error for "repaired" (default 0.25).
        lambda2: largest relative drop of accuracy for "repaired" (default 0.01).
        rank_decimals: decimals of the means before ranking (default 4, what the paper
            prints); None ranks the raw means.

    Returns:
        DataFrame with columns :data:`TABLE_COLUMNS`: ``rho`` float (NaN where none), the
        ranks int64, ``top2``/``repaired`` bool, p-values and A12 float (NaN where not
        tested), ``runs`` a list of ``{"seed", "accuracy", "target_error"}`` per row.

    Raises:
        WorkspaceError: a column is missing, the original or baseline rows are missing, a
            value is not finite, a selected setting has no runs, or an option is out of range.
    """
    alpha = _check_fraction("alpha", alpha, open_low=True)
    screen_alpha = _check_fraction("screen_alpha", screen_alpha, open_low=True)
    lambda1, lambda2 = _check_fraction("lambda1", lambda1), _check_fraction("lambda2", lambda2)
    _require_columns(runs, ["method", "rho", "seed", "accuracy", "target_error"], "runs")
    _check_metrics(runs, "runs")
    deterministic = {str(d) for d in ([deterministic] if isinstance(deterministic, str) else deterministic)}
    for name, what in ((original, "original model"), (baseline, "baseline")):
        if not (runs["method"] == name).any():
            raise WorkspaceError(f"the runs have no row for the {what} {name!r}")
    runs = _select_runs(runs, selected, original, baseline)

    frame = runs.assign(_rho=runs["rho"].map(_rho_key), _order=np.arange(len(runs)))
    frame["_rho"] = frame["_rho"].astype(float)
    # the original and the baseline are one row each, whatever rho they were logged with
    frame.loc[frame["method"].isin([original, baseline]), "_rho"] = np.nan
    first = frame.groupby("method", sort=False)["_order"].min()
    special = {original: -2, baseline: -1}
    frame["_method_order"] = [special.get(m, first[m]) for m in frame["method"]]
    frame = frame.sort_values(["_method_order", "_rho", "_order"], kind="stable", na_position="first")

    groups = []
    for (method, rho), g in frame.groupby(["method", "_rho"], dropna=False, sort=False):
        groups.append((str(method), None if pd.isna(rho) else float(rho), g))
    base = frame[frame["method"] == baseline]
    base_acc, base_err = base["accuracy"].to_numpy(float), base["target_error"].to_numpy(float)
    orig = frame[frame["method"] == original]
    orig_acc, orig_err = float(orig["accuracy"].mean()), float(orig["target_error"].mean())

    rows = []
    for method, rho, g in groups:
        acc, err = g["accuracy"].to_numpy(float), g["target_error"].to_numpy(float)
        row = {"method": method, "rho": np.nan if rho is None else rho,
               "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else np.nan,
               "target_error_mean": float(err.mean()),
               "target_error_std": float(err.std(ddof=1)) if len(err) > 1 else np.nan,
               "p_target_error": np.nan, "a12_target_error": np.nan, "p_accuracy": np.nan, "a12_accuracy": np.nan,
               "runs": [{"seed": _seed(s), "accuracy": float(a), "target_error": float(e)}
                        for s, a, e in zip(g["seed"], acc, err)]}
        label = format_setting(method, rho)
        if method == original:
            row["repaired"], row["verdict"] = False, f"{label}: original model"
            rows.append(row)
            continue
        parts = (["baseline of the tests"] if method == baseline else
                 _compare_to_baseline(row, acc, err, base_acc, base_err, baseline=baseline,
                                      deterministic=method in deterministic, alpha=alpha,
                                      screen_alpha=screen_alpha))
        err_ok = (row["target_error_mean"] <= (1.0 - lambda1) * orig_err + _EPS
                  and row["target_error_mean"] < orig_err)
        acc_ok = row["accuracy_mean"] >= (1.0 - lambda2) * orig_acc - _EPS
        row["repaired"] = bool(err_ok and acc_ok)
        vs_orig = (f"target error {_change(row['target_error_mean'], orig_err)}, "
                   f"accuracy {_change(row['accuracy_mean'], orig_acc)} vs {original}")
        if row["repaired"]:
            parts.append(f"repaired ({vs_orig})")
        else:
            needs = [f"target error <= {_pct(-lambda1)}" if not err_ok else "",
                     f"accuracy >= {_pct(-lambda2)}" if not acc_ok else ""]
            parts.append(f"not repaired ({vs_orig}; needs {' and '.join(n for n in needs if n)})")
        row["verdict"] = f"{label}: " + "; ".join(parts)
        rows.append(row)

    table = pd.DataFrame(rows)
    ranks = rank_trade_off(table["accuracy_mean"], table["target_error_mean"], decimals=rank_decimals)
    table = pd.concat([table, ranks], axis=1)
    return table[TABLE_COLUMNS].astype({"rho": float, "p_target_error": float, "a12_target_error": float,
                                        "p_accuracy": float, "a12_accuracy": float, "repaired": bool})


# --------------------------------------------------------------------------------- exports


def _num(value):
    """A JSON-safe number: None for NaN/None, int for integral ranks/seeds, else float."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return None if not math.isfinite(value) else value


def _seed(value):
    v = _num(value)
    return int(v) if isinstance(v, float) and v.is_integer() else v


def table_to_json_rows(table: pd.DataFrame) -> list[dict]:
    """The rows of :func:`build_table` as the sweep's JSON contract (keys :data:`JSON_KEYS`).

    NaN becomes None (p-values and A12 where not tested, std with one run, rho of the
    original and the baseline), ranks and integral seeds become int, so
    ``json.dumps(rows, allow_nan=False)`` succeeds.

    Args:
        table: DataFrame from :func:`build_table`.

    Returns:
        ``[{"method", "rho", "accuracy_mean", "accuracy_std", "target_error_mean",
        "target_error_std", "accuracy_rank", "target_error_rank", "rank_sum",
        "p_target_error", "a12_target_error", "p_accuracy", "a12_accuracy", "verdict",
        "runs": [{"seed", "accuracy", "target_error"}]}, ...]``
    """
    _require_columns(table, JSON_KEYS, "table")
    out = []
    for rec in table[JSON_KEYS].to_dict("records"):
        row = {k: _num(rec[k]) for k in JSON_KEYS if k not in ("method", "verdict", "runs")}
        row["method"], row["verdict"] = str(rec["method"]), str(rec["verdict"])
        row["runs"] = [{"seed": _seed(r.get("seed")), "accuracy": _num(r.get("accuracy")),
                        "target_error": _num(r.get("target_error"))} for r in rec["runs"]]
        out.append({k: row[k] for k in JSON_KEYS})
    return out


def table_to_csv(table: pd.DataFrame) -> str:
    """The table as CSV text: every column of :func:`build_table`, ``runs`` as a JSON string,
    empty cells where a value is missing (NaN)."""
    _require_columns(table, TABLE_COLUMNS, "table")
    flat = table[TABLE_COLUMNS].copy()
    flat["runs"] = [json.dumps(r["runs"]) for r in table_to_json_rows(table)]
    buf = io.StringIO()
    flat.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def _mean_std(mean: float, std: float, pm: str) -> str:
    return f"{mean:.4f}" if not np.isfinite(std) else f"{mean:.4f}{pm}{std:.4f}"


def _test_cells(p: float, a12: float) -> tuple[str, str]:
    if not np.isfinite(p):
        return "", ""
    return f"{p:.3f}", f"{a12:.2f}({a12_letter(a12)})"


def _cells(row, pm: str) -> list[str]:
    te_p, te_vd = _test_cells(row["p_target_error"], row["a12_target_error"])
    acc_p, acc_vd = _test_cells(row["p_accuracy"], row["a12_accuracy"])
    return [format_setting(row["method"], row["rho"]), _mean_std(row["accuracy_mean"], row["accuracy_std"], pm),
            _mean_std(row["target_error_mean"], row["target_error_std"], pm), str(row["accuracy_rank"]),
            str(row["target_error_rank"]), str(row["rank_sum"]), acc_p, acc_vd, te_p, te_vd]


def _headers(error_name: str) -> list[str]:
    short = "TE" if error_name.lower() == "target error" else error_name
    return ["Method", "Accuracy", error_name, "Acc rank", f"{short} rank", "Rank sum",
            "Acc W", "Acc VD", f"{short} W", f"{short} VD"]


def table_to_markdown(table: pd.DataFrame, *, error_name: str = "Target error") -> str:
    """The table as a Markdown pipe table in the paper's Table 2 column order.

    Accuracy and target error as "mean ± std", ranks, rank sum, then the Wilcoxon p-value
    (W) and A12 with its magnitude letter (VD) for accuracy and target error, a "Repaired"
    column and the verdict. The top-two rows' method and rank sum are bold.

    Args:
        table: DataFrame from :func:`build_table`.
        error_name: the heading of the target-error column ("Confusion", "Bias", ...).

    Returns:
        Markdown text ending with a legend line.
    """
    _require_columns(table, TABLE_COLUMNS, "table")
    head = _headers(error_name) + ["Repaired", "Verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, row in table.iterrows():
        cells = _cells(row, " ± ")
        if row["top2"]:
            cells[0], cells[5] = f"**{cells[0]}**", f"**{cells[5]}**"
        cells += ["yes" if row["repaired"] else "no", str(row["verdict"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Mean ± sample std (ddof = 1) over seeds; W: Wilcoxon rank-sum p-value against the baseline; "
              "VD: Vargha-Delaney A12 (n negligible, s small, m medium, l large); bold: the two smallest rank "
              "sums; blank W/VD: not tested."]
    return "\n".join(lines) + "\n"


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(c, c) for c in str(text))


def table_to_latex(table: pd.DataFrame, *, error_name: str = "Target error", caption: str | None = None,
                   label: str | None = None) -> str:
    """The table as a LaTeX ``table``/``tabular`` in the paper's Table 2 layout.

    The top-two rows (smallest rank sums) are set in bold; each Wilcoxon p-value (W) is
    followed by the A12 value with the paper's magnitude letter (VD), e.g. ``0.009`` and
    ``0.00(l)``. Rows not tested have empty W/VD cells; deterministic methods show no std.
    Plain ``tabular`` with ``\\hline`` (no extra LaTeX packages).

    Args:
        table: DataFrame from :func:`build_table`.
        error_name: the heading of the target-error column ("Confusion", "Bias", ...).
        caption: optional caption text (escaped).
        label: optional ``\\label`` key.

    Returns:
        LaTeX source text.
    """
    _require_columns(table, TABLE_COLUMNS, "table")
    head = [_latex_escape(h) for h in _headers(error_name)]
    out = [r"\begin{table}", r"\centering"]
    if caption:
        out.append(rf"\caption{{{_latex_escape(caption)}}}")
    if label:
        out.append(rf"\label{{{label}}}")
    out += [r"\begin{tabular}{l" + "c" * (len(head) - 1) + "}", r"\hline", " & ".join(head) + r" \\", r"\hline"]
    for _, row in table.iterrows():
        # the marker survives escaping; the real $\pm$ would not
        cells = [_latex_escape(c).replace("PLUSMINUS", r" $\pm$ ") for c in _cells(row, "PLUSMINUS")]
        if row["top2"]:
            cells = [rf"\textbf{{{c}}}" if c else c for c in cells]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\hline", r"\end{tabular}",
            r"\par\smallskip{\footnotesize Mean $\pm$ sample std (ddof = 1) over seeds; W: Wilcoxon rank-sum p-value "
            r"against the baseline; VD: Vargha-Delaney A12 (n: negligible, s: small, m: medium, l: large); "
            r"bold: the two smallest rank sums.}", r"\end{table}"]
    return "\n".join(out) + "\n"
