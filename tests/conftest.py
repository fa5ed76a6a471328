"""Shared fixtures: seeded RNGs, an isolated GROUPFIX_HOME, a tiny user workspace on disk."""

from __future__ import annotations

import os
import random
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session", autouse=True)
def groupfix_home(tmp_path_factory) -> Path:
    """Every test session gets its own state home (demos are generated there once)."""
    home = tmp_path_factory.mktemp("groupfix_home")
    os.environ["GROUPFIX_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def demo_ws(groupfix_home):
    """The shapes demo workspace (data generated once per session, weights from assets/)."""
    from workspace.core import open_workspace

    return open_workspace("demo")


@pytest.fixture(scope="session")
def demo_eval(demo_ws):
    return demo_ws.outputs("eval")


@pytest.fixture(scope="session")
def demo_train(demo_ws):
    return demo_ws.outputs("train")


@pytest.fixture
def isolated_demo(demo_ws, demo_train, tmp_path, monkeypatch):
    """The shapes demo opened from a copy of the session's state home (its caches included): runs
    and model versions a test makes there do not reach the shared demo, whose pages other tests
    expect with the original model alone."""
    import shutil

    from workspace.core import open_workspace

    from pages import ui

    home = tmp_path / "home"
    shutil.copytree(Path(os.environ["GROUPFIX_HOME"]) / "demo", home / "demo")
    monkeypatch.setenv("GROUPFIX_HOME", str(home))
    ui._load_workspace.clear()  # the app's cached "demo" is the shared one: open the copy
    yield open_workspace("demo")
    ui._load_workspace.clear()  # and never hand the copy to later tests


TINY_FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.head(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))

    def build(num_classes=3):
        return TinyNet(num_classes)
''')


def mapping_rss_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:          # a mapping header line
                inside = len(head) >= 6 and head[-1] == str(path)
            elif inside and head[0] == "Rss:":
                total += int(head[1])
    return total


def write_imagefolder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 4, size: int = 12,
                      seed: int = 0) -> None:
    """Small PNGs whose mean colour depends on the class (so a model can learn them)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.zeros((size, size, 3))
            base[..., k % 3] = 200
            img = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i:03d}.png")


def write_tiny_workspace(root: Path, *, train_per_class: int = 4, test_per_class: int = 3) -> Path:
    """A user workspace under ``root``: ImageFolder PNGs of cat/dog/fox, a factory model file and
    its seeded weights. Returns its workspace.toml."""
    import importlib.util

    write_imagefolder(root / "data" / "train", per_class=train_per_class)
    write_imagefolder(root / "data" / "test", per_class=test_per_class, seed=1)
    (root / "tinynet.py").write_text(TINY_FACTORY)
    spec = importlib.util.spec_from_file_location("tinynet_fixture", root / "tinynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.save(module.build(3).state_dict(), root / "weights.pth")
    (root / "workspace.toml").write_text(textwrap.dedent('''
        name = "tiny"
        task = "single_label"
        [model]
        factory = "tinynet:build"
        weights = "weights.pth"
        [data]
        format = "imagefolder"
        train = "data/train"
        eval = "data/test"
        [transform]
        resize = 12
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
    '''))
    return root / "workspace.toml"


@pytest.fixture
def tiny_workspace(tmp_path) -> Path:
    """A user workspace: ImageFolder PNGs, a factory model file and its weights."""
    return write_tiny_workspace(tmp_path)


NOBN_FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class NoBN(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    def build(num_classes=3):
        return NoBN(num_classes)
''')


@pytest.fixture
def nobn_workspace(tiny_workspace) -> Path:
    """The tiny workspace's data with a model that has no BatchNorm layer."""
    root = tiny_workspace.parent
    (root / "nobn.py").write_text(NOBN_FACTORY)
    import importlib.util

    spec = importlib.util.spec_from_file_location("nobn_fixture", root / "nobn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.build(3).state_dict(), root / "nobn.pth")
    text = tiny_workspace.read_text().replace('factory = "tinynet:build"', 'factory = "nobn:build"')
    text = text.replace('weights = "weights.pth"', 'weights = "nobn.pth"').replace('name = "tiny"', 'name = "nobn"')
    path = root / "nobn.toml"
    path.write_text('state_dir = ".nobn-state"\n' + text)
    return path


@pytest.fixture
def multi_label_workspace(tmp_path):
    """A 3-class multi-label csv workspace with an untrained TinyNet (low threshold: many positives)."""
    write_imagefolder(tmp_path / "img", per_class=4)
    rows = ["path,labels"]
    combos = ["cat", "dog", "fox", "cat|dog", "dog|fox", "cat|fox"]
    for i, p in enumerate(sorted((tmp_path / "img").rglob("*.png"))):
        rows.append(f"{p.relative_to(tmp_path)},{combos[i % len(combos)]}")
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "tinynet.py").write_text(TINY_FACTORY)
    namespace: dict = {}
    exec(TINY_FACTORY, namespace)
    torch.manual_seed(0)
    torch.save(namespace["build"](3).state_dict(), tmp_path / "weights.pth")
    (tmp_path / "workspace.toml").write_text(textwrap.dedent('''
        name = "tiny-multi"
        task = "multi_label"
        threshold = 0.3
        [model]
        factory = "tinynet:build"
        weights = "weights.pth"
        [data]
        format = "csv"
        train = "all.csv"
        eval = "all.csv"
        classes = ["cat", "dog", "fox"]
        [transform]
        resize = 12
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
    '''))
    return tmp_path / "workspace.toml"
