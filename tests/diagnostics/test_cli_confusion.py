"""``python -m diagnostics confusion|wos``: JSON shape, hand-checked numbers, bad input."""

import json

import numpy as np
import pytest

from diagnostics.__main__ import main
from diagnostics.run_confusion import confusion_summary, wos_summary
from workspace.cache import InferenceOutputs
from workspace.cli import run_cli
from workspace.targets import Target


def _outputs(probs, labels, names=("a", "b", "c")):
    probs = np.asarray(probs, dtype=np.float32)
    return InferenceOutputs(logits=np.log(probs), probs=probs, preds=probs.argmax(1), labels=np.asarray(labels),
                            embeddings=None, indices=np.arange(len(probs)), class_names=tuple(names))


OUT = _outputs([[0.5, 0.4, 0.1], [0.3, 0.45, 0.25], [0.2, 0.1, 0.7], [0.45, 0.15, 0.40]], [1, 1, 2, 2])


def test_confusion_summary_by_hand():
    s = confusion_summary(OUT, top=2)
    assert s["accuracy"] == 0.5 and s["n"] == 4 and s["classes"] == ["a", "b", "c"]
    assert s["per_class_accuracy"] == {"a": None, "b": 0.5, "c": 0.5}
    # rates: b -> a 1/2, c -> a 1/2: type1conf(a,b) = type1conf(a,c) = 0.25; (b,c) = 0
    assert [(p["a"], p["b"], p["conf"], p["a_to_b"], p["b_to_a"]) for p in s["pairs"]] == [
        ("a", "b", 0.25, 0.0, 0.5), ("a", "c", 0.25, 0.0, 0.5)]
    # anchor a: |E(b,a) - E(c,a)| = 0; anchor b: E(a,b) - E(c,b) = 0.25; anchor c: E(a,c) - E(b,c) = 0.25
    assert [(t["positive"], t["negative"], t["anchor"], t["cd"], t["error_pos"], t["error_neg"])
            for t in s["triplets"]] == [("a", "c", "b", 0.25, 0.25, 0.0), ("a", "b", "c", 0.25, 0.25, 0.0)]


def test_wos_summary_by_hand():
    s = wos_summary(OUT, Target(((0, 1),), OUT.class_names), rho=0.5)
    assert s["rho"] == 0.5 and s["targets"] == [["a", "b"]]
    assert s["before"] == {"accuracy": 0.5, "target_error": 0.25}
    assert s["after"]["accuracy"] == 0.5 and (s["after"]["fixed"], s["after"]["broken"]) == (1, 1)
    c = wos_summary(OUT, Target(((0, 1),), OUT.class_names), curve=True)
    assert c["curve"][0] == {"rho": 1.0, "accuracy": 0.5, "target_error": 0.25}
    assert c["curve"][-1]["rho"] == pytest.approx(1e-4)
    # rho 0.5 fixes row 3 and breaks row 1 (accuracy 0.5, error 0.25); below 0.2 row 0 leaves a
    # (error 0, accuracy 0.5). Qualifying rhos all have accuracy 0.5 -> lowest error, then largest rho:
    # row 0 moves once 0.5 rho < 0.1, i.e. rho < 0.2; the largest grid value below 0.2 is 10^-0.7
    assert c["suggestion"]["meets"] and c["suggested_rho"] == pytest.approx(10 ** -0.7)
    assert "rho" not in c


def test_cli_confusion_on_demo(demo_ws, demo_eval, capsys):
    assert main(["confusion", "--workspace", "demo", "--top", "3", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert set(s) == {"accuracy", "n", "classes", "per_class_accuracy", "pairs", "triplets"}
    assert s["accuracy"] == pytest.approx(demo_eval.accuracy) and s["n"] == demo_eval.n
    assert sorted([s["pairs"][0]["a"], s["pairs"][0]["b"]]) == sorted(demo_ws.planted["confused_pair"])
    assert [p["conf"] for p in s["pairs"]] == sorted([p["conf"] for p in s["pairs"]], reverse=True)
    assert [t["cd"] for t in s["triplets"]] == sorted([t["cd"] for t in s["triplets"]], reverse=True)
    assert set(s["triplets"][0]) == {"positive", "negative", "anchor", "cd", "error_pos", "error_neg"}


def test_cli_wos_on_demo(demo_eval, capsys):
    assert main(["wos", "--workspace", "demo", "--targets", "disk,oval;square,triangle", "--rho", "0.1", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["targets"] == [["disk", "oval"], ["square", "triangle"]]
    assert s["before"]["accuracy"] == pytest.approx(demo_eval.accuracy)
    assert s["after"]["target_error"] < s["before"]["target_error"]
    assert main(["wos", "--workspace", "demo", "--targets", "disk,oval", "--curve", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert {"curve", "suggested_rho"} <= set(c) and len(c["curve"]) >= 40
    assert set(c["curve"][0]) == {"rho", "accuracy", "target_error"}


@pytest.mark.parametrize("argv, message", [
    (["wos", "--targets", "disk,cow", "--rho", "0.1"], "unknown class 'cow'"),
    (["wos", "--targets", "disk,oval"], "give --rho"),
    (["wos", "--targets", "disk,oval", "--rho", "2"], "--rho must be in [0, 1]"),
    (["confusion", "--version", "v9-nope"], "unknown model version"),
])
def test_cli_bad_input(demo_eval, capsys, argv, message):
    assert run_cli(main, [argv[0], "--workspace", "demo", *argv[1:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_multi_label_summaries_by_hand():
    probs = np.array([[0.9, 0.8, 0.1], [0.9, 0.2, 0.7], [0.3, 0.9, 0.2]], dtype=np.float32)
    labels = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32)
    out = InferenceOutputs(logits=probs, probs=probs, preds=probs >= 0.5, labels=labels, embeddings=None,
                           indices=np.arange(3), class_names=("a", "b", "c"), task="multi_label")
    s = confusion_summary(out, top=1)
    assert s["accuracy"] == pytest.approx(2 / 3)
    assert s["per_class_accuracy"] == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 1.0})
    # a present & b absent: rows 0, 1 -> both predicted in row 0 (1/2); b present & a absent: row 2 -> 0
    assert s["pairs"] == [{"a": "a", "b": "b", "conf": 0.25, "a_to_b": 0.5, "b_to_a": 0.0}]
    w = wos_summary(out, Target(((0, 1),), out.class_names), rho=0.6)
    assert w["before"]["target_error"] == 0.25 and w["after"]["target_error"] == 0.0
    assert w["after"]["accuracy"] == 1.0 and "map" in w["after"]
