"""Every bad workspace file is one line naming the file, the line and the key.

From the user trial (issue 17): a typo'd key used to be ignored (``weigths`` opened the
model with random weights), wrong value types gave tracebacks. Each case below writes a
workspace file broken in one way, expects a :class:`WorkspaceError` whose single line
starts with ``<file>:<line>:`` (the line found by hand in the text written) and names the
problem, and checks that reading it changed nothing under the workspace folder.
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import BASE, tree_digest
from workspace.config import load_config
from workspace.data import load_splits
from workspace.errors import WorkspaceError


def sub(old: str, new: str, base: str = BASE) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


NO_TRANSFORM = sub("[transform]\nresize = 32\n", "")

# (id, file text, the offending line as written (None: no line), fragments of the message)
CASES = [
    ("typo_weights", sub('weights = "w.pth"', 'weigths = "w.pth"'), 'weigths = "w.pth"',
     ["[model] unknown key 'weigths'", "did you mean 'weights'?"]),
    ("typo_resize", sub("resize = 32", "resise = 64"), "resise = 64",
     ["[transform] unknown key 'resise'", "did you mean 'resize'?"]),
    ("typo_top_level", "treshold = 0.3\n" + BASE, "treshold = 0.3",
     ["unknown top-level key 'treshold'", "did you mean 'threshold'?"]),
    ("typo_section", BASE + "[tranform]\ncrop = 16\n", "[tranform]",
     ["unknown section [tranform]", "did you mean [transform]?"]),
    ("unknown_section", BASE + "[augmentation]\nflip = true\n", "[augmentation]",
     ["unknown section [augmentation]", "valid: [model], [data], [transform], [train]"]),
    ("key_in_wrong_section", sub("lr = 0.01", "lr = 0.01\nresize = 64"), "resize = 64",
     ["[train] unknown key 'resize'", "belongs under [transform]"]),
    ("top_level_key_after_header", BASE + "threshold = 0.3\n", "threshold = 0.3",
     ["[train] unknown key 'threshold'", "top-level key"]),
    ("threshold_text", 'threshold = "abc"\n' + BASE, 'threshold = "abc"',
     ["threshold must be a number", "'abc' (text)"]),
    ("transform_number", "transform = 5\n" + NO_TRANSFORM, "transform = 5",
     ["transform = 5 is not valid", "[transform] is a section"]),
    ("torchvision_number", sub('torchvision = "resnet18"', "torchvision = 5"), "torchvision = 5",
     ["[model] torchvision must be text", "got 5"]),
    ("threshold_nan", "threshold = nan\n" + BASE, "threshold = nan", ["threshold must be a finite number, got nan"]),
    ("lr_inf", sub("lr = 0.01", "lr = inf"), "lr = inf", ["[train] lr must be a finite number, got inf"]),
    ("mean_nan", sub("resize = 32", "resize = 32\nmean = [0.5, nan, 0.5]"), "mean = [0.5, nan, 0.5]",
     ["[transform] mean must be a finite number"]),
    ("threshold_range", "threshold = 1.5\n" + BASE, "threshold = 1.5", ["threshold must be in (0, 1), got 1.5"]),
    ("resize_too_small", sub("resize = 32", "resize = 4"), "resize = 4",
     ["[transform] resize must be between 8 and", "got 4"]),
    ("resize_fraction", sub("resize = 32", "resize = 64.5"), "resize = 64.5",
     ["[transform] resize must be a whole number", "64.5"]),
    ("epochs_zero", sub("lr = 0.01", "lr = 0.01\nepochs = 0"), "epochs = 0", ["[train] epochs must be between 1"]),
    ("batch_size_bool", sub("lr = 0.01", "lr = 0.01\nbatch_size = true"), "batch_size = true",
     ["[train] batch_size must be a whole number", "True"]),
    ("momentum_range", sub("lr = 0.01", "lr = 0.01\nmomentum = 1.5"), "momentum = 1.5",
     ["[train] momentum must be in [0, 1)"]),
    ("mean_two_values", sub("resize = 32", "resize = 32\nmean = [0.5, 0.5]"), "mean = [0.5, 0.5]",
     ["[transform] mean", "mean and std need 3 values"]),
    ("std_zero", sub("resize = 32", "resize = 32\nstd = [0.2, 0.0, 0.2]"), "std = [0.2, 0.0, 0.2]",
     ["[transform] std values must be > 0"]),
    ("crop_larger_than_resize", sub("resize = 32", "resize = 32\ncrop = 64"), "crop = 64",
     ["crop = 64 is larger than resize = 32"]),
    ("augment_choice", sub("lr = 0.01", 'lr = 0.01\naugment = "flip"'), 'augment = "flip"',
     ["[train] augment is not valid", "flip_crop, crop, none"]),
    ("task_choice", sub('task = "single_label"', 'task = "regression"'), 'task = "regression"',
     ["task is not valid", "single_label, multi_label"]),
    ("format_choice", sub('format = "imagefolder"', 'format = "folder"'), 'format = "folder"',
     ["[data] format is not valid", "imagefolder, csv"]),
    ("separator_empty", sub('eval = "test"', 'eval = "test"\nlabel_separator = ""'), 'label_separator = ""',
     ["[data] label_separator must not be empty"]),
    ("allow_outside_text", 'allow_outside = "yes"\n' + BASE, 'allow_outside = "yes"',
     ["allow_outside must be true or false"]),
    ("train_outside", sub('train = "train"', 'train = "../outside"'), 'train = "../outside"',
     ["[data] train = '../outside' is outside the workspace folder", "allow_outside = true"]),
    ("masks_outside", sub('eval = "test"', 'eval = "test"\nmasks = "../outside/x.png"'),
     'masks = "../outside/x.png"', ["[data] masks = '../outside/x.png' is outside", "allow_outside = true"]),
    ("reserved_missing", sub('eval = "test"', 'eval = "test"\nreserved = "nowhere"'), 'reserved = "nowhere"',
     ["reserved split not found", "[data] reserved = 'nowhere'"]),
    ("validation_number", sub('eval = "test"', 'eval = "test"\nvalidation = 3'), "validation = 3",
     ["[data] validation must be a path"]),
    ("classes_duplicate", sub('eval = "test"', 'eval = "test"\nclasses = ["cat", "cat"]'),
     'classes = ["cat", "cat"]', ["[data] classes has duplicate names: cat"]),
    ("classes_number", sub('eval = "test"', 'eval = "test"\nclasses = 3'), "classes = 3",
     ["[data] classes must be 'auto', a list of names or a file path"]),
    ("name_number", sub('name = "bad-inputs"', "name = 5"), "name = 5", ["name must be text"]),
    ("state_dir_number", "state_dir = 3\n" + BASE, "state_dir = 3", ["state_dir must be a path"]),
    ("train_number", sub('train = "train"', "train = 5"), "train = 5", ["[data] train must be a path"]),
    ("two_model_kinds", sub('weights = "w.pth"', 'weights = "w.pth"\nfactory = "m:f"'), 'factory = "m:f"',
     ["exactly one of", "found torchvision, factory"]),
    ("factory_without_function", sub('torchvision = "resnet18"', 'factory = "nocolon"'), 'factory = "nocolon"',
     ["[model] factory must look like 'package.module:function'"]),
    ("weights_missing", sub('weights = "w.pth"', 'weights = "r18.pth"'), 'weights = "r18.pth"',
     ["model weights not found", "[model] weights = 'r18.pth'"]),
    ("multi_label_imagefolder", sub('task = "single_label"', 'task = "multi_label"'), 'format = "imagefolder"',
     ["multi_label", "format = 'csv'"]),
    ("no_data_section", BASE.split("[data]")[0], None, ["needs a [data] section"]),
    ("duplicate_key_toml", sub("resize = 32", "resize = 32\nresize = 64"), None,
     ["is not valid TOML", "line 12"]),
]


@pytest.mark.parametrize("case_id, text, bad_line, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_workspace_file_is_one_line_naming_file_line_and_key(bad_ws, case_id, text, bad_line, fragments):
    path = bad_ws / "workspace.toml"
    path.write_text(text)
    before = tree_digest(bad_ws)
    with pytest.raises(WorkspaceError) as info:
        cfg = load_config(path)
        load_splits(cfg.data, multi_label=cfg.task == "multi_label")
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert str(path) in message
    if bad_line is not None:
        line = text.splitlines().index(bad_line) + 1
        assert message.startswith(f"{path}:{line}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert tree_digest(bad_ws) == before


def test_non_utf8_workspace_file(bad_ws):
    path = bad_ws / "workspace.toml"
    path.write_bytes(BASE.replace("bad-inputs", "caf\xe9").encode("latin-1"))
    with pytest.raises(WorkspaceError) as info:
        load_config(path)
    # 'name = "caf' is 11 bytes, so the latin-1 e-acute is byte 0xe9 at offset 11 of line 1
    assert str(info.value).startswith(f"{path}:1: not UTF-8 text") and "0xe9 at offset 11" in str(info.value)


def test_valid_additions_parse(bad_ws, tmp_path):
    """The new keys work: reserved/validation splits, allow_outside lifts the confinement."""
    path = bad_ws / "workspace.toml"
    path.write_text("allow_outside = true\n" + sub('eval = "test"', 'eval = "test"\nreserved = "test"\n'
                                                   'validation = "train"\nmasks = "../outside/x.png"'))
    cfg = load_config(path)
    assert cfg.allow_outside and cfg.data.confine_to is None
    assert cfg.data.masks == (tmp_path / "outside" / "x.png").resolve()
    assert cfg.data.reserved == (bad_ws / "test").resolve() and cfg.data.validation == (bad_ws / "train").resolve()
    splits = load_splits(cfg.data, multi_label=False)
    assert sorted(splits) == ["eval", "reserved", "train", "validation"]
    assert splits["reserved"].ids == splits["eval"].ids and len(splits["validation"]) == 4
    path.write_text(BASE)
    default = load_config(path)
    assert not default.allow_outside and default.data.confine_to == bad_ws.resolve()
    assert default.data.reserved is None and default.data.validation is None
