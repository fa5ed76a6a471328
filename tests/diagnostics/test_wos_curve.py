"""The w-os what-if metrics, curve and suggested rho against hand-worked numbers."""

import numpy as np
import pandas as pd
import pytest

from diagnostics.wos import WosWhatIf, apply_wos, mean_average_precision, rho_grid, suggest_rho, wos_curve, wos_metrics

#             pred  label
PROBS = np.array([
    [0.50, 0.40, 0.10],   # 0     1   wrong; rho 0.1 -> class 2 (still wrong)
    [0.30, 0.45, 0.25],   # 1     1   right; rho 0.5 -> class 2 (broken)
    [0.20, 0.10, 0.70],   # 2     2   untouched
    [0.45, 0.15, 0.40],   # 0     2   wrong; rho 0.5 -> 0.225 < 0.40 -> class 2 (fixed)
])
LABELS = np.array([1, 1, 2, 2])


def test_metrics_by_hand():
    w = WosWhatIf(PROBS, LABELS, [(0, 1)])
    assert w.base.accuracy == 0.5
    # pair (0, 1): P(pred 1 | label 0) undefined (no class-0 samples) = 0; P(pred 0 | label 1) = 1/2
    assert w.base.target_error == pytest.approx(0.25)
    r = w.evaluate(0.5)
    assert r.preds.tolist() == [0, 2, 2, 2]
    assert r.counts.tolist() == [[0, 0, 0], [1, 0, 1], [0, 0, 2]]
    assert r.accuracy == 0.5 and (r.fixed, r.broken) == (1, 1)
    assert sorted(r.changed.tolist()) == [1, 3]
    assert r.target_error == pytest.approx(0.25)
    r = w.evaluate(0.1)
    assert r.preds.tolist() == [2, 2, 2, 2] and r.target_error == 0.0 and r.accuracy == 0.5
    changes = w.changes(r, ["a", "b", "c"])
    assert changes.set_index(["label", "before", "after"])["effect"].to_dict() == {
        ("b", "a", "c"): "still wrong", ("b", "b", "c"): "broken", ("c", "a", "c"): "fixed"}
    assert wos_metrics(PROBS, LABELS, [(0, 1)], 0.1).preds.tolist() == [2, 2, 2, 2]


def test_fast_path_agrees_with_apply_wos():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6) * 0.5, size=400).astype(np.float32)
    labels = rng.integers(0, 6, 400)
    for targets in ([(0, 1)], [(0, 1), (2, 3)], [(4, 5, 0)], [(0, 1, 2), (3, 4, 5)]):
        w = WosWhatIf(probs, labels, targets)
        for rho in (1.0, 0.7, 0.1, 1e-3, 0.0):
            r = w.evaluate(rho)
            ref = apply_wos(probs, targets, rho)
            assert np.array_equal(r.preds, ref), (targets, rho)
            assert r.accuracy == pytest.approx(np.mean(ref == labels))
            counts = np.zeros((6, 6), int)
            np.add.at(counts, (labels, ref), 1)
            assert np.array_equal(r.counts, counts)


def test_multi_label_metrics():
    probs = np.array([[0.9, 0.8, 0.1], [0.9, 0.2, 0.7], [0.3, 0.9, 0.2]])
    labels = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0]])
    w = WosWhatIf(probs, labels, [(0, 1)], task="multi_label")
    assert w.base.accuracy == pytest.approx(2 / 3)
    r = w.evaluate(0.6)      # row 0: 0.54 keeps A, 0.48 drops B -> now right
    assert r.preds[0].tolist() == [True, False, False]
    assert r.accuracy == 1.0 and r.fixed == 1 and r.changed.tolist() == [0]
    assert r.target_error == 0.0 and w.base.target_error == pytest.approx((0.5 + 0) / 2)
    assert w.changes(r, ["a", "b", "c"]).set_index("class").loc["b", "removed_wrong"] == 1
    assert "map" in w.curve([1.0, 0.5]).columns


