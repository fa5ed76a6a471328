"""Headless tests of the app shell (streamlit.testing.v1.AppTest)."""

import pytest
from streamlit.testing.v1 import AppTest

from pages import ui
from tests.conftest import REPO

TIMEOUT = 180


def app() -> AppTest:
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)


def test_overview_on_demo(demo_eval):
    at = app().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "demo (shapes)"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Eval accuracy"] == f"{demo_eval.accuracy:.2%}"
    assert metrics["Train images"] == "6,000" or metrics["Train images"] == "6000"
    assert at.selectbox(key=ui.VERSION).value == "orig"


def test_bad_workspace_path_shows_a_message_in_the_main_area(tmp_path):
    at = app()
    at.session_state[ui.WORKSPACE] = str(tmp_path / "missing.toml")
    at.run()
    assert not at.exception
    assert any("Cannot open workspace" in e.value and "not found" in e.value for e in at.main.error)
    assert any("What to do" in i.value for i in at.main.info)
    assert not at.sidebar.error and at.sidebar.button(key="ws_reload_failed")


def test_a_failing_page_shows_the_error_in_the_page_not_a_traceback(monkeypatch, demo_eval):
    """The error boundary of app.py (AppTest reruns a page without app.py, so each case is a first run)."""
    from workspace.core import Workspace
    from workspace.errors import WorkspaceError

    def broken(self, *a, **k):
        raise WorkspaceError("the cache folder is full")

    monkeypatch.setattr(Workspace, "capabilities", broken)  # the Overview page asks for them
    at = app().run()
    assert not at.exception
    assert any("the cache folder is full" in e.value for e in at.main.error)

    def bug(self, *a, **k):
        raise KeyError("oops")

    monkeypatch.setattr(Workspace, "capabilities", bug)
    at = app().run()
    assert not at.exception
    assert any("Unexpected failure (a bug in Groupfix): KeyError" in e.value for e in at.main.error)
    assert any("traceback is in" in c.value for c in at.main.caption)
