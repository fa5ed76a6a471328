"""AppTest tests of the Grad-CAM page: table, gallery, review round trip, restart, targets; the views
without masks (a confused pair's mistakes, where each class looks); labels that follow the slider."""

import pytest
from streamlit.testing.v1 import AppTest

from pages import ui
from tests.pages.helpers import ws_state
from tests.conftest import REPO

KEY = "triangle|grass"


def open_page(spec: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    if spec:
        at.session_state[ui.WORKSPACE] = spec
    at.run()
    at.switch_page("pages/gradcam.py").run()
    assert not at.exception, at.exception
    return at


def frame(at: AppTest, column: str):
    """The dataframe holding ``column`` (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def captions(at: AppTest, part: str) -> list[str]:
    """Image captions containing ``part``."""
    return [c for im in at.get("image") for c in im.captions if part in c]


@pytest.fixture
def clean_review(demo_ws):
    demo_ws.store.delete_review("association", KEY, model_version="orig")
    yield demo_ws.store
    demo_ws.store.delete_review("association", KEY, model_version="orig")


def test_table_gallery_and_threshold(demo_eval):
    at = open_page()
    table = frame(at, "share_mean")
    tri = table[table["class"] == "triangle"].sort_values("rate", ascending=False)
    assert tri.iloc[0]["object"] == "grass"
    # excess is shown to one decimal without a "-0.0" (a small negative surprise is 0.0)
    import numpy as np

    excess = table["excess"].to_numpy(dtype=float)
    assert np.allclose(excess, np.round(excess, 1)) and not (np.signbit(excess) & (excess == 0)).any()
    assert at.selectbox(key="gc_assoc").options  # associations above the threshold
    at.selectbox(key="gc_assoc").set_value(KEY).run()
    assert not at.exception, at.exception
    assert len(captions(at, "share")) == 12  # the association's gallery of overlays
    count_03 = int(tri.iloc[0]["count"])
    at.slider(key="gc_threshold").set_value(0.6).run()
    table = frame(at, "share_mean")
    higher = table[(table["class"] == "triangle") & (table["object"] == "grass")].iloc[0]
    assert int(higher["count"]) < count_03


def test_review_round_trip_survives_restart_and_updates(clean_review):
    at = open_page()
    at.selectbox(key="gc_assoc").set_value(KEY).run()
    at.radio(key=f"gc_verdict:{KEY}").set_value("spurious")
    at.text_input(key=f"gc_note:{KEY}").input("grass is background, not a triangle")
    at.button(key=f"gc_save:{KEY}").click().run()
    assert not at.exception, at.exception
    row = clean_review.get_review("association", KEY, model_version="orig")
    assert (row["verdict"], row["note"]) == ("spurious", "grass is background, not a triangle")

    # a new app session (restart): the review is read back, pre-filled, listed
    at2 = open_page()
    at2.selectbox(key="gc_assoc").set_value(KEY).run()
    assert at2.radio(key=f"gc_verdict:{KEY}").value == "spurious"
    assert at2.text_input(key=f"gc_note:{KEY}").value == "grass is background, not a triangle"
    listed = frame(at2, "verdict")
    assert listed[listed["class"] == "triangle"]["verdict"].tolist() == ["spurious"]

    # use as repair target: triangle with the classes whose images most often contain grass
    at2.button(key="gc_use_target").click().run()
    targets = ws_state(at2)[ui.TARGET]
    assert targets["kind"] == "confusion" and ws_state(at2)[ui.TARGET_SOURCE] == "Grad-CAM page"
    assert targets["targets"] and all(a == "triangle" and b != "triangle" for a, b in targets["targets"])

    # a second review of the same association updates it (one row, new verdict and note)
    at2.radio(key=f"gc_verdict:{KEY}").set_value("unsure")
    at2.text_input(key=f"gc_note:{KEY}").input("check more images")
    at2.button(key=f"gc_save:{KEY}").click().run()
    rows = [r for r in clean_review.list_reviews("association", model_version="orig") if r["key"] == KEY]
    assert [(r["verdict"], r["note"]) for r in rows] == [("unsure", "check more images")]
    assert rows[0]["updated_at"] >= rows[0]["created_at"]

    # a reviewed association stays selectable (editable) when it no longer passes the threshold
    at2.slider(key="gc_threshold").set_value(0.95).run()
    table = frame(at2, "share_mean")
    assert int(table[(table["class"] == "triangle") & (table["object"] == "grass")]["count"].iloc[0]) == 0
    assert at2.selectbox(key="gc_assoc").value == KEY
    assert "triangle <- grass" in at2.selectbox(key="gc_assoc").options
    assert any(c.value.startswith("**triangle <- grass**: 0 of ") for c in at2.caption)


def test_workspace_without_masks_shows_the_mask_free_views(tiny_workspace):
    at = open_page(str(tiny_workspace))
    info = " ".join(i.value for i in at.info)
    assert "no object masks" in info and "\n" not in info.strip()  # one line; the format help is folded away
    help_text = " ".join(m.value for m in at.markdown)
    assert 'masks = "instances.json"' in help_text and "labels.json" in help_text
    # no control that needs masks ...
    assert not [s for s in at.slider if s.key == "gc_threshold"]
    assert not [s for s in at.selectbox if s.key in ("gc_assoc", "gc_target")]
    assert [t.label for t in at.tabs] == ["Mistakes of a pair", "Where it looks"]
    # ... and the views that need none: a pair (the most confused by default), its mean maps, where it looks
    names = ("cat", "dog", "fox")
    pair = at.selectbox(key="gc_pair")
    a, b = pair.value
    assert len(pair.options) == 3 and pair.options[0] == f"{names[a]} / {names[b]}"  # every pair, default first
    groups = frame(at, "group")
    assert groups["n"].sum() > 0 and set(groups.columns) >= {"centre_share", "border_share", "n_empty"}
    assert len(at.get("plotly_chart")) == 1   # only the open tab is drawn: the pair's mean maps
    # explaining one class of the pair on every image: a second pass, and the gallery says which class
    at.radio(key="gc_pair_explain").set_value(a).run()
    assert not at.exception, at.exception
    assert any(f"heatmap of {names[a]}" in m.value for m in at.markdown)
    at.session_state["gc_view"] = "Where it looks"   # the user opens the other tab
    at.run()
    assert not at.exception, at.exception
    looks = frame(at, "border_share_wrong")
    assert set(looks["class"]) <= {"cat", "dog", "fox"} and looks["n"].sum() == 9  # every eval image once
    assert len(at.get("plotly_chart")) == 2   # the shares chart and the mean maps, not the pair's
    assert not [d for d in at.dataframe if "group" in d.value.columns]


def test_torchscript_model_page_says_why(tiny_workspace):
    import importlib.util

    import torch

    root = tiny_workspace.parent
    spec = importlib.util.spec_from_file_location("tinynet_ts_page", root / "tinynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.jit.script(module.build(3)).save(str(root / "model.pt"))
    tiny_workspace.write_text(tiny_workspace.read_text().replace(
        'factory = "tinynet:build"\nweights = "weights.pth"', 'torchscript = "model.pt"'))
    at = open_page(str(tiny_workspace))
    assert any("Grad-CAM is not available" in e.value and "TorchScript" in e.value for e in at.error)


def test_interrupted_pass_offers_to_compute_again(demo_ws, demo_eval):
    from diagnostics.run_gradcam import cached_gradcam

    if cached_gradcam(demo_ws, "train") is not None:
        pytest.skip("train Grad-CAM already cached in this session")
    at = open_page()
    at.session_state["gc_cancelled"] = "train|orig|None"  # as left by a pass stopped midway
    at.selectbox(key="gc_split").set_value("train").run()
    assert not at.exception, at.exception
    assert any("stopped before it finished" in w.value for w in at.warning)
    assert at.button(key="gc_compute") is not None and not at.dataframe


def test_explain_a_chosen_class(demo_eval):
    at = open_page()
    at.selectbox(key="gc_target").set_value("triangle").run()
    assert not at.exception, at.exception
    table = frame(at, "share_mean")
    assert set(table["class"]) == {"triangle"} and (table["n_pred"] == demo_eval.n).all()


def test_association_label_follows_the_slider(demo_eval):
    at = open_page()
    at.selectbox(key="gc_assoc").set_value(KEY).run()
    table = frame(at, "share_mean")
    row = table[(table["class"] == "triangle") & (table["object"] == "grass")].iloc[0]
    label = next(c.value for c in at.caption if c.value.startswith("**triangle <- grass**"))
    assert label.startswith(f"**triangle <- grass**: {int(row['count'])} of {int(row['n_pred'])} ")
    assert "at least 30%" in label and f"{int(row['count_wrong'])} wrong" in label
    count_03 = int(row["count"])
    at.slider(key="gc_threshold").set_value(0.4).run()
    assert at.selectbox(key="gc_assoc").value == KEY
    table = frame(at, "share_mean")
    row = table[(table["class"] == "triangle") & (table["object"] == "grass")].iloc[0]
    assert 0 < int(row["count"]) < count_03
    label = next(c.value for c in at.caption if c.value.startswith("**triangle <- grass**"))
    assert label.startswith(f"**triangle <- grass**: {int(row['count'])} of ") and "at least 40%" in label
    # the select's options carry no counts, so nothing in them can go stale
    assert all(o.count(" <- ") == 1 and not any(ch.isdigit() for ch in o) for o in at.selectbox(key="gc_assoc").options)


def test_association_ranking_on_the_page(demo_eval):
    at = open_page()
    table = frame(at, "share_mean")
    assert ("triangle", "grass") in list(zip(table["class"], table["object"]))[:3]
    assert not table["trivial"].any()  # plus <- plus and the like are hidden by default
    at.checkbox(key="gc_show_trivial").check().run()
    table = frame(at, "share_mean")
    assert table["trivial"].any() and table["trivial"].tolist() == sorted(table["trivial"].tolist())  # last


def test_pair_view_defaults_to_the_repair_target(demo_ws, demo_eval):
    from tests.pages.helpers import seeded

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    for k, v in seeded("demo", target={"kind": "confusion", "targets": [["triangle", "oval"]]},
                       source="test").items():
        at.session_state[k] = v
    at.run()
    at.switch_page("pages/gradcam.py").run()
    assert not at.exception, at.exception
    at.session_state["gc_view"] = "Mistakes of a pair"   # with masks, the associations tab opens first
    at.run()
    names = demo_ws.class_names
    a, b = at.selectbox(key="gc_pair").value
    assert {names[a], names[b]} == {"triangle", "oval"}
    groups = frame(at, "group")
    mistakes = groups.set_index("group").loc["oval -> triangle"]
    # oval -> triangle mistakes are pulled by grass at the bottom: less relevance in the centre than correct ovals
    assert mistakes["n"] > 0
    assert mistakes["centre_share"] < groups.set_index("group").loc["oval -> oval", "centre_share"]
    assert len(captions(at, "p(triangle)")) > 0  # the gallery of mistakes, most confident first


def test_where_it_looks_draws_every_class_map_up_to_ten_classes(demo_eval):
    """The demo's 10 classes: every class's mean map, no picker (past 10 classes: 5 maps and a
    picker, tested at 100 classes in test_many_classes)."""
    import json

    from pages.widgets.gradcam import MEAN_MAPS_ALL

    at = open_page()
    at.session_state["gc_view"] = "Where it looks"
    at.run()
    assert not at.exception, at.exception
    means = [c for c in at.get("plotly_chart") if "gc_class_means" in c.proto.id]
    present = len(set(frame(at, "border_share_wrong")["class"]))
    assert MEAN_MAPS_ALL == 10 and present == 10
    assert len(json.loads(means[0].proto.spec)["data"]) == present
    assert not [m for m in at.multiselect if m.key == "gc_mean_classes"]
