"""Pieces of the Overview page that are worth testing on their own."""

from __future__ import annotations

import pandas as pd

from workspace.targets import Target

#: what a field that does not apply shows (a null cell of ``st.dataframe`` reads "None")
BLANK = "—"


def _text(value, fmt: str) -> str:
    return BLANK if value is None else format(value, fmt)


def versions_table(ws) -> pd.DataFrame:
    """One row per model version, readable: the target as ``a / b``, blanks (not "None") where a
    field does not apply (rho, epochs and target error are text: :data:`BLANK` for the loaded
    model), and the accuracy and target error the repair run measured on eval (for a version no
    run measured, e.g. the loaded model, the accuracy of its cached eval outputs)."""
    rows = []
    for v in ws.versions():
        target = Target.from_dict(v.get("targets"), ws.class_names)
        metrics = dict(v.get("metrics") or {})
        if metrics.get("accuracy") is None:  # the loaded model (no run measured it): its cached eval outputs
            out = ws.cached_outputs("eval", v["id"])
            if out is not None and out.n:
                metrics["accuracy"] = float(out.accuracy)
        rows.append({"id": v["id"], "parent": v.get("parent") or "", "method": v.get("method") or "",
                     "target": target.label if target else "", "rho": _text(v.get("rho"), ".3g"),
                     "epochs": _text(v.get("epochs"), ".3g"),
                     "accuracy": None if metrics.get("accuracy") is None else 100 * metrics["accuracy"],
                     "target error": _text(metrics.get("target_error"), ".4f"), "path": v["path"]})
    return pd.DataFrame(rows)


__all__ = ["versions_table"]
