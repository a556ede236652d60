"""Normalisation layers, composed from differentiable operations (so twice differentiable).

Both subtract a mean and divide by a standard deviation; they differ in *which* axes the
statistics are taken over: batch norm over the batch (and the pixels), per feature; layer
norm over the features, per sample.
"""
from .. import backend
from ..autograd import Tensor, as_tensor
from .math import mean, sqrt
from .shape import reshape
from .utils import check_float


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """y = (x − μ) / √(σ² + ε) · weight + bias, with μ and σ² (biased) over the trailing
    ``normalized_shape`` axes of x, as ``torch.nn.functional.layer_norm``."""
    x = as_tensor(x)
    normalized_shape = _check_layer_norm(x, normalized_shape, weight, bias)
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mu = mean(x, axis=axes, keepdims=True)
    xc = x - mu
    var = mean(xc * xc, axis=axes, keepdims=True)
    y = xc / sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=True,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of x (N, C) or (N, C, H, W) per channel C, as PyTorch:

    training: y = (x − μ_B) / √(σ²_B + ε) · weight + bias, with μ_B and the *biased* σ²_B over
    (N, H, W); the running estimates (arrays, updated in place unless None) move by
    r ← (1 − momentum) r + momentum · stat, using the *unbiased* variance m/(m − 1) σ²_B.
    evaluation: the running estimates replace the batch statistics.
    """
    x = as_tensor(x)
    _check_batch_norm(x, running_mean, running_var, weight, bias, training)
    C = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, C) + (1,) * (x.ndim - 2)  # per-channel values broadcast over N, H, W
    xp = backend.get_array_module(x)
    if training:
        m = x.size // C
        mu = mean(x, axis=axes, keepdims=True)
        xc = x - mu
        var = mean(xc * xc, axis=axes, keepdims=True)
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += xp.asarray(momentum * mu.data.reshape(C), dtype=running_mean.dtype)
        if running_var is not None:
            unbiased = var.data.reshape(C) * (m / (m - 1.0))
            running_var *= 1.0 - momentum
            running_var += xp.asarray(momentum * unbiased, dtype=running_var.dtype)
        y = xc / sqrt(var + eps)
    else:
        rm = backend.unwrap(running_mean)
        rv = backend.unwrap(running_var)
        inv_std = 1.0 / xp.sqrt(xp.asarray(rv, dtype=x.dtype) + x.dtype.type(eps))
        y = (x - Tensor(xp.asarray(rm, dtype=x.dtype).reshape(shape))) * Tensor(
            inv_std.reshape(shape))
    if weight is not None:
        y = y * reshape(weight, shape)
    if bias is not None:
        y = y + reshape(bias, shape)
    return y


def _check_layer_norm(x, normalized_shape, weight, bias):
    """``normalized_shape`` as a tuple matching x's trailing axes, or a clear error."""
    normalized_shape = ((normalized_shape,) if isinstance(normalized_shape, int)
                        else tuple(normalized_shape))
    k = len(normalized_shape)
    if k == 0 or x.shape[x.ndim - k:] != normalized_shape or k > x.ndim:
        raise ValueError(f"layer_norm: normalized_shape {normalized_shape} does not match the "
                         f"trailing dimensions of the input of shape {x.shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != normalized_shape:
            raise ValueError(f"layer_norm: {name} has shape {tuple(t.shape)}, expected "
                             f"{normalized_shape}")
    check_float("layer_norm", x)
    return normalized_shape


def _check_batch_norm(x, running_mean, running_var, weight, bias, training):
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"batch_norm: expected an input of shape (N, C), (N, C, L) or "
                         f"(N, C, H, W), got {x.shape}")
    C = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (C,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(t.shape)}, expected ({C},) "
                             f"for an input of shape {x.shape}")
    check_float("batch_norm", x)
    if training and x.size // max(C, 1) <= 1:
        raise ValueError(f"batch_norm: training needs more than one value per channel, "
                         f"got an input of shape {x.shape}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
