"""Bad data splits: an error of one line naming the file and line, or a warning on the split.

From the user trial (issue 17): CSV duplicates and a file with two labels were accepted,
a non-UTF-8 CSV gave a traceback, ``../../etc/passwd`` in a CSV was opened, symlinks could
leave the workspace, an empty class folder went unnoticed. Each case breaks the valid
``bad_ws`` workspace in one way, runs ``load_config`` + ``load_splits`` and checks the
answer, and that nothing under the workspace folder changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.conftest import BASE, CSV_BASE, tree_digest, write_png
from workspace.config import load_config
from workspace.data import load_splits, read_csv_split
from workspace.errors import WorkspaceError

TRAIN_CSV = "path,label\ntrain/cat/0.png,cat\ntrain/cat/1.png,cat\ntrain/dog/0.png,dog\ntrain/dog/1.png,dog\n"


def append_train_row(root: Path, row: str) -> str:
    """Add ``row`` as line 6 of train.csv (after the header and 4 rows); returns the CSV name."""
    (root / "train.csv").write_text(TRAIN_CSV + row + "\n")
    return "train.csv"


def open_splits(root: Path):
    cfg = load_config(root / "workspace.toml")
    return load_splits(cfg.data, multi_label=cfg.task == "multi_label")


def _conflict(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    append_train_row(root, "train/cat/0.png,dog")
    return ["train.csv:", "train/cat/0.png has two different labels", "line 2 'cat'", "line 6 'dog'"]


def _conflict_other_spelling(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    append_train_row(root, "./train/dog/../cat/0.png,dog")  # the same file as line 2
    return ["two different labels", "line 2 'cat'", "line 6 'dog'"]


def _non_utf8(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    (root / "train.csv").write_bytes(TRAIN_CSV.replace("train/dog/0.png,dog", "train/dog/0.png,d\xf6g")
                                     .encode("latin-1"))
    return ["train.csv:4: not UTF-8 text", "0xf6"]


def _csv_escape(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    append_train_row(root, "../../etc/passwd,cat")
    return ["train.csv:6: ../../etc/passwd resolves to", "outside the workspace folder", "allow_outside = true"]


def _csv_absolute(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    append_train_row(root, f"{root.parent / 'outside' / 'x.png'},cat")
    return ["train.csv:6:", "outside the workspace folder", "allow_outside = true"]


def _csv_symlink_escape(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    os.symlink(root.parent / "outside" / "x.png", root / "link.png")
    append_train_row(root, "link.png,cat")
    return ["train.csv:6: link.png resolves to", str((root.parent / "outside" / "x.png").resolve()), "allow_outside"]


def _csv_empty_path(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    append_train_row(root, ",cat")
    return ["train.csv:6: empty path"]


def _csv_empty_label(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    append_train_row(root, "test/cat/1.png,")
    return ["train.csv:6: empty label"]


def _csv_unknown_label(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    (root / "test.csv").write_text("path,label\ntest/cat/0.png,cat\ntest/dog/0.png,cow\n")
    return ["test.csv:3: unknown label 'cow'"]


def _csv_no_path_column(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    (root / "train.csv").write_text(TRAIN_CSV.replace("path,label", "file,label"))
    return ["train.csv needs a 'path' column, found file, label"]


def _csv_empty_file(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    (root / "train.csv").write_text("")
    return ["train.csv is empty"]


def _csv_header_only(root):
    (root / "workspace.toml").write_text(CSV_BASE)
    (root / "train.csv").write_text("path,label\n")
    return ["train.csv has no rows"]


def _symlink_escape(root):
    os.symlink(root.parent / "outside" / "x.png", root / "train" / "cat" / "evil.png")
    return ["evil.png is a symlink whose target", "outside the workspace folder", "allow_outside = true"]


def _split_folder_symlinked_out(root):
    os.symlink(root.parent / "outside", root / "more")
    (root / "workspace.toml").write_text(BASE.replace('eval = "test"', 'eval = "more"'))
    return ["workspace.toml:9: [data] eval = 'more' is outside the workspace folder", "allow_outside = true"]


def _unknown_class_folder(root):
    write_png(root / "test" / "cow" / "0.png", 5)
    return ["test has class folder(s) cow that are not among the 2 classes"]


ERRORS = [_conflict, _conflict_other_spelling, _non_utf8, _csv_escape, _csv_absolute, _csv_symlink_escape,
          _csv_empty_path, _csv_empty_label, _csv_unknown_label, _csv_no_path_column, _csv_empty_file,
          _csv_header_only, _symlink_escape, _split_folder_symlinked_out, _unknown_class_folder]


@pytest.mark.parametrize("make", ERRORS, ids=[f.__name__.strip("_") for f in ERRORS])
def test_bad_split_is_one_line_naming_the_problem(bad_ws, make):
    fragments = make(bad_ws)
    before = tree_digest(bad_ws)
    with pytest.raises(WorkspaceError) as info:
        open_splits(bad_ws)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert tree_digest(bad_ws) == before


def test_empty_class_folder_is_a_warning(bad_ws):
    (bad_ws / "train" / "bird").mkdir()
    before = tree_digest(bad_ws)
    splits = open_splits(bad_ws)
    assert splits["train"].class_names == ("bird", "cat", "dog") and len(splits["train"]) == 4
    assert splits["train"].warnings == [f"class folder {(bad_ws / 'train' / 'bird').resolve()} has no images"]
    assert splits["eval"].warnings == [f"class 'bird' has no folder in {(bad_ws / 'test').resolve()}"]
    assert tree_digest(bad_ws) == before


def test_duplicate_csv_rows_are_kept_once_with_a_warning(bad_ws):
    (bad_ws / "workspace.toml").write_text(CSV_BASE)
    (bad_ws / "train.csv").write_text(TRAIN_CSV + "train/cat/0.png,cat\ntrain/dog/1.png, dog\n")
    before = tree_digest(bad_ws)
    train = open_splits(bad_ws)["train"]
    assert len(train) == 4 and train.labels.tolist() == [0, 0, 1, 1]
    assert len(train.warnings) == 1
    assert "train.csv: 2 duplicate row(s) kept once (line 6 repeats line 2, line 7 repeats line 5)" in train.warnings[0]
    assert tree_digest(bad_ws) == before


def test_multi_label_same_set_in_another_order_is_a_duplicate_not_a_conflict(bad_ws):
    (bad_ws / "m.csv").write_text("path,labels\ntrain/cat/0.png,cat|dog\ntrain/cat/0.png,dog|cat\n"
                                  "train/dog/0.png,dog\ntrain/dog/0.png,cat\n")
    with pytest.raises(WorkspaceError, match=r"train/dog/0.png has two different labels: line 4 'dog' and line 5 'cat'"):
        read_csv_split(bad_ws / "m.csv", ("cat", "dog"), multi_label=True)
    (bad_ws / "m.csv").write_text("path,labels\ntrain/cat/0.png,cat|dog\ntrain/cat/0.png,dog|cat\n")
    split = read_csv_split(bad_ws / "m.csv", ("cat", "dog"), multi_label=True)
    assert split.labels.tolist() == [[1.0, 1.0]] and "line 3 repeats line 2" in split.warnings[0]


def test_empty_multi_label_separator_is_one_line(bad_ws):
    (bad_ws / "m.csv").write_text("path,labels\ntrain/cat/0.png,cat|dog\n")
    with pytest.raises(WorkspaceError, match=r"^\[data\] label_separator must be non-empty text, got ''$"):
        read_csv_split(bad_ws / "m.csv", ("cat", "dog"), multi_label=True, separator="")


def test_allow_outside_lets_csv_rows_leave_the_folder(bad_ws):
    (bad_ws / "workspace.toml").write_text("allow_outside = true\n" + CSV_BASE)
    append_train_row(bad_ws, "../outside/x.png,cat")
    train = open_splits(bad_ws)["train"]
    assert train.ids[-1] == str((bad_ws.parent / "outside" / "x.png").resolve()) and train.labels[-1] == 0


def test_demo_array_splits_are_not_confined():
    import numpy as np

    from workspace.data import ArraySplit

    split = ArraySplit(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), ("a", "b"))
    assert split.warnings == [] and split.load(1).size == (4, 4)
