"""Streamlit helpers shared by the confusion, triplet and what-if pages (no maths here)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from diagnostics.compare import compare_outputs
from diagnostics.confusion import (
    confusion_counts, confusion_rates, directional_errors, error_matrix, pair_mistakes, per_class_accuracy,
    rank_biased_triplets, rank_confused_pairs,
)
from diagnostics.figures_confusion import comparison_heatmap, confusion_heatmap
from diagnostics.triplet_groups import PAIR, TRIPLET, pair_negatives, rank_triplet_groups, target_pairs
from pages import ui
from pages.widgets import galleries
from pages.widgets.controls import change, counted_select, image_grid, pager
from workspace.targets import Target

SPLITS = ("eval", "train")


def pick_version(ws, key: str, *, label: str = "Model version") -> str:
    """A model-version selectbox defaulting to the sidebar's version."""
    versions = [v["id"] for v in ws.versions()]
    current = ui.current_version(ws)
    return st.selectbox(label, versions, index=versions.index(current) if current in versions else 0, key=key)


PAIRS_KEPT = 5000    # ranked pairs kept per outputs (all of them up to 100 classes)
HEATMAP_LIMIT = 40   # classes in an annotated heat map
#: the overview of every class starts open up to this many classes; past it the figure is
#: 350 KB or more (1,000 classes: 360 KB, 0.5 s of the browser's main thread), drawn on demand
OVERVIEW_OPEN_LIMIT = 500


@st.cache_resource(show_spinner=False, max_entries=8)
def _tables(key: str, split: str, version: str, _out) -> dict:
    out = _out
    k = out.num_classes
    errors = error_matrix(out.labels, out.preds, k, task=out.task)
    directional = directional_errors(out.labels, out.preds, k, task=out.task)
    counts = None if out.multi_label else confusion_counts(out.labels, out.preds, k)
    return {"errors": errors, "directional": directional, "counts": counts,
            "rates": directional if out.multi_label else confusion_rates(counts),
            "pairs": rank_confused_pairs(errors, out.class_names, directional=directional, top=PAIRS_KEPT),
            "per_class": per_class_accuracy(out.labels, out.preds, k, task=out.task)}


def tables(ws, out) -> dict:
    """Cached confusion tables of one outputs object, as
    :func:`diagnostics.run_confusion.confusion_tables` gives them but without the triplet ranking
    (the Bias triplets page ranks what it shows, :func:`triplet_groups`) and with the
    :data:`PAIRS_KEPT` most confused pairs: ``errors``, ``directional``, ``counts``, ``rates``,
    ``pairs``, ``per_class``. Kept in memory (not copied) per outputs."""
    return _tables(ws.outputs_key(out.split, out.model_version), out.split, out.model_version, out)


@st.cache_resource(show_spinner=False, max_entries=16)
def _groups(key: str, groups: int, share, exclude: tuple, anchors, kinds: tuple, _errors, names: tuple):
    return rank_triplet_groups(_errors, names, rank=rank_biased_triplets, groups=groups, share=share,
                               exclude=exclude, anchors=None if anchors is None else list(anchors), kinds=kinds)


def triplet_groups(ws, out, *, groups: int, share: float | None, exclude=(), anchors=None, kinds: str = "all"):
    """Cached :func:`diagnostics.triplet_groups.rank_triplet_groups` of one outputs object:
    ``(grouped, triplets)``; ``share=None`` keeps every triplet apart (no grouping); ``kinds``:
    ``"all"``, ``"pair"`` or ``"triplet"``."""
    exclude = tuple(sorted({tuple(sorted((int(a), int(b)))) for a, b in exclude}))
    anchors = None if anchors is None else tuple(sorted(int(a) for a in anchors))
    wanted = (PAIR, TRIPLET) if kinds == "all" else (kinds,)
    return _groups(ws.outputs_key(out.split, out.model_version), int(groups), share, exclude, anchors, wanted,
                   tables(ws, out)["errors"], tuple(out.class_names))


def heatmap_classes(pairs, k: int, *, limit: int = HEATMAP_LIMIT, extra=()) -> list[int]:
    """All classes when there are at most ``limit``, else those of the most confused pairs
    (``limit`` of them), plus the ``extra`` classes (a search), sorted."""
    if k <= limit:
        return list(range(k))
    shown: list[int] = []
    if limit > 0:
        for a, b in zip(pairs["a_id"], pairs["b_id"]):
            shown += [c for c in (int(a), int(b)) if c not in shown]
            if len(shown) >= limit:
                break
    return sorted(set(shown[:limit]) | {int(c) for c in extra})


