import numpy as np
import pytest
import torch

from tests.conftest import write_imagefolder
from workspace.config import TransformSpec
from workspace.data import (
    ArraySplit, ImageDataset, build_transform, csv_class_names, list_imagefolder, read_csv_split,
)
from workspace.errors import WorkspaceError


def test_imagefolder_lists_sorted_with_class_indices(tmp_path):
    write_imagefolder(tmp_path, classes=("b", "a"), per_class=2)
    split = list_imagefolder(tmp_path, None)
    assert split.class_names == ("a", "b")
    assert [p.split("/")[-2:] for p in split.ids] == [["a", "000.png"], ["a", "001.png"], ["b", "000.png"], ["b", "001.png"]]
    assert split.labels.tolist() == [0, 0, 1, 1]


def test_imagefolder_rejects_unknown_class_folder(tmp_path):
    write_imagefolder(tmp_path, classes=("a", "zebra"), per_class=1)
    with pytest.raises(WorkspaceError, match="zebra"):
        list_imagefolder(tmp_path, ("a", "b"))


def test_imagefolder_without_images(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(WorkspaceError, match="no images"):
        list_imagefolder(tmp_path, None)


def test_csv_single_and_multi_label(tmp_path):
    (tmp_path / "s.csv").write_text("path,label\nx.png,dog\ny.png,cat\n")
    split = read_csv_split(tmp_path / "s.csv", ("cat", "dog"))
    assert split.labels.tolist() == [1, 0]
    assert split.ids[0] == str((tmp_path / "x.png").resolve())
    (tmp_path / "m.csv").write_text("path,labels\nx.png,dog|cat\ny.png,\n")
    assert csv_class_names(tmp_path / "m.csv", multi_label=True, separator="|") == ("cat", "dog")
    multi = read_csv_split(tmp_path / "m.csv", ("cat", "dog"), multi_label=True)
    assert multi.labels.tolist() == [[1.0, 1.0], [0.0, 0.0]] and multi.multi_label


def test_csv_unknown_label_names_the_line(tmp_path):
    (tmp_path / "s.csv").write_text("path,label\nx.png,dog\ny.png,cow\n")
    with pytest.raises(WorkspaceError, match=r"s.csv:3: unknown label 'cow'"):
        read_csv_split(tmp_path / "s.csv", ("cat", "dog"))


def test_corrupt_image_yields_not_ok_and_a_reason(tmp_path):
    write_imagefolder(tmp_path, classes=("a",), per_class=2, size=8)
    (tmp_path / "a" / "001.png").write_bytes(b"not a png")
    split = list_imagefolder(tmp_path, None)
    ds = ImageDataset(split, build_transform(TransformSpec(resize=8)))
    x0, i0, ok0 = ds[0]
    x1, i1, ok1 = ds[1]
    assert ok0 and not ok1 and (i0, i1) == (0, 1)
    assert x1.shape == x0.shape == (3, 8, 8) and torch.all(x1 == 0)
    assert "UnidentifiedImageError" in ds.problem(1).error


def test_transform_normalises_and_resizes():
    images = np.full((1, 10, 10, 3), 255, dtype=np.uint8)
    split = ArraySplit(images, np.array([0]), ("a", "b"))
    x, _, ok = ImageDataset(split, build_transform(TransformSpec(resize=16, mean=(0.5,) * 3, std=(0.25,) * 3)))[0]
    assert ok and x.shape == (3, 16, 16)
    assert torch.allclose(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25


def test_fingerprint_changes_with_labels():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    a = ArraySplit(images, np.array([0, 1]), ("a", "b"))
    b = ArraySplit(images, np.array([1, 1]), ("a", "b"))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == ArraySplit(images, np.array([0, 1]), ("a", "b")).fingerprint()
