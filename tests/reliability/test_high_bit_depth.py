"""High-bit-depth images decode to the right 8-bit values instead of being clipped.

From the user trial (issue 17): a 16-bit PNG came out 99.4 % white because PIL's
``convert("RGB")`` clips grey values above 255. A 16-bit value ``v`` must become
``round(v / 65535 * 255)`` = ``round(v / 257)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.reliability.conftest import tree_digest
from workspace.data import list_imagefolder, to_rgb

# 16-bit values and their 8-bit values worked out by hand (v / 257, rounded)
HAND = [(0, 0), (257, 1), (1000, 4), (32896, 128), (65278, 254), (65535, 255)]


def gradient16() -> np.ndarray:
    """(16, 64) uint16: a horizontal ramp 0 .. 65535 (1040.2 per column), same on every row."""
    return np.tile(np.round(np.linspace(0, 65535, 64)).astype(np.uint16), (16, 1))


def test_16bit_png_gradient_decodes_to_the_right_8bit_values(tmp_path):
    ramp = gradient16()
    write = tmp_path / "ws" / "a"
    write.mkdir(parents=True)
    Image.fromarray(ramp).save(write / "ramp.png")
    Image.fromarray(np.array([[v for v, _ in HAND]], dtype=np.uint16)).save(write / "hand.png")
    with Image.open(write / "ramp.png") as img:
        assert img.mode == "I;16"  # what the trial's PNGs open as
        assert (np.asarray(img.convert("RGB")) == 255).mean() > 0.9  # PIL alone clips them
    before = tree_digest(tmp_path / "ws")
    split = list_imagefolder(tmp_path / "ws", None)
    hand = np.asarray(split.load(split.ids.index(str(write / "hand.png"))))
    assert hand.shape == (1, len(HAND), 3) and hand.dtype == np.uint8
    assert hand[0, :, 0].tolist() == [b for _, b in HAND] and (hand == hand[..., :1]).all()
    rgb = np.asarray(split.load(split.ids.index(str(write / "ramp.png"))))
    col = rgb[0, :, 0].astype(int)
    assert col[0] == 0 and col[-1] == 255 and (np.diff(col) > 0).all()  # strictly rising, ~4 per column
    np.testing.assert_array_equal(col, np.round(ramp[0] / 257).astype(int))
    assert (rgb == 255).mean() == pytest.approx(1 / 64)  # only the last column is white
    assert tree_digest(tmp_path / "ws") == before


def test_16bit_tiff_and_other_modes(tmp_path):
    values = np.array([[v for v, _ in HAND]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "x.tif")
    with Image.open(tmp_path / "x.tif") as img:
        assert img.mode.startswith("I;16")
        assert np.asarray(to_rgb(img))[0, :, 1].tolist() == [b for _, b in HAND]
    # mode "I" (int32) holding 16-bit samples, as older Pillow opens 16-bit PNGs
    as_i = Image.fromarray(values.astype(np.int32))
    assert as_i.mode == "I" and np.asarray(to_rgb(as_i))[0, :, 2].tolist() == [b for _, b in HAND]
    # float images: [0, 1] -> 0..255; NaN -> 0
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32))
    assert floats.mode == "F" and np.asarray(to_rgb(floats))[0, :, 0].tolist() == [0, 128, 255, 0]


def test_palette_and_alpha_modes_convert_as_pil_does():
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert to_rgb(rgba).mode == "RGB" and to_rgb(rgba).getpixel((0, 0)) == (10, 20, 30)
    la = Image.new("LA", (2, 2), (77, 255))
    assert to_rgb(la).getpixel((1, 1)) == (77, 77, 77)
    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.info["transparency"] = 0
    assert to_rgb(pal).getpixel((0, 0)) == (200, 100, 50)
    cmyk = Image.new("CMYK", (1, 1), (0, 0, 0, 0))
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 255, 255)