def class_view(pairs, names, *, key: str) -> list[int]:
    """The classes of the detailed heat map: all up to :data:`HEATMAP_LIMIT`, else the classes of
    the most confused pairs (how many: a slider) plus classes searched by name."""
    k = len(names)
    if k <= HEATMAP_LIMIT:
        return list(range(k))
    c1, c2 = st.columns([1, 2])
    n_top = c1.slider("Top-confused classes", 0, HEATMAP_LIMIT, 20, step=2, key=f"{key}_top_classes",
                      help="Classes of the most confused pairs, in pair order")
    extra = c2.multiselect("Add classes", range(k), format_func=names.__getitem__, key=f"{key}_classes",
                           placeholder="search a class by name", help="Shown with the top-confused classes")
    shown = heatmap_classes(pairs, k, limit=n_top, extra=extra)
    st.caption(f"{k:,} classes: showing {len(shown)} (rates are still over all predictions). "
               "The overview below shows every class.")
    return shown


def changed_classes(targets, result, k: int, *, limit: int = HEATMAP_LIMIT) -> list[int]:
    """All classes when there are at most ``limit``, else the target classes and the classes
    that changed predictions moved to (single-label), capped at ``limit``."""
    if k <= limit:
        return list(range(k))
    shown = sorted({int(c) for t in targets for c in t})
    if result.preds.ndim == 1:
        moved, counts = np.unique(result.preds[result.changed], return_counts=True)
        shown += [int(c) for c in moved[np.argsort(-counts, kind="stable")] if int(c) not in shown]
    return sorted(shown[:limit])


def use_as_target(ws, target: Target, *, key: str, source: str, links: bool = True) -> None:
    """"Use as repair target" (asks before replacing another target) and where to go next."""
    ui.offer_target(ws, target, key=key, source=source)
    if links:
        ui.target_links(ws)


def gallery(ws, out, positions: np.ndarray, a: int, b: int, *, page_size: int, key: str, width: int = 96) -> None:
    """Thumbnails of the given output positions, captioned with p(a) and p(b), most confident
    first, ``page_size`` at a time with previous / next buttons."""
    if len(positions) == 0:
        st.caption("No such mistakes.")
        return
    positions = positions[np.argsort(-out.probs[positions, b], kind="stable")]
    shown = positions[pager(len(positions), key=key, page_size=page_size, reset_on=(a, b, len(positions)))]
    names = out.class_names
    st.caption(f"Under each image: p({names[b]}) / p({names[a]}), most confident first.")
    image_grid(ws, [(out.split, int(out.indices[p]), f"{out.probs[p, b]:.2f} / {out.probs[p, a]:.2f}")
                    for p in shown], width=width)


@st.fragment
def pair_galleries(ws, out, a: int, b: int, *, key: str) -> None:
    """The a -> b and b -> a mistakes of one pair, with the gallery search and a page size. A
    fragment: paging and searching rerun only the galleries."""
    names = out.class_names
    found, active = galleries.gallery_search(ws, out, key=f"{key}_search")
    per_page = int(st.slider("Images per page", 4, 64, 16, step=4, key=f"{key}_gallery_n"))
    for x, y in ((a, b), (b, a)):
        mistakes = pair_mistakes(out.labels, out.preds, x, y, task=out.task)
        share = "" if out.multi_label else \
            f" ({len(mistakes) / max(np.count_nonzero(out.labels == x), 1):.1%} of {names[x]})"
        shown = np.intersect1d(mistakes, found) if active else mistakes
        match = f"; {len(shown):,} match the search" if active else ""
        st.markdown(f"**{names[x]} → {names[y]}**: {len(mistakes):,} mistakes{share}{match}")
        gallery(ws, out, shown, x, y, page_size=per_page, key=f"{key}_gallery_{x}_{y}")


def compare_versions(ws, out, version: str, split: str, shown: list[int]) -> None:
    """Two versions side by side: both confusion matrices (the shown classes), accuracy and target
    error of each (:func:`diagnostics.compare.compare_outputs`), then the change coloured better /
    worse, and the fixed / broken counts."""
    names = list(out.class_names)
    others = [v["id"] for v in ws.versions() if v["id"] != version]
    if not others:
        st.caption("Only one model version so far: repairs add versions you can compare here.")
        return
    other = st.selectbox(f"Compare {version} with", others, key="conf_compare")
    target = ui.get_target(ws)
    pairs = tables(ws, out)["pairs"]
    if target is None and len(pairs):
        target = Target(((int(pairs["a_id"].iloc[0]), int(pairs["b_id"].iloc[0])),), names)
    cmp = compare_outputs(out, ui.outputs(ws, split, other), target.groups if target else None)
    error_label = f"Target error ({target.label})" if target else "Target error"
    sub = np.ix_(shown, shown)
    shown_names = [names[i] for i in shown]
    for col, i, name in zip(st.columns(2), (0, 1), (version, other)):
        with col:
            m1, m2 = st.columns(2)
            delta = {} if i == 0 else change(cmp.accuracy[1] - cmp.accuracy[0], "+.2%")
            m1.metric(f"Accuracy of {name}", f"{cmp.accuracy[i]:.2%}", **delta)
            if cmp.target_error is not None:
                delta = {} if i == 0 else change(cmp.target_error[1] - cmp.target_error[0], "+.4f",
                                                 lower_is_better=True)
                m2.metric(error_label, f"{cmp.target_error[i]:.4f}", **delta)
            rates = cmp.before_rates if i == 0 else cmp.after_rates
            st.plotly_chart(confusion_heatmap(rates[sub], shown_names, title=name), key=f"conf_side_{i}")
    if target is not None:
        st.caption(f"Target error: {'the repair target' if ui.get_target(ws) else 'the most confused pair'} "
                   f"{target.label} (lower is better).")
    d1, d2 = st.columns(2)
    d1.metric("Fixed (wrong → right)", f"{len(cmp.fixed):,}")
    d2.metric("Broken (right → wrong)", f"{len(cmp.broken):,}")
    if cmp.identical:
        st.info(f"{other} makes the same predictions as {version} on all {cmp.n:,} {split} images: no difference "
                "to draw.")
        return
    st.plotly_chart(comparison_heatmap(cmp, names, rows=shown, title=f"{other} − {version} (rates; green = better)"),
                    key="conf_diff_heatmap")


