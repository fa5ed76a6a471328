"""Mask sources: COCO instances (polygons, boxes, RLE), mask folders, the demo, geometry."""

import json

import numpy as np
import pytest
from PIL import Image

from diagnostics.mask_sources import (
    CocoMasks, decode_rle, load_masks, mask_to_input, masks_fingerprint, rasterize_annotation,
)
from workspace.errors import WorkspaceError


def test_rle_list_and_compressed_string_hand_computed():
    # column-major runs on a 2x2: 1 zero, 2 ones, 1 zero -> (1,0) and (0,1) set
    assert decode_rle([1, 2, 1], 2, 2).tolist() == [[False, True], [True, False]]
    # "0X13M" = counts [0, 40, 3, 37] (40 = 'X1', 37 stored as delta -3 from 40 = 'M')
    mask = decode_rle("0X13M", 8, 10)
    expected = np.ones((8, 10), dtype=bool)
    expected[0:3, 5] = False
    np.testing.assert_array_equal(mask, expected)


def test_polygon_and_box():
    poly = rasterize_annotation({"segmentation": [[1, 1, 4, 1, 4, 4, 1, 4]]}, 6, 6)
    assert poly.sum() == 16 and poly[1:5, 1:5].all()
    box = rasterize_annotation({"bbox": [2, 0, 3, 2]}, 4, 6)  # x, y, w, h
    expected = np.zeros((4, 6), dtype=bool)
    expected[0:2, 2:5] = True
    np.testing.assert_array_equal(box, expected)


def _with_masks(toml_path, value):
    text = toml_path.read_text().replace('eval = "data/test"', f'eval = "data/test"\nmasks = "{value}"')
    toml_path.write_text(text)


def test_coco_file_matched_to_split_images(tiny_workspace):
    from workspace.core import open_workspace

    root = tiny_workspace.parent
    doc = {
        "images": [{"id": 1, "file_name": "train/cat/000.png", "width": 12, "height": 12},
                   {"id": 2, "file_name": "test/dog/001.png"},  # size read from the image
                   {"id": 3, "file_name": "elsewhere/none.png", "width": 12, "height": 12}],
        "annotations": [
            {"image_id": 1, "category_id": 7, "bbox": [0, 0, 6, 12]},
            {"image_id": 1, "category_id": 7, "segmentation": [[8, 0, 11, 0, 11, 3, 8, 3]]},
            {"image_id": 2, "category_id": 9, "segmentation": {"size": [12, 12], "counts": [0, 24, 120]}},
        ],
        "categories": [{"id": 7, "name": "grass"}, {"id": 9, "name": "sky"}],
    }
    (root / "instances.json").write_text(json.dumps(doc))
    assert load_masks(open_workspace(tiny_workspace), "train") is None  # no masks configured
    _with_masks(tiny_workspace, "instances.json")
    ws = open_workspace(tiny_workspace)
    train, test = load_masks(ws, "train"), load_masks(ws, "eval")
    assert isinstance(train, CocoMasks) and train.object_names() == ["grass", "sky"]
    assert train.matched == 1 and test.matched == 1
    cat0 = ws.split("train").ids.index(str(root / "data/train/cat/000.png"))
    grass = train.objects(cat0)["grass"]  # two instances merged
    assert grass.shape == (12, 12) and grass[:, :6].all() and grass[0:4, 8:12].all() and grass.sum() == 72 + 16
    assert train.objects(cat0 + 1) == {}
    dog1 = ws.split("eval").ids.index(str(root / "data/test/dog/001.png"))
    sky = test.objects(dog1)["sky"]
    assert sky[:, :2].all() and sky.sum() == 24
    assert masks_fingerprint(train) != masks_fingerprint(test)


