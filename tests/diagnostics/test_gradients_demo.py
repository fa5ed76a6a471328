"""The demo's planted ground truth is recovered (loaded model; the GCE numbers are in the bench)."""

from __future__ import annotations

import numpy as np

from diagnostics import gradients as G
from diagnostics import run_gradients as R


def test_noise_flag_recovers_flipped_labels_on_demo(demo_ws, demo_train):
    frame = R.compute_scores(demo_ws)
    flipped = np.isin(frame["index"], demo_ws.planted["flipped_labels"])
    noisy = frame["noisy"].to_numpy()
    assert noisy[flipped].mean() >= 0.70  # measured 0.946
    assert noisy[~flipped].mean() <= 0.20  # measured 0.074
    assert frame.attrs["flip_recall"] == noisy[flipped].mean()


def test_p_s_ranks_minority_above_chance_with_the_loaded_model(demo_ws, demo_train):
    # the loaded (CE-trained) model gives 0.70 with lambda 1; the >= 0.8 bar needs the GCE
    # biased model (0.94 measured, see tests/benchmarks/bench_gradients.py)
    frame = R.compute_scores(demo_ws)
    assert frame.attrs["minority_auc"] > 0.6
    p_s = R.train_sampling_probabilities(demo_ws)
    minority = np.zeros(len(p_s), dtype=bool)
    minority[demo_ws.planted["minority"]] = True
    assert p_s[minority].mean() > 1.5 * p_s[~minority].mean()
    assert G.effective_share(p_s) > 0.1
