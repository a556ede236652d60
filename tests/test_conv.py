"""Convolution and pooling: im2col/col2im, conv2d, max/avg pooling and their Modules.

Oracles are written here as plain loops over output pixels (tiny inputs), independent of
the library's im2col.
"""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F
from minimm import nn
from minimm.functional import conv as conv_impl
from minimm.functional import conv_fast


def T(a, device, requires_grad=False):
    return mm.tensor(a, device=device, requires_grad=requires_grad)


def conv_loop(x, W, b, stride, padding):
    """y[n, o, p, q] = Σ_{c,i,j} W[o,c,i,j] · x_pad[n, c, s·p + i, s·q + j] + b[o], by loops."""
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, Wd = x.shape
    C_out, _, kh, kw = W.shape
    xp_ = np.zeros((N, C, H + 2 * ph, Wd + 2 * pw))
    xp_[:, :, ph:ph + H, pw:pw + Wd] = x
    OH = (H + 2 * ph - kh) // sh + 1
    OW = (Wd + 2 * pw - kw) // sw + 1
    y = np.zeros((N, C_out, OH, OW))
    for n in range(N):
        for o in range(C_out):
            for p in range(OH):
                for q in range(OW):
                    window = xp_[n, :, p * sh:p * sh + kh, q * sw:q * sw + kw]
                    y[n, o, p, q] = (window * W[o]).sum() + (b[o] if b is not None else 0.0)
    return y


def pool_loop(x, k, s, reduce):
    N, C, H, Wd = x.shape
    OH, OW = (H - k[0]) // s[0] + 1, (Wd - k[1]) // s[1] + 1
    y = np.zeros((N, C, OH, OW))
    for p in range(OH):
        for q in range(OW):
            y[:, :, p, q] = reduce(x[:, :, p * s[0]:p * s[0] + k[0], q * s[1]:q * s[1] + k[1]],
                                   axis=(2, 3))
    return y


# (x shape, W shape, stride, padding): stride 1/2, padding 0/1/2, non-square images and
# kernels, batch 1, C_in ≠ C_out. Between them they take all three column layouts that
# Conv2d chooses from (per image; whole batch with short rows; whole batch, long rows).
CONV_CASES = [
    ((2, 3, 5, 6), (4, 3, 3, 3), 1, 0),
    ((1, 2, 6, 5), (3, 2, 2, 3), 2, 1),
    ((2, 1, 4, 7), (2, 1, 3, 2), (1, 2), (2, 1)),
    ((1, 3, 3, 3), (2, 3, 1, 1), 1, 2),
    ((2, 2, 4, 3), (7, 2, 3, 2), 1, 0),
    ((1, 3, 5, 4), (9, 3, 3, 3), 2, 1),
    ((2, 4, 3, 10), (3, 4, 3, 3), 1, 0),
]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_forward_matches_nested_loops(device, xs, ws, stride, padding):
    rng = np.random.default_rng(1)
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    y = F.conv2d(T(x, device), T(W, device), T(b, device), stride, padding)
    expected = conv_loop(x, W, b, _pair(stride), _pair(padding))
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    y0 = F.conv2d(T(x, device), T(W, device), None, stride, padding)
    np.testing.assert_allclose(y0.numpy(), conv_loop(x, W, None, _pair(stride), _pair(padding)),
                               rtol=1e-12, atol=1e-12)


