"""The default random generator, and dropout, the operation that draws from it.

This is the lowest layer that draws random numbers (the initialisers of ``minimm.nn.init``
use the same generator): :func:`manual_seed` resets it so a whole run is reproducible.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor, as_tensor

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
