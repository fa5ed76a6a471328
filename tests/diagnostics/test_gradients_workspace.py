"""Workspace-level gradient scores, the pgd contract, the CLI and the GCE job (tiny workspace)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from diagnostics import gce
from diagnostics import gradients as G
from diagnostics import noise as N
from diagnostics import run_gradients as R
from workspace import jobs
from workspace.cache import make_loader
from workspace.cli import run_cli
from workspace.core import open_workspace
from workspace.errors import WorkspaceError


@pytest.fixture
def tiny(tiny_workspace):
    return open_workspace(tiny_workspace)


def test_closed_form_matches_vmap_on_the_workspace_model(tiny):
    out = tiny.outputs("train")
    model = tiny.model()
    closed = R.compute_gradients(tiny, model, out, params="last")
    names = G.classifier_names(model, "head")
    loader = make_loader(tiny.dataset("train"), batch_size=5)
    loader.labels = tiny.split("train").labels
    vm, idx = G.model_gradients(model, loader, names=names)
    assert idx.tolist() == out.indices.tolist()
    np.testing.assert_allclose(closed, vm, atol=1e-5)


def test_compute_scores_columns_cache_and_contract(tiny):
    frame = R.compute_scores(tiny)
    assert set(G.SCORE_COLUMNS + ["log_p_s", "log_D", "correct"] + N.NOISE_COLUMNS) <= set(frame.columns)
    assert frame.attrs["lam"] == 0.0  # the default: S = M, a usable sampler
    assert not (frame["noisy"] & ~frame["noisy_paper"]).any()
    out, held = tiny.outputs("train"), tiny.outputs("eval")  # the loaded model's outputs drive the flags
    expected = N.noise_table(out.probs, out.labels, heldout_probs=held.probs, heldout_labels=held.labels)
    np.testing.assert_array_equal(frame["noisy"], expected["noisy"])
    np.testing.assert_array_equal(frame["noise_rank"], expected["noise_rank"])
    assert frame.attrs["noise_default"] == expected.attrs["noise_default"]
    assert frame.attrs["heldout_split"] == "eval" and frame.attrs["heldout_share"] == expected.attrs["heldout_share"]
    on_eval = R.compute_scores(tiny, split="eval")  # out-of-sample already: no baseline
    assert on_eval.attrs["heldout_split"] is None and on_eval.attrs["heldout_share"] is None
    assert len(frame) == 12 and frame["index"].tolist() == list(range(12))
    assert ((frame["p_s"] > 0) & (frame["p_s"] <= 1)).all() and frame["p_s"].max() == 1.0
    assert frame.attrs["delta"] > 0
    files = list((tiny.state_dir / "artifacts" / "gradient-scores" / "orig" / "train").rglob("meta.json"))
    assert len(files) == 1
    again = R.compute_scores(tiny)  # from disk
    pd.testing.assert_frame_equal(frame, again)
    p_s = R.train_sampling_probabilities(tiny)  # lam = 0: p_s = ||g_i|| / max ||g_j|| per class (equal sizes)
    assert p_s.shape == (12,)
    labels = frame["label"].to_numpy()
    norms = frame["grad_norm"].to_numpy()
    s = np.array([(1 / norms[i]) / (1 / norms[labels == labels[i]]).sum() for i in range(12)])
    np.testing.assert_allclose(p_s, s.min() / s)
    assert p_s.max() == 1.0 and G.effective_share(p_s) > 0.3
    weights = R.sampling_weights_frame(tiny, frame)
    assert list(weights.columns) == ["index", "p_s", "noisy"] and len(weights) == 12


def test_all_parameter_scores_on_workspace(tiny):
    frame = R.compute_scores(tiny, params="all", k=7)
    assert frame.attrs["k"] == 7 and len(frame) == 12 and np.isfinite(frame["log_p_s"]).all()


def test_skipped_images_get_p_s_one(tiny_workspace):
    bad = sorted((tiny_workspace.parent / "data" / "train" / "dog").glob("*.png"))[0]
    bad.write_bytes(b"not a png")
    ws = open_workspace(tiny_workspace)
    position = ws.split("train").ids.index(str(bad))
    p_s = R.train_sampling_probabilities(ws)
    assert p_s.shape == (12,) and p_s[position] == 1.0
    assert (p_s > 0).all()


def test_bad_options_are_refused(tiny):
    with pytest.raises(WorkspaceError, match="params must be one of last, all"):
        R.compute_scores(tiny, params="some")
    with pytest.raises(WorkspaceError, match="biased_model"):
        R.compute_scores(tiny, biased_model="lff")


def test_cli_writes_csv_and_refuses_to_overwrite(tiny_workspace, tmp_path, capsys):
    from diagnostics.__main__ import main

    out = tmp_path / "scores.csv"
    assert run_cli(main, ["gradients", "--workspace", str(tiny_workspace), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 12 and result["out"] == str(out) and result["lam"] == 0.0
    assert result["noisy"] <= result["noisy_paper"] and 0 < result["effective_share"] <= 1
    csv = pd.read_csv(out)
    contract = ["index", "label", "pred", "grad_norm", "M", "D", "S", "p_s", "comp_loss", "noisy", "log_p_s"]
    assert list(csv.columns) == contract + ["p_label", "p_pred", "ce", "entropy", "noisy_paper", "noise_rank"]
    assert (csv["log_p_s"] <= 0).all() and np.allclose(np.exp(csv["log_p_s"]), csv["p_s"], atol=1e-300)
    np.testing.assert_allclose(csv["comp_loss"], csv["ce"] / np.maximum(csv["entropy"], 1e-12), rtol=1e-9)
    assert int(csv["noisy"].sum()) == result["noisy"] and int(csv["noisy_paper"].sum()) == result["noisy_paper"]
    assert run_cli(main, ["gradients", "--workspace", str(tiny_workspace), "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert run_cli(main, ["gradients", "--workspace", str(tiny_workspace), "--out", str(tmp_path / "b.csv"),
                          "--k", "0", "--params", "all"]) == 2
    assert run_cli(main, ["gradients", "--workspace", str(tiny_workspace), "--out", str(tmp_path / "c.csv"),
                          "--flag-share", "2"]) == 2
    assert "--flag-share must be in [0, 1]" in capsys.readouterr().err


def test_cli_flag_share_tightens_the_flag(tiny_workspace, tmp_path, capsys):
    from diagnostics.__main__ import main

    frame = R.compute_scores(open_workspace(tiny_workspace))
    paper = int(frame["noisy_paper"].sum())
    assert paper >= 2  # an untrained tiny model: most samples meet the paper's rule
    out = tmp_path / "s.csv"
    assert run_cli(main, ["gradients", "--workspace", str(tiny_workspace), "--out", str(out),
                          "--flag-share", str(1 / 12)]) == 0
    text = capsys.readouterr().out
    csv = pd.read_csv(out)
    assert csv["noisy"].sum() == 1 and "likely mislabelled: 1 (8.33%;" in text
    top = frame.loc[frame["noise_rank"] == 1, "index"].tolist()
    assert csv.loc[csv["noisy"], "index"].tolist() == top  # the most suspicious sample


def test_flag_count_redraws_the_flag_without_touching_the_stored_table(tiny):
    frame = R.compute_scores(tiny)
    paper = int(frame["noisy_paper"].sum())
    tight = R.flag_count(frame, 1)
    assert tight["noisy"].sum() == 1 and tight.attrs["noise_count"] == 1
    assert tight.attrs["noisy_share"] == pytest.approx(1 / 12)
    assert tight["noisy"].tolist() == (frame["noise_rank"] == 1).tolist()
    assert tight.attrs["noise_threshold"] == frame.loc[frame["noise_rank"] == 1, "comp_loss"].item()
    assert R.flag_count(frame, 1000)["noisy"].sum() == paper
    pd.testing.assert_frame_equal(R.compute_scores(tiny), frame)


def test_gce_loss_hand_value():
    logits = torch.tensor([[0.0, 0.0]])  # p_y = 0.5
    assert gce.gce_loss(logits, torch.tensor([1]), 0.7).item() == pytest.approx((1 - 0.5 ** 0.7) / 0.7)


def test_gce_training_leaves_loaded_model_untouched(tiny):
    before = {k: v.clone() for k, v in tiny.model().state_dict().items()}
    steps = []
    model = R.train_gce_model(tiny, gce.GCEConfig(epochs=1, batch_size=4), progress=lambda d, t: steps.append(d))
    assert steps == [1, 2, 3]
    for k, v in tiny.model().state_dict().items():
        assert torch.equal(v, before[k])
    assert not torch.equal(model.head.weight, before["head.weight"])


def test_gce_job_runs_and_can_be_cancelled(tiny):
    config = gce.GCEConfig(epochs=1, batch_size=4)
    assert R.gce_status(tiny, config)["status"] == "none"
    job = jobs.create_job(tiny, R.GCE_KIND, queue="cpu", params={"config": vars(config)},
                          run_key=R.gce_key(tiny, config))
    jobs.request_cancel(tiny, job)  # queued with no worker: cancelled at once
    assert R.gce_status(tiny, config)["status"] == "cancelled"
    job = jobs.create_job(tiny, R.GCE_KIND, queue="cpu", params={"config": vars(config)},
                          run_key=R.gce_key(tiny, config))
    tiny.store.update_run(job, cancel_requested=1)  # a cancel request is honoured at the first step
    assert jobs.run_job(tiny, job)["status"] == "cancelled"
    assert R.gce_status(tiny, config)["status"] == "cancelled"
    job = jobs.create_job(tiny, R.GCE_KIND, queue="cpu", params={"config": vars(config)},
                          run_key=R.gce_key(tiny, config))
    assert jobs.run_job(tiny, job)["status"] == "done"
    assert R.gce_status(tiny, config)["status"] == "done" and R.load_gce_model(tiny, config) is not None


def test_gce_scores_use_the_trained_biased_model(tiny):
    frame = R.compute_scores(tiny, biased_model="gce")
    assert frame.attrs["source"] == "gce" and len(frame) == 12
    assert R.load_gce_model(tiny) is not None
    loaded = R.compute_scores(tiny)
    assert not np.allclose(frame["grad_norm"], loaded["grad_norm"])
    np.testing.assert_allclose(frame["comp_loss"], loaded["comp_loss"])  # noise split: the loaded model


def test_gce_background_process_end_to_end(tiny):
    import time

    job_id = R.start_gce_job(tiny)
    assert job_id > 0
    with pytest.raises(WorkspaceError, match="already running"):
        R.start_gce_job(tiny)
    deadline = time.time() + 90
    while R.gce_status(tiny)["status"] in jobs.ACTIVE and time.time() < deadline:
        time.sleep(0.5)
    status = R.gce_status(tiny)
    assert status["status"] == "done", (status, jobs.log_path(tiny, job_id).read_text()[-2000:])
    assert R.load_gce_model(tiny) is not None