def test_both_column_layouts_are_exercised(device):
    picked = set()
    for xs, ws, stride, padding in CONV_CASES:
        x = T(np.ones(xs), device, requires_grad=True)
        y = F.conv2d(x, T(np.ones(ws), device), None, stride, padding)
        picked.add(y.creator.layout)
    assert picked == {"nkp", "knp", "kpn"}


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_matches_conv2d_simple_values_and_gradients(device, xs, ws, stride, padding):
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])]
    results = []
    for conv in (F.conv2d, F.conv2d_simple):
        x, W, b = (T(a, device, requires_grad=True) for a in arrays)
        y = conv(x, W, b, stride, padding)
        gy = np.random.default_rng(3).standard_normal(y.shape)
        y.backward(T(gy, device))
        results.append([t.numpy() for t in (y, x.grad, W.grad, b.grad)])
    for fast, simple in zip(*results):
        np.testing.assert_allclose(fast, simple, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_gradcheck(device, xs, ws, stride, padding):
    rng = np.random.default_rng(4)
    inputs = [T(rng.standard_normal(s), device) for s in (xs, ws, (ws[0],))]
    assert mm.gradcheck(lambda x, W, b: F.conv2d(x, W, b, stride, padding), inputs)


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[4], CONV_CASES[6]])
def test_conv2d_gradgradcheck(device, case):
    xs, ws, stride, padding = case
    rng = np.random.default_rng(5)
    inputs = [T(rng.standard_normal(s), device) for s in (xs, ws, (ws[0],))]
    assert mm.gradgradcheck(lambda x, W, b: F.conv2d(x, W, b, stride, padding), inputs,
                            mode="random")


def test_conv2d_gradcheck_random_mode_bigger(device):
    rng = np.random.default_rng(6)
    x, W = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((5, 4, 3, 3))
    assert mm.gradcheck(lambda x, W: F.conv2d(x, W, None, 2, 1), [T(x, device), T(W, device)],
                        mode="random")


@pytest.mark.parametrize("xs, kernel, stride, padding", [
    ((1, 2, 4, 5), (2, 3), 1, 1), ((2, 1, 5, 5), 3, 2, 0), ((1, 2, 3, 4), (3, 2), (1, 2), 2)])
def test_im2col_col2im_gradcheck_and_gradgradcheck(device, xs, kernel, stride, padding):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(xs)
    assert mm.gradcheck(lambda x: F.im2col(x, kernel, stride, padding), [T(x, device)])
    assert mm.gradgradcheck(lambda x: F.im2col(x, kernel, stride, padding) * 1.0,
                            [T(x, device)], mode="random")
    col = rng.standard_normal(F.im2col(T(x, device), kernel, stride, padding).shape)
    assert mm.gradcheck(lambda c: F.col2im(c, xs, kernel, stride, padding), [T(col, device)],
                        mode="random")


@pytest.mark.parametrize("layout", ["nkp", "knp", "kpn"])
@pytest.mark.parametrize("xs, kernel, stride, padding", [
    ((2, 2, 4, 5), (2, 3), 1, 1), ((1, 1, 5, 5), (3, 3), (2, 1), (0, 2))])
def test_fast_im2col_col2im_layouts_gradcheck(device, layout, xs, kernel, stride, padding):
    """The fast kernel's im2col/col2im pair in each layout: the readable columns reordered,
    and each the other's (differentiable) backward."""
    rng = np.random.default_rng(19)
    x = T(rng.standard_normal(xs), device)
    readable = F.im2col(x, kernel, stride, padding).numpy()                  # (N, K, P)
    stride, padding = _pair(stride), _pair(padding)       # the fast kernels take pairs
    im2col = conv_fast.Im2colLayout(kernel, stride, padding, layout)
    order = {"nkp": (0, 1, 2), "knp": (1, 0, 2), "kpn": (1, 2, 0)}[layout]
    want = readable.transpose(order)
    want = want if layout == "nkp" else want.reshape(readable.shape[1], -1)
    np.testing.assert_array_equal(im2col(x).numpy(), want)
    assert mm.gradcheck(lambda x: conv_fast.Im2colLayout(kernel, stride, padding, layout)(x),
                        [x])
    assert mm.gradgradcheck(
        lambda x: conv_fast.Im2colLayout(kernel, stride, padding, layout)(x) * 1.0, [x],
        mode="random")
    col = T(rng.standard_normal(want.shape), device)
    col2im = conv_fast.Col2imLayout(xs, kernel, stride, padding, layout)
    assert col2im(col).shape == xs
    assert mm.gradcheck(lambda c: conv_fast.Col2imLayout(xs, kernel, stride, padding,
                                                         layout)(c), [col], mode="random")


