"""Streamlit helpers shared by the confusion, triplet and what-if pages (no maths here)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from diagnostics.run_confusion import confusion_tables
from pages import ui
from workspace.targets import Target

SPLITS = ("eval", "train")


def pick_version(ws, key: str, *, label: str = "Model version") -> str:
    """A model-version selectbox defaulting to the sidebar's version."""
    versions = [v["id"] for v in ws.versions()]
    current = ui.current_version(ws)
    return st.selectbox(label, versions, index=versions.index(current) if current in versions else 0, key=key)


@st.cache_data(show_spinner=False, max_entries=32)
def _tables(key: str, split: str, version: str, _out) -> dict:
    return confusion_tables(_out)


def tables(ws, out) -> dict:
    """Cached confusion tables of one outputs object (:func:`diagnostics.run_confusion.confusion_tables`):
    errors, counts, rates, pairs, the 2,000 most biased triplets, per-class accuracy."""
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


def use_as_target(ws, target: Target, *, key: str, source: str) -> None:
    """"Use as repair target" (asks before replacing another target) and where to go next."""
    ui.offer_target(ws, target, key=key, source=source)
    ui.target_links(ws)


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
    from diagnostics.wos import WosWhatIf

    out = _out
    what_if = WosWhatIf(out.probs, out.labels, [list(t) for t in targets], task=out.task,
                        threshold=out.threshold, preds=out.preds)
    return what_if, what_if.curve()


def what_if(ws, out, target: Target):
    """Cached :class:`diagnostics.wos.WosWhatIf` and its curve for (outputs, target)."""
    return _what_if(ws.outputs_key(out.split, out.model_version), target.groups, out)


def targets_editor(ws, default: Target | None, *, key: str, source: str) -> Target | None:
    """The editable targets text, seeded from the workspace's repair target.

    Editing it makes the typed target the workspace's repair target (its source then says
    "typed on the <source>"); returns the parsed target, or None with an error shown.
    """
    shared = ui.get_target(ws)
    seed = (shared or default)
    seen_key = f"_{key}_seen"
    if seed is not None and (st.session_state.get(seen_key) != seed.text or key not in st.session_state):
        st.session_state[seen_key] = seed.text
        st.session_state[key] = seed.text
    text = st.text_input("Targets", key=key, help='"A,B" (pair), "A,B;C,D" (several pairs) or "P,N,C" '
                                                  '(a triplet: positive, negative, anchor)')
    try:
        target = Target.parse(text, ws.class_names)
    except ValueError as exc:
        st.error(f"Targets: {exc}")
        return None
    edited = text.replace(" ", "") != st.session_state.get(seen_key, "").replace(" ", "")
    if edited and (shared is None or target.groups != shared.groups):
        ui.set_target(ws, target, f"typed on the {source}")
        st.session_state[seen_key] = target.text
    return target


RHO_SLIDER = "wos_rho_slider"


def set_rho(rho: float) -> None:
    """Move the what-if slider (use as a button callback)."""
    st.session_state[RHO_SLIDER] = float(rho)


def rho_slider(ws, grid: list[float]) -> float:
    """The log-scale rho slider over ``grid``; remembers the value per workspace.

    The widget has its own key because Streamlit drops a widget's state on pages that do not
    draw it; the workspace state keeps the last rho for the Repair page.
    """
    state = ui.ws_state(ws)
    shared = state.get(ui.WOS_RHO)
    seen = st.session_state.get("_wos_rho_seen")
    if RHO_SLIDER not in st.session_state or seen is None or seen[0] != ws.spec or (
            shared is not None and shared != seen[1]):
        wanted = float(shared) if shared is not None else 1.0
        st.session_state[RHO_SLIDER] = grid[int(np.argmin(np.abs(np.log10(grid) - np.log10(max(wanted, 1e-12)))))]
    if st.session_state[RHO_SLIDER] not in grid:
        st.session_state[RHO_SLIDER] = grid[0]
    rho = st.select_slider("rho (log scale, 1 = no change)", options=grid, key=RHO_SLIDER,
                           format_func=lambda r: f"{r:.4g}")
    state[ui.WOS_RHO] = rho
    st.session_state["_wos_rho_seen"] = (ws.spec, rho)
    return rho
