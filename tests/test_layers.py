"""Linear, GELU, dropout, embedding, layer/batch norm, the simple modules and the initialisers.

Forward passes are checked against plain-NumPy transcriptions written here; gradients with
float64 central differences (gradcheck) and second derivatives with gradgradcheck.
"""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn
from minimm.nn import init


def _np(t):
    return mm.to_numpy(t)


def _move(xp, *arrays):
    return [xp.asarray(a) for a in arrays]


# -- linear -------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape,W_shape", [((4, 3), (3, 5)), ((2, 3, 4), (4, 2)),
                                             ((1, 3), (3, 1)), ((3,), (3, 2))])
def test_linear_forward_and_gradients(device, xp, rng, x_shape, W_shape):
    x = rng.standard_normal(x_shape)
    W = rng.standard_normal(W_shape)
    b = rng.standard_normal(W_shape[1])
    y = F.linear(mm.tensor(x, device=device), mm.tensor(W, device=device),
                 mm.tensor(b, device=device))
    np.testing.assert_allclose(_np(y), x @ W + b, rtol=1e-12, atol=1e-12)
    y0 = F.linear(mm.tensor(x, device=device), mm.tensor(W, device=device))
    np.testing.assert_allclose(_np(y0), x @ W, rtol=1e-12, atol=1e-12)
    xs = _move(xp, x, W, b)
    assert mm.gradcheck(lambda x, W, b: F.linear(x, W, b), xs)
    assert mm.gradcheck(lambda x, W: F.linear(x, W), xs[:2])
    assert mm.gradgradcheck(lambda x, W, b: F.linear(x, W, b), xs)


def test_linear_float32_and_errors(device, rng):
    lin = nn.Linear(3, 4, rng=rng).to(device)
    x = mm.tensor(rng.standard_normal((5, 3)).astype(np.float32), device=device,
                  requires_grad=True)
    y = lin(x)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    assert lin.W.grad.dtype == np.float32 and lin.b.grad.dtype == np.float32
    bad = mm.tensor(np.zeros((5, 2), np.float32), device=device)
    with pytest.raises(ValueError, match=r"linear: input of shape \(5, 2\) does not match W "
                                         r"of shape \(3, 4\)"):
        lin(bad)
    with pytest.raises(ValueError, match=r"linear: b must have shape \(4,\)"):
        F.linear(x, lin.W, mm.tensor(np.zeros(3, np.float32), device=device))


def test_linear_module_init_matches_pytorch_default(device):
    init.manual_seed(0)
    lin = nn.Linear(400, 300).to(device)
    W, b = _np(lin.W), _np(lin.b)
    bound = 1 / math.sqrt(400)
    assert W.shape == (400, 300) and b.shape == (300,)
    assert W.dtype == np.float32 and b.dtype == np.float32
    assert np.abs(W).max() <= bound and np.abs(b).max() <= bound
    assert abs(W.std() - bound / math.sqrt(3)) < 0.01 * bound  # U(−a, a) has std a/√3
    init.manual_seed(0)
    assert np.array_equal(_np(nn.Linear(400, 300).W), W)  # manual_seed reproduces
    assert nn.Linear(3, 2, bias=False).b is None
    assert [n for n, _ in nn.Linear(3, 2).named_parameters()] == ["W", "b"]


# -- erf and GELU -------------------------------------------------------------------------------
def _erf_oracle(x):
    return np.vectorize(math.erf)(np.asarray(x, dtype=np.float64))


def test_erf_against_math_erf(device, xp):
    x = np.concatenate([np.linspace(-7, 7, 4001), [0.0, 1e-8, -1e-8, 30.0, -30.0]])
    y64 = _np(F.special.erf_array(xp.asarray(x)))
    np.testing.assert_allclose(y64, _erf_oracle(x), rtol=1e-14, atol=2e-15)
    y32 = F.special.erf_array(xp.asarray(x, dtype=np.float32))
    assert y32.dtype == np.float32
    ref = _erf_oracle(x.astype(np.float32))
    assert np.abs(_np(y32) - ref).max() < 2.5e-7
    # relative accuracy near 0, where erf x ≈ 1.128 x (no cancellation)
    small = np.array([1e-3, 1e-5, 3e-2], dtype=np.float32)
    np.testing.assert_allclose(_np(F.special.erf_array(xp.asarray(small))),
                               _erf_oracle(small), rtol=3e-7)


