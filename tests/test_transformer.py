"""Positional encodings and the pre-norm Transformer encoder built from attention."""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import nn

_erf = np.vectorize(math.erf)


def to_float64(module):
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    return module


def call_with(module, params, *args, **kwargs):
    """module(*args) with the named parameters (dotted names) replaced by the given Tensors."""
    saved = []
    try:
        for name, t in params.items():
            *path, leaf = name.split(".")
            owner = module
            for part in path:
                owner = getattr(owner, part)
            saved.append((owner, leaf, getattr(owner, leaf)))
            object.__setattr__(owner, leaf, t)
        return module(*args, **kwargs)
    finally:
        for owner, leaf, t in reversed(saved):
            object.__setattr__(owner, leaf, t)


# -- positional encodings -----------------------------------------------------------------------
@pytest.mark.parametrize("max_len, d_model", [(7, 8), (5, 5), (1, 2), (50, 16)])
def test_sinusoidal_matches_formula(max_len, d_model, device):
    pe = nn.sinusoidal_positional_encoding(max_len, d_model)
    assert pe.shape == (max_len, d_model) and pe.dtype == np.float32
    for pos in range(max_len):
        for j in range(d_model):
            i2 = j - j % 2                                  # the 2i of this column
            angle = pos / 10000 ** (i2 / d_model)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert abs(pe[pos, j] - expected) < 1e-6
    assert (pe[0, 0::2] == 0).all() and (pe[0, 1::2] == 1).all()


def test_sinusoidal_relative_position_is_a_rotation(device):
    # PE[pos + k] = R_k PE[pos] for each (sin, cos) pair, R_k a rotation independent of pos
    pe = nn.sinusoidal_positional_encoding(40, 8, dtype=np.float64)
    k = 3
    for i in range(4):
        w = 1 / 10000 ** (2 * i / 8)
        R = np.array([[math.cos(k * w), -math.sin(k * w)], [math.sin(k * w), math.cos(k * w)]])
        np.testing.assert_allclose(pe[k:, 2 * i:2 * i + 2], pe[:-k, 2 * i:2 * i + 2] @ R,
                                   atol=1e-12)


def test_sinusoidal_module_adds_encoding(device, xp, rng):
    enc = nn.SinusoidalPositionalEncoding(6, max_len=10).to(device)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 4, 6)).astype(dtype)
        y = enc(mm.tensor(x, device=device))
        assert y.dtype == dtype
        np.testing.assert_allclose(mm.to_numpy(y),
                                   x + nn.sinusoidal_positional_encoding(10, 6, dtype)[:4])
    assert "pe" in enc.state_dict() and enc.parameters() == []
    assert mm.gradcheck(enc, [xp.asarray(rng.standard_normal((1, 3, 6)))])
    with pytest.raises(ValueError, match=r"SinusoidalPositionalEncoding: sequence length 11 "
                                         r"exceeds max_len=10"):
        enc(mm.tensor(np.zeros((1, 11, 6)), device=device))


def test_learned_positional_embedding(device, xp, rng):
    emb = to_float64(nn.LearnedPositionalEmbedding(8, 4, rng=np.random.default_rng(0))).to(device)
    assert emb.W.shape == (8, 4)
    assert 0.01 < float(mm.to_numpy(emb.W).std()) < 0.04               # N(0, 0.02²)
    x = rng.standard_normal((3, 5, 4))
    y = emb(mm.tensor(x, device=device))
    np.testing.assert_allclose(mm.to_numpy(y), x + mm.to_numpy(emb.W)[:5])
    y.sum().backward()
    g = mm.to_numpy(emb.W.grad)
    assert (g[:5] == 3).all() and (g[5:] == 0).all()                    # 3 = batch size
    f = lambda x, W: call_with(emb, {"W": W}, x)                        # noqa: E731
    assert mm.gradcheck(f, [xp.asarray(x[:1]), emb.W.data.copy()])
    with pytest.raises(ValueError, match=r"expected input \(\.\.\., L, d_model=4\), got"):
        emb(mm.tensor(np.zeros((1, 3, 5)), device=device))


