"""Every core operation of issue 2: forward against plain NumPy, float64 gradient checks on
several shapes (broadcasting, batch 1, non-square, 0-d), second derivatives where the issue
asks for them, and the numerical stability of the softmax family."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F


def _rng(seed=0):
    return np.random.default_rng(seed)


def _any(shape, seed=0):
    """Values of either sign kept at least 0.1 away from 0, so relu/abs kinks are never
    within a finite-difference step."""
    r = _rng(seed)
    return r.choice([-1.0, 1.0], size=shape) * r.uniform(0.1, 2.0, size=shape)


def _pos(shape, seed=0):
    return _rng(seed).uniform(0.5, 2.0, size=shape)


def _on(device, *arrays):
    """NumPy arrays as backend arrays of ``device`` (gradcheck takes raw arrays)."""
    return [mm.tensor(a, device=device).data for a in arrays]


def _close(y, expected, **kw):
    kw.setdefault("rtol", 1e-10)
    kw.setdefault("atol", 1e-12)
    np.testing.assert_allclose(mm.to_numpy(y), expected, **kw)


# --- elementwise unary ----------------------------------------------------------------------

UNARY = {  # name: (minimm, NumPy oracle, input domain)
    "neg": (lambda x: -x, lambda a: -a, _any),
    "exp": (F.exp, np.exp, _any),
    "log": (F.log, np.log, _pos),
    "sqrt": (F.sqrt, np.sqrt, _pos),
    "tanh": (F.tanh, np.tanh, _any),
    "sigmoid": (F.sigmoid, lambda a: 1.0 / (1.0 + np.exp(-a)), _any),
    "relu": (F.relu, lambda a: np.where(a > 0, a, 0.0), _any),
    "softplus": (F.softplus, lambda a: np.log(1.0 + np.exp(a)), _any),
    "log_sigmoid": (F.log_sigmoid, lambda a: -np.log(1.0 + np.exp(-a)), _any),
    "abs": (abs, np.abs, _any),
    "abs_method": (lambda x: x.abs(), np.abs, _any),
    "pow3": (lambda x: x ** 3, lambda a: a * a * a, _any),
    "pow_half": (lambda x: x ** 0.5, np.sqrt, _pos),
    "pow_neg": (lambda x: F.pow(x, -2.0), lambda a: 1.0 / (a * a), _pos),
    "rpow": (lambda x: 2.0 ** x, lambda a: np.exp(a * np.log(2.0)), _any),
    "clip": (lambda x: F.clip(x, -0.5, 0.7), lambda a: np.minimum(np.maximum(a, -0.5), 0.7), _any),
    "clip_lo": (lambda x: x.clip(lo=0.3), lambda a: np.maximum(a, 0.3), _any),
    "rsub": (lambda x: 1.5 - x, lambda a: 1.5 - a, _any),
    "rdiv": (lambda x: 3.0 / x, lambda a: 3.0 / a, _pos),
    "scalar_mul": (lambda x: x * 2.5 + 1.0, lambda a: a * 2.5 + 1.0, _any),
}
SHAPES = [(), (1,), (3,), (2, 5), (1, 4), (2, 3, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary_forward_and_grad(device, name, shape):
    f, oracle, domain = UNARY[name]
    a = domain(shape)
    y = f(mm.tensor(a, device=device))
    assert y.shape == shape
    _close(y, oracle(a))
    assert mm.gradcheck(f, _on(device, a))


@pytest.mark.parametrize("name", list(UNARY))
def test_unary_gradgrad(device, name):
    f, _, domain = UNARY[name]
    assert mm.gradgradcheck(f, _on(device, domain((2, 3), seed=1)))


# --- elementwise binary, with broadcasting --------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, np.add, _any, _any),
    "sub": (lambda a, b: a - b, np.subtract, _any, _any),
    "mul": (lambda a, b: a * b, np.multiply, _any, _any),
    "div": (lambda a, b: a / b, np.divide, _any, _pos),
    "pow_tensor": (lambda a, b: a ** b, np.power, _pos, _any),
    "maximum": (F.maximum, np.maximum, _any, _any),
    "minimum": (F.minimum, np.minimum, _any, _any),
    "F.add": (F.add, np.add, _any, _any),
    "F.sub": (F.sub, np.subtract, _any, _any),
    "F.mul": (F.mul, np.multiply, _any, _any),
    "F.div": (F.div, np.divide, _any, _pos),
}
BROADCAST_PAIRS = [
    ((), ()), ((3,), ()), ((), (2, 3)), ((2, 3), (2, 3)), ((2, 3), (3,)), ((2, 1), (1, 3)),
    ((1, 4), (3, 1)), ((3, 1, 4), (2, 4)), ((1,), (2, 3)), ((1, 1), (1, 1)), ((2, 3, 1), (1, 1, 5)),
]


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_forward_and_grad(device, name, shapes):
    f, oracle, dom_a, dom_b = BINARY[name]
    a, b = dom_a(shapes[0], seed=1), dom_b(shapes[1], seed=2)
    y = f(mm.tensor(a, device=device), mm.tensor(b, device=device))
    expected = oracle(a, b)
    assert y.shape == expected.shape
    _close(y, expected)
    assert mm.gradcheck(f, _on(device, a, b))


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_gradgrad(device, name):
    f, _, dom_a, dom_b = BINARY[name]
    assert mm.gradgradcheck(f, _on(device, dom_a((2, 3), seed=3), dom_b((3,), seed=4)))


def test_broadcast_gradient_shapes(device):
    a = mm.tensor(_any((3, 1, 4)), requires_grad=True, device=device)
    b = mm.tensor(_any((2, 4), seed=1), requires_grad=True, device=device)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1, 4) and b.grad.shape == (2, 4)
    _close(a.grad, np.broadcast_to(mm.to_numpy(b).sum(0), (3, 1, 4)))
    _close(b.grad, np.broadcast_to(mm.to_numpy(a).sum(0), (2, 4)))


def test_maximum_tie_splits_gradient(device):
    """On a tie each side gets half (what a central difference sees), never both a full 1."""
    x = mm.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    y = mm.tensor([1.0, 5.0, 0.0], requires_grad=True, device=device)
    F.maximum(x, y).sum().backward()
    _close(x.grad, [0.5, 0.0, 1.0])
    _close(y.grad, [0.5, 1.0, 0.0])


# --- matmul -----------------------------------------------------------------------------------

MATMUL_SHAPES = [
    ((3, 4), (4, 2)), ((1, 4), (4, 1)), ((2, 2), (2, 2)), ((4,), (4,)), ((4,), (4, 3)),
    ((2, 4), (4,)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
    ((4,), (2, 4, 3)), ((2, 3, 4), (4,)), ((1, 3, 4), (2, 4, 2)), ((2, 3, 4), (2, 4, 1)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(device, shapes):
    a, b = _any(shapes[0], seed=1), _any(shapes[1], seed=2)
    y = mm.tensor(a, device=device) @ mm.tensor(b, device=device)
    expected = np.matmul(a, b)
    assert y.shape == expected.shape
    _close(y, expected)
    assert mm.gradcheck(F.matmul, _on(device, a, b))
    assert mm.gradgradcheck(lambda p, q: p @ q, _on(device, a, b))


def test_matmul_with_constant_operand(device):
    """Only the input that wants a gradient gets one (the other is a plain array)."""
    W = _any((4, 3), seed=5)
    x = mm.tensor(_any((2, 4)), requires_grad=True, device=device)
    (x @ mm.tensor(W, device=device).data).sum().backward()
    _close(x.grad, np.broadcast_to(W.sum(1), (2, 4)))


# --- reductions -----------------------------------------------------------------------------

REDUCTIONS = {
    "sum": (lambda x, **k: x.sum(**k), np.sum),
    "mean": (lambda x, **k: x.mean(**k), np.mean),
    "max": (lambda x, **k: x.max(**k), np.max),
    "min": (lambda x, **k: F.min(x, **k), np.min),
}
AXES = [None, 0, 1, -1, (0, 2), (0, 1, 2), (2, 0)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction(device, name, axis, keepdims):
    f, oracle = REDUCTIONS[name]
    a = _rng(7).permutation(24).reshape(2, 3, 4) / 7.0 - 1.0  # distinct values: no ties

    def g(x):
        return f(x, axis=axis, keepdims=keepdims)

    y = g(mm.tensor(a, device=device))
    expected = oracle(a, axis=axis, keepdims=keepdims)
    assert y.shape == np.shape(expected)
    _close(y, expected)
    assert mm.gradcheck(g, _on(device, a))


@pytest.mark.parametrize("shape", [(), (1,), (1, 3), (5, 1)], ids=str)
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reduction_small_shapes(device, name, shape):
    f, oracle = REDUCTIONS[name]
    a = _any(shape, seed=3)
    _close(f(mm.tensor(a, device=device)), oracle(a))
    assert mm.gradcheck(f, _on(device, a))


@pytest.mark.parametrize("axis", [None, 1, (0, 1)], ids=str)
def test_sum_mean_gradgrad(device, axis):
    a = _any((2, 3), seed=2)
    assert mm.gradgradcheck(lambda x: x.sum(axis=axis), _on(device, a))
    assert mm.gradgradcheck(lambda x: (x * x).mean(axis=axis, keepdims=True), _on(device, a))


def test_max_ties_share_gradient(device):
    x = mm.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]], requires_grad=True, device=device)
    x.max(axis=1).sum().backward()
    _close(x.grad, [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


# --- shape operations -----------------------------------------------------------------------

SHAPE_OPS = {  # name: (minimm, NumPy, input shape)
    "reshape": (lambda x: x.reshape(4, 6), lambda a: a.reshape(4, 6), (2, 3, 4)),
    "reshape_tuple": (lambda x: F.reshape(x, (3, -1)), lambda a: a.reshape(3, -1), (2, 3, 2)),
    "reshape_0d": (lambda x: x.reshape(1, 1), lambda a: a.reshape(1, 1), ()),
    "flatten": (lambda x: x.flatten(1), lambda a: a.reshape(2, -1), (2, 3, 4)),
    "T": (lambda x: x.T, lambda a: a.T, (3, 5)),
    "T_3d": (lambda x: x.T, lambda a: a.T, (2, 3, 4)),
    "transpose_axes": (lambda x: x.transpose(1, 2, 0), lambda a: a.transpose(1, 2, 0), (2, 3, 4)),
    "permute": (lambda x: F.permute(x, (2, 0, 1)), lambda a: a.transpose(2, 0, 1), (2, 3, 4)),
    "transpose_neg": (lambda x: x.transpose(0, -1, 1), lambda a: a.transpose(0, 2, 1), (2, 3, 4)),
    "swapaxes": (lambda x: x.swapaxes(0, 2), lambda a: a.swapaxes(0, 2), (2, 3, 4)),
    "broadcast_to": (lambda x: F.broadcast_to(x, (2, 3, 4)),
                     lambda a: np.broadcast_to(a, (2, 3, 4)), (3, 1)),
    "broadcast_0d": (lambda x: F.broadcast_to(x, (2, 3)), lambda a: np.broadcast_to(a, (2, 3)), ()),
    "expand_dims": (lambda x: F.expand_dims(x, 1), lambda a: a[:, None], (3, 2)),
    "squeeze": (lambda x: F.squeeze(x, -1), lambda a: a[..., 0], (3, 1)),
    # getitem, basic
    "int": (lambda x: x[1], lambda a: a[1], (3, 4)),
    "neg_int": (lambda x: x[-1, 2], lambda a: a[-1, 2], (3, 4)),
    "slices": (lambda x: x[1:, ::2], lambda a: a[1:, ::2], (3, 4)),
    "newaxis_ellipsis": (lambda x: x[None, ..., 1], lambda a: a[None, ..., 1], (2, 3, 4)),
    "reverse": (lambda x: x[::-1], lambda a: a[::-1], (4, 2)),
    # getitem, advanced (backward scatter-adds: repeated indices accumulate)
    "int_array_repeated": (lambda x: x[np.array([0, 2, 0, 0, 1])],
                           lambda a: a[np.array([0, 2, 0, 0, 1])], (3, 2)),
    "list_index": (lambda x: x[[1, 1, 0]], lambda a: a[[1, 1, 0]], (3, 2)),
    "two_arrays": (lambda x: x[np.array([0, 1, 1, 2]), np.array([2, 2, 2, 0])],
                   lambda a: a[np.array([0, 1, 1, 2]), np.array([2, 2, 2, 0])], (3, 3)),
    "array_and_slice": (lambda x: x[:, np.array([3, 0, 3])],
                        lambda a: a[:, np.array([3, 0, 3])], (2, 4)),
    "2d_index_array": (lambda x: x[np.array([[0, 1], [1, 1]])],
                       lambda a: a[np.array([[0, 1], [1, 1]])], (2, 3)),
    "bool_mask": (lambda x: x[np.array([True, False, True])],
                  lambda a: a[np.array([True, False, True])], (3, 2)),
    "bool_mask_2d": (lambda x: x[x.data > 0], lambda a: a[a > 0], (3, 4)),
}


@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_op(device, name):
    f, oracle, shape = SHAPE_OPS[name]
    a = _any(shape, seed=4)
    y = f(mm.tensor(a, device=device))
    expected = oracle(a)
    assert y.shape == expected.shape
    _close(y, expected)
    assert mm.gradcheck(f, _on(device, a))
    assert mm.gradgradcheck(f, _on(device, a))


def test_getitem_repeated_indices_accumulate(device):
    x = mm.tensor([10.0, 20.0, 30.0], requires_grad=True, device=device)
    x[np.array([0, 2, 0, 0])].sum().backward()
    _close(x.grad, [3.0, 0.0, 1.0])


def test_getitem_with_tensor_indices(device):
    a = _any((4, 3))
    x = mm.tensor(a, requires_grad=True, device=device)
    idx = mm.tensor(np.array([3, 3, 1]), device=device)
    mask = x > 0  # a boolean Tensor
    y = x[idx]
    _close(y, a[[3, 3, 1]])
    _close(x[mask], a[a > 0])
    y.sum().backward()
    _close(x.grad, np.array([[0.0] * 3, [1.0] * 3, [0.0] * 3, [2.0] * 3]))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(device, axis):
    shapes = {0: [(2, 3), (1, 3), (3, 3)], 1: [(2, 1), (2, 4)], -1: [(2, 2), (2, 3), (2, 1)]}[axis]
    arrays = [_any(s, seed=i) for i, s in enumerate(shapes)]
    y = mm.concat([mm.tensor(a, device=device) for a in arrays], axis=axis)
    _close(y, np.concatenate(arrays, axis=axis))

    def f(*xs):
        return mm.concat(xs, axis=axis)

    assert mm.gradcheck(f, _on(device, *arrays))
    assert mm.gradgradcheck(f, _on(device, *arrays))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_stack(device, axis):
    arrays = [_any((2, 3), seed=i) for i in range(3)]
    y = mm.stack([mm.tensor(a, device=device) for a in arrays], axis=axis)
    _close(y, np.stack(arrays, axis=axis))
    assert mm.gradcheck(lambda *xs: mm.stack(xs, axis=axis), _on(device, *arrays))


@pytest.mark.parametrize("sections,axis", [(2, 0), (3, 1), ([1, 3], 1), ([2, 0, 2], -1),
                                           ([1, 1], 0)], ids=str)
def test_split(device, sections, axis):
    a = _any((2, 4) if sections != 3 else (2, 3), seed=2)
    parts = mm.split(mm.tensor(a, device=device), sections, axis=axis)
    bounds = np.cumsum(sections)[:-1] if isinstance(sections, list) else sections
    expected = np.split(a, bounds, axis=axis)
    assert len(parts) == len(expected)
    for p, e in zip(parts, expected):
        assert p.shape == e.shape
        _close(p, e)
    assert mm.gradcheck(lambda x: mm.split(x, sections, axis=axis), _on(device, a))


def test_split_unused_output_gets_zero_gradient(device):
    x = mm.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True, device=device)
    first, _ = mm.split(x, 2, axis=0)
    (first * 3.0).sum().backward()
    _close(x.grad, [[3.0, 3.0, 3.0], [0.0, 0.0, 0.0]])


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)),
                                    ((2, 1), (), (1, 3)), ((1,), (2, 2), (2, 2))], ids=str)
def test_where(device, shapes):
    cond = _any(shapes[0], seed=9) > 0
    a, b = _any(shapes[1], seed=1), _any(shapes[2], seed=2)
    y = mm.where(cond, mm.tensor(a, device=device), mm.tensor(b, device=device))
    _close(y, np.where(cond, a, b))
    cond_d = mm.tensor(cond, device=device)  # a boolean Tensor works as the condition
    assert mm.gradcheck(lambda p, q: mm.where(cond_d, p, q), _on(device, a, b))
    assert mm.gradgradcheck(lambda p, q: mm.where(cond_d, p * q, q), _on(device, a, b))


def test_where_with_scalar_branch(device):
    a = _any((2, 3))
    x = mm.tensor(a, requires_grad=True, device=device)
    y = mm.where(a > 0, x, 0.0)
    _close(y, np.where(a > 0, a, 0.0))
    y.sum().backward()
    _close(x.grad, (a > 0).astype(float))


COMPARISONS = [("==", lambda a, b: a == b, np.equal), ("!=", lambda a, b: a != b, np.not_equal),
               ("<", lambda a, b: a < b, np.less), ("<=", lambda a, b: a <= b, np.less_equal),
               (">", lambda a, b: a > b, np.greater), (">=", lambda a, b: a >= b, np.greater_equal)]


@pytest.mark.parametrize("name,f,oracle", COMPARISONS, ids=[c[0] for c in COMPARISONS])
def test_comparisons(device, name, f, oracle):
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    x = mm.tensor(a, requires_grad=True, device=device)
    for other, expected in ((mm.tensor(b, device=device), oracle(a, b)), (2.0, oracle(a, 2.0))):
        y = f(x, other)
        assert y.dtype == np.bool_ and not y.requires_grad and y.creator is None
        np.testing.assert_array_equal(mm.to_numpy(y), expected)


# --- softmax family and cross-entropy -------------------------------------------------------

def _np_softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_logsumexp(a, axis, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    y = m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))
    return y if keepdims else np.squeeze(y, axis=axis)


@pytest.mark.parametrize("shape,axis", [((3, 4), -1), ((3, 4), 0), ((1, 5), -1), ((5,), 0),
                                        ((2, 3, 4), 1), ((4, 1), -1)], ids=str)
def test_softmax_and_log_softmax(device, shape, axis):
    a = _any(shape, seed=5) * 3
    s = F.softmax(mm.tensor(a, device=device), axis=axis)
    ls = F.log_softmax(mm.tensor(a, device=device), axis=axis)
    _close(s, _np_softmax(a, axis))
    _close(ls, np.log(_np_softmax(a, axis)))
    _close(s.sum(axis=axis), np.ones(np.delete(shape, axis % len(shape))))
    for f in (lambda x: F.softmax(x, axis=axis), lambda x: F.log_softmax(x, axis=axis)):
        assert mm.gradcheck(f, _on(device, a))
        assert mm.gradgradcheck(f, _on(device, a))


def test_softmax_method(device):
    a = _any((2, 3))
    _close(mm.tensor(a, device=device).softmax(), _np_softmax(a, -1))


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), (-1, False),
                                           ((0, 2), False), ((0, 1, 2), True)], ids=str)
def test_logsumexp(device, axis, keepdims):
    a = _any((2, 3, 4), seed=6) * 3
    y = F.logsumexp(mm.tensor(a, device=device), axis=axis, keepdims=keepdims)
    expected = _np_logsumexp(a, axis if axis is not None else (0, 1, 2), keepdims)
    assert y.shape == np.shape(expected)
    _close(y, expected)
    f = lambda x: F.logsumexp(x, axis=axis, keepdims=keepdims)  # noqa: E731
    assert mm.gradcheck(f, _on(device, a))
    assert mm.gradgradcheck(f, _on(device, a))


BIG = [1e4, 3e38]


def _extreme(big):
    return np.array([[big, 0.0, -big], [big, big, big], [-big, -big, 0.0], [1.0, 2.0, 3.0]],
                    dtype=np.float32)


@pytest.mark.parametrize("big", BIG)
def test_softmax_family_stable_float32(device, big):
    a = _extreme(big)
    a64 = a.astype(np.float64)
    x = mm.tensor(a, requires_grad=True, device=device)
    p = _np_softmax(a64, 1)

    s = F.softmax(x, axis=1)
    assert s.dtype == np.float32
    _close(s, p, rtol=1e-6, atol=1e-7)
    s.backward(mm.tensor(np.eye(4, 3, dtype=np.float32), device=device))
    gy = np.eye(4, 3)
    assert np.isfinite(x.grad.numpy()).all()
    _close(x.grad, p * (gy - (gy * p).sum(1, keepdims=True)), rtol=1e-5, atol=1e-6)

    x.zero_grad()
    ls = F.log_softmax(x, axis=1)
    assert ls.dtype == np.float32
    with np.errstate(over="ignore"):  # −2·3e38 is −inf in float32, as it should be
        shifted = a64 - a64.max(axis=1, keepdims=True)  # a − lse(a) would lose log 3 at 3e38
        expected = (shifted - np.log(np.exp(shifted).sum(1, keepdims=True))).astype(np.float32)
    _close(ls, expected, rtol=1e-6, atol=1e-6)
    assert not np.isnan(ls.numpy()).any()
    ls.backward(mm.tensor(np.ones((4, 3), np.float32), device=device))
    _close(x.grad, 1.0 - 3.0 * p, rtol=1e-5, atol=1e-6)

    x.zero_grad()
    lse = F.logsumexp(x, axis=1)
    _close(lse, _np_logsumexp(a64, 1).astype(np.float32), rtol=1e-6)
    lse.backward(mm.tensor(np.ones(4, np.float32), device=device))
    _close(x.grad, p, rtol=1e-5, atol=1e-7)  # ties at 3e38 share: 1/3 each, not 1

    x.zero_grad()
    total = F.logsumexp(x)  # over every element: four tied maxima get 1/4 each
    total.backward()
    _close(x.grad, _np_softmax(a64.ravel(), 0).reshape(4, 3), rtol=1e-5, atol=1e-7)


def _np_cross_entropy(a, t):
    m = a.max(axis=1, keepdims=True)
    log_p = a - m - np.log(np.exp(a - m).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(t)), t].mean()


def _np_cross_entropy_grad(a, t):
    onehot = np.zeros_like(a)
    onehot[np.arange(len(t)), t] = 1.0
    return (_np_softmax(a, 1) - onehot) / len(t)


@pytest.mark.parametrize("n,c", [(4, 3), (1, 5), (3, 3), (6, 2), (2, 10)])
def test_cross_entropy(device, n, c):
    r = _rng(n * 10 + c)
    a = r.standard_normal((n, c)) * 2
    t = r.integers(0, c, size=n)
    x = mm.tensor(a, requires_grad=True, device=device)
    labels = mm.tensor(t, device=device).data
    loss = F.cross_entropy(x, labels)
    assert loss.shape == ()
    _close(loss, _np_cross_entropy(a, t))
    loss.backward()
    _close(x.grad, _np_cross_entropy_grad(a, t))

    simple = mm.tensor(a, requires_grad=True, device=device)
    loss_simple = F.cross_entropy_simple(simple, labels)
    _close(loss_simple, mm.to_numpy(loss))
    loss_simple.backward()
    _close(simple.grad, x.grad.numpy())

    # labels passed through gradcheck as an integer input, or closed over
    assert mm.gradcheck(F.cross_entropy, _on(device, a, t))
    assert mm.gradgradcheck(lambda z: F.cross_entropy(z, labels), _on(device, a))


def test_cross_entropy_labels_as_tensor_and_list(device):
    a = _any((3, 4))
    x = mm.tensor(a, device=device)
    expected = _np_cross_entropy(a, np.array([3, 0, 1]))
    _close(F.cross_entropy(x, mm.tensor([3, 0, 1], device=device)), expected)
    _close(F.cross_entropy(x, [3, 0, 1]), expected)


@pytest.mark.parametrize("big", BIG)
def test_cross_entropy_stable_float32(device, big):
    a = _extreme(big)
    t = np.array([0, 2, 2, 1])
    x = mm.tensor(a, requires_grad=True, device=device)
    loss = F.cross_entropy(x, t)
    assert loss.dtype == np.float32
    a64 = a.astype(np.float64)
    _close(loss, _np_cross_entropy(a64, t), rtol=1e-6)
    loss.backward()
    assert x.grad.dtype == np.float32
    _close(x.grad, _np_cross_entropy_grad(a64, t), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("labels,error,match", [
    ([0, 4, 1], ValueError, r"cross_entropy: label 4 is out of range for 4 classes \(valid: 0\.\.3\)"),
    ([0, -1, 1], ValueError, r"cross_entropy: label -1 is out of range for 4 classes"),
    ([[0], [1], [2]], ValueError,
     r"cross_entropy: labels must have shape \(3,\) to match logits \(3, 4\), got \(3, 1\)"),
    ([0, 1], ValueError, r"labels must have shape \(3,\) to match logits \(3, 4\), got \(2,\)"),
    ([0.0, 1.0, 2.0], TypeError, r"cross_entropy: labels must be integers .*got dtype float64"),
])
def test_cross_entropy_bad_labels(device, labels, error, match):
    x = mm.tensor(_any((3, 4)), device=device)
    with pytest.raises(error, match=match):
        F.cross_entropy(x, mm.tensor(np.array(labels), device=device).data)
    with pytest.raises(error, match=match):
        F.cross_entropy_simple(x, np.array(labels))


def test_cross_entropy_bad_logits(device):
    with pytest.raises(ValueError, match=r"cross_entropy: logits must have shape \(N, C\), got \(4,\)"):
        F.cross_entropy(mm.tensor(np.zeros(4), device=device), np.array([1]))


# --- cross-entropy's PyTorch options: ignore_index and label_smoothing -------------------------

def _np_cross_entropy_options(a, t, ignore_index, eps):
    """PyTorch's definition row by row: over the rows whose target is not ignored,
    mean of (1 − ε)(−log p[t]) + ε · (1/C) Σ_c (−log p[c]); NaN when no row is left."""
    C = a.shape[1]
    losses = []
    for row, target in zip(a, t):
        if target == ignore_index:
            continue
        log_p = row - row.max() - np.log(np.exp(row - row.max()).sum())
        losses.append((1 - eps) * -log_p[target] + eps * -log_p.sum() / C)
    return sum(losses) / len(losses) if losses else np.nan


def _np_cross_entropy_options_grad(a, t, ignore_index, eps):
    """∂L/∂x = (softmax − q) / N_kept on the kept rows, q = (1 − ε) onehot + ε / C; 0 elsewhere."""
    N, C = a.shape
    keep = t != ignore_index
    q = np.full((N, C), eps / C)
    q[np.arange(N), np.where(keep, t, 0)] += 1 - eps
    g = (_np_softmax(a, 1) - q) * keep[:, None]
    return g / max(keep.sum(), 1)


CE_OPTIONS = [  # (N, C, labels, ignore_index, label_smoothing)
    (4, 3, [0, -100, 2, 1], -100, 0.0),
    (5, 4, [3, 1, -100, -100, 0], -100, 0.1),
    (3, 5, [4, 0, 2], -100, 0.25),
    (4, 3, [0, 1, 0, 2], 0, 0.0),              # ignore_index may be a class: class 0 is ignored
    (6, 2, [1, 7, 0, 7, 1, 1], 7, 0.2),
    (2, 4, [1, 3], -100, 1.0),                 # all smoothing: the mean of −log p
]


@pytest.mark.parametrize("n,c,labels,ignore,eps", CE_OPTIONS)
def test_cross_entropy_ignore_index_and_label_smoothing(device, n, c, labels, ignore, eps):
    r = _rng(n + c)
    a = r.standard_normal((n, c)) * 2
    t = np.array(labels)
    kw = dict(ignore_index=ignore, label_smoothing=eps)
    want = _np_cross_entropy_options(a, t, ignore, eps)
    want_grad = _np_cross_entropy_options_grad(a, t, ignore, eps)
    labels_d = mm.tensor(t, device=device).data
    for loss_fn in (F.cross_entropy, F.cross_entropy_simple):
        x = mm.tensor(a, requires_grad=True, device=device)
        loss = loss_fn(x, labels_d, **kw)
        assert loss.shape == ()
        _close(loss, want)
        loss.backward()
        assert x.grad.shape == (n, c)
        _close(x.grad, want_grad)
    assert mm.gradcheck(lambda z: F.cross_entropy(z, labels_d, **kw), _on(device, a))
    assert mm.gradgradcheck(lambda z: F.cross_entropy(z, labels_d, **kw), _on(device, a))


def test_cross_entropy_options_match_torch(device):
    torch = pytest.importorskip("torch")
    r = _rng(21)
    for n, c, labels, ignore, eps in CE_OPTIONS:
        a = r.standard_normal((n, c)) * 3
        x = mm.tensor(a, requires_grad=True, device=device)
        loss = F.cross_entropy(x, np.array(labels), ignore_index=ignore, label_smoothing=eps)
        loss.backward()
        tx = torch.tensor(a, requires_grad=True)
        t_loss = torch.nn.functional.cross_entropy(tx, torch.tensor(labels), ignore_index=ignore,
                                                   label_smoothing=eps)
        t_loss.backward()
        _close(loss, t_loss.item())
        _close(x.grad, tx.grad.numpy())


def test_cross_entropy_with_every_target_ignored_is_nan_with_zero_gradient(device):
    """As PyTorch: the mean over no targets is NaN, and nothing is learnt (zero gradient)."""
    a = _any((3, 4))
    for loss_fn in (F.cross_entropy, F.cross_entropy_simple):
        for eps in (0.0, 0.1):
            x = mm.tensor(a, requires_grad=True, device=device)
            loss = loss_fn(x, np.full(3, -100), label_smoothing=eps)
            assert np.isnan(loss.numpy())
            loss.backward()
            np.testing.assert_array_equal(x.grad.numpy(), np.zeros((3, 4)))


def test_cross_entropy_ignored_rows_may_hold_anything(device):
    """An ignored row's logits (padding positions, say) change neither the loss nor, even when
    they are NaN, the gradient of the other rows."""
    a = _any((3, 4))
    t = np.array([2, -100, 0])
    clean = F.cross_entropy(mm.tensor(a, device=device), t).numpy()
    a[1] = np.nan
    x = mm.tensor(a, requires_grad=True, device=device)
    loss = F.cross_entropy(x, t)
    _close(loss, clean)
    loss.backward()
    g = x.grad.numpy()
    assert np.isfinite(g[[0, 2]]).all() and not g[1].any()


@pytest.mark.parametrize("kw,error,match", [
    (dict(label_smoothing=-0.1), ValueError, r"cross_entropy: label_smoothing must be in \[0, 1\], "
                                             r"got -0\.1"),
    (dict(label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\], got 1\.5"),
    (dict(ignore_index=1.0), TypeError, r"cross_entropy: ignore_index must be an int, got 1\.0"),
    (dict(ignore_index=2), ValueError, r"cross_entropy: label -100 is out of range for 4 classes"),
])
def test_cross_entropy_bad_options(device, kw, error, match):
    x = mm.tensor(_any((3, 4)), device=device)
    for loss_fn in (F.cross_entropy, F.cross_entropy_simple):
        with pytest.raises(error, match=match):
            loss_fn(x, np.array([0, -100, 2]), **kw)


def test_softmax_and_cross_entropy_match_torch(device):
    torch = pytest.importorskip("torch")
    a = _any((3, 5), seed=11) * 2
    t = np.array([4, 0, 2])
    x = mm.tensor(a, requires_grad=True, device=device)
    tx = torch.tensor(a, requires_grad=True)
    F.cross_entropy(x, t).backward()
    torch.nn.functional.cross_entropy(tx, torch.tensor(t)).backward()
    _close(x.grad, tx.grad.numpy())
    x.zero_grad()
    gy = _any((3, 5), seed=12)
    F.softmax(x, axis=1).backward(gy)
    tx.grad = None
    torch.softmax(tx, dim=1).backward(torch.tensor(gy))
    _close(x.grad, tx.grad.numpy())


# --- property tests: broadcasting gradients on random (and non-contiguous) layouts ---------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _broadcast_operands(draw):
    """Two arrays whose shapes broadcast: dims of the output shape, some set to 1 or dropped;
    each array is built transposed and transposed back about half the time (non-contiguous)."""
    out = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    arrays = []
    for k in range(2):
        shape = [1 if draw(st.booleans()) else s for s in out]
        shape = shape[draw(st.integers(0, len(shape))):]
        seed = draw(st.integers(0, 2 ** 16))
        a = _any(tuple(shape), seed=seed)
        if draw(st.booleans()) and a.ndim > 1:
            a = np.ascontiguousarray(a.T).T  # same values, Fortran (non-C-contiguous) layout
        arrays.append(a)
    return arrays


_PROPERTY = settings(max_examples=20, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(operands=_broadcast_operands(), op=st.sampled_from(["add", "sub", "mul", "div"]))
def test_property_broadcast_gradients(device, operands, op):
    a, b = operands
    if op == "div":
        b = np.abs(b)
    f, oracle = BINARY[op][0], BINARY[op][1]
    y = f(mm.tensor(a, device=device), mm.tensor(b, device=device))
    _close(y, oracle(a, b))
    assert mm.gradcheck(f, _on(device, a, b))


@_PROPERTY
@given(operands=_broadcast_operands())
def test_property_broadcast_gradient_is_sum_over_broadcast_axes(device, operands):
    """∂Σ(a·b)/∂a is b broadcast to the output, then summed back to a's shape."""
    a, b = operands
    x = mm.tensor(a, requires_grad=True, device=device)
    w = mm.tensor(b, requires_grad=True, device=device)
    (x * w).sum().backward()
    out = np.broadcast_shapes(a.shape, b.shape)

    def sum_to(g, shape):
        lead = g.ndim - len(shape)
        g = g.sum(axis=tuple(range(lead)))
        return g.sum(axis=tuple(i for i, s in enumerate(shape) if s == 1), keepdims=True)

    assert x.grad.shape == a.shape and w.grad.shape == b.shape
    _close(x.grad, sum_to(np.broadcast_to(b, out), a.shape).reshape(a.shape))
    _close(w.grad, sum_to(np.broadcast_to(a, out), b.shape).reshape(b.shape))


def test_tensors_hash_by_identity():
    """``==`` is elementwise (it returns a Tensor), yet a Tensor stays a set member and a dict
    key by identity, as in PyTorch: attaching __eq__ after the class exists keeps
    object.__hash__, so no __hash__ line is needed."""
    a, b = mm.tensor([1.0, 2.0]), mm.tensor([1.0, 2.0])
    assert hash(a) == object.__hash__(a)
    assert len({a, b, a}) == 2 and {a: "a", b: "b"}[b] == "b"
    assert isinstance(a == b, mm.Tensor)
