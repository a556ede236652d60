"""Compression (§9.5): int8 / float16 quantisation with its error bound, the straight-through
estimator, quantisation-aware training, magnitude pruning and the compressed file format."""
import os

import numpy as np
import pytest

import minimm as mm
from minimm import compress, nn, optim
from minimm import functional as F
from minimm.models import MultiModalModel

EPS32 = float(np.finfo(np.float32).eps)


def _small_model(rng):
    return nn.Sequential(nn.Conv2d(2, 4, 3, rng=rng), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 5, rng=rng))


def _oracle_int8(w, axis):
    """Per-channel symmetric int8 written out channel by channel (independent of the code)."""
    w = np.moveaxis(w.astype(np.float64), axis, 0)
    q, s = np.zeros(w.shape, np.int64), np.zeros(w.shape[0])
    for c in range(w.shape[0]):
        s[c] = np.abs(w[c]).max() / 127.0
        q[c] = np.rint(w[c] / s[c]) if s[c] > 0 else 0
    return np.moveaxis(q, 0, axis), s


# -- int8 and float16 -------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [((6, 5), 1), ((5, 3, 3, 3), 0), ((1, 7), 1), ((4, 9), 0)])
def test_int8_round_trip_error_is_at_most_half_a_step_per_channel(xp, rng, shape, axis):
    w_host = (rng.standard_normal(shape) * rng.uniform(0.01, 3.0, shape[axis]).reshape(
        [-1 if i == axis % len(shape) else 1 for i in range(len(shape))])).astype(np.float32)
    q, s = compress.quantize_per_channel(xp.asarray(w_host), axis)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (shape[axis],)
    q, s = mm.to_numpy(q), mm.to_numpy(s)
    q_ref, s_ref = _oracle_int8(w_host, axis)
    np.testing.assert_allclose(s, s_ref, rtol=1e-6)
    assert np.array_equal(q.astype(np.int64), q_ref)
    w_hat = mm.to_numpy(compress.dequantize(xp.asarray(q), xp.asarray(s), axis))
    err = np.moveaxis(np.abs(w_host.astype(np.float64) - w_hat), axis, 0).reshape(shape[axis], -1)
    mag = np.moveaxis(np.abs(w_host), axis, 0).reshape(shape[axis], -1)
    # the bound s_c/2, plus float32's rounding of the product s_c·q (≤ eps·|w|)
    assert np.all(err <= s[:, None] / 2 + EPS32 * mag)
    assert np.all(np.abs(q).reshape(-1) <= 127)
    assert np.all(np.moveaxis(np.abs(q), axis, 0).reshape(shape[axis], -1).max(axis=1) == 127)


def test_int8_zero_channel_is_exact_and_errors_name_the_operation(rng):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    w[:, 2] = 0.0
    q, s = compress.quantize_per_channel(w, axis=1)
    assert s[2] == 0.0 and np.all(q[:, 2] == 0)
    assert np.all(compress.dequantize(q, s, 1)[:, 2] == 0.0)
    with pytest.raises(ValueError, match="quantize_per_channel: axis 2"):
        compress.quantize_per_channel(w, axis=2)
    with pytest.raises(ValueError, match="bits"):
        compress.quantize_per_channel(w, axis=0, bits=9)


def test_float16_relative_error_and_overflow(xp, rng):
    w = xp.asarray(rng.standard_normal((50, 20)).astype(np.float32))
    h = compress.to_float16(w)
    assert h.dtype == np.float16
    w64, h64 = mm.to_numpy(w).astype(np.float64), mm.to_numpy(h).astype(np.float64)
    normal = np.abs(w64) >= np.finfo(np.float16).tiny
    assert np.all(np.abs(w64 - h64)[normal] <= 2.0 ** -11 * np.abs(w64)[normal])
    with pytest.raises(ValueError, match="to_float16: max"):
        compress.to_float16(xp.asarray(np.array([1.0, 7e4], dtype=np.float32)))


def test_int8_linear_equals_the_dequantised_linear(rng):
    x = mm.tensor(rng.standard_normal((4, 6)).astype(np.float32))
    W = rng.standard_normal((6, 3)).astype(np.float32)
    b = mm.tensor(rng.standard_normal(3).astype(np.float32))
    q, s = compress.quantize_per_channel(W, axis=1)
    y = compress.int8_linear(x, q, s, b)
    y_ref = F.linear(x, mm.tensor(compress.dequantize(q, s, 1)), b)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-6)


