"""The fast CHWN convolution and max pooling (minimm.functional.fast.conv) against the
readable kernels and an independent plain-NumPy transcription, on both backends."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F
from minimm.functional.fast import conv as fast

# (x shape, W shape, stride, padding): stride 1/2/(1,2), padding 0/1/2 (wider than some
# kernels, so that whole column blocks are padding), 1×1 kernels with and without columns
CASES = [
    ((2, 3, 5, 6), (4, 3, 3, 3), 1, 0),
    ((1, 2, 6, 5), (3, 2, 2, 3), 2, 1),
    ((2, 1, 4, 7), (2, 1, 3, 2), (1, 2), (2, 1)),
    ((1, 3, 3, 3), (2, 3, 1, 1), 1, 2),
    ((2, 3, 4, 4), (5, 3, 1, 1), 1, 0),
    ((2, 3, 5, 4), (3, 3, 1, 1), 2, 0),
    ((1, 3, 5, 4), (9, 3, 3, 3), 2, 1),
]


@pytest.fixture(params=["im2col", "winograd"])
def engine(request, monkeypatch):
    """Both engines of the fast convolution: im2col blocks, and Winograd's F(2×2, 3×3) for
    every 3×3 stride-1 convolution (switched on down to one input channel)."""
    monkeypatch.setattr(fast, "WINOGRAD_MIN_CHANNELS", None if request.param == "im2col" else 1)
    return request.param


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def conv_numpy(x, W, b, stride, padding):
    """y[n,o,p,q] = Σ_{c,i,j} W[o,c,i,j] x_pad[n,c,s·p+i,s·q+j] + b[o]: one einsum per
    kernel offset over a zero-padded copy (no im2col, no layout trick)."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    N, C, H, Wd = x.shape
    C_out, _, kh, kw = W.shape
    xpad = np.zeros((N, C, H + 2 * ph, Wd + 2 * pw))
    xpad[:, :, ph:ph + H, pw:pw + Wd] = x
    OH, OW = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    y = np.zeros((N, C_out, OH, OW))
    for i in range(kh):
        for j in range(kw):
            win = xpad[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
            y += np.einsum("ncpq,oc->nopq", win, W[:, :, i, j])
    return y if b is None else y + b[None, :, None, None]


@pytest.mark.parametrize("xs, ws, stride, padding", CASES)
def test_conv2d_chwn_forward_matches_numpy_and_readable(device, xs, ws, stride, padding, engine):
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    for bias in (b, None):
        args = [mm.tensor(a, device=device) for a in (x, W)]
        B = None if bias is None else mm.tensor(bias, device=device)
        y = fast.conv2d(*args, B, stride, padding)
        expected = conv_numpy(x, W, bias, stride, padding)
        assert y.shape == expected.shape
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(y.numpy(), F.conv2d(*args, B, stride, padding).numpy(),
                                   rtol=1e-12, atol=1e-12)
        # the memory is CHWN: the next fast kernel reads it without a copy
        chwn = fast.to_chwn(y.data)
        assert chwn.shape == (ws[0],) + y.shape[2:] + (xs[0],)
        assert mm.get_array_module(y.data).shares_memory(chwn, y.data)


@pytest.mark.parametrize("xs, ws, stride, padding", CASES)
def test_conv2d_chwn_gradcheck_and_gradgradcheck(xs, ws, stride, padding, engine):
    rng = np.random.default_rng(1)
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    mm.gradcheck(lambda x, W, b: fast.conv2d(x, W, b, stride, padding), [x, W, b])
    mm.gradcheck(lambda x, W: fast.conv2d(x, W, None, stride, padding), [x, W])
    mm.gradgradcheck(lambda x, W, b: fast.conv2d(x, W, b, stride, padding), [x, W, b])


def test_conv2d_chwn_gradients_match_readable_kernel_float32(device, engine):
    """The article's three layers at a small batch, float32: the same gradients as the
    readable Conv2d (the first layer's images need none, as in the model)."""
    rng = np.random.default_rng(2)
    for (C, C_out, H, needs_x) in [(3, 32, 32, False), (32, 64, 15, True), (64, 128, 6, True)]:
        x = rng.standard_normal((4, C, H, H)).astype(np.float32)
        W = (rng.standard_normal((C_out, C, 3, 3)) * 0.1).astype(np.float32)
        b = rng.standard_normal(C_out).astype(np.float32)
        g = rng.standard_normal((4, C_out, H - 2, H - 2)).astype(np.float32)
        grads = []
        for conv in (fast.conv2d, F.conv2d):
            xs = [mm.tensor(a, device=device, requires_grad=r)
                  for a, r in ((x, needs_x), (W, True), (b, True))]
            y = conv(*xs)
            y.backward(mm.tensor(g, device=device))
            assert y.dtype == np.float32
            grads.append([t.grad for t in xs])
        for got, want in zip(*grads):
            if want is None:
                assert got is None
                continue
            assert got.dtype == np.float32 and got.shape == want.shape
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-3)


