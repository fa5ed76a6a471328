"""Every registered diagnostic and repair method runs through the CLI and through its page.

The tests enumerate the registries, so a new diagnostic or method cannot be forgotten by either.
Page tests patch only the boundary (the worker launch), so they never train.
"""

import json

import pytest
from streamlit.testing.v1 import AppTest

from diagnostics.__main__ import main as diagnostics_main
from diagnostics.registry import get_diagnostic, list_diagnostics
from pages import ui
from repair.__main__ import main as repair_main
from repair.methods import get_method, list_methods
from tests.conftest import REPO
from workspace import jobs
from workspace.cli import run_cli

TIMEOUT = 240


def test_registries_are_not_empty_and_sorted():
    assert list_diagnostics() == sorted(list_diagnostics()) and len(list_diagnostics()) >= 6
    assert list_methods() == sorted(list_methods()) and len(list_methods()) >= 8
    with pytest.raises(ValueError, match="valid:"):
        get_diagnostic("nope")


@pytest.mark.parametrize("name", list_diagnostics())
def test_every_diagnostic_through_the_cli(name, demo_eval, tmp_path, capsys):
    d = get_diagnostic(name)
    example = [a.replace("{tmp}", str(tmp_path)) for a in d.example]
    code = run_cli(diagnostics_main, [name, "--workspace", "demo", *example, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert isinstance(json.loads(captured.out), dict)


@pytest.mark.parametrize("name", [n for n in list_diagnostics() if get_diagnostic(n).page])
def test_every_diagnostic_through_its_page(name, demo_eval):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page(f"pages/{get_diagnostic(name).page}.py").run()
    assert not at.exception, at.exception
    assert at.title, "the page drew nothing"


def _scope(method) -> str:
    """The cheapest scope the method supports (the head: seconds on the demo)."""
    return next(s for s in ("head", "last-block", "all") if method.scope_reason(s) is None)


@pytest.mark.parametrize("name", list_methods())
def test_every_method_through_the_cli(name, demo_ws, demo_train, capsys):
    m = get_method(name)
    args = ["run", "--workspace", "demo", "--method", name, "--targets", "disk,oval", "--json",
            "--scope", _scope(m), "--epochs", "1", "--max-steps", "3", "--device", "cpu"]
    code = run_cli(repair_main, args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["status"] == "done", out["error"]
    assert {"accuracy", "target_error", "worst_group_accuracy", "worst_group"} == set(out["final"])  # demo: groups
    assert (out["model_version"] is not None) == m.finetunes


@pytest.mark.parametrize("name", [n for n in list_methods() if get_method(n).kind != "baseline"])
def test_every_method_through_the_repair_page(name, demo_ws, demo_eval, monkeypatch):
    started = []
    monkeypatch.setattr(jobs, "start_worker", lambda ws, job_id, **kw: started.append(job_id) or 0)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/repair.py").run()
    m = get_method(name)
    at.radio(key="repair_scope").set_value(_scope(m)).run()
    at.radio(key="repair_method").set_value(name).run()
    assert not at.exception, at.exception
    at.button(key="repair_launch").click().run()
    assert not at.exception, at.exception
    assert any(f"({name}," in s.value for s in at.success), [e.value for e in at.error]
    newest = jobs.list_jobs(demo_ws)[-1]
    assert newest["method"] == name and newest["config"]["scope"] == _scope(m)
    if m.finetunes:
        assert started == [newest["id"]] and newest["status"] == "queued"
        jobs.request_cancel(demo_ws, newest["id"])
    else:
        assert started == [] and newest["status"] == "done"


def test_page_state_is_per_workspace(demo_ws, tiny_workspace):
    """A target chosen on the demo does not follow the user into another workspace."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/confusion.py").run()
    at.button(key="conf_use_target").click().run()
    assert ui.TARGET in at.session_state[ui.PER_WORKSPACE]["demo"]
    at.session_state[ui.WORKSPACE] = str(tiny_workspace)
    at.switch_page("pages/wos.py").run()
    assert not at.exception, at.exception
    assert at.text_input(key="wos_targets").value != "disk,oval"
    assert all("disk" not in c.value for c in at.caption)
