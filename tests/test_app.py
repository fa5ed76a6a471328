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


def test_bad_workspace_path_shows_a_message(tmp_path):
    at = app()
    at.session_state[ui.WORKSPACE] = str(tmp_path / "missing.toml")
    at.run()
    assert not at.exception
    assert any("Cannot open workspace" in e.value and "not found" in e.value for e in at.error)


def test_user_workspace_opens(tiny_workspace):
    at = app()
    at.session_state[ui.WORKSPACE] = str(tiny_workspace)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "tiny"


@pytest.mark.parametrize("page", ["confusion", "triplets", "wos", "gradcam", "gradients", "weakspots", "repair"])
def test_every_page_renders(page, demo_eval):
    at = app().run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
