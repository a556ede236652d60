"""Arithmetic, reductions and elementwise functions.

Every backward reads like the derivative: for ``y = f(x)`` it returns ``gy · ∂y/∂x``, summed
back to the input's shape where the forward broadcast (``sum_to``).
"""
from .. import backend
from ..autograd import Function, Tensor, as_tensor, promote
from .shape import broadcast_to, reshape, sum_to, swapaxes
from .utils import as_float, check_broadcast, constant_mask, keepdims_shape, reduction_axes


def _operands(a, b):
    """Two operands as Tensors under the dtype rules of :func:`minimm.autograd.promote`: a
    Python number takes the other operand's dtype, an integer or bool tensor meeting a float
    becomes float32 (as in PyTorch, where NumPy would give float64)."""
    return promote(a, b)


class _Binary(Function):
    op = ""

    def forward(self, a, b):
        if a.shape != b.shape:
            check_broadcast(self.op, a.shape, b.shape)
        return self.compute(a, b)


class Add(_Binary):
    """y = a + b;  ∂y/∂a = ∂y/∂b = 1."""
    op = "add"

    def compute(self, a, b):
        return a + b

    def backward(self, gy):
        a, b = self.inputs
        return sum_to(gy, a.shape), sum_to(gy, b.shape)


class Sub(_Binary):
    """y = a − b."""
    op = "sub"

    def compute(self, a, b):
        return a - b

    def backward(self, gy):
        a, b = self.inputs
        return sum_to(gy, a.shape), sum_to(-gy, b.shape)


class Mul(_Binary):
    """y = a · b;  ∂y/∂a = b, ∂y/∂b = a."""
    op = "mul"

    def compute(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy * b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(_Binary):
    """y = a / b;  ∂y/∂a = 1/b, ∂y/∂b = −a/b²."""
    op = "div"

    def compute(self, a, b):
        if a.dtype.kind in "biu" and b.dtype.kind in "biu":   # true division of integers:
            a, b = as_float(a), as_float(b)                    # float32, as in PyTorch
        return a / b

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy / b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(-gy * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


def add(a, b):
    return Add()(*_operands(a, b))


def sub(a, b):
    return Sub()(*_operands(a, b))


def mul(a, b):
    return Mul()(*_operands(a, b))


def div(a, b):
    return Div()(*_operands(a, b))


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


def neg(x):
    return Neg()(x)


class Pow(Function):
    """y = xᵖ for a constant p;  ∂y/∂x = p·xᵖ⁻¹. (Integers to an int power stay integers;
    to a float power they become float32, as in PyTorch.)"""

    def __init__(self, p):
        self.p = p

    def forward(self, x):
        if isinstance(self.p, float):
            x = as_float(x)
        return x ** x.dtype.type(self.p) if x.dtype.kind == "f" else x ** self.p

    def backward(self, gy):
        x, = self.inputs
        return gy * self.p * x ** (self.p - 1)


def pow(x, p):
    """``x ** p``; p a number. A Tensor exponent goes through exp(p·log x)."""
    if isinstance(p, Tensor):
        x, p = _operands(x, p)
        return exp(p * log(x))
    return Pow(p)(x)


class Exp(Function):
    """y = eˣ;  ∂y/∂x = y."""

    def forward(self, x):
        return backend.get_array_module(x).exp(as_float(x))

    def backward(self, gy):
        y, = self.outputs()
        return gy * y


class Log(Function):
    """y = ln x;  ∂y/∂x = 1/x."""

    def forward(self, x):
        return backend.get_array_module(x).log(as_float(x))

    def backward(self, gy):
        x, = self.inputs
        return gy / x


class Sqrt(Function):
    """y = √x;  ∂y/∂x = 1/(2y)."""

    def forward(self, x):
        return backend.get_array_module(x).sqrt(as_float(x))

    def backward(self, gy):
        y, = self.outputs()
        return gy * 0.5 / y


class Abs(Function):
    """y = |x|;  ∂y/∂x = sign(x) (0 at 0, as in PyTorch)."""

    def forward(self, x):
        return abs(x)

    def backward(self, gy):
        x, = self.inputs
        xp = backend.get_array_module(x)
        return gy * Tensor(xp.sign(x.data))


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def sqrt(x):
    return Sqrt()(x)


def abs_(x):
    return Abs()(x)


class Maximum(_Binary):
    """y = max(a, b) elementwise; the gradient goes to the larger input, halved on ties
    (what a central difference sees)."""
    op = "maximum"

    def compute(self, a, b):
        return backend.get_array_module(a, b).maximum(a, b)

    def backward(self, gy):
        a, b = self.inputs
        share = (constant_mask(a.data > b.data, gy.data)
                 + 0.5 * constant_mask(a.data == b.data, gy.data))
        return sum_to(gy * share, a.shape), sum_to(gy * (1 - share), b.shape)


def maximum(a, b):
    return Maximum()(*_operands(a, b))


def minimum(a, b):
    a, b = _operands(a, b)
    return -maximum(-a, -b)


class Clip(Function):
    """y = min(max(x, lo), hi);  ∂y/∂x = 1 inside [lo, hi], 0 outside."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return backend.get_array_module(x).clip(x, self.lo, self.hi).astype(x.dtype, copy=False)

    def backward(self, gy):
        x, = self.inputs
        inside = x.data == x.data  # all True, then narrowed
        if self.lo is not None:
            inside = inside & (x.data >= self.lo)
        if self.hi is not None:
            inside = inside & (x.data <= self.hi)
        return gy * constant_mask(inside, gy.data)


def clip(x, lo=None, hi=None):
    return Clip(lo, hi)(x)


class Where(Function):
    """y = a where cond else b; cond is a constant boolean array."""

    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        check_broadcast("where", a.shape, b.shape)
        check_broadcast("where", self.cond.shape, a.shape)
        return backend.get_array_module(a, b).where(self.cond, a, b)

    def backward(self, gy):
        a, b = self.inputs
        take_a = constant_mask(self.cond, gy.data)
        return sum_to(gy * take_a, a.shape), sum_to(gy * (1 - take_a), b.shape)


def where(cond, a, b):
    cond = backend.unwrap(cond)
    a, b = _operands(a, b)
    xp = backend.get_array_module(a, b)
    return Where(xp.asarray(cond, dtype=bool))(a, b)


class MatMul(Function):
    """Y = A @ B (batched, broadcasting; 1-D operands as in NumPy);
    ∂L/∂A = ∂L/∂Y · Bᵀ, ∂L/∂B = Aᵀ · ∂L/∂Y."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} "
                             f"and {b.shape}")
        k_a = a.shape[-1]
        k_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if k_a != k_b:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                             f"({k_a} columns vs {k_b} rows)")
        if a.ndim > 2 or b.ndim > 2:
            check_broadcast(f"matmul of {a.shape} and {b.shape} (batch dimensions)",
                            a.shape[:-2], b.shape[:-2])
        return backend.get_array_module(a, b).matmul(a, b)

    def backward(self, gy):
        a, b = self.inputs
        # 1-D operands are matrices with one row (a) or one column (b) for the derivative
        a2 = reshape(a, (1, -1)) if a.ndim == 1 else a
        b2 = reshape(b, (-1, 1)) if b.ndim == 1 else b
        gy_shape = list(gy.shape)
        if a.ndim == 1:
            gy_shape.insert(len(gy_shape) - (b.ndim > 1), 1)
        if b.ndim == 1:
            gy_shape.append(1)
        gy2 = reshape(gy, gy_shape)
        ga = gb = None
        if self.needs_input_grad[0]:
            ga = reshape(sum_to(matmul(gy2, swapaxes(b2, -1, -2)), a2.shape), a.shape)
        if self.needs_input_grad[1]:
            gb = reshape(sum_to(matmul(swapaxes(a2, -1, -2), gy2), b2.shape), b.shape)
        return ga, gb


