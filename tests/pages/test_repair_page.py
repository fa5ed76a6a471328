"""AppTest of the repair page: launch a tiny real worker run, watch its progress, cancel it."""

import time

from streamlit.testing.v1 import AppTest

from pages import ui
from tests.pages.helpers import seeded
from tests.conftest import REPO
from workspace.core import open_workspace


def page(workspace) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state[ui.WORKSPACE] = str(workspace)
    spec = str(open_workspace(workspace).spec)
    for key, value in seeded(spec, target={"kind": "confusion", "targets": [["cat", "dog"]]},
                             source="confusion page").items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/repair.py").run()
    assert not at.exception, at.exception
    return at


def runs_table(at):
    """The runs table (AppTest does not expose dataframe keys): the frame with a status column."""
    return next(d.value for d in at.dataframe if "status" in d.value.columns)


def test_launch_see_progress_and_cancel(tiny_workspace):
    at = page(tiny_workspace)
    assert at.text_input(key="repair_targets_text").value == "cat,dog"
    at.radio(key="repair_method").set_value("w-aug").run()
    at.slider(key="repair_rho").set_value(0.3).run()
    at.number_input(key="repair_epochs").set_value(1000).run()
    at.number_input(key="repair_batch").set_value(2).run()
    at.button(key="repair_launch").click().run()
    assert not at.exception, at.exception
    assert any("Run 1 started" in s.value for s in at.success)
    ws = open_workspace(tiny_workspace)
    run = ws.store.get_run(1)
    assert run["method"] == "w-aug" and run["rho"] == 0.3 and run["config"]["epochs"] == 1000
    deadline = time.time() + 90
    while time.time() < deadline and not (run["status"] == "running" and run["progress"] > 0.1
                                          and run["eta"] is not None):
        time.sleep(0.3)
        run = ws.store.get_run(1)
    at.run()
    texts = [p.proto.text for p in at.get("progress")]
    assert any(t.startswith("Run 1: w-aug(0.3), all scope, is running") and "ETA" in t for t in texts), texts
    at.button(key="repair_cancel_1").click().run()
    assert ws.store.get_run(1)["cancel_requested"] == 1
    while time.time() < deadline and ws.store.get_run(1)["status"] != "cancelled":
        time.sleep(0.3)
    assert ws.store.get_run(1)["status"] == "cancelled"
    at.run()
    assert not at.exception and not at.get("progress")
    assert runs_table(at)["status"].tolist() == ["cancelled"]


def test_w_os_run_and_before_after_view(tiny_workspace):
    from repair import runs
    from repair.loop import TrainConfig
    from workspace import jobs
    from workspace.targets import Target

    ws = open_workspace(tiny_workspace)
    run_id = runs.create_run(ws, "orig-ft", Target(((0, 1),), ws.class_names), None,
                             TrainConfig(epochs=1, batch_size=4, device="cpu"))
    assert jobs.run_job(ws, run_id)["status"] == "done"
    at = page(tiny_workspace)
    at.radio(key="repair_method").set_value("w-os").run()
    at.select_slider(key="repair_rho_w-os").set_value(0.01).run()
    at.button(key="repair_launch").click().run()
    assert not at.exception, at.exception
    table = runs_table(at)
    assert table["method"].tolist() == ["w-os", "orig-ft"] and set(table["status"]) == {"done"}
    labels = [m.label for m in at.metric]
    assert "Fixed (wrong → right)" in labels and "Broken (right → wrong)" in labels


def test_w_bn_not_applicable_without_batchnorm(nobn_workspace):
    at = page(nobn_workspace)
    at.radio(key="repair_method").set_value("w-bn").run()
    assert any("not applicable" in w.value and "no BatchNorm" in w.value for w in at.warning)
    assert at.button(key="repair_launch").disabled


def test_methods_are_listed_with_their_whole_description(tiny_workspace):
    from repair.methods import get_method, list_methods

    at = page(tiny_workspace)
    listing = next(m.value for m in at.markdown if m.value.startswith("- **"))
    lines = listing.split("\n")
    assert len(lines) == len(list_methods())
    for name, line in zip(list_methods(), lines):
        assert line.startswith(f"- **{name}** (") and get_method(name).description in line
    table = next(d.value for d in at.dataframe if "method" in d.value.columns)
    assert "description" not in table.columns   # no cut-off text column
