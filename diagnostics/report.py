"""The findings report: sections of tables and figures assembled into one HTML file and a JSON twin.

Pure assembly (no workspace, no file I/O): :mod:`diagnostics.run_report` collects the
:class:`Section` objects from what a workspace has stored, and this module renders them.

The HTML file is self-contained: the CSS is inline and plotly.js is embedded once, inline
(``include_plotlyjs=True`` for the first figure, the later figures reuse it), so the file opens
without a network connection and loads nothing from a CDN. The JSON twin holds the same tables
as lists of records (NaN written as null) and every section's status, so a pipeline can read
which findings exist and which are "not computed yet".
"""

from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: every section of a report, in order
SECTION_IDS = ("summary", "pairs", "triplets", "associations", "flagged", "weakspots", "repairs")
OK, EMPTY, NOT_COMPUTED, NOT_APPLICABLE = "ok", "empty", "not computed yet", "n/a"
STATUSES = (OK, EMPTY, NOT_COMPUTED, NOT_APPLICABLE)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #666; } .note { color: #444; }
.status { font-size: 0.75rem; padding: 0.1rem 0.5rem; border-radius: 0.6rem; margin-left: 0.6rem;
          vertical-align: middle; font-weight: normal; }
.status-ok { background: #d9f2df; } .status-empty { background: #eee; }
.status-not-computed-yet { background: #fde6c8; } .status-n-a { background: #eee; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f6f6f6; } caption { text-align: left; font-weight: 600; padding: 0.3rem 0; }
nav a { margin-right: 0.8rem; }
"""


@dataclass
class Section:
    """One section of the report.

    Attributes:
        id: one of :data:`SECTION_IDS` (the HTML anchor and the JSON key).
        title: the heading.
        status: one of :data:`STATUSES`: "ok", "empty" (computed, nothing found), "not computed
            yet" (the note says how to compute it) or "n/a" (does not apply to this workspace).
        note: one paragraph of plain text shown under the heading.
        tables: ``(caption, frame)`` pairs.
        figures: plotly figures.
        data: extra JSON-able numbers (also shown in the HTML as a key/value table).
    """

    id: str
    title: str
    status: str = OK
    note: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.id not in SECTION_IDS:
            raise ValueError(f"unknown section {self.id!r}; valid: {', '.join(SECTION_IDS)}")
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}; valid: {', '.join(STATUSES)}")


def _plain(value):
    """A JSON-able value: numpy scalars unwrapped, NaN/inf -> None, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT or (value is not None and not isinstance(value, (str, bool, int, float)) and pd.isna(value)):
        return None
    return value


def table_records(frame: pd.DataFrame) -> list[dict]:
    """A frame as JSON records (NaN -> None, numpy scalars unwrapped)."""
    return [_plain(r) for r in frame.to_dict("records")]


def render_json(title: str, meta: dict, sections: list[Section]) -> dict:
    """The JSON twin: ``{"title", "meta", "sections": {id: {"title", "status", "note", "data",
    "tables": [{"caption", "rows"}]}}}``, sections in :data:`SECTION_IDS` order."""
    return {"title": title, "meta": _plain(meta), "sections": {
        s.id: {"title": s.title, "status": s.status, "note": s.note, "data": _plain(s.data),
               "tables": [{"caption": c, "rows": table_records(t)} for c, t in s.tables]}
        for s in _ordered(sections)}}


def _ordered(sections: list[Section]) -> list[Section]:
    ids = [s.id for s in sections]
    if len(set(ids)) != len(ids):
        raise ValueError(f"a section appears twice: {ids}")
    return sorted(sections, key=lambda s: SECTION_IDS.index(s.id))


def _table_html(caption: str, frame: pd.DataFrame) -> str:
    if frame.empty:
        return f"<p class='note'>{html.escape(caption)}: none.</p>"
    body = frame.to_html(index=False, escape=True, border=0, na_rep="", float_format=lambda v: f"{v:.4g}")
    head, _, rest = body.partition(">")  # the caption must be the table's first child
    return f"{head}>\n<caption>{html.escape(caption)}</caption>{rest}"


def render_html(title: str, meta: dict, sections: list[Section]) -> str:
    """The self-contained HTML report (inline CSS, plotly.js embedded once, no external resource).

    Args:
        title: the page title and heading.
        meta: key/value lines shown under the heading (workspace, model version, date...).
        sections: one per :data:`SECTION_IDS` entry (order does not matter).
    """
    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p class='meta'>" + " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}"
                                             for k, v in meta.items()) + "</p>"]
    ordered = _ordered(sections)
    parts.append("<nav>" + "".join(f"<a href='#{s.id}'>{html.escape(s.title)}</a>" for s in ordered) + "</nav>")
    plotly_included = False
    for s in ordered:
        css = "status-" + s.status.replace(" ", "-").replace("/", "-")
        parts.append(f"<section id='{s.id}'><h2>{html.escape(s.title)}<span class='status {css}'>"
                     f"{html.escape(s.status)}</span></h2>")
        if s.note:
            parts.append(f"<p class='note'>{html.escape(s.note)}</p>")
        if s.data:
            frame = pd.DataFrame({"": list(s.data), "value": [_show(v) for v in s.data.values()]})
            parts.append(frame.to_html(index=False, escape=True, border=0, header=False))
        for caption, frame in s.tables:
            parts.append(_table_html(caption, frame))
        for fig in s.figures:
            # plotly.js goes in once, inline: the file must open without a network
            parts.append(fig.to_html(full_html=False, include_plotlyjs=not plotly_included,
                                     config={"displaylogo": False}))
            plotly_included = True
        parts.append("</section>")
    parts.append(f"<p class='meta'>Generated by Groupfix on {dt.datetime.now().isoformat(timespec='seconds')}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _show(value) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
