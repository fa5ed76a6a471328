"""Last-layer gradient scores from per-class sums, never storing a per-sample gradient.

The reference is ``gradient_scores(last_layer_gradients(...))``, which materialises every
gradient. ``last_layer_gradients`` works in float32, so exact agreement is checked on inputs
whose float32 products are exact (multiples of 1/64 and 1/8) and, on random inputs, against
the same gradients built in float64.
"""

import math
import os

import numpy as np
import pytest

from diagnostics import gradients as G
from workspace.errors import WorkspaceError
from tests.conftest import mapping_rss_kb

COLUMNS = ["grad_norm", "M", "D", "S", "p_s", "log_p_s", "log_M", "log_D", "log_S"]


def _assert_same(got, ref, rtol=1e-9):
    assert list(got.columns) == list(ref.columns) == COLUMNS
    for c in COLUMNS:
        np.testing.assert_allclose(got[c], ref[c], rtol=rtol, atol=1e-12 if c.startswith("log") else 0, err_msg=c)


def _dyadic(n: int, k: int, d: int, seed: int):
    """Probabilities in 1/64 steps summing to 1, embeddings in 1/8 steps: every float32
    product in ``last_layer_gradients`` is exact."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    labels[:2] = k - 1                           # class k-1 has at least two rows ...
    labels[2] = 0
    labels[labels == 0] = 1
    labels[2] = 0                                # ... and class 0 exactly one
    counts = rng.multinomial(64, np.full(k, 1.0 / k), size=n)
    counts[3] = 0
    counts[3, labels[3]] = 64                    # a one-hot prediction: zero gradient
    probs = (counts / 64.0).astype(np.float32)
    emb = (rng.integers(-16, 17, (n, d)) / 8.0).astype(np.float32)
    return probs, labels, emb


def _float64_gradients(probs, labels, emb):
    probs, emb = np.asarray(probs, np.float64), np.asarray(emb, np.float64)
    delta = probs.copy()
    delta[np.arange(len(labels)), labels] -= 1.0
    return np.concatenate([(delta[:, :, None] * emb[:, None, :]).reshape(len(labels), -1), delta], axis=1)


def test_two_samples_by_hand():
    # class 0: p = (.5, .5), e = 1 -> a = (-.5, .5), ||g|| = sqrt(.5) sqrt(2) = 1;
    #          p = (.75, .25), e = 3 -> a = (-.25, .25), ||g|| = sqrt(.125) sqrt(10) = sqrt(1.25).
    # Two gradients: the mean direction bisects them, so D = (1/2, 1/2); M ~ 1/||g||.
    # class 1: one sample, M = D = 1.
    probs = np.array([[0.5, 0.5], [0.75, 0.25], [0.1, 0.9]])
    emb = np.array([[1.0], [3.0], [2.0]])
    frame = G.last_layer_scores(probs, np.array([0, 0, 1]), emb, lam=1.0, balance_classes=False)
    np.testing.assert_allclose(frame["grad_norm"], [1.0, math.sqrt(1.25), math.sqrt(0.02) * math.sqrt(5)])
    m0 = 1.0 / (1.0 + 1.0 / math.sqrt(1.25))
    np.testing.assert_allclose(frame["M"], [m0, 1.0 - m0, 1.0])
    np.testing.assert_allclose(frame["D"], [0.5, 0.5, 1.0])
    s = np.array([2 * m0 * 0.5 / (m0 + 0.5), 2 * (1 - m0) * 0.5 / (1 - m0 + 0.5), 1.0])
    np.testing.assert_allclose(frame["S"], s)
    np.testing.assert_allclose(frame["p_s"], s.min() / s)


@pytest.mark.parametrize("lam", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("balance", [True, False])
def test_equals_the_materialised_reference_on_exact_inputs(lam, balance):
    probs, labels, emb = _dyadic(200, 6, 5, seed=1)
    ref = G.gradient_scores(G.last_layer_gradients(probs, labels, emb), labels, lam=lam, balance_classes=balance)
    _assert_same(G.last_layer_scores(probs, labels, emb, lam=lam, balance_classes=balance), ref)


@pytest.mark.parametrize("gram_rows", [4096, 1])       # Gram matrices, or gradient sums in chunks
def test_equals_the_float64_reference_on_random_inputs(monkeypatch, gram_rows):
    monkeypatch.setattr(G, "GRAM_ROWS", gram_rows)
    rng = np.random.default_rng(2)
    n, k, d = 400, 7, 9
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    emb = np.abs(rng.normal(size=(n, d)))            # ReLU-like: a shared direction, large kappa
    ref = G.gradient_scores(_float64_gradients(probs, labels, emb), labels, lam=1.0)
    assert ref["log_D"].min() < -5                   # D is far from uniform: a real test
    for chunk in (1, 13, 4096):
        _assert_same(G.last_layer_scores(probs, labels, emb, chunk=chunk), ref)
    # float32 inputs against the float32 reference: only its rounding differs
    p32, e32 = probs.astype(np.float32), emb.astype(np.float32)
    loose = G.gradient_scores(G.last_layer_gradients(p32, labels, e32), labels)
    np.testing.assert_allclose(G.last_layer_scores(p32, labels, e32)["log_p_s"], loose["log_p_s"], rtol=1e-4, atol=1e-4)


def _relu_like(n: int, k: int, d: int, seed: int, emb_dtype=np.float32):
    """float32 softmax probabilities (the label's logit +4) and |N(0, 1)| embeddings: the
    gradients share a direction, so the vMF kappa is large and amplifies any rounding."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), labels] += 4.0
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return probs.astype(np.float32), labels, np.abs(rng.normal(size=(n, d))).astype(emb_dtype)


def test_error_gram_by_hand():
    # c = 0: a_0 = (-.5, .25, .25), a_1 = (-.875, .75, .125);
    # a_0 . a_1 = .4375 + .1875 + .03125, ||a_0||^2 = .375, ||a_1||^2 = .765625 + .5625 + .015625
    p = np.array([[0.5, 0.25, 0.25], [0.125, 0.75, 0.125]])
    for dtype in (np.float64, np.float32, np.float16):
        gram, sq = G._error_gram(p.astype(dtype), 0)
        np.testing.assert_array_equal(gram, [[0.375, 0.65625], [0.65625, 1.34375]])
        np.testing.assert_array_equal(sq, [0.375, 1.34375])


def test_embedding_gram_by_hand():
    # rows (1, 2) and (3, 2): the mean (2, 2) carries 2 * 2 * 8 = 32 > 5 + 13 of the squared
    # norms, so float32 rows are centred: spread (-1, 0), (1, 0), h_i = m.(e_i - m) + (m.m + 1)/2
    e = np.array([[1.0, 2.0], [3.0, 2.0]])
    for dtype in (np.float32, np.float16):
        g, h, sq = G._embedding_gram(e.astype(dtype))
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, [[1.0, -1.0], [-1.0, 1.0]])
        np.testing.assert_array_equal(h, [-2.0 + 4.5, 2.0 + 4.5])
        np.testing.assert_array_equal(g + h[:, None] + h[None, :], [[6.0, 8.0], [8.0, 14.0]])  # e_i.e_j + 1
        np.testing.assert_array_equal(sq, [5.0, 13.0])
    g, h, sq = G._embedding_gram(e)                     # float64: as it is
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [[5.0, 7.0], [7.0, 13.0]])
    np.testing.assert_array_equal(h, [0.5, 0.5])
    # mean (0, 0): nothing to centre on
    g, h, _ = G._embedding_gram(np.array([[1.0, -1.0], [-1.0, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(g, [[2.0, -2.0], [-2.0, 2.0]])
    np.testing.assert_array_equal(h, [0.5, 0.5])


@pytest.mark.parametrize("emb_dtype", [np.float32, np.float16])
def test_float32_products_stay_within_the_documented_error(emb_dtype):
    n, k, d = 3000, 100, 64                             # classes of ~30 rows: the Gram path
    probs, labels, emb = _relu_like(n, k, d, seed=5, emb_dtype=emb_dtype)
    assert np.bincount(labels).max() <= 4 * k * (d + 1) // (k + d + 1) + 1
    ref = G.gradient_scores(_float64_gradients(probs, labels, emb), labels)
    assert ref["log_D"].max() - ref["log_D"].min() > 1000   # kappa is large: a real test
    got = G.last_layer_scores(probs, labels, emb)
    exact = G.last_layer_scores(probs.astype(np.float64), labels, emb.astype(np.float64))
    _assert_same(exact, ref)                            # float64 products: the reference to 1e-9
    assert not np.array_equal(got["log_D"], exact["log_D"])  # the float32 products did run
    # norms and M never go through float32; log D (and so S, p_s) moves by the rounding only
    np.testing.assert_allclose(got["grad_norm"], ref["grad_norm"], rtol=1e-12)
    np.testing.assert_allclose(got["log_M"], ref["log_M"], rtol=1e-12, atol=1e-12)
    assert np.abs(got["log_D"] - ref["log_D"]).max() < 5e-4
    np.testing.assert_allclose(got["log_p_s"], ref["log_p_s"], rtol=1e-6, atol=1e-4)


def test_threads_do_not_change_the_scores_and_blas_threads_are_restored(tmp_path):
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]

    probs, labels, emb = _relu_like(900, 12, 40, seed=9, emb_dtype=np.float16)
    np.save(tmp_path / "probs.npy", probs)
    np.save(tmp_path / "emb.npy", emb)
    mp, me = np.load(tmp_path / "probs.npy", mmap_mode="r"), np.load(tmp_path / "emb.npy", mmap_mode="r")
    before = blas_threads()
    serial = G.last_layer_scores(probs, labels, emb, threads=1)
    two = G.last_layer_scores(mp, labels, me, threads=2)     # the workers share the file readers
    many = G.last_layer_scores(probs, labels, emb, threads=32)  # more threads than classes
    assert blas_threads() == before
    for c in COLUMNS:
        np.testing.assert_array_equal(two[c], many[c], err_msg=c)
        np.testing.assert_allclose(two[c], serial[c], rtol=1e-12, atol=1e-12, err_msg=c)


def test_map_in_order_keeps_the_order_and_stops_at_an_error():
    import time

    def slow_odd(i):
        time.sleep(0.005 * (i % 2))                     # odd items finish after the next even one
        return i * i

    assert list(G._map_in_order(slow_odd, range(12), 3)) == [i * i for i in range(12)]
    assert list(G._map_in_order(slow_odd, range(5), 1)) == [0, 1, 4, 9, 16]
    started = []

    def fails_at_3(i):
        started.append(i)
        if i == 3:
            raise RuntimeError("class 3 failed")
        return i

    with pytest.raises(RuntimeError, match="class 3 failed"):
        list(G._map_in_order(fails_at_3, range(200), 2))
    time.sleep(0.05)
    assert len(started) <= 3 + 2 * 2                    # at most 2 x workers ahead: the rest never ran


def test_memmapped_inputs_are_read_from_the_file_not_through_the_mapping(tmp_path):
    probs, labels, emb = _dyadic(3000, 8, 64, seed=3)
    np.save(tmp_path / "probs.npy", probs)
    np.save(tmp_path / "emb.npy", emb.astype(np.float16))
    mp = np.load(tmp_path / "probs.npy", mmap_mode="r")
    me = np.load(tmp_path / "emb.npy", mmap_mode="r")
    got = G.last_layer_scores(mp, labels, me, chunk=100)
    want = G.last_layer_scores(probs, labels, emb.astype(np.float16), chunk=100)
    for c in COLUMNS:
        np.testing.assert_array_equal(got[c], want[c])
    if os.path.exists("/proc/self/smaps"):
        # pages read through a mapping would be resident in this process: none were
        path = str((tmp_path / "emb.npy").resolve())
        assert mapping_rss_kb(path) < 16
        me[::7].sum()                                # touching them does show (the probe works)
        assert mapping_rss_kb(path) > 100


def test_memmap_views_are_read_at_the_right_place(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "xf.npy", np.asfortranarray(x))
    m = np.load(tmp_path / "x.npy", mmap_mode="r")
    rows = np.array([0, 1, 2, 7, 20, 21, 49])
    for view, ref in ((m, x), (m[5:], x[5:]), (m[:, 3:9], x[:, 3:9]), (m[::2], x[::2]),
                      (np.load(tmp_path / "xf.npy", mmap_mode="r"), x)):
        reader = G._RowReader(view)
        np.testing.assert_array_equal(reader.take(rows[rows < len(ref)]), ref[rows[rows < len(ref)]])
        np.testing.assert_array_equal(reader.slice(3, 9), ref[3:9])
        np.testing.assert_array_equal(reader.slice(20, 999), ref[20:])
        reader.close()
    mapped, plain = G._RowReader(m), G._RowReader(x)
    assert mapped.fd is not None and plain.fd is None
    mapped.close()


def test_compensated_loss_in_chunks_by_hand():
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.9, 0.1]])
    labels = np.array([0, 0, 1])
    ce = np.array([-math.log(0.9), math.log(2), -math.log(0.1)])
    h9 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    whole, delta = G.compensated_loss(probs, labels)
    for chunk in (1, 2):
        comp, d = G.compensated_loss(probs, labels, chunk=chunk)
        np.testing.assert_allclose(comp, ce / np.array([h9, math.log(2), h9]))
        np.testing.assert_array_equal(comp, whole)
        assert d == delta == pytest.approx(ce.sum() / (2 * h9 + math.log(2)))


