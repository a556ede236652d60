"""The error function erf, its complement erfc and the normal CDF Φ, accurate in their tails.

    erf x = (2/√π) ∫₀ˣ e^{−t²} dt,    erfc x = 1 − erf x,    Φ(x) = ½ erfc(−x/√2)

All three are computed in float64 (Φ in float32: see below) from two fixed-length expansions
(so they vectorise: no loop over elements), split at a = |x| = T:

    a < T:  erf a = (2/√π) e^{−a²} Σₙ 2ⁿ a^{2n+1} / (1·3·…·(2n+1))   (positive terms, no
            cancellation, so erf x ≈ 1.128 x stays exact near 0), and erfc a = 1 − erf a ≥ 0.48;
    a ≥ T:  erfc a = e^{−a²} · erfcx(a) itself, so that its tiny values keep their relative
            accuracy (1 − erf a cancels to 0 beyond a ≈ 6, or 4 in float32), with
            float64: erfcx(a) = 1 / (√π (a + ½/(a + 1/(a + (3/2)/(a + 2/(a + …)))))), a continued
                     fraction of 200 levels evaluated from the tail (T = 1);
            float32: erfcx(a) = t e^{−1.26551223 + t P(t)}, t = 1/(1 + a/2), Numerical Recipes'
                     Chebyshev fit of erfc, relative error below 1.2e-7 for all a (T = ½);
            and e^{−a²} with a² split exactly (a rounded a² would cost a relative a²·ε).
Then erf(−x) = −erf x, erfc(−x) = 2 − erfc x. Φ in float32 (GELU's, on large activations)
skips the series: the Chebyshev fit holds for every a, and Φ ≥ ½ needs no relative accuracy
near 0, so it is computed in float32 throughout.
"""
import numpy as np

from .. import backend
from ..autograd import Function
from .math import exp

_TWO_OVER_SQRT_PI = float(2.0 / np.sqrt(np.pi))
_INV_SQRT_PI = float(1.0 / np.sqrt(np.pi))
_SQRT_HALF = float(np.sqrt(0.5))
_INV_SQRT_2PI = float(1.0 / np.sqrt(2.0 * np.pi))
_NR_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
            -1.13520398, 1.48851587, -0.82215223, 0.17087277)   # Numerical Recipes, erfcc


def _erf_series(a, terms):
    """erf a for 0 ≤ a < T: (2/√π) e^{−a²} Σₙ 2ⁿ a^{2n+1} / (2n+1)!!."""
    term, total, two_a2 = a.copy(), a.copy(), 2.0 * a * a
    for n in range(1, terms):
        term = term * two_a2 / (2 * n + 1)
        total = total + term
    return _TWO_OVER_SQRT_PI * backend.get_array_module(a).exp(-a * a) * total


def _erfcx_continued_fraction(a, levels=200):
    """e^{a²} erfc a for a ≥ 1: 1 / (√π (a + ½/(a + 1/(a + …)))), from the tail up."""
    frac = a
    for k in range(levels, 0, -1):
        frac = a + (k / 2.0) / frac
    return _INV_SQRT_PI / frac


def _erfcx_chebyshev(a):
    """e^{a²} erfc a for a ≥ 0 to a relative 1.2e-7 (float32 accuracy)."""
    t = 1.0 / (1.0 + 0.5 * a)
    poly = _NR_ERFC[-1]
    for c in reversed(_NR_ERFC[:-1]):
        poly = c + t * poly
    return t * backend.get_array_module(a).exp(poly)


def _exp_neg_square(x, scale=1.0):
    """e^{−scale·x²} to a few ulp even where x² is large (x² rounded would cost a relative
    x²·ε): x = hi + lo with hi of half the mantissa (Veltkamp's split), so hi² is exact and
    x² = hi² + lo (x + hi). In x's dtype (float64 or float32)."""
    xp = backend.get_array_module(x)
    x = xp.clip(x, -1e4, 1e4)                # beyond, e^{−x²} is 0 anyway (and ∞ stays finite)
    c = x * (134217729.0 if x.dtype == np.float64 else 4097.0)      # 2^27 + 1, or 2^12 + 1
    hi = c - (c - x)
    lo = x - hi
    return xp.exp(-scale * (hi * hi)) * xp.exp(-scale * (lo * (x + hi)))


