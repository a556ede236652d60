"""Activations and the softmax family.

Each function is accurate in its tails as well as near 0: σ(x) for x = −40 is 4.2e-18, not 0;
softplus, log σ, GELU and log Σ e^x keep their tiny values relative-accurate too. The softmax
family subtracts the row maximum before exponentiating, so every finite input, 3e38 in float32
included, gives finite results.

Dtypes (as PyTorch): integer or boolean input to sigmoid, tanh, softplus and logsumexp is
promoted to float32; softmax, log_softmax and gelu refuse it (``TypeError``); relu keeps it.
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor, is_grad_enabled
from .math import exp, sum
from .shape import broadcast_to, reshape
from .special import normal_cdf_array, normal_pdf_array
from .utils import as_float, check_float, constant_mask, keepdims_shape, reduction_axes

_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


class ReLU(Function):
    """y = max(x, 0);  ∂y/∂x = 1 where x > 0, else 0."""

    def forward(self, x):
        return backend.get_array_module(x).maximum(x, x.dtype.type(0))

    def backward(self, gy):
        x, = self.inputs
        if is_grad_enabled():   # create_graph: gy · mask as a (differentiable) product
            return gy * constant_mask(x.data > 0, gy.data)
        # a plain backward needs no graph: the mask, cast to gy's dtype, is multiplied in
        # place — one fresh array instead of two
        g = (x.data > 0).astype(gy.dtype)
        g *= gy.data
        return Tensor(g)


class Sigmoid(Function):
    """y = σ(x) = 1 / (1 + e⁻ˣ);  ∂y/∂x = y (1 − y).

    Computed as 1 / (1 + e^{−|x|}) for x ≥ 0 and e^{x} / (1 + e^{x}) for x < 0: the exponential
    never overflows and nothing cancels, so σ(−40) = 4.2e-18 (½ tanh(x/2) + ½ would give 0).
    """

    def forward(self, x):
        xp = backend.get_array_module(x)
        x = as_float(x)
        e = xp.exp(-abs(x))                                  # e^{−|x|} ∈ (0, 1]
        r = 1 / (1 + e)                                      # σ(|x|)
        e *= r                                               # e^{−|x|} / (1 + e^{−|x|}) = σ(−|x|)
        # NumPy 1.x: a 0-d float32 with a Python number is float64, so cast back
        return xp.where(x >= 0, r, e).astype(x.dtype, copy=False)

    def backward(self, gy):
        y, = self.outputs()
        return gy * y * (1 - y)


class Tanh(Function):
    """y = tanh x;  ∂y/∂x = 1 − y²."""

    def forward(self, x):
        return backend.get_array_module(x).tanh(as_float(x))

    def backward(self, gy):
        y, = self.outputs()
        return gy * (1 - y * y)


class Softplus(Function):
    """y = log(1 + eˣ) = max(x, 0) + log(1 + e^{−|x|});  ∂y/∂x = σ(x).

    The second form never overflows, and log1p keeps e^{x} ≪ 1 exact: softplus(−40) = 4.2e-18.
    """

    def forward(self, x):
        xp = backend.get_array_module(x)
        x = as_float(x)
        return (xp.maximum(x, 0) + xp.log1p(xp.exp(-abs(x)))).astype(x.dtype, copy=False)

    def backward(self, gy):
        x, = self.inputs
        return gy * sigmoid(x)


def relu(x):
    return ReLU()(x)


def sigmoid(x):
    return Sigmoid()(x)


def tanh(x):
    return Tanh()(x)


def softplus(x):
    """log(1 + eˣ), accurate for every x (as ``torch.nn.functional.softplus``)."""
    return Softplus()(x)


def log_sigmoid(x):
    """log σ(x) = −softplus(−x): finite where log(sigmoid(x)) would be −inf (x = −800, say)."""
    return -softplus(-as_tensor(x))


# -- GELU -------------------------------------------------------------------------------------
class GELU(Function):
    """y = x Φ(x), Φ the standard normal CDF;  ∂y/∂x = Φ(x) + x φ(x), φ(x) = e^{−x²/2}/√(2π).

    The derivative is its own Function (:class:`GELUGrad`) computed from the same Φ as the
    forward, so finite differences of the forward agree with it to Φ's accuracy.
    """

    def forward(self, x):
        return (x * normal_cdf_array(x)).astype(x.dtype, copy=False)

    def backward(self, gy):
        x, = self.inputs
        return gy * GELUGrad()(x)


class GELUGrad(Function):
    """y = Φ(x) + x φ(x) (GELU's derivative);  ∂y/∂x = 2φ(x) − x² φ(x) = φ(x)(2 − x²)."""

    def forward(self, x):
        return (normal_cdf_array(x) + x * normal_pdf_array(x)).astype(x.dtype, copy=False)

    def backward(self, gy):
        x, = self.inputs
        phi = exp(x * x * -0.5) * _INV_SQRT_2PI
        return gy * phi * (2.0 - x * x)


def gelu(x, approximate="none"):
    """GELU(x) = x Φ(x) (``approximate="none"``, exact) or the tanh approximation
    ½ x (1 + tanh(u)), u = √(2/π) (x + 0.044715 x³) (``approximate="tanh"``), as in PyTorch.

    The approximation is computed as x σ(2u), the same number (1 + tanh u = 2σ(2u)) without
    the cancellation of 1 + tanh u for large negative x.
    """
    x = as_tensor(x)
    check_float("gelu", x)
    if approximate == "none":
        return GELU()(x)
    if approximate == "tanh":
        return x * sigmoid((x + x * x * x * 0.044715) * (2 * _SQRT_2_OVER_PI))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# -- the softmax family -------------------------------------------------------------------------
class Softmax(Function):
    """yᵢ = mᵢ e^{xᵢ − M} / Σⱼ mⱼ e^{xⱼ − M} along ``axis``, M = max of the allowed xⱼ, for a
    constant boolean mask m (``allowed``; None allows everything, the plain softmax). A row
    with nothing allowed gives y = 0, not 0/0 = NaN.

    ∂L/∂x = y ⊙ (gy − Σ gy ⊙ y): the softmax derivative; it is zero wherever y is, so masked
    entries and fully masked rows get zero (finite) gradients.

    Attention runs the same numbers through a faster kernel, ``attention_fast.FastSoftmax``.
    """

    def __init__(self, axis=-1, allowed=None):
        self.axis, self.allowed = axis, allowed

    def forward(self, x):
        xp = backend.get_array_module(x)
        if x.size == 0:                                  # an empty axis: nothing to normalise
            return x.copy()
        if self.allowed is not None:
            x = xp.where(self.allowed, x, x.dtype.type(-np.inf))   # e^{−∞} = 0 where masked
        M = x.max(axis=self.axis, keepdims=True)
        if self.allowed is not None:                     # a fully masked row has no maximum
            M = xp.where(xp.isfinite(M), M, x.dtype.type(0))
        # x − M = −∞ is right (e^{−∞} = 0); ∞ − ∞ = NaN for a row holding +∞, as in PyTorch
        with np.errstate(over="ignore", invalid="ignore"):
            e = xp.exp(x - M)
        s = e.sum(axis=self.axis, keepdims=True)
        if self.allowed is not None:
            s = xp.where(s > 0, s, s.dtype.type(1))      # fully masked row: 0 / 1 = 0
        return e / s

    def backward(self, gy):
        y, = self.outputs()
        return y * (gy - sum(gy * y, axis=self.axis, keepdims=True))


def _row_max(x, axes):
    """max over ``axes`` (keepdims), or 0 where it is not finite or the axis is empty: the shift
    that makes e^{x − M} safe (a row of −∞ or +∞ then gives −∞ or +∞ as PyTorch, not NaN)."""
    xp = backend.get_array_module(x)
    if any(x.shape[a] == 0 for a in axes):
        return xp.zeros(keepdims_shape(x.shape, axes), dtype=x.dtype)
    M = x.max(axis=axes, keepdims=True)
    return xp.where(xp.isfinite(M), M, x.dtype.type(0))


def _log_normaliser(shifted, axes):
    """log Σⱼ e^{shifted_j} over ``axes`` (keepdims), for ``shifted`` = x − max x.

    The k maxima contribute e⁰ = 1 each and the other entries sum to r, so the sum is k + r,
    and log(k + r) = log k + log1p(r / k) keeps a tiny r exact: logsumexp([0, −40]) = 4.2e-18,
    where log(1 + r) would round to 0. An empty axis gives log 0 = −∞.
    """
    xp = backend.get_array_module(shifted)
    top = shifted == 0
    k = top.sum(axis=axes, keepdims=True).astype(shifted.dtype)
    r = xp.exp(shifted)
    xp.copyto(r, 0, where=top)                           # the rest: the maxima's e⁰ left out
    r = r.sum(axis=axes, keepdims=True)
    k1 = xp.maximum(k, 1)
    with np.errstate(divide="ignore"):                   # log 0 = −∞ is the right answer
        log_z = xp.where(k > 0, xp.log(k1) + xp.log1p(r / k1),
                         xp.log(k + r))  # k = 0: an empty row (−∞), or one of ±∞
    return log_z.astype(shifted.dtype, copy=False)      # (NumPy 1.x: 0-d float32 promotes)


def log_softmax_parts(x, axis):
    """(x − m, log Σ e^{x − m}) of a raw array along ``axis`` (keepdims), m the maximum: their
    difference is log softmax (the forward of :class:`LogSoftmax`); the fused cross-entropy
    takes the few entries it needs from the two parts."""
    axes = reduction_axes(axis, x.ndim)
    with np.errstate(over="ignore", invalid="ignore"):   # as in Softmax.forward
        shifted = x - _row_max(x, axes)
        return shifted, _log_normaliser(shifted, axes)


class LogSoftmax(Function):
    """yᵢ = (xᵢ − m) − log Σⱼ e^{xⱼ − m};  ∂L/∂x = gy − softmax(x) Σ gy, softmax(x) = eʸ."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        if x.size == 0:
            return x.copy()
        shifted, log_z = log_softmax_parts(x, self.axis)
        with np.errstate(invalid="ignore"):              # ∞ − ∞ = NaN, as in PyTorch
            return shifted - log_z

    def backward(self, gy):
        y, = self.outputs()
        return gy - exp(y) * sum(gy, axis=self.axis, keepdims=True)


class LogSumExp(Function):
    """y = m + log Σ e^{x − m};  ∂y/∂x = e^{x − y} = softmax(x). Over an empty axis, −∞."""

    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        x = as_float(x)
        self.axes = reduction_axes(self.axis, x.ndim)
        m = _row_max(x, self.axes)
        with np.errstate(over="ignore"):
            y = m + _log_normaliser(x - m, self.axes)
        return y if self.keepdims else y.reshape(
            [s for i, s in enumerate(x.shape) if i not in self.axes])

    def backward(self, gy):
        x, = self.inputs
        if x.size == 0:
            return Tensor(backend.get_array_module(x).zeros(x.shape, dtype=gy.dtype))
        shape = keepdims_shape(x.shape, self.axes)
        # softmax(x) = e^{x − m} / Σ e^{x − m} rather than e^{x − y}: at 3e38, y = m + log Σ
        # rounds to m in float32 and e^{x − y} would give 1 to every tied maximum
        with np.errstate(over="ignore"):
            e = exp(x - Tensor(_row_max(x.data, self.axes)))
        softmax_x = e / sum(e, axis=self.axes, keepdims=True)
        return broadcast_to(reshape(gy, shape), x.shape) * softmax_x


def softmax(x, axis=-1):
    x = as_tensor(x)
    check_float("softmax", x)
    return Softmax(axis)(x)


def log_softmax(x, axis=-1):
    x = as_tensor(x)
    check_float("log_softmax", x)
    return LogSoftmax(axis)(x)


def logsumexp(x, axis=None, keepdims=False):
    return LogSumExp(axis, keepdims)(x)
