import pickle

import pytest
import torch
from torch import nn

from workspace.config import ModelSpec
from workspace.errors import WorkspaceError
from workspace.models import (
    EmbeddingTap, apply_state_dict, build_model, check_output_size, find_classifier, find_last_conv,
    load_checkpoint, model_capabilities,
)


def small_net(k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, k))


@pytest.mark.parametrize("wrap", [None, "state_dict", "model_state_dict", "model"])
def test_checkpoint_forms_and_module_prefix(tmp_path, wrap):
    net = small_net()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    obj = state if wrap is None else {wrap: state, "epoch": 3}
    torch.save(obj, tmp_path / "c.pth")
    loaded = load_checkpoint(tmp_path / "c.pth")
    assert set(loaded) == set(net.state_dict())
    other = small_net()
    apply_state_dict(other, loaded, source="c.pth")
    assert torch.equal(other[0].weight, net[0].weight)


class Unsafe:
    pass


def test_checkpoint_needing_unsafe_unpickling_is_refused(tmp_path):
    torch.save({"state_dict": small_net().state_dict(), "extra": Unsafe()}, tmp_path / "bad.pth")
    with pytest.raises(WorkspaceError, match="unsafe unpickling"):
        load_checkpoint(tmp_path / "bad.pth")


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WorkspaceError, match="holds no state_dict"):
        load_checkpoint(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(pickle.dumps("x")[:3])
    with pytest.raises(WorkspaceError):
        load_checkpoint(tmp_path / "junk.pth")


def test_state_dict_mismatch_names_the_keys():
    with pytest.raises(WorkspaceError, match=r"4: shapes weight 5x4 vs model 3x4, bias 5 vs model 3"):
        apply_state_dict(small_net(3), small_net(5).state_dict(), source="w")


def test_output_size_must_match_classes():
    with pytest.raises(WorkspaceError, match="outputs 3 scores per image but the data has 10 classes"):
        check_output_size(small_net(3), torch.zeros(1, 3, 8, 8), 10)


def test_classifier_and_last_conv_found_in_call_order():
    net = small_net()
    x = torch.zeros(2, 3, 8, 8)
    assert find_classifier(net, x, 3) == "4"
    assert find_last_conv(net, x) == "0"
    tap = EmbeddingTap(net, "auto", x, 3)
    logits, emb = tap.forward(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 3) and emb.shape == (2, 4)
    assert torch.allclose(net[4](emb), logits)
    named = EmbeddingTap(net, "2", x, 3)  # output of the pooling layer, flattened
    assert named.forward(torch.randn(2, 3, 8, 8))[1].shape == (2, 4)
    with pytest.raises(WorkspaceError, match="not a module"):
        EmbeddingTap(net, "nope", x, 3)


def test_torchvision_model_builds_with_class_count(tmp_path):
    model = build_model(ModelSpec(torchvision="resnet18"), tmp_path, 7)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    assert model_capabilities(model) == {"embeddings": None, "gradcam": None, "w-bn": None}
    with pytest.raises(WorkspaceError, match="unknown torchvision architecture"):
        build_model(ModelSpec(torchvision="resnet_nonexistent"), tmp_path, 7)


def test_factory_is_resolved_from_workspace_folder(tmp_path):
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def make(num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3*4*4, num_classes))\n"
    )
    model = build_model(ModelSpec(factory="mymodels:make"), tmp_path, 5)
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 5)
    with pytest.raises(WorkspaceError, match="has no function"):
        build_model(ModelSpec(factory="mymodels:missing"), tmp_path, 5)
    with pytest.raises(WorkspaceError, match="cannot import factory module"):
        build_model(ModelSpec(factory="nomodule:make"), tmp_path, 5)


def test_torchscript_capabilities_are_stated(tmp_path):
    scripted = torch.jit.script(small_net())
    scripted.save(str(tmp_path / "m.pt"))
    model = build_model(ModelSpec(torchscript=tmp_path / "m.pt"), tmp_path, 3)
    caps = model_capabilities(model)
    assert "TorchScript" in caps["gradcam"] and "TorchScript" in caps["embeddings"]
    tap = EmbeddingTap(model, "auto", torch.zeros(1, 3, 8, 8), 3)
    logits, emb = tap.forward(torch.zeros(2, 3, 8, 8))
    assert logits.shape == (2, 3) and emb is None


def test_layer_search_leaves_batchnorm_statistics_alone():
    from torch import nn

    from workspace.models import find_classifier

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)).train()
    model(torch.randn(2, 3, 6, 6))  # materialise the lazy layer
    before = model[1].running_mean.clone()
    assert find_classifier(model, torch.randn(2, 3, 6, 6) * 50 + 10, 2) == "3"
    assert torch.equal(model[1].running_mean, before) and model.training
