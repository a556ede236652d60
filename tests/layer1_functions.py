"""Three Functions written against layer 1 alone (``minimm.autograd``): no operator of
``minimm.functional`` appears in a forward or a backward, so a graph built from them shows
whether the engine itself needs layer 2 (it must not).

A test imports this file either normally or in a process where ``minimm.functional`` was
never imported (tests/test_autograd.py).
"""
from minimm import backend
from minimm.autograd import Function


class Mul(Function):
    """y = a · b (same shapes); ∂y/∂a = b, ∂y/∂b = a."""

    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        return Mul()(gy, b), Mul()(gy, a)


class SumAll(Function):
    """y = Σ x (a scalar); the gradient is gy copied to every element."""

    def forward(self, x):
        return x.sum()

    def backward(self, gy):
        x, = self.inputs
        return Expand(x.shape)(gy)


class Expand(Function):
    """y = the scalar x copied into ``shape``; the gradient is Σ gy."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        return backend.get_array_module(x).broadcast_to(x, self.shape).copy()

    def backward(self, gy):
        return SumAll()(gy)


def fifth_power_sum(x):
    """y = Σ x⁵ as Mul(Mul(h, h), x) with h = Mul(x, x): h is used twice by one Function and
    x by two, so gradients must be summed at both; dy/dx = 5x⁴, d²(Σ dy/dx)/dx² = 20x³."""
    h = Mul()(x, x)
    return SumAll()(Mul()(Mul()(h, h), x))


def check_fifth_power_sum(x, grad, close):
    """Gradients of Σx⁵ at the float64 leaf ``x`` by backward and ``grad``, plain and with
    create_graph, accumulated over two calls; ``close(tensor, expected)`` asserts."""
    a = x.numpy()
    fifth_power_sum(x).backward()
    fifth_power_sum(x).backward()                      # .grad accumulates over calls
    close(x.grad, 2 * 5 * a ** 4)
    assert not x.grad.requires_grad
    x.grad = None
    fifth_power_sum(x).backward(create_graph=True)
    fifth_power_sum(x).backward(create_graph=True)     # summed by _Accumulate: a graph
    assert x.grad.requires_grad
    close(x.grad, 2 * 5 * a ** 4)
    x.grad = None
    g, = grad(fifth_power_sum(x), [x], create_graph=True)
    close(g, 5 * a ** 4)
    gg, = grad(SumAll()(g), [x])
    close(gg, 20 * a ** 3)
