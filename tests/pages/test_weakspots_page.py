"""AppTest of the weakspots page: sliders, counts, repair target, notes, the 2-D map."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from diagnostics.weakspots import build_representative_set, find_neighbours, find_pivotal_images, scan_weakspots
from pages import ui
from tests.pages.helpers import caption_ref, caption_text, galleries, thumbnails, ws_state
from tests.conftest import REPO

TIMEOUT = 180


def _page(spec: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    if spec:
        at.session_state[ui.WORKSPACE] = spec
    at.run()
    at.switch_page("pages/weakspots.py").run()
    assert not at.exception, at.exception
    return at


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture(scope="module")
def demo_rep(demo_train, demo_eval):
    return build_representative_set(demo_train, demo_eval)


def test_page_matches_the_library_and_reacts_to_sliders(demo_ws, demo_rep):
    at = _page()
    auto = scan_weakspots(demo_rep, radius="auto", k=20)
    assert at.slider(key="ws_k").value == 20
    assert at.slider(key="ws_radius").value == pytest.approx(auto.radius)
    assert _metric(at, "Pivotal images (weakspots)") == f"{len(auto.pivotal):,}"
    assert _metric(at, "Misclassified samples tested") == f"{auto.queries:,}"
    assert not at.warning
    # gallery: 4 pivotal images per page, each followed by its 6 nearest neighbours (label / pred, distance)
    captions = thumbnails(at)
    assert len(captions) == 4 * 7 and len(galleries(at)) == 4   # one row element per pivotal image
    first = auto.pivotal.iloc[0]
    assert caption_ref(captions[0]) == f"{first['split']}:{first['index']}"
    assert all(caption_text(c).startswith("**PIVOTAL**") == (j % 7 == 0) for j, c in enumerate(captions))
    assert all("d=" in c for j, c in enumerate(captions) if j % 7)

    at.slider(key="ws_purity").set_value(1.0).run()
    assert not at.exception, at.exception
    table = find_neighbours(demo_rep, k=20)
    strict = find_pivotal_images(demo_rep, table, radius=auto.radius, k=20, purity=1.0)
    assert _metric(at, "Pivotal images (weakspots)") == f"{len(strict):,}"
    assert len(strict) < len(auto.pivotal)

    # the top pair is the planted one; make it the repair target
    at.slider(key="ws_purity").set_value(0.7).run()
    at.button(key="ws_use_target").click().run()
    assert not at.exception, at.exception
    a, b = demo_ws.planted["confused_pair"]
    got = ws_state(at)[ui.TARGET]
    assert got["kind"] == "confusion" and sorted(got["targets"][0]) == sorted([a, b])
    assert ws_state(at)[ui.TARGET_SOURCE] == "weakspots page"


def test_note_on_a_pivotal_image_is_stored(demo_ws):
    at = _page()
    assert not [b for b in at.selectbox if b.key == "ws_note_image"]   # drawn when the expander opens
    at.session_state["ws_notes_open"] = True
    at.run()
    key = at.selectbox(key="ws_note_image").value
    at.text_area(key=f"ws_note_text_{key}").input("the disk is squashed like an oval").run()
    at.button(key="ws_note_save").click().run()
    assert not at.exception, at.exception
    review = demo_ws.store.get_review("pivotal", key, model_version="orig")
    assert review["verdict"] == "note" and review["note"] == "the disk is squashed like an oval"
    demo_ws.store.delete_review("pivotal", key, model_version="orig")


def test_radius_reset_and_map(demo_rep):
    at = _page()
    suggested = at.slider(key="ws_radius").value
    at.slider(key="ws_radius").set_value(at.slider(key="ws_radius").min).run()
    assert at.slider(key="ws_radius").value < suggested
    at.button(key="ws_radius_reset").click().run()
    assert at.slider(key="ws_radius").value == pytest.approx(suggested)
    at.checkbox(key="ws_map").check().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 3  # counts per radius, pair heat map, 2-D map


def test_user_workspace(tiny_workspace):
    at = _page(str(tiny_workspace))
    assert at.slider(key="ws_k").max <= 20  # 21 samples: at most 20 other neighbours


@pytest.fixture
def scripted_workspace(tiny_workspace):
    """The tiny workspace with its model saved as TorchScript (no embed(): no embeddings)."""
    import importlib.util

    import torch

    root = tiny_workspace.parent
    spec = importlib.util.spec_from_file_location("tinynet_scripted", root / "tinynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build(3)
    model.load_state_dict(torch.load(root / "weights.pth"))
    torch.jit.script(model.eval()).save(str(root / "m.pt"))
    text = tiny_workspace.read_text().replace('factory = "tinynet:build"\nweights = "weights.pth"', 'torchscript = "m.pt"')
    assert 'torchscript = "m.pt"' in text
    tiny_workspace.write_text(text)
    return tiny_workspace


def test_model_without_embeddings_gets_a_clear_message(scripted_workspace, capsys):
    at = _page(str(scripted_workspace))
    assert any("gives no embeddings" in e.value for e in at.error), [e.value for e in at.error]
    from diagnostics.__main__ import main
    from workspace.cli import run_cli

    assert run_cli(main, ["weakspots", "--workspace", str(scripted_workspace)]) == 2
    assert "gives no embeddings" in capsys.readouterr().err


def test_gallery_filters_to_one_pair(demo_ws, demo_rep):
    at = _page()
    first = at.selectbox(key="ws_gallery_pair").options[1]
    assert first.split(" (")[0] in {"disk ↔ oval", "oval ↔ disk"}   # the first pair: the planted one
    at.selectbox(key="ws_gallery_pair").set_value(first).run()
    assert not at.exception, at.exception
    pair = set(demo_ws.planted["confused_pair"])
    heads = [caption_text(gallery[0]) for gallery in galleries(at)]
    assert len(heads) == 4  # a page of the gallery
    for caption in heads:  # "**PIVOTAL** A → B (..% pure)"
        a, b = caption.removeprefix("**PIVOTAL** ").split(" (")[0].split(" → ")
        assert {a, b} == pair


def _label_sent(at, key):
    """The label of a select's value as the browser shows it: re-sent whenever it changed."""
    box = at.selectbox(key=key)
    return box.proto.raw_value if box.proto.set_value else None