def test_mean_average_precision_by_hand():
    labels = np.array([[1], [0], [1]])
    scores = np.array([[0.9], [0.8], [0.1]])
    # ranks: hit (P=1), miss, hit (P=2/3) -> AP = (1 + 2/3) / 2
    assert mean_average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)


def test_rho_grid_is_log_from_one_to_1e4():
    g = rho_grid()
    assert g[0] == 1.0 and g[-1] == pytest.approx(1e-4)
    assert np.all(np.diff(g) < 0)
    for r in (0.9, 0.7, 0.5, 0.3, 0.1, 0.01, 0.001):
        assert np.any(np.isclose(g, r))
    assert len(g) >= 40


def test_suggest_rho_by_hand():
    curve = pd.DataFrame({"rho": [1.0, 0.5, 0.1, 0.01],
                          "accuracy": [0.80, 0.797, 0.795, 0.70],
                          "target_error": [0.20, 0.16, 0.14, 0.01]})
    # bounds: error <= 0.15, accuracy >= 0.792 -> only rho 0.1 qualifies
    s = suggest_rho(curve)
    assert s["meets"] and s["rho"] == 0.1 and s["max_target_error"] == pytest.approx(0.15)
    assert s["min_accuracy"] == pytest.approx(0.792)
    s = suggest_rho(curve, lambda1=0.1)       # error <= 0.18: rho 0.5 has the best accuracy
    assert s["rho"] == 0.5
    s = suggest_rho(curve, lambda2=0.0)
    assert not s["meets"] and s["rho"] is None and "costs more than" in s["reason"]
    s = suggest_rho(curve, lambda1=1.0)
    assert not s["meets"] and "no rho" in s["reason"]
    zero = curve.assign(target_error=0.0)
    assert "nothing to repair" in suggest_rho(zero)["reason"]
    with pytest.raises(ValueError, match="rho = 1"):
        suggest_rho(curve.iloc[1:])


def test_demo_curve_and_suggestion(demo_ws, demo_eval):
    names = list(demo_eval.class_names)
    pair = [tuple(names.index(c) for c in demo_ws.planted["confused_pair"])]
    curve = wos_curve(demo_eval.probs, demo_eval.labels, pair, preds=demo_eval.preds)
    assert curve["accuracy"].iloc[0] == pytest.approx(demo_eval.accuracy)
    assert curve["target_error"].iloc[-1] < 0.25 * curve["target_error"].iloc[0]
    s = suggest_rho(curve)
    if s["meets"]:
        assert s["target_error"] <= 0.75 * s["base_target_error"] + 1e-12
        assert s["accuracy"] >= 0.99 * s["base_accuracy"] - 1e-12
    else:
        assert s["reason"]


@pytest.mark.parametrize("targets", [[(0, 1)], [(2, 5), (1, 3)], [(0, 1, 2)], [(4, 6, 1), (2, 3, 5)]])
def test_curve_points_equal_full_evaluation(targets):
    # the curve recounts only the target classes' cells; it must equal evaluate() exactly,
    # including rho 0, ties between a target and another class, and classes with no samples
    rng = np.random.default_rng(len(targets) * 7 + len(targets[0]))
    probs = rng.dirichlet(np.ones(8) * 0.4, size=400)
    probs[:20, 1] = probs[:20, 7]  # ties with a non-target class
    labels = rng.integers(0, 7, size=400)  # class 7 never a label: an empty row
    w = WosWhatIf(probs, labels, targets)
    rhos = [1.0, 0.7, 0.3, 0.05, 1e-4, 0.0]
    curve = w.curve(rhos)
    for row, rho in zip(curve.itertuples(), rhos):
        full = w.evaluate(rho)
        assert row.rho == rho
        assert row.accuracy == pytest.approx(full.accuracy, abs=1e-15)
        assert row.target_error == pytest.approx(full.target_error, abs=1e-15)
    assert curve["target_error"].nunique() > 1  # the case moves predictions
