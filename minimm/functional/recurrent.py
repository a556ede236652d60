"""The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

One step, gate blocks in order i, f, g, o along the last axis:

    z = x W + h U + b                         (B, 4H)
    i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o)
    c' = f ⊙ c + i ⊙ g
    h' = o ⊙ tanh(c')

:func:`lstm_cell` is that step composed from differentiable operations (twice
differentiable). :func:`lstm` runs a whole sequence as *one* Function, :class:`LSTMSequence`,
whose backward is backpropagation through time written on arrays: about 15 Python-level
operations per step instead of about 40 Functions, and ∂L/∂U as one matrix product over all
steps. :func:`lstm_simple` is its composed twin (a loop of :func:`lstm_cell`), kept as the
test oracle; the fused backward falls back to the composed graph when a differentiable
gradient is asked for (``create_graph=True``).
"""
import numpy as np

from .. import backend
from ..autograd import Function, Tensor, as_tensor, grad, is_grad_enabled
from .activations import sigmoid, tanh
from .math import matmul, where
from .nn_ops import linear
from .shape import reshape, split, stack, transpose


def _check_cell(op, x_shape, h_shape, c_shape, W, U, b):
    H = U.shape[0]
    if W.ndim != 2 or U.shape != (H, 4 * H) or W.shape[1] != 4 * H:
        raise ValueError(f"{op}: W must be (in, 4H) and U (H, 4H), got W {W.shape} and "
                         f"U {U.shape}")
    if b is not None and tuple(b.shape) != (4 * H,):
        raise ValueError(f"{op}: b must have shape ({4 * H},), got {tuple(b.shape)}")
    if x_shape[-1] != W.shape[0]:
        raise ValueError(f"{op}: x of shape {x_shape} does not match W of shape {W.shape}")
    if h_shape[-1] != H or c_shape != h_shape:
        raise ValueError(f"{op}: h and c must have shape (B, {H}), got h {h_shape} and "
                         f"c {c_shape}")


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
    _check_cell("lstm_cell", x.shape, h.shape, c.shape, W, U, b)
    z = matmul(x, W) + matmul(h, U)
    if b is not None:
        z = z + b
    return lstm_gates(z, c)


lstm_cell_simple = lstm_cell  # the composed cell *is* the reference; the fused path is lstm()


def _unroll(ZX, h, c, U, masks):
    """Composed unroll over precomputed ZX = x W + b (B, T, 4H): the fused Function's twin."""
    T = ZX.shape[1]
    steps = split(transpose(ZX, 1, 0, 2), T, axis=0) if T > 1 else (transpose(ZX, 1, 0, 2),)
    outputs = []
    for t in range(T):
        z = reshape(steps[t], steps[t].shape[1:]) + matmul(h, U)
        h, c, out = _advance(h, c, *lstm_gates(z, c), None if masks is None else masks[t])
        outputs.append(out)
    return stack(outputs, axis=1), h, c


def _advance(h, c, h_new, c_new, valid):
    """(h, c, output) after one step: the new state, except at a padded step (``valid``
    False), which keeps the old state and outputs zero."""
    if valid is None:
        return h_new, c_new, h_new
    return where(valid, h_new, h), where(valid, c_new, c), where(valid, h_new, 0.0)