def test_pair_labels_follow_the_sliders(demo_ws):
    at = _page()
    before = at.selectbox(key="ws_pair").options[0]
    count = int(before.split("(")[1].split(" ")[0])
    at.slider(key="ws_radius").set_value(at.slider(key="ws_radius").min).run()
    assert not at.exception, at.exception
    pairs = at.selectbox(key="ws_pair")
    now = pairs.options[pairs.index]
    # the same pair stays picked, its count changed, and the new label is sent to the browser
    assert now.split(" (")[0] == before.split(" (")[0] and now != before, (before, now)
    assert _label_sent(at, "ws_pair") == now
    assert int(now.split("(")[1].split(" ")[0]) < count
    table = at.dataframe[0].value
    row = table[(table["a"] + " ↔ " + table["b"]) == now.split(" (")[0]]
    assert f"({int(row['count'].iloc[0])} weakspot" in now
    assert at.selectbox(key="ws_gallery_pair").options[0] == f"all pairs ({_metric(at, 'Pivotal images (weakspots)')} " \
                                                             "pivotal images)"
    at.run()   # nothing moved: nothing re-sent
    assert _label_sent(at, "ws_pair") is None


def test_pivotal_gallery_pages_and_search(demo_ws):
    at = _page()
    n = int(_metric(at, "Pivotal images (weakspots)").replace(",", ""))
    assert f"Pivotal images 1–4 of {n:,} (page 1 of {-(-n // 4)})" in [c.value for c in at.caption]
    heads = lambda: [gallery[0] for gallery in galleries(at)]
    first_page = heads()
    at.button(key="ws_gallery_next").click().run()
    assert f"Pivotal images 5–8 of {n:,} (page 2 of {-(-n // 4)})" in [c.value for c in at.caption]
    assert len(heads()) == 4 and not set(heads()) & set(first_page)
    # label filter: only pivotal images labelled ring (either split)
    at.multiselect(key="ws_search_labels").set_value(["ring"]).run()
    assert not at.exception, at.exception
    got = heads()
    assert got and all(caption_text(c).startswith("**PIVOTAL** ring → ") for c in got), got
    # an index query finds that image in either split
    split, index = caption_ref(got[0]).split(":")
    at.multiselect(key="ws_search_labels").set_value([]).run()
    at.text_input(key="ws_search_query").input(index).run()
    assert f"{split}:{index}" in [caption_ref(c) for c in heads()]
    assert all(caption_ref(c).split(":")[1] == index for c in heads())


def test_radius_counts_and_pivotal_memo_match_the_library(demo_rep):
    """The curve counted once per (k, purity) plus the slider's radius is the library's count over
    the grid with that radius added; the kept pivotal images and pairs are the library's."""
    from diagnostics.weakspots import (
        count_weakspots_by_pair, count_weakspots_by_radius, radius_grid, suggest_radius,
    )
    from pages.widgets import weakspots as W

    table = find_neighbours(demo_rep, k=20)
    box = {"rep": demo_rep, "table": table}
    span = suggest_radius(demo_rep.embeddings, k=20)
    grid = radius_grid(span, n=W.GRID_POINTS)
    for radius in (float(grid[3] + grid[4]) / 2, float(grid[5])):   # between grid points, and on one
        pivotal, pairs = W.pivotal_at(box, radius=radius, k=10, purity=0.7)
        expected = find_pivotal_images(demo_rep, table, radius=radius, k=10, purity=0.7)
        assert pivotal.equals(expected)
        assert pairs.equals(count_weakspots_by_pair(expected, demo_rep.class_names))
        got = W.radius_counts(box, span, radius=radius, found=len(pivotal), k=10, purity=0.7)
        want = count_weakspots_by_radius(demo_rep, table, np.unique(np.append(grid, radius)), k=10, purity=0.7)
        assert got["radius"].tolist() == pytest.approx(want["radius"].tolist())
        assert got["count"].tolist() == want["count"].tolist()
        assert got["count"].max() > 0
    assert W.pivotal_at(box, radius=radius, k=10, purity=0.7)[0] is pivotal   # the same setting: kept


def _pairs_table(at):
    return next(d.value for d in at.dataframe if list(d.value.columns) == ["a", "b", "count", "a_to_b", "b_to_a"])


def test_pairs_table_lists_the_top_pairs_and_all_on_demand(demo_ws, monkeypatch):
    """Past PAIR_OPTIONS pairs the table starts with the pairs with the most weakspots; the toggle lists all."""
    from pages.widgets import weakspots as W

    monkeypatch.setattr(W, "PAIR_OPTIONS", 1)
    at = _page()
    pairs = int(_metric(at, "Class pairs with weakspots").replace(",", ""))
    assert pairs >= 2
    table = _pairs_table(at)
    assert len(table) == 1
    at.toggle(key="ws_pairs_all").set_value(True).run()
    assert not at.exception, at.exception
    everything = _pairs_table(at)
    assert len(everything) == pairs and everything["count"].iloc[0] == table["count"].iloc[0]
    assert everything["count"].is_monotonic_decreasing
