"""A fast embedding lookup: :func:`minimm.functional.embedding` whose gradient is summed by
sorting instead of ``np.add.at``.

∂L/∂W[v] = Σ_{positions with id v} ∂L/∂y[position]. ``np.add.at`` adds the rows one by one
(an indexed loop, one row at a time); instead the rows are put in
id order (one argsort and one gather), summed per run of equal ids with
``np.add.reduceat`` and written once per distinct id. On CuPy the readable scatter-add
(``cupyx.scatter_add``) is already a single kernel and is used as it is.
"""
import numpy as np

from ... import backend
from ...autograd import Function, Tensor, as_tensor, is_grad_enabled
from ..lookup import EmbeddingGrad, check_ids


def rows_scatter_add(vocab, ids, values):
    """gW (vocab, dim) with gW[v] = Σ values[k] over the k with ids[k] = v (others 0)."""
    xp = backend.get_array_module(values)
    dim = values.shape[-1]
    ids = ids.reshape(-1)
    values = values.reshape(-1, dim)
    gW = xp.zeros((vocab, dim), dtype=values.dtype)
    if xp is not np:
        return backend.scatter_add(xp, gW, ids, values)
    if ids.size == 0:
        return gW
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    gW[sorted_ids[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return gW


class EmbeddingFast(Function):
    """y[…, :] = W[ids[…], :];  ∂L/∂W by :func:`rows_scatter_add` (a differentiable backward,
    ``create_graph=True``, goes through the readable :class:`~minimm.functional.lookup.
    EmbeddingGrad`)."""

    def __init__(self, ids):
        self.ids = ids

    def forward(self, W):
        return W[self.ids]

    def backward(self, gy):
        W, = self.inputs
        if is_grad_enabled():
            return EmbeddingGrad(self.ids, W.shape[0])(gy)
        return Tensor(rows_scatter_add(W.shape[0], self.ids, gy.data))


def embedding(ids, W):
    """:func:`minimm.functional.embedding` (same arguments, same numbers) with the fast
    gradient."""
    W = as_tensor(W)
    if W.ndim != 2:
        raise ValueError(f"embedding: W must be 2-D (vocab, dim), got shape {W.shape}")
    ids = check_ids("embedding", ids, W, backend.get_array_module(W))
    return EmbeddingFast(ids)(W)
