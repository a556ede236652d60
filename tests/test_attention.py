"""Scaled dot-product attention, formula (1): Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V."""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F
from minimm.functional import activations, attention_fast


# -- the oracle: the formula written out element by element -------------------------------------
def attention_oracle(q, k, v, allowed=None):
    """out[..., i, :] = Σⱼ wᵢⱼ v[j], wᵢⱼ = e^{sᵢⱼ} / Σ_{allowed j'} e^{sᵢⱼ'}, sᵢⱼ = q_i·k_j / √d_k.

    Plain Python loops over every batch index, query and key; a query with no allowed key
    gets zero weights. Leading dimensions of q, k, v, allowed broadcast.
    """
    d_k = q.shape[-1]
    L_q, L_k, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if allowed is None:
        allowed = np.ones((L_q, L_k), dtype=bool)
    lead = np.broadcast_shapes(lead, allowed.shape[:-2])
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    ab = np.broadcast_to(allowed, lead + (L_q, L_k))
    out = np.zeros(lead + (L_q, d_v))
    weights = np.zeros(lead + (L_q, L_k))
    for b in np.ndindex(*lead):
        for i in range(L_q):
            keys = [j for j in range(L_k) if ab[b][i, j]]
            if not keys:
                continue
            s = {j: sum(qb[b][i, t] * kb[b][j, t] for t in range(d_k)) / math.sqrt(d_k)
                 for j in keys}
            top = max(s.values())
            z = sum(math.exp(s[j] - top) for j in keys)
            for j in keys:
                weights[b][i, j] = math.exp(s[j] - top) / z
                out[b][i] += weights[b][i, j] * vb[b][j]
    return out, weights


def tril(L_q, L_k):
    return np.array([[j <= i for j in range(L_k)] for i in range(L_q)])


SHAPES = [  # (q shape, k shape, v shape)
    ((3, 4), (5, 4), (5, 6)),                   # unbatched, L_q ≠ L_k, d_v ≠ d_k
    ((1, 4, 3), (1, 4, 3), (1, 4, 3)),          # batch 1, square
    ((2, 3, 4), (2, 5, 4), (2, 5, 2)),          # batch
    ((2, 3, 2, 4), (2, 3, 6, 4), (2, 3, 6, 5)), # extra leading (head) dimension
    ((2, 3, 4), (5, 4), (5, 3)),                # keys and values shared across the batch
]


def _rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "x".join(map(str, s[0])))
@pytest.mark.parametrize("masking", ["none", "mask", "causal", "both"])
def test_forward_matches_oracle(device, xp, rng, shapes, masking):
    q, k, v = (_rand(rng, s) for s in shapes)
    L_q, L_k = q.shape[-2], k.shape[-2]
    mask = None
    allowed = None
    if masking in ("mask", "both"):
        mask = rng.random((L_q, L_k)) < 0.7
        mask[:, 0] = True
        allowed = mask
    if masking in ("causal", "both"):
        allowed = tril(L_q, L_k) if allowed is None else allowed & tril(L_q, L_k)
    out, w = F.scaled_dot_product_attention(
        mm.tensor(q, device=device), mm.tensor(k, device=device), mm.tensor(v, device=device),
        mask=None if mask is None else xp.asarray(mask), causal=masking in ("causal", "both"))
    out_ref, w_ref = attention_oracle(q, k, v, allowed)
    assert out.shape == out_ref.shape and w.shape == w_ref.shape
    np.testing.assert_allclose(mm.to_numpy(out), out_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mm.to_numpy(w), w_ref, rtol=1e-10, atol=1e-12)


def test_mask_broadcast_over_batch(device, xp, rng):
    # a key-padding style mask (B, 1, L_k): the padded keys of each sequence are hidden
    q, k, v = _rand(rng, (3, 4, 5)), _rand(rng, (3, 6, 5)), _rand(rng, (3, 6, 2))
    lengths = np.array([6, 2, 4])
    mask = (np.arange(6)[None, :] < lengths[:, None])[:, None, :]
    out, w = F.scaled_dot_product_attention(*(mm.tensor(a, device=device) for a in (q, k, v)),
                                            mask=mm.tensor(mask, device=device))
    out_ref, w_ref = attention_oracle(q, k, v, mask)
    np.testing.assert_allclose(mm.to_numpy(out), out_ref, rtol=1e-10, atol=1e-12)
    assert (mm.to_numpy(w)[1, :, 2:] == 0).all()


