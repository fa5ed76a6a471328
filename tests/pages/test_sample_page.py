"""AppTest tests of the sample view, the gallery links and search, and the Overview's report button."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from diagnostics.report import SECTION_IDS
from pages import ui
from tests.conftest import REPO
from tests.pages.helpers import caption_links
from workspace.core import open_workspace

TIMEOUT = 240


def open_sample(split: str, index, *, spec: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    if spec is not None:
        at.session_state[ui.WORKSPACE] = str(spec)
    at.query_params.update({"split": split, "index": str(index)})
    at.run()
    at.switch_page("pages/sample.py").run()
    assert not at.exception, at.exception
    return at


def links(at) -> list[dict]:
    """Every page link to the sample view, as its query parameters."""
    return [{k: v[0] for k, v in parse_qs(p.proto.query_string).items()} for p in at.page_link
            if p.proto.query_string and "index=" in p.proto.query_string]


@pytest.fixture
def wrong_sample(demo_ws, demo_train, demo_eval):
    """An eval image the demo model gets wrong; its reviews are removed afterwards."""
    pos = int(np.flatnonzero(~demo_eval.correct)[0])
    index = int(demo_eval.indices[pos])
    yield index, demo_eval.class_names[demo_eval.labels[pos]], demo_eval.class_names[demo_eval.preds[pos]], pos
    for kind in ("mislabel", "pivotal"):
        demo_ws.store.delete_review(kind, f"eval:{index}", model_version="orig")


def test_sample_view_of_a_demo_mistake(wrong_sample, demo_ws, demo_eval):
    index, label, pred, pos = wrong_sample
    at = open_sample("eval", index)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Label"] == label and metrics["Prediction"] == pred
    assert f"`{demo_ws.split('eval').ids[index]}`" in [c.value for c in at.caption]
    # top-k bars: the most probable class first, its probability from the cached outputs
    topk = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert topk["y"][0] == pred and topk["text"][0] == f"{demo_eval.probs[pos].max():.3f}"
    assert len(topk["y"]) == 5
    # neighbours: 8 thumbnails, each linking to its own sample view; prev / next links
    grid = [p for p in links(at) if p.get("index") != str(index)]
    assert len(grid) >= 8 and {p["workspace"] for p in grid} == {"demo"}
    labels = [p.value for p in at.page_link]
    assert f"← eval:{index - 1}" in labels or index == 0
    assert f"eval:{index + 1} →" in labels
    assert any("nearest (exact IndexFlatL2" in c.value for c in at.caption)
    assert at.query_params["split"] == "eval" and at.query_params["index"] == str(index)
    # reviews: none yet; the form stores a mislabel review for this model version
    assert "No review stored for this image yet." in [c.value for c in at.caption]
    key = f"eval:{index}"
    assert at.radio(key=f"sample_verdict:{key}").value is None  # no verdict until the user picks one
    assert at.button(key="sample_save_review").disabled
    at.radio(key=f"sample_verdict:{key}").set_value("mislabelled").run()
    assert not at.button(key="sample_save_review").disabled
    at.text_input(key=f"sample_note:{key}").set_value("looks like its prediction")
    at.button(key="sample_save_review").click().run()
    assert not at.exception, at.exception
    review = demo_ws.store.get_review("mislabel", key, model_version="orig")
    assert (review["verdict"], review["note"]) == ("mislabelled", "looks like its prediction")
    table = at.dataframe[-1].value  # the reviews table, the last on the page
    assert table[["kind", "verdict", "note"]].values.tolist() == [["mislabel", "mislabelled",
                                                                   "looks like its prediction"]]


def test_a_bad_sample_in_the_url_is_reported(demo_eval):
    at = open_sample("eval", 10**6)
    assert any("no image 1000000 in the eval split" in e.value for e in at.error)
    assert {m.label for m in at.metric} >= {"Label", "Prediction"}  # eval:0 shown instead
    assert at.query_params["index"] == "0"


def test_sample_view_never_computes_gradient_scores(tiny_workspace):
    from diagnostics.run_gradients import compute_scores

    at = open_sample("train", 3, spec=tiny_workspace)
    assert any("**not computed yet**" in c.value for c in at.caption)
    assert "Compute them on Gradient scores" in [p.value for p in at.page_link]
    ws = open_workspace(tiny_workspace)
    assert not (ws.state_dir / "artifacts" / "gradient-scores").exists()
    frame = compute_scores(ws)  # what the Gradient scores page does
    if not frame["noisy"].any():
        # the calibrated flag is conservative (nothing on this tiny model): store the table with the
        # paper's flags instead, as the page's "flag more" slider would show it
        from diagnostics.run_gradients import flag_count

        frame = flag_count(frame, int(frame["noisy_paper"].sum()))
        root = ws.state_dir / "artifacts" / "gradient-scores"
        entry = next(root.rglob("meta.json")).parent
        key, _, version = entry.name.rpartition("-v")
        ws.artifacts.save("gradient-scores", key, frame, slot=str(entry.parent.relative_to(root)),
                          version=int(version))
    noisy, clean = frame[frame["noisy"]], frame[~frame["noisy"]]
    assert len(noisy) and len(clean)  # the untrained tiny model: both kinds (checked, not assumed)
    at = open_sample("train", int(noisy["index"].iloc[0]), spec=tiny_workspace)
    assert {m.label: m.value for m in at.metric}["Noise split"] == "flagged"
    assert any("flagged likely mislabelled" in m.value for m in at.markdown)
    assert "Gradient scores" in [p.value for p in at.page_link]
    at = open_sample("train", int(clean["index"].iloc[0]), spec=tiny_workspace)
    assert {m.label: m.value for m in at.metric}["Noise split"] == "clean"


def test_find_a_sample_box(demo_eval):
    at = open_sample("eval", 0)
    at.text_input(key="sample_find_query").set_value("#42").run()
    assert not at.exception, at.exception
    found = [p for p in links(at) if p["index"] == "42"]
    assert found and found[0]["split"] == "eval"
    names = demo_eval.class_names
    at.text_input(key="sample_find_query").set_value("").run()
    at.multiselect(key="sample_find_labels").set_value([names[0]]).run()
    at.multiselect(key="sample_find_preds").set_value([names[1]]).run()
    expected = {int(i) for i in demo_eval.indices[(demo_eval.labels == 0) & (demo_eval.preds == 1)][:24]}
    shown = {int(p["index"]) for p in links(at)} - {0, 1}  # minus the sample and its next link
    assert expected - {0, 1} <= shown


def test_overview_thumbnails_link_to_the_sample_view_and_can_be_searched(demo_eval):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    first = caption_links(at)
    assert len(first) == 4 * demo_eval.num_classes
    assert all(p["split"] == "eval" and p["workspace"] == "demo" and p["version"] == "orig" for p in first)
    at.text_input(key="ov_search_query").set_value("17").run()
    assert [p["index"] for p in caption_links(at)] == ["17"]
    at.text_input(key="ov_search_query").set_value("").run()
    name = demo_eval.class_names[3]
    at.multiselect(key="ov_search_labels").set_value([name]).run()
    shown = [int(p["index"]) for p in caption_links(at)]
    assert len(shown) == 4 and all(demo_eval.labels[np.flatnonzero(demo_eval.indices == i)[0]] == 3 for i in shown)


def test_report_button_writes_the_report(demo_ws, demo_eval):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.button(key="ov_report").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == []
    path = Path(demo_ws.state_dir) / "reports" / "findings-orig.html"
    assert any(str(path) in s.value for s in at.success)
    page = path.read_text()
    assert all(f"<section id='{s}'>" in page for s in SECTION_IDS)
    assert json.loads(path.with_suffix(".json").read_text())["sections"]["pairs"]["status"] == "ok"
    assert [d.label for d in at.get("download_button")] == ["Download HTML", "Download JSON"]


def test_sample_view_of_a_multi_label_workspace(multi_label_workspace):
    at = open_sample("eval", 3, spec=multi_label_workspace)
    ws = open_workspace(multi_label_workspace)
    labels = ws.split("eval").labels[3]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Label"] == ", ".join(ws.class_names[k] for k in np.flatnonzero(labels > 0.5))
    assert any("single-label workspaces" in i.value for i in at.info)  # no neighbours, said so
    assert at.get("plotly_chart")  # the top-k bars (sigmoid probabilities)
