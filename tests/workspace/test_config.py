import textwrap

import pytest

from workspace.config import load_config
from workspace.errors import WorkspaceError


def write(tmp_path, body: str):
    (tmp_path / "train").mkdir(exist_ok=True)
    (tmp_path / "test").mkdir(exist_ok=True)
    (tmp_path / "w.pth").write_bytes(b"")
    path = tmp_path / "workspace.toml"
    path.write_text(textwrap.dedent(body))
    return path


BASE = """
name = "x"
[model]
torchvision = "resnet18"
weights = "w.pth"
[data]
train = "train"
eval = "test"
"""


def test_valid_file_resolves_paths_relative_to_it(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.name == "x" and cfg.task == "single_label"
    assert cfg.model.kind == "torchvision" and cfg.model.weights == (tmp_path / "w.pth").resolve()
    assert cfg.data.train == (tmp_path / "train").resolve() and cfg.data.classes is None
    assert cfg.transform.resize == 32 and len(cfg.transform.mean) == 3


def test_folder_path_finds_workspace_toml(tmp_path):
    write(tmp_path, BASE)
    assert load_config(tmp_path).name == "x"


@pytest.mark.parametrize(
    "body, message",
    [
        (BASE.replace('torchvision = "resnet18"', 'torchvision = "resnet18"\nfactory = "m:f"'), "exactly one of"),
        (BASE.replace('name = "x"', 'name = "x"\ntask = "regression"'), "single_label, multi_label"),
        (BASE.replace('"test"', '"nowhere"'), "eval split not found"),
        (BASE.replace('weights = "w.pth"', 'weights = "missing.pth"'), "model weights not found"),
        (BASE.replace('torchvision = "resnet18"', 'factory = "no_colon"'), "package.module:function"),
        (BASE + '[transform]\nstd = [0.2, 0.2]\n', "mean and std need 3 values"),
        ("[model]\ntorchvision='resnet18'\n", "[data]"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_files_give_one_clear_line(tmp_path, body, message):
    with pytest.raises(WorkspaceError) as info:
        load_config(write(tmp_path, body))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(WorkspaceError, match="workspace file not found"):
        load_config(tmp_path / "nope.toml")
