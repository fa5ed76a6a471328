"""Repair figures and the before/after comparison on hand-made inputs."""

import numpy as np

from repair.figures import compare_outputs, confusion_diff_figure, curves_figure, runs_frame, tradeoff_figure
from workspace.cache import InferenceOutputs


def outputs(preds, labels=(0, 0, 1, 1, 2), indices=(0, 1, 2, 3, 4)):
    n = len(labels)
    return InferenceOutputs(logits=np.zeros((n, 3)), probs=np.full((n, 3), 1 / 3), preds=np.array(preds),
                            labels=np.array(labels), embeddings=None, indices=np.array(indices),
                            class_names=("a", "b", "c"), task="single_label", threshold=0.5)


def test_compare_outputs_finds_fixed_and_broken_samples():
    before = outputs([0, 1, 0, 1, 2])       # wrong: 1, 2
    after = outputs([0, 0, 1, 0, 2])        # wrong: 3
    cmp = compare_outputs(before, after)
    assert cmp["fixed"].tolist() == [1, 2] and cmp["broken"].tolist() == [3]
    assert cmp["before_rates"][0].tolist() == [0.5, 0.5, 0.0]
    assert cmp["after_rates"][1].tolist() == [0.5, 0.5, 0.0]
    fig = confusion_diff_figure(cmp["before_rates"], cmp["after_rates"], ("a", "b", "c"))
    assert np.allclose(fig.data[0].z, cmp["after_rates"] - cmp["before_rates"])


def test_runs_frame_and_tradeoff_region():
    runs = [
        {"id": 1, "method": "orig-ft", "rho": 1.0, "targets": {"kind": "confusion", "targets": [["a", "b"]]},
         "status": "done", "progress": 1.0, "baseline": {"accuracy": 0.8, "target_error": 0.2},
         "final": {"accuracy": 0.81, "target_error": 0.19}, "started_at": 0.0, "finished_at": 60.0},
        {"id": 2, "method": "w-bn", "rho": 0.5, "targets": {"kind": "confusion", "targets": [["a", "b"]]},
         "status": "running", "progress": 0.5, "baseline": None, "final": None},
    ]
    frame = runs_frame(runs)
    assert frame["id"].tolist() == [2, 1] and frame.loc[1, "minutes"] == 1.0 and frame.loc[0, "targets"] == "a,b"
    fig = tradeoff_figure(frame, baseline={"accuracy": 0.8, "target_error": 0.2}, lambda1=0.25, lambda2=0.01)
    rect = fig.layout.shapes[0]
    assert rect.x0 == 0 and abs(rect.x1 - 0.15) < 1e-12 and abs(rect.y0 - 0.792) < 1e-12
    assert [t.name for t in fig.data] == ["orig", "orig-ft"]   # the running run is not plotted
    curves = curves_figure([{"epoch": 0, "accuracy": 0.8, "target_error": 0.2},
                            {"epoch": 1, "accuracy": 0.79, "target_error": 0.1}])
    assert list(curves.data[1].y) == [0.2, 0.1]
