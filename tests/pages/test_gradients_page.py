"""AppTest tests of the gradient-score page (tiny workspace; one demo run for the planted metrics)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from diagnostics import gce, run_gradients
from pages import ui
from pages.widgets import gradients as W
from tests.conftest import REPO
from workspace.core import open_workspace

TIMEOUT = 180


def open_page(spec) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state[ui.WORKSPACE] = str(spec)
    at.run()
    at.switch_page("pages/gradients.py").run()
    assert not at.exception, at.exception
    return at


def captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


def flag_slider(at):
    return next(s for s in at.slider if s.label.startswith("Samples flagged as likely mislabelled"))


def test_page_shows_scores_histograms_galleries_table_and_exports(tiny_workspace):
    at = open_page(tiny_workspace)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Train samples scored"] == "12"
    assert metrics["Effective sample share of p_s"].endswith("%")
    assert "Minority ROC AUC of p_s" not in metrics  # no ground truth outside the demo
    assert not at.warning  # lambda 0 by default: p_s does not collapse
    # one histogram at a time, the score picked above it
    assert len(at.get("plotly_chart")) == 1 and "grad_hist_M" in at.get("plotly_chart")[0].proto.id
    at.segmented_control(key="grad_score").set_value("comp_loss").run()
    assert len(at.get("plotly_chart")) == 1 and "grad_hist_comp_loss" in at.get("plotly_chart")[0].proto.id
    assert len(at.get("download_button")) == 2
    assert at.dataframe and list(at.dataframe[0].value.columns) == run_gradients.EXPORT_COLUMNS
    table = at.dataframe[0].value   # classes by name, as in the galleries (the CSV keeps indices)
    assert set(table["label"]) <= {"cat", "dog", "fox"} and set(table["pred"]) <= {"cat", "dog", "fox"}
    at.session_state["grad_gallery"] = W.HIGHEST   # a gallery with images (the tiny model may flag none)
    at.run()
    text = captions(at)
    assert all(f"**{name}**: {meaning}" in text for name, meaning in W.GLOSSARY.items())  # what each score means
    assert "p(label)" in text and "entropy" in text and "CE " in text  # the evidence under the images
    assert "table above" in text  # the export text points at a table that is there
    assert at.selectbox(key="grad_color").options == ["correct / wrong prediction", "mislabelled flag"]
    at.selectbox(key="grad_class").set_value("dog").run()
    assert not at.exception, at.exception


def test_flag_slider_tightens_and_reports_share_and_threshold(tiny_workspace):
    at = open_page(tiny_workspace)
    frame = run_gradients.compute_scores(open_workspace(tiny_workspace))
    slider = flag_slider(at)
    assert slider.value == int(frame["noisy"].sum()) and slider.max == int(frame["noisy_paper"].sum())
    assert f"(**{frame.attrs['noisy_share']:.2%}**)" in captions(at)
    slider.set_value(1).run()
    assert not at.exception, at.exception
    text = captions(at)
    assert "Flagged **1** of 12 samples (**8.33%**)" in text and "held-out eval split" in text
    tabs = [t.label for t in at.tabs]
    assert "Flagged likely mislabelled (1)" in tabs
    assert sum(1 for b in at.button if b.key and b.key.startswith("rev_noisy_mis_")) == 1


def test_review_buttons_store_a_mislabel_review(tiny_workspace):
    at = open_page(tiny_workspace)
    at.session_state["grad_gallery"] = W.HIGHEST   # only the open gallery tab is drawn
    at.run()
    key = next(b.key for b in at.button if b.key and b.key.startswith("rev_hi_mis_"))
    index = int(key.rsplit("_", 1)[1])
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    review = open_workspace(tiny_workspace).store.get_review("mislabel", f"train:{index}", model_version="orig")
    assert review["verdict"] == "mislabelled"
    at.button(key=f"rev_hi_not_{index}").click().run()
    review = open_workspace(tiny_workspace).store.get_review("mislabel", f"train:{index}", model_version="orig")
    assert review["verdict"] == "not mislabelled"


def test_every_gallery_offers_the_mislabel_review(tiny_workspace):
    at = open_page(tiny_workspace)
    tags = set()
    for tab in [t.label for t in at.tabs if t.label.startswith(("Flagged", "Highest", "Lowest", "Paper"))]:
        at.session_state["grad_gallery"] = tab   # one gallery drawn at a time: open each
        at.run()
        assert not at.exception, at.exception
        tags |= {b.key.split("_")[1] for b in at.button if b.key and b.key.startswith("rev_")}
    assert {"hi", "lo"} <= tags  # the flagged galleries are filled when the tiny model flags something
    assert tags <= {"noisy", "hi", "lo", "paper"}


def test_all_parameters_wait_for_a_click(tiny_workspace):
    at = open_page(tiny_workspace)
    at.radio(key="grad_params").set_value("all").run()
    assert not at.exception and not at.metric
    at.button(key="grad_all_go").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Train samples scored"] == "12"


def test_gce_is_offered_first_and_the_loaded_model_scores_meanwhile(tiny_workspace, monkeypatch):
    started = []
    monkeypatch.setattr(run_gradients, "start_gce_job",
                        lambda ws, config=gce.GCEConfig(): started.append(ws.name) or 1)
    at = open_page(tiny_workspace)
    assert at.radio(key="grad_source").options == [W.GCE, W.LOADED]
    assert at.radio(key="grad_source").value == W.GCE
    assert any("Until the GCE biased model is trained" in i.value for i in at.info)
    assert {m.label: m.value for m in at.metric}["Train samples scored"] == "12"  # loaded-model scores
    assert "Gradients of the model version orig" in captions(at)
    at.button(key="gce_start").click().run()
    assert started == ["tiny"]


def test_demo_page_shows_planted_recovery(demo_train):
    at = open_page("demo")
    metrics = {m.label: m.value for m in at.metric}
    assert "Minority ROC AUC of p_s" in metrics
    # the default flag is conservative (measured 46.7 %, 2 clean samples); the paper's rule finds 96.7 %
    assert float(metrics["Flipped labels flagged (this count)"].rstrip("%")) >= 40
    assert float(metrics["Flipped labels flagged (paper's rule)"].rstrip("%")) >= 90
    flag_slider(at).set_value(len(open_workspace("demo").planted["flipped_labels"])).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Flipped labels flagged (this count)"].rstrip("%")) >= 70  # measured 88.3 % at 240
    assert "minority / majority (demo truth)" in at.selectbox(key="grad_color").options
    assert not at.warning  # the default lambda keeps p_s usable on the demo (effective share 17 %)
    at.number_input(key="grad_lam").set_value(1.0).run()
    assert not at.exception, at.exception
    share = next(m.value for m in at.metric if m.label == "Effective sample share of p_s")
    assert float(share.rstrip("%")) < 1 and "p_s is concentrated on very few samples" in at.warning[0].value


def test_a_long_score_table_is_drawn_when_opened(tiny_workspace, monkeypatch):
    """Past LAZY_ROWS rows the table waits in a closed expander that names its row count."""
    monkeypatch.setattr(W, "LAZY_ROWS", 5)   # the tiny workspace scores 12 train samples
    at = open_page(tiny_workspace)
    assert not at.dataframe
    assert [e.label for e in at.expander if "rows" in e.label] == ["12 rows (all classes)"]
    at.session_state["grad_table_open"] = True
    at.run()
    assert not at.exception, at.exception
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 12
