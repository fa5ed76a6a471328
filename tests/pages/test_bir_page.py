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
