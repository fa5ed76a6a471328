"""AppTest tests of the gradient-score page (tiny workspace; one demo run for the planted metrics)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from diagnostics import gce, run_gradients
from pages import ui
from tests.conftest import REPO

TIMEOUT = 180


def open_page(spec) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state[ui.WORKSPACE] = str(spec)
    at.run()
    at.switch_page("pages/gradients.py").run()
    assert not at.exception, at.exception
    return at


def test_page_shows_scores_histograms_galleries_and_exports(tiny_workspace):
    at = open_page(tiny_workspace)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Train samples scored"] == "12"
    assert "Minority ROC AUC of p_s" not in metrics  # no ground truth outside the demo
    assert len(at.get("plotly_chart")) == 6
    assert len(at.get("download_button")) == 2
    assert at.selectbox(key="grad_color").options == ["correct / wrong prediction", "noise flag"]
    at.selectbox(key="grad_class").set_value("dog").run()
    assert not at.exception, at.exception


def test_review_buttons_store_a_mislabel_review(tiny_workspace):
    from workspace.core import open_workspace

    at = open_page(tiny_workspace)
    key = next(b.key for b in at.button if b.key and b.key.startswith("rev_hi_mis_"))
    index = int(key.rsplit("_", 1)[1])
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    review = open_workspace(tiny_workspace).store.get_review("mislabel", f"train:{index}", model_version="orig")
    assert review["verdict"] == "mislabelled"
    at.button(key=f"rev_hi_not_{index}").click().run()
    review = open_workspace(tiny_workspace).store.get_review("mislabel", f"train:{index}", model_version="orig")
    assert review["verdict"] == "not mislabelled"


def test_all_parameters_wait_for_a_click(tiny_workspace):
    at = open_page(tiny_workspace)
    at.radio(key="grad_params").set_value("all").run()
    assert not at.exception and not at.metric
    at.button(key="grad_all_go").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Train samples scored"] == "12"


def test_gce_source_starts_the_background_job(tiny_workspace, monkeypatch):
    started = []
    monkeypatch.setattr(run_gradients, "start_gce_job",
                        lambda ws, config=gce.GCEConfig(): started.append(ws.name) or 1)
    at = open_page(tiny_workspace)
    at.radio(key="grad_source").set_value(at.radio(key="grad_source").options[1]).run()
    assert not at.exception and not at.metric  # nothing to score until the model exists
    at.button(key="gce_start").click().run()
    assert started == ["tiny"]


def test_demo_page_shows_planted_recovery(demo_train):
    at = open_page("demo")
    metrics = {m.label: m.value for m in at.metric}
    assert "Minority ROC AUC of p_s" in metrics and "Flipped labels flagged" in metrics
    assert float(metrics["Flipped labels flagged"].rstrip("%")) >= 70
    assert "minority / majority (demo truth)" in at.selectbox(key="grad_color").options