def excluded_pairs(ws, pairs, names, *, key: str) -> list[tuple[int, int]]:
    """The pairs whose triplets the Bias triplets page leaves out: the repair target's (a
    checkbox) and any of the most confused pairs the user picks."""
    skip: list[tuple[int, int]] = []
    c1, c2 = st.columns([1, 2])
    target = ui.get_target(ws)
    if target is not None:
        own = target_pairs(target.groups)
        text = ", ".join(f"{names[a]} / {names[b]}" for a, b in own)
        if c1.checkbox(f"Leave out the repair target's pairs ({text})", value=True, key=f"{key}_skip_target",
                       help="Triplets made by a pair you already target say nothing new"):
            skip += own
    else:
        c1.caption("No repair target yet: its pairs would be left out here.")
    options = [(int(a), int(b)) for a, b in zip(pairs["a_id"].head(200), pairs["b_id"].head(200))]
    picked = c2.multiselect("Leave out pairs", options, format_func=lambda p: f"{names[p[0]]} / {names[p[1]]}",
                            key=f"{key}_skip", placeholder="the 200 most confused pairs")
    return sorted(set(skip) | {tuple(p) for p in picked})


def triplet_detail(ws, out, group, triplets, *, share: float, key: str) -> None:
    """One group: what it means, its member triplets, the repair targets it offers, and the A -> C
    mistakes next to the B -> C mistakes of the chosen triplet."""
    names = out.class_names
    rows = list(group.rows)
    if group.kind == PAIR:
        a, b = int(group.a_id), int(group.b_id)
        negs = [pair_negatives(tables(ws, out)["errors"], p, c, share=share) for p, c in ((a, b), (b, a))]
        listed = ", ".join(names[n] for n in negs[0][:8]) + (" …" if len(negs[0]) > 8 else "")
        st.markdown(f"**{names[a]} and {names[b]} are confused** (error {group.pair_error:.3f}). Each class X that "
                    f"{names[b]} is rarely confused with makes ({names[a]}, X, {names[b]}) look biased, and the same "
                    f"with {names[a]} as anchor: {len(negs[0]) + len(negs[1]):,} triplets that say one thing. "
                    f"Anchors in the ranking: {group.anchors}. Negatives X for anchor {names[b]}: {listed}.")
        use_as_target(ws, Target(((a, b),), names), key=f"{key}_use_pair", source="bias triplets page", links=False)
    ids = rows[:50]
    fmt = {r: f"{triplets.positive.iloc[r]} / {triplets.negative.iloc[r]} | {triplets.anchor.iloc[r]} "
              f"(cd {triplets.cd.iloc[r]:.3f})" for r in ids}
    pick = counted_select(st, f"Triplet ({len(rows):,} in the ranking{'; the first 50' if len(rows) > 50 else ''})",
                          ids, fmt.__getitem__, key=f"{key}_pick")
    row = triplets.iloc[pick]
    p, n, c = int(row.positive_id), int(row.negative_id), int(row.anchor_id)
    st.markdown(f"The model confuses **{row.positive}** with **{row.anchor}** at {row.error_pos:.3f}, "
                f"but **{row.negative}** with **{row.anchor}** only at {row.error_neg:.3f}.")
    use_as_target(ws, Target(((p, n, c),), names), key=f"{key}_use_target", source="bias triplets page")
    per_page = int(st.slider("Images per page", 4, 32, 8, step=4, key=f"{key}_gallery_n"))
    for col, x in zip(st.columns(2), (p, n)):
        with col:
            found = pair_mistakes(out.labels, out.preds, x, c, task=out.task)
            back = pair_mistakes(out.labels, out.preds, c, x, task=out.task)
            st.markdown(f"**{names[x]} → {names[c]}**: {len(found):,} mistakes "
                        f"({names[c]} → {names[x]}: {len(back):,})")
            gallery(ws, out, found, x, c, page_size=per_page, key=f"{key}_gallery_{x}_{c}")


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
