"""The Target type: parsing, views, round trips, validation."""

import pytest

from workspace.targets import Target

NAMES = ("cat", "dog", "fox", "owl")


def test_parse_names_and_indices():
    assert Target.parse("cat,dog", NAMES).groups == ((0, 1),)
    assert Target.parse("cat,dog; dog,fox", NAMES).groups == ((0, 1), (1, 2))
    assert Target.parse("fox,cat,dog", NAMES).groups == ((2, 0, 1),)
    assert Target.parse("0, 3", NAMES).groups == ((0, 3),)
    with pytest.raises(ValueError, match="unknown class 'cow'; valid classes: cat, dog, fox, owl"):
        Target.parse("cat,cow", NAMES)
    with pytest.raises(ValueError, match="different classes"):
        Target.parse("cat,cat", NAMES)
    with pytest.raises(ValueError, match="all pairs or all triplets"):
        Target.parse("cat,dog; cat,dog,fox", NAMES)
    with pytest.raises(ValueError, match="no targets"):
        Target.parse(" ; ", NAMES)


def test_views_and_round_trip():
    pair = Target.parse("dog,cat; fox,owl", NAMES)
    assert pair.kind == "confusion" and pair.classes == [0, 1, 2, 3]
    assert pair.names == [["dog", "cat"], ["fox", "owl"]] and pair.label == "dog / cat; fox / owl"
    assert pair.text == "dog,cat; fox,owl" and Target.parse(pair.text, NAMES) == pair
    triplet = Target.parse("cat,dog,fox", NAMES)
    assert triplet.kind == "bias" and triplet.label == "cat / dog | fox" and triplet.classes == [0, 1, 2]
    assert Target.from_dict(triplet.to_dict(), NAMES) == triplet
    assert triplet.to_dict() == {"kind": "bias", "targets": [["cat", "dog", "fox"]]}
    # a stored target naming classes another workspace does not have is ignored, not an error
    assert Target.from_dict({"kind": "confusion", "targets": [["disk", "oval"]]}, NAMES) is None
    assert Target.from_dict(None, NAMES) is None


def test_direct_construction_is_validated():
    with pytest.raises(ValueError, match="outside"):
        Target(((0, 7),), NAMES)
    with pytest.raises(ValueError, match="repeats"):
        Target(((1, 1),), NAMES)
    assert Target([[1, 0]], NAMES).groups == ((1, 0),)  # lists are normalised to tuples
