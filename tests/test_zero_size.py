"""Zero-size dimensions: an empty batch, an empty axis, no keys. Where PyTorch computes
something, minimm computes the same (shapes, NaN for a mean of nothing, −∞ for a log-sum of
nothing, zero gradients); where PyTorch refuses (the max of nothing), minimm refuses clearly.
"""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn


def T(shape, device, dtype=np.float64, requires_grad=True, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return mm.tensor(a, device=device, requires_grad=requires_grad)


def _backward_ones(y):
    y.backward(mm.tensor(np.ones(y.shape, y.dtype), device=y.device))


CONVS = [  # x shape (N = 0), W shape, stride, padding: each column layout of the fast kernel
    ((0, 3, 8, 8), (4, 3, 3, 3), 1, 0),        # many pixels per image: "nkp"
    ((0, 32, 12, 12), (4, 32, 3, 3), 1, 0),    # "knp"
    ((0, 32, 6, 6), (4, 32, 3, 3), 2, 1),      # short rows: "kpn"
]


@pytest.mark.parametrize("xs, ws, stride, padding", CONVS)
@pytest.mark.parametrize("conv", [F.conv2d, F.conv2d_simple], ids=["fused", "simple"])
def test_conv2d_on_an_empty_batch(device, conv, xs, ws, stride, padding):
    x, W, b = T(xs, device), T(ws, device, seed=1), T(ws[:1], device, seed=2)
    y = conv(x, W, b, stride, padding)
    OH = (xs[2] + 2 * padding - ws[2]) // stride + 1
    assert y.shape == (0, ws[0], OH, OH)
    _backward_ones(y)
    assert x.grad.shape == xs
    np.testing.assert_array_equal(W.grad.numpy(), np.zeros(ws))   # a sum over no images
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(ws[0]))


def test_conv2d_module_and_pools_on_an_empty_batch(device):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3),
                        nn.AvgPool2d(2), nn.Flatten()).to(device)
    x = T((0, 3, 14, 14), device, np.float32)
    y = net(x)
    assert y.shape == (0, 4 * 2 * 2) and y.dtype == np.float32   # 14 → 12 → 6 → 4 → 2
    y.sum().backward()
    for p in net.parameters():
        assert p.grad.shape == p.shape and not p.grad.numpy().any()
    for pool, k, s in [(F.max_pool2d, 2, None), (F.max_pool2d, 3, 1), (F.avg_pool2d, 3, 2)]:
        xt = T((0, 2, 7, 7), device)
        y = pool(xt, k, s)
        assert y.shape[0] == 0
        _backward_ones(y)
        assert xt.grad.shape == (0, 2, 7, 7)


@pytest.mark.parametrize("shape, axis", [((3, 0), 1), ((0,), 0), ((2, 0, 4), (1, 2)),
                                         ((0, 5), None)], ids=str)
def test_reductions_over_an_empty_axis(device, shape, axis):
    """mean → NaN, logsumexp → −∞, sum → 0 (NumPy's and PyTorch's answers)."""
    x = T(shape, device)
    want_shape = np.sum(np.zeros(shape), axis=axis).shape
    m = F.mean(x, axis=axis)
    assert m.shape == want_shape and np.isnan(m.numpy()).all()
    lse = F.logsumexp(x, axis=axis)
    assert lse.shape == want_shape and (lse.numpy() == -np.inf).all()
    s = F.sum(x, axis=axis)
    assert s.shape == want_shape and not s.numpy().any()
    for y in (m, lse, s):
        x.zero_grad()
        _backward_ones(y)
        assert x.grad.shape == shape


@pytest.mark.parametrize("shape, axis", [((3, 0), 1), ((3, 0), 0), ((0, 4), 1), ((2, 0, 3), -1)],
                         ids=str)
def test_softmax_family_on_empty_input(device, shape, axis):
    for f in (F.softmax, F.log_softmax):
        x = T(shape, device)
        y = f(x, axis=axis)
        assert y.shape == shape
        _backward_ones(y)
        assert x.grad.shape == shape


def test_max_over_an_empty_axis_is_refused_as_in_pytorch(device):
    with pytest.raises(ValueError, match=r"max: cannot reduce over an empty axis \(input of "
                                         r"shape \(3, 0\), axis 1\)"):
        F.max(T((3, 0), device), axis=1)
    assert F.max(T((0, 3), device), axis=1).shape == (0,)       # an empty batch is fine


