"""One sample of a workspace: top-k, Grad-CAM of given rows, neighbours and pivotal status, stored
scores, repair runs that changed it, reviews; and the ``sample`` command."""

import dataclasses
import json

import numpy as np
import pytest

from diagnostics import run_sample as R
from diagnostics.__main__ import main
from diagnostics.gradcam import compute_gradcam, resolve_layer
from diagnostics.weakspots import build_representative_set, scan_weakspots
from workspace.cli import run_cli
from workspace.core import open_workspace
from workspace.errors import WorkspaceError


def test_sample_info_matches_the_outputs(demo_eval):
    wrong = int(np.flatnonzero(~demo_eval.correct)[0])
    info = R.sample_info(demo_eval, int(demo_eval.indices[wrong]), top=3)
    names = demo_eval.class_names
    assert info["label"] == names[demo_eval.labels[wrong]] and info["pred"] == names[demo_eval.preds[wrong]]
    assert info["correct"] is False and info["row"] == wrong
    assert info["top"]["class"].iloc[0] == info["pred"]          # the argmax is the prediction
    assert info["top"]["prob"].tolist() == sorted(demo_eval.probs[wrong], reverse=True)[:3]


def test_sample_info_of_an_image_that_did_not_load(demo_eval):
    out = dataclasses.replace(demo_eval, indices=demo_eval.indices + 1)  # position 0 missing
    with pytest.raises(WorkspaceError, match="could not be loaded"):
        R.sample_info(out, 0)


def test_sample_gradcam_is_the_batch_result_for_that_image(demo_ws, demo_eval):
    index, classes = 1, [int(demo_eval.preds[1]), int(demo_eval.labels[1])]
    assert classes[0] != classes[1]  # a mistake: prediction and label differ
    result = R.sample_gradcam(demo_ws, "eval", index, classes)
    model = demo_ws.model()
    layer = resolve_layer(model, "auto", demo_ws.example_input())
    # the same rows computed in a batch with other images (eval mode: rows are independent)
    batch = compute_gradcam(model, demo_ws.dataset("eval"), layer=layer, indices=np.array([5, index, 7, index]),
                            classes=np.array([0, classes[0], 2, classes[1]]), device="cpu")
    np.testing.assert_allclose(result.cams, batch[[1, 3]], rtol=1e-4, atol=1e-6)
    assert result.classes.tolist() == classes and result.correct.tolist() == [False, True]
    assert result.indices.tolist() == [index, index] and result.layer == layer
    assert np.all(result.cams >= 0) and result.cams.max() > 0
    assert (result.cams[0] != result.cams[1]).any()  # the two classes are explained differently


def test_sample_gradcam_reuses_a_full_split_pass(tiny_workspace, monkeypatch):
    from diagnostics.run_gradcam import workspace_gradcam

    ws = open_workspace(tiny_workspace)
    full = workspace_gradcam(ws, "eval", device="cpu")
    monkeypatch.setattr(R, "compute_gradcam", lambda *a, **k: pytest.fail("the stored pass should be used"))
    row = 4
    result = R.sample_gradcam(ws, "eval", int(full.indices[row]), [int(full.classes[row])])
    np.testing.assert_array_equal(result.cams[0], full.cams[row])


def test_sample_gradcam_is_stored(tiny_workspace, monkeypatch):
    ws = open_workspace(tiny_workspace)
    first = R.sample_gradcam(ws, "eval", 2, [0, 1], device="cpu")
    monkeypatch.setattr(R, "compute_gradcam", lambda *a, **k: pytest.fail("the stored rows should be read"))
    again = R.sample_gradcam(ws, "eval", 2, [1, 0], device="cpu")
    np.testing.assert_array_equal(again.cams, first.cams[::-1])


def test_neighbours_of_a_correct_sample_are_its_exact_knn(demo_ws, demo_train, demo_eval):
    index = int(demo_eval.indices[np.flatnonzero(demo_eval.correct)[0]])
    box = R.sample_neighbours(demo_ws, "eval", index, k=5)
    rep = build_representative_set(demo_train, demo_eval)
    row = rep.row_of("eval", index)
    d = np.linalg.norm(rep.embeddings.astype(np.float64) - rep.embeddings[row], axis=1)
    d[row] = np.inf  # never its own neighbour
    expected = np.argsort(d, kind="stable")[:5]
    assert box["frame"]["row"].tolist() == expected.tolist()
    np.testing.assert_allclose(box["frame"]["distance"], d[expected], rtol=1e-4)
    assert box["weakspot"]["query"] is False and box["weakspot"]["pivotal"] is None
    s = box["summary"]
    assert s["k"] == 5 and s["same_label"] == pytest.approx(np.mean(rep.labels[expected] == rep.labels[row]))


