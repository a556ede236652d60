"""Multi-head attention, formula (2): MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O,
head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)."""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn

PARAMS = ("W_q", "W_k", "W_v", "W_o", "b_q", "b_k", "b_v", "b_o")


def make_mha(device, d_model=8, num_heads=2, dtype=np.float64, seed=0, **kw):
    """A module with random (not zero) biases, in ``dtype``, on ``device``."""
    mha = nn.MultiHeadAttention(d_model, num_heads, rng=np.random.default_rng(seed), **kw)
    rng = np.random.default_rng(seed + 1)
    for name, p in mha.named_parameters():
        if name.startswith("b_"):
            p.data = rng.standard_normal(p.shape)
        p.data = p.data.astype(dtype)
    return mha.to(device)


def numpy_params(mha):
    return {name: mm.to_numpy(p) for name, p in mha.named_parameters()}


def mha_oracle(q, k, v, P, h, allowed=None):
    """The formula in NumPy: project, then for each head i its own softmax(QᵢKᵢᵀ/√d_k)Vᵢ on
    columns i·d_k … (i+1)·d_k, concatenate, project with W_o."""
    E = q.shape[-1]
    d_k = E // h
    Q, K, V = q @ P["W_q"] + P["b_q"], k @ P["W_k"] + P["b_k"], v @ P["W_v"] + P["b_v"]
    heads = []
    for i in range(h):
        cols = slice(i * d_k, (i + 1) * d_k)
        s = Q[..., cols] @ np.swapaxes(K[..., cols], -1, -2) / math.sqrt(d_k)
        if allowed is not None:
            a = allowed if allowed.ndim < 4 else allowed[:, i]
            s = np.where(a, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        heads.append((e / e.sum(-1, keepdims=True)) @ V[..., cols])
    return np.concatenate(heads, axis=-1) @ P["W_o"] + P["b_o"]


def _x(rng, *shape):
    return rng.standard_normal(shape)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_matches_explicit_per_head_loop(device, rng, kind):
    """Module output == h separate Attention calls on the column blocks, Concat, then W^O."""
    B, L_q, E, h = 2, 5, 12, 3
    L_k = L_q if kind == "self" else 7
    mha = make_mha(device, E, h)
    q = mm.tensor(_x(rng, B, L_q, E), device=device)
    k = q if kind == "self" else mm.tensor(_x(rng, B, L_k, E), device=device)
    v = q if kind == "self" else mm.tensor(_x(rng, B, L_k, E), device=device)
    out = mha(q, k, v)

    d_k = E // h
    heads = []
    for i in range(h):
        cols = slice(i * d_k, (i + 1) * d_k)
        W_iQ, W_iK, W_iV = mha.W_q[:, cols], mha.W_k[:, cols], mha.W_v[:, cols]
        head_i, _ = F.scaled_dot_product_attention(q @ W_iQ + mha.b_q[cols],
                                                   k @ W_iK + mha.b_k[cols],
                                                   v @ W_iV + mha.b_v[cols])
        heads.append(head_i)
    expected = mm.concat(heads, axis=-1) @ mha.W_o + mha.b_o
    np.testing.assert_allclose(mm.to_numpy(out), mm.to_numpy(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("masking", ["none", "padding", "causal", "mask2d", "mask3d", "mask4d"])
def test_forward_matches_numpy_oracle(device, rng, masking):
    B, L_q, L_k, E, h = 3, 4, 6, 8, 2
    mha = make_mha(device, E, h)
    q, k, v = _x(rng, B, L_q, E), _x(rng, B, L_k, E), _x(rng, B, L_k, E)
    kw, allowed = {}, None
    if masking == "padding":
        lengths = np.array([6, 3, 1])
        kw["key_padding_mask"] = np.arange(L_k)[None, :] >= lengths[:, None]   # True = padding
        allowed = ~kw["key_padding_mask"][:, None, :]
    elif masking == "causal":
        kw["causal"] = True
        allowed = np.tril(np.ones((L_q, L_k), bool))
    else:
        shape = {"mask2d": (L_q, L_k), "mask3d": (B, L_q, L_k), "mask4d": (B, h, L_q, L_k)}
        allowed = rng.random(shape.get(masking, (L_q, L_k))) < 0.6
        allowed[..., 0] = True
        if masking != "none":
            kw["mask"] = allowed
        else:
            allowed = None
    out = mha(*(mm.tensor(a, device=device) for a in (q, k, v)), **kw)
    expected = mha_oracle(q, k, v, numpy_params(mha), h, allowed)
    np.testing.assert_allclose(mm.to_numpy(out), expected, rtol=1e-10, atol=1e-12)
    w = mm.to_numpy(mha.attn_weights)
    assert w.shape == (B, h, L_q, L_k)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-12)
    if masking == "padding":
        assert (w[1, :, :, 3:] == 0).all() and (w[2, :, :, 1:] == 0).all()


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_matches_torch(device, rng, kind):
    torch = pytest.importorskip("torch")
    B, L_q, E, h = 2, 5, 16, 4
    L_k = L_q if kind == "self" else 7
    mha = make_mha(device, E, h, dtype=np.float32)
    P = numpy_params(mha)
    ref = torch.nn.MultiheadAttention(E, h, batch_first=True)
    with torch.no_grad():
        # torch stores (out, in) matrices used as x Wᵀ: in_proj_weight = [W_qᵀ; W_kᵀ; W_vᵀ]
        ref.in_proj_weight.copy_(torch.tensor(np.concatenate([P["W_q"].T, P["W_k"].T,
                                                              P["W_v"].T])))
        ref.in_proj_bias.copy_(torch.tensor(np.concatenate([P["b_q"], P["b_k"], P["b_v"]])))
        ref.out_proj.weight.copy_(torch.tensor(P["W_o"].T))
        ref.out_proj.bias.copy_(torch.tensor(P["b_o"]))
    q = _x(rng, B, L_q, E).astype(np.float32)
    k = q if kind == "self" else _x(rng, B, L_k, E).astype(np.float32)
    v = q if kind == "self" else _x(rng, B, L_k, E).astype(np.float32)
    padding = np.zeros((B, L_k), bool)
    padding[1, 3:] = True
    allowed = rng.random((L_q, L_k)) < 0.7
    allowed[:, 0] = True
    out = mha(*(mm.tensor(a, device=device) for a in (q, k, v)), mask=allowed,
              key_padding_mask=padding)
    out_ref, w_ref = ref(torch.tensor(q), torch.tensor(k), torch.tensor(v),
                         key_padding_mask=torch.tensor(padding),
                         attn_mask=torch.tensor(~allowed),      # torch: True = *not* allowed
                         average_attn_weights=False)
    np.testing.assert_allclose(mm.to_numpy(out), out_ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mm.to_numpy(mha.attn_weights), w_ref.detach().numpy(),
                               rtol=1e-4, atol=1e-6)

    # the gradients of the parameters agree too
    q_t = mm.tensor(q, device=device)
    (mha(q_t, q_t, q_t) ** 2).sum().backward()
    out_ref, _ = ref(torch.tensor(q), torch.tensor(q), torch.tensor(q), need_weights=False)
    (out_ref ** 2).sum().backward()
    g_in = ref.in_proj_weight.grad.numpy()
    np.testing.assert_allclose(mm.to_numpy(mha.W_q.grad), g_in[:E].T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(mm.to_numpy(mha.W_v.grad), g_in[2 * E:].T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(mm.to_numpy(mha.W_o.grad), ref.out_proj.weight.grad.numpy().T,
                               rtol=1e-3, atol=1e-4)


def call_with(module, params, *args, **kwargs):
    """module(*args) with some parameters replaced by the given Tensors (for gradcheck)."""
    saved = {name: getattr(module, name) for name in params}
    try:
        for name, t in params.items():
            object.__setattr__(module, name, t)
        return module(*args, **kwargs)
    finally:
        for name, t in saved.items():
            object.__setattr__(module, name, t)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_gradcheck_inputs_and_parameters(device, xp, rng, kind):
    B, L_q, E, h = 2, 3, 4, 2
    L_k = L_q if kind == "self" else 4
    mha = make_mha(device, E, h)
    padding = np.zeros((B, L_k), bool)
    padding[0, -1] = True
    inputs = [xp.asarray(_x(rng, B, L_q, E))]
    if kind == "cross":
        inputs += [xp.asarray(_x(rng, B, L_k, E)), xp.asarray(_x(rng, B, L_k, E))]
    params = [p.data.copy() for p in (mha.W_q, mha.W_k, mha.W_v, mha.W_o, mha.b_q, mha.b_o)]
    n_in = len(inputs)

    def f(*ts):
        x = ts[:n_in]
        q, k, v = (x[0], x[0], x[0]) if kind == "self" else x
        names = ("W_q", "W_k", "W_v", "W_o", "b_q", "b_o")
        return call_with(mha, dict(zip(names, ts[n_in:])), q, k, v,
                         key_padding_mask=xp.asarray(padding))

    assert mm.gradcheck(f, inputs + params)


def test_gradgradcheck(device, xp, rng):
    B, L, E, h = 1, 3, 4, 2
    mha = make_mha(device, E, h)
    x = xp.asarray(_x(rng, B, L, E))

    def f(x, W_q, W_o):
        return call_with(mha, {"W_q": W_q, "W_o": W_o}, x, x, x, causal=True)

    assert mm.gradgradcheck(f, [x, mha.W_q.data.copy(), mha.W_o.data.copy()])


def test_float32_parameters_and_gradients(device, rng):
    mha = nn.MultiHeadAttention(8, 2).to(device)
    assert all(p.dtype == np.float32 for p in mha.parameters())
    x = mm.tensor(_x(rng, 2, 3, 8).astype(np.float32), device=device)
    out = mha(x, x, x)
    assert out.dtype == np.float32 and out.shape == (2, 3, 8)
    out.sum().backward()
    assert all(p.grad.dtype == np.float32 for p in mha.parameters())


def test_initialisation_like_pytorch(device):
    E = 64
    mha = nn.MultiHeadAttention(E, 4, rng=np.random.default_rng(0)).to(device)
    bound_in = math.sqrt(6.0 / (E + 3 * E))     # Xavier on torch's (3E, E) in_proj_weight
    for W in (mha.W_q, mha.W_k, mha.W_v):
        a = np.abs(mm.to_numpy(W))
        assert a.max() <= bound_in and a.max() > 0.95 * bound_in
    a = np.abs(mm.to_numpy(mha.W_o))
    assert a.max() <= 1 / math.sqrt(E) and a.max() > 0.95 / math.sqrt(E)
    for b in (mha.b_q, mha.b_k, mha.b_v, mha.b_o):
        assert (mm.to_numpy(b) == 0).all()
    assert not np.array_equal(mm.to_numpy(mha.W_q), mm.to_numpy(mha.W_k))


def test_no_bias(device, rng):
    mha = nn.MultiHeadAttention(8, 4, bias=False).to(device)
    assert sorted(n for n, _ in mha.named_parameters()) == ["W_k", "W_o", "W_q", "W_v"]
    x = mm.tensor(_x(rng, 1, 2, 8).astype(np.float32), device=device)
    assert mha(x, x, x).shape == (1, 2, 8)


def test_dropout_only_in_training(device, rng):
    mha = make_mha(device, 8, 2, dropout=0.5)
    x = mm.tensor(_x(rng, 2, 6, 8), device=device)
    mha.eval()
    a, b = mm.to_numpy(mha(x, x, x)), mm.to_numpy(mha(x, x, x))
    np.testing.assert_array_equal(a, b)
    mha.train()
    c = mm.to_numpy(mha(x, x, x))
    assert np.abs(c - a).max() > 1e-3


def test_errors(device, rng):
    with pytest.raises(ValueError, match=r"MultiHeadAttention: d_model=10 must be divisible "
                                         r"by num_heads=4"):
        nn.MultiHeadAttention(10, 4)
    mha = nn.MultiHeadAttention(8, 2).to(device)
    x = mm.tensor(_x(rng, 2, 3, 8).astype(np.float32), device=device)
    bad = mm.tensor(_x(rng, 2, 3, 6).astype(np.float32), device=device)
    with pytest.raises(ValueError, match=r"k must have shape \(B, L, d_model=8\), got \(2, 3, 6\)"):
        mha(x, bad, x)
    other = mm.tensor(_x(rng, 2, 4, 8).astype(np.float32), device=device)
    with pytest.raises(ValueError, match=r"k and v must have the same length L_k"):
        mha(x, x, other)
    with pytest.raises(ValueError, match=r"key_padding_mask must be boolean of shape "
                                         r"\(B, L_k\) = \(2, 3\)"):
        mha(x, x, x, key_padding_mask=np.zeros((2, 4), bool))

