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


def test_the_first_run_freezes_the_startup_objects_once(demo_eval):
    """After the first run the collector skips the startup objects (Streamlit's collection after
    every rerun then takes ~1 ms instead of ~0.2 s), once per process, and each rerun's cycles are
    still collected. Run in a fresh process: freezing is process-wide."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import gc, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from streamlit.testing.v1 import AppTest
        assert gc.get_freeze_count() == 0
        at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=300).run()
        assert not at.exception, at.exception
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, frozen          # the libraries and the workspace
        at.switch_page("pages/confusion.py").run()
        assert gc.get_freeze_count() <= frozen  # once per process (frozen objects freed leave it)
        t = time.perf_counter(); gc.collect(); spent = time.perf_counter() - t
        assert len(gc.get_objects()) < frozen / 10, len(gc.get_objects())
        print(frozen, round(spent, 4))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