def test_attention_with_no_keys(device):
    """L_k = 0: no weights, and the output a zero vector per query (nothing to average), as
    PyTorch's scaled_dot_product_attention; the queries get zero gradients."""
    q, k, v = T((2, 3, 4), device), T((2, 0, 4), device, seed=1), T((2, 0, 5), device, seed=2)
    out, w = F.scaled_dot_product_attention(q, k, v, causal=True)
    assert out.shape == (2, 3, 5) and w.shape == (2, 3, 0)
    np.testing.assert_array_equal(out.numpy(), np.zeros((2, 3, 5)))
    (out * out).sum().backward()
    np.testing.assert_array_equal(q.grad.numpy(), np.zeros((2, 3, 4)))
    assert k.grad.shape == (2, 0, 4) and v.grad.shape == (2, 0, 5)
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.scaled_dot_product_attention(
        *(torch.tensor(t.numpy()) for t in (q, k, v)))
    np.testing.assert_array_equal(out.numpy(), ref.numpy())


def test_attention_and_multihead_on_an_empty_batch(device):
    q = T((0, 3, 8), device, np.float32)
    out, w = F.scaled_dot_product_attention(q, q, q)
    assert out.shape == (0, 3, 8) and w.shape == (0, 3, 3)
    mha = nn.MultiHeadAttention(8, 2).to(device)
    y = mha(q, q, q, key_padding_mask=np.zeros((0, 3), bool))
    assert y.shape == (0, 3, 8)
    y.sum().backward()
    assert not mha.W_q.grad.numpy().any()


@pytest.mark.parametrize("loss", [F.cross_entropy, F.cross_entropy_simple],
                         ids=["fused", "simple"])
def test_cross_entropy_on_an_empty_batch_is_nan_with_an_empty_gradient(device, loss):
    """PyTorch: the mean over no samples is NaN; its backward gives an empty gradient."""
    x = T((0, 5), device)
    y = loss(x, np.zeros(0, np.int64))
    assert y.shape == () and np.isnan(y.numpy())
    y.backward()
    assert x.grad.shape == (0, 5)
    torch = pytest.importorskip("torch")
    assert torch.isnan(torch.nn.functional.cross_entropy(
        torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)))


def test_layers_on_an_empty_batch(device):
    """linear, layer_norm, embedding, an LSTM (fused and composed, with and without lengths)
    and batch norm in evaluation: empty outputs of the right shape, zero parameter gradients."""
    lin = nn.Linear(3, 4).to(device)
    ln = nn.LayerNorm(4).to(device)
    emb = nn.Embedding(10, 3).to(device)
    x = T((0, 7, 3), device, np.float32)
    y = ln(lin(x))
    assert y.shape == (0, 7, 4)
    y.sum().backward()
    for p in list(lin.parameters()) + list(ln.parameters()):
        assert p.grad.shape == p.shape and not p.grad.numpy().any()
    e = emb(np.zeros((0, 5), np.int64))
    assert e.shape == (0, 5, 3)
    e.sum().backward()
    assert not emb.W.grad.numpy().any()
    for fused in (True, False):
        lstm = nn.LSTM(3, 2, fused=fused).to(device)
        for lengths in (None, np.zeros(0, np.int64)):
            lstm.zero_grad()
            out, (h, c) = lstm(x, lengths=lengths)
            assert out.shape == (0, 7, 2) and h.shape == (0, 2) and c.shape == (0, 2)
            (out.sum() + h.sum()).backward()
            assert all(not p.grad.numpy().any() for p in lstm.parameters())
    bn = nn.BatchNorm2d(3).to(device).eval()
    assert bn(T((0, 3, 4, 4), device, np.float32)).shape == (0, 3, 4, 4)


def test_batch_norm_training_on_an_empty_batch_is_refused_as_in_pytorch(device):
    bn = nn.BatchNorm2d(3).to(device)
    with pytest.raises(ValueError, match=r"batch_norm: training needs more than one value per "
                                         r"channel, got an input of shape \(0, 3, 4, 4\)"):
        bn(T((0, 3, 4, 4), device, np.float32))


def test_empty_batch_matches_torch_for_conv_and_lstm(device):
    torch = pytest.importorskip("torch")
    x = np.zeros((0, 3, 8, 8))
    W = np.random.default_rng(3).standard_normal((4, 3, 3, 3))
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(W), None, 2, 1)
    assert F.conv2d(mm.tensor(x, device=device), mm.tensor(W, device=device), None, 2,
                    1).shape == tuple(ref.shape)
    t_out, _ = torch.nn.LSTM(3, 2, batch_first=True)(torch.zeros(0, 5, 3))
    out, _ = nn.LSTM(3, 2).to(device)(mm.tensor(np.zeros((0, 5, 3), np.float32), device=device))
    assert out.shape == tuple(t_out.shape)