@pytest.mark.parametrize("layout", ["readable", "nkp", "knp", "kpn"])
def test_col2im_is_the_adjoint_of_im2col(device, layout):
    """⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for every x and c: the readable pair, and the fast
    pair in every column layout."""
    rng = np.random.default_rng(8)
    xs, kernel, stride, padding = (2, 3, 6, 5), (3, 2), (2, 1), (1, 2)
    x = T(rng.standard_normal(xs), device)
    if layout == "readable":
        im2col = conv_impl.Im2col(kernel, stride, padding)
        col2im = conv_impl.Col2im(xs, kernel, stride, padding)
    else:
        im2col = conv_fast.Im2colLayout(kernel, stride, padding, layout)
        col2im = conv_fast.Col2imLayout(xs, kernel, stride, padding, layout)
    col = im2col(x)
    c = T(rng.standard_normal(col.shape), device)
    back = col2im(c)
    lhs = float((col.numpy() * c.numpy()).sum())
    rhs = float((x.numpy() * back.numpy()).sum())
    assert back.shape == xs
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_im2col_values(device):
    x = np.arange(2 * 1 * 3 * 4, dtype=np.float64).reshape(2, 1, 3, 4)
    col = F.im2col(T(x, device), (2, 2), 1, 0).numpy()          # (N, 1·2·2, 2·3)
    assert col.shape == (2, 4, 6)
    # column 0 of image 0 is the window x[0, 0, 0:2, 0:2] in row-major order
    np.testing.assert_array_equal(col[0, :, 0], [0, 1, 4, 5])
    np.testing.assert_array_equal(col[1, :, 5], x[1, 0, 1:3, 2:4].ravel())


def test_first_layer_skips_the_input_gradient(device, monkeypatch):
    calls = []
    real = conv_fast.col2im_array
    monkeypatch.setattr(conv_fast, "col2im_array",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(9)
    x = T(rng.standard_normal((2, 3, 6, 6)).astype(np.float32), device)
    W = T(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), device, requires_grad=True)
    b = T(np.zeros(4, np.float32), device, requires_grad=True)
    F.conv2d(x, W, b).sum().backward()
    assert x.grad is None and W.grad is not None and b.grad is not None
    assert calls == []                                  # no col2im: dX never computed
    x.requires_grad = True
    F.conv2d(x, W, b).sum().backward()
    assert x.grad is not None and len(calls) == 1


def test_weight_gradient_skipped_when_not_needed(device):
    rng = np.random.default_rng(10)
    x = T(rng.standard_normal((2, 3, 6, 6)), device, requires_grad=True)
    W = T(rng.standard_normal((4, 3, 3, 3)), device)
    y = F.conv2d(x, W, None)
    assert y.creator.col is None                        # columns not even kept
    y.sum().backward()
    assert W.grad is None and x.grad.shape == x.shape


@pytest.mark.parametrize("xs, ws", [((2, 3, 8, 8), (4, 3, 3, 3)), ((2, 3, 4, 4), (16, 3, 3, 3))])
def test_float32_stays_float32(device, xs, ws):
    rng = np.random.default_rng(11)
    x = T(rng.standard_normal(xs).astype(np.float32), device, requires_grad=True)
    W = T(rng.standard_normal(ws).astype(np.float32), device, requires_grad=True)
    b = T(np.zeros(ws[0], np.float32), device, requires_grad=True)
    h = F.conv2d(x, W, b, 1, 1)
    assert h.dtype == np.float32
    for pooled in (F.max_pool2d(h, 2), F.max_pool2d(h, 3, 1), F.avg_pool2d(h, 2)):
        assert pooled.dtype == np.float32
        pooled.sum().backward()
    for t in (x, W, b):
        assert t.grad.dtype == np.float32


