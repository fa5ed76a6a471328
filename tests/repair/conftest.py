"""Fixtures for the repair tests: a tiny workspace without BatchNorm."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

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
