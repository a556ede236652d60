"""Accuracy in the tails: every elementwise function and the log-sum-exp family against
values computed with 60 significant digits (mpmath), in float64 and float32.

Relative error is what matters in a tail: σ(−40) = 4.2e-18 computed as 0 is 100% wrong, and
−log σ(x) of it is inf. The references are the textbook formulas evaluated in high precision,
independent of how minimm computes them.
"""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F
from minimm.functional import special

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 60
mpf = mpmath.mpf


def _grid(dtype, limit):
    """Both signs, |x| from 1e-8 to ``limit`` log-spaced, and 0, in ``dtype``."""
    mags = np.logspace(-8, np.log10(limit), 240)
    return np.concatenate([-mags[::-1], [0.0], mags]).astype(dtype)


def _tanh_gelu(v):
    u = mpmath.sqrt(2 / mpmath.pi) * (v + mpf("0.044715") * v ** 3)
    return v / (1 + mpmath.exp(-2 * u))            # ½ v (1 + tanh u), without cancellation


TAILS = {  # name: (minimm on a Tensor, high-precision reference, rtol float64, rtol float32)
    "sigmoid": (F.sigmoid, lambda v: 1 / (1 + mpmath.exp(-v)), 4e-16, 2e-7),
    "softplus": (F.softplus, lambda v: mpmath.log1p(mpmath.exp(v)), 4e-16, 3e-7),
    "log_sigmoid": (F.log_sigmoid, lambda v: -mpmath.log1p(mpmath.exp(-v)), 4e-16, 3e-7),
    "tanh": (F.tanh, mpmath.tanh, 4e-16, 2e-7),
    "exp": (F.exp, mpmath.exp, 4e-16, 2e-7),
    "erf": (F.erf, mpmath.erf, 8e-16, 2e-7),
    "gelu": (F.gelu, lambda v: v * mpmath.ncdf(v), 3e-15, 6e-7),   # float32: Φ in float32
    # the approximation's argument u ~ x³ carries rounding ~|u|·ε into e^{2u}: float64
    # ~1e-13 at x = −18, float32 ~1e-5 at x = −9 — against 100% (0) for 1 + tanh u
    "gelu_tanh": (lambda t: F.gelu(t, "tanh"), _tanh_gelu, 1e-12, 2e-5),
}


def _reference(f, x):
    return np.array([float(f(mpf(float(v)))) for v in x])


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(TAILS))
def test_elementwise_tails_match_high_precision(device, name, dtype):
    f, ref, rtol64, rtol32 = TAILS[name]
    x = _grid(dtype, 700 if dtype == np.float64 else 85)
    if name == "exp":                              # e^x must stay finite
        x = x[x < (700 if dtype == np.float64 else 88)]
    y = f(mm.tensor(x, device=device))
    assert y.dtype == dtype
    want = _reference(ref, x.astype(np.float64))
    normal = np.abs(want) > 10 * np.finfo(dtype).tiny     # subnormals carry fewer digits
    got = y.numpy().astype(np.float64)
    rel = np.abs(got[normal] - want[normal]) / np.abs(want[normal])
    worst = int(np.argmax(rel))
    assert rel[worst] <= (rtol64 if dtype == np.float64 else rtol32), (
        f"{name}({x[normal][worst]!r}) = {got[normal][worst]!r}, want {want[normal][worst]!r}")
    # where the true value underflows, the result is 0 or subnormal, never garbage
    assert np.all(np.abs(got[~normal]) <= 20 * np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype, x, want", [
    (np.float64, -40.0, 4.248354255291589e-18),      # the case: ½ tanh(x/2) + ½ gave 0
    (np.float64, -700.0, 9.85967654375977e-305),
    (np.float32, -20.0, 2.0611536e-09),               # was 12× off
    (np.float32, -80.0, 1.8048513e-35),               # was 0
])
def test_sigmoid_left_tail(device, dtype, x, want):
    y = F.sigmoid(mm.tensor(np.array([x], dtype), device=device)).numpy()[0]
    assert y == pytest.approx(want, rel=4e-16 if dtype == np.float64 else 2e-7)
    # so −log σ(x), written by hand, is finite and right: −log σ(x) ≈ −x for x ≪ 0
    nll = -F.log(F.sigmoid(mm.tensor(np.array([x], dtype), device=device))).numpy()[0]
    assert np.isfinite(nll) and nll == pytest.approx(-x, rel=1e-6)