def test_pivotal_status_agrees_with_the_weakspot_scan(demo_ws, demo_train, demo_eval):
    rep = build_representative_set(demo_train, demo_eval)
    scan = scan_weakspots(rep)  # the CLI's defaults: suggested radius, k 20, purity 0.7
    pivotal = set(zip(scan.pivotal["split"], scan.pivotal["index"].astype(int)))
    wrong = np.flatnonzero(~demo_eval.correct)
    checked = {True: 0, False: 0}
    for pos in wrong[:16]:
        index = int(demo_eval.indices[pos])
        w = R.sample_neighbours(demo_ws, "eval", index, k=3)["weakspot"]
        assert w["query"] is True and w["radius"] == pytest.approx(scan.radius)
        assert w["pivotal"] == (("eval", index) in pivotal), index
        checked[w["pivotal"]] += 1
    assert checked[True] and checked[False]  # both outcomes were seen


def test_stored_scores_are_read_never_computed(tiny_workspace):
    from diagnostics.run_gradients import compute_scores

    ws = open_workspace(tiny_workspace)
    assert R.stored_scores(ws, "train", 3) is None
    assert ws.cached_outputs("train") is None  # nothing was computed to answer
    frame = compute_scores(ws)
    got = R.stored_scores(ws, "train", 3)
    row = frame[frame["index"] == 3].iloc[0]
    assert got["p_s"] == pytest.approx(row["p_s"]) and got["noisy"] == bool(row["noisy"])
    assert got["lam"] == frame.attrs["lam"] and got["rows"] == len(frame)


def test_repair_changes_reviews_and_appearances(tiny_workspace):
    ws = open_workspace(tiny_workspace)
    before = ws.outputs("eval")
    # a "repaired" version whose eval outputs flip the correctness of the first two images
    version = ws.store.add_model_version("v1-test", path="", parent="orig", method="w-aug")["id"]
    preds = before.preds.copy()
    k = ws.num_classes
    preds[0] = before.labels[0] if preds[0] != before.labels[0] else (before.labels[0] + 1) % k
    preds[1] = before.labels[1] if preds[1] != before.labels[1] else (before.labels[1] + 1) % k
    ws.save_outputs(dataclasses.replace(before, preds=preds), "eval", version)
    run = ws.store.create_run(method="w-aug", targets={"kind": "confusion", "targets": [["cat", "dog"]]}, rho=0.5)
    ws.store.update_run(run, status="done", model_version=version)
    want = {i: "broken" if before.correct[i] else "fixed" for i in (0, 1)}
    for index in (0, 1):
        changes = R.repair_changes(ws, "eval", index)
        assert [(c["run_id"], c["change"], c["model_version"]) for c in changes] == [(run, want[index], version)]
    assert R.repair_changes(ws, "eval", 2) == []

    ws.store.upsert_review("mislabel", "eval:0", model_version="orig", verdict="mislabelled", note="looks like a fox")
    ws.store.upsert_review("pivotal", "eval:0", model_version="orig", verdict="note", note="grass")
    ws.store.upsert_review("mislabel", "train:0", model_version="orig", verdict="not mislabelled")
    reviews = R.sample_reviews(ws, "eval", 0)
    assert [(r["kind"], r["verdict"], r["note"]) for r in reviews] == [
        ("mislabel", "mislabelled", "looks like a fox"), ("pivotal", "note", "grass")]
    rows = R.sample_appearances(scores={"noisy": True, "comp_loss": 2.0, "delta": 1.0},
                                weakspot={"pivotal": True, "sample_purity": 0.8, "radius": 1.5, "k": 20},
                                changes=R.repair_changes(ws, "eval", 0), reviews=reviews)
    assert [r["page"] for r in rows] == ["gradients", "weakspots", "repair", "gradients", "weakspots"]
    assert "2.00 >= delta 1.00" in rows[0]["what"] and f"by run {run}" in rows[2]["what"]


def test_sample_command_on_demo(demo_ws, demo_train, demo_eval, capsys):
    wrong = int(demo_eval.indices[np.flatnonzero(~demo_eval.correct)[0]])
    assert run_cli(main, ["sample", "--workspace", "demo", "--index", str(wrong), "--top", "2",
                          "--neighbours", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = demo_eval.class_names
    s = out["sample"]
    assert (s["split"], s["index"], s["correct"]) == ("eval", wrong, False)
    assert s["label"] == names[demo_eval.labels[wrong]] and s["id"] == demo_ws.split("eval").ids[wrong]
    assert [t["class"] for t in s["top"]][0] == s["pred"] and len(s["top"]) == 2
    assert len(out["neighbours"]) == 4 and out["weakspot"]["query"] is True
    assert [n["distance"] for n in out["neighbours"]] == sorted(n["distance"] for n in out["neighbours"])


@pytest.mark.parametrize("args, message", [(["--index", "3000"], "--index must lie in [0, 3000)"),
                                           (["--index", "0", "--top", "0"], "--top must be at least 1")])
def test_sample_command_bad_input(args, message, demo_ws, capsys):
    assert run_cli(main, ["sample", "--workspace", "demo", *args]) == 2
    assert message in capsys.readouterr().err