def test_mask_folder_layouts(tiny_workspace):
    from workspace.core import open_workspace

    root = tiny_workspace.parent
    folder = root / "masks"
    for rel in ("train/cat/000", "test/dog/001", "eval/fox/002"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        label_map = np.zeros((12, 12), dtype=np.uint8)
        label_map[:3] = 1
        label_map[9:, :4] = 2
        label_map[5, 5] = 3  # unlisted value: background
        Image.fromarray(label_map).save(folder / f"{rel}.png")
    _with_masks(tiny_workspace, "masks")
    ws = open_workspace(tiny_workspace)
    with pytest.raises(WorkspaceError, match="labels.json"):
        load_masks(ws, "train")
    (folder / "labels.json").write_text(json.dumps({"1": "sky", "2": "grass"}))
    train, test = load_masks(ws, "train"), load_masks(ws, "eval")
    assert train.matched == 1 and test.matched == 2 and test.object_names() == ["grass", "sky"]
    objs = train.objects(0)
    assert objs["sky"].sum() == 36 and objs["grass"].sum() == 12 and set(objs) == {"sky", "grass"}
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(folder / "train/cat/000.png")
    with pytest.raises(WorkspaceError, match="single-channel"):
        load_masks(ws, "train").objects(0)


def test_demo_masks_and_geometry(demo_ws):
    masks = load_masks(demo_ws, "eval")
    assert {"grass", "cloud", "triangle"} <= set(masks.object_names())
    label = demo_ws.class_names[int(demo_ws.split("eval").labels[0])]
    assert label in masks.objects(0) or demo_ws.planted["flipped_labels"]
    m = np.zeros((4, 6), dtype=bool)
    m[:, :3] = True
    np.testing.assert_array_equal(mask_to_input(m, resize=2), [[True, False], [True, False]])
    cropped = mask_to_input(m, resize=4, crop=4)  # shorter side 4 -> 4x6, centre crop 4x4
    assert cropped.shape == (4, 4) and cropped[:, :2].all() and not cropped[:, 2:].any()


def test_segmentation_model_from_user_weights(tiny_workspace):
    import torch
    import torchvision

    from diagnostics.run_gradcam import workspace_gradcam, workspace_shares
    from diagnostics.mask_sources import SegmentationMasks
    from workspace.core import open_workspace

    root = tiny_workspace.parent
    torch.manual_seed(0)
    seg = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None,
                                       num_classes=3)
    with torch.no_grad():  # a hand-set head: channel 2 ("sky") always wins
        seg.classifier.low_classifier.weight.zero_()
        seg.classifier.high_classifier.weight.zero_()
        seg.classifier.low_classifier.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
        seg.classifier.high_classifier.bias.zero_()
    torch.save(seg.state_dict(), root / "seg.pth")
    spec = {"segmentation_model": "lraspp_mobilenet_v3_large", "weights": "seg.pth",
            "labels": ["background", "grass", "sky"], "resize": 32}
    (root / "segmenter.json").write_text(json.dumps(spec))
    _with_masks(tiny_workspace, "segmenter.json")
    ws = open_workspace(tiny_workspace)
    masks = load_masks(ws, "eval")
    assert isinstance(masks, SegmentationMasks) and masks.object_names() == ["grass", "sky"]
    seen = []
    masks.prepare(lambda d, t: seen.append((d, t)))
    assert seen[-1] == (9, 9)
    objs = masks.objects(0)
    assert set(objs) == {"sky"} and objs["sky"].shape == (12, 12) and objs["sky"].all()
    shares = workspace_shares(ws, workspace_gradcam(ws, "eval"), masks)
    np.testing.assert_allclose(shares.shares[:, shares.object_names.index("sky")][
        ~np.isnan(shares.shares[:, 1])], 1.0, atol=1e-6)  # the whole image is sky
    assert list((ws.state_dir / "gradcam" / "segmasks").glob("eval-*.npz"))  # cached
    (root / "segmenter.json").write_text(json.dumps({**spec, "segmentation_model": "resnet18"}))
    with pytest.raises(WorkspaceError, match="not a torchvision segmentation model"):
        load_masks(open_workspace(tiny_workspace), "eval")
