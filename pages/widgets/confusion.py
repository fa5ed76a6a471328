"""Streamlit helpers shared by the confusion, triplet and what-if pages (no maths here)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from diagnostics.confusion import (
    confusion_counts, confusion_rates, directional_errors, error_matrix, per_class_accuracy,
    rank_biased_triplets, rank_confused_pairs,
)
from pages import ui

SPLITS = ("eval", "train")


def pick_version(ws, key: str, *, label: str = "Model version") -> str:
    """A model-version selectbox defaulting to the sidebar's version."""
    versions = [v["id"] for v in ws.versions()]
    current = ui.current_version(ws)
    return st.selectbox(label, versions, index=versions.index(current) if current in versions else 0, key=key)


@st.cache_data(show_spinner=False, max_entries=32)
def _tables(key: str, split: str, version: str, _out) -> dict:
    out = _out
    k = out.num_classes
    errors = error_matrix(out.labels, out.preds, k, task=out.task)
    directional = directional_errors(out.labels, out.preds, k, task=out.task)
    counts = None if out.multi_label else confusion_counts(out.labels, out.preds, k)
    rates = directional if out.multi_label else confusion_rates(counts)
    return {"errors": errors, "directional": directional, "counts": counts, "rates": rates,
            "pairs": rank_confused_pairs(errors, out.class_names, directional=directional),
            "triplets": rank_biased_triplets(errors, out.class_names, top=2000),
            "per_class": per_class_accuracy(out.labels, out.preds, k, task=out.task)}


def tables(ws, out) -> dict:
    """Cached confusion tables of one outputs object: errors, counts, rates, pairs, triplets.

    Only the 2,000 most biased triplets are kept (all of them are ranked first)."""
    return _tables(ws.outputs_key(out.split, out.model_version), out.split, out.model_version, out)


def heatmap_classes(pairs, k: int, *, limit: int = 40) -> list[int]:
    """All classes when there are at most ``limit``, else those of the most confused pairs."""
    if k <= limit:
        return list(range(k))
    shown: list[int] = []
    for a, b in zip(pairs["a_id"], pairs["b_id"]):
        shown += [c for c in (int(a), int(b)) if c not in shown]
        if len(shown) >= limit:
            break
    return sorted(shown[:limit])


def changed_classes(targets, result, k: int, *, limit: int = 40) -> list[int]:
    """All classes when there are at most ``limit``, else the target classes and the classes
    that changed predictions moved to (single-label), capped at ``limit``."""
    if k <= limit:
        return list(range(k))
    shown = sorted({int(c) for t in targets for c in t})
    if result.preds.ndim == 1:
        moved, counts = np.unique(result.preds[result.changed], return_counts=True)
        shown += [int(c) for c in moved[np.argsort(-counts, kind="stable")] if int(c) not in shown]
    return sorted(shown[:limit])


def use_as_target(kind: str, targets: list[list[str]], *, key: str, source: str) -> None:
    """A button that stores the targets for the What-if and Repair pages."""
    label = "; ".join(" / ".join(t) for t in targets)
    if st.button(f"Use {label} as repair target", key=key, type="primary"):
        st.session_state[ui.TARGETS] = {"kind": kind, "targets": [list(t) for t in targets]}
        st.session_state[ui.TARGETS_SOURCE] = source
    current = st.session_state.get(ui.TARGETS)
    if current:
        st.caption(f"Current repair target ({current['kind']}): "
                   + "; ".join(", ".join(t) for t in current["targets"])
                   + f" — from the {st.session_state.get(ui.TARGETS_SOURCE, '?')}. "
                     "Try it post hoc on the What-if page, or fine-tune on the Repair page.")
        st.page_link("pages/wos.py", label="What-if (w-os) with this target", icon=":material/tune:")