def test_erf_gradients(device, xp, rng):
    x = xp.asarray(rng.standard_normal((3, 4)) * 2)
    assert mm.gradcheck(F.erf, [x])
    assert mm.gradgradcheck(F.erf, [x])


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), (1, 1)])
def test_gelu_forward_and_gradients(device, xp, rng, shape):
    x = rng.standard_normal(shape) * 3
    y = F.gelu(mm.tensor(x, device=device))
    np.testing.assert_allclose(_np(y), x * 0.5 * (1 + _erf_oracle(x / math.sqrt(2))),
                               rtol=1e-13, atol=1e-15)
    y_tanh = F.gelu(mm.tensor(x, device=device), approximate="tanh")
    ref = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(_np(y_tanh), ref, rtol=1e-13, atol=1e-15)
    # the derivative Φ(x) + xφ(x) is computed from the same float64-accurate erf as the
    # forward, so the default tolerances hold
    assert mm.gradcheck(F.gelu, [xp.asarray(x)])
    assert mm.gradgradcheck(F.gelu, [xp.asarray(x)])
    assert mm.gradcheck(lambda t: F.gelu(t, "tanh"), [xp.asarray(x)])
    assert mm.gradgradcheck(lambda t: F.gelu(t, "tanh"), [xp.asarray(x)])


def test_gelu_float32_and_torch(device, rng):
    x = (rng.standard_normal(1000) * 4).astype(np.float32)
    t = mm.tensor(x, device=device, requires_grad=True)
    y = F.gelu(t)
    y.sum().backward()
    assert y.dtype == np.float32 and t.grad.dtype == np.float32
    ref = x.astype(np.float64) * 0.5 * (1 + _erf_oracle(x / math.sqrt(2)))
    # float32: erf's absolute error (< 2e-7) times |x|/2 near x ≈ −3; torch's is ~1e-6
    np.testing.assert_allclose(_np(y), ref, rtol=1e-6, atol=6e-7)
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh'"):
        F.gelu(t, approximate="fast")
    torch = pytest.importorskip("torch")
    for mode in ("none", "tanh"):
        got = _np(F.gelu(mm.tensor(x, device=device), mode))
        want = torch.nn.functional.gelu(torch.from_numpy(x), approximate=mode).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# -- dropout ------------------------------------------------------------------------------------
def test_dropout_statistics_and_gradient(device, xp):
    x = mm.tensor(np.full((200, 500), 2.0, np.float32), device=device, requires_grad=True)
    p = 0.3
    y = F.dropout(x, p, rng=np.random.default_rng(123))
    assert y.dtype == np.float32
    y_np = _np(y)
    dropped = y_np == 0
    assert abs(dropped.mean() - p) < 0.01  # 100,000 draws: std of the fraction ≈ 0.0015
    np.testing.assert_allclose(y_np[~dropped], 2.0 / (1 - p), rtol=1e-6)
    assert abs(y_np.mean() - 2.0) < 0.03  # inverted dropout keeps the expectation
    y.sum().backward()
    np.testing.assert_allclose(_np(x.grad), np.where(dropped, 0, 1 / (1 - p)), rtol=1e-6)
    # same seed, same mask
    y2 = F.dropout(x, p, rng=np.random.default_rng(123))
    assert np.array_equal(_np(y2), y_np)


def test_dropout_identity_cases_and_errors(device, rng):
    x = mm.tensor(rng.standard_normal((4, 5)).astype(np.float32), device=device)
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.7, training=False) is x
    assert np.array_equal(_np(F.dropout(x, 1.0)), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError, match=r"Dropout: p must be in \[0, 1\], got -0.1"):
        nn.Dropout(-0.1)


def test_dropout_module_train_eval_and_manual_seed(device):
    x = mm.tensor(np.ones((50, 40), np.float32), device=device)
    drop = nn.Dropout(0.5)
    init.manual_seed(7)
    a = _np(drop(x))
    init.manual_seed(7)
    b = _np(drop(x))
    assert np.array_equal(a, b) and 0.4 < (a == 0).mean() < 0.6
    drop.eval()
    assert np.array_equal(_np(drop(x)), np.ones((50, 40), np.float32))