def test_channel_axes_of_the_article_model():
    model = MultiModalModel(20, rng=np.random.default_rng(0))
    axes = {name: axis for name, axis, _ in compress.compressible(model)}
    assert axes == {"image.0.W": 0, "image.3.W": 0, "image.6.W": 0, "text.embed.W": 0,
                    "text.lstm.W": 1, "text.lstm.U": 1, "head.W": 1}


# -- the straight-through estimator -----------------------------------------------------------
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5), (1, 1)])
def test_round_ste_forward_rounds_and_backward_is_the_identity(xp, rng, shape):
    x_host = rng.uniform(-4, 4, shape)
    x = mm.tensor(xp.asarray(x_host), requires_grad=True)
    y = compress.round_ste(x)
    # forward: an independent transcription of round-half-to-even (away from exact ties)
    ref = np.floor(x_host + 0.5)
    assert y.shape == shape and y.dtype == np.float64
    np.testing.assert_array_equal(mm.to_numpy(y.data), ref)
    # backward: the intended gradient is the identity, exactly
    g = rng.standard_normal(shape)
    gx = mm.grad(y, x, xp.asarray(g))
    assert gx.shape == shape and gx.dtype == np.float64
    np.testing.assert_array_equal(mm.to_numpy(gx.data), g)
    # finite differences of round itself are 0 here: the STE is a choice, not the derivative
    eps = 1e-6
    numeric = (np.rint(x_host + eps) - np.rint(x_host - eps)) / (2 * eps)
    assert np.all(numeric == 0.0)
    with pytest.raises(mm.GradcheckError):
        mm.gradcheck(compress.round_ste, [x_host])


def test_round_ste_ties_go_to_even():
    y = compress.round_ste(mm.tensor(np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])))
    np.testing.assert_array_equal(y.numpy(), [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0])


@pytest.mark.parametrize("shape,axis", [((4, 3), 1), ((3, 2, 2, 2), 0)])
def test_fake_quantize_is_int8_forward_with_identity_gradient(rng, shape, axis):
    w_host = rng.standard_normal(shape)
    w = mm.tensor(w_host, requires_grad=True)
    w_hat = compress.fake_quantize(w, axis)
    q, s = _oracle_int8(w_host, axis)
    s_b = s.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    np.testing.assert_allclose(w_hat.numpy(), q * s_b, rtol=1e-6, atol=1e-7)
    g = rng.standard_normal(shape)
    gw = mm.grad(w_hat, w, g)
    assert gw.shape == shape
    np.testing.assert_allclose(gw.numpy(), g, rtol=1e-12)


def test_fake_quantized_model_computes_with_int8_weights_and_trains_the_masters(rng):
    model = _small_model(rng)
    x = mm.tensor(rng.standard_normal((3, 2, 5, 5)).astype(np.float32))
    y = np.array([0, 3, 1])
    originals = [p for p in model.parameters()]
    with compress.fake_quantized(model):
        assert model[0].W is not originals[0]          # the layer sees ŵ ...
        loss = F.cross_entropy(model(x), y)
    assert [p for p in model.parameters()] == originals and model[0].W is originals[0]
    # ... which is exactly the int8 model's forward
    int8 = _small_model(np.random.default_rng(1))
    int8.load_state_dict(compress.decompress_state(compress.compress_state(model, "int8")))
    np.testing.assert_allclose(loss.item(), F.cross_entropy(int8(x), y).item(), rtol=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())
    # training with fake quantisation lowers the loss; the masters stay float32
    opt = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):
        with compress.fake_quantized(model):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.dtype == np.float32 for p in model.parameters())


# -- pruning ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.0])
def test_prune_layer_scope_reaches_the_exact_sparsity_per_tensor(device, rng, sparsity):
    model = MultiModalModel(20, rng=rng).to(device)
    before = {n: mm.to_numpy(p.data).copy() for n, _, p in compress.compressible(model)}
    pruning = compress.prune(model, sparsity)
    for name, _, p in compress.compressible(model):
        w = mm.to_numpy(p.data)
        k = int(round(sparsity * w.size))
        assert int((w == 0).sum()) == k, name
        # the pruned ones are the smallest in magnitude; the others are untouched
        kept = w != 0
        assert np.array_equal(w[kept], before[name][kept])
        if 0 < k < w.size:
            assert np.abs(before[name][~kept]).max() <= np.abs(before[name][kept]).min()
    biases = [p for n, p in model.named_parameters() if p.ndim == 1]
    assert all(np.all(mm.to_numpy(b.data) != 0) for b in biases)
    total = sum(p.size for _, _, p in compress.compressible(model))
    expected = sum(int(round(sparsity * p.size)) for _, _, p in compress.compressible(model))
    assert pruning.sparsity() == expected / total


