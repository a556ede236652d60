"""Scaled dot-product attention, the article's formula (1) (§4.1.1):

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

:func:`scaled_dot_product_attention` is written as the formula's steps — scores, scale,
mask, softmax, weighted sum — each one a differentiable operation, so its backward is the
chain rule through those steps (derived in chapter 05) and can be differentiated again.
The one new Function is :class:`MaskedSoftmax`, the softmax over the keys a query may see.
"""
import contextlib
import math

import numpy as np

from .. import backend
from ..autograd import Function, as_tensor
from .math import matmul, mul, sum
from .nn_ops import dropout as _dropout
from .shape import _check_broadcast, swapaxes


def _row_max(x):
    """max over the last axis, keepdims. NumPy's ``x.max(-1)`` costs ~6 ns per element when
    the rows are short (64 keys), one loop set-up per row; ``maximum.reduceat`` over the flat
    array does the same reduction about 5× faster."""
    xp = backend.get_array_module(x)
    n = x.shape[-1]
    if xp is np and n > 0 and x.size > 0 and x.flags.c_contiguous:
        return np.maximum.reduceat(x.reshape(-1), np.arange(0, x.size, n)).reshape(
            x.shape[:-1] + (1,))
    return x.max(axis=-1, keepdims=True)


class MaskedSoftmax(Function):
    """yᵢ = mᵢ e^{xᵢ} / Σⱼ mⱼ e^{xⱼ} over the last axis, for a constant 0/1 mask m (True =
    allowed; None = all allowed); a row with no allowed entry gives y = 0 (not 0/0 = NaN).

    ∂L/∂x = y ⊙ (gy − Σ gy ⊙ y): the softmax derivative; it is zero wherever y is, so masked
    entries and fully masked rows get zero (finite) gradients.
    """

    def __init__(self, allowed=None):
        self.allowed = allowed

    def forward(self, x):
        xp = backend.get_array_module(x)
        with np.errstate(invalid="ignore", over="ignore") if xp is np else contextlib.nullcontext():
            if self.allowed is not None:
                # + (−∞) where masked: e^{−∞} = 0 (an addition of the small, broadcast mask
                # costs a third of ``where`` on the full scores)
                x = x + xp.where(self.allowed, x.dtype.type(0), x.dtype.type(-np.inf))
            m = _row_max(x)                                    # the row maximum, for stability
            if self.allowed is not None:
                m = xp.where(xp.isfinite(m), m, x.dtype.type(0))   # a fully masked row has none
            e = x - m
            xp.exp(e, out=e)                                   # in place: one array, not two
        s = e.sum(axis=-1, keepdims=True)
        if self.allowed is not None:
            s = xp.where(s > 0, s, s.dtype.type(1))            # fully masked row: 0 / 1 = 0
        e /= s
        return e

    def backward(self, gy):
        y, = self.outputs()
        return y * (gy - sum(gy * y, axis=-1, keepdims=True))


def masked_softmax(x, allowed=None):
    """Softmax over the last axis restricted to the entries where ``allowed`` (boolean,
    broadcastable to x) is True; rows with nothing allowed are all zero. ``allowed=None``
    allows everything (plain softmax)."""
    x = as_tensor(x)
    if allowed is not None:
        allowed = backend.unwrap(allowed)
        allowed = backend.get_array_module(x).asarray(allowed, dtype=bool)   # on x's device
        if _check_broadcast("masked_softmax", x.shape, allowed.shape) != x.shape:
            raise ValueError(f"masked_softmax: mask of shape {allowed.shape} would enlarge the "
                             f"input of shape {x.shape}")
    return MaskedSoftmax(allowed)(x)


def causal_mask(L_q, L_k, xp=np):
    """(L_q, L_k) boolean: query i may attend to keys j ≤ i (the past and itself).

    Aligned at the top-left, as PyTorch's ``is_causal``: with L_q ≠ L_k query i still sees
    keys 0 … i.
    """
    return xp.tril(xp.ones((L_q, L_k), dtype=bool))


def _allowed(mask, causal, scores_shape, xp):
    """The boolean mask of allowed (query, key) pairs, or None when everything is allowed."""
    allowed = None
    if mask is not None:
        mask = backend.unwrap(mask)
        mask = xp.asarray(mask)
        if mask.dtype != bool:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = may "
                            f"attend), got dtype {mask.dtype} with shape {mask.shape}")
        if _check_broadcast("scaled_dot_product_attention (mask vs scores)", mask.shape,
                            scores_shape) != tuple(scores_shape):
            raise ValueError(f"scaled_dot_product_attention: mask of shape {mask.shape} would "
                             f"enlarge the scores of shape {tuple(scores_shape)}; it must "
                             f"broadcast to (..., L_q, L_k)")
        allowed = mask
    if causal:
        future = causal_mask(scores_shape[-2], scores_shape[-1], xp)
        allowed = future if allowed is None else allowed & future
    return allowed


def _check_qkv(q, k, v):
    op = "scaled_dot_product_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim < 2:
            raise ValueError(f"{op}: {name} must be at least 2-D (..., L, d), got shape {t.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{op}: q and k must have the same last dimension d_k, got q "
                         f"{q.shape} and k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{op}: k and v must have the same length L_k (one value per key), "
                         f"got k {k.shape} and v {v.shape}")


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, dropout=0.0, scale=None,
                                 rng=None):
    """Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V, returning ``(out, weights)``.

    Shapes: q (..., L_q, d_k), k (..., L_k, d_k), v (..., L_k, d_v) with any leading batch
    (and head) dimensions, broadcast as in matmul; out (..., L_q, d_v), weights (..., L_q, L_k).

    ``mask``: boolean, True where query i may attend to key j, broadcastable to (..., L_q, L_k).
    ``causal=True`` also hides the future (key j > query i). A query that may attend to no key
    gets all-zero weights and a zero output row, with finite gradients.
    ``dropout``: probability of dropping each attention weight (pass 0.0 when evaluating; the
    mask is drawn with ``rng`` as in :func:`~minimm.functional.dropout`); the returned
    ``weights`` are those before dropout. ``scale`` replaces 1/√d_k (chapter 05 sets
    it to 1.0 to show why the scaling is there).
    """
    q, k, v = as_tensor(q), as_tensor(k), as_tensor(v)
    _check_qkv(q, k, v)
    d_k = q.shape[-1]
    # a Python float, so float32 scores stay float32
    scale = 1.0 / math.sqrt(d_k) if scale is None else float(scale)

    # Q Kᵀ / √d_k, with the 1/√d_k applied to Q: the same numbers, but d_k rather than L_k
    # multiplications per query (PyTorch's reference implementation scales Q too)
    scores = matmul(mul(q, scale), swapaxes(k, -1, -2))     # Q Kᵀ / √d_k   (..., L_q, L_k)
    allowed = _allowed(mask, causal, scores.shape, backend.get_array_module(scores))
    weights = masked_softmax(scores, allowed)                # softmax over the keys
    attended = _dropout(weights, dropout, rng=rng) if dropout > 0 else weights
    out = matmul(attended, v)                                 # Σⱼ weightsᵢⱼ vⱼ  (..., L_q, d_v)
    return out, weights