# -- embedding ----------------------------------------------------------------------------------
def test_embedding_forward_and_repeated_ids_gradient(device, xp, rng):
    W = rng.standard_normal((6, 3))
    ids = np.array([[1, 4, 1], [5, 1, 0]])
    y = F.embedding(xp.asarray(ids), mm.tensor(W, device=device))
    np.testing.assert_allclose(_np(y), W[ids])
    y_from_tensor = F.embedding(mm.tensor(ids, device=device), mm.tensor(W, device=device))
    np.testing.assert_allclose(_np(y_from_tensor), W[ids])
    # ∂L/∂W[v] = Σ of the upstream gradient at the positions holding v (id 1 three times)
    Wt = mm.tensor(W, device=device, requires_grad=True)
    gy = rng.standard_normal((2, 3, 3))
    F.embedding(xp.asarray(ids), Wt).backward(xp.asarray(gy))
    expected = np.zeros_like(W)
    for n in range(2):
        for t in range(3):
            expected[ids[n, t]] += gy[n, t]
    np.testing.assert_allclose(_np(Wt.grad), expected, rtol=1e-12)
    ids_d = xp.asarray(ids)
    assert mm.gradcheck(lambda W: F.embedding(ids_d, W), [xp.asarray(W)])
    assert mm.gradgradcheck(lambda W: F.embedding(ids_d, W), [xp.asarray(W)])
    one = xp.asarray(np.array([2]))
    assert mm.gradcheck(lambda W: F.embedding(one, W), [xp.asarray(W)])


def test_embedding_errors(device, xp):
    W = mm.tensor(np.zeros((10, 4), np.float32), device=device)
    with pytest.raises(TypeError, match="embedding: ids must be integers.*float"):
        F.embedding(xp.asarray([1.0, 2.0]), W)
    with pytest.raises(ValueError, match=r"embedding: id 10 is out of range for a vocabulary "
                                         r"of 10 \(valid: 0..9\)"):
        F.embedding(xp.asarray([3, 10]), W)
    with pytest.raises(ValueError, match="embedding: id -1 is out of range"):
        F.embedding(xp.asarray([-1, 2]), W)


def test_embedding_module(device):
    init.manual_seed(3)
    emb = nn.Embedding(1000, 64).to(device)
    W = _np(emb.W)
    assert W.shape == (1000, 64) and W.dtype == np.float32
    assert abs(W.mean()) < 0.01 and abs(W.std() - 1) < 0.01  # N(0, 1) as PyTorch
    y = emb(np.array([[3, 3, 999]]))
    assert y.shape == (1, 3, 64) and y.dtype == np.float32


# -- layer norm ---------------------------------------------------------------------------------
def _layer_norm_oracle(x, k, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


@pytest.mark.parametrize("shape,normalized", [((4, 5), (5,)), ((2, 3, 4), (3, 4)),
                                              ((1, 6), (6,))])
def test_layer_norm_forward_and_gradients(device, xp, rng, shape, normalized):
    x = rng.standard_normal(shape) * 2 + 1
    w = rng.standard_normal(normalized)
    b = rng.standard_normal(normalized)
    y = F.layer_norm(mm.tensor(x, device=device), normalized, mm.tensor(w, device=device),
                     mm.tensor(b, device=device))
    np.testing.assert_allclose(_np(y), _layer_norm_oracle(x, len(normalized), w, b),
                               rtol=1e-12, atol=1e-12)
    xs = _move(xp, x, w, b)
    fn = lambda x, w, b: F.layer_norm(x, normalized, w, b)  # noqa: E731
    assert mm.gradcheck(fn, xs)
    assert mm.gradgradcheck(fn, xs)
    assert mm.gradcheck(lambda x: F.layer_norm(x, normalized), xs[:1])


def test_layer_norm_module_float32_torch_and_errors(device, rng):
    ln = nn.LayerNorm(8).to(device)
    assert [n for n, _ in ln.named_parameters()] == ["weight", "bias"]
    x = rng.standard_normal((3, 8)).astype(np.float32) * 5
    xt = mm.tensor(x, device=device, requires_grad=True)
    y = ln(xt)
    y.sum().backward()
    assert y.dtype == np.float32 and xt.grad.dtype == np.float32
    assert ln.weight.grad.dtype == np.float32
    np.testing.assert_allclose(_np(y), _layer_norm_oracle(x.astype(np.float64), 1),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(8,\) does not match "
                                         r"the trailing dimensions of the input of shape "
                                         r"\(3, 7\)"):
        ln(mm.tensor(np.zeros((3, 7), np.float32), device=device))
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.layer_norm(torch.from_numpy(x), (8,)).numpy()
    np.testing.assert_allclose(_np(y), want, rtol=1e-5, atol=1e-5)


# -- batch norm ---------------------------------------------------------------------------------
def _batch_norm_train_oracle(x, w, b, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)  # biased, for normalising
    return (x - mu) / np.sqrt(var + eps) * w.reshape(shape) + b.reshape(shape)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5), (1, 2, 3, 3)])