def test_log_sigmoid_and_softplus_far_out(device):
    x = mm.tensor(np.array([-800.0, -40.0, 0.0, 40.0, 800.0]), device=device)
    np.testing.assert_allclose(F.log_sigmoid(x).numpy(),
                               [-800.0, -40.0, -math.log(2), -4.248354255291589e-18, -0.0],
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(F.softplus(x).numpy(),
                               [0.0, 4.248354255291589e-18, math.log(2), 40.0, 800.0],
                               rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_erfc_right_tail(device, xp, dtype):
    x = _grid(dtype, 27 if dtype == np.float64 else 9.3)
    got = special.erfc_array(xp.asarray(x))
    assert got.dtype == dtype
    want = _reference(mpmath.erfc, x.astype(np.float64))
    normal = want > 10 * np.finfo(dtype).tiny
    rel = np.abs(mm.to_numpy(got)[normal] - want[normal]) / want[normal]
    assert rel.max() <= (3e-15 if dtype == np.float64 else 2e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_gelu_derivative_in_the_tails(device, dtype):
    """GELU'(x) = Φ(x) + x φ(x): relative-accurate in both tails (its zero near x = −0.75
    is checked against the size of the terms, Φ(x), instead)."""
    x = _grid(dtype, 38 if dtype == np.float64 else 13)
    t = mm.tensor(x, device=device, requires_grad=True)
    F.gelu(t).sum().backward()
    assert t.grad.dtype == dtype
    xd = x.astype(np.float64)
    want = _reference(lambda v: mpmath.ncdf(v) + v * mpmath.npdf(v), xd)
    scale = np.maximum(np.abs(want), _reference(mpmath.ncdf, xd))
    normal = np.abs(want) > 10 * np.finfo(dtype).tiny
    err = np.abs(t.grad.numpy()[normal] - want[normal]) / scale[normal]
    assert err.max() <= (3e-14 if dtype == np.float64 else 6e-7)


# -- the log-sum-exp family ---------------------------------------------------------------------
def _mp_logsumexp(row):
    return mpmath.log(mpmath.fsum(mpmath.exp(mpf(float(v))) for v in row))


@pytest.mark.parametrize("dtype, row", [
    (np.float64, [0.0, -40.0]),            # log(1 + e^{−40}) = 4.2e-18, not 0
    (np.float64, [5.0, -30.0, -35.0, 5.0 - 1e-9]),
    (np.float64, [1e4, 1e4 - 50, 0.0]),
    (np.float32, [0.0, -20.0]),
    (np.float32, [3e38, 3e38 - 2e32]),
])
def test_logsumexp_small_excess_is_exact(device, dtype, row):
    x = mm.tensor(np.array([row], dtype), device=device)
    want = _mp_logsumexp(row)
    rtol = 4e-16 if dtype == np.float64 else 2e-7
    got = F.logsumexp(x, axis=1).numpy()[0]
    assert got == pytest.approx(float(want), rel=rtol)
    # log_softmax of the largest entry is −log(1 + Σ others): tiny, and exact too
    top = int(np.argmax(row))
    ls = F.log_softmax(x, axis=1).numpy()[0]
    assert ls[top] == pytest.approx(float(mpf(float(np.float64(row[top]))) - want), rel=rtol,
                                    abs=1e-300)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_log_softmax_and_cross_entropy_on_spread_logits(device, rng, dtype):
    """Rows whose logits spread over ±60: every log-probability, and the loss of a confident
    prediction, relative-accurate."""
    a = (rng.standard_normal((6, 7)) * 30).astype(dtype)
    a[0] = [0.0, -45.0, -50.0, -60.0, -41.0, -70.0, -80.0]     # one confident row
    want = np.array([[float(mpf(float(v)) - _mp_logsumexp(row)) for v in row]
                     for row in a.astype(np.float64)])
    got = F.log_softmax(mm.tensor(a, device=device), axis=1).numpy()
    # a few ulp; in float32 also x − max rounded, worth |x − max|·2⁻²⁴ relative in e^{x − max}
    # (1e-6 at a gap of 19), where log(1 + r) of a rounded 1 + r was 100% off
    rtol = 2e-15 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)
    t = np.array([0, 1, 2, 3, 4, 5])
    loss = F.cross_entropy(mm.tensor(a[:1], device=device), t[:1]).numpy()
    assert loss == pytest.approx(-want[0, 0], rel=rtol)             # ≈ 2.9e-18 (float64)
    assert loss > 0


def test_logsumexp_of_non_finite_rows_follows_pytorch(device):
    """−∞ everywhere gives −∞ (e^{−∞} = 0 summed), +∞ anywhere gives +∞, not NaN."""
    inf = np.inf
    x = mm.tensor(np.array([[-inf, -inf], [inf, 1.0], [inf, inf], [0.0, -inf]]), device=device)
    np.testing.assert_array_equal(F.logsumexp(x, axis=1).numpy(), [-inf, inf, inf, 0.0])
    np.testing.assert_array_equal(F.log_softmax(x, axis=1).numpy()[3], [0.0, -inf])
    np.testing.assert_array_equal(F.softmax(x, axis=1).numpy()[3], [1.0, 0.0])
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(torch.logsumexp(torch.tensor(x.numpy()), 1).numpy(),
                                  [-inf, inf, inf, 0.0])


# -- integer and boolean input ------------------------------------------------------------------
FLOAT_FUNCTIONS = {  # promoted to float32, as PyTorch
    "exp": (F.exp, np.exp), "log": (F.log, np.log), "sqrt": (F.sqrt, np.sqrt),
    "sigmoid": (F.sigmoid, lambda a: 1 / (1 + np.exp(-a))), "tanh": (F.tanh, np.tanh),
    "erf": (F.erf, np.vectorize(math.erf)),
    "softplus": (F.softplus, lambda a: np.log1p(np.exp(a))),
    "logsumexp": (lambda t: F.logsumexp(t, axis=1),
                  lambda a: np.log(np.exp(a).sum(axis=1))),
}


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.int32, np.bool_])
@pytest.mark.parametrize("name", list(FLOAT_FUNCTIONS))
def test_integer_input_to_elementwise_functions_becomes_float32(device, name, dtype):
    f, oracle = FLOAT_FUNCTIONS[name]
    a = np.array([[1, 2, 3], [4, 0, 1]]).astype(dtype)
    if name == "log":
        a = np.maximum(a, 1)
    y = f(mm.tensor(a, device=device))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), oracle(a.astype(np.float64)), rtol=2e-7)


def test_relu_and_integer_powers_keep_integers(device):
    """As PyTorch: relu and x ** int keep an integer dtype; x ** float becomes float32."""
    x = mm.tensor(np.array([-2, 0, 3]), device=device)
    y = F.relu(x)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y.numpy(), [0, 0, 3])
    assert (x ** 2).dtype == np.int64 and (x ** 2).numpy().tolist() == [4, 0, 9]
    half = mm.tensor(np.array([4, 9], np.uint8), device=device) ** 0.5
    assert half.dtype == np.float32 and half.numpy().tolist() == [2.0, 3.0]
