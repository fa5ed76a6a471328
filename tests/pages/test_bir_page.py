"""The BIR page on the demo: the identification, the scores and the before/after of a finished bir run
(a quick run with a step budget identifies with one epoch: it must not replace the page's identification)."""

from streamlit.testing.v1 import AppTest

from diagnostics import run_bir
from repair import runs
from repair.loop import TrainConfig
from tests.conftest import REPO
from workspace import jobs
from workspace.targets import Target

TIMEOUT = 300


def test_bir_page_shows_the_layers_scores_and_finished_runs(isolated_demo):
    found = run_bir.identification(isolated_demo, "orig")         # what the page's job computes
    run_bir.raw_scores(isolated_demo, "orig", found=found)
    run_id = runs.create_run(isolated_demo, "bir", Target(((0, 1),), isolated_demo.class_names), 0.05,
                             TrainConfig(device="cpu", max_steps=2))
    job = jobs.run_job(isolated_demo, run_id)
    assert job["status"] == "done", job["error"]

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/bir.py").run()
    assert not at.exception, at.exception
    # the run's quick (one-epoch) identification is stored beside the page's, not over it
    assert any(found["chosen"] in c.value for c in at.caption), [i.value for i in at.info]
    table = at.dataframe[-1].value
    row = table[table["run"] == run_id].iloc[0]
    before, after = job["baseline"]["accuracy"], job["final"]["accuracy"]
    assert row["accuracy"] == f"{before:.3f} → {after:.3f}"
    assert row["version"] == job["model_version"]
    assert row["kept"].startswith(("theta's own weights", "the weights of epoch")), row["kept"]
    # a threshold that flags more than a tenth of the train split is called out; top K is not
    scores = run_bir.raw_scores(isolated_demo, "orig", found=found)["score"]
    share = float((scores > at.number_input(key="bir_threshold").value).mean())
    warned = [w.value for w in at.warning if "of the train split is above the threshold" in w.value]
    assert bool(warned) == (share > 0.10), (share, warned)
    at.number_input(key="bir_threshold").set_value(float(scores.quantile(0.95))).run()
    assert not [w for w in at.warning if "above the threshold" in w.value]
    at.number_input(key="bir_threshold").set_value(float(scores.quantile(0.5))).run()
    assert [w for w in at.warning if "50% of the train split is above the threshold" in w.value]
    at.radio(key="bir_mode").set_value("top K").run()
    assert not at.exception and not [w for w in at.warning if "above the threshold" in w.value]


def test_bir_page_shows_finished_runs_before_its_own_identification(demo_ws, monkeypatch):
    """A bir repair run identifies for itself (with its own settings): its before/after shows even
    while the page's identification has not run."""
    finished = {"id": 7, "status": "done", "parent_version": "orig", "model_version": "v9-bir", "rho": 0.048790164,
                "baseline": {"accuracy": 0.8311, "target_error": 0.1194}, "final": {"accuracy": 0.7546,
                                                                                   "target_error": 0.0883},
                "log_tail": "epoch 2: held-out loss 0.41; kept the weights of epoch 2"}
    monkeypatch.setattr(run_bir, "stored", lambda ws, version="orig": None)
    monkeypatch.setattr(runs, "list_runs", lambda ws, method=None, sweeps=False: [finished] if method == "bir" else [])
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/bir.py").run()
    assert not at.exception, at.exception
    assert any("has not run" in i.value for i in at.info)
    assert at.button(key="bir_start") is not None
    assert len(at.dataframe) == 1   # the runs table, nothing of the identification
    row = at.dataframe[0].value.iloc[0]
    assert (row["run"], row["threshold"], row["version"]) == (7, "0.04879", "v9-bir")
    assert row["accuracy"] == "0.831 → 0.755" and row["target error"] == "0.119 → 0.088"
    assert row["kept"] == "the weights of epoch 2"
