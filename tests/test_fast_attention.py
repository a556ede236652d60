"""Fused multi-head attention (minimm.functional.fast.attention, minimm.nn.fast) against
the readable nn.MultiHeadAttention and a plain-NumPy transcription, on both backends."""
import numpy as np
import pytest

import minimm as mm
from minimm import nn
from minimm.functional.fast import attention as fast
from minimm.nn.fast import multi_head_attention_forward


def mha_numpy(q, k, v, Ws, bs, h, allowed=None):
    """Concat_i softmax(Q_i K_iᵀ/√d) V_i · W_o + b_o in plain NumPy, head by head."""
    W_q, W_k, W_v, W_o = Ws
    b_q, b_k, b_v, b_o = bs
    Q, K, V = q @ W_q + b_q, k @ W_k + b_k, v @ W_v + b_v
    E = Q.shape[-1]
    d = E // h
    heads = []
    for i in range(h):
        s = slice(i * d, (i + 1) * d)
        S = Q[..., s] @ np.swapaxes(K[..., s], -1, -2) / np.sqrt(d)
        if allowed is not None:
            S = np.where(np.broadcast_to(allowed, S.shape[:1] + (h,) + S.shape[1:])[:, i], S, -np.inf)
        e = np.exp(S - np.max(np.where(np.isfinite(S), S, -1e300), axis=-1, keepdims=True))
        e = np.where(np.isfinite(S), e, 0)
        total = e.sum(-1, keepdims=True)
        P = e / np.where(total > 0, total, 1)
        heads.append(P @ V[..., s])
    return np.concatenate(heads, axis=-1) @ W_o + b_o


def _module(E, h, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    m = nn.MultiHeadAttention(E, h, rng=rng)
    for p in m.parameters():     # non-zero biases, so that every term is exercised
        p.data = (p.data + rng.standard_normal(p.shape) * 0.1).astype(dtype)
    return m


CALLS = ["self", "cross", "causal", "key_padding"]


def _inputs(call, rng, xp_device):
    x = rng.standard_normal((2, 5, 8))
    kv = rng.standard_normal((2, 3, 8))
    kpm = np.array([[False, False, True], [True, True, True]])   # one query row fully masked
    if call == "self":
        return (x, x, x), {}, None
    if call == "cross":
        return (x, kv, kv), {}, None
    if call == "causal":
        return (x, x, x), {"causal": True}, np.tril(np.ones((5, 5), bool))
    return (x, kv, kv), {"key_padding_mask": kpm}, ~kpm[:, None, None, :]


@pytest.mark.parametrize("call", CALLS)
def test_fused_mha_matches_numpy_and_the_readable_module(device, call):
    rng = np.random.default_rng(1)
    m = _module(8, 2).to(device)
    arrays, kw, allowed = _inputs(call, rng, device)
    tensors = {id(a): mm.tensor(a, device=device) for a in arrays}
    args = [tensors[id(a)] for a in arrays]          # the same Tensor for q = k = v
    y = multi_head_attention_forward(m, *args, **kw)
    w = mm.to_numpy(m.attn_weights)
    Ws = [mm.to_numpy(t.data) for t in (m.W_q, m.W_k, m.W_v, m.W_o)]
    bs = [mm.to_numpy(t.data) for t in (m.b_q, m.b_k, m.b_v, m.b_o)]
    np.testing.assert_allclose(y.numpy(), mha_numpy(*arrays, Ws, bs, 2, allowed),
                               rtol=1e-10, atol=1e-12)
    y_readable = m(*args, **kw)
    np.testing.assert_allclose(y.numpy(), y_readable.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w, mm.to_numpy(m.attn_weights), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("call", CALLS)
def test_fused_mha_function_gradcheck_and_gradgradcheck(call):
    rng = np.random.default_rng(2)
    m = _module(8, 2)
    arrays, _, allowed = _inputs(call, rng, "cpu")
    self_attention = arrays[0] is arrays[1]
    ins = [arrays[0]] if self_attention else list(arrays)
    params = [t.data for t in (m.W_q, m.W_k, m.W_v, m.W_o, m.b_q, m.b_k, m.b_v, m.b_o)]

    def f(*a):
        return fast.MultiHeadAttentionFast(2, allowed, self_attention)(*a)
    mm.gradcheck(f, ins + params)
    mm.gradgradcheck(f, ins + params)


def test_fused_mha_float32_gradients_match_the_readable_module(device):
    """The bench's block (d_model 128, 8 heads) at a small batch: the same loss and the same
    float32 gradients as the readable module, for every parameter and the input."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 16, 128)).astype(np.float32)
    results = []
    for forward in (multi_head_attention_forward, lambda m, *a: m(*a)):
        m = _module(128, 8, np.float32, seed=4).to(device)
        t = mm.tensor(x, device=device, requires_grad=True)
        out = forward(m, t, t, t)
        loss = (out * out).mean()
        loss.backward()
        results.append((loss.item(), [p.grad for p in m.parameters()] + [t.grad]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for got, want in zip(results[0][1], results[1][1]):
        assert got.dtype == np.float32 and got.shape == want.shape
        # (∂L/∂b_k is 0 in exact arithmetic — softmax ignores a per-row shift — so both
        # are rounding noise there: an absolute floor)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4,
                                   atol=max(1e-4 * float(np.abs(want.numpy()).max()), 1e-6))


def test_fused_mha_falls_back_to_the_readable_path_with_dropout(device):
    m = nn.MultiHeadAttention(8, 2, dropout=0.5, rng=np.random.default_rng(5)).to(device)
    m.rng = np.random.default_rng(6)
    x = mm.tensor(np.random.default_rng(7).standard_normal((2, 4, 8)), device=device)
    y = multi_head_attention_forward(m, x, x, x)
    m.rng = np.random.default_rng(6)
    np.testing.assert_array_equal(y.numpy(), m(x, x, x).numpy())
    with pytest.raises(ValueError, match="q must have shape"):
        multi_head_attention_forward(m, mm.tensor(np.zeros((2, 4, 3))), x, x)


@pytest.mark.parametrize("call", ["self", "cross", "key_padding"])
def test_fused_mha_in_batch_chunks_gives_the_same_numbers(call, monkeypatch):
    rng = np.random.default_rng(8)
    m = _module(8, 2)
    arrays, _, allowed = _inputs(call, rng, "cpu")
    self_attention = arrays[0] is arrays[1]
    ins = [arrays[0]] if self_attention else list(arrays)
    params = [t.data for t in (m.W_q, m.W_k, m.W_v, m.W_o, m.b_q, m.b_k, m.b_v, m.b_o)]

    def grads():
        ts = [mm.tensor(a, requires_grad=True) for a in ins + params]
        y = fast.MultiHeadAttentionFast(2, allowed, self_attention)(*ts)
        y.backward(mm.tensor(np.random.default_rng(9).standard_normal(y.shape)))
        return [y.numpy()] + [t.grad.numpy() for t in ts]
    whole = grads()
    monkeypatch.setattr(fast, "SCORES_CHUNK_BYTES", 1)          # one batch row at a time
    for got, want in zip(grads(), whole):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
