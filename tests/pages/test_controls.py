"""The shared page controls: metric deltas coloured by better / worse, the pager's slices."""

from streamlit.proto.Metric_pb2 import Metric

from pages.widgets.controls import change
from tests.pages.test_confusion_pages import page
from tests.pages.helpers import seeded


def test_change_is_green_when_better_red_when_worse_and_grey_when_zero():
    assert change(0.0123, "+.2%") == {"delta": "+1.23%", "delta_color": "normal"}
    assert change(-0.0123, "+.2%") == {"delta": "-1.23%", "delta_color": "normal"}   # Streamlit: down = red
    # a lower error is better: the inverse colours (down = green)
    assert change(-0.05, "+.4f", lower_is_better=True) == {"delta": "-0.0500", "delta_color": "inverse"}
    # rounds to zero where it is shown: no colour and no arrow
    assert change(0.00004, "+.2%") == {"delta": "+0.00%", "delta_color": "off", "delta_arrow": "off"}
    assert change(-0.00004, "+.4f", lower_is_better=True)["delta_color"] == "off"


def test_what_if_at_rho_one_shows_no_coloured_change():
    at = page("wos", **seeded("demo", target={"kind": "confusion", "targets": [["disk", "oval"]]}, source="test"))
    shown = {m.label: m.proto for m in at.metric}
    for label in ("Accuracy", "Target error (type1conf)"):
        assert shown[label].color == Metric.MetricColor.GRAY and shown[label].direction == Metric.MetricDirection.NONE
    at.select_slider(key="wos_rho_slider").set_value(0.1).run()
    shown = {m.label: m.proto for m in at.metric}
    error = shown["Target error (type1conf)"]
    # w-os at rho 0.1 lowers the target error: down and green
    assert error.direction == Metric.MetricDirection.DOWN and error.color == Metric.MetricColor.GREEN