# -- errors ----------------------------------------------------------------------------------
def test_conv2d_errors(device):
    x = T(np.zeros((1, 3, 5, 5)), device)
    with pytest.raises(ValueError, match=r"conv2d: input must be 4-D .*\(3, 5, 5\)"):
        F.conv2d(T(np.zeros((3, 5, 5)), device), T(np.zeros((2, 3, 3, 3)), device))
    with pytest.raises(ValueError, match=r"conv2d: input has 3 channels but the weight expects 4 "
                                         r"\(input shape \(1, 3, 5, 5\), weight shape "
                                         r"\(2, 4, 3, 3\)\)"):
        F.conv2d(x, T(np.zeros((2, 4, 3, 3)), device))
    with pytest.raises(ValueError, match=r"conv2d: kernel 8x3 is larger than the padded input "
                                         r"7x7 \(input 5x5, padding 1x1\)"):
        F.conv2d(x, T(np.zeros((2, 3, 8, 3)), device), padding=1)
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(2,\)"):
        F.conv2d(x, T(np.zeros((2, 3, 3, 3)), device), T(np.zeros(3), device))
    with pytest.raises(ValueError, match=r"conv2d: weight must be 4-D"):
        F.conv2d(x, T(np.zeros((2, 3, 3)), device))
    with pytest.raises(ValueError, match=r"conv2d: stride must be ≥ 1, got 0"):
        F.conv2d(x, T(np.zeros((2, 3, 3, 3)), device), stride=0)
    with pytest.raises(TypeError, match=r"conv2d: padding must be an int or a pair of ints"):
        F.conv2d(x, T(np.zeros((2, 3, 3, 3)), device), padding=1.5)


def test_pool_and_col2im_errors(device):
    x = T(np.zeros((1, 2, 3, 3)), device)
    with pytest.raises(ValueError, match=r"max_pool2d: kernel 4x4 is larger than the padded "
                                         r"input 3x3"):
        F.max_pool2d(x, 4)
    with pytest.raises(ValueError, match=r"avg_pool2d: input must be 4-D"):
        F.avg_pool2d(T(np.zeros((2, 3, 3)), device), 2)
    with pytest.raises(ValueError, match=r"col2im: columns of shape \(1, 4, 5\) do not match "
                                         r"input shape \(1, 1, 3, 3\)"):
        F.col2im(T(np.zeros((1, 4, 5)), device), (1, 1, 3, 3), 2)


