"""Checkpoints as found in the wild: containers, wrapper prefixes, old BatchNorm, EMA,
safetensors, and the messages for files that are not checkpoints at all."""

import importlib.util
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from workspace.config import ModelSpec
from workspace.errors import WorkspaceError
from workspace.models import (
    apply_state_dict, build_model, build_model_with_weights, load_checkpoint, load_weights, read_weights,
)

REAL_RESNET56 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-models" / "cifar10-resnet56"

# The tiny net as a factory module, so build_model reads the weights the way a workspace does.
FACTORY_SOURCE = """
from torch import nn

def make(num_classes=3):
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, num_classes),
    )
"""


def tiny_bn_net(k: int = 3) -> nn.Sequential:
    namespace: dict = {}
    exec(FACTORY_SOURCE, namespace)  # the same architecture the factory file builds
    return namespace["make"](k)


def trained_net() -> nn.Sequential:
    """A tiny net whose BatchNorm statistics are not the defaults, so eval outputs depend
    on every buffer being loaded."""
    net = tiny_bn_net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.num_batches_tracked.fill_(123)
    return net.eval()


def outputs(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.eval()(x)


def prefixed(state, prefix: str) -> OrderedDict:
    return OrderedDict((prefix + k, v) for k, v in state.items())


X = torch.randn(4, 3, 9, 9, generator=torch.Generator().manual_seed(1))


def test_old_format_checkpoint_gives_the_same_outputs_as_a_modern_save(tmp_path):
    net = trained_net()
    torch.save(net.state_dict(), tmp_path / "modern.pth")
    # As PyTorch 0.4 / DataParallel training scripts wrote them: no num_batches_tracked,
    # "module." keys, metrics beside the weights, the legacy (non-zip) file format.
    old = OrderedDict((f"module.{k}", v) for k, v in net.state_dict().items()
                      if not k.endswith("num_batches_tracked"))
    torch.save({"state_dict": old, "best_prec1": 93.62}, tmp_path / "old.th", _use_new_zipfile_serialization=False)

    fresh = tiny_bn_net()
    assert not torch.allclose(outputs(fresh, X), outputs(net, X))  # the load below must matter
    loaded = load_weights(fresh, tmp_path / "old.th")
    modern = tiny_bn_net()
    load_weights(modern, tmp_path / "modern.pth")
    assert torch.allclose(outputs(fresh, X), outputs(modern, X))
    assert torch.allclose(outputs(fresh, X), outputs(net, X))
    assert loaded.source_key == "state_dict" and loaded.prefix == "module."
    assert loaded.filled_buffers == ("1.num_batches_tracked", "4.num_batches_tracked")
    assert fresh[1].num_batches_tracked.item() == 0  # what PyTorch's own loader fills in
    assert loaded.summary() == ("state_dict of old.th; prefix 'module.' stripped; "
                                "2 BatchNorm num_batches_tracked filled")

    # The workspace's path (factory + weights) and the model-free path core.py uses.
    (tmp_path / "tinynet.py").write_text(FACTORY_SOURCE)
    built, report = build_model_with_weights(ModelSpec(factory="tinynet:make", weights=tmp_path / "old.th"),
                                             tmp_path, 3)
    assert torch.allclose(outputs(built, X), outputs(net, X)) and report.prefix == "module."
    assert torch.allclose(outputs(build_model(ModelSpec(factory="tinynet:make", weights=tmp_path / "old.th"),
                                              tmp_path, 3), X), outputs(net, X))
    again = tiny_bn_net()
    apply_state_dict(again, load_checkpoint(tmp_path / "old.th"), source="old.th")
    assert torch.allclose(outputs(again, X), outputs(net, X))
    sys.modules.pop("tinynet", None)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_torch_compile_prefix_alone_or_stacked(tmp_path, prefix):
    net = trained_net()
    torch.save(prefixed(net.state_dict(), prefix), tmp_path / "c.pt")
    fresh = tiny_bn_net()
    loaded = load_weights(fresh, tmp_path / "c.pt")
    assert loaded.prefix == prefix and loaded.source_key is None
    assert torch.allclose(outputs(fresh, X), outputs(net, X))
    assert loaded.summary() == f"c.pt (plain state_dict); prefix {prefix!r} stripped"
    assert set(load_checkpoint(tmp_path / "c.pt")) == set(net.state_dict())  # wrapper-only prefixes


def test_data_parallel_save_keeps_module_versions(tmp_path):
    net = trained_net()
    torch.save(nn.DataParallel(net).state_dict(), tmp_path / "dp.pth")  # keys and _metadata under "module."
    fresh = tiny_bn_net()
    loaded = load_weights(fresh, tmp_path / "dp.pth")
    assert loaded.prefix == "module." and not loaded.filled_buffers
    # PyTorch's per-module format versions follow the keys, so version-aware loaders see them
    assert loaded.state._metadata["1"]["version"] == 2 and "module.1" not in loaded.state._metadata
    assert fresh[1].num_batches_tracked.item() == 123
    assert torch.allclose(outputs(fresh, X), outputs(net, X))


def test_lightning_ckpt(tmp_path):
    net = trained_net()
    state = prefixed(net.state_dict(), "model.")
    state["criterion.weight"] = torch.ones(3)  # a LightningModule's loss with class weights
    torch.save({
        "epoch": 7, "global_step": 700, "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "hyper_parameters": {"lr": 0.1, "num_classes": 3, "arch": "tiny"},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}],
        "lr_schedulers": [],
    }, tmp_path / "epoch=7.ckpt")
    fresh = tiny_bn_net()
    loaded = load_weights(fresh, tmp_path / "epoch=7.ckpt")
    assert torch.allclose(outputs(fresh, X), outputs(net, X))
    assert (loaded.source_key, loaded.prefix) == ("state_dict", "model.")
    assert "1 key outside 'model.' left out (criterion.weight)" in loaded.summary()
    # core.py's path: load_checkpoint keeps "model." (it cannot know), apply_state_dict strips it.
    assert "model.0.weight" in load_checkpoint(tmp_path / "epoch=7.ckpt")
    again = tiny_bn_net()
    apply_state_dict(again, load_checkpoint(tmp_path / "epoch=7.ckpt"), source="epoch=7.ckpt")
    assert torch.allclose(outputs(again, X), outputs(net, X))


def test_prefix_is_kept_when_it_is_the_models_own_name(tmp_path):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = tiny_bn_net()

        def forward(self, x):
            return self.model(x)

    saved = Wrapper()
    with torch.no_grad():
        saved.model[8].bias.fill_(5.0)
    torch.save(saved.state_dict(), tmp_path / "w.pth")
    fresh = Wrapper()
    loaded = load_weights(fresh, tmp_path / "w.pth")
    assert loaded.prefix == "" and torch.equal(fresh.model[8].bias, torch.full((3,), 5.0))


def test_ema_weights_are_preferred_and_said(tmp_path):
    plain, ema = trained_net(), trained_net()
    torch.save({"state_dict": plain.state_dict(), "state_dict_ema": ema.state_dict(), "epoch": 5,
                "arch": "tiny"}, tmp_path / "r.pth.tar")
    fresh = tiny_bn_net()
    loaded = load_weights(fresh, tmp_path / "r.pth.tar")
    assert loaded.source_key == "state_dict_ema" and loaded.is_ema
    assert torch.allclose(outputs(fresh, X), outputs(ema, X))
    assert not torch.allclose(outputs(fresh, X), outputs(plain, X))
    assert loaded.summary() == "state_dict_ema (EMA weights) of r.pth.tar; state_dict also present, not used"


def test_torchvision_reference_style_model_ema(tmp_path):
    """torchvision's reference scripts save ``model_ema`` as an AveragedModel state_dict:
    ``module.``-prefixed weights plus an ``n_averaged`` counter."""
    plain, ema = trained_net(), trained_net()
    averaged = prefixed(ema.state_dict(), "module.")
    averaged["n_averaged"] = torch.tensor(40)
    torch.save({"model": plain.state_dict(), "model_ema": averaged, "epoch": 90}, tmp_path / "checkpoint.pth")
    fresh = tiny_bn_net()
    loaded = load_weights(fresh, tmp_path / "checkpoint.pth")
    assert (loaded.source_key, loaded.prefix) == ("model_ema", "module.")
    assert torch.allclose(outputs(fresh, X), outputs(ema, X))
    assert loaded.summary() == ("model_ema (EMA weights) of checkpoint.pth; prefix 'module.' stripped; "
                                "model also present, not used; 1 key outside 'module.' left out (n_averaged)")


def test_ema_for_another_model_falls_back_to_the_plain_weights(tmp_path):
    plain = trained_net()
    torch.save({"state_dict": plain.state_dict(), "state_dict_ema": tiny_bn_net(5).state_dict()},
               tmp_path / "r.pth")
    fresh = tiny_bn_net()
    loaded = load_weights(fresh, tmp_path / "r.pth")
    assert loaded.source_key == "state_dict"
    assert torch.allclose(outputs(fresh, X), outputs(plain, X))
    assert loaded.summary() == "state_dict of r.pth; state_dict_ema also present but does not fit the model"


def test_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    net = trained_net()
    # safetensors refuses tensors that share memory; a state_dict's tensors never do here
    safetensors_torch.save_file(dict(prefixed(net.state_dict(), "module.")), str(tmp_path / "model.safetensors"))
    fresh = tiny_bn_net()
    loaded = load_weights(fresh, tmp_path / "model.safetensors")
    assert loaded.prefix == "module." and torch.allclose(outputs(fresh, X), outputs(net, X))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:200])
    with pytest.raises(WorkspaceError, match="cannot read cut.safetensors as safetensors"):
        load_weights(tiny_bn_net(), tmp_path / "cut.safetensors")


