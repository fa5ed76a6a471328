"""The shared page controls: metric deltas coloured by better / worse, the pager's slices, the
gallery element."""

import numpy as np
from streamlit.proto.Metric_pb2 import Metric

from pages.widgets.controls import change
from tests.pages.helpers import caption_ref, caption_text, galleries, seeded
from tests.pages.test_confusion_pages import page


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


def test_thumbnails_are_inlined_small_and_captions_escaped():
    import base64
    import io

    from PIL import Image

    from pages.widgets.controls import caption_html, thumbnail_uri

    def decoded(uri):
        head, data = uri.split(",", 1)
        return head, Image.open(io.BytesIO(base64.b64decode(data)))

    small = np.zeros((32, 32, 3), np.uint8)
    small[:, :16] = 255
    head, img = decoded(thumbnail_uri(small, 84))
    assert head == "data:image/png;base64" and img.size == (32, 32)      # small: lossless, as it is
    assert np.array_equal(np.asarray(img.convert("RGB")), small)
    head, img = decoded(thumbnail_uri(np.zeros((375, 500, 3), np.uint8), 84))
    assert head == "data:image/jpeg;base64" and img.size == (84, 63)     # a photo: the display width, aspect kept
    head, img = decoded(thumbnail_uri(np.zeros((100, 100, 3), np.uint8), 84))
    assert head == "data:image/png;base64" and img.size == (84, 84)      # small: PNG, at most the width
    assert caption_html("**PIVOTAL** <cat> → dog  \nd=0.12 & more") == \
        "<b>PIVOTAL</b> &lt;cat&gt; → dog<br>d=0.12 &amp; more"


def test_image_grid_is_one_html_element_with_linked_captions(demo_ws):
    """The gallery's captions read back as the markdown the pages write (the test helpers parse
    them), each linked to the sample view; an image that cannot load says so."""
    from streamlit.testing.v1 import AppTest

    def app(spec):
        from pages.widgets import controls
        from workspace.core import open_workspace

        ws = open_workspace(spec)
        real = controls._load
        controls._load = lambda ws, split, index: None if index == 2 else real(ws, split, index)
        items = [("eval", 0, "**PIVOTAL** a → b"), ("train", 1, "x / y  \nd=0.50"), ("eval", 2, None)]
        controls.image_grid(ws, items, width=84)
        controls._load = real

    at = AppTest.from_function(app, args=("demo",), default_timeout=120).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 0 and len(galleries(at)) == 1
    captions = galleries(at)[0]
    assert [caption_ref(c) for c in captions] == ["eval:0", "train:1", "eval:2"]
    assert [caption_text(c) for c in captions] == ["**PIVOTAL** a → b", "x / y  \nd=0.50", "cannot load"]
    body = at.get("html")[0].value
    assert body.count('target="_blank"') == 3 and body.count("data:image/png;base64,") == 3
    assert "sample?" in captions[1] and "split=train" in captions[1] and "index=1" in captions[1]
