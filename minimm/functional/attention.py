"""Scaled dot-product attention, the article's formula (1) (§4.1.1):

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V

:func:`scaled_dot_product_attention` is written as the formula's steps — scores, scale,
mask, softmax, weighted sum — each one a differentiable operation, so its backward is the
chain rule through those steps (derived in chapter 05) and can be differentiated again.
The softmax over the keys a query may see is :class:`~minimm.functional.activations.Softmax`
with a mask (the readable kernel); attention runs the same numbers through a faster kernel,
:class:`~minimm.functional.attention_fast.FastSoftmax`.
"""
import numpy as np

from .. import backend
from ..autograd import as_tensor
from . import attention_fast  # the softmax kernel attention runs: Softmax's numbers, faster
from .math import matmul, mul
from .random import dropout as _dropout
from .shape import swapaxes
from .utils import check_broadcast, check_float


def masked_softmax(x, allowed=None):
    """Softmax over the last axis restricted to the entries where ``allowed`` (boolean,
    broadcastable to x) is True; rows with nothing allowed are all zero. ``allowed=None``
    allows everything (plain softmax). Readable kernel: ``Softmax(-1, allowed)``."""
    x = as_tensor(x)
    check_float("masked_softmax", x)
    if allowed is not None:
        allowed = backend.get_array_module(x).asarray(backend.unwrap(allowed), dtype=bool)
        if check_broadcast("masked_softmax", x.shape, allowed.shape) != x.shape:
            raise ValueError(f"masked_softmax: mask of shape {allowed.shape} would enlarge the "
                             f"input of shape {x.shape}")
    return attention_fast.FastSoftmax(allowed)(x)


def causal_mask(L_q, L_k, xp=np):
    """(L_q, L_k) boolean: query i may attend to keys j ≤ i (the past and itself).

    Aligned at the top-left, as PyTorch's ``is_causal``: with L_q ≠ L_k query i still sees
    keys 0 … i.
    """
    return xp.tril(xp.ones((L_q, L_k), dtype=bool))


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, dropout=0.0, scale=None,
                                 rng=None):
    """Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V, returning ``(out, weights)``.

    Shapes: q (..., L_q, d_k), k (..., L_k, d_k), v (..., L_k, d_v) with any leading batch
    (and head) dimensions, broadcast as in matmul; out (..., L_q, d_v), weights (..., L_q, L_k).

    ``mask``: boolean, True where query i may attend to key j, broadcastable to (..., L_q, L_k).
    ``causal=True`` also hides the future (key j > query i). A query that may attend to no key
    (or a sequence with no keys at all, L_k = 0) gets all-zero weights and a zero output row,
    with finite gradients.
    ``dropout``: probability of dropping each attention weight (pass 0.0 when evaluating; the
    mask is drawn with ``rng`` as in :func:`~minimm.functional.dropout`); the returned
    ``weights`` are those before dropout. ``scale`` replaces 1/√d_k (chapter 05 sets
    it to 1.0 to show why the scaling is there).
    """
    q, k, v = as_tensor(q), as_tensor(k), as_tensor(v)
    _check_qkv(q, k, v)
    d_k = q.shape[-1]
    # a Python float, so float32 scores stay float32
    scale = 1.0 / float(np.sqrt(d_k)) if scale is None else float(scale)

    # Q Kᵀ / √d_k, with the 1/√d_k applied to Q: the same numbers, but d_k rather than L_k
    # multiplications per query (PyTorch's reference implementation scales Q too)
    scores = matmul(mul(q, scale), swapaxes(k, -1, -2))     # Q Kᵀ / √d_k   (..., L_q, L_k)
    allowed = _allowed_pairs(mask, causal, scores.shape, backend.get_array_module(scores))
    weights = masked_softmax(scores, allowed)                # softmax over the keys
    attended = _dropout(weights, dropout, rng=rng) if dropout > 0 else weights
    out = matmul(attended, v)                                 # Σⱼ weightsᵢⱼ vⱼ  (..., L_q, d_v)
    return out, weights


def _allowed_pairs(mask, causal, scores_shape, xp):
    """The boolean mask of allowed (query, key) pairs, or None when everything is allowed."""
    allowed = None
    if mask is not None:
        mask = xp.asarray(backend.unwrap(mask))
        if mask.dtype != bool:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean (True = may "
                            f"attend), got dtype {mask.dtype} with shape {mask.shape}")
        if check_broadcast("scaled_dot_product_attention (mask vs scores)", mask.shape,
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
        check_float(op, t, name)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{op}: q and k must have the same last dimension d_k, got q "
                         f"{q.shape} and k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{op}: k and v must have the same length L_k (one value per key), "
                         f"got k {k.shape} and v {v.shape}")
