"""Fast batch normalisation: :func:`minimm.functional.batch_norm` for images (N, C, H, W) as
one Function, in the CHWN layout of :mod:`.conv`.

The readable version composes about ten differentiable operations (two means, a
subtraction, a square, a square root, a division, the affine map), each a pass over the
activation and a Function in the graph. Here, with x viewed as a (C, M) matrix (M = H·W·N;
in the CHWN layout that view is free):

    μ = x 1 / M,   x_c = x − μ,   σ² = rowsum(x_c ⊙ x_c) / M,   a = γ / √(σ² + ε)
    y = a ⊙ x_c + β

and the backward, with x̂ = x_c / √(σ² + ε), S = rowsum(∂L/∂y ⊙ x_c):

    ∂L/∂β = ∂L/∂y 1,   ∂L/∂γ = S / √(σ² + ε),
    ∂L/∂x = a ⊙ (∂L/∂y − ∂L/∂β / M − x_c · S / (M (σ² + ε)))

The row sums are matrix products (with a ones vector, or one dot product per channel):
BLAS calls instead of NumPy's strided reductions. The result keeps the CHWN layout.
Evaluation mode uses the running estimates (y = a ⊙ x + (β − a μ_run)); a differentiable
backward (``create_graph=True``) is taken from the readable composed twin.
"""
from ... import backend
from ...autograd import Function, Tensor, as_tensor, enable_grad, grad, is_grad_enabled
from .conv import nchw, to_chwn


def _rowsum(a, xp):
    return (a @ xp.ones((a.shape[1], 1), dtype=a.dtype)).reshape(a.shape[0])


def _rowdot(a, b):
    """Σ_m a[c, m] b[c, m] per row c: one dot product per channel (batched matmul)."""
    return (a[:, None, :] @ b[:, :, None]).reshape(a.shape[0])


class BatchNorm2dFast(Function):
    """y = γ (x − μ_B) / √(σ²_B + ε) + β per channel of x (N, C, H, W), batch statistics over
    (N, H, W) (training mode). The running estimates, when given, are updated in place
    as in :func:`minimm.functional.batch_norm` (unbiased variance)."""

    def __init__(self, running_mean, running_var, momentum, eps):
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps

    def forward(self, x, weight, bias):
        xp = backend.get_array_module(x)
        C = x.shape[1]
        xc = to_chwn(x)
        M = xc.size // C
        x2 = xc.reshape(C, M)
        mu = _rowsum(x2, xp) / x.dtype.type(M)
        x_c = x2 - mu[:, None]
        var = _rowdot(x_c, x_c) / x.dtype.type(M)
        inv_std = 1 / xp.sqrt(var + x.dtype.type(self.eps))
        a = weight * inv_std
        y = x_c * a[:, None]
        y += bias[:, None]
        if self.running_mean is not None:
            self.running_mean *= 1.0 - self.momentum
            self.running_mean += xp.asarray(self.momentum * mu, dtype=self.running_mean.dtype)
        if self.running_var is not None:
            self.running_var *= 1.0 - self.momentum
            self.running_var += xp.asarray(self.momentum * var * (M / (M - 1.0)),
                                           dtype=self.running_var.dtype)
        self.saved = x_c, inv_std, a
        return nchw(y.reshape(xc.shape))

    def backward(self, gy):
        if is_grad_enabled():
            return self._composed_backward(gy)
        x_c, inv_std, a = self.saved
        xp = backend.get_array_module(x_c)
        C, M = x_c.shape
        g = to_chwn(gy.data).reshape(C, M)
        gb = _rowsum(g, xp)
        S = _rowdot(g, x_c)
        gw = S * inv_std
        gx = None
        if self.needs_input_grad[0]:
            gx = g * a[:, None]
            k = -(a * inv_std * inv_std * S) / x_c.dtype.type(M)
            gx += x_c * k[:, None]
            gx -= (a * gb / x_c.dtype.type(M))[:, None]
            gx = Tensor(nchw(gx.reshape((C,) + self.inputs[0].shape[2:] +
                                        (self.inputs[0].shape[0],))))
        self.saved = None
        return (gx, Tensor(gw) if self.needs_input_grad[1] else None,
                Tensor(gb) if self.needs_input_grad[2] else None)

    def _composed_backward(self, gy):
        from ..normalization import batch_norm
        x, w, b = self.inputs
        with enable_grad():
            y = batch_norm(x, None, None, w, b, True, self.momentum, self.eps)
        wanted = [t for t, need in zip(self.inputs, self.needs_input_grad) if need]
        gs = iter(grad(y, wanted, gy, create_graph=True))
        return tuple(next(gs) if need else None for need in self.needs_input_grad)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=True,
               momentum=0.1, eps=1e-5):
    """:func:`minimm.functional.batch_norm` for 4-D inputs on the fused kernel (same
    arguments, same numbers up to rounding); other ranks go to the readable version."""
    from ..normalization import batch_norm as readable
    x = as_tensor(x)
    if x.ndim != 4 or not training:
        if x.ndim == 4 and running_mean is not None and running_var is not None:
            return _eval_affine(x, running_mean, running_var, weight, bias, eps)
        return readable(x, running_mean, running_var, weight, bias, training, momentum, eps)
    C = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (C,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(t.shape)}, expected ({C},) "
                             f"for an input of shape {x.shape}")
    if x.size // C <= 1:
        raise ValueError(f"batch_norm: training needs more than one value per channel, "
                         f"got an input of shape {x.shape}")
    xp = backend.get_array_module(x)
    weight = weight if weight is not None else Tensor(xp.ones(C, dtype=x.dtype))
    bias = bias if bias is not None else Tensor(xp.zeros(C, dtype=x.dtype))
    return BatchNorm2dFast(running_mean, running_var, momentum, eps)(x, weight, bias)


def _eval_affine(x, running_mean, running_var, weight, bias, eps):
    """Evaluation mode: y = a ⊙ x + (β − a μ), a = γ / √(σ² + ε), from the running estimates —
    an affine map per channel, composed (so differentiable) and in x's own layout."""
    from ..math import mul, add
    from ..shape import reshape
    xp = backend.get_array_module(x)
    C = x.shape[1]
    rm = xp.asarray(backend.unwrap(running_mean), dtype=x.dtype)
    rv = xp.asarray(backend.unwrap(running_var), dtype=x.dtype)
    inv_std = Tensor(1 / xp.sqrt(rv + x.dtype.type(eps)))
    a = inv_std if weight is None else inv_std * weight
    shift = -(a * Tensor(rm))
    if bias is not None:
        shift = shift + bias
    return add(mul(x, reshape(a, (1, C, 1, 1))), reshape(shift, (1, C, 1, 1)))
