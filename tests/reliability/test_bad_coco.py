"""Bad COCO instance files: bad annotations are listed and skipped, a non-COCO file is one line.

From the user trial (issue 17): a bad RLE or an undeclared category gave empty masks
without a word; a non-numeric bbox, polygons written as strings, a missing ``image_id``,
``annotations`` that is not a list or a ``width`` in quotes gave tracebacks.

Every per-annotation case adds one bad annotation (id 11, category "sky") beside a good
one (id 10: bbox [0, 0, 4, 8] = the left half of the 8x8 image ``train/cat/0.png``, 32
pixels of "grass"): the good one must still be drawn, the bad one must be skipped and
listed with its reason.
"""

from __future__ import annotations

import copy
import json

import pytest

from diagnostics.mask_sources import CocoMasks
from tests.reliability.conftest import tree_digest
from workspace.data import list_imagefolder
from workspace.errors import WorkspaceError

GOOD = {
    "images": [{"id": 1, "file_name": "train/cat/0.png", "width": 8, "height": 8},
               {"id": 2, "file_name": "train/dog/0.png", "width": 8, "height": 8}],
    "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 8]}],
    "categories": [{"id": 1, "name": "grass"}, {"id": 2, "name": "sky"}],
}

BAD_ANNOTATIONS = [
    ("bbox_not_numeric", {"bbox": ["a", 0, 2, 2]}, "bbox must be 4 numbers"),
    ("bbox_three_values", {"bbox": [0, 0, 2]}, "bbox must be 4 numbers"),
    ("bbox_negative_size", {"bbox": [0, 0, -2, 2]}, "width >= 0"),
    ("polygons_as_string", {"segmentation": "1,1,4,1,4,4"}, "segmentation must be polygons"),
    ("polygon_of_strings", {"segmentation": [["1", "1", "4", "1", "4", "4"]]}, "polygon must be a list of numbers"),
    ("polygon_two_points", {"segmentation": [[1, 1, 4, 1]]}, "at least 6 numbers (3 points), got 4"),
    ("polygon_odd_count", {"segmentation": [[1, 1, 4, 1, 4, 4, 1]]}, "even count"),
    ("no_image_id", {"image_id": None}, "no image_id"),
    ("unknown_image_id", {"image_id": 99}, "image_id 99 is not among the images"),
    ("undeclared_category", {"category_id": 7}, "category_id 7 is not declared in categories"),
    ("rle_runs_short", {"segmentation": {"size": [8, 8], "counts": [0, 10]}}, "RLE runs cover 10 pixels, not 8x8 = 64"),
    ("rle_size_mismatch", {"segmentation": {"size": [4, 4], "counts": [16]}},
     "RLE size [4, 4] does not match the image's 8x8"),
    ("rle_counts_text_items", {"segmentation": {"size": [8, 8], "counts": ["a"]}}, "RLE counts must be"),
    ("rle_string_truncated", {"segmentation": {"size": [8, 8], "counts": "0X"}}, "RLE counts string is truncated"),
    ("rle_no_size", {"segmentation": {"counts": [64]}}, "RLE size must be [height, width]"),
    ("nothing_to_draw", {}, "no segmentation and no bbox"),
]


@pytest.fixture
def coco(bad_ws):
    """(write(doc) -> path, the train split) on the bad_ws workspace."""
    split = list_imagefolder(bad_ws / "train", None)

    def write(doc, *, raw: bytes | None = None):
        path = bad_ws / "instances.json"
        path.write_bytes(raw if raw is not None else json.dumps(doc).encode())
        return path

    return write, split


@pytest.mark.parametrize("case_id, change, reason", BAD_ANNOTATIONS, ids=[c[0] for c in BAD_ANNOTATIONS])
def test_bad_annotation_is_listed_and_skipped(bad_ws, coco, case_id, change, reason):
    write, split = coco
    bad = {"id": 11, "image_id": 1, "category_id": 2, **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    doc = copy.deepcopy(GOOD)
    doc["annotations"].append(bad)
    path = write(doc)
    before = tree_digest(bad_ws)
    masks = CocoMasks(path, split)
    assert len(masks.problems) == 1 and masks.problems[0].startswith("annotations[1] (id 11): ")
    assert reason in masks.problems[0], masks.problems[0]
    assert masks.warnings == [f"instances.json: 1 of 2 annotations skipped: {masks.problems[0]}"]
    objects = masks.objects(split.ids.index(str(bad_ws / "train" / "cat" / "0.png")))
    assert set(objects) == {"grass"}  # the bad "sky" annotation is not drawn as an empty mask
    assert objects["grass"][:, :4].all() and objects["grass"].sum() == 32
    assert tree_digest(bad_ws) == before


def test_annotation_that_is_not_an_object(coco):
    write, split = coco
    doc = copy.deepcopy(GOOD)
    doc["annotations"].append("oops")
    masks = CocoMasks(write(doc), split)
    assert masks.problems == ["annotations[1]: not an object: 'oops'"]


def test_many_problems_are_summarised_in_one_line(coco):
    write, split = coco
    doc = copy.deepcopy(GOOD)
    doc["annotations"] += [{"id": 20 + i, "image_id": 1, "category_id": 9} for i in range(5)]
    masks = CocoMasks(write(doc), split)
    assert len(masks.problems) == 5 and len(masks.warnings) == 1
    assert masks.warnings[0].startswith("instances.json: 5 of 6 annotations skipped: annotations[1] (id 20)")
    assert masks.warnings[0].endswith("; ...") and "\n" not in masks.warnings[0]


def _broken(doc_change):
    doc = copy.deepcopy(GOOD)
    doc_change(doc)
    return doc


BAD_FILES = [
    ("annotations_not_a_list", _broken(lambda d: d.update(annotations={"a": 1})), "'annotations' must be a list, got dict"),
    ("width_in_quotes", _broken(lambda d: d["images"][0].update(width="8")),
     "images[0] (id 1) width must be a positive whole number, got '8'"),
    ("top_level_list", [], "the top level must be an object"),
    ("no_images", _broken(lambda d: d.pop("images")), "no 'images' list"),
    ("category_without_name", _broken(lambda d: d["categories"][0].pop("name")),
     "categories[0] needs an integer id and a text name"),
    ("image_without_file_name", _broken(lambda d: d["images"][1].pop("file_name")), "images[1] (id 2) needs a file_name"),
    ("repeated_image_id", _broken(lambda d: d["images"][1].update(id=1)), "images[1] repeats image id 1"),
]


@pytest.mark.parametrize("case_id, doc, fragment", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_file_that_is_not_coco_is_one_line(bad_ws, coco, case_id, doc, fragment):
    write, split = coco
    path = write(doc)
    before = tree_digest(bad_ws)
    with pytest.raises(WorkspaceError) as info:
        CocoMasks(path, split)
    message = str(info.value)
    assert "\n" not in message and message.startswith("instances.json is not a COCO instances file")
    assert fragment in message, message
    assert tree_digest(bad_ws) == before


@pytest.mark.parametrize("raw", [b"{", "{\"images\": \"caf\xe9\"}".encode("latin-1")], ids=["truncated", "latin1"])
def test_unreadable_json_is_one_line(coco, raw):
    write, split = coco
    with pytest.raises(WorkspaceError, match=r"^instances.json is not a COCO instances file \(needs images"):
        CocoMasks(write(None, raw=raw), split)
