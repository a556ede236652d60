"""Small helpers shared by the functional modules: argument checks, reduction axes, constants.

No Function lives here, and this module imports nothing of minimm above autograd, so every
functional module (and ``minimm.nn``) may use it. Names are public because they cross
module walls; each is used by at least two modules.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor


# -- argument checks --------------------------------------------------------------------------
def int_pair(value, name, op, minimum):
    """An int or a pair of ints -> a pair of ints, each ≥ ``minimum`` (kernel sizes, strides,
    padding: PyTorch's ``_pair``)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{op}: {name} must be ≥ {minimum}, got {value!r}")
    return tuple(int(v) for v in pair)


def check_broadcast(op, shape_a, shape_b):
    """The broadcast shape of two shapes, or an error naming ``op`` and both shapes."""
    out = []
    for i in range(1, max(len(shape_a), len(shape_b)) + 1):
        a = shape_a[-i] if i <= len(shape_a) else 1
        b = shape_b[-i] if i <= len(shape_b) else 1
        if a != b and a != 1 and b != 1:
            raise ValueError(f"{op}: shapes {tuple(shape_a)} and {tuple(shape_b)} cannot be "
                             f"broadcast together (dimension -{i}: {a} vs {b})")
        out.append(max(a, b) if a != 0 and b != 0 else 0)
    return tuple(reversed(out))


NORMALISE_HINT = ("convert it first, e.g. x.astype(np.float32); for uint8 images "
                  "minimm.data.normalize_images(x) or x.astype(np.float32) / 255")


def check_float(op, x, name="input"):
    """Refuse a non-floating-point ``x`` (an array or Tensor) for an operation that only makes
    sense on real numbers: a layer, a normalisation, a softmax, a loss's logits.

    PyTorch refuses these too ("expected scalar type Float"); NumPy would quietly compute in
    float64 on raw 0–255 pixels, or truncate a loss to an integer.
    """
    dtype = backend.unwrap(x).dtype
    if dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be floating point, got dtype {dtype}; "
                        f"{NORMALISE_HINT}")


# -- reductions ---------------------------------------------------------------------------------
def reduction_axes(axis, ndim):
    """``axis`` (None, an int or a tuple, negatives allowed) as a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    axis = axis if isinstance(axis, (tuple, list)) else (axis,)
    return tuple(sorted(a % ndim for a in axis))


def keepdims_shape(shape, axes):
    """``shape`` with the reduced ``axes`` kept as 1s (where a reduction's gradient broadcasts)."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


# -- constants and dtypes -----------------------------------------------------------------------
def constant_mask(condition, like):
    """A constant Tensor of 0/1 in the dtype of the array ``like`` (a bool mask would promote)."""
    return Tensor(condition.astype(like.dtype))


def as_float(a):
    """An integer or boolean array as float32 (PyTorch's promotion for a float operation such
    as exp or sigmoid: NumPy would give float64); a floating-point array unchanged."""
    return a if a.dtype.kind in "fc" else a.astype(np.float32)