def test_float32_stays_float32(device, rng):
    q, k, v = (mm.tensor(_rand(rng, s, np.float32), device=device, requires_grad=True)
               for s in ((2, 3, 8), (2, 5, 8), (2, 5, 4)))
    out, w = F.scaled_dot_product_attention(q, k, v, mask=np.ones((3, 5), bool), causal=True)
    assert out.dtype == np.float32 and w.dtype == np.float32
    out.sum().backward()
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == np.float32


@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "x".join(map(str, s[0])))
@pytest.mark.parametrize("masking", ["none", "mask", "causal"])
def test_gradcheck(xp, rng, shapes, masking):
    q, k, v = (xp.asarray(_rand(rng, s)) for s in shapes)
    L_q, L_k = q.shape[-2], k.shape[-2]
    mask = xp.asarray(rng.random((L_q, L_k)) < 0.6) if masking == "mask" else None

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, causal=masking == "causal")

    assert mm.gradcheck(f, [q, k, v])


@pytest.mark.parametrize("masking", ["none", "mask", "causal"])
def test_gradgradcheck(xp, rng, masking):
    q, k, v = (xp.asarray(_rand(rng, s)) for s in ((2, 3, 2), (2, 4, 2), (2, 4, 3)))
    mask = xp.asarray(rng.random((3, 4)) < 0.6) if masking == "mask" else None

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, causal=masking == "causal")[0]

    assert mm.gradgradcheck(f, [q, k, v])


def test_masked_softmax_grad_and_gradgrad(xp, rng):
    x = xp.asarray(_rand(rng, (2, 3, 5)))
    allowed = rng.random((3, 5)) < 0.5
    allowed[1] = False  # one row with nothing allowed
    allowed = xp.asarray(allowed)

    def f(x):
        return F.masked_softmax(x, allowed)

    assert mm.gradcheck(f, [x])
    assert mm.gradgradcheck(f, [x])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("x_shape, mask_shape", [((2, 3, 5), (3, 5)), ((4, 7), None),
                                                 ((2, 1, 3, 6), (2, 1, 1, 6)), ((3, 0), None),
                                                 ((2, 4, 64), (4, 64))], ids=str)
def test_fast_softmax_matches_the_readable_softmax(device, xp, rng, dtype, x_shape, mask_shape):
    """attention_fast.FastSoftmax (row max by reduceat, additive mask, in-place exp) against
    its readable twin activations.Softmax(-1, allowed): values, gradients, second derivatives,
    with fully masked rows and extreme logits."""
    a = (rng.standard_normal(x_shape) * 10).astype(dtype)
    if a.size:
        a.reshape(-1)[::7] = np.finfo(dtype).max / 2         # extreme logits, some masked
    allowed = None
    if mask_shape is not None:
        m = rng.random(mask_shape) < 0.6
        m[(0,) * (len(mask_shape) - 1)] = False               # one fully masked row
        allowed = xp.asarray(m)
    gy = mm.tensor(rng.standard_normal(x_shape).astype(dtype), device=device)
    results = []
    for softmax in (activations.Softmax(-1, allowed), attention_fast.FastSoftmax(allowed)):
        x = mm.tensor(a, device=device, requires_grad=True)
        y = softmax(x)
        (gx,) = mm.grad([y], [x], [gy], create_graph=True)
        assert y.dtype == gx.dtype == dtype
        results.append((y.numpy(), gx.numpy()))
    for fast, readable in zip(*results):
        assert np.isfinite(fast).all()
        np.testing.assert_allclose(fast, readable, rtol=1e-6 if dtype == np.float32 else 1e-13,
                                   atol=1e-7 if dtype == np.float32 else 1e-15)
    if dtype == np.float64 and a.size:
        b = xp.asarray(rng.standard_normal(x_shape))
        assert mm.gradcheck(lambda x: activations.Softmax(-1, allowed)(x), [b])
        assert mm.gradgradcheck(lambda x: activations.Softmax(-1, allowed)(x), [b])


