"""The autograd engine: graph, accumulation, higher-order gradients, no_grad, dtypes."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minimm as mm
from minimm import autograd
from minimm import functional as F

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TESTS)
import layer1_functions as L1  # noqa: E402


def _close(y, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(mm.to_numpy(y), expected, rtol=rtol, atol=atol)


def test_reused_node_gets_summed_gradient(device):
    x = mm.tensor(3.0, requires_grad=True, device=device)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward()
    _close(x.grad, 7.0)
    a = mm.tensor([1.0, -2.0], requires_grad=True, device=device)
    (a + a + a).sum().backward()
    _close(a.grad, [3.0, 3.0])


def test_diamond_graph(device):
    """x feeds two branches that meet again; both paths contribute."""
    x = mm.tensor(0.5, dtype=np.float64, requires_grad=True, device=device)
    a = F.exp(x)
    b = a * 2.0
    c = a * a
    (b + c * b).backward()  # y = 2e^x + 2e^{3x}
    _close(x.grad, 2 * np.exp(0.5) + 6 * np.exp(1.5))


def test_gradients_accumulate_and_zero_grad(device):
    x = mm.tensor([1.0, 2.0], requires_grad=True, device=device)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    _close(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None
    (x * x).sum().backward()
    _close(x.grad, [2.0, 4.0])


def test_backward_twice_on_same_graph_accumulates(device):
    x = mm.tensor(2.0, requires_grad=True, device=device)
    y = x ** 3
    y.backward()
    y.backward()
    _close(x.grad, 24.0)


def test_backward_on_non_scalar_needs_grad(device):
    x = mm.tensor(np.ones((2, 3)), requires_grad=True, device=device)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"backward: grad can be implicitly created only for "
                                           r"a scalar, but this tensor has shape \(2, 3\)"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"backward: grad has shape \(3,\) but the tensor has "
                                           r"shape \(2, 3\)"):
        y.backward(np.ones(3))
    y.backward(mm.tensor(np.arange(6.0).reshape(2, 3), device=device))
    _close(x.grad, 2 * np.arange(6.0).reshape(2, 3))


def test_size_one_tensor_backward_without_grad(device):
    x = mm.tensor([[2.0]], requires_grad=True, device=device)
    (x * x).backward()
    _close(x.grad, [[4.0]])


@pytest.mark.parametrize("n", [5000, 20000])
def test_deep_chain(device, n):
    """Topological order is iterative: no recursion limit on deep graphs."""
    x = mm.tensor(1.0, requires_grad=True, device=device)
    y = x
    for _ in range(n):
        y = y * 1.0001
    y.backward()
    assert y.creator is not None
    _close(x.grad, 1.0001 ** n, rtol=1e-3)


def test_deep_chain_of_mixed_ops(device):
    x = mm.tensor(0.3, dtype=np.float64, requires_grad=True, device=device)
    y = x
    for _ in range(2500):  # y ← tanh(y) + y·0 … 5,000 ops; derivative by the chain rule
        y = F.tanh(y) + 0.0
    y.backward()
    v, d = 0.3, 1.0
    for _ in range(2500):
        v = np.tanh(v)
        d *= 1 - v * v
    _close(y, v)
    _close(x.grad, d, rtol=1e-8)


def test_no_grad_records_nothing(device):
    x = mm.tensor([1.0, 2.0], requires_grad=True, device=device)
    with mm.no_grad():
        y = (x * 2.0).sum()
        with mm.enable_grad():
            z = (x * 2.0).sum()
        assert not mm.is_grad_enabled()
    assert mm.is_grad_enabled()
    assert y.creator is None and not y.requires_grad
    assert z.creator is not None and z.requires_grad
    with pytest.raises(RuntimeError, match="computed under mm.no_grad"):
        y.backward()  # no graph: nothing could receive a gradient, so it refuses (as PyTorch)
    assert x.grad is None


def test_no_grad_restored_after_exception(device):
    with pytest.raises(ZeroDivisionError):
        with mm.no_grad():
            1 / 0
    assert mm.is_grad_enabled()


def test_detach(device):
    x = mm.tensor([1.0, 2.0], requires_grad=True, device=device)
    y = x * 3.0
    d = y.detach()
    assert d.creator is None and not d.requires_grad and d.is_leaf
    _close(d, [3.0, 6.0])
    (y * d).sum().backward()  # d is a constant: ∂/∂x (3x · 3x_const) = 3·d
    _close(x.grad, [9.0, 18.0])


def test_requires_grad_propagation(device):
    a = mm.tensor([1.0], requires_grad=True, device=device)
    b = mm.tensor([2.0], device=device)
    assert (a * b).requires_grad and (b * a).requires_grad
    c = b * b
    assert not c.requires_grad and c.creator is None
    assert not b.requires_grad and b.is_leaf
    y = a * 2.0
    assert not y.is_leaf and y.requires_grad
    b.requires_grad_()
    (a * b).sum().backward()
    _close(b.grad, [1.0])


def test_only_needed_gradients_computed(device):
    """A Function sees needs_input_grad and the constant input gets no .grad."""
    seen = {}

    class Probe(mm.Function):
        def forward(self, a, b):
            return a * b

        def backward(self, gy):
            seen["needs"] = self.needs_input_grad
            a, b = self.inputs
            return gy * b, (gy * a if self.needs_input_grad[1] else None)

    a = mm.tensor([2.0], requires_grad=True, device=device)
    b = mm.tensor([5.0], device=device)
    Probe()(a, b).sum().backward()
    assert seen["needs"] == (True, False)
    _close(a.grad, [5.0])
    assert b.grad is None


def test_second_derivative_of_tanh(device):
    """d/dx tanh = 1 − tanh², d²/dx² tanh = −2 tanh (1 − tanh²)."""
    a = np.array([-2.0, -0.3, 0.0, 0.7, 1.5])
    x = mm.tensor(a, requires_grad=True, device=device)
    y = F.tanh(x)
    y.sum().backward(create_graph=True)
    t = np.tanh(a)
    _close(x.grad, 1 - t * t)
    assert x.grad.requires_grad  # a graph was recorded
    g = x.grad
    x.zero_grad()
    g.sum().backward()
    _close(x.grad, -2 * t * (1 - t * t))


def test_third_derivative_via_grad(device):
    x = mm.tensor(1.3, dtype=np.float64, requires_grad=True, device=device)
    y = x ** 4
    g1 = mm.grad(y, x, create_graph=True)
    g2 = mm.grad(g1, x, create_graph=True)
    g3 = mm.grad(g2, x)
    _close(g1, 4 * 1.3 ** 3)
    _close(g2, 12 * 1.3 ** 2)
    _close(g3, 24 * 1.3)
    assert x.grad is None  # mm.grad touches no .grad


def test_backward_without_create_graph_records_nothing(device):
    x = mm.tensor([0.5, 1.0], requires_grad=True, device=device)
    F.tanh(x).sum().backward()
    assert not x.grad.requires_grad and x.grad.creator is None


def _f(x, A):
    """f(x) = Σ tanh(x)·x² + xᵀ A x (a small function with a non-diagonal Hessian)."""
    return (F.tanh(x) * x * x).sum() + x @ (A @ x)


def test_hessian_vector_product_against_finite_differences(device):
    r = np.random.default_rng(3)
    a = r.standard_normal(4)
    v = r.standard_normal(4)
    A = mm.tensor(r.standard_normal((4, 4)), device=device)
    x = mm.tensor(a, requires_grad=True, device=device)
    g = mm.grad(_f(x, A), x, create_graph=True)
    hv = mm.grad((g * mm.tensor(v, device=device)).sum(), x)

    def gradient(point):
        p = mm.tensor(point, requires_grad=True, device=device)
        return mm.to_numpy(mm.grad(_f(p, A), p))

    eps = 1e-5
    numeric = (gradient(a + eps * v) - gradient(a - eps * v)) / (2 * eps)
    _close(hv, numeric, rtol=1e-6, atol=1e-8)
    # and the closed form: H = diag(d²/dx² tanh(x)x²) + A + Aᵀ
    t = np.tanh(a)
    s = 1 - t * t
    diag = -2 * t * s * a * a + 4 * s * a + 2 * t
    _close(hv, diag * v + (mm.to_numpy(A) + mm.to_numpy(A).T) @ v, rtol=1e-9)


def test_grad_api(device):
    x = mm.tensor([1.0, 2.0], requires_grad=True, device=device)
    w = mm.tensor([3.0, 4.0], requires_grad=True, device=device)
    unused = mm.tensor([1.0], requires_grad=True, device=device)
    y = (x * w).sum()
    gx, gw, gu = mm.grad(y, [x, w, unused])
    _close(gx, [3.0, 4.0])
    _close(gw, [1.0, 2.0])
    assert gu is None
    assert x.grad is None and w.grad is None
    # non-scalar output: grad_outputs required, and then used
    z = x * w
    with pytest.raises(RuntimeError, match=r"grad: grad_outputs needed for an output of shape \(2,\)"):
        mm.grad(z, x)
    _close(mm.grad(z, x, grad_outputs=mm.tensor([1.0, -1.0], device=device)), [3.0, -4.0])
    # several outputs add up
    _close(mm.grad([x.sum(), (x * x).sum()], x), [3.0, 5.0])


def test_retain_grad(device):
    x = mm.tensor([1.0, 2.0], requires_grad=True, device=device)
    h = (x * 3.0).retain_grad()
    other = x * 2.0  # not retained
    (h * h + other).sum().backward()
    _close(h.grad, [6.0, 12.0])
    _close(x.grad, [20.0, 38.0])
    assert other.grad is None


def test_unused_outputs_give_zero_gradient(device):
    x = mm.tensor(np.arange(4.0), requires_grad=True, device=device)
    first, second = mm.split(x, 2)
    (first * 2.0).sum().backward()
    _close(x.grad, [2.0, 2.0, 0.0, 0.0])
    del second
    x.zero_grad()
    first, _ = mm.split(x, [3, 1])
    first.sum().backward()
    _close(x.grad, [1.0, 1.0, 1.0, 0.0])


def test_comparisons_give_no_gradient_and_do_not_break_backward(device):
    x = mm.tensor([-1.0, 2.0, 3.0], requires_grad=True, device=device)
    mask = x > 0
    assert not mask.requires_grad and mask.creator is None
    y = (x * mask).sum() + (x == 2.0).sum() * 0.0
    y.backward()
    _close(x.grad, [0.0, 1.0, 1.0])


def test_wrongly_shaped_gradient_from_a_function_is_reported(device):
    class Bad(mm.Function):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy.sum()

    x = mm.tensor(np.ones(3), requires_grad=True, device=device)
    with pytest.raises(RuntimeError, match=r"gradient of shape \(\) for a tensor of shape \(3,\)"):
        Bad()(x).sum().backward()


# --- dtypes -------------------------------------------------------------------------------

F32_OPS = {  # name: (function of float32 tensors, input shapes, positive inputs?)
    "add": (lambda a, b: a + b, [(2, 3), (3,)], False),
    "sub": (lambda a, b: a - b, [(2, 3), (2, 1)], False),
    "mul": (lambda a, b: a * b, [(2, 3), ()], False),
    "div": (lambda a, b: a / b, [(2, 3), (3,)], True),
    "neg": (lambda a: -a, [(2, 3)], False),
    "pow": (lambda a: a ** 3, [(2, 3)], False),
    "pow_float": (lambda a: a ** 0.5, [(2, 3)], True),
    "pow_tensor": (lambda a, b: a ** b, [(2, 3), (3,)], True),
    "rpow": (lambda a: 2.0 ** a, [(2, 3)], False),
    "exp": (F.exp, [(2, 3)], False),
    "log": (F.log, [(2, 3)], True),
    "sqrt": (F.sqrt, [(2, 3)], True),
    "tanh": (F.tanh, [(2, 3)], False),
    "sigmoid": (F.sigmoid, [(2, 3)], False),
    "relu": (F.relu, [(2, 3)], False),
    "abs": (abs, [(2, 3)], False),
    "maximum": (F.maximum, [(2, 3), (3,)], False),
    "minimum": (F.minimum, [(2, 3), (2, 1)], False),
    "clip": (lambda a: F.clip(a, -0.5, 0.5), [(2, 3)], False),
    "matmul": (lambda a, b: a @ b, [(2, 3), (3, 4)], False),
    "matmul_1d": (lambda a, b: a @ b, [(3,), (3,)], False),
    "matmul_batched": (lambda a, b: a @ b, [(2, 2, 3), (3, 1)], False),
    "sum": (lambda a: a.sum(axis=1), [(2, 3)], False),
    "mean": (lambda a: a.mean(), [(2, 3)], False),
    "mean_axis": (lambda a: a.mean(axis=(0, 1), keepdims=True), [(2, 3)], False),
    "max": (lambda a: a.max(axis=0), [(2, 3)], False),
    "min": (lambda a: F.min(a), [(2, 3)], False),
    "reshape": (lambda a: a.reshape(3, 2), [(2, 3)], False),
    "transpose": (lambda a: a.T, [(2, 3)], False),
    "permute": (lambda a: a.transpose(1, 0, 2), [(2, 3, 1)], False),
    "getitem": (lambda a: a[1:, :2], [(2, 3)], False),
    "getitem_array": (lambda a: a[np.array([0, 0, 1])], [(2, 3)], False),
    "getitem_mask": (lambda a: a[a.data > 0], [(2, 3)], False),
    "concat": (lambda a, b: mm.concat([a, b], axis=1), [(2, 3), (2, 1)], False),
    "stack": (lambda a, b: mm.stack([a, b]), [(2, 3), (2, 3)], False),
    "split": (lambda a: mm.split(a, [1, 2], axis=1)[1], [(2, 3)], False),
    "broadcast_to": (lambda a: F.broadcast_to(a, (4, 3)), [(3,)], False),
    "where": (lambda a, b: mm.where(a.data > 0, a, b), [(2, 3), (3,)], False),
    "where_scalar": (lambda a: mm.where(a.data > 0, a, 0.0), [(2, 3)], False),
    "softmax": (F.softmax, [(2, 3)], False),
    "log_softmax": (lambda a: F.log_softmax(a, axis=0), [(2, 3)], False),
    "logsumexp": (lambda a: F.logsumexp(a, axis=1), [(2, 3)], False),
    "cross_entropy": (lambda a: F.cross_entropy(a, np.array([2, 0])), [(2, 3)], False),
    "cross_entropy_simple": (lambda a: F.cross_entropy_simple(a, np.array([2, 0])), [(2, 3)], False),
    # Python and NumPy scalars take the tensor's dtype (as in PyTorch): no float64 creeps in
    "py_float": (lambda a: a * 2.0 + 1.0 - 0.5 / (a * a + 1.0), [(2, 3)], False),
    "py_int": (lambda a: a * 2 + 1, [(2, 3)], False),
    "np_float64_scalar": (lambda a: a * np.float64(2.0) + np.float64(1.0), [(2, 3)], False),
    "np_float64_scalar_left": (lambda a: np.float64(3.0) - a, [(2, 3)], False),
    "mean_of_mul": (lambda a: (a * a).mean(axis=0) * 0.1, [(2, 3)], False),
}


@pytest.fixture
def casts(monkeypatch):
    """Records every gradient the engine had to cast back to its tensor's dtype: with float32
    operands only, no backward should have produced anything else."""
    seen = []
    original = autograd._Cast.__init__

    def record(self, dtype):
        seen.append(dtype)
        original(self, dtype)

    monkeypatch.setattr(autograd._Cast, "__init__", record)
    return seen


@pytest.mark.parametrize("name", list(F32_OPS))
def test_float32_stays_float32(device, name, casts):
    f, shapes, positive = F32_OPS[name]
    r = np.random.default_rng(1)
    arrays = [(r.uniform(0.5, 2.0, s) if positive else r.standard_normal(s)).astype(np.float32)
              for s in shapes]
    xs = [mm.tensor(a, requires_grad=True, device=device) for a in arrays]
    y = f(*xs)
    assert y.dtype == np.float32, f"{name}: forward gave {y.dtype}"
    y.backward(mm.tensor(np.ones(y.shape, np.float32), device=device))
    for i, x in enumerate(xs):
        assert x.grad is not None
        assert x.grad.dtype == np.float32, f"{name}: gradient of input {i} is {x.grad.dtype}"
        assert x.grad.shape == x.shape
    assert not casts, f"{name}: a backward produced a non-float32 gradient"


def test_float32_double_backward_stays_float32(device):
    x = mm.tensor(np.array([0.5, -1.0], np.float32), requires_grad=True, device=device)
    g = mm.grad((F.tanh(x) * F.sigmoid(x)).sum(), x, create_graph=True)
    gg = mm.grad(g.sum(), x)
    assert g.dtype == np.float32 and gg.dtype == np.float32


def test_float64_array_operand_promotes_forward_but_not_the_leaf_gradient(device):
    """A float64 *array* promotes the result (NumPy's rule, also PyTorch's); the float32
    leaf still receives a float32 gradient."""
    x = mm.tensor(np.ones(3, np.float32), requires_grad=True, device=device)
    c = mm.tensor(np.arange(3.0), device=device).data  # float64 array
    y = (x - c) ** 2
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    _close(x.grad, 2 * (1 - np.arange(3.0)))
    x.zero_grad()
    mm.concat([x, mm.tensor(np.ones(2), device=device)]).sum().backward()
    assert x.grad.dtype == np.float32


def test_tensor_dtype_rules(device):
    assert mm.tensor(1.5, device=device).dtype == np.float32
    assert mm.tensor([1.0, 2.0], device=device).dtype == np.float32
    assert mm.tensor([[1, 2.5]], device=device).dtype == np.float32
    assert mm.tensor([1, 2], device=device).dtype == np.int64
    assert mm.tensor(3, device=device).dtype == np.int64
    assert mm.tensor(True, device=device).dtype == np.bool_
    assert mm.tensor(np.ones(2), device=device).dtype == np.float64  # arrays keep their dtype
    assert mm.tensor(np.ones(2, np.float16), device=device).dtype == np.float16
    assert mm.tensor(np.ones(2, np.int32), device=device).dtype == np.int32
    assert mm.tensor([1, 2], dtype=np.float64, device=device).dtype == np.float64
    t = mm.tensor(np.arange(3.0), requires_grad=True, device=device)
    assert t.shape == (3,) and t.ndim == 1 and t.size == 3 and len(t) == 3
    assert t.device == device and t.is_leaf and t.requires_grad and t.grad is None
    np.testing.assert_array_equal(t.numpy(), [0.0, 1.0, 2.0])
    assert mm.tensor(2.5, device=device).item() == 2.5


def test_repr():
    x = mm.tensor([1.0, 2.5], requires_grad=True)
    assert repr(x) == "tensor([1.  2.5], dtype=float32, requires_grad=True)"
    assert repr(mm.tensor([[1, 2], [3, 4]])) == "tensor([[1 2]\n        [3 4]], dtype=int64)"
    assert repr(mm.tensor(3.0)) == "tensor(3.0, dtype=float32)"


def test_repr_on_device(device):
    r = repr(mm.tensor([1.0], device=device))
    assert r.startswith("tensor([1.], dtype=float32")
    assert ("device='cuda'" in r) == (device == "cuda")


def test_to(device):
    x = mm.tensor([1.0, 2.0], requires_grad=True, device=device)
    assert x.to(device) is x  # already there: the same leaf
    y = x.to("cpu")
    assert isinstance(y.data, np.ndarray) and y.device == "cpu"
    assert y.requires_grad and y.is_leaf
    np.testing.assert_array_equal(y.data, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"unknown device 'tpu': expected 'cpu' or 'cuda'"):
        x.to("tpu")


# Under NumPy 1.x a 0-d float32 array meeting a Python float gives float64 (value-based
# casting does not apply to 0-d arrays), so elementwise forwards are checked on 0-d inputs too.
UNARY_0D = {
    "exp": F.exp, "log": F.log, "sqrt": F.sqrt, "tanh": F.tanh, "sigmoid": F.sigmoid,
    "relu": F.relu, "abs": abs, "gelu": F.gelu, "gelu_tanh": lambda a: F.gelu(a, "tanh"),
    "pow": lambda a: a ** 1.5, "rpow": lambda a: 2.0 ** a, "scale": lambda a: a * 0.5 + 1.0,
    "clip": lambda a: F.clip(a, 0.0, 1.0), "softmax_1": lambda a: F.softmax(F.reshape(a, (1,))),
}


@pytest.mark.parametrize("name", list(UNARY_0D))
def test_float32_stays_float32_on_0d(device, name, casts):
    x = mm.tensor(np.float32(0.75), requires_grad=True, device=device)
    y = UNARY_0D[name](x)
    assert y.dtype == np.float32, f"{name}: forward gave {y.dtype}"
    y.sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.shape == ()
    assert not casts, f"{name}: a backward produced a non-float32 gradient"


def test_tensor_copies_its_input_like_torch_tensor(device, xp):
    a = xp.ones(3, dtype=np.float32)
    t = mm.tensor(a, device=device)
    t.data += 1                             # an optimiser's in-place step, say
    assert float(a.sum()) == 3.0 and float(t.data.sum()) == 6.0
    w = mm.Tensor(a)                        # wrapping shares the memory, on purpose
    w.data += 1
    assert float(a.sum()) == 6.0


# --- layer 1 on its own: gradients are summed without functional's operators ------------------

@pytest.mark.parametrize("shape", [(), (3,), (2, 3), (1, 4, 2)])
def test_accumulate_forward_gradcheck_and_gradgradcheck(device, shape):
    """_Accumulate, the engine's sum of two gradients of one shape: y = a + b, ∂y/∂a = ∂y/∂b = 1."""
    r = np.random.default_rng(len(shape))
    a, b = r.standard_normal(shape), r.standard_normal(shape)
    y = autograd._Accumulate()(mm.tensor(a, device=device), mm.tensor(b, device=device))
    _close(y, np.add(a, b))                                      # plain NumPy transcription
    inputs = [mm.tensor(a, device=device).data, mm.tensor(b, device=device).data]
    assert mm.gradcheck(lambda p, q: autograd._Accumulate()(p, q), inputs)
    assert mm.gradgradcheck(lambda p, q: autograd._Accumulate()(p, q) * (p * q), inputs)
    p = mm.tensor(a, requires_grad=True, device=device)
    q = mm.tensor(b, requires_grad=True, device=device)
    g = r.standard_normal(shape)
    ga, gb = mm.grad(autograd._Accumulate()(p, q), [p, q], mm.tensor(g, device=device))
    assert ga.shape == gb.shape == shape
    _close(ga, g)
    _close(gb, g)


