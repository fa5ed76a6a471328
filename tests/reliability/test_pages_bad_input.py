"""The same bad inputs through the dashboard (AppTest): a clear message in the main area, nothing changed.

A workspace that does not open (a bad workspace file, weights that are text, a damaged or newer
store) shows the reason in the main area, never a traceback, and leaves every file as it was. A
workspace whose state folder is read-only can still be viewed (Overview and Confusion render from
the stored outputs), and the actions that would write (the findings report, launching a repair)
say why they cannot.
"""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from streamlit.testing.v1 import AppTest

from pages import ui
from tests.conftest import REPO
from tests.reliability.conftest import changed, content_digest, make_read_only, tree_digest

TIMEOUT = 180


def page(spec, name: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state[ui.WORKSPACE] = str(spec)
    at.run()
    if name is not None:
        at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def main_errors(at) -> list[str]:
    return [e.value for e in at.main.error]


def _typo(root):
    path = root / "workspace.toml"
    path.write_text(path.read_text().replace("weights =", "weigths ="))
    return "workspace.toml:6: [model] unknown key 'weigths'; did you mean 'weights'?"


def _weights_text(root):
    (root / "weights.pth").write_text("not a checkpoint\n")
    return "weights.pth is a text file, not a checkpoint"


def _store_damaged(root):
    (root / ".groupfix" / "store.sqlite").write_bytes(b"\x00garbage" * 512)
    return "is damaged or not a Groupfix store"


def _store_newer(root):
    with sqlite3.connect(root / ".groupfix" / "store.sqlite") as db:
        db.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
    db.close()
    return "was written by a newer Groupfix (store schema 7"


@pytest.fixture
def warm_workspace(tiny_workspace):
    """The tiny workspace with its store and eval outputs already written (``.groupfix`` beside it)."""
    from workspace.core import open_workspace

    past = time.time() - 600  # past the listing cache's racy window, so opening again reuses the listing
    for path in [tiny_workspace.parent / "data", *(tiny_workspace.parent / "data").rglob("*")]:
        os.utime(path, (past, past))
    open_workspace(tiny_workspace).outputs("eval", device="cpu")
    return tiny_workspace


@pytest.mark.parametrize("make", [_typo, _weights_text, _store_damaged, _store_newer],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_workspace_that_does_not_open_is_one_message_in_the_main_area(warm_workspace, make):
    root = warm_workspace.parent
    fragment = make(root)
    before = tree_digest(root / "data"), content_digest(root)
    at = page(warm_workspace)
    errors = main_errors(at)
    assert len(errors) == 1 and errors[0].startswith(f"**Cannot open workspace `{warm_workspace}`**"), errors
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in errors[0]
    assert any("Reload workspace" in i.value for i in at.main.info)
    assert not at.title  # the page stopped at the message
    assert tree_digest(root / "data") == before[0] and not changed(before[1], content_digest(root))


@pytest.fixture
def read_only_state(warm_workspace):
    undo = make_read_only(warm_workspace.parent / ".groupfix")
    yield warm_workspace
    undo()


def test_a_read_only_workspace_can_be_viewed(read_only_state):
    root = read_only_state.parent
    before = content_digest(root)
    at = page(read_only_state)
    assert at.title[0].value == "tiny" and not main_errors(at)
    assert {m.label for m in at.metric} >= {"Eval accuracy", "Train images", "Eval images"}
    at.switch_page("pages/confusion.py").run()
    assert not at.exception and not main_errors(at), main_errors(at)
    assert not changed(before, content_digest(root))


def test_the_report_says_why_it_cannot_be_written(read_only_state):
    root = read_only_state.parent
    before = content_digest(root)
    at = page(read_only_state)
    at.button(key="ov_report").click().run()
    assert not at.exception, at.exception
    errors = main_errors(at)
    assert len(errors) == 1 and errors[0].startswith("Cannot write the report: cannot create "), errors
    assert "Read-only file system" in errors[0] or "Permission denied" in errors[0], errors
    assert not changed(before, content_digest(root))


def test_a_repair_launch_says_why_it_cannot_start(read_only_state):
    root = read_only_state.parent
    before = content_digest(root)
    at = page(read_only_state, "repair")
    at.text_input(key="repair_targets_text").set_value("cat,dog").run()
    at.radio(key="repair_method").set_value("w-os").run()
    at.button(key="repair_launch").click().run()
    assert not changed(before, content_digest(root))
    assert not at.exception, at.exception
    errors = main_errors(at)
    assert any(e.startswith("Cannot launch: ") and "is read-only: cannot save a job" in e for e in errors), errors
