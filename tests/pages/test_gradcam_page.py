"""AppTest tests of the Grad-CAM page: table, gallery, review round trip, restart, targets."""

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
    assert at.selectbox(key="gc_assoc").options  # associations above the threshold
    at.selectbox(key="gc_assoc").set_value(KEY).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 12  # the gallery of overlays
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
    assert "triangle <- grass  (rate 0.000)" in at2.selectbox(key="gc_assoc").options


def test_workspace_without_masks_says_how_to_add_them(tiny_workspace):
    at = open_page(str(tiny_workspace))
    info = " ".join(i.value for i in at.info)
    assert "no object masks" in info and 'masks = "instances.json"' in info and "labels.json" in info


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
