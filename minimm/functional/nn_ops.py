"""Layer operations without state: linear maps, GELU, dropout, embedding lookup.

The random generator used by :func:`dropout` (and by the initialisers in ``minimm.nn.init``)
lives here, the lowest layer that draws random numbers: :func:`manual_seed` resets it so a
whole run is reproducible.
"""
import math

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor
from .activations import tanh
from .math import exp, matmul, sum
from .shape import reshape, transpose

# -- the default random generator ---------------------------------------------------------------
_DEFAULT_RNG = [np.random.default_rng()]


def default_generator():
    """The module-level NumPy Generator used when a function gets ``rng=None``."""
    return _DEFAULT_RNG[0]


def manual_seed(seed):
    """Reset the default generator (and CuPy's, when a GPU is usable) to ``seed``."""
    _DEFAULT_RNG[0] = np.random.default_rng(seed)
    if backend.gpu_available():
        backend.cp.random.seed(seed)
    return _DEFAULT_RNG[0]


# -- linear -------------------------------------------------------------------------------------
class Linear(Function):
    """y = x W + b, W of shape (in, out), any leading batch dimensions in x.

    Fused so the batch dimensions fold into one (N, in) @ (in, out) matrix product and
    ∂L/∂W is one matrix product instead of a batched one summed afterwards:
        ∂L/∂x = gy Wᵀ,   ∂L/∂W = xᵀ gy,   ∂L/∂b = Σₙ gy.
    """

    def forward(self, x, W, b=None):
        if x.ndim == 0 or x.shape[-1] != W.shape[0]:
            raise ValueError(f"linear: input of shape {x.shape} does not match W of shape "
                             f"{W.shape} (expected last dimension {W.shape[0]})")
        x2 = x.reshape(-1, W.shape[0])
        y = x2 @ W
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (W.shape[1],))

    def backward(self, gy):
        x, W = self.inputs[:2]
        x2 = reshape(x, (-1, W.shape[0]))
        gy2 = reshape(gy, (-1, W.shape[1]))
        gx = reshape(matmul(gy2, transpose(W)), x.shape) if self.needs_input_grad[0] else None
        gW = matmul(transpose(x2), gy2) if self.needs_input_grad[1] else None
        if len(self.inputs) == 2:
            return gx, gW
        gb = sum(gy2, axis=0) if self.needs_input_grad[2] else None
        return gx, gW, gb


def linear(x, W, b=None):
    """``x @ W + b`` with W of shape (in_features, out_features)."""
    x, W = as_tensor(x), as_tensor(W)
    if W.ndim != 2:
        raise ValueError(f"linear: W must be 2-D (in, out), got shape {W.shape}")
    if b is None:
        return Linear()(x, W)
    b = as_tensor(b, like=W.data)
    if b.shape != (W.shape[1],):
        raise ValueError(f"linear: b must have shape ({W.shape[1]},) to match W {W.shape}, "
                         f"got {b.shape}")
    return Linear()(x, W, b)


# -- erf and GELU -------------------------------------------------------------------------------
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


_ERF_TAYLOR = [2.0 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1))
               for n in range(12)]


def _erf_float32(x):
    """erf to about one float32 ulp, in float32 arithmetic:

    |x| < 1:  the Taylor series erf x = (2/√π) Σₙ (−1)ⁿ x^{2n+1} / (n! (2n+1)), 12 terms
              (relative error < 1e-8; keeps erf x ≈ 1.128 x accurate near 0);
    |x| ≥ 1:  Abramowitz & Stegun 7.1.26, erf x = 1 − t(a₁ + t(a₂ + …)) e^{−x²},
              t = 1/(1 + 0.3275911 x), absolute error < 1.5e-7.
    """
    xp = backend.get_array_module(x)
    a = xp.abs(x)
    x2 = x * x
    series = x.dtype.type(_ERF_TAYLOR[-1])
    for coef in reversed(_ERF_TAYLOR[:-1]):
        series = series * x2 + x.dtype.type(coef)
    series = series * x
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                                                       + t * (-1.453152027 + t * 1.061405429))))
    tail = xp.sign(x) * (1.0 - poly * xp.exp(-x2))
    return xp.where(a < 1.0, series, tail).astype(x.dtype, copy=False)


def _erf_float64(x):
    """erf to ~1e-16 with two fixed-length expansions (so it vectorises, no per-element loop):

    |x| < 3:  erf x = (2/√π) e^{−x²} Σₙ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))   (positive terms, no
              cancellation; 60 terms reach 1e-17 at |x| = 3);
    |x| ≥ 3:  erfc x = (e^{−x²}/√π) / (x + ½/(x + 1/(x + (3/2)/(x + 2/(x + …)))))  (continued
              fraction, evaluated from the tail; 40 levels are plenty for x ≥ 3).
    """
    xp = backend.get_array_module(x)
    a = xp.abs(x).astype(np.float64)
    small = xp.minimum(a, 3.0)
    term = small.copy()
    total = small.copy()
    s2 = 2.0 * small * small
    for n in range(1, 60):
        term = term * s2 / (2 * n + 1)
        total = total + term
    erf_small = (2.0 / math.sqrt(math.pi)) * xp.exp(-small * small) * total
    big = xp.maximum(a, 3.0)
    frac = big
    for k in range(40, 0, -1):
        frac = big + (k / 2.0) / frac
    erf_big = 1.0 - xp.exp(-big * big) / (math.sqrt(math.pi) * frac)
    return (xp.sign(x) * xp.where(a < 3.0, erf_small, erf_big)).astype(x.dtype, copy=False)