def test_compensated_loss_reads_a_memmap(tmp_path):
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(5), size=1000).astype(np.float32)
    labels = rng.integers(0, 5, 1000)
    np.save(tmp_path / "p.npy", probs)
    comp, delta = G.compensated_loss(np.load(tmp_path / "p.npy", mmap_mode="r"), labels, chunk=64)
    ref, ref_delta = G.compensated_loss(probs, labels)
    np.testing.assert_array_equal(comp, ref)
    assert delta == pytest.approx(ref_delta, rel=1e-12)


def test_bad_input_is_refused():
    probs, labels, emb = _dyadic(10, 3, 2, seed=0)
    with pytest.raises(WorkspaceError, match="single-label"):
        G.last_layer_scores(probs, np.ones((10, 3)), emb)
    with pytest.raises(ValueError, match="shapes do not match"):
        G.last_layer_scores(probs, labels[:9], emb)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\)"):
        G.last_layer_scores(probs, labels + 3, emb)
    with pytest.raises(ValueError, match="lambda"):
        G.last_layer_scores(probs, labels, emb, lam=-1)
    with pytest.raises(ValueError, match="chunk"):
        G.last_layer_scores(probs, labels, emb, chunk=0)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        G.last_layer_scores(probs, labels, emb, threads=0)


def test_score_table_takes_precomputed_scores():
    from workspace.cache import InferenceOutputs

    probs, labels, emb = _dyadic(60, 4, 3, seed=7)
    logits = np.log(np.maximum(probs, 1e-6))
    out = InferenceOutputs(logits, probs, probs.argmax(axis=1), labels, emb, np.arange(60) * 2, ("a", "b", "c", "d"))
    from_grads = G.score_table(out, G.last_layer_gradients(probs, labels, emb))
    from_sums = G.score_table(out, None, scores=G.last_layer_scores(probs, labels, emb))
    assert list(from_sums.columns) == list(from_grads.columns)
    assert from_sums.attrs["delta"] == from_grads.attrs["delta"]
    for c in ("index", "label", "pred", "comp_loss", "noisy", "correct"):
        np.testing.assert_array_equal(from_sums[c], from_grads[c])
    np.testing.assert_allclose(from_sums["log_p_s"], from_grads["log_p_s"], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="gradients or their scores"):
        G.score_table(out, None)
