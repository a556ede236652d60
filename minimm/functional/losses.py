"""The categorical cross-entropy, fused (:class:`CrossEntropy`) and composed
(:func:`cross_entropy_simple`, its test oracle), with PyTorch's options.

For logits x (N, C), p = softmax(x) per row, targets t, label smoothing ε and the rows whose
target is not ``ignore_index`` (vₙ = 1; N_v of them):

    ℓₙ = (1 − ε) (−log pₙ[tₙ]) + ε · (1/C) Σ_c (−log pₙ[c])
    L  = Σₙ vₙ ℓₙ / N_v

(ε = 0 and nothing ignored: the plain mean of −log pₙ[tₙ].) With no row left (N = 0, or every
target ignored) L is 0/0 = NaN, as in PyTorch, and the gradient is zero.
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor
from .activations import log_softmax, log_softmax_parts, softmax
from .math import mean, where
from .utils import check_float


class CrossEntropy(Function):
    """L as in the module docstring;  ∂L/∂xₙ = vₙ (softmax(xₙ) − qₙ) / N_v, with
    qₙ = (1 − ε) onehot(tₙ) + ε/C the smoothed target (Σ_c qₙ[c] = 1).

    Fused for numerical stability and speed; :func:`cross_entropy_simple` is its composed
    twin, kept as the test oracle.
    """

    def __init__(self, labels, ignore_index=-100, label_smoothing=0.0):
        self.labels, self.ignore_index, self.eps = labels, ignore_index, label_smoothing

    def forward(self, x):
        xp = backend.get_array_module(x)
        n, C = x.shape
        self.valid = self.labels != self.ignore_index                  # vₙ
        self.targets = xp.where(self.valid, self.labels, 0)            # any class where ignored
        shifted, log_z = log_softmax_parts(x, axis=1)                  # log p = shifted − log_z
        log_z = log_z[:, 0]
        with np.errstate(invalid="ignore"):                            # ∞ − ∞: NaN, as PyTorch
            loss = log_z - shifted[xp.arange(n), self.targets]         # −log pₙ[tₙ]
            if self.eps:                                               # mean_c −log pₙ[c]
                loss = (1 - self.eps) * loss + self.eps * (log_z - shifted.mean(axis=1))
        total = xp.where(self.valid, loss, x.dtype.type(0)).sum(dtype=x.dtype)
        with np.errstate(invalid="ignore"):                            # N_v = 0: 0/0 = NaN
            return (total / x.dtype.type(int(self.valid.sum()))).astype(x.dtype)

    def backward(self, gy):
        x, = self.inputs
        xp = backend.get_array_module(x)
        n, C = x.shape
        q = xp.full(x.shape, self.eps / C, dtype=x.dtype)              # ε/C everywhere …
        q[xp.arange(n), self.targets] += 1 - self.eps                  # … + (1 − ε) at tₙ
        per_row = softmax(x, axis=1) - Tensor(q)
        n_kept = int(self.valid.sum())
        if n_kept < n:                                                 # ignored rows: 0
            per_row = where(self.valid[:, None], per_row, 0.0)
        return per_row * (gy * (1.0 / max(n_kept, 1)))


def cross_entropy(logits, labels, ignore_index=-100, label_smoothing=0.0):
    """Mean categorical cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,),
    as ``torch.nn.functional.cross_entropy``: targets equal to ``ignore_index`` count for
    nothing (the mean is over the others), ``label_smoothing`` ε mixes the one-hot target
    with the uniform distribution, (1 − ε) onehot + ε/C."""
    logits = as_tensor(logits)
    labels = _check_cross_entropy("cross_entropy", logits, labels, ignore_index,
                                  label_smoothing)
    return CrossEntropy(labels, ignore_index, label_smoothing)(logits)


def cross_entropy_simple(logits, labels, ignore_index=-100, label_smoothing=0.0):
    """The composed definition, the oracle for :func:`cross_entropy`:
    mean over the kept rows of (1 − ε)(−log_softmax(x)[n, tₙ]) + ε · mean_c(−log_softmax(x)[n])."""
    logits = as_tensor(logits)
    labels = _check_cross_entropy("cross_entropy", logits, labels, ignore_index,
                                  label_smoothing)
    xp = backend.get_array_module(logits)
    rows = xp.nonzero(labels != ignore_index)[0]                       # the kept rows
    log_p = log_softmax(logits, axis=1)[rows]                          # (N_v, C)
    loss = -log_p[xp.arange(len(rows)), labels[rows]]
    if label_smoothing:
        loss = loss * (1 - label_smoothing) + mean(-log_p, axis=1) * label_smoothing
    return mean(loss)


def _check_cross_entropy(op, logits, labels, ignore_index, label_smoothing):
    """Labels as an integer array of shape (N,) with values in [0, C) or ``ignore_index``,
    float logits (N, C) and 0 ≤ ε ≤ 1, or a clear error."""
    xp = backend.get_array_module(logits)
    labels = xp.asarray(backend.unwrap(labels))
    if logits.ndim != 2:
        raise ValueError(f"{op}: logits must have shape (N, C), got {logits.shape}")
    check_float(op, logits, "logits")
    n, c = logits.shape
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be integers (class indices), got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{op}: labels must have shape ({n},) to match logits {logits.shape}, "
                         f"got {labels.shape}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    kept = labels[labels != ignore_index]
    if kept.size and (int(kept.min()) < 0 or int(kept.max()) >= c):
        bad = int(kept.min()) if int(kept.min()) < 0 else int(kept.max())
        raise ValueError(f"{op}: label {bad} is out of range for {c} classes (valid: 0..{c - 1})")
    return labels
