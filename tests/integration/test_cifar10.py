"""A user workspace of real CIFAR-10 JPEGs with a factory model: loads, caches, reuses.

Skips when ``../shared/data/cifar10-jpeg`` is absent (users' machines do not have it).
"""

import pytest
import torch

from tests.integration.cifar10 import SOURCE, build_model, cache_twice, extract, write_workspace

pytestmark = pytest.mark.skipif(not (SOURCE / "test.tar.gz").is_file(), reason="../shared CIFAR-10 JPEGs not present")


def test_cifar10_jpegs_load_cache_and_reuse(tmp_path):
    extract(tmp_path, per_class=8)
    torch.manual_seed(0)
    workspace = write_workspace(tmp_path, build_model().eval())
    first, second = cache_twice(workspace)
    for split in ("train", "eval"):
        assert first["splits"][split]["n"] == 80 and first["splits"][split]["skipped"] == []
        assert not first["splits"][split]["reused"] and second["splits"][split]["reused"]
        assert 0.0 <= first["splits"][split]["accuracy"] <= 1.0
        assert second["splits"][split]["accuracy"] == first["splits"][split]["accuracy"]
