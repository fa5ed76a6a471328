"""Weakspots on the shapes demo and the ``weakspots`` command line."""

import contextlib
import json

import pytest

from diagnostics.__main__ import main
from diagnostics.weakspots import build_representative_set, scan_weakspots
from workspace.cli import run_cli


def test_planted_pair_has_the_most_weakspots_at_the_suggested_radius(demo_ws, demo_train, demo_eval):
    rep = build_representative_set(demo_train, demo_eval)
    scan = scan_weakspots(rep, radius="auto")
    assert scan.radius == pytest.approx(scan.suggestion.suggested)
    assert scan.suggestion.low < scan.radius < scan.suggestion.high
    top, runner_up = scan.pairs.iloc[0], scan.pairs.iloc[1]
    assert {top["a"], top["b"]} == set(demo_ws.planted["confused_pair"])
    assert top["count"] >= 3 * runner_up["count"], scan.pairs.head()
    # every pivotal image is misclassified, and its purity clears the threshold
    assert (scan.pivotal["label"] != scan.pivotal["pred"]).all()
    assert (scan.pivotal["purity"] >= 0.7).all()
    assert scan.queries == int((demo_train.preds != demo_train.labels).sum() + (demo_eval.preds != demo_eval.labels).sum())


def test_cli_json(demo_train, demo_eval, capsys):
    assert run_cli(main, ["weakspots", "--workspace", "demo", "--radius", "auto", "--k", "10",
                          "--purity", "0.8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["radius", "k", "purity", "pivotal", "pairs", "counts_by_radius"]
    assert out["k"] == 10 and out["purity"] == 0.8 and out["radius"] > 0
    assert set(out["pivotal"][0]) == {"index", "split", "label", "pred", "purity"}
    assert all(p["purity"] >= 0.8 and p["label"] != p["pred"] for p in out["pivotal"])
    assert sum(p["count"] for p in out["pairs"]) == len(out["pivotal"])
    assert {r["radius"] for r in out["counts_by_radius"]} >= {out["radius"]}
    at_d = next(r["count"] for r in out["counts_by_radius"] if r["radius"] == out["radius"])
    assert at_d == len(out["pivotal"])


@pytest.mark.parametrize("argv, message", [
    (["--radius", "wide"], "--radius must be a positive number or 'auto'"),
    (["--purity", "1.5"], "--purity must lie in (0, 1]"),
    (["--k", "0"], "--k must be at least 1"),
    (["--version", "nope"], "unknown model version 'nope'"),
])
def test_cli_bad_input(argv, message, demo_ws, capsys):
    with pytest.raises(SystemExit) if argv[0] == "--radius" else contextlib.nullcontext():
        assert run_cli(main, ["weakspots", "--workspace", "demo", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_on_a_user_workspace(tiny_workspace, capsys):
    assert run_cli(main, ["weakspots", "--workspace", str(tiny_workspace), "--radius", "1.0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["radius"] == 1.0 and out["k"] == 20
    assert all(p["split"] in ("train", "eval") for p in out["pivotal"])