def test_prune_global_scope_and_ties_are_exact():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    model[0].W.data[...] = 1.0        # 100 equal magnitudes: a threshold would take all or none
    model[1].W.data[...] = np.arange(100, dtype=np.float32).reshape(10, 10) + 2.0
    pruning = compress.prune(model, 0.25, scope="global")
    assert pruning.sparsity() == 0.25
    assert int((model[0].W.data == 0).sum()) == 50 and int((model[1].W.data == 0).sum()) == 0
    with pytest.raises(ValueError, match="prune: sparsity"):
        compress.prune(model, 1.0)
    with pytest.raises(ValueError, match="scope"):
        compress.prune(model, 0.5, scope="row")


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.Adam(ps, lr=0.05, weight_decay=0.1),
    lambda ps: optim.AdamW(ps, lr=0.05, weight_decay=0.1),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.1)],
    ids=["adam", "adamw", "sgd"])
def test_pruned_weights_stay_zero_through_optimiser_steps_with_momentum(rng, make_opt):
    model = _small_model(rng)
    x = mm.tensor(rng.standard_normal((4, 2, 5, 5)).astype(np.float32))
    y = np.array([0, 1, 2, 3])
    opt = make_opt(model.parameters())

    def steps(n):
        for _ in range(n):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    steps(3)                                           # momentum builds up before pruning
    pruning = compress.prune(model, 0.8)
    zeros = {n: mm.to_numpy(p.data) == 0 for n, _, p in compress.compressible(model)}
    # without the mask re-applied, the old momentum moves the pruned weights off zero
    steps(1)
    assert any(np.any(mm.to_numpy(p.data)[zeros[n]] != 0)
               for n, _, p in compress.compressible(model))
    # with it, they stay exactly zero, step after step
    pruning.apply()
    pruning.attach(opt)
    steps(5)
    for name, _, p in compress.compressible(model):
        w = mm.to_numpy(p.data)
        assert np.all(w[zeros[name]] == 0) and np.all(w[~zeros[name]] != 0), name
    assert pruning.sparsity() == pytest.approx(0.8, abs=0.01)


def test_sparsity_schedule_is_cubic_and_ends_at_the_target():
    s = compress.sparsity_schedule(0.9, 3)
    np.testing.assert_allclose(s, [0.9 - 0.9 * (2 / 3) ** 3, 0.9 - 0.9 * (1 / 3) ** 3, 0.9])
    assert all(a < b for a, b in zip(s, s[1:]))
    with pytest.raises(ValueError, match="rounds"):
        compress.sparsity_schedule(0.5, 0)


def test_iterative_prune_grows_the_masks_and_fine_tunes_between_rounds(rng):
    model = _small_model(rng)
    x = mm.tensor(rng.standard_normal((4, 2, 5, 5)).astype(np.float32))
    y = np.array([0, 1, 2, 3])
    opt = optim.Adam(model.parameters(), lr=0.01)
    seen = []

    def finetune(m, pruning):
        pruning.attach(opt)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
        seen.append({n: mm.to_numpy(p.data) == 0 for n, _, p in compress.compressible(m)})

    compress.iterative_prune(model, 0.9, 3, finetune)
    assert len(seen) == 3
    for earlier, later in zip(seen, seen[1:]):      # once pruned, always pruned
        assert all(np.all(later[n][earlier[n]]) for n in earlier)
    for name, _, p in compress.compressible(model):
        assert int((mm.to_numpy(p.data) == 0).sum()) == int(round(0.9 * p.size)), name


