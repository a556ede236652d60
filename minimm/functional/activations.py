"""Activations and the softmax family.

The softmax family subtracts the row maximum before exponentiating, so every finite input,
3e38 in float32 included, gives finite results.
"""
import contextlib

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, is_grad_enabled
from .math import _axes, _keepdims_shape, _mask, exp, sum
from .shape import broadcast_to, reshape


def _quiet(xp):
    """x − max can overflow to −inf for extreme logits; exp(−inf) = 0 is the right answer."""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()


class ReLU(Function):
    """y = max(x, 0);  ∂y/∂x = 1 where x > 0, else 0."""

    def forward(self, x):
        return backend.get_array_module(x).maximum(x, x.dtype.type(0))

    def backward(self, gy):
        x, = self.inputs
        if is_grad_enabled():   # create_graph: gy · mask as a (differentiable) product
            return gy * _mask(x.data > 0, gy.data)
        # a plain backward needs no graph: the mask, cast to gy's dtype, is multiplied in
        # place — one fresh array instead of two (ReLU's backward on the first conv layer's
        # 15 MB output is memory-bound, so that is a third of its time)
        g = (x.data > 0).astype(gy.dtype)
        g *= gy.data
        return Tensor(g)


class Sigmoid(Function):
    """y = 1 / (1 + e⁻ˣ) = ½ tanh(x/2) + ½ (no overflow);  ∂y/∂x = y (1 − y)."""

    def forward(self, x):
        y = backend.get_array_module(x).tanh(x * 0.5) * 0.5 + 0.5
        # NumPy 1.x: a 0-d float32 times a Python float is float64, so cast back
        return y.astype(x.dtype, copy=False) if x.dtype.kind == "f" else y

    def backward(self, gy):
        y, = self.outputs()
        return gy * y * (1 - y)


class Tanh(Function):
    """y = tanh x;  ∂y/∂x = 1 − y²."""

    def forward(self, x):
        return backend.get_array_module(x).tanh(x)

    def backward(self, gy):
        y, = self.outputs()
        return gy * (1 - y * y)


def relu(x):
    return ReLU()(x)


def sigmoid(x):
    return Sigmoid()(x)


def tanh(x):
    return Tanh()(x)


class Softmax(Function):
    """yᵢ = e^{xᵢ − m} / Σⱼ e^{xⱼ − m}, m = maxⱼ xⱼ;  ∂L/∂x = y ⊙ (gy − Σ gy ⊙ y)."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        with _quiet(xp):
            e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        return e / e.sum(axis=self.axis, keepdims=True)

    def backward(self, gy):
        y, = self.outputs()
        return y * (gy - sum(gy * y, axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """yᵢ = (xᵢ − m) − log Σⱼ e^{xⱼ − m};  ∂L/∂x = gy − softmax(x) Σ gy, softmax(x) = eʸ."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = backend.get_array_module(x)
        with _quiet(xp):
            shifted = x - x.max(axis=self.axis, keepdims=True)
            return shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))

    def backward(self, gy):
        y, = self.outputs()
        return gy - exp(y) * sum(gy, axis=self.axis, keepdims=True)


class LogSumExp(Function):
    """y = m + log Σ e^{x − m};  ∂y/∂x = e^{x − y} = softmax(x)."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.axes = _axes(self.axis, x.ndim)
        m = x.max(axis=self.axes, keepdims=True)
        with _quiet(xp):
            y = m + xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True))
        return y if self.keepdims else y.reshape(
            [s for i, s in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        x, = self.inputs
        shape = _keepdims_shape(x.shape, self.axes)
        # softmax(x) = e^{x − m} / Σ e^{x − m} rather than e^{x − y}: at 3e38, y = m + log Σ
        # rounds to m in float32 and e^{x − y} would give 1 to every tied maximum
        with _quiet(backend.get_array_module(x)):
            e = exp(x - Tensor(x.data.max(axis=self.axes, keepdims=True)))
        softmax_x = e / sum(e, axis=self.axes, keepdims=True)
        return broadcast_to(reshape(gy, shape), x.shape) * softmax_x


def softmax(x, axis=-1):
    return Softmax(axis)(x)


def log_softmax(x, axis=-1):
    return LogSoftmax(axis)(x)


def logsumexp(x, axis=None, keepdims=False):
    return LogSumExp(axis, keepdims)(x)