def test_batch_norm_train_forward_running_stats_and_gradients(device, xp, rng, shape):
    C = shape[1]
    x = rng.standard_normal(shape) * 3 + 2
    w, b = rng.standard_normal(C), rng.standard_normal(C)
    rm, rv = xp.asarray(rng.standard_normal(C)), xp.asarray(rng.random(C) + 0.5)
    rm0, rv0 = _np(rm).copy(), _np(rv).copy()
    y = F.batch_norm(mm.tensor(x, device=device), rm, rv, mm.tensor(w, device=device),
                     mm.tensor(b, device=device), training=True, momentum=0.2)
    np.testing.assert_allclose(_np(y), _batch_norm_train_oracle(x, w, b), rtol=1e-12,
                               atol=1e-12)
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // C
    np.testing.assert_allclose(_np(rm), 0.8 * rm0 + 0.2 * x.mean(axis=axes), rtol=1e-12)
    unbiased = x.var(axis=axes) * m / (m - 1)  # the running estimate uses the unbiased one
    np.testing.assert_allclose(_np(rv), 0.8 * rv0 + 0.2 * unbiased, rtol=1e-12)
    fn = lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)  # noqa: E731
    xs = _move(xp, x, w, b)
    assert mm.gradcheck(fn, xs)
    assert mm.gradgradcheck(fn, xs, mode="random")


def test_batch_norm_eval_and_gradient(device, xp, rng):
    x = rng.standard_normal((3, 2, 2, 2))
    rm, rv = rng.standard_normal(2), rng.random(2) + 0.5
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    y = F.batch_norm(mm.tensor(x, device=device), xp.asarray(rm), xp.asarray(rv),
                     mm.tensor(w, device=device), mm.tensor(b, device=device), training=False)
    s = (1, 2, 1, 1)
    ref = (x - rm.reshape(s)) / np.sqrt(rv.reshape(s) + 1e-5) * w.reshape(s) + b.reshape(s)
    np.testing.assert_allclose(_np(y), ref, rtol=1e-12)
    fn = lambda x, w, b: F.batch_norm(x, xp.asarray(rm), xp.asarray(rv), w, b,  # noqa: E731
                                      training=False)
    assert mm.gradcheck(fn, _move(xp, x, w, b))


def test_batchnorm2d_module_train_eval_state_and_errors(device, rng):
    bn = nn.BatchNorm2d(3).to(device)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    x = (rng.standard_normal((8, 3, 4, 4)) * 2 + 1).astype(np.float32)
    xt = mm.tensor(x, device=device, requires_grad=True)
    y = bn(xt)
    y.sum().backward()
    assert y.dtype == np.float32 and xt.grad.dtype == np.float32
    assert bn.running_mean.dtype == np.float32 and bn.running_var.dtype == np.float32
    assert abs(_np(y).mean()) < 1e-5  # normalised by the batch's own statistics
    bn.eval()
    y_eval = _np(bn(mm.tensor(x, device=device)))
    rm, rv = _np(bn.running_mean), _np(bn.running_var)
    s = (1, 3, 1, 1)
    np.testing.assert_allclose(y_eval, (x - rm.reshape(s)) / np.sqrt(rv.reshape(s) + 1e-5),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input \(N, 3, H, W\), got "
                                         r"shape \(8, 4, 4, 4\)"):
        bn(mm.tensor(np.zeros((8, 4, 4, 4), np.float32), device=device))
    with pytest.raises(ValueError, match="batch_norm: training needs more than one value"):
        F.batch_norm(mm.tensor(np.zeros((1, 3), np.float32)), None, None, training=True)
    torch = pytest.importorskip("torch")
    tbn = torch.nn.BatchNorm2d(3)
    bn2 = nn.BatchNorm2d(3)
    for k in range(3):  # a few training steps, then evaluation
        xb = (rng.standard_normal((4, 3, 5, 5)) * (k + 1)).astype(np.float32)
        np.testing.assert_allclose(_np(bn2(mm.tensor(xb))), tbn(torch.from_numpy(xb))
                                   .detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn2.running_var, tbn.running_var.numpy(), rtol=1e-5)
    bn2.eval()
    tbn.eval()
    np.testing.assert_allclose(_np(bn2(mm.tensor(xb))), tbn(torch.from_numpy(xb)).detach()
                               .numpy(), rtol=1e-4, atol=1e-5)


