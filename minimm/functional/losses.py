"""Losses."""
from .. import backend
from ..autograd import Function, Tensor
from .activations import _quiet, log_softmax, softmax
from .math import mean


def _check_labels(op, logits_shape, labels, xp):
    """Labels as an integer array of shape (N,) with values in [0, C), or a clear error."""
    labels = backend.unwrap(labels)
    labels = xp.asarray(labels)
    if len(logits_shape) != 2:
        raise ValueError(f"{op}: logits must have shape (N, C), got {logits_shape}")
    n, c = logits_shape
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be integers (class indices), got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{op}: labels must have shape ({n},) to match logits {logits_shape}, "
                         f"got {labels.shape}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"{op}: label {bad} is out of range for {c} classes (valid: 0..{c - 1})")
    return labels


class CrossEntropy(Function):
    """L = −(1/N) Σₙ log softmax(xₙ)[tₙ];  ∂L/∂x = (softmax(x) − onehot(t)) / N.

    Fused for numerical stability and speed; :func:`cross_entropy_simple` is its composed
    twin, kept as the test oracle.
    """

    def __init__(self, labels):
        self.labels = labels

    def forward(self, x):
        xp = backend.get_array_module(x)
        n = x.shape[0]
        with _quiet(xp):
            shifted = x - x.max(axis=1, keepdims=True)
            log_z = xp.log(xp.exp(shifted).sum(axis=1))
        picked = shifted[xp.arange(n), self.labels]
        return (log_z - picked).mean(dtype=x.dtype).astype(x.dtype)

    def backward(self, gy):
        x, = self.inputs
        xp = backend.get_array_module(x)
        n = x.shape[0]
        onehot = xp.zeros(x.shape, dtype=x.dtype)
        onehot[xp.arange(n), self.labels] = 1
        return (softmax(x, axis=1) - Tensor(onehot)) * (gy * (1.0 / n))


def cross_entropy(logits, labels):
    """Mean categorical cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,)."""
    xp = backend.get_array_module(logits)
    labels = _check_labels("cross_entropy", tuple(logits.shape), labels, xp)
    return CrossEntropy(labels)(logits)


def cross_entropy_simple(logits, labels):
    """The composed definition −mean(log_softmax(x)[n, tₙ]): the oracle for :func:`cross_entropy`."""
    xp = backend.get_array_module(logits)
    labels = _check_labels("cross_entropy", tuple(logits.shape), labels, xp)
    return -mean(log_softmax(logits, axis=1)[xp.arange(len(labels)), labels])