# -- on disk ----------------------------------------------------------------------------------
def test_compressed_files_round_trip_and_shrink(tmp_path, rng):
    model = MultiModalModel(20, rng=rng)
    ids = rng.integers(2, 20, (2, 5))
    images = mm.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    with mm.no_grad():
        ref = model(images, ids, np.array([5, 3])).numpy()
    sizes = {}
    for dtype in compress.DTYPES:
        path = tmp_path / f"{dtype}.npz"
        sizes[dtype] = compress.save_compressed(model, path, dtype)
        assert sizes[dtype] == os.path.getsize(path)
        clone = MultiModalModel(20, rng=np.random.default_rng(9))
        state, config = compress.load_compressed(path, clone)
        assert config == model.config()
        for name, axis, p in compress.compressible(model):
            w, w_hat = p.numpy(), state[name]
            assert w_hat.dtype == np.float32 and w_hat.shape == w.shape
            if dtype == "float32":
                assert np.array_equal(w, w_hat)
            elif dtype == "float16":
                assert np.all(np.abs(w - w_hat) <= 2.0 ** -11 * np.abs(w) + 1e-7)
            else:
                s = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis),
                                  keepdims=True) / 127
                assert np.all(np.abs(w - w_hat) <= s / 2 + EPS32 * np.abs(w))
        assert np.array_equal(clone.head.b.numpy(), model.head.b.numpy())  # biases: float32
        with mm.no_grad():
            out = clone(images, ids, np.array([5, 3])).numpy()
        np.testing.assert_allclose(out, ref, atol={"float32": 0, "float16": 1e-2,
                                                   "int8": 5e-2}[dtype])
    # ≈ 4, 2 and 1 bytes a weight, plus float32 biases and scales and the npz headers
    assert sizes["float32"] > 1.9 * sizes["float16"] and sizes["float16"] > 1.8 * sizes["int8"]


def test_sparse_storage_is_mask_plus_nonzero_values(tmp_path, rng):
    model = MultiModalModel(20, rng=rng)
    dense = compress.save_compressed(model, tmp_path / "dense.npz", "float32")
    compress.prune(model, 0.9)
    path = tmp_path / "sparse.npz"
    size = compress.save_compressed(model, path, "float32", sparse=True)
    tree = mm.load(path)
    arrays = 0
    for name, _, p in compress.compressible(model):
        entry = tree["weights"][name]
        assert entry["values"].size == int((p.numpy() != 0).sum())
        arrays += entry["mask"].nbytes + entry["values"].nbytes
        assert entry["mask"].nbytes + entry["values"].nbytes == compress.sparse_size_bytes(
            p.size, 0.9)
    assert size < 0.2 * dense and size > arrays
    state, _ = compress.load_compressed(path)
    for name, _, p in compress.compressible(model):
        assert np.array_equal(state[name], p.numpy())
    # int8 and sparse together: the int8 values only where the mask is set
    size8 = compress.save_compressed(model, tmp_path / "s8.npz", "int8", sparse=True)
    assert size8 < size
    state8, _ = compress.load_compressed(tmp_path / "s8.npz")
    for name, _, p in compress.compressible(model):
        assert np.all(state8[name][p.numpy() == 0] == 0)


def test_compressed_format_errors(tmp_path, rng):
    model = _small_model(rng)
    with pytest.raises(ValueError, match="compress_state: dtype"):
        compress.save_compressed(model, tmp_path / "x.npz", "int4")
    mm.save(model, tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="not a compressed model"):
        compress.load_compressed(tmp_path / "plain.npz")


def test_quantization_aware_wrapper_trains_the_inner_model_and_quantize_model_in_place(rng):
    model = _small_model(rng)
    qat = compress.QuantizationAware(model, bits=4)
    assert qat.parameters() == model.parameters()
    x = mm.tensor(rng.standard_normal((3, 2, 5, 5)).astype(np.float32))
    with mm.no_grad():
        through_wrapper = qat(x).numpy()
    four_bit = compress.quantize_model_(_small_model(np.random.default_rng(7)).load_state_dict(
        model.state_dict()), bits=4)
    with mm.no_grad():
        np.testing.assert_allclose(four_bit(x).numpy(), through_wrapper, rtol=1e-5, atol=1e-6)
    for (_, axis, p), (_, _, w) in zip(compress.compressible(four_bit),
                                       compress.compressible(model)):
        levels = np.unique(np.round(p.numpy() / compress.quantize_per_channel(
            w.data, axis, 4)[1].reshape([-1 if i == axis else 1 for i in range(p.ndim)])))
        assert levels.size <= 15 and p.dtype == np.float32      # −7 … 7