# -- simple activation modules ------------------------------------------------------------------
def test_activation_modules(device, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = mm.tensor(x, device=device)
    cases = [(nn.ReLU(), np.maximum(x, 0)), (nn.Tanh(), np.tanh(x)),
             (nn.Sigmoid(), 1 / (1 + np.exp(-x))),
             (nn.GELU(), x * 0.5 * (1 + _erf_oracle(x / math.sqrt(2)))),
             (nn.GELU("tanh"), 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                      * (x + 0.044715 * x ** 3))))]
    for module, ref in cases:
        y = module(t)
        assert y.dtype == np.float32, module
        np.testing.assert_allclose(_np(y), ref, rtol=1e-5, atol=1e-6, err_msg=repr(module))
        assert module.parameters() == []


# -- initialisers -------------------------------------------------------------------------------
def test_fans_for_linear_and_conv_layouts():
    assert init.fans((20, 30)) == (20, 30)             # Linear (in, out)
    assert init.fans((16, 3, 5, 5)) == (75, 400)       # Conv (out, in, kh, kw)
    assert init.fans((7,)) == (7, 7)
    with pytest.raises(ValueError, match=r"fans: a scalar shape \(\) has no fan-in"):
        init.fans(())


def test_initialiser_scales_with_fixed_seed():
    rng = np.random.default_rng(0)
    shape = (256, 512)                                   # fan_in 256, fan_out 512
    a = init.kaiming_uniform(shape, nonlinearity="relu", rng=rng)
    bound = math.sqrt(2) * math.sqrt(3 / 256)
    assert a.dtype == np.float32 and np.abs(a).max() <= bound
    assert abs(a.std() - bound / math.sqrt(3)) < 0.01 * bound
    n = init.kaiming_normal(shape, nonlinearity="relu", rng=rng)
    assert abs(n.std() - math.sqrt(2 / 256)) < 0.01 * math.sqrt(2 / 256)
    n_out = init.kaiming_normal(shape, mode="fan_out", nonlinearity="relu", rng=rng)
    assert abs(n_out.std() - math.sqrt(2 / 512)) < 0.01 * math.sqrt(2 / 512)
    xu = init.xavier_uniform(shape, rng=rng)
    xb = math.sqrt(6 / (256 + 512))
    assert np.abs(xu).max() <= xb and abs(xu.std() - xb / math.sqrt(3)) < 0.01 * xb
    xn = init.glorot_normal(shape, rng=rng)
    assert abs(xn.std() - math.sqrt(2 / 768)) < 0.01 * math.sqrt(2 / 768)
    conv = init.kaiming_uniform((32, 3, 3, 3), a=math.sqrt(5), rng=rng)
    assert np.abs(conv).max() <= 1 / math.sqrt(27)       # PyTorch's conv default bound
    assert np.array_equal(init.zeros((2, 3)), np.zeros((2, 3), np.float32))
    assert init.ones((2,)).dtype == np.float32
    assert np.array_equal(init.xavier_uniform((4, 4), rng=np.random.default_rng(5)),
                          init.xavier_uniform((4, 4), rng=np.random.default_rng(5)))
    with pytest.raises(ValueError, match="calculate_gain: unknown nonlinearity 'swish'"):
        init.kaiming_normal((3, 3), nonlinearity="swish")
    with pytest.raises(ValueError, match="init: mode must be 'fan_in' or 'fan_out'"):
        init.kaiming_normal((3, 3), mode="fan_avg")


def test_in_place_initialisers_keep_parameter_device_and_dtype(device):
    p = nn.Parameter(mm.tensor(np.zeros((64, 128), np.float32), device=device).data)
    init.kaiming_uniform_(p, nonlinearity="relu", rng=np.random.default_rng(1))
    assert p.dtype == np.float32 and p.device == device
    assert 0 < np.abs(_np(p)).max() <= math.sqrt(6 / 64)
    init.zeros_(p)
    assert not _np(p).any()
    init.ones_(p)
    assert (_np(p) == 1).all() and p.dtype == np.float32
    init.xavier_normal_(p, rng=np.random.default_rng(2))
    assert abs(_np(p).std() - math.sqrt(2 / 192)) < 0.05 * math.sqrt(2 / 192)