# -- pooling ---------------------------------------------------------------------------------
def _distinct(rng, shape):
    """Tie-free values: a shuffled arange, spaced far wider than gradcheck's eps."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1


POOL_CASES = [((2, 3, 4, 6), 2, None), ((1, 2, 5, 7), 2, None), ((2, 1, 6, 5), (3, 2), None),
              ((1, 2, 5, 6), 3, 1), ((2, 2, 7, 6), (3, 2), (2, 1))]


@pytest.mark.parametrize("xs, k, s", POOL_CASES)
def test_pooling_forward_matches_loops(device, xs, k, s):
    x = np.random.default_rng(12).standard_normal(xs)
    kk = _pair(k)
    ss = kk if s is None else _pair(s)
    np.testing.assert_array_equal(F.max_pool2d(T(x, device), k, s).numpy(),
                                  pool_loop(x, kk, ss, np.max))
    np.testing.assert_allclose(F.avg_pool2d(T(x, device), k, s).numpy(),
                               pool_loop(x, kk, ss, np.mean), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs, k, s", POOL_CASES)
def test_pooling_gradcheck(device, xs, k, s):
    x = T(_distinct(np.random.default_rng(13), xs), device)
    assert mm.gradcheck(lambda x: F.max_pool2d(x, k, s), [x])
    assert mm.gradgradcheck(lambda x: F.max_pool2d(x, k, s), [x], mode="random")
    assert mm.gradcheck(lambda x: F.avg_pool2d(x, k, s), [x])
    assert mm.gradgradcheck(lambda x: F.avg_pool2d(x, k, s) * 1.0, [x], mode="random")


@pytest.mark.parametrize("k, s", [(2, None), (3, 1), ((2, 3), None)])
def test_max_pool_ties_send_the_gradient_to_one_element_per_window(device, k, s):
    """An all-zero window (common after ReLU) passes on exactly its upstream gradient, to
    its first element, as PyTorch does."""
    x = np.zeros((2, 3, 6, 6))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 1.0   # a tie between two maxima that are not first
    xt = T(x, device, requires_grad=True)
    y = F.max_pool2d(xt, k, s)
    gy = np.random.default_rng(14).standard_normal(y.shape)
    y.backward(T(gy, device))
    g = xt.grad.numpy()
    kk = _pair(k)
    ss = kk if s is None else _pair(s)
    assert (g != 0).sum() <= y.size                     # one element per window at most
    assert g.sum() == pytest.approx(gy.sum())           # each window passes on its gy once
    if ss == kk:  # tiles: the gradient of each tile sums to its upstream gradient
        np.testing.assert_allclose(pool_loop(g, kk, ss, np.sum), gy, rtol=1e-12)
        assert g[0, 0, 0, 1] == gy[0, 0, 0, 0]          # the first maximum, row-major
        assert g[0, 0, 1, 0] == 0.0


@pytest.mark.parametrize("xs, k", [((3, 2, 6, 8), 2), ((2, 3, 7, 5), 2), ((2, 2, 6, 7), (3, 2)),
                                   ((1, 2, 3, 4), 1), ((2, 1, 5, 5), (1, 3))])
def test_tiled_max_pool_matches_composed_oracle(device, rng, xs, k):
    """The tiled fast path (strided-view maxima, first-maximum masks) against
    max_pool2d_simple (im2col + argmax) on inputs full of ties (small integers, ReLU'd
    zeros): forward, gradient, and the gradient's own backward (∂(gx·v)/∂gy), in float32
    and float64."""
    for dtype in (np.float32, np.float64):
        x = np.maximum(rng.integers(-2, 3, xs), 0).astype(dtype)
        gy = rng.standard_normal(F.max_pool2d(T(x, device), k).shape).astype(dtype)
        v = rng.standard_normal(xs).astype(dtype)
        results = []
        for pool in (F.max_pool2d, conv_impl.max_pool2d_simple):
            xt, gyt = T(x, device, requires_grad=True), T(gy, device, requires_grad=True)
            y = pool(xt, k)
            assert isinstance(y.creator, conv_fast.MaxPool2dTiled) == (pool is F.max_pool2d)
            (gx,) = mm.grad([y], [xt], [gyt], create_graph=True)
            (ggy,) = mm.grad([(gx * T(v, device)).sum()], [gyt])
            assert y.dtype == gx.dtype == ggy.dtype == dtype
            results.append((y.numpy(), gx.numpy(), ggy.numpy()))
        for fast, ref in zip(*results):
            np.testing.assert_array_equal(fast, ref)


def test_max_pool_ties_match_torch(device):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(15).integers(0, 3, (2, 2, 6, 7)).astype(np.float64)
    for k, s in [(2, None), (3, 1), (3, 2)]:
        xt = T(x, device, requires_grad=True)
        F.max_pool2d(xt, k, s).sum().backward()
        xr = torch.tensor(x, requires_grad=True)
        torch.nn.functional.max_pool2d(xr, k, s).sum().backward()
        np.testing.assert_array_equal(xt.grad.numpy(), xr.grad.numpy())


# -- against PyTorch, float64 ------------------------------------------------------------------
@pytest.mark.parametrize("xs, ws, stride, padding", CONV_CASES)
def test_conv2d_matches_torch(device, xs, ws, stride, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(16)
    arrays = [rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])]
    x, W, b = (T(a, device, requires_grad=True) for a in arrays)
    y = F.conv2d(x, W, b, stride, padding)
    gy = rng.standard_normal(y.shape)
    y.backward(T(gy, device))
    xr, Wr, br = (torch.tensor(a, requires_grad=True) for a in arrays)
    yr = torch.nn.functional.conv2d(xr, Wr, br, _pair(stride), _pair(padding))
    yr.backward(torch.tensor(gy))
    for ours, theirs in [(y, yr), (x.grad, xr.grad), (W.grad, Wr.grad), (b.grad, br.grad)]:
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-10,
                                   atol=1e-10)


@pytest.mark.parametrize("xs, k, s", POOL_CASES)
def test_pooling_matches_torch(device, xs, k, s):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(17).standard_normal(xs)
    for ours, theirs in [(F.max_pool2d, torch.nn.functional.max_pool2d),
                         (F.avg_pool2d, torch.nn.functional.avg_pool2d)]:
        xt = T(x, device, requires_grad=True)
        y = ours(xt, k, s)
        y.backward(T(np.arange(y.size, dtype=np.float64).reshape(y.shape), device))
        xr = torch.tensor(x, requires_grad=True)
        yr = theirs(xr, k, s)
        yr.backward(torch.arange(yr.numel(), dtype=torch.float64).reshape(yr.shape))
        np.testing.assert_allclose(y.numpy(), yr.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=1e-12)


# -- modules -----------------------------------------------------------------------------------
def test_conv2d_module(device):
    m = nn.Conv2d(3, 8, (3, 2), stride=2, padding=1, rng=np.random.default_rng(0)).to(device)
    assert m.W.shape == (8, 3, 3, 2) and m.b.shape == (8,)
    assert m.W.dtype == np.float32 and m.b.dtype == np.float32
    bound = 1 / math.sqrt(3 * 3 * 2)
    assert np.abs(m.W.numpy()).max() <= bound and np.abs(m.b.numpy()).max() <= bound
    assert np.abs(m.W.numpy()).max() > 0.8 * bound      # uniform over the whole range
    names = [n for n, _ in m.named_parameters()]
    assert names == ["W", "b"]
    x = T(np.random.default_rng(1).standard_normal((2, 3, 7, 6)).astype(np.float32), device)
    y = m(x)
    np.testing.assert_allclose(y.numpy(), F.conv2d(x, m.W, m.b, 2, 1).numpy(), rtol=1e-6)
    assert y.shape == (2, 8, 4, 4) and y.dtype == np.float32
    same = nn.Conv2d(3, 8, (3, 2), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(same.W.numpy(), m.W.numpy())
    assert nn.Conv2d(3, 8, 3, bias=False).b is None
    assert [n for n, _ in nn.Conv2d(3, 8, 3, bias=False).named_parameters()] == ["W"]


def test_article_image_branch_shapes(device):
    """Conv32-Pool-Conv64-Pool-Conv128-Pool, 'valid' padding: 32→30→15→13→6→4→2, 512 features."""
    rng = np.random.default_rng(2)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, rng=rng), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, rng=rng), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, rng=rng), nn.MaxPool2d(2), nn.Flatten()).to(device)
    x = T(rng.standard_normal((2, 3, 32, 32)).astype(np.float32), device)
    y = net(x)
    assert y.shape == (2, 512) and y.dtype == np.float32
    y.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in net.parameters())


def test_pool_and_flatten_modules(device):
    x = T(np.random.default_rng(3).standard_normal((2, 3, 5, 4)), device)
    np.testing.assert_array_equal(nn.MaxPool2d(2)(x).numpy(), F.max_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(nn.AvgPool2d(3, 1)(x).numpy(), F.avg_pool2d(x, 3, 1).numpy())
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(2)(x).shape == (2, 3, 20)
    assert list(nn.MaxPool2d(2).parameters()) == []


@pytest.mark.parametrize("layout", ["knp", "kpn"])
def test_batch_layouts_hold_the_same_columns(device, layout):
    rng = np.random.default_rng(18)
    x = T(rng.standard_normal((3, 2, 5, 6)), device)
    per_image = F.im2col(x, (2, 3), (1, 2), 1).numpy()             # (N, K, P)
    batch = conv_fast.Im2colLayout((2, 3), (1, 2), (1, 1), layout)(x).numpy()
    N, K, P = per_image.shape
    order = (1, 0, 2) if layout == "knp" else (1, 2, 0)
    np.testing.assert_array_equal(batch, per_image.transpose(order).reshape(K, -1))
