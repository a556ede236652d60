"""The decoder block (prefix-causal self-attention, pre-norm) and its KV cache."""
import math
import os
import sys

import numpy as np
import pytest

import minimm as mm
from minimm import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_transformer import call_with, to_float64  # noqa: E402  (parameters as inputs)


def perturbed(module, rng):
    """Non-trivial LayerNorm scales and biases (they start at 1 and 0)."""
    for name, p in module.named_parameters():
        if name.startswith("norm") or name.endswith(".b") or name.startswith("attn.b"):
            p.data = p.data + 0.3 * rng.standard_normal(p.shape)
    return module


# -- an independent NumPy transcription of the block --------------------------------------------
def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def block_oracle(x, P, h, num_prefix):
    """x + MHA(LN1 x) with the prefix-causal mask, then + FFN(LN2 x) with GELU's tanh form;
    loops over heads and over (query, key) pairs for the mask."""
    B, L, E = x.shape
    d_k = E // h
    allowed = np.array([[j <= i or j < num_prefix for j in range(L)] for i in range(L)])
    z = layer_norm(x, P["norm1.weight"], P["norm1.bias"])
    Q = z @ P["attn.W_q"] + P["attn.b_q"]
    K = z @ P["attn.W_k"] + P["attn.b_k"]
    V = z @ P["attn.W_v"] + P["attn.b_v"]
    heads = []
    for i in range(h):
        c = slice(i * d_k, (i + 1) * d_k)
        s = Q[..., c] @ np.swapaxes(K[..., c], -1, -2) / math.sqrt(d_k)
        s = np.where(allowed, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        heads.append(e / e.sum(-1, keepdims=True) @ V[..., c])
    x = x + np.concatenate(heads, -1) @ P["attn.W_o"] + P["attn.b_o"]
    z = layer_norm(x, P["norm2.weight"], P["norm2.bias"])
    u = z @ P["ff1.W"] + P["ff1.b"]
    gelu = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))  # GPT-2
    return x + gelu @ P["ff2.W"] + P["ff2.b"]


# -- the mask -----------------------------------------------------------------------------------
@pytest.mark.parametrize("num_prefix, L_q, L_k, start", [(0, 4, 4, 0), (2, 5, 5, 0),
                                                         (3, 1, 7, 6), (2, 2, 6, 4)])
def test_prefix_causal_mask(num_prefix, L_q, L_k, start, xp):
    m = nn.prefix_causal_mask(num_prefix, L_q, L_k, start, xp)
    expected = [[(j <= start + i) or (j < num_prefix) for j in range(L_k)] for i in range(L_q)]
    assert m.dtype == bool and m.shape == (L_q, L_k)
    np.testing.assert_array_equal(mm.to_numpy(m), np.array(expected))


# -- the block ----------------------------------------------------------------------------------
@pytest.mark.parametrize("B, L, E, h, num_prefix", [(2, 5, 8, 2, 2), (1, 4, 6, 3, 0),
                                                    (3, 6, 4, 1, 4)])
def test_block_matches_numpy_oracle(B, L, E, h, num_prefix, device, rng):
    block = perturbed(to_float64(nn.DecoderBlock(E, h, 2 * E, rng=np.random.default_rng(1))),
                      rng).to(device)
    x = rng.standard_normal((B, L, E))
    mask = nn.prefix_causal_mask(num_prefix, L, L)
    y = block(mm.tensor(x, device=device), mask=mask)
    P = {n: mm.to_numpy(p) for n, p in block.named_parameters()}
    np.testing.assert_allclose(mm.to_numpy(y), block_oracle(x, P, h, num_prefix),
                               rtol=1e-9, atol=1e-10)
    assert block.attn.attn_weights.shape == (B, h, L, L)


@pytest.mark.parametrize("B, L, E, h, num_prefix", [(1, 3, 4, 2, 1), (2, 4, 6, 3, 0),
                                                    (1, 5, 4, 1, 3)])