def _pieces(a, float64):
    """For a = |x| (float64): the mask a < T, erf a there, and erfcx a = e^{a²} erfc a elsewhere."""
    xp = backend.get_array_module(a)
    T, terms = (1.0, 22) if float64 else (0.5, 12)
    small = a < T
    erf_small, erfcx_big = xp.zeros_like(a), xp.zeros_like(a)
    erf_small[small] = _erf_series(a[small], terms)
    big = a[~small]
    erfcx_big[~small] = _erfcx_continued_fraction(big) if float64 else _erfcx_chebyshev(big)
    return small, erf_small, erfcx_big


def _float_dtype(x):
    """x's dtype, or float32 for integer and boolean input (as PyTorch promotes)."""
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)


def erf_array(x):
    """erf on a raw array, in its dtype (float32 for integers): float64-accurate (~1e-16) for
    float64, to a few ulp for float32."""
    xp = backend.get_array_module(x)
    dtype = _float_dtype(x)
    a = abs(x.astype(np.float64))
    small, erf_small, erfcx_big = _pieces(a, dtype == np.float64)
    erf_a = xp.where(small, erf_small, 1.0 - _exp_neg_square(a) * erfcx_big)
    return (xp.sign(x.astype(np.float64)) * erf_a).astype(dtype)


def erfc_array(x):
    """erfc on a raw array, in its dtype (float32 for integers); relative-accurate in the right
    tail (erfc 10 = 2.1e-45)."""
    xp = backend.get_array_module(x)
    dtype = _float_dtype(x)
    x64 = x.astype(np.float64)
    a = abs(x64)
    small, erf_small, erfcx_big = _pieces(a, dtype == np.float64)
    erfc_a = xp.where(small, 1.0 - erf_small, _exp_neg_square(a) * erfcx_big)
    return xp.where(x64 >= 0, erfc_a, 2.0 - erfc_a).astype(dtype)


def _float32(x):
    return x if x.dtype == np.float32 else x.astype(np.float32)


def normal_cdf_array(x):
    """Φ(x) = ½ erfc(−x/√2), the standard normal CDF, on a float array, in its dtype (float32
    for narrower or integer input). Relative-accurate in the left tail (Φ(−10) = 7.6e-24,
    where ½(1 + erf(x/√2)) cancels to 0): there Φ(x) = ½ e^{−x²/2} erfcx(|x|/√2), with
    e^{−x²/2} from x itself, not from the rounded |x|/√2.

    float64: the float64-accurate erf/erfcx of this module. float32: computed in float32 (fast
    enough for an activation) from the Chebyshev fit alone, which holds for every |x|:
    a few ulp (5e-7) everywhere."""
    xp = backend.get_array_module(x)
    if x.dtype != np.float64:
        x = _float32(x)
        half_erfc = 0.5 * _erfcx_chebyshev(abs(x) * _SQRT_HALF) * _exp_neg_square(x, 0.5)
        return xp.where(x < 0, half_erfc, 1 - half_erfc)
    small, erf_small, erfcx_big = _pieces(abs(x) * _SQRT_HALF, True)
    half_erfc = 0.5 * _exp_neg_square(x, 0.5) * erfcx_big     # ½ erfc(|x|/√2) where a ≥ T
    big_part = xp.where(x < 0, half_erfc, 1.0 - half_erfc)
    return xp.where(small, 0.5 + 0.5 * xp.sign(x) * erf_small, big_part)


def normal_pdf_array(x):
    """φ(x) = e^{−x²/2} / √(2π), relative-accurate for every x, in x's dtype (float32 for
    narrower or integer input)."""
    x = x if x.dtype == np.float64 else _float32(x)
    return _exp_neg_square(x, 0.5) * _INV_SQRT_2PI


class Erf(Function):
    """y = erf x;  ∂y/∂x = (2/√π) e^{−x²}."""

    def forward(self, x):
        return erf_array(x)

    def backward(self, gy):
        x, = self.inputs
        return gy * _TWO_OVER_SQRT_PI * exp(-(x * x))


def erf(x):
    return Erf()(x)
