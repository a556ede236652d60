"""The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

One step, gate blocks in order i, f, g, o along the last axis:

    z = x W + h U + b                         (B, 4H)
    i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o)
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')

:func:`lstm_cell` is that step composed from differentiable operations (so its backward is
the chain rule, and twice differentiable); :func:`lstm_simple` loops it over a sequence —
the readable LSTM. :func:`lstm` computes the same numbers with the fused kernel
:class:`~minimm.functional.recurrent_fast.LSTMSequence` (backpropagation through time written
on arrays), whose readable twin is :func:`unroll`.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor, as_tensor
from .activations import sigmoid, tanh
from .dense import linear
from .math import matmul, where
from .recurrent_fast import LSTMSequence  # the fused kernel behind lstm(): lstm_simple's numbers
from .shape import reshape, split, stack, transpose
from .utils import check_float


def lstm_gates(z, c):
    """The cell update from pre-activations z (B, 4H) and the previous cell state c."""
    z_i, z_f, z_g, z_o = split(z, 4, axis=-1)
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c_next = f * c + i * g
    h_next = o * tanh(c_next)
    return h_next, c_next


def lstm_cell(x, h, c, W, U, b=None):
    """One LSTM step composed from differentiable operations -> (h', c')."""
    x, h, c, W, U = (as_tensor(t) for t in (x, h, c, W, U))
    _check_cell("lstm_cell", x, h.shape, c.shape, W, U, b)
    z = matmul(x, W) + matmul(h, U)
    if b is not None:
        z = z + b
    return lstm_gates(z, c)


def _advance(h, c, h_new, c_new, valid):
    """(h, c, output) after one step: the new state, except at a padded step (``valid``
    False), which keeps the old state and outputs zero."""
    if valid is None:
        return h_new, c_new, h_new
    return where(valid, h_new, h), where(valid, c_new, c), where(valid, h_new, 0.0)


def lstm_simple(x, W, U, b=None, state=None, lengths=None):
    """The LSTM over x (B, T, in), step by step from :func:`lstm_cell` -> (outputs (B, T, H),
    (h_T, c_T)); arguments as :func:`lstm`. The readable version of :func:`lstm`, which
    computes the same with the faster fused ``recurrent_fast.LSTMSequence``."""
    x, W, U, h, c, masks = prepare_lstm("lstm", x, W, U, b, state, lengths)
    B, T, _ = x.shape
    if T == 0:
        return _no_steps(x, U, h, c)
    outputs = []
    for t in range(T):
        h, c, out = _advance(h, c, *lstm_cell(x[:, t], h, c, W, U, b),
                             None if masks is None else masks[t])
        outputs.append(out)
    return stack(outputs, axis=1), (h, c)


def unroll(ZX, h, c, U, masks):
    """The LSTM over precomputed ZX = x W + b (B, T, 4H), composed step by step
    -> (outputs, h_T, c_T): the readable twin of the fused ``LSTMSequence``, which
    differentiates it when a differentiable gradient is asked for."""
    T = ZX.shape[1]
    steps = split(transpose(ZX, 1, 0, 2), T, axis=0) if T > 1 else (transpose(ZX, 1, 0, 2),)
    outputs = []
    for t in range(T):
        z = reshape(steps[t], steps[t].shape[1:]) + matmul(h, U)
        h, c, out = _advance(h, c, *lstm_gates(z, c), None if masks is None else masks[t])
        outputs.append(out)
    return stack(outputs, axis=1), h, c


def lstm(x, W, U, b=None, state=None, lengths=None):
    """A batch-first LSTM over x (B, T, in) -> (outputs (B, T, H), (h_T, c_T)).

    ``state`` = (h₀, c₀) (zeros when None). ``lengths`` (integers (B,), 0..T): the state of
    sequence n stops changing after step lengths[n] and outputs at padded steps are zero;
    what the padded steps hold (even NaN) changes neither the outputs nor the gradients.

    The numbers of :func:`lstm_simple`, computed by the fused ``recurrent_fast.LSTMSequence``.
    """
    x, W, U, h, c, masks = prepare_lstm("lstm", x, W, U, b, state, lengths)
    if x.shape[1] == 0:
        return _no_steps(x, U, h, c)
    ZX = linear(x, W, b)  # x W + b for all steps in one matrix product
    out, h, c = LSTMSequence(masks, twin=unroll)(ZX, h, c, U)
    return out, (h, c)


def _no_steps(x, U, h, c):
    """T = 0: no outputs, and the state unchanged."""
    xp = backend.get_array_module(x)
    return Tensor(xp.zeros((x.shape[0], 0, U.shape[0]), dtype=x.dtype)), (h, c)


def prepare_lstm(op, x, W, U, b, state, lengths):
    """Checked inputs, the initial state, and the (T, B, 1) masks of valid steps; the padded
    steps of x are zeroed, so that nothing they hold can reach a gradient (0 · NaN = NaN)."""
    x, W, U = as_tensor(x), as_tensor(W), as_tensor(U)
    if x.ndim != 3:
        raise ValueError(f"{op}: expected input (B, T, input_size), got shape {x.shape}")
    B, T, _ = x.shape
    H = U.shape[0]
    xp = backend.get_array_module(x)
    if state is None:
        h = c = Tensor(xp.zeros((B, H), dtype=x.dtype))
    else:
        h, c = (as_tensor(s) for s in state)
    _check_cell(op, x, h.shape, c.shape, W, U, b)
    if h.shape != (B, H):
        raise ValueError(f"{op}: state must be (h, c) of shape ({B}, {H}) each, got "
                         f"{h.shape} and {c.shape}")
    masks = None
    if lengths is not None:
        masks = _lengths_masks(lengths, B, T, xp, op)
        x = where(masks.transpose(1, 0, 2), x, 0.0)
    return x, W, U, h, c, masks


def _check_cell(op, x, h_shape, c_shape, W, U, b):
    H = U.shape[0]
    if W.ndim != 2 or U.shape != (H, 4 * H) or W.shape[1] != 4 * H:
        raise ValueError(f"{op}: W must be (in, 4H) and U (H, 4H), got W {W.shape} and "
                         f"U {U.shape}")
    if b is not None and tuple(b.shape) != (4 * H,):
        raise ValueError(f"{op}: b must have shape ({4 * H},), got {tuple(b.shape)}")
    if x.shape[-1] != W.shape[0]:
        raise ValueError(f"{op}: x of shape {x.shape} does not match W of shape {W.shape}")
    if h_shape[-1] != H or c_shape != h_shape:
        raise ValueError(f"{op}: h and c must have shape (B, {H}), got h {h_shape} and "
                         f"c {c_shape}")
    check_float(op, x)


def _lengths_masks(lengths, B, T, xp, op):
    """Validated lengths -> (T, B, 1) boolean masks, True at steps t < lengths[n]."""
    lengths = np.asarray(backend.to_numpy(lengths))
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"{op}: lengths must be integers, got dtype {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"{op}: lengths must have shape ({B},) for a batch of {B}, got "
                         f"{lengths.shape}")
    if B and (lengths.min() < 0 or lengths.max() > T):
        bad = int(lengths.min()) if lengths.min() < 0 else int(lengths.max())
        raise ValueError(f"{op}: length {bad} is out of range for sequences of {T} steps "
                         f"(valid: 0..{T})")
    masks = np.arange(T)[:, None, None] < lengths[None, :, None]
    return xp.asarray(masks)