def test_block_gradcheck_end_to_end(B, L, E, h, num_prefix, device, xp, rng):
    block = perturbed(to_float64(nn.DecoderBlock(E, h, 6, rng=np.random.default_rng(2))),
                      rng).to(device)
    names = [n for n, _ in block.named_parameters()]
    mask = nn.prefix_causal_mask(num_prefix, L, L)

    def f(x, *params):
        return call_with(block, dict(zip(names, params)), x, mask=mask)

    x = xp.asarray(rng.standard_normal((B, L, E)))
    params = [p.data.copy() for p in block.parameters()]
    assert mm.gradcheck(f, [x] + params, mode="random", n_directions=6)
    assert mm.gradcheck(lambda x: block(x, mask=mask), [x], mode="exhaustive")


def test_block_is_causal_after_the_prefix(device, rng):
    block = nn.DecoderBlock(8, 2, 16, rng=np.random.default_rng(3)).to(device)
    x = rng.standard_normal((2, 6, 8)).astype(np.float32)
    mask = nn.prefix_causal_mask(2, 6, 6)
    y = mm.to_numpy(block(mm.tensor(x, device=device), mask=mask))
    x2 = x.copy()
    x2[:, 4] += rng.standard_normal(8).astype(np.float32)        # change token 4
    y2 = mm.to_numpy(block(mm.tensor(x2, device=device), mask=mask))
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])          # the past is untouched
    assert np.abs(y[:, 4:] - y2[:, 4:]).max() > 1e-3
    x3 = x.copy()
    x3[:, 1] += rng.standard_normal(8).astype(np.float32)        # a prefix token: seen by all
    y3 = mm.to_numpy(block(mm.tensor(x3, device=device), mask=mask))
    assert (np.abs(y3 - y).max(axis=(0, 2)) > 1e-4).all()


# -- the cache ----------------------------------------------------------------------------------
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("num_prefix", [0, 1, 3])
def test_cached_steps_equal_the_full_pass(B, num_prefix, device, rng):
    """Two blocks fed the prefix (and first token) at once, then one token at a time through
    their caches: every position's output equals the masked full pass, float32, ≤ 1e-5."""
    blocks = [nn.DecoderBlock(8, 2, 16, rng=np.random.default_rng(s)).to(device) for s in (4, 5)]
    L = num_prefix + 6
    x = mm.tensor(rng.standard_normal((B, L, 8)).astype(np.float32), device=device)
    full = x
    for b in blocks:
        full = b(full, mask=nn.prefix_causal_mask(num_prefix, L, L))
    caches = [nn.KVCache(L) for _ in blocks]
    first = num_prefix + 1
    with mm.no_grad():
        outs = []
        for start, stop in [(0, first)] + [(t, t + 1) for t in range(first, L)]:
            h = x[:, start:stop]
            mask = nn.prefix_causal_mask(num_prefix, stop - start, stop, start)
            for b, c in zip(blocks, caches):
                h = b(h, mask=mask, cache=c)
            outs.append(mm.to_numpy(h))
    got = np.concatenate(outs, axis=1)
    assert got.dtype == np.float32 and caches[0].length == L
    np.testing.assert_allclose(got, mm.to_numpy(full), rtol=0, atol=1e-5)


def test_kv_cache_buffers_and_errors(xp):
    cache = nn.KVCache(5)
    K = xp.ones((2, 3, 2, 4), dtype=xp.float32)
    K_all, V_all = cache.append(K, 2 * K)
    assert K_all.shape == (2, 3, 2, 4) and cache.length == 2
    K_all, V_all = cache.append(3 * K[:, :, :1], 4 * K[:, :, :1])
    got = mm.to_numpy(V_all)[0, 0, :, 0]
    np.testing.assert_array_equal(got, [2, 2, 4])
    assert cache.K.shape == (2, 3, 5, 4)                       # allocated once, in place
    with pytest.raises(ValueError, match=r"KVCache: cannot append keys of shape \(2, 3, 3, 4\) "
                                         r"to a cache of 3/5 positions"):
        cache.append(xp.ones((2, 3, 3, 4), dtype=xp.float32), xp.ones((2, 3, 3, 4)))
    block = nn.DecoderBlock(4, 2, 8)
    x = mm.tensor(np.zeros((1, 2, 4), dtype=np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="a KV cache is for generation; run it under "
                                           r"mm.no_grad\(\)"):
        block(x, cache=nn.KVCache(4))
    with pytest.raises(ValueError, match=r"CausalSelfAttention: x must have shape \(B, L, "
                                         r"d_model=4\), got \(2, 4\)"):
        block.attn(mm.tensor(np.zeros((2, 4), dtype=np.float32)))
