"""The demo's planted effects exist in the data and are learned by the shipped model."""

import json

import numpy as np

from workspace import demo
from workspace.__main__ import main
from workspace.cli import run_cli


def test_generation_is_deterministic():
    a = demo.generate_shapes(n_train=20, n_eval=10)
    b = demo.generate_shapes(n_train=20, n_eval=10)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_planted_ground_truth_in_data(demo_ws):
    planted = demo_ws.planted
    n = len(demo_ws.split("train"))
    flipped = np.asarray(planted["flipped_labels"])
    assert 0.03 * n <= len(flipped) <= 0.05 * n
    # flipped labels differ from the true class; the rest agree
    data = np.load(next(demo_ws.state_dir.glob("shapes-data-*.npz")))
    true, labels = data["train_true"], data["train_labels"]
    assert np.all(true[flipped] != labels[flipped])
    assert np.sum(true != labels) == len(flipped)
    # grass: strongly tied to triangle in train, independent in eval
    tri = demo.SHAPE_CLASSES.index("triangle")
    grass = data["train_grass"]
    assert grass[true == tri].mean() > 0.8 and grass[true != tri].mean() < 0.1
    eval_grass, eval_true = data["eval_grass"], data["eval_true"]
    assert abs(eval_grass[eval_true == tri].mean() - eval_grass[eval_true != tri].mean()) < 0.1
    # minority = the training images breaking the grass/triangle correlation
    minority = np.zeros(n, bool)
    minority[planted["minority"]] = True
    assert np.array_equal(minority, (true == tri) != grass)
    # every image has a mask of its main shape
    masks = demo_ws.masks("eval")
    objects = masks.objects(0)
    assert demo.SHAPE_CLASSES[eval_true[0]] in objects and objects[demo.SHAPE_CLASSES[eval_true[0]]].any()


def test_info_cli_gives_planted_block(capsys, demo_eval):
    assert run_cli(main, ["info", "--workspace", "demo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    planted = info["planted"]
    assert planted["confused_pair"] == ["disk", "oval"]
    assert planted["biased_triplet"] == ["oval", "ring", "disk"]
    assert planted["spurious"] == {"object": "grass", "class": "triangle"}
    assert len(planted["flipped_labels"]) == 240 and len(planted["minority"]) > 100
    assert info["splits"] == {"train": 6000, "eval": 3000} and info["accuracy"] > 0.8


def type1conf_matrix(labels, preds, k):
    counts = np.zeros((k, k))
    np.add.at(counts, (labels, preds), 1)
    rates = counts / counts.sum(1, keepdims=True)
    return (rates + rates.T) / 2


def test_planted_pair_is_learned_as_most_confused(demo_ws, demo_eval):
    k = demo_ws.num_classes
    conf = type1conf_matrix(demo_eval.labels, demo_eval.preds, k)
    iu = np.triu_indices(k, 1)
    pairs = conf[iu]
    a, b = (demo.SHAPE_CLASSES.index(c) for c in demo_ws.planted["confused_pair"])
    assert conf[a, b] == pairs.max()
    assert conf[a, b] >= 3 * np.median(pairs)
    assert conf[a, b] >= 2 * np.sort(pairs)[-2], "the planted pair should stand out clearly"


def test_digits_demo_colour_bias_and_learned_shortcut():
    """demo-digits: train colours follow the class at the bias ratio; eval colours are random."""
    from workspace import demo
    from workspace.core import open_workspace

    data = demo.generate_digits(0.9)
    train_aligned = (data["train_colour"] == data["train_labels"]).mean()
    eval_aligned = (data["eval_colour"] == data["eval_labels"]).mean()
    assert 0.86 <= train_aligned <= 0.94 and eval_aligned < 0.2
    assert sorted(data["minority"]) == np.flatnonzero(data["train_colour"] != data["train_labels"]).tolist()

    ws = open_workspace("demo-digits:0.9")   # trains its small model on first use
    assert ws.class_names == tuple(str(d) for d in range(10)) and ws.planted["bias_ratio"] == 0.9
    train, evaluation = ws.outputs("train"), ws.outputs("eval")
    minority = np.zeros(train.n, dtype=bool)
    minority[ws.planted["minority"]] = True
    # the colour shortcut is learned: the majority is fit better than the colour-conflicting minority
    assert train.correct[~minority].mean() > train.correct[minority].mean() + 0.05
    assert evaluation.accuracy < train.correct[~minority].mean()