# -- the encoder layer --------------------------------------------------------------------------
def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _mha(x, P, h, allowed=None):
    E = x.shape[-1]
    d_k = E // h
    Q, K, V = x @ P["W_q"] + P["b_q"], x @ P["W_k"] + P["b_k"], x @ P["W_v"] + P["b_v"]
    heads = []
    for i in range(h):
        c = slice(i * d_k, (i + 1) * d_k)
        s = Q[..., c] @ np.swapaxes(K[..., c], -1, -2) / math.sqrt(d_k)
        if allowed is not None:
            s = np.where(allowed, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        heads.append(e / e.sum(-1, keepdims=True) @ V[..., c])
    return np.concatenate(heads, -1) @ P["W_o"] + P["b_o"]


def layer_oracle(x, P, h, allowed=None):
    """x + MHA(LN₁(x)), then + W_2 GELU(LN₂(x) W_1 + b_1) + b_2, GELU(z) = z Φ(z)."""
    a = {k.split(".", 1)[1]: v for k, v in P.items() if k.startswith("attn.")}
    x = x + _mha(_layer_norm(x, P["norm1.weight"], P["norm1.bias"]), a, h, allowed)
    z = _layer_norm(x, P["norm2.weight"], P["norm2.bias"]) @ P["ff1.W"] + P["ff1.b"]
    return x + (z * 0.5 * (1 + _erf(z / math.sqrt(2)))) @ P["ff2.W"] + P["ff2.b"]


def _perturbed(module, rng):
    """Random (not identity) LayerNorm scales and biases, so the oracle sees every parameter."""
    for name, p in module.named_parameters():
        if p.ndim == 1:
            p.data = p.data + 0.1 * rng.standard_normal(p.shape).astype(p.dtype)
    return module


def test_encoder_layer_matches_numpy_oracle(device, rng):
    layer = _perturbed(to_float64(nn.TransformerEncoderLayer(8, 2, 16,
                                                             rng=np.random.default_rng(0))), rng)
    layer.to(device)
    P = {n: mm.to_numpy(p) for n, p in layer.named_parameters()}
    x = rng.standard_normal((2, 5, 8))
    np.testing.assert_allclose(mm.to_numpy(layer(mm.tensor(x, device=device))),
                               layer_oracle(x, P, 2), rtol=1e-9, atol=1e-10)
    causal = np.tril(np.ones((5, 5), bool))
    np.testing.assert_allclose(mm.to_numpy(layer(mm.tensor(x, device=device), causal=True)),
                               layer_oracle(x, P, 2, causal), rtol=1e-9, atol=1e-10)


def test_encoder_layer_gradcheck(device, xp, rng):
    layer = _perturbed(to_float64(nn.TransformerEncoderLayer(4, 2, 6,
                                                             rng=np.random.default_rng(1))), rng)
    layer.to(device)
    names = [n for n, _ in layer.named_parameters()]
    padding = xp.asarray(np.array([[False, False, True]]))

    def f(x, *params):
        return call_with(layer, dict(zip(names, params)), x, key_padding_mask=padding)

    x = xp.asarray(rng.standard_normal((1, 3, 4)))
    params = [p.data.copy() for p in layer.parameters()]
    assert mm.gradcheck(f, [x] + params, mode="random")
    assert mm.gradcheck(lambda x: layer(x, key_padding_mask=padding), [x], mode="exhaustive")


def test_encoder_layer_gradgradcheck(device, xp, rng):
    layer = to_float64(nn.TransformerEncoderLayer(4, 2, 4, rng=np.random.default_rng(2)))
    layer.to(device)
    x = xp.asarray(rng.standard_normal((1, 2, 4)))
    assert mm.gradgradcheck(layer, [x], mode="random")


# -- the encoder --------------------------------------------------------------------------------
def test_encoder_is_its_layers_then_a_final_norm(device, rng):
    enc = nn.TransformerEncoder(8, 2, 16, num_layers=3, rng=np.random.default_rng(0)).to(device)
    assert len(enc.layers) == 3
    assert not np.array_equal(mm.to_numpy(enc.layers[0].attn.W_q),
                              mm.to_numpy(enc.layers[1].attn.W_q))   # not copies of one layer
    x = mm.tensor(rng.standard_normal((2, 4, 8)).astype(np.float32), device=device)
    y = enc(x)
    assert y.shape == (2, 4, 8) and y.dtype == np.float32
    h = x
    for layer in enc.layers:
        h = layer(h)
    np.testing.assert_allclose(mm.to_numpy(y), mm.to_numpy(enc.norm(h)), rtol=1e-6)
    yn = mm.to_numpy(y)   # final LayerNorm with weight 1, bias 0: each token has mean 0, var 1
    np.testing.assert_allclose(yn.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(yn.var(-1), 1, atol=1e-3)
    assert nn.TransformerEncoder(8, 2, 16, 1, final_norm=False).norm is None


def test_encoder_padding_and_causality(device, rng):
    enc = nn.TransformerEncoder(8, 2, 16, num_layers=2, rng=np.random.default_rng(0)).to(device)
    x = rng.standard_normal((2, 5, 8))
    padding = np.zeros((2, 5), bool)
    padding[0, 3:] = True
    x2 = x.copy()
    x2[0, 3:] = 100 * rng.standard_normal((2, 8))      # change only the padded tokens
    a = mm.to_numpy(enc(mm.tensor(x, device=device), key_padding_mask=padding))
    b = mm.to_numpy(enc(mm.tensor(x2, device=device), key_padding_mask=padding))
    np.testing.assert_allclose(a[0, :3], b[0, :3], rtol=1e-10)
    np.testing.assert_array_equal(a[1], b[1])
    c = mm.to_numpy(enc(mm.tensor(x2, device=device)))   # without the mask they do matter
    assert np.abs(c[0, :3] - a[0, :3]).max() > 1e-3

    x3 = x.copy()
    x3[:, 4] += rng.standard_normal(8)                  # change the last token only
    p = mm.to_numpy(enc(mm.tensor(x, device=device), causal=True))
    q = mm.to_numpy(enc(mm.tensor(x3, device=device), causal=True))
    np.testing.assert_allclose(p[:, :4], q[:, :4], rtol=1e-10)
    assert np.abs(p[:, 4] - q[:, 4]).max() > 1e-3


def test_encoder_dropout_train_vs_eval(device, rng):
    enc = nn.TransformerEncoder(8, 2, 16, num_layers=1, dropout=0.3).to(device)
    x = mm.tensor(rng.standard_normal((2, 4, 8)).astype(np.float32), device=device)
    enc.eval()
    np.testing.assert_array_equal(mm.to_numpy(enc(x)), mm.to_numpy(enc(x)))
    enc.train()
    assert np.abs(mm.to_numpy(enc(x)) - mm.to_numpy(enc.eval()(x))).max() > 1e-4


def test_encoder_trains(device, rng):
    """A few Adam steps lower a loss: every parameter receives a gradient."""
    from minimm import optim
    enc = nn.TransformerEncoder(8, 2, 16, num_layers=2, rng=np.random.default_rng(0)).to(device)
    x = mm.tensor(rng.standard_normal((4, 6, 8)).astype(np.float32), device=device)
    target = mm.tensor(rng.standard_normal((4, 6, 8)).astype(np.float32), device=device)
    opt = optim.Adam(enc.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = ((enc(x) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in enc.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