def test_engine_sums_gradients_without_tensor_operators(device, monkeypatch):
    """No Tensor operator (attached by functional) is called by backward or grad while they sum
    the gradients of reused nodes, with or without create_graph."""
    calls = []

    def spy(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"the engine called Tensor.{name}")
        return refuse

    for name in ("__add__", "__radd__", "__mul__", "__rmul__", "__sub__", "__rsub__", "__neg__",
                 "sum", "reshape"):
        monkeypatch.setattr(mm.Tensor, name, spy(name))
    x = mm.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True, device=device)
    L1.check_fifth_power_sum(x, autograd.grad, lambda t, e: _close(t, e, rtol=1e-12))
    assert calls == []


def test_autograd_runs_with_only_layers_0_and_1_imported(tmp_path):
    """In a fresh process that imports minimm.backend and minimm.autograd only (not the package,
    whose __init__ loads functional), a graph of layer-1 Functions differentiates correctly."""
    script = tmp_path / "layer1_alone.py"
    script.write_text(
        "import pathlib, sys, types\n"
        "root, tests = sys.argv[1], sys.argv[2]\n"
        "package = types.ModuleType('minimm')\n"
        "package.__path__ = [str(pathlib.Path(root) / 'minimm')]\n"
        "sys.modules['minimm'] = package   # the package without its __init__: no layer 2\n"
        "from minimm import autograd\n"
        "sys.path.insert(0, tests)\n"
        "import numpy as np\n"
        "import layer1_functions as L1\n"
        "def close(t, expected):\n"
        "    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-12)\n"
        "x = autograd.tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)\n"
        "L1.check_fifth_power_sum(x, autograd.grad, close)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('minimm'))\n"
        "assert loaded == ['minimm', 'minimm.autograd', 'minimm.backend'], loaded\n"
        "print('layer 1 alone: ok')\n")
    root = os.path.dirname(TESTS)
    out = subprocess.run([sys.executable, str(script), root, TESTS], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "layer 1 alone: ok"
