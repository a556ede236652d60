"""minimm.nn.fast: the layers switched onto the fast kernels compute what the readable
layers compute; and the fused batch norm (minimm.functional.fast.normalization)."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F
from minimm import nn
from minimm.functional.fast import conv as fast_conv
from minimm.functional.fast import normalization as fast_bn
from minimm.models import MultiModalModel
from minimm.nn import fast


@pytest.fixture(autouse=True)
def every_batch_on_chwn(monkeypatch):
    """The comparisons below use small batches, which the switch would otherwise leave on the
    readable kernels (MIN_CHWN_BATCH); test_small_batches_stay_on_the_readable_kernels checks
    that dispatch itself."""
    monkeypatch.setattr(fast, "MIN_CHWN_BATCH", 0)


@pytest.fixture
def fast_kernels():
    fast.enable_fast_kernels()
    yield
    fast.disable_fast_kernels()


def _step_results(model, images, ids, labels):
    loss = F.cross_entropy(model(images, ids), labels)
    loss.backward()
    return loss.item(), {k: p.grad.numpy() for k, p in model.named_parameters()}


def test_the_article_model_on_fast_kernels_matches_the_readable_one(device):
    rng = np.random.default_rng(0)
    images = mm.tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32), device=device)
    ids = mm.tensor(rng.integers(0, 50, (4, 7)), device=device).data
    labels = mm.tensor(rng.integers(0, 10, 4), device=device).data
    results = []
    for enabled in (False, True):
        model = MultiModalModel(50, 10, rng=np.random.default_rng(1)).to(device)
        if enabled:
            fast.enable_fast_kernels()
        try:
            results.append(_step_results(model, images, ids, labels))
        finally:
            fast.disable_fast_kernels()
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
    for name, want in results[0][1].items():
        got = results[1][1][name]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * max(1, np.abs(want).max()),
                                   err_msg=name)


def test_sequential_fuses_conv_relu_pool_triples_only(fast_kernels):
    calls = []
    real = fast_conv.conv2d_relu_max_pool2d

    def spy(*a, **k):
        calls.append(a[1].shape)
        return real(*a, **k)
    rng = np.random.default_rng(2)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(4, 5, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(3, stride=1),
                        nn.Conv2d(5, 6, 1, rng=rng), nn.ReLU())
    x = mm.tensor(rng.standard_normal((2, 3, 12, 12)).astype(np.float32))
    fast_conv.conv2d_relu_max_pool2d = spy
    try:
        y = fast.sequential_forward(seq, x)
    finally:
        fast_conv.conv2d_relu_max_pool2d = real
    assert calls == [(4, 3, 3, 3)]               # overlapping windows and a lone ReLU: not fused
    fast.disable_fast_kernels()
    np.testing.assert_allclose(y.numpy(), seq(x).numpy(), rtol=1e-5, atol=1e-6)


def test_disable_restores_the_readable_kernels():
    before = (F.conv2d, F.lstm, F.batch_norm, nn.MaxPool2d.pool, nn.Sequential.forward,
              nn.MultiHeadAttention.forward)
    fast.enable_fast_kernels()
    assert F.conv2d is fast.conv2d and nn.Sequential.forward is fast.sequential_forward
    assert F.batch_norm is fast.batch_norm and nn.MaxPool2d.pool is fast.max_pool2d
    fast.disable_fast_kernels()
    after = (F.conv2d, F.lstm, F.batch_norm, nn.MaxPool2d.pool, nn.Sequential.forward,
             nn.MultiHeadAttention.forward)
    assert after == before


# -- batch norm -----------------------------------------------------------------------------------
def bn_numpy(x, w, b, eps=1e-5):
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[None, :, None, None] + b[None, :, None, None]


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 1, 3, 3), (7, 2, 1, 1)])
def test_fast_batch_norm_matches_numpy_readable_and_running_stats(device, shape):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape) * 3 + 2
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    C = shape[1]
    stats = [[np.zeros(C), np.ones(C)] for _ in range(2)]
    if device == "cuda":
        stats = [[mm.tensor(a, device=device).data for a in s] for s in stats]
    T = lambda a: mm.tensor(a, device=device)  # noqa: E731
    y = fast_bn.batch_norm(T(x), *stats[0], T(w), T(b), momentum=0.3)
    y_readable = F.batch_norm(T(x), *stats[1], T(w), T(b), momentum=0.3)
    np.testing.assert_allclose(y.numpy(), bn_numpy(x, w, b), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y.numpy(), y_readable.numpy(), rtol=1e-10, atol=1e-10)
    for got, want in zip(stats[0], stats[1]):
        np.testing.assert_allclose(mm.to_numpy(got), mm.to_numpy(want), rtol=1e-12)
    # evaluation mode: the running estimates
    ye = fast_bn.batch_norm(T(x), *stats[0], T(w), T(b), training=False)
    np.testing.assert_allclose(ye.numpy(), F.batch_norm(T(x), *stats[0], T(w), T(b),
                                                        training=False).numpy(), rtol=1e-10)


@pytest.mark.parametrize("layout", ["nchw", "chwn"])
def test_fast_batch_norm_gradcheck_and_gradgradcheck(layout):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 4, 3))
    if layout == "chwn":
        x = fast_conv.nchw(np.ascontiguousarray(x.transpose(1, 2, 3, 0)))
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    f = lambda x, w, b: fast_bn.batch_norm(x, None, None, w, b)  # noqa: E731
    mm.gradcheck(f, [mm.Tensor(x), w, b])
    mm.gradgradcheck(f, [mm.Tensor(x), w, b])
    rm, rv = np.zeros(2), np.ones(2) * 2
    mm.gradcheck(lambda x, w, b: fast_bn.batch_norm(x, rm, rv, w, b, training=False),
                 [mm.Tensor(x), w, b])


def test_fast_batch_norm_keeps_the_chwn_layout_and_checks_shapes():
    x = fast_conv.nchw(np.random.default_rng(5).standard_normal((2, 3, 3, 4)).astype(np.float32))
    y = fast_bn.batch_norm(mm.Tensor(x), None, None)
    assert y.dtype == np.float32 and y.data.transpose(1, 2, 3, 0).flags.c_contiguous
    with pytest.raises(ValueError, match=r"batch_norm: weight has shape \(3,\), expected \(2,\)"):
        fast_bn.batch_norm(mm.Tensor(x), None, None, mm.tensor(np.ones(3)))
    with pytest.raises(ValueError, match="more than one value per channel"):
        fast_bn.batch_norm(mm.tensor(np.zeros((1, 2, 1, 1))), None, None)


# -- embedding ------------------------------------------------------------------------------------
def test_fast_embedding_gradient_sums_repeated_ids_as_add_at(device):
    from minimm.functional.fast import lookup
    rng = np.random.default_rng(6)
    ids = rng.integers(0, 7, (5, 6))
    ids[0, :3] = 4                                     # repeats
    W = rng.standard_normal((9, 3)).astype(np.float32)
    g = rng.standard_normal((5, 6, 3)).astype(np.float32)
    t = mm.tensor(W, device=device, requires_grad=True)
    ids_dev = mm.tensor(ids, device=device).data
    y = lookup.embedding(ids_dev, t)
    np.testing.assert_array_equal(y.numpy(), W[ids])
    y.backward(mm.tensor(g, device=device))
    want = np.zeros_like(W)
    np.add.at(want, ids.reshape(-1), g.reshape(-1, 3))
    np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-6, atol=1e-6)
    assert t.grad.dtype == np.float32 and not want[[7, 8]].any()
    if device == "cpu":
        w64 = rng.standard_normal((9, 3))
        mm.gradcheck(lambda w: lookup.embedding(ids, w), [w64])
        mm.gradgradcheck(lambda w: lookup.embedding(ids, w), [w64])
        with pytest.raises(ValueError, match="id 9 is out of range"):
            lookup.embedding(np.array([9]), w64)


def test_small_batches_stay_on_the_readable_kernels(monkeypatch, fast_kernels):
    """Below MIN_CHWN_BATCH images the switched layers record the readable Functions, from it
    on the CHWN ones; both give the readable numbers, in the forward and the gradients."""
    from minimm.functional import conv_fast
    monkeypatch.setattr(fast, "MIN_CHWN_BATCH", 4)
    rng = np.random.default_rng(5)
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4)
    seq = nn.Sequential(nn.Conv2d(4, 4, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2))
    pool = nn.MaxPool2d(2)
    for N, chwn in ((3, False), (4, True)):
        x = mm.tensor(rng.standard_normal((N, 3, 8, 8)).astype(np.float32),
                      requires_grad=True)
        h = conv(x)
        assert isinstance(h.creator, fast_conv.Conv2dCHWN if chwn else conv_fast.Conv2d), N
        h2 = bn(h)
        assert isinstance(h2.creator, fast_bn.BatchNorm2dFast) == chwn, N
        p = pool(h2)
        assert isinstance(p.creator, fast_conv.MaxPool2dCHWN if chwn
                          else conv_fast.MaxPool2dTiled), N
        y = seq(h2)
        assert isinstance(y.creator, fast_conv.Conv2dReLUMaxPool) == chwn, N
        loss = (y * y).sum() + (p * p).sum()
        loss.backward()
        got = [x.grad.numpy().copy(), conv.W.grad.numpy().copy(), y.numpy(), p.numpy()]
        x.grad = None
        conv.zero_grad()
        fast.disable_fast_kernels()
        try:
            y = seq(bn(conv(x)))
            p = pool(bn(conv(x)))
            ((y * y).sum() + (p * p).sum()).backward()
        finally:
            fast.enable_fast_kernels()
        want = [x.grad.numpy(), conv.W.grad.numpy(), y.numpy(), p.numpy()]
        conv.zero_grad()
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1, np.abs(w).max()))
