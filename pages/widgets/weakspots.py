"""Streamlit pieces of the weakspots page: the per-version neighbour cache, the pivotal
gallery (each pivotal image with its nearest neighbours, like the paper's Figure 3), the
repair-target picker and the notes form."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import streamlit as st

from diagnostics import run_weakspots
from diagnostics.weakspots import (
    RepresentativeSet, count_weakspots_by_pair, count_weakspots_by_radius, find_pivotal_images, project_pca,
    radius_grid,
)
from pages import ui
from pages.widgets import galleries
from pages.widgets.controls import counted_select, image_grid, pager
from workspace.targets import Target
from workspace.errors import WorkspaceError

K_MAX = 50          # one search with the largest k the slider allows; smaller k slice it
REVIEW_KIND = "pivotal"
#: choices offered by a select (the pairs with the most weakspots, the first pivotal images): at
#: 1,000 classes the full lists were 5,000 pairs and 8,000 images, 400 KB sent on every slider move
PAIR_OPTIONS = 100
NOTE_OPTIONS = 200
LAZY_ROWS = 2000    # a longer table loads its rows lazily (the browser fetches what it shows)
GRID_POINTS = 20    # radii of the weakspots-per-radius curve
KEPT = 8            # settings whose pivotal images stay in memory per version
_MEMO_LOCK = threading.Lock()


@st.cache_resource(show_spinner=False, max_entries=8)
def _box(spec: str, version: str, train_key: str, eval_key: str) -> dict:
    return {}  # per (workspace, version, data): the neighbour data and the PCA map, kept across reruns


def neighbour_data(ws, version: str) -> dict:
    """:func:`diagnostics.run_weakspots.neighbour_data` (artifact store) with a progress bar; kept in
    memory per version so slider moves only slice it."""
    box = _box(ws.spec, version, ws.outputs_key("train", version), ws.outputs_key("eval", version))
    if "table" not in box:
        try:
            with ui.ProgressBar("Searching the neighbours of every misclassified sample") as bar:
                box.update(run_weakspots.neighbour_data(ws, version, k_max=K_MAX, progress=bar))
        except WorkspaceError as exc:
            st.error(f"Cannot search weakspots for {version}: {exc}")
            st.stop()
    return box


def pivotal_at(box: dict, *, radius: float, k: int, purity: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pivotal images and the weakspots per class pair at one setting
    (:func:`~diagnostics.weakspots.find_pivotal_images`, :func:`~diagnostics.weakspots.count_weakspots_by_pair`),
    kept for the :data:`KEPT` latest settings: a rerun that changes none of them (a picker, an
    expander, the map) reuses them (at 1,000 classes the pair count alone is 0.15 s). Read-only."""
    memo = box.setdefault("pivotal", {})
    key = (float(radius), int(k), float(purity))
    found = memo.get(key)
    if found is None:
        pivotal = find_pivotal_images(box["rep"], box["table"], radius=radius, k=k, purity=purity)
        found = (pivotal, count_weakspots_by_pair(pivotal, box["rep"].class_names))
        _remember(memo, key, found)
    return found


def _remember(memo: dict, key, value) -> None:
    """Keep ``value`` and at most :data:`KEPT` entries; the box is shared by every session of
    the server, so the eviction holds a lock."""
    with _MEMO_LOCK:
        memo[key] = value
        while len(memo) > KEPT:
            memo.pop(next(iter(memo)))


def radius_counts(box: dict, span, *, radius: float, found: int, k: int, purity: float) -> pd.DataFrame:
    """Weakspots per radius: :data:`GRID_POINTS` radii over ``span`` (counted once per k and purity,
    :func:`~diagnostics.weakspots.count_weakspots_by_radius`) and the slider's ``radius``, whose
    count is ``found`` (the pivotal images there), so a radius move counts nothing again.

    Returns:
        Columns ``radius``, ``count``, ascending radii.
    """
    memo = box.setdefault("radius_counts", {})
    key = (float(span.low), float(span.high), float(span.suggested), int(k), float(purity))
    counts = memo.get(key)
    if counts is None:
        counts = count_weakspots_by_radius(box["rep"], box["table"], radius_grid(span, n=GRID_POINTS),
                                           k=k, purity=purity)
        _remember(memo, key, counts)
    if (counts["radius"] == radius).any():
        return counts
    extra = pd.DataFrame({"radius": [float(radius)], "count": [int(found)]})
    return pd.concat([counts, extra], ignore_index=True).sort_values("radius", kind="stable").reset_index(drop=True)


def embedding_map(box: dict) -> np.ndarray:
    """(N, 2) PCA coordinates of the representative set (computed once per version)."""
    if "xy" not in box:
        box["xy"] = project_pca(box["rep"].embeddings)
    return box["xy"]


