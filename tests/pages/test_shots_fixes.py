"""AppTests of what a user tripped over when looking at every page: the model versions table,
the per-neuron delta chart's order."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pages import ui
from pages.widgets import overview as OV
from tests.conftest import REPO

TIMEOUT = 180


def test_versions_table_is_readable():
    """The original model has blanks, not "None"; a repair shows its target as a / b and its accuracy in %."""
    ws = SimpleNamespace(class_names=["cat", "dog", "fox"], versions=lambda: [
        {"id": "orig", "parent": None, "method": None, "rho": None, "targets": None, "seed": None,
         "epochs": None, "metrics": None, "path": "/m/orig.pt"},
        {"id": "v1-bir", "parent": "orig", "method": "bir", "rho": 0.05, "seed": 0, "epochs": 1,
         "targets": {"kind": "confusion", "targets": [["cat", "fox"]]},
         "metrics": {"accuracy": 0.8125, "target_error": 0.25}, "path": "/m/v1.pt"},
    ])
    table = OV.versions_table(ws)
    orig, repaired = table.iloc[0], table.iloc[1]
    assert (orig["parent"], orig["method"], orig["target"]) == ("", "", "")
    assert repaired["target"] == "cat / fox"
    assert repaired["accuracy"] == pytest.approx(81.25) and repaired["target error"] == 0.25
    assert "targets" not in table.columns  # the raw JSON column is gone


def test_neuron_deltas_chart_keeps_the_sort(demo_eval):
    """Neuron ids are numbers; the chart must place the bars in delta order, not by id."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state[ui.WORKSPACE] = "demo"
    at.run()
    at.switch_page("pages/neurons.py").run()
    assert not at.exception, at.exception
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    deltas = [c for c in charts if c["data"] and c["data"][0]["type"] == "bar"]
    assert len(deltas) == 1
    fig = deltas[0]
    assert fig["layout"]["xaxis"]["type"] == "category"
    y = fig["data"][0]["y"]
    deltas = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]) if isinstance(y, dict) else np.array(y)
    assert len(deltas) > 1 and np.all(np.diff(deltas) <= 0)  # drawn largest first, as the axis title says
    assert fig["data"][0]["x"] != sorted(fig["data"][0]["x"], key=int)  # the demo's order is not the id order


def test_repair_page_preselects_a_method_that_can_run(tiny_workspace):
    """The tiny workspace has no reserved set: bir (first in the list) is n/a, so the page opens on the
    first method that is available, with Launch enabled."""
    from tests.pages.test_repair_page import page

    at = page(tiny_workspace)
    radio = at.radio(key="repair_method")
    assert radio.options[0] == "bir (n/a)"  # the situation this test is about
    assert radio.value != "bir" and "(n/a)" not in radio.format_func(radio.value)
    assert not at.button(key="repair_launch").disabled
    assert not at.warning  # no "not applicable" warning on a fresh page

