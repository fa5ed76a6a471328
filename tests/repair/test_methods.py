"""Each repair method's mechanism on hand-worked examples (WR paper section 3)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repair import wbn
from repair.methods import (
    SCOPES, Method, TargetContext, confused_mask, get_method, list_methods, method_table, register,
)


def ctx(targets, rho=0.5, k=4, task="single_label"):
    return TargetContext(tuple(tuple(t) for t in targets), rho, k, task)


# ---- registry ---------------------------------------------------------------------------
def test_registry_lists_every_method_sorted_and_refuses_duplicates():
    names = list_methods()
    assert names == sorted(names)
    assert {"orig", "orig-ft", "w-aug", "w-bn", "w-loss", "w-dbr", "w-os", "pgd", "w-bn-code", "w-dbr-code"} <= set(names)
    with pytest.raises(ValueError, match="valid: .*w-bn"):
        get_method("w-nope")

    class Dup(Method):
        name = "w-aug"

    with pytest.raises(ValueError, match="already registered"):
        register(Dup)


def test_target_context_validates():
    with pytest.raises(ValueError, match="rho"):
        ctx([(0, 1)], rho=1.5)
    with pytest.raises(ValueError, match="pairs"):
        ctx([(0, 1), (0, 1, 2)])
    with pytest.raises(ValueError, match="bad target"):
        ctx([(0, 0)])
    assert ctx([(0, 1, 3)]).kind == "bias" and ctx([(2, 1), (0, 1)]).classes == [0, 1, 2]


def test_pgd_samples_with_its_loaded_probabilities():
    row = {r["method"]: r for r in method_table()}["pgd"]
    assert row["available"] and row["kind"] == "fine-tuning" and not row["uses_rho"]
    pgd = get_method("pgd", probabilities=np.array([0.5, 1.0, 0.25]))
    assert pgd.sample_weights(np.array([0, 1, 2]), ctx([(0, 1)])).tolist() == [0.5, 1.0, 0.25]
    with pytest.raises(ValueError, match="not loaded"):
        get_method("pgd").sample_weights(np.array([0, 1]), ctx([(0, 1)]))


def test_every_method_declares_kind_parameter_and_scopes():
    for name in list_methods():
        m = get_method(name)
        assert m.kind in ("baseline", "fine-tuning", "post-hoc") and m.description
        if m.param is not None:
            assert m.param.low <= m.param.default <= m.param.high and m.param.grid
            assert all(m.param.low <= r <= m.param.high for r in m.param.grid)
            choices = m.param.choices()
            assert choices[0] == m.param.high and min(choices) == pytest.approx(m.param.low)
        for scope in SCOPES:
            reason = m.scope_reason(scope)
            assert reason is None or isinstance(reason, str) and reason
    assert get_method("w-bn").scope_reason("head") and get_method("w-bn").scope_reason("all") is None
    assert get_method("w-os").param.scale == "log" and get_method("w-os").deterministic
    assert not get_method("w-loss").deterministic
    with pytest.raises(ValueError, match="rho must be in"):
        get_method("w-aug").param.validate(1.5)


def test_post_hoc_methods_apply_to_cached_outputs():
    probs = np.array([[0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    preds = probs.argmax(1)
    c = TargetContext(((0, 1),), 0.5, 3)
    assert get_method("orig").apply(probs, preds, c).tolist() == preds.tolist()
    # w-os: sample 0 is predicted 0 (a target class): 0.25 / 0.2 / 0.1 -> stays 0; rho 0.1: 0.05, 0.04 < 0.1 -> 2
    assert get_method("w-os").apply(probs, preds, c).tolist() == [0, 2]
    assert get_method("w-os").apply(probs, preds, TargetContext(((0, 1),), 0.1, 3)).tolist() == [2, 2]


# ---- w-aug ------------------------------------------------------------------------------
def test_w_aug_scales_non_target_weights_by_rho():
    labels = np.array([0, 1, 2, 0, 3])
    w = get_method("w-aug").sample_weights(labels, ctx([(0, 1)], rho=0.2))
    assert w.tolist() == [1.0, 1.0, 0.2, 1.0, 0.2]
    # several targets: Y_target is their union
    w = get_method("w-aug").sample_weights(labels, ctx([(0, 1), (1, 3)], rho=0.1))
    assert w.tolist() == [1.0, 1.0, 0.1, 1.0, 1.0]
    # multi-label: a sample is "target" if any of its labels is in Y_target
    ml = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0]], dtype=np.float32)
    w = get_method("w-aug").sample_weights(ml, ctx([(0, 3)], rho=0.3, task="multi_label"))
    assert w.tolist() == [1.0, 1.0, 0.3]


# ---- w-bn -------------------------------------------------------------------------------
def test_w_bn_mixes_batch_and_running_statistics():
    bn = nn.BatchNorm1d(1, momentum=0.1)
    wbn.patch_model(bn, rho=0.25)
    bn.train()
    x = torch.tensor([[1.0], [3.0], [10.0], [10.0], [14.0], [14.0]])  # 2 regular + 4 target rows
    with wbn.weighted_bn(bn, 2):
        out = bn(x)
    mean = 0.25 * 2.0 + 0.75 * 12.0            # rho E[x] + (1 - rho) E[x_target] = 9.5
    # weighted-sample variance about the mixed mean: 0.25 * 57.25 + 0.75 * 10.25 = 22
    var = 0.25 * ((1 - mean) ** 2 + (3 - mean) ** 2) / 2 + 0.75 * ((10 - mean) ** 2 + (14 - mean) ** 2) / 2
    assert var == pytest.approx(0.25 * 1.0 + 0.75 * 4.0 + 0.25 * 0.75 * (12.0 - 2.0) ** 2) and var == 22.0
    assert out[0, 0].item() == pytest.approx((1.0 - mean) / math.sqrt(var + bn.eps), rel=1e-5)
    assert out[4, 0].item() == pytest.approx((14.0 - mean) / math.sqrt(var + bn.eps), rel=1e-5)
    assert bn.running_mean.item() == pytest.approx(0.1 * mean)
    unbiased = 0.25 * 2.0 + 0.75 * (4.0 * 4 / 3) + 18.75  # unbiased within-group variances
    assert bn.running_var.item() == pytest.approx(0.9 * 1.0 + 0.1 * unbiased)
    assert int(bn.num_batches_tracked) == 1


def test_w_bn_rho_one_is_plain_batchnorm_and_unpatch_restores():
    torch.manual_seed(0)
    plain, weighted = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    extra = torch.randn(6, 3, 5, 5) * 5 + 2
    wbn.patch_model(weighted, rho=1.0)
    with wbn.weighted_bn(weighted, 4):
        out = weighted(torch.cat([x, extra]))[:4]
    assert torch.allclose(out, plain(x), atol=1e-5)
    assert torch.allclose(weighted.running_mean, plain.running_mean, atol=1e-6)
    wbn.unpatch_model(weighted)
    assert "forward" not in vars(weighted) and set(weighted.state_dict()) == set(plain.state_dict())


def test_w_bn_target_batch_gets_no_gradient_from_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3))
    method = get_method("w-bn")
    c = ctx([(0, 1)], rho=0.3, k=3)
    method.prepare_model(model, c)
    model.train()
    x = torch.randn(4, 3, 6, 6, requires_grad=True)
    xt = torch.randn(5, 3, 6, 6, requires_grad=True)
    with wbn.weighted_bn(model, 4):
        logits = model(torch.cat([x, xt]))[:4]
    method.loss(logits, torch.tensor([0, 1, 2, 0]), None, c).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert xt.grad is None or xt.grad.abs().sum() == 0
    assert all(p.grad is not None for p in model.parameters())
    assert method.extra_batch_classes(c) == [0, 1]


def test_w_bn_not_applicable_without_batchnorm():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    assert "no BatchNorm" in get_method("w-bn").applicability(model)
    with pytest.raises(ValueError, match="not applicable"):
        get_method("w-bn").prepare_model(model, ctx([(0, 1)], k=3))


# ---- w-loss -----------------------------------------------------------------------------
LOGITS = torch.tensor([
    [0.0, 2.0, 0.0, 0.0],   # label 0, pred 1: confused (pair 0,1)
    [0.0, 3.0, 0.0, 0.0],   # label 1, pred 1: correct
    [2.0, 0.0, 0.0, 0.0],   # label 2, pred 0: not a pair sample
    [1.0, 0.5, 0.0, 0.0],   # label 1, pred 0: confused (pair 0,1)
    [0.0, 0.0, 0.0, 2.0],   # label 2, pred 3: confused for pair (2, 3)
])
LABELS = torch.tensor([0, 1, 2, 1, 2])


def test_w_loss_adds_the_confused_sample_term():
    per = F.cross_entropy(LOGITS, LABELS, reduction="none")
    assert confused_mask(LOGITS, LABELS, (0, 1), multi_label=False).tolist() == [True, False, False, True, False]
    got = get_method("w-loss").loss(LOGITS, LABELS, None, ctx([(0, 1)], rho=0.3))
    assert got.item() == pytest.approx((0.3 * per.mean() + 0.7 * (per[0] + per[3]) / 2).item(), rel=1e-6)
    # two pairs: one term each, averaged
    got = get_method("w-loss").loss(LOGITS, LABELS, None, ctx([(0, 1), (2, 3)], rho=0.3))
    assert got.item() == pytest.approx((0.3 * per.mean() + 0.7 * ((per[0] + per[3]) / 2 + per[4]) / 2).item(), rel=1e-6)


def test_w_loss_bias_uses_two_terms_and_empty_term_is_zero():
    per = F.cross_entropy(LOGITS, LABELS, reduction="none")
    # triplet (A=0, B=3, C=1): terms {0,1} (samples 0 and 3) and {3,1} (none in this batch)
    got = get_method("w-loss").loss(LOGITS, LABELS, None, ctx([(0, 3, 1)], rho=0.5))
    assert got.item() == pytest.approx((0.5 * per.mean() + 0.5 * (per[0] + per[3]) / 2).item(), rel=1e-6)
    got = get_method("w-loss").loss(LOGITS[[1]], LABELS[[1]], None, ctx([(0, 1)], rho=0.5))
    assert torch.isfinite(got) and got.item() == pytest.approx(0.5 * per[1].item(), rel=1e-6)


# ---- w-dbr ------------------------------------------------------------------------------
EMB = torch.tensor([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [4.0, 1.0]])
EMB_LABELS = torch.tensor([0, 0, 1, 2])   # centroids P(0)=(1,0), P(1)=(4,0), P(2)=(4,1)


def test_w_dbr_confusion_term_pushes_centroids_apart():
    m = get_method("w-dbr")
    assert m.distance_term(EMB, EMB_LABELS, ctx([(0, 1)])).item() == pytest.approx(-3.0)
    emb = EMB.clone().requires_grad_(True)
    m.distance_term(emb, EMB_LABELS, ctx([(0, 1)])).backward()
    # a gradient step (emb -= lr * grad) moves class 1 away from class 0 (+x) and class 0 to -x
    assert emb.grad[2, 0] < 0 and emb.grad[0, 0] > 0
    logits = torch.zeros(4, 4)
    plain = F.cross_entropy(logits, EMB_LABELS)
    got = m.loss(logits, EMB_LABELS, EMB, ctx([(0, 1)], rho=0.25))
    assert got.item() == pytest.approx(0.25 * plain.item() - 0.75 * 3.0, rel=1e-6)


def test_w_dbr_bias_term_is_the_absolute_distance_difference():
    m = get_method("w-dbr")
    # D(A=0, C=1) = 3, D(B=2, C=1) = 1 -> +|3 - 1| = 2 (positive sign: minimised)
    assert m.distance_term(EMB, EMB_LABELS, ctx([(0, 2, 1)])).item() == pytest.approx(2.0)
    logits = torch.zeros(4, 4)
    got = m.loss(logits, EMB_LABELS, EMB, ctx([(0, 2, 1)], rho=0.5))
    assert got.item() == pytest.approx(0.5 * F.cross_entropy(logits, EMB_LABELS).item() + 0.5 * 2.0, rel=1e-6)
    # a class missing from the batch contributes nothing (and no NaN)
    assert m.distance_term(EMB, EMB_LABELS, ctx([(0, 3)])).item() == 0.0


# ---- the released code's readings (w-bn-code, w-dbr-code) ---------------------------------------
def test_registry_has_both_readings_of_w_bn_and_w_dbr():
    text_bn, code_bn = get_method("w-bn"), get_method("w-bn-code")
    assert (code_bn.bn_mode, code_bn.extra_batch_size) == ("code", 128) and text_bn.bn_mode == "mixed"
    assert code_bn.scope_reason("head") and code_bn.kind == text_bn.kind and code_bn.param == text_bn.param
    text_dbr, code_dbr = get_method("w-dbr"), get_method("w-dbr-code")
    assert text_dbr.needs_embeddings and not code_dbr.needs_embeddings
    assert code_dbr.joined_batch_size == 10 and code_dbr.joined_batch_classes(ctx([(0, 2)])) == [0, 2]
    assert text_dbr.joined_batch_classes(ctx([(0, 2)])) is None
    assert all(code_dbr.scope_reason(s) is None for s in SCOPES)
    with pytest.raises(ValueError, match="mode must be one of mixed, code"):
        wbn.patch_model(nn.BatchNorm1d(1), 0.5, mode="paper")


def test_w_bn_code_normalises_with_the_regular_batch_and_mixes_running_statistics():
    bn = nn.BatchNorm1d(1, momentum=0.1)
    wbn.patch_model(bn, rho=0.25, mode="code")
    bn.train()
    x = torch.tensor([[1.0], [3.0], [10.0], [10.0], [14.0], [14.0]])  # 2 regular + 4 target rows
    with wbn.weighted_bn(bn, 2):
        out = bn(x)
    # the forward pass uses the regular batch alone: mean 2, biased variance 1
    assert out[0, 0].item() == pytest.approx(-1 / math.sqrt(1 + bn.eps), rel=1e-5)
    assert out[1, 0].item() == pytest.approx(1 / math.sqrt(1 + bn.eps), rel=1e-5)
    assert out[2, 0].item() == pytest.approx(8 / math.sqrt(1 + bn.eps), rel=1e-5)  # target rows: same transform
    # running statistics: rho * regular + (1 - rho) * target, unbiased variances (2 and 16/3), no between term
    assert bn.running_mean.item() == pytest.approx(0.1 * (0.25 * 2.0 + 0.75 * 12.0))
    assert bn.running_var.item() == pytest.approx(0.9 * 1.0 + 0.1 * (0.25 * 2.0 + 0.75 * 16 / 3))
    bn.eval()
    assert bn(torch.tensor([[0.0]])).item() == pytest.approx(
        (0.0 - bn.running_mean.item()) / math.sqrt(bn.running_var.item() + bn.eps), rel=1e-5)


def test_w_bn_code_weights_only_the_last_three_layers_and_leaves_training_outputs_alone():
    torch.manual_seed(0)
    layers = []
    for _ in range(4):
        layers += [nn.Linear(3, 3), nn.BatchNorm1d(3)]
    model = nn.Sequential(*layers, nn.Linear(3, 2))
    plain = copy_of(model)
    patched = get_method("w-bn-code").prepare_model(model, ctx([(0, 1)], rho=0.2, k=2))
    assert [bn._wbn_rho for bn in wbn.batchnorm_layers(patched)] == [1.0, 0.2, 0.2, 0.2]
    x, xt = torch.randn(6, 3), torch.randn(5, 3) * 4 + 3
    patched.train(), plain.train()
    with wbn.weighted_bn(patched, 6):
        logits = patched(torch.cat([x, xt]))[:6]
    # the regular rows see plain BatchNorm on the regular batch: the loss is the plain one
    assert torch.allclose(logits, plain(x), atol=1e-5)
    first, first_plain = wbn.batchnorm_layers(patched)[0], wbn.batchnorm_layers(plain)[0]
    assert torch.allclose(first.running_mean, first_plain.running_mean, atol=1e-6)  # rho = 1: regular only
    last, last_plain = wbn.batchnorm_layers(patched)[-1], wbn.batchnorm_layers(plain)[-1]
    assert not torch.allclose(last.running_mean, last_plain.running_mean, atol=1e-3)  # the target batch counts
    get_method("w-bn-code").finish_model(patched)
    assert all("forward" not in vars(bn) for bn in wbn.batchnorm_layers(patched))


def copy_of(module):
    import copy

    return copy.deepcopy(module)


def test_w_dbr_code_compares_mean_softmax_outputs_at_every_scope():
    m = get_method("w-dbr-code")
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])   # softmax (0.5, 0.5) and (0.75, 0.25)
    labels = torch.tensor([0, 1])
    far = torch.tensor([[0.0, 0.0], [100.0, 0.0]])              # embeddings that would give distance 100
    c = TargetContext(((0, 1),), 0.25, 2, scope="all")
    plain = F.cross_entropy(logits, labels).item()
    got = m.loss(logits, labels, far, c).item()
    assert got == pytest.approx(0.25 * plain - 0.75 * math.sqrt(2 * 0.25 ** 2), abs=1e-6)
    # the paper's reading at the all scope uses the embeddings instead
    assert get_method("w-dbr").loss(logits, labels, far, c).item() == pytest.approx(0.25 * plain - 0.75 * 100.0)
    assert m.applicability(None, None, "all") is None and m.applicability(None, None, "head") is None


def test_w_loss_repicks_the_confused_samples_from_the_current_predictions():
    """WR 3.5: D(Y_target) is recomputed per batch from the model's current argmax."""
    labels = torch.tensor([0, 1, 2])
    before = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # sample 0 predicted 1
    after = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])   # now sample 1 predicted 0
    assert confused_mask(before, labels, (0, 1), multi_label=False).tolist() == [True, False, False]
    assert confused_mask(after, labels, (0, 1), multi_label=False).tolist() == [False, True, False]
    c = ctx([(0, 1)], rho=0.0, k=3)  # rho 0: only the confused term
    per = F.cross_entropy(after, labels, reduction="none")
    assert get_method("w-loss").loss(after, labels, None, c).item() == pytest.approx(per[1].item(), rel=1e-6)