def init_state(key: str, default: float, low: float, high: float) -> None:
    """Give a slider its default once, and keep it inside a range that changed (another version)."""
    value = st.session_state.get(key, default)
    clamped = float(min(max(value, low), high))
    if key not in st.session_state or clamped != value:
        st.session_state[key] = clamped


def gallery(ws, rep: RepresentativeSet, table, pivotal: pd.DataFrame, *, k: int, radius: float,
            show: int, neighbours: int, width: int = 84, key: str = "ws_gallery") -> None:
    """Each pivotal image (first column) with its nearest neighbours: label / pred, distance;
    ``show`` pivotal images per page, with previous / next buttons."""
    if pivotal.empty:
        st.caption("No pivotal images at these settings.")
        return
    names = rep.class_names
    where = {int(q): i for i, q in enumerate(table.queries)}
    page = pivotal.iloc[pager(len(pivotal), key=key, page_size=show, noun="pivotal images",
                              reset_on=(len(pivotal), tuple(pivotal["row"].head(3))))]
    for r in page.itertuples():
        items = [(r.split, int(r.index), f"**PIVOTAL** {r.label_name} → {r.pred_name} ({r.purity:.0%} pure)")]
        q = where[int(r.row)]
        for j in range(min(neighbours, k)):
            nb, dist = int(table.neighbours[q, j]), float(table.distances[q, j])
            if nb < 0:
                break
            wrong = "❌ " if rep.labels[nb] != rep.preds[nb] else ""
            far = "" if dist <= radius else " (beyond d)"
            items.append((rep.splits[nb], int(rep.indices[nb]),
                          f"{wrong}{names[rep.labels[nb]]} / {names[rep.preds[nb]]}  \nd={dist:.2f}{far}"))
        image_grid(ws, items, width=width)


@st.fragment
def pivotal_gallery(ws, version: str, rep: RepresentativeSet, table, pivotal: pd.DataFrame, pairs: pd.DataFrame, *,
                    k: int, radius: float) -> None:
    """The pivotal gallery with its pair filter, page size, search and pager. A fragment: paging
    and filtering rerun only this part of the page."""
    g0, g1, g2 = st.columns([2, 1, 1])
    shown = pair_filter(g0, pivotal, pairs)
    show = g1.number_input("Pivotal images per page", 1, 50, 4, key="ws_show")
    n_nb = g2.number_input("Neighbours shown", 1, 12, 6, key="ws_neighbours")
    shown = search(ws, version, shown)
    st.caption("Each row: the pivotal image (label → prediction), then its nearest neighbours as label / "
               "prediction, ❌ where the model is wrong, with their L2 distance. A reference opens the image in the "
               "sample view.")
    gallery(ws, rep, table, shown, k=k, radius=radius, show=int(show), neighbours=int(n_nb))


def _pair_label(r) -> str:
    return f"{r.a} ↔ {r.b} ({r.count} weakspot{'s' if r.count != 1 else ''})"


def _pair_labels(pairs: pd.DataFrame, key: str) -> dict:
    """``{(a_id, b_id): label}`` of the :data:`PAIR_OPTIONS` pairs with the most weakspots, and of
    the pair picked under ``key`` if it has fewer (it stays picked)."""
    shown = pairs.head(PAIR_OPTIONS)
    picked = st.session_state.get(key)
    if len(pairs) > PAIR_OPTIONS and isinstance(picked, tuple) and len(picked) == 2:
        extra = pairs[(pairs["a_id"] == picked[0]) & (pairs["b_id"] == picked[1])]
        shown = pd.concat([shown, extra]) if len(extra) and picked not in set(zip(shown["a_id"], shown["b_id"])) \
            else shown
    return {(int(r.a_id), int(r.b_id)): _pair_label(r) for r in shown.itertuples()}


def _pairs_help(pairs: pd.DataFrame) -> str | None:
    if len(pairs) <= PAIR_OPTIONS:
        return None
    return (f"The {PAIR_OPTIONS} of {len(pairs):,} pairs with the most weakspots; the table lists them all, and the "
            "gallery's Label / Predicted filters find the pivotal images of any pair.")


def pairs_table(pairs: pd.DataFrame) -> None:
    """The weak pairs, most weakspots first (sortable): the :data:`PAIR_OPTIONS` with the most
    weakspots, all of them behind a toggle (a long table loads its rows lazily, but its first
    1,000 rows were still 60 KB of every run at 1,000 classes)."""
    columns = ["a", "b", "count", "a_to_b", "b_to_a"]
    shown = pairs
    if len(pairs) > PAIR_OPTIONS and not st.toggle(
            f"All {len(pairs):,} pairs", key="ws_pairs_all",
            help=f"The table lists the {PAIR_OPTIONS} pairs with the most weakspots; this lists every pair"):
        shown = pairs.head(PAIR_OPTIONS)
    st.dataframe(shown[columns], hide_index=True, key="ws_pairs_table", lazy=len(shown) > LAZY_ROWS)