class LSTMSequence(Function):
    """The LSTM over T steps from ZX = x W + b (B, T, 4H), h₀, c₀ (B, H) and U (H, 4H)
    -> (outputs (B, T, H), h_T, c_T). With ``masks`` ((T, B, 1) booleans, True while a
    sequence is valid) a padded step keeps the state and outputs zero.

    Backward (BPTT), for t = T … 1, with δh, δc the gradients reaching h_t, c_t:
        δh' = δh + ∂L/∂out_t,      δo = δh' ⊙ tanh c_t
        δc' = δc + δh' ⊙ o ⊙ (1 − tanh² c_t)
        δi = δc' ⊙ g, δf = δc' ⊙ c_{t−1}, δg = δc' ⊙ i,   δc_{t−1} = δc' ⊙ f
        δz = [δi σ'(z_i), δf σ'(z_f), δg (1 − g²), δo σ'(z_o)],  σ' = σ(1 − σ)
        δh_{t−1} = δz Uᵀ,   ∂L/∂ZX_t = δz,   ∂L/∂U = Σ_t h_{t−1}ᵀ δz_t
    """

    def __init__(self, masks=None):
        self.masks = masks

    def forward(self, ZX, h0, c0, U):
        xp = backend.get_array_module(ZX)
        B, T, H4 = ZX.shape
        H = H4 // 4
        dt = ZX.dtype.type
        # σ(z) = ½ tanh(z/2) + ½: scaling the i, f, o columns by ½ lets one tanh over all
        # 4H columns serve the three sigmoids and the g block at once. The scaling is done
        # per step on z (B, 4H), not once on ZX (B, T, 4H): a pass over a cache-sized block
        # instead of a fresh copy of the whole sequence.
        s = xp.full(H4, 0.5, dtype=ZX.dtype)
        s[2 * H:3 * H] = 1
        G = xp.empty((T, B, H4), dtype=ZX.dtype)      # gate values i, f, g, o per step
        Hbuf = xp.empty((T + 1, B, H), dtype=ZX.dtype)  # h_0 … h_T (the states, masked)
        Cbuf = xp.empty((T + 1, B, H), dtype=ZX.dtype)
        TC = xp.empty((T, B, H), dtype=ZX.dtype)        # tanh of the new cell value
        out = xp.empty((T, B, H), dtype=ZX.dtype) if self.masks is not None else None
        Hbuf[0], Cbuf[0] = h0, c0
        for t in range(T):
            a = Hbuf[t] @ U
            a += ZX[:, t]
            a *= s
            xp.tanh(a, out=a)
            Gt = G[t]
            xp.multiply(a, dt(0.5), out=Gt)
            Gt += dt(0.5)
            Gt[:, 2 * H:3 * H] = a[:, 2 * H:3 * H]
            i, f, g, o = Gt[:, :H], Gt[:, H:2 * H], Gt[:, 2 * H:3 * H], Gt[:, 3 * H:]
            c_new = xp.multiply(f, Cbuf[t], out=Cbuf[t + 1] if self.masks is None else None)
            c_new += i * g
            xp.tanh(c_new, out=TC[t])
            if self.masks is None:  # outputs are the states: h_t lives in Hbuf[t + 1]
                xp.multiply(o, TC[t], out=Hbuf[t + 1])
            else:
                m = self.masks[t]
                h_new = o * TC[t]
                Hbuf[t + 1] = xp.where(m, h_new, Hbuf[t])
                Cbuf[t + 1] = xp.where(m, c_new, Cbuf[t])
                out[t] = xp.where(m, h_new, 0)
        if self.masks is None:
            out = Hbuf[1:]
        self.saved = G, Hbuf, Cbuf, TC
        return out.transpose(1, 0, 2).copy(), Hbuf[T].copy(), Cbuf[T].copy()

    def backward(self, g_out, g_hT, g_cT):
        if is_grad_enabled():  # create_graph: differentiate the composed twin instead
            return self._composed_backward(g_out, g_hT, g_cT)
        ZX, h0, c0, U = self.inputs
        G, Hbuf, Cbuf, TC = self.saved
        xp = backend.get_array_module(ZX)
        T, B, H4 = G.shape
        H = H4 // 4
        # ∂L/∂ZX in ZX's own (B, T, 4H) order, filled one step (a strided (B, 4H) view) at a
        # time: the linear map x W + b below receives it contiguous and reshapes for free
        dZ = xp.empty((B, T, H4), dtype=ZX.dtype)
        dh, dc = g_hT.data.copy(), g_cT.data.copy()
        g_out = g_out.data
        Ut = U.data.T
        dt = ZX.dtype.type
        dTC = 1 - TC * TC
        for t in range(T - 1, -1, -1):
            Gt = G[t]
            i, f, g, o = Gt[:, :H], Gt[:, H:2 * H], Gt[:, 2 * H:3 * H], Gt[:, 3 * H:]
            dh_new = dh + g_out[:, t]
            if self.masks is not None:  # padded step: the state passed through unchanged
                m = self.masks[t]
                dh_keep, dc_keep = xp.where(m, 0, dh), xp.where(m, 0, dc)
                dh_new *= m
                dc = dc * m
            dz = dZ[:, t]
            xp.multiply(dh_new, TC[t], out=dz[:, 3 * H:])             # δo
            dc_new = dh_new * o
            dc_new *= dTC[t]
            dc_new += dc                                              # δc'
            xp.multiply(dc_new, g, out=dz[:, :H])                     # δi
            xp.multiply(dc_new, Cbuf[t], out=dz[:, H:2 * H])          # δf
            xp.multiply(dc_new, i, out=dz[:, 2 * H:3 * H])            # δg
            dc = dc_new * f
            # the gates' derivatives σ' = σ(1 − σ) (i, f, o) and tanh' = 1 − g² (g), per
            # step: passes over a cache-sized (B, 4H) block rather than a (T, B, 4H) array
            D = 1 - Gt
            D *= Gt
            Dg = D[:, 2 * H:3 * H]
            xp.multiply(g, g, out=Dg)
            xp.subtract(dt(1), Dg, out=Dg)
            dz *= D                                                   # δz
            dh = dz @ Ut
            if self.masks is not None:
                dh += dh_keep
                dc += dc_keep
        gU = None
        if self.needs_input_grad[3]:
            H_prev = Hbuf[:T].transpose(1, 0, 2).reshape(B * T, H)   # h_{t−1}, (B, T) order
            gU = Tensor(H_prev.T @ dZ.reshape(B * T, H4))
        return Tensor(dZ), Tensor(dh), Tensor(dc), gU

    def _composed_backward(self, g_out, g_hT, g_cT):
        outs = _unroll(*self.inputs, self.masks)
        wanted = [x for x, need in zip(self.inputs, self.needs_input_grad) if need]
        gs = iter(grad(list(outs), wanted, [g_out, g_hT, g_cT], create_graph=True))
        return tuple(next(gs) if need else None for need in self.needs_input_grad)


