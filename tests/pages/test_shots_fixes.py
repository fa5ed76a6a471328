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
    """The original model has blanks, not "None" (rho, epochs and target error a dash); a repair shows its
    target as a / b, its accuracy in %, rho, epochs and target error."""
    ws = SimpleNamespace(class_names=["cat", "dog", "fox"], versions=lambda: [
        {"id": "orig", "parent": None, "method": None, "rho": None, "targets": None, "seed": None,
         "epochs": None, "metrics": None, "path": "/m/orig.pt"},
        {"id": "v1-bir", "parent": "orig", "method": "bir", "rho": 0.05, "seed": 0, "epochs": 1,
         "targets": {"kind": "confusion", "targets": [["cat", "fox"]]},
         "metrics": {"accuracy": 0.8125, "target_error": 0.25}, "path": "/m/v1.pt"},
        {"id": "v2-w-bn", "parent": "orig", "method": "w-bn", "rho": 0.5, "seed": 0, "epochs": 0.0667,
         "targets": None, "metrics": None, "path": "/m/v2.pt"},  # a quick run: a share of an epoch
    ], cached_outputs=lambda split, version: SimpleNamespace(n=4, accuracy=0.75) if version == "orig" else None)
    table = OV.versions_table(ws)
    orig, repaired = table.iloc[0], table.iloc[1]
    assert (orig["parent"], orig["method"], orig["target"]) == ("", "", "")
    assert (orig["rho"], orig["epochs"], orig["target error"]) == ("—", "—", "—")
    assert (repaired["rho"], repaired["epochs"]) == ("0.05", "1")
    assert table.iloc[2]["epochs"] == "0.0667"  # not rounded down to 0
    assert orig["accuracy"] == pytest.approx(75.0)  # no run measured it: its cached eval outputs
    assert repaired["target"] == "cat / fox"
    assert repaired["accuracy"] == pytest.approx(81.25) and repaired["target error"] == "0.2500"
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


def test_an_ended_sweep_does_not_call_its_lost_runs_pending(tiny_workspace, monkeypatch):
    """A sweep that has ended but whose runs are no longer in the store (the demo's state after a store
    reset): its grid says so instead of "pending", and the table explains why it is missing."""
    import dataclasses

    from repair import sweep
    from repair.loop import TrainConfig
    from tests.pages.test_sweep_page import page
    from workspace.core import open_workspace
    from workspace.targets import Target

    ws = open_workspace(tiny_workspace)
    sweep_id = sweep.create_sweep(ws, Target(((0, 1),), ws.class_names), ["w-os"],
                                  config=TrainConfig(epochs=1, batch_size=4, device="cpu", scope="head"),
                                  rhos=(0.3,), seeds=1)
    real = sweep.sweep_state

    def ended(ws, job_id, **kw):
        state = real(ws, job_id, **kw)
        return dataclasses.replace(state, job={**state.job, "status": "done", "progress": 1.0})

    monkeypatch.setattr(sweep, "sweep_state", ended)
    at = page(tiny_workspace)
    assert at.selectbox(key="sweep_pick").value == sweep_id
    grid = next(d.value for d in at.dataframe if "phase" in d.value.columns)
    assert grid["status"].iloc[0] == "done"  # the original model: its cached eval
    assert "pending" not in set(grid["status"]) and set(grid["status"][1:]) == {"not in the store"}
    assert not any("more runs follow" in c.value for c in at.caption)
    assert any("ended without a result table" in w.value for w in at.warning)


def test_association_heatmap_counts_are_whole_numbers_on_a_neutral_scale():
    import pandas as pd

    from diagnostics.figures_gradcam import association_heatmap

    df = pd.DataFrame({"class": ["cat", "cat", "dog"], "object": ["grass", "cat", "grass"],
                       "count": [61, 3, 2], "rate": [0.131, 0.5, 0.25]})
    counts = association_heatmap(df, value="count", class_names=["cat", "dog"]).data[0]
    assert sorted(t for t in counts.text.ravel() if t) == ["2", "3", "61"]  # not "61.00"
    rates = association_heatmap(df, value="rate", class_names=["cat", "dog"]).data[0]
    assert sorted(t for t in rates.text.ravel() if t) == ["0.13", "0.25", "0.50"]
    top = rates.colorscale[-1][1]  # the colour of the highest rate, "rgb(r,g,b)"
    r, _, b = (int(v) for v in top[top.index("(") + 1:-1].split(","))
    assert b > r  # not red: red means "worse" in this app, and a rate is not a verdict
