"""The findings report (HTML + JSON twin, stored results only) and the CI gate."""

import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from diagnostics.__main__ import main
from diagnostics.report import (
    EMPTY, NOT_COMPUTED, OK, SECTION_IDS, STATUSES, Section, render_html, render_json,
)
from diagnostics.run_report import NotComputed, collect_sections, evaluate_gate, stored_only, write_report
from workspace.cache import InferenceOutputs
from workspace.cli import run_cli
from workspace.core import open_workspace

EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)
PLOTLY_BUNDLE = "* plotly.js v"  # the banner at the top of the inlined plotly.js


def _offline(page: str) -> None:
    """Opens without a network: no script, stylesheet or image is fetched from a URL."""
    assert not EXTERNAL_SCRIPT.search(page)
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert not re.search(r"<img[^>]+src\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)


# ---- pure assembly --------------------------------------------------------------------------
def _sections():
    table = pd.DataFrame({"a": ["cat"], "b": ["dog <b>"], "conf": [0.125], "gap": [np.nan]})
    fig1 = go.Figure(go.Bar(x=["x"], y=[1]))
    fig2 = go.Figure(go.Bar(x=["y"], y=[2]))
    return [Section("pairs", "Most confused pairs", OK, "note <script>alert(1)</script>", tables=[("top", table)],
                    figures=[fig1, fig2]),
            Section("summary", "Summary", OK, data={"eval accuracy": 0.5, "missing": float("nan")}),
            *[Section(s, s.title(), NOT_COMPUTED, "Not computed yet.") for s in SECTION_IDS
              if s not in ("pairs", "summary")]]


def test_render_html_has_every_section_in_order_and_embeds_plotly_once():
    page = render_html("Findings", {"workspace": "demo"}, _sections())
    positions = [page.index(f"<section id='{s}'>") for s in SECTION_IDS]
    assert positions == sorted(positions)
    assert page.count(PLOTLY_BUNDLE) == 1           # inline, once, although there are two figures
    assert page.count("Plotly.newPlot") == 2
    assert page.count("not computed yet</span>") == len(SECTION_IDS) - 2
    _offline(page)
    # user text is escaped: a note cannot inject a script
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "dog &lt;b&gt;" in page and "<caption>top</caption>" in page


def test_render_json_twin():
    data = render_json("Findings", {"workspace": "demo"}, _sections())
    assert list(data["sections"]) == list(SECTION_IDS)
    pairs = data["sections"]["pairs"]
    assert pairs["tables"] == [{"caption": "top", "rows": [{"a": "cat", "b": "dog <b>", "conf": 0.125, "gap": None}]}]
    assert data["sections"]["summary"]["data"] == {"eval accuracy": 0.5, "missing": None}
    json.dumps(data, allow_nan=False)  # strict JSON


def test_sections_are_validated():
    with pytest.raises(ValueError, match="valid: summary, pairs"):
        Section("nope", "x")
    with pytest.raises(ValueError, match="not computed yet"):
        Section("pairs", "x", status="missing")
    with pytest.raises(ValueError, match="twice"):
        render_json("t", {}, [Section("pairs", "a"), Section("pairs", "b")])


# ---- the gate, by hand ------------------------------------------------------------------------
def _outputs(labels, preds, names=("a", "b", "c")):
    labels, preds = np.asarray(labels), np.asarray(preds)
    probs = np.eye(len(names), dtype=np.float32)[preds]
    return InferenceOutputs(logits=probs, probs=probs, preds=preds, labels=labels, embeddings=None,
                            indices=np.arange(len(labels)), class_names=tuple(names))


# class a: 1 of 4 predicted b; b and c always right. P(b|a) = 1/4, P(a|b) = 0: type1conf(a, b) = 1/8.
# cd: anchor a: |E(b,a) - E(c,a)| = 1/8 (positive b, negative c); anchor b: |E(a,b) - E(c,b)| = 1/8
# (positive a, negative c); anchor c: 0. Accuracy 11/12.
GATE_OUT = _outputs([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])


def test_gate_by_hand():
    r = evaluate_gate(GATE_OUT, max_pair_conf=0.1, min_accuracy=0.95, max_cd=0.1)
    assert not r["passed"] and r["accuracy"] == pytest.approx(11 / 12) and r["n"] == 12
    v = r["violations"]
    assert v["accuracy"] == {"accuracy": pytest.approx(11 / 12), "min_accuracy": 0.95}
    assert v["pairs"] == [{"a": "a", "b": "b", "conf": 0.125}] and v["pairs_over"] == 1
    assert sorted((t["positive"], t["negative"], t["anchor"]) for t in v["triplets"]) == [("a", "c", "b"),
                                                                                          ("b", "c", "a")]
    assert all(t["cd"] == 0.125 for t in v["triplets"]) and v["triplets_over"] == 2
    assert r["worst_pair_conf"] == 0.125 and r["worst_cd"] == 0.125


def test_gate_bounds_are_strict_and_optional():
    r = evaluate_gate(GATE_OUT, max_pair_conf=0.125, min_accuracy=11 / 12, max_cd=0.125)
    assert r["passed"] and r["violations"]["pairs"] == [] and r["violations"]["accuracy"] is None
    assert evaluate_gate(GATE_OUT, min_accuracy=0.9)["passed"]          # only the accuracy bound is checked
    assert not evaluate_gate(GATE_OUT, max_cd=0.1)["passed"]


def test_gate_lists_at_most_limit_triplets():
    r = evaluate_gate(GATE_OUT, max_cd=0.0, limit=1)
    assert len(r["violations"]["triplets"]) == 1 and r["violations"]["triplets_over"] == ">=1"


# ---- the commands on the demo -----------------------------------------------------------------
def test_gate_cli_on_demo_tight_and_loose(demo_ws, demo_eval, capsys):
    pair = sorted(demo_ws.planted["confused_pair"])
    assert run_cli(main, ["gate", "--workspace", "demo", "--max-pair-conf", "0.10", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False and "_exit_code" not in out
    assert sorted([out["violations"]["pairs"][0]["a"], out["violations"]["pairs"][0]["b"]]) == pair
    assert all(p["conf"] > 0.10 for p in out["violations"]["pairs"])
    assert run_cli(main, ["gate", "--workspace", "demo", "--max-pair-conf", "0.9", "--min-accuracy", "0.5",
                          "--max-cd", "0.9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is True and out["accuracy"] == pytest.approx(demo_eval.accuracy)
    assert run_cli(main, ["gate", "--workspace", "demo", "--min-accuracy", f"{demo_eval.accuracy + 0.01:.4f}"]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    ([], "give at least one bound"),
    (["--max-pair-conf", "1.5"], "--max-pair-conf must be in [0, 1]"),
    (["--max-cd", "nan"], "not a finite number"),
    (["--min-accuracy", "0.5", "--version", "v99"], "unknown model version"),
])
def test_gate_cli_bad_input_exits_2(args, message, demo_ws, capsys):
    try:
        code = run_cli(main, ["gate", "--workspace", "demo", *args])
    except SystemExit as exc:  # argparse refuses the value itself
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_report_cli_on_demo(demo_ws, demo_eval, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert run_cli(main, ["report", "--workspace", "demo", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    page = out.read_text()
    twin = json.loads((tmp_path / "report.json").read_text())
    for s in SECTION_IDS:
        assert f"<section id='{s}'>" in page
        assert twin["sections"][s]["status"] in STATUSES
    assert printed["sections"] == {s: twin["sections"][s]["status"] for s in SECTION_IDS}
    _offline(page)
    assert page.count(PLOTLY_BUNDLE) == 1
    # the eval outputs are cached: the rankings are there, the planted pair first
    pairs = twin["sections"]["pairs"]
    assert pairs["status"] == OK
    top = pairs["tables"][0]["rows"][0]
    assert sorted([top["a"], top["b"]]) == sorted(demo_ws.planted["confused_pair"])
    assert top["type1conf"] == pytest.approx(printed["report"]["sections"]["pairs"]["tables"][0]["rows"][0]["type1conf"])
    assert twin["sections"]["triplets"]["status"] == OK
    # a second report does not overwrite the first unless asked
    assert run_cli(main, ["report", "--workspace", "demo", "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert run_cli(main, ["report", "--workspace", "demo", "--out", str(out), "--overwrite"]) == 0


# ---- stored results only ------------------------------------------------------------------------
def test_report_of_a_fresh_workspace_computes_nothing(tiny_workspace, tmp_path):
    ws = open_workspace(tiny_workspace)
    before = sorted(p.relative_to(ws.state_dir) for p in ws.state_dir.rglob("*") if p.is_file()
                    and "artifacts" in p.parts)
    written = write_report(ws, tmp_path / "r.html")
    after = sorted(p.relative_to(ws.state_dir) for p in ws.state_dir.rglob("*") if p.is_file()
                   and "artifacts" in p.parts)
    assert before == after == []                     # no outputs, scores or neighbours were computed
    assert written["sections"] == {"summary": NOT_COMPUTED, "pairs": NOT_COMPUTED, "triplets": NOT_COMPUTED,
                                   "associations": EMPTY, "flagged": NOT_COMPUTED, "weakspots": NOT_COMPUTED,
                                   "repairs": EMPTY}
    page = (tmp_path / "r.html").read_text()
    assert page.count("not computed yet</span>") == 5 and "python -m diagnostics confusion" in page


def test_report_reads_what_was_computed(tiny_workspace):
    from diagnostics.run_gradients import compute_scores
    from diagnostics.run_weakspots import neighbour_data

    ws = open_workspace(tiny_workspace)
    ws.outputs("eval")
    ws.store.upsert_review("mislabel", "train:2", model_version="orig", verdict="mislabelled", note="a dog")
    ws.store.upsert_review("association", "cat|grass", model_version="orig", verdict="spurious")
    _, sections = collect_sections(ws)
    status = {s.id: s for s in sections}
    assert status["pairs"].status in (OK, EMPTY) and status["weakspots"].status == NOT_COMPUTED
    flagged = status["flagged"]
    assert flagged.status == OK
    rows = flagged.tables[0][1]
    assert rows["sample"].tolist() == ["train:2"] and rows["verdict"].tolist() == ["mislabelled"]
    assert rows["id"].iloc[0] == ws.split("train").ids[2]
    assert status["associations"].tables[0][1][["class", "object", "verdict"]].values.tolist() == [
        ["cat", "grass", "spurious"]]
    frame = compute_scores(ws)                       # the Gradient scores page's default table
    neighbour_data(ws)                               # the Weakspots page's stored search
    _, sections = collect_sections(ws)
    status = {s.id: s for s in sections}
    assert status["weakspots"].status in (OK, EMPTY)
    assert status["flagged"].data["flagged by the noise split"] == int(frame["noisy"].sum())
    assert status["summary"].status == OK


def test_stored_only_reads_and_never_computes(tiny_workspace):
    from diagnostics.run_gradients import compute_scores
    from diagnostics.run_weakspots import neighbour_data

    ws = open_workspace(tiny_workspace)
    view = stored_only(ws)
    with pytest.raises(NotComputed):
        view.outputs("train")
    with pytest.raises(NotComputed):
        compute_scores(view)
    with pytest.raises(NotComputed):
        neighbour_data(view)
    with pytest.raises(NotComputed):
        view.model()
    assert not (ws.state_dir / "artifacts").exists() or not any((ws.state_dir / "artifacts").rglob("meta.json"))
    frame = compute_scores(ws)
    stored = compute_scores(view)
    pd.testing.assert_frame_equal(stored, frame)
    assert stored_only(view) is view and view.class_names == ws.class_names


def test_report_and_gate_on_a_multi_label_workspace(multi_label_workspace):
    from diagnostics.report import NOT_APPLICABLE

    ws = open_workspace(multi_label_workspace)
    out = ws.outputs("eval")
    _, sections = collect_sections(ws)
    status = {s.id: s for s in sections}
    assert status["pairs"].status in (OK, EMPTY) and "type2conf" in status["pairs"].tables[0][1].columns
    assert status["weakspots"].status == NOT_APPLICABLE and status["flagged"].status == NOT_APPLICABLE
    r = evaluate_gate(out, max_pair_conf=0.0)
    worst = r["worst_pair_conf"]
    assert r["passed"] == (worst == 0.0) and r["accuracy"] == pytest.approx(float(out.accuracy))
    assert evaluate_gate(out, max_pair_conf=worst)["passed"]