def test_weights_sum_to_one_over_unmasked_keys(device, rng):
    q, k, v = _rand(rng, (4, 6, 8)), _rand(rng, (4, 7, 8)), _rand(rng, (4, 7, 3))
    mask = rng.random((4, 6, 7)) < 0.5
    mask[..., 0] = True
    _, w = F.scaled_dot_product_attention(*(mm.tensor(a, device=device) for a in (q, k, v)),
                                          mask=mask, causal=True)
    w = mm.to_numpy(w)
    allowed = mask & tril(6, 7)
    np.testing.assert_allclose((w * allowed).sum(-1), 1.0, rtol=1e-12)
    assert (w[~allowed] == 0).all()
    assert (w[allowed] > 0).all()


def test_permuting_keys_and_values_together_leaves_output_unchanged(device, rng):
    q, k, v = _rand(rng, (2, 5, 4)), _rand(rng, (2, 7, 4)), _rand(rng, (2, 7, 3))
    mask = rng.random((5, 7)) < 0.6
    perm = rng.permutation(7)
    out, w = F.scaled_dot_product_attention(*(mm.tensor(a, device=device) for a in (q, k, v)),
                                            mask=mask)
    out_p, w_p = F.scaled_dot_product_attention(
        *(mm.tensor(a, device=device) for a in (q, k[:, perm], v[:, perm])), mask=mask[:, perm])
    np.testing.assert_allclose(mm.to_numpy(out_p), mm.to_numpy(out), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mm.to_numpy(w_p), mm.to_numpy(w)[..., perm], rtol=1e-12)
    # permuting the keys alone (not the values) does change the output: the test can fail
    out_k, _ = F.scaled_dot_product_attention(
        *(mm.tensor(a, device=device) for a in (q, k[:, perm], v)), mask=mask[:, perm])
    assert np.abs(mm.to_numpy(out_k) - mm.to_numpy(out)).max() > 1e-3


def _centred_scores(device, d_k, scale, rng):
    """The attention scores recovered from the weights: log wᵢⱼ = sᵢⱼ − logsumexpⱼ sᵢⱼ, so
    each row of log w minus its mean is the row of scores minus its mean."""
    q = _rand(rng, (16, 32, d_k))   # unit-variance queries and keys
    k = _rand(rng, (16, 256, d_k))
    v = np.zeros((16, 256, 1))
    _, w = F.scaled_dot_product_attention(mm.tensor(q, device=device), mm.tensor(k, device=device),
                                          mm.tensor(v, device=device), scale=scale)
    log_w = np.log(mm.to_numpy(w))
    return log_w - log_w.mean(-1, keepdims=True)


@pytest.mark.parametrize("d_k", [16, 64])
def test_scaling_keeps_score_variance_near_one(device, rng, d_k):
    # qᵢ·kⱼ of unit-variance vectors is a sum of d_k unit-variance products: variance d_k.
    # Dividing by √d_k brings it back to 1 — and leaving it out really gives ≈ d_k.
    # (Centring each row removes a further 1/L_k = 0.4 % of the variance.)
    scaled = _centred_scores(device, d_k, None, rng).var()
    unscaled = _centred_scores(device, d_k, 1.0, rng).var()
    assert 0.9 < scaled < 1.1, scaled
    assert 0.9 < unscaled / d_k < 1.1, (unscaled, d_k)


