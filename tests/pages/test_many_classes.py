"""Every page on a synthetic 300-class workspace (20 eval images per class): no exception, paged
galleries, readable heat maps (a few classes annotated, the rest in an overview), searches."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pages import ui
from tests.conftest import REPO
from tests.pages.helpers import image_count
from tests.pages.many_classes import make_many_class_workspace

K, EVAL_PER_CLASS = 300, 20
PAGES = ["confusion", "triplets", "wos", "gradcam", "gradients", "weakspots", "repair", "sample", "overview"]
MOST_THUMBNAILS = 64   # the largest page size of any gallery


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    return make_many_class_workspace(tmp_path_factory.mktemp("many"), classes=K, eval_per_class=EVAL_PER_CLASS,
                                     train_per_class=5)


def _app(many) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.session_state[ui.WORKSPACE] = str(many)
    at.run()
    assert not at.exception, at.exception
    return at


def _heatmap_classes(at, key):
    """The x labels of a plotly chart (by its key's element id)."""
    charts = [c for c in at.get("plotly_chart") if key in c.proto.id]
    return json.loads(charts[0].proto.spec)["data"][0]["x"] if charts else None


def test_every_page_renders_with_paged_galleries(many):
    at = _app(many)
    # Overview: 4 images per class would be 1,200 thumbnails; one page of 64 is drawn
    assert image_count(at) == MOST_THUMBNAILS
    assert f"Images 1–64 of {4 * K:,} (page 1 of {-(-4 * K // 64)})" in [c.value for c in at.caption]
    for name in PAGES:
        at.switch_page(f"pages/{name}.py").run()
        assert not at.exception, (name, at.exception)
        assert at.title, name
        assert image_count(at) <= MOST_THUMBNAILS, (name, image_count(at))
        assert not [e.value for e in at.error], (name, [e.value for e in at.error])


def test_confusion_view_top_classes_search_and_overview(many):
    at = _app(many)
    at.switch_page("pages/confusion.py").run()
    shown = _heatmap_classes(at, "conf_heatmap")
    # the 20 classes of the top pairs: the planted pair first, then siblings (2c, 2c + 1)
    assert len(shown) == 20 and {"n0000", "n0001"} <= set(shown)
    overview = [c for c in at.get("plotly_chart") if "conf_overview_chart" in c.proto.id]
    data = json.loads(overview[0].proto.spec)["data"][0]
    assert len(data["x"]) == K and "text" not in data and data["z"]["dtype"] == "u1"
    at.multiselect(key="conf_classes").set_value([299]).run()
    assert "n0299" in _heatmap_classes(at, "conf_heatmap") and len(_heatmap_classes(at, "conf_heatmap")) == 21
    at.slider(key="conf_top_classes").set_value(0).run()
    assert _heatmap_classes(at, "conf_heatmap") == ["n0299"]
    # past HEATMAP_LIMIT classes the pair galleries wait in a closed expander; opened, they are
    # paged: 16 per direction at most
    assert image_count(at) == 0
    at.session_state["conf_mistakes_open"] = True
    at.run()
    assert not at.exception, at.exception
    assert 0 < image_count(at) <= 32


def test_triplets_group_the_planted_pair_and_pages_stay_small(many):
    at = _app(many)
    at.switch_page("pages/triplets.py").run()
    table = at.dataframe[0].value
    assert table["group"].iloc[0] == "n0000 / n0001" and table["kind"].iloc[0] == "pair"
    # one pair explains 2 * (K - 2) triplets, less the few classes confused with its anchors
    assert table["explained"].iloc[0] > 2 * (K - 2) - 20
    assert len(table) == 10 and table["group"].is_unique


def test_weakspots_pair_heat_map_shows_few_classes_and_an_overview(many):
    at = _app(many)
    at.switch_page("pages/weakspots.py").run()
    assert len(_heatmap_classes(at, "ws_pair_heatmap")) <= 40
    at.toggle(key="ws_pair_overview").set_value(True).run()
    assert not at.exception, at.exception
    data = json.loads([c for c in at.get("plotly_chart") if "ws_pair_overview_chart" in c.proto.id][0].proto.spec)
    assert len(data["data"][0]["x"]) == K and data["data"][0]["z"]["dtype"] == "u1"
    at.checkbox(key="ws_map").check().run()
    legend = json.loads([c for c in at.get("plotly_chart") if "ws_map_chart" in c.proto.id][0].proto.spec)
    assert [t["name"] for t in legend["data"]][:1] == ["samples"]   # one trace, not 300


def test_overview_lists_precision_recall_and_f1(many):
    from diagnostics.confusion import per_class_metrics
    from workspace.core import open_workspace

    at = _app(many)
    assert not [d for d in at.dataframe if "f1" in d.value.columns]   # drawn when the expander opens
    at.session_state["ov_per_class_open"] = True
    at.run()
    out = open_workspace(many).outputs("eval")
    expected = per_class_metrics(out.labels, out.preds, out.class_names)
    got = next(d.value for d in at.dataframe if "f1" in d.value.columns)
    assert len(got) == K and np.allclose(got["f1"], expected["f1"], equal_nan=True)
    assert got["support"].tolist() == [EVAL_PER_CLASS] * K


def test_outputs_are_the_stored_heads_outputs_so_gradient_scores_take_the_closed_form(many):
    import torch

    from diagnostics import run_gradients
    from workspace.core import open_workspace

    ws = open_workspace(many)
    model = ws.model()
    for split in ("eval", "train"):
        out = ws.outputs(split)
        with torch.no_grad():
            logits = model.head(torch.from_numpy(np.array(out.embeddings))).numpy()
        assert np.allclose(logits, out.logits, atol=1e-5)
        assert np.allclose(out.probs, torch.softmax(torch.from_numpy(logits), 1).numpy(), atol=1e-6)
        assert (out.embeddings >= 0).all()   # the head's input is a ReLU output
        assert np.array_equal(out.logits.argmax(1), out.preds)
        # the planted structure survives: the sibling pair (0, 1) is the most confused
        assert ((out.labels == 0) & (out.preds == 1)).sum() > 0.3 * (out.labels == 0).sum()
        assert run_gradients._closed_form(ws, model, out)


def test_grad_cam_of_many_images_runs_as_a_job_with_progress_and_fills_in(tmp_path, monkeypatch):
    import time

    from diagnostics import run_gradcam
    from workspace import jobs
    from workspace.core import open_workspace

    # its own workspace (the other tests compute Grad-CAM in the page): 3,000 eval images, a job past 1,000
    many = make_many_class_workspace(tmp_path, classes=100, eval_per_class=30, train_per_class=2)
    monkeypatch.setattr(run_gradcam, "BACKGROUND_IMAGES", 1000)
    at = _app(many)
    at.switch_page("pages/gradcam.py").run()
    assert not at.exception, at.exception
    ws = open_workspace(many)
    job = run_gradcam.gradcam_job(ws, "eval", "orig")
    assert job is not None and job["kind"] == run_gradcam.GRADCAM_KIND
    if job["status"] in jobs.ACTIVE:   # the page shows the job, not the views that need it
        assert "Grad-CAM of the predicted class" in at.get("progress")[0].proto.text
        assert at.button(key="gc_job_cancel") is not None and not at.tabs
    deadline = time.monotonic() + 300
    while jobs.get_job(ws, job["id"])["status"] in jobs.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jobs.get_job(ws, job["id"])["status"] == "done"
    assert run_gradcam.cached_gradcam(ws, "eval", "orig").n == 100 * 30
    at.run()
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == ["Mistakes of a pair", "Where it looks"]
    at.session_state["gc_view"] = "Where it looks"
    at.run()
    # 100 classes: the chart keeps the 60 that look most at the border, 5 mean maps at first (one row)
    from pages.widgets.gradcam import MEAN_MAPS

    looks = [c for c in at.get("plotly_chart") if "gc_looks_chart" in c.proto.id]
    assert len(json.loads(looks[0].proto.spec)["data"][0]["x"]) == 60
    assert MEAN_MAPS == 5 and len(at.multiselect(key="gc_mean_classes").value) == MEAN_MAPS
    means = [c for c in at.get("plotly_chart") if "gc_class_means" in c.proto.id]
    assert len(json.loads(means[0].proto.spec)["data"]) == MEAN_MAPS
