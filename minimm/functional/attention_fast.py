"""The fast softmax that attention runs: the numbers of ``activations.Softmax`` over the last
axis, computed with fewer passes over the (…, L_q, L_k) scores.

Readable twin: :class:`minimm.functional.activations.Softmax` (``axis=-1``, ``allowed``);
``tests/test_attention.py`` checks this kernel against it on every backend. What is faster
here, and by how much, is in ``benchmarks/NOTES.md``:

- the row maximum over short rows by ``np.maximum.reduceat`` on the flat array (NumPy sets up
  its reduction loop once per row for ``x.max(-1)``);
- the mask as an addition of the small broadcast 0/−∞ array instead of ``where`` on the
  full scores;
- the exponential and the division in place (one array, not three).
The backward is the readable one, inherited.
"""
import numpy as np

from .. import backend
from .activations import Softmax


def row_max(x):
    """max over the last axis, keepdims (as ``x.max(-1, keepdims=True)``)."""
    xp = backend.get_array_module(x)
    n = x.shape[-1]
    if xp is np and n > 0 and x.size > 0 and x.flags.c_contiguous:
        return np.maximum.reduceat(x.reshape(-1), np.arange(0, x.size, n)).reshape(
            x.shape[:-1] + (1,))
    return x.max(axis=-1, keepdims=True)


class FastSoftmax(Softmax):
    """Softmax over the last axis restricted to ``allowed`` (see :class:`Softmax`), fast."""

    def __init__(self, allowed=None):
        super().__init__(axis=-1, allowed=allowed)

    def forward(self, x):
        xp = backend.get_array_module(x)
        if x.size == 0:
            return x.copy()
        with np.errstate(over="ignore", invalid="ignore"):
            if self.allowed is not None:
                x = x + xp.where(self.allowed, x.dtype.type(0), x.dtype.type(-np.inf))
            M = row_max(x)
            if self.allowed is not None:
                M = xp.where(xp.isfinite(M), M, x.dtype.type(0))
            e = x - M
            xp.exp(e, out=e)
        s = e.sum(axis=-1, keepdims=True)
        if self.allowed is not None:
            s = xp.where(s > 0, s, s.dtype.type(1))
        e /= s
        return e