def test_fully_masked_rows_give_zero_and_finite_gradients(device, rng):
    q, k, v = (mm.tensor(_rand(rng, s), device=device, requires_grad=True)
               for s in ((2, 3, 4), (2, 5, 4), (2, 5, 6)))
    mask = np.ones((2, 3, 5), bool)
    mask[0, 1] = False       # query 1 of sequence 0 sees nothing
    mask[1] = False          # sequence 1 sees nothing at all
    out, w = F.scaled_dot_product_attention(q, k, v, mask=mask)
    (out * out).sum().backward()
    for t in (out, w, q.grad, k.grad, v.grad):
        assert np.isfinite(mm.to_numpy(t)).all()
    assert (mm.to_numpy(out)[0, 1] == 0).all() and (mm.to_numpy(out)[1] == 0).all()
    assert (mm.to_numpy(w)[0, 1] == 0).all()
    assert (mm.to_numpy(q.grad)[0, 1] == 0).all() and (mm.to_numpy(q.grad)[1] == 0).all()
    assert np.abs(mm.to_numpy(q.grad)[0, 0]).max() > 0   # the other rows still learn


def test_fully_masked_rows_gradcheck(xp, rng):
    q, k, v = (xp.asarray(_rand(rng, s)) for s in ((2, 3, 2), (2, 4, 2), (2, 4, 3)))
    mask = np.ones((2, 3, 4), bool)
    mask[0, 2] = False
    mask = xp.asarray(mask)

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask)

    assert mm.gradcheck(f, [q, k, v])
    assert mm.gradgradcheck(lambda *a: f(*a)[0], [q, k, v])


def test_causal_with_more_keys_than_queries_is_top_left_aligned(device, rng):
    q, k, v = _rand(rng, (3, 4)), _rand(rng, (5, 4)), _rand(rng, (5, 2))
    _, w = F.scaled_dot_product_attention(*(mm.tensor(a, device=device) for a in (q, k, v)),
                                          causal=True)
    w = mm.to_numpy(w)
    assert (w[np.triu_indices(3, k=1, m=5)] == 0).all()
    assert (w[0, 0] == 1.0) and (w[2, :3] > 0).all()


def test_dropout_drops_weights_and_rescales(device, rng):
    # with V = I the output rows *are* the weights after dropout
    L = 40
    q, k = _rand(rng, (8, L, 4)), _rand(rng, (8, L, 4))
    v = np.broadcast_to(np.eye(L), (8, L, L)).copy()
    p = 0.25
    out, w = F.scaled_dot_product_attention(*(mm.tensor(a, device=device) for a in (q, k, v)),
                                            dropout=p, rng=np.random.default_rng(1))
    out, w = mm.to_numpy(out), mm.to_numpy(w)
    np.testing.assert_allclose(w.sum(-1), 1.0)            # returned weights: before dropout
    kept = out != 0
    np.testing.assert_allclose(out[kept], w[kept] / (1 - p), rtol=1e-12)
    assert abs((~kept).mean() - p) < 0.02                 # 12,800 draws: σ ≈ 0.004


@pytest.mark.parametrize("shapes, message", [
    (((2, 3, 4), (2, 5, 3), (2, 5, 4)), r"q and k must have the same last dimension.*\(2, 3, 4\)"),
    (((2, 3, 4), (2, 5, 4), (2, 6, 4)), r"k and v must have the same length L_k.*\(2, 6, 4\)"),
    (((4,), (5, 4), (5, 4)), r"q must be at least 2-D.*\(4,\)"),
])
def test_shape_errors(device, shapes, message):
    q, k, v = (mm.tensor(np.zeros(s), device=device) for s in shapes)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: " + message):
        F.scaled_dot_product_attention(q, k, v)


def test_mask_errors(device):
    q, k, v = (mm.tensor(np.zeros(s), device=device) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 4)))
    with pytest.raises(TypeError, match=r"mask must be boolean.*float64"):
        F.scaled_dot_product_attention(q, k, v, mask=np.ones((3, 5)))
    with pytest.raises(ValueError,
                       match=r"mask vs scores.*\(3, 4\) and \(2, 3, 5\) cannot be broadcast"):
        F.scaled_dot_product_attention(q, k, v, mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 2, 3, 5\) would enlarge"):
        F.scaled_dot_product_attention(q, k, v, mask=np.ones((4, 2, 3, 5), bool))