def test_safetensors_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (tmp_path / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    monkeypatch.setitem(sys.modules, "safetensors", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(WorkspaceError, match=r"w.safetensors is a .safetensors file; install the safetensors"):
        load_checkpoint(tmp_path / "w.safetensors")


def test_torchscript_file_given_as_weights(tmp_path):
    torch.jit.script(trained_net()).save(str(tmp_path / "scripted.pt"))
    (tmp_path / "tinynet.py").write_text(FACTORY_SOURCE)
    with pytest.raises(WorkspaceError, match=r'scripted.pt is a TorchScript model.*torchscript = "scripted.pt"'):
        build_model(ModelSpec(factory="tinynet:make", weights=tmp_path / "scripted.pt"), tmp_path, 3)
    sys.modules.pop("tinynet", None)


def test_files_that_are_not_checkpoints(tmp_path):
    net = trained_net()
    torch.save(net.state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()

    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "best.pth").write_bytes(data)
    with pytest.raises(WorkspaceError, match=r"run1 is a folder, not a file; .*\(it holds best.pth\)"):
        load_checkpoint(tmp_path / "run1")

    (tmp_path / "notes.pth").write_text("trained for 90 epochs, top-1 76.1\n")
    with pytest.raises(WorkspaceError, match=r"notes.pth is a text file, not a checkpoint \(it begins 'trained for"):
        load_checkpoint(tmp_path / "notes.pth")

    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkspaceError, match=r"cut.pth is truncated or corrupt .*copy or download it again"):
        load_checkpoint(tmp_path / "cut.pth")
    torch.save(net.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    legacy = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "legacy_cut.pth").write_bytes(legacy[: len(legacy) // 2])
    with pytest.raises(WorkspaceError, match=r"legacy_cut.pth is truncated or corrupt"):
        load_checkpoint(tmp_path / "legacy_cut.pth")

    with zipfile.ZipFile(tmp_path / "images.pth", "w") as archive:
        archive.writestr("img/0.png", b"not really")
    with pytest.raises(WorkspaceError, match=r"images.pth is a zip archive but not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "images.pth")

    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WorkspaceError, match="empty.pth is empty"):
        load_checkpoint(tmp_path / "empty.pth")

    (tmp_path / "lfs.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(WorkspaceError, match="Git LFS pointer"):
        load_checkpoint(tmp_path / "lfs.pth")

    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(WorkspaceError, match=r"meta.pth holds no state_dict \(it holds a dict with keys epoch, lr"):
        read_weights(tmp_path / "meta.pth", net)


def test_unsafe_pickles_stay_refused_and_are_told_apart_from_corrupt_ones(tmp_path):
    torch.save({"state_dict": trained_net().state_dict(), "best_acc": np.float64(0.9)}, tmp_path / "np.pth")
    with pytest.raises(WorkspaceError, match=r"needs unsafe unpickling .*numpy.*which is refused"):
        read_weights(tmp_path / "np.pth", tiny_bn_net())
    # A pickle the weights-only reader cannot parse is corrupt, not unsafe.
    (tmp_path / "junk.pth").write_bytes(b"\x80\x04\x95garbage")
    with pytest.raises(WorkspaceError) as info:
        load_checkpoint(tmp_path / "junk.pth")
    assert "unsafe" not in str(info.value) and "junk.pth" in str(info.value)


def test_mismatch_is_grouped_by_layer(tmp_path):
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.fc = nn.Linear(4, 1000)
            self.extra = nn.Linear(2, 2)

    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.fc = nn.Linear(4, 10)

    state = Other().state_dict()
    del state["features.1.running_mean"], state["features.1.running_var"]
    torch.save({"state_dict": prefixed(state, "module."), "epoch": 1}, tmp_path / "o.pth")
    model = Mine()
    before = model.fc.weight.clone()
    with pytest.raises(WorkspaceError) as info:
        load_weights(model, tmp_path / "o.pth")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("weights state_dict of o.pth do not fit the model: 6 keys in 3 layers "
                           "(2 missing, 2 unexpected, 2 with another shape): ")
    assert "features.1: missing running_mean, running_var" in text
    assert "fc: shapes weight 1000x4 vs model 10x4, bias 1000 vs model 10" in text
    assert "extra: unexpected weight, bias" in text
    assert "prefix 'module.' stripped; tried containers state_dict; prefixes none, 'module.'" in text
    assert torch.equal(model.fc.weight, before)  # never a partial load


def test_long_mismatch_lists_six_layers_then_counts(tmp_path):
    wide = nn.Sequential(*[nn.Linear(4, 4) for _ in range(9)])
    narrow = nn.Sequential(*[nn.Linear(4, 3) for _ in range(9)])
    with pytest.raises(WorkspaceError) as info:
        apply_state_dict(narrow, wide.state_dict(), source="wide.pth")
    text = str(info.value)
    assert "5: shapes weight 4x4 vs model 3x4, bias 4 vs model 3; and 3 more layers" in text
    assert "6:" not in text and "18 keys in 9 layers" in text


@pytest.mark.skipif(not REAL_RESNET56.is_dir(), reason="shared real models not present")
def test_real_cifar10_resnet56_opens_as_published():
    spec = importlib.util.spec_from_file_location("shared_resnet_cifar", REAL_RESNET56 / "resnet_cifar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build56(num_classes=10)
    loaded = load_weights(model, REAL_RESNET56 / "resnet56.th")
    assert loaded.summary() == ("state_dict of resnet56.th; prefix 'module.' stripped; "
                                "55 BatchNorm num_batches_tracked filled")
    raw = torch.load(REAL_RESNET56 / "resnet56.th", map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.linear.weight, raw["module.linear.weight"])
    assert torch.equal(model.layer3[8].bn2.running_var, raw["module.layer3.8.bn2.running_var"])
