"""The listing cache (issue 12): a warm reopen reads one file and stats only folders.

Folder times are set 10 s in the past after writing the fixtures, so a listing is not
"racy" (a folder modified within the timestamp granularity of its listing is never
trusted); a real change then moves the folder's time to now.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_imagefolder
from workspace.config import DataSpec
from workspace.data import list_imagefolder, load_splits, read_csv_split

PER_CLASS = 20


def age(root: Path, seconds: float = 10.0) -> None:
    """Set the mtime of ``root`` and every folder and file under it ``seconds`` in the past."""
    past = time.time_ns() - int(seconds * 1e9)
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), ns=(past, past))
        os.utime(dirpath, ns=(past, past))


class Calls:
    """Counts os.scandir / os.stat / os.lstat calls while installed."""

    def __init__(self, monkeypatch):
        self.counts = {"scandir": 0, "stat": 0, "lstat": 0}
        for name in self.counts:
            real = getattr(os, name)

            def counted(*args, _real=real, _name=name, **kwargs):
                self.counts[_name] += 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(os, name, counted)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "train"
    write_imagefolder(root, per_class=PER_CLASS, size=4)  # 3 classes x 20 PNGs
    age(tmp_path)
    return root


def test_warm_reopen_stats_only_folders(folder, tmp_path, monkeypatch):
    cache = tmp_path / "state" / "listing"
    cold_calls = Calls(monkeypatch)
    cold = list_imagefolder(folder, None, cache_dir=cache)
    assert cold_calls.counts["stat"] >= 3 * PER_CLASS  # the fingerprint stats every file once
    monkeypatch.undo()
    assert len(list(cache.glob("listing-*.json"))) == 1 and not list(cache.glob("*.tmp"))
    warm_calls = Calls(monkeypatch)
    warm = list_imagefolder(folder, None, cache_dir=cache)
    fingerprint = warm.fingerprint()
    counts = dict(warm_calls.counts)
    monkeypatch.undo()
    assert counts["scandir"] == 0  # nothing is listed again
    assert counts["stat"] <= 1 + 4  # is_dir of the split + one stamp per folder (split + 3 classes)
    assert warm.ids == cold.ids and warm.labels.tolist() == cold.labels.tolist()
    assert warm.class_names == cold.class_names == ("cat", "dog", "fox")
    assert fingerprint == cold.fingerprint() == list_imagefolder(folder, None).fingerprint()


def test_added_and_removed_files_are_seen(folder, tmp_path):
    cache = tmp_path / "cache"
    first = list_imagefolder(folder, None, cache_dir=cache)
    (folder / "dog" / "new.png").write_bytes((folder / "dog" / "000.png").read_bytes())
    added = list_imagefolder(folder, None, cache_dir=cache)
    assert len(added) == len(first) + 1 and str(folder / "dog" / "new.png") in added.ids
    assert added.labels[added.ids.index(str(folder / "dog" / "new.png"))] == 1
    assert added.fingerprint() != first.fingerprint()
    age(tmp_path)
    (folder / "cat" / "000.png").unlink()
    removed = list_imagefolder(folder, None, cache_dir=cache)
    assert len(removed) == len(first) and str(folder / "cat" / "000.png") not in removed.ids


def test_file_added_in_a_nested_folder_is_seen(folder, tmp_path):
    (folder / "cat" / "more").mkdir()
    age(tmp_path)
    cache = tmp_path / "cache"
    first = list_imagefolder(folder, None, cache_dir=cache)
    (folder / "cat" / "more" / "x.png").write_bytes((folder / "cat" / "001.png").read_bytes())
    again = list_imagefolder(folder, None, cache_dir=cache)  # only cat/more's time changed
    assert len(again) == len(first) + 1 and str(folder / "cat" / "more" / "x.png") in again.ids


def test_in_place_replacement_needs_a_recheck(folder, tmp_path):
    cache = tmp_path / "cache"
    first = list_imagefolder(folder, None, cache_dir=cache)
    image = folder / "fox" / "003.png"
    with open(image, "r+b") as f:  # overwrite in place: the folder's time does not move
        f.seek(0, os.SEEK_END)
        f.write(b"\0")
    folder_time = (folder / "fox").stat().st_mtime_ns
    assert time.time_ns() - folder_time > 5e9
    stale = list_imagefolder(folder, None, cache_dir=cache)
    assert stale.fingerprint() == first.fingerprint()  # the documented limit
    fresh = list_imagefolder(folder, None, cache_dir=cache, recheck=True)
    assert fresh.ids == first.ids and fresh.fingerprint() != first.fingerprint()
    again = list_imagefolder(folder, None, cache_dir=cache)  # the recheck refreshed the entry
    assert again.fingerprint() == fresh.fingerprint()


def test_racy_listing_is_not_trusted(tmp_path, monkeypatch):
    root = tmp_path / "train"
    write_imagefolder(root, per_class=2, size=4)  # folders modified just now
    cache = tmp_path / "cache"
    list_imagefolder(root, None, cache_dir=cache)
    calls = Calls(monkeypatch)
    list_imagefolder(root, None, cache_dir=cache)
    assert calls.counts["scandir"] > 0  # listed again: a change within the same tick could hide


def test_csv_listing_reused_until_the_csv_changes(tmp_path, monkeypatch):
    write_imagefolder(tmp_path / "img", classes=("cat", "dog"), per_class=2, size=4)
    csv = tmp_path / "s.csv"
    csv.write_text("path,label\nimg/cat/000.png,cat\nimg/dog/000.png,dog\nimg/cat/000.png,cat\n")
    age(tmp_path)
    cache = tmp_path / "cache"
    first = read_csv_split(csv, ("cat", "dog"), cache_dir=cache, confine_to=tmp_path)
    calls = Calls(monkeypatch)
    warm = read_csv_split(csv, ("cat", "dog"), cache_dir=cache, confine_to=tmp_path)
    counts = dict(calls.counts)
    monkeypatch.undo()
    assert counts["stat"] <= 2 and counts["lstat"] <= 4  # the CSV's stamp, not one per row
    assert warm.ids == first.ids and warm.warnings == first.warnings and "line 4 repeats line 2" in warm.warnings[0]
    csv.write_text("path,label\nimg/cat/000.png,cat\nimg/dog/000.png,dog\nimg/dog/001.png,dog\n")
    changed = read_csv_split(csv, ("cat", "dog"), cache_dir=cache, confine_to=tmp_path)
    assert len(changed) == 3 and changed.labels.tolist() == [0, 1, 1] and changed.warnings == []


def test_multi_label_listing_round_trips(tmp_path):
    write_imagefolder(tmp_path / "img", classes=("a",), per_class=2, size=4)
    csv = tmp_path / "m.csv"
    csv.write_text("path,labels\nimg/a/000.png,x|z\nimg/a/001.png,\n")
    age(tmp_path)
    cache = tmp_path / "cache"
    cold = read_csv_split(csv, ("x", "y", "z"), multi_label=True, cache_dir=cache)
    warm = read_csv_split(csv, ("x", "y", "z"), multi_label=True, cache_dir=cache)
    assert warm.labels.dtype == np.float32 and warm.labels.tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert warm.fingerprint() == cold.fingerprint()


def test_cache_is_keyed_by_split_and_arguments(folder, tmp_path):
    cache = tmp_path / "cache"
    other = tmp_path / "test"
    write_imagefolder(other, per_class=1, size=4)
    age(tmp_path)
    spec = DataSpec(format="imagefolder", train=folder, eval=other, classes=None, confine_to=tmp_path)
    splits = load_splits(spec, multi_label=False, cache_dir=cache)
    assert len(list(cache.glob("listing-*.json"))) == 2
    warm = load_splits(spec, multi_label=False, cache_dir=cache)
    assert {k: len(v) for k, v in warm.items()} == {"train": 60, "eval": 3}
    assert warm["eval"].ids == splits["eval"].ids
    narrower = list_imagefolder(folder, ("cat", "dog", "fox", "owl"), cache_dir=cache)  # other classes: relisted
    assert narrower.warnings == [f"class 'owl' has no folder in {folder}"]


def test_corrupt_or_unwritable_cache_only_costs_time(folder, tmp_path):
    cache = tmp_path / "cache"
    first = list_imagefolder(folder, None, cache_dir=cache)
    entry = next(cache.glob("listing-*.json"))
    entry.write_text("{not json")
    assert list_imagefolder(folder, None, cache_dir=cache).ids == first.ids
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache_dir that cannot be created
    assert list_imagefolder(folder, None, cache_dir=blocked / "sub").ids == first.ids