def gallery(ws, out, positions: np.ndarray, a: int, b: int, *, limit: int, columns: int = 8) -> None:
    """Thumbnails of the given output positions, captioned with p(a) and p(b), most confident first."""
    if len(positions) == 0:
        st.caption("No such mistakes.")
        return
    positions = positions[np.argsort(-out.probs[positions, b], kind="stable")][:limit]
    names = out.class_names
    captions = [f"#{out.indices[p]} p({names[b]})={out.probs[p, b]:.2f} p({names[a]})={out.probs[p, a]:.2f}"
                for p in positions]
    ui.thumbnails(ws, out.split, out.indices[positions], captions, columns=columns)


@st.cache_resource(show_spinner=False, max_entries=8)
def _what_if(key: str, targets: tuple, _out):
    from repair.wos import WosWhatIf

    out = _out
    what_if = WosWhatIf(out.probs, out.labels, [list(t) for t in targets], task=out.task,
                        threshold=out.threshold, preds=out.preds)
    return what_if, what_if.curve()


def what_if(ws, out, targets):
    """Cached :class:`repair.wos.WosWhatIf` and its curve for (outputs, targets)."""
    key = ws.outputs_key(out.split, out.model_version)
    return _what_if(key, tuple(tuple(int(c) for c in t) for t in targets), out)


def targets_text(default: str) -> str:
    """The editable targets text, seeded from the shared repair target when that changes."""
    shared = st.session_state.get(ui.TARGETS)
    text = ";".join(",".join(t) for t in shared["targets"]) if shared else default
    if st.session_state.get("_wos_targets_seen") != text:
        st.session_state["_wos_targets_seen"] = text
        st.session_state["wos_targets"] = text
    st.session_state.setdefault("wos_targets", text)
    return st.text_input("Targets", key="wos_targets",
                         help='"A,B" (pair), "A,B;C,D" (several pairs) or "P,N,C" '
                              '(a triplet: positive, negative, anchor)')


def share_targets(kind: str, targets: list[list[str]], source: str) -> None:
    """After the user edits the targets text, store them as the shared repair target."""
    text = ";".join(",".join(t) for t in targets)
    seen = st.session_state.get("_wos_targets_seen", "")
    if text.replace(" ", "") == seen.replace(" ", "") or st.session_state.get("wos_targets") == seen:
        return  # unedited: the seeded shared target (or the default pair) stays as it is
    st.session_state[ui.TARGETS] = {"kind": kind, "targets": [list(t) for t in targets]}
    st.session_state[ui.TARGETS_SOURCE] = source
    st.session_state["_wos_targets_seen"] = text


RHO_SLIDER = "wos_rho_slider"


def set_rho(rho: float) -> None:
    """Move the what-if slider (use as a button callback)."""
    st.session_state[RHO_SLIDER] = float(rho)


def rho_slider(grid: list[float], suggestion: dict) -> float:
    """The log-scale rho slider over ``grid``; mirrors its value into ``ui.WOS_RHO``.

    The widget has its own key because Streamlit drops a widget's state on pages that do not
    draw it; ``ui.WOS_RHO`` keeps the last rho for the Repair page, and a rho set there (or
    anywhere) moves this slider to the nearest grid value.
    """
    shared = st.session_state.get(ui.WOS_RHO)
    if RHO_SLIDER not in st.session_state or (shared is not None and shared != st.session_state.get("_wos_rho_seen")):
        wanted = float(shared) if shared is not None else 1.0
        st.session_state[RHO_SLIDER] = grid[int(np.argmin(np.abs(np.log10(grid) - np.log10(max(wanted, 1e-12)))))]
    if st.session_state[RHO_SLIDER] not in grid:
        st.session_state[RHO_SLIDER] = grid[0]
    rho = st.select_slider("rho (log scale, 1 = no change)", options=grid, key=RHO_SLIDER,
                           format_func=lambda r: f"{r:.4g}")
    st.session_state[ui.WOS_RHO] = rho
    st.session_state["_wos_rho_seen"] = rho
    return rho