def erf_array(x):
    """The error function on a raw array: float64-accurate for float64, ~1e-7 for float32."""
    return _erf_float64(x) if x.dtype == np.float64 else _erf_float32(x)


class Erf(Function):
    """y = erf x = (2/√π) ∫₀ˣ e^{−t²} dt;  ∂y/∂x = (2/√π) e^{−x²}."""

    def forward(self, x):
        return erf_array(x)

    def backward(self, gy):
        x, = self.inputs
        return gy * (2.0 / math.sqrt(math.pi)) * exp(-(x * x))


def erf(x):
    return Erf()(x)


def _phi_array(x):
    """Standard normal density φ(x) = e^{−x²/2}/√(2π), on an array."""
    xp = backend.get_array_module(x)
    return (xp.exp(-0.5 * x * x) * _INV_SQRT_2PI).astype(x.dtype, copy=False)


class GELU(Function):
    """y = x Φ(x), Φ(x) = ½ (1 + erf(x/√2)) the standard normal CDF;  ∂y/∂x = Φ(x) + x φ(x).

    The derivative is its own Function (:class:`GELUGrad`) computed from the same erf as the
    forward, so finite differences of the forward agree with it to erf's accuracy.
    """

    def forward(self, x):
        y = x * (0.5 * (1.0 + erf_array(x / x.dtype.type(_SQRT2))))
        return y.astype(x.dtype, copy=False)  # NumPy 1.x: 0-d float32 · Python float -> float64

    def backward(self, gy):
        x, = self.inputs
        return gy * GELUGrad()(x)


class GELUGrad(Function):
    """y = Φ(x) + x φ(x) (GELU's derivative);  ∂y/∂x = 2φ(x) − x² φ(x) = φ(x)(2 − x²)."""

    def forward(self, x):
        Phi = 0.5 * (1.0 + erf_array(x / x.dtype.type(_SQRT2)))
        return (Phi + x * _phi_array(x)).astype(x.dtype, copy=False)

    def backward(self, gy):
        x, = self.inputs
        phi = exp(x * x * -0.5) * _INV_SQRT_2PI
        return gy * phi * (2.0 - x * x)


def gelu(x, approximate="none"):
    """GELU(x) = x Φ(x) (``approximate="none"``, exact via erf) or the tanh approximation
    ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))) (``approximate="tanh"``), as in PyTorch."""
    if approximate == "none":
        return GELU()(x)
    if approximate == "tanh":
        x = as_tensor(x)
        return x * 0.5 * (1.0 + tanh((x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# -- dropout ------------------------------------------------------------------------------------
def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout: zero each element with probability p, scale survivors by 1/(1 − p),
    so the expected value is unchanged and evaluation needs no rescaling.

    The mask is drawn with ``rng`` (a NumPy Generator; the default generator when None) in
    x's dtype; on the GPU with ``rng=None`` it is drawn by CuPy directly. ``p == 0`` or
    ``training=False`` return x itself; ``p == 1`` gives zeros.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    x = as_tensor(x)
    if not training or p == 0.0:
        return x
    xp = backend.get_array_module(x)
    if p == 1.0:
        return x * Tensor(xp.zeros(x.shape, dtype=x.dtype))
    if rng is None and xp is not np:
        u = xp.random.random(x.shape, dtype=np.float32)
    else:
        u = xp.asarray((rng if rng is not None else default_generator()).random(
            x.shape, dtype=np.float32))
    keep = (u >= p).astype(x.dtype)
    keep *= x.dtype.type(1.0 / (1.0 - p))
    return x * Tensor(keep)


# -- embedding ----------------------------------------------------------------------------------
def _check_ids(op, ids, vocab, xp):
    ids = backend.unwrap(ids)
    ids = xp.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must be integers (token indices), got dtype {ids.dtype}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:  # CuPy would silently wrap, so check here
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: id {bad} is out of range for a vocabulary of {vocab} "
                             f"(valid: 0..{vocab - 1})")
    return ids


class Embedding(Function):
    """y[…, :] = W[ids[…], :];  ∂L/∂W[v] = Σ_{positions with id v} gy (a scatter-add, so
    repeated ids accumulate)."""

    def __init__(self, ids):
        self.ids = ids

    def forward(self, W):
        return W[self.ids]

    def backward(self, gy):
        W, = self.inputs
        return EmbeddingGrad(self.ids, W.shape[0])(gy)


class EmbeddingGrad(Function):
    """gW = scatter_add(zeros(vocab, dim), ids, gy); its own derivative is the lookup."""

    def __init__(self, ids, vocab):
        self.ids, self.vocab = ids, vocab

    def forward(self, gy):
        xp = backend.get_array_module(gy)
        dim = gy.shape[-1]
        gW = xp.zeros((self.vocab, dim), dtype=gy.dtype)
        backend.scatter_add(xp, gW, self.ids.reshape(-1), gy.reshape(-1, dim))
        return gW

    def backward(self, ggW):
        return Embedding(self.ids)(ggW)


def embedding(ids, W):
    """Rows of W (vocab, dim) picked by integer ``ids`` of any shape -> ids.shape + (dim,)."""
    W = as_tensor(W)
    if W.ndim != 2:
        raise ValueError(f"embedding: W must be 2-D (vocab, dim), got shape {W.shape}")
    ids = _check_ids("embedding", ids, W.shape[0], backend.get_array_module(W))
    return Embedding(ids)(W)