def matmul(a, b):
    return MatMul()(*_operands(a, b))


class Sum(Function):
    """y = Σ x over ``axis``;  the gradient is gy copied back to every summed element."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = reduction_axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        x, = self.inputs
        return broadcast_to(reshape(gy, keepdims_shape(x.shape, self.axes)), x.shape)


def sum(x, axis=None, keepdims=False):
    return Sum(axis, keepdims)(x)


def mean(x, axis=None, keepdims=False):
    """Σ x / n over ``axis``; over an empty axis 0/0 = NaN, as in NumPy and PyTorch."""
    x = as_tensor(x)
    axes = reduction_axes(axis, x.ndim)
    n = 1
    for a in axes:
        n *= x.shape[a]
    return sum(x, axis, keepdims) * (1.0 / n if n else float("nan"))


class Max(Function):
    """y = max x over ``axis``; tied maxima share the gradient equally."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = reduction_axes(self.axis, x.ndim)
        if any(x.shape[a] == 0 for a in self.axes):
            raise ValueError(f"max: cannot reduce over an empty axis (input of shape "
                             f"{x.shape}, axis {self.axis}): a maximum needs a value")
        return x.max(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        x, = self.inputs
        y, = self.outputs()
        shape = keepdims_shape(x.shape, self.axes)
        is_max = (x.data == y.data.reshape(shape)).astype(x.dtype)
        share = Tensor(is_max / is_max.sum(axis=self.axes, keepdims=True))
        return broadcast_to(reshape(gy, shape), x.shape) * share


def max(x, axis=None, keepdims=False):
    return Max(axis, keepdims)(x)


def min(x, axis=None, keepdims=False):
    return -max(-as_tensor(x), axis, keepdims)


# Comparisons have no gradient: they return constant boolean Tensors.
def _compare(name):
    def compare(a, b):
        a, b = _operands(a, b)
        xp = backend.get_array_module(a, b)
        return Tensor(getattr(xp, name)(a.data, b.data))
    compare.__name__ = name
    return compare


equal, not_equal = _compare("equal"), _compare("not_equal")
less, less_equal = _compare("less"), _compare("less_equal")
greater, greater_equal = _compare("greater"), _compare("greater_equal")