def test_conv2d_chwn_takes_any_input_strides(device):
    """A plain NCHW array, a transposed view and a CHWN tensor all give the same result."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 5, 5))
    W, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    xp = mm.get_array_module(mm.tensor(x, device=device).data)
    variants = [xp.asarray(x), xp.asarray(x.transpose(0, 1, 3, 2).copy()).transpose(0, 1, 3, 2),
                fast.nchw(xp.ascontiguousarray(xp.asarray(x).transpose(1, 2, 3, 0)))]
    want = conv_numpy(x, W, b, 1, 1)
    for v in variants:
        y = fast.conv2d(mm.Tensor(v), mm.tensor(W, device=device), mm.tensor(b, device=device),
                        1, 1)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-12)


def test_conv2d_chwn_errors_name_the_shapes():
    x, W = mm.tensor(np.zeros((2, 3, 5, 5))), mm.tensor(np.zeros((4, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: input has 3 channels but the weight "
                                         r"expects 2"):
        fast.conv2d(x, W)
    with pytest.raises(ValueError, match="larger than the padded input"):
        fast.conv2d(x, mm.tensor(np.zeros((4, 3, 7, 7))))


# -- max pooling -------------------------------------------------------------------------------
POOL_CASES = [((2, 3, 4, 6), 2), ((2, 2, 5, 7), 2), ((1, 2, 6, 6), 3), ((2, 2, 4, 6), (2, 3)),
              ((1, 1, 3, 3), 1)]


def pool_numpy(x, k):
    kh, kw = _pair(k)
    N, C, H, W = x.shape
    OH, OW = H // kh, W // kw
    return x[:, :, :OH * kh, :OW * kw].reshape(N, C, OH, kh, OW, kw).max(axis=(3, 5))


@pytest.mark.parametrize("xs, k", POOL_CASES)
def test_max_pool_chwn_matches_numpy_and_gradchecks(device, xs, k):
    x = np.random.default_rng(4).standard_normal(xs)
    y = fast.max_pool2d(mm.tensor(x, device=device), k)
    np.testing.assert_allclose(y.numpy(), pool_numpy(x, k), rtol=0, atol=0)
    if device == "cpu":
        mm.gradcheck(lambda a: fast.max_pool2d(a, k), [x])
        mm.gradgradcheck(lambda a: fast.max_pool2d(a, k), [x])


def test_max_pool_chwn_ties_go_to_the_first_maximum_as_the_readable_kernel(device):
    """After ReLU whole windows are 0: the gradient goes to the first element of each
    window (row-major), exactly as the readable tiled kernel and PyTorch."""
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal((3, 4, 6, 8)), 0).astype(np.float32)
    x[0, 0, :2, :2] = 0.0
    x[1, 2, 2:4, 4:6] = 1.5                    # a four-way tie at a positive value
    g = rng.standard_normal((3, 4, 3, 4)).astype(np.float32)
    grads = []
    for pool in (fast.max_pool2d, F.max_pool2d):
        t = mm.tensor(x, device=device, requires_grad=True)
        pool(t, 2).backward(mm.tensor(g, device=device))
        grads.append(t.grad.numpy())
    np.testing.assert_array_equal(grads[0], grads[1])
    assert grads[0][0, 0, 0, 0] == g[0, 0, 0, 0] and grads[0][1, 2, 2, 4] == g[1, 2, 1, 2]


def test_max_pool_chwn_other_strides_use_the_readable_path():
    x = np.random.default_rng(6).standard_normal((1, 2, 5, 5))
    y = fast.max_pool2d(mm.tensor(x), 3, stride=2)
    np.testing.assert_allclose(y.numpy(), F.max_pool2d_simple(mm.tensor(x), 3, 2).numpy())


def test_conv_relu_pool_stack_keeps_the_layout_and_the_readable_numbers(device, engine):
    """The article's image branch on the fast kernels equals the readable one (forward and
    every gradient), float32, and no activation after the first layer is copied to NCHW."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    shapes = [(32, 3), (64, 32), (128, 64)]
    Ws = [(rng.standard_normal((o, c, 3, 3)) * 0.2).astype(np.float32) for o, c in shapes]
    bs = [rng.standard_normal(o).astype(np.float32) * 0.1 for o, _ in shapes]
    results = []
    for conv, pool in ((fast.conv2d, fast.max_pool2d), (F.conv2d, F.max_pool2d)):
        params = [mm.tensor(a, device=device, requires_grad=True) for a in Ws + bs]
        h = mm.tensor(x, device=device)
        for W, b in zip(params[:3], params[3:]):
            h = pool(F.relu(conv(h, W, b)), 2)
            if conv is fast.conv2d:
                assert h.data.transpose(1, 2, 3, 0).flags.c_contiguous
        loss = (F.flatten(h, 1) ** 2).sum()
        loss.backward()
        results.append((loss.item(), [p.grad.numpy() for p in params]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for got, want in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# -- the fused Conv → ReLU → MaxPool block --------------------------------------------------------
FUSED_CASES = [((2, 3, 6, 7), (4, 3, 3, 3), 1, 0, 2), ((2, 2, 7, 7), (3, 2, 3, 3), 1, 1, 2),
               ((1, 2, 6, 6), (3, 2, 1, 1), 1, 0, 3), ((2, 2, 5, 5), (3, 2, 2, 2), 1, 0, 2),
               ((1, 2, 8, 7), (2, 2, 3, 3), 2, 1, (2, 1))]


@pytest.mark.parametrize("xs, ws, stride, padding, k", FUSED_CASES)
def test_fused_conv_relu_pool_matches_numpy_and_gradchecks(device, xs, ws, stride, padding, k, engine):
    rng = np.random.default_rng(8)
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    y = fast.conv2d_relu_max_pool2d(*(mm.tensor(a, device=device) for a in (x, W, b)),
                                    stride, padding, k)
    np.testing.assert_allclose(y.numpy(), pool_numpy(np.maximum(conv_numpy(
        x, W, b, stride, padding), 0), k), rtol=1e-12, atol=1e-12)
    if device == "cpu":
        f = lambda x, W, b: fast.conv2d_relu_max_pool2d(x, W, b, stride, padding, k)  # noqa: E731
        mm.gradcheck(f, [x, W, b])
        mm.gradgradcheck(f, [x, W, b])


def test_fused_block_gradient_equals_the_three_readable_layers_with_ties(device):
    """Windows whose values are all ≤ 0 (ReLU zeros) and exact ties: the fused block routes
    every gradient exactly as Conv2d, ReLU and MaxPool2d one after the other."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 6, 6)).astype(np.float32)
    W = np.zeros((4, 2, 1, 1), np.float32)
    W[:2] = rng.standard_normal((2, 2, 1, 1))
    b = np.array([0.0, 0.0, -1.0, 0.5], np.float32)   # channel 2 all negative, 3 all tied
    g = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    grads = []
    for run in (lambda x, W, b: fast.conv2d_relu_max_pool2d(x, W, b, 1, 0, 2),
                lambda x, W, b: F.max_pool2d(F.relu(F.conv2d(x, W, b)), 2)):
        ts = [mm.tensor(a, device=device, requires_grad=True) for a in (x, W, b)]
        run(*ts).backward(mm.tensor(g, device=device))
        grads.append([t.grad.numpy() for t in ts])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert grads[0][2][2] == 0 and grads[0][2][3] == pytest.approx(g[:, 3].sum(), rel=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_columns_in_blocks_give_the_same_numbers(monkeypatch, fused, engine):
    """Columns built, multiplied and added back one small rectangle of output pixels at a
    time (rebuilt in the backward) give the same output and gradients as one block."""
    rng = np.random.default_rng(10)
    x, W, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    conv = ((lambda x, W, b: fast.conv2d_relu_max_pool2d(x, W, b, 1, 1, 2)) if fused else
            (lambda x, W, b: fast.conv2d(x, W, b, 1, 1)))
    g = rng.standard_normal(conv(mm.tensor(x), mm.tensor(W), mm.tensor(b)).shape)

    def run():
        ts = [mm.tensor(a, requires_grad=True) for a in (x, W, b)]
        y = conv(*ts)
        y.backward(mm.tensor(g))
        return [y.numpy()] + [t.grad.numpy() for t in ts]
    whole = run()
    monkeypatch.setattr(fast, "BLOCK_BYTES", 1)                 # one window per block
    assert len(fast.blocks((6, 6), 100, 1, (2, 2))) == 9
    for got, want in zip(run(), whole):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    mm.gradcheck(conv, [x, W, b])