def pair_filter(container, pivotal: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The pivotal images of one weak pair (either direction), or all of them; the labels'
    counts follow the sliders."""
    labels = {None: f"all pairs ({len(pivotal):,} pivotal images)"}
    labels.update(_pair_labels(pairs, "ws_gallery_pair"))
    pick = counted_select(container, "Show pair", list(labels), labels.__getitem__, key="ws_gallery_pair",
                          help=_pairs_help(pairs))
    if pick is None:
        return pivotal
    a, b = pick
    return pivotal[((pivotal["label"] == a) & (pivotal["pred"] == b)) | ((pivotal["label"] == b) & (pivotal["pred"] == a))]


def search(ws, version: str, pivotal: pd.DataFrame) -> pd.DataFrame:
    """The gallery search and class filters (:func:`pages.widgets.galleries.gallery_search`) over
    the pivotal images, which come from both splits: the train split's matches are drawn by the
    search itself, the eval split's are found with the same query and filters."""
    from diagnostics.samples import filter_samples

    key = "ws_search"
    train, evals = ui.outputs(ws, "train", version), ui.outputs(ws, "eval", version)
    rows, active = galleries.gallery_search(ws, train, key=key)
    if not active:
        return pivotal
    names = list(train.class_names)
    # gallery_search keeps its query and filters under these keys (see its source)
    query = st.session_state.get(f"{key}_query", "")
    label_ids = [names.index(n) for n in st.session_state.get(f"{key}_labels", [])]
    pred_ids = [names.index(n) for n in st.session_state.get(f"{key}_preds", [])]
    ids = ws.split("eval").ids
    eval_rows = filter_samples(evals.indices, [ids[i] for i in evals.indices], evals.labels, evals.preds,
                               query=query, label_classes=label_ids, pred_classes=pred_ids)
    keep = {("train", int(i)) for i in train.indices[rows]} | {("eval", int(i)) for i in evals.indices[eval_rows]}
    mask = [(s, int(i)) in keep for s, i in zip(pivotal["split"], pivotal["index"])]
    found = pivotal[np.asarray(mask, dtype=bool)] if len(pivotal) else pivotal
    st.caption(f"{len(found):,} of {len(pivotal):,} pivotal images match the search.")
    return found


def target_picker(ws, pairs: pd.DataFrame) -> None:
    """Pick a weak pair and make it the repair target (asks before replacing another); the
    labels' counts follow the sliders."""
    if pairs.empty:
        return
    labels = _pair_labels(pairs, "ws_pair")
    a, b = counted_select(st, "Weak pair", list(labels), labels.__getitem__, key="ws_pair", help=_pairs_help(pairs))
    ui.offer_target(ws, Target(((a, b),), ws.class_names), key="ws_use_target", source="weakspots page")
    ui.target_links(ws)


def notes(ws, version: str, pivotal: pd.DataFrame) -> None:
    """A note on one pivotal image, stored as review ("pivotal", "<split>:<index>")."""
    if pivotal.empty:
        return
    keys = [f"{s}:{i}" for s, i in zip(pivotal["split"], pivotal["index"])]
    noted = {r["key"] for r in ws.store.list_reviews(REVIEW_KIND, model_version=version)}
    # the first NOTE_OPTIONS images and those with a note are offered; any other can be typed
    offered = keys[:NOTE_OPTIONS] + [k for k in keys[NOTE_OPTIONS:] if k in noted]
    picked = st.session_state.get("ws_note_image")
    if picked in keys and picked not in offered:
        offered.append(picked)
    key = st.selectbox("Pivotal image", offered, key="ws_note_image", accept_new_options=len(keys) > len(offered),
                       help=None if len(keys) == len(offered) else
                       f"The first {NOTE_OPTIONS} of {len(keys):,} pivotal images and those with a note; type "
                       "another one's reference (split:index, as in the gallery) to note it")
    if key not in set(keys):
        st.warning(f"{key} is not a pivotal image at these settings.")
        return
    old = ws.store.get_review(REVIEW_KIND, key, model_version=version)
    text = st.text_area("Note", value=(old or {}).get("note", ""), key=f"ws_note_text_{key}",
                        placeholder="What is in this image that may explain the weakspot?")
    if st.button("Save note", key="ws_note_save"):
        ws.store.upsert_review(REVIEW_KIND, key, model_version=version, verdict="note", note=text)
        st.success(f"Note saved for {key}.")
    saved = ws.store.list_reviews(REVIEW_KIND, model_version=version)
    if saved:
        st.dataframe(pd.DataFrame([{"image": s["key"], "note": s["note"]} for s in saved]),
                     hide_index=True, key="ws_notes_table")
