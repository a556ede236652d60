"""The dense (fully connected) layer's map, y = x W + b: ``F.linear``."""
import numpy as np

from ..autograd import Function, as_tensor
from .math import matmul, sum
from .shape import reshape, transpose
from .utils import check_float


class Linear(Function):
    """y = x W + b, W of shape (in, out), any leading batch dimensions in x.

    Fused so the batch dimensions fold into one (N, in) @ (in, out) matrix product and
    ∂L/∂W is one matrix product instead of a batched one summed afterwards:
        ∂L/∂x = gy Wᵀ,   ∂L/∂W = xᵀ gy,   ∂L/∂b = Σₙ gy.
    """

    def forward(self, x, W, b=None):
        n_in, n_out = W.shape
        x2 = x.reshape(_rows(x.shape), n_in)
        y = x2 @ W
        if b is not None:
            y += b
        return y.reshape(x.shape[:-1] + (n_out,))

    def backward(self, gy):
        x, W = self.inputs[:2]
        n_in, n_out = W.shape
        rows = _rows(x.shape)
        x2 = reshape(x, (rows, n_in))
        gy2 = reshape(gy, (rows, n_out))
        gx = reshape(matmul(gy2, transpose(W)), x.shape) if self.needs_input_grad[0] else None
        gW = matmul(transpose(x2), gy2) if self.needs_input_grad[1] else None
        if len(self.inputs) == 2:
            return gx, gW
        gb = sum(gy2, axis=0) if self.needs_input_grad[2] else None
        return gx, gW, gb


def _rows(x_shape):
    """How many vectors x holds: the product of its leading dimensions (0 for an empty batch;
    a reshape to (−1, in) could not tell that)."""
    return int(np.prod(x_shape[:-1], dtype=np.int64))


def linear(x, W, b=None):
    """``x @ W + b`` with W of shape (in_features, out_features)."""
    x, W = as_tensor(x), as_tensor(W)
    b = None if b is None else as_tensor(b, like=W.data)
    _check_linear(x, W, b)
    return Linear()(x, W) if b is None else Linear()(x, W, b)


def _check_linear(x, W, b):
    if W.ndim != 2:
        raise ValueError(f"linear: W must be 2-D (in, out), got shape {W.shape}")
    if x.ndim == 0 or x.shape[-1] != W.shape[0]:
        raise ValueError(f"linear: input of shape {x.shape} does not match W of shape "
                         f"{W.shape} (expected last dimension {W.shape[0]})")
    if b is not None and b.shape != (W.shape[1],):
        raise ValueError(f"linear: b must have shape ({W.shape[1]},) to match W {W.shape}, "
                         f"got {b.shape}")
    check_float("linear", x)