def _lengths_masks(lengths, B, T, xp, op):
    """Validated lengths -> (T, B, 1) boolean masks, True at steps t < lengths[n]."""
    lengths = backend.unwrap(lengths)
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


def _prepare(op, x, W, U, b, state, lengths):
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
    _check_cell(op, x.shape, h.shape, c.shape, W, U, b)
    if h.shape != (B, H):
        raise ValueError(f"{op}: state must be (h, c) of shape ({B}, {H}) each, got "
                         f"{h.shape} and {c.shape}")
    masks = None if lengths is None else _lengths_masks(lengths, B, T, xp, op)
    return x, W, U, h, c, masks


def lstm(x, W, U, b=None, state=None, lengths=None):
    """A batch-first LSTM over x (B, T, in) -> (outputs (B, T, H), (h_T, c_T)), fused.

    ``state`` = (h₀, c₀) (zeros when None). ``lengths`` (integers (B,), 0..T): the state of
    sequence n stops changing after step lengths[n] and outputs at padded steps are zero.
    """
    x, W, U, h, c, masks = _prepare("lstm", x, W, U, b, state, lengths)
    B, T, _ = x.shape
    if T == 0:
        xp = backend.get_array_module(x)
        return Tensor(xp.zeros((B, 0, U.shape[0]), dtype=x.dtype)), (h, c)
    ZX = linear(x, W, b)  # x W + b for all steps in one matrix product
    out, h, c = LSTMSequence(masks)(ZX, h, c, U)
    return out, (h, c)


def lstm_simple(x, W, U, b=None, state=None, lengths=None):
    """:func:`lstm` composed step by step from :func:`lstm_cell` (the reference)."""
    x, W, U, h, c, masks = _prepare("lstm", x, W, U, b, state, lengths)
    B, T, _ = x.shape
    outputs = []
    for t in range(T):
        h, c, out = _advance(h, c, *lstm_cell(x[:, t], h, c, W, U, b),
                             None if masks is None else masks[t])
        outputs.append(out)
    if T == 0:
        xp = backend.get_array_module(x)
        return Tensor(xp.zeros((B, 0, U.shape[0]), dtype=x.dtype)), (h, c)
    return stack(outputs, axis=1), (h, c)
