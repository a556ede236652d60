"""Embedding lookup: rows of a table picked by integer ids (``F.embedding``)."""
from .. import backend
from ..autograd import Function, as_tensor


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
        backend.scatter_add(xp, gW, self.ids.reshape(-1), gy.reshape(self.ids.size, dim))
        return gW

    def backward(self, ggW):
        return Embedding(self.ids)(ggW)


def embedding(ids, W):
    """Rows of W (vocab, dim) picked by integer ``ids`` of any shape -> ids.shape + (dim,)."""
    W = as_tensor(W)
    ids = check_ids("embedding", ids, W, backend.get_array_module(W))
    return Embedding(ids)(W)


def check_ids(op, ids, W, xp):
    """ids as an integer array on W's device, each in [0, vocab), or a clear error."""
    if W.ndim != 2:
        raise ValueError(f"{op}: W must be 2-D (vocab, dim), got shape {W.shape}")
    vocab = W.shape[0]
    ids = xp.asarray(backend.unwrap(ids))
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{op}: ids must be integers (token indices), got dtype {ids.dtype}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:  # CuPy would silently wrap, so check here
            bad = lo if lo < 0 else hi
            raise ValueError(f"{op}: id {bad} is out of range for a vocabulary of {vocab} "
                             f"(valid: 0..{vocab - 1})")
    return ids
