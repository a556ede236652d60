"""A fast LSTM: the recurrence of :mod:`minimm.functional.recurrent` with fewer array
operations per step.

The same model — gates i, f, g, o, z = x W + h U + b, c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh c' —
computed so that each time step does as little as possible, because the steps are
sequential and small (a (B, 4H) block: Python and per-call overhead matter):

* the gate columns are reordered once per call to (o, i, f, g): the three sigmoid gates are
  one block, so σ(z) = ½ tanh(z/2) + ½ needs one tanh over all 4H columns (the sigmoid
  columns of W, U and b pre-scaled by ½) and two in-place operations on one slice;
* x W + b for all T steps is one matrix product, stored time-major (T, B, 4H) so each step
  reads a contiguous block, and every step writes into preallocated buffers (out=);
* the backward's factors that do not depend on the recurrence — σ'(z) = σ(1 − σ),
  1 − g², 1 − tanh² c — are computed for all T steps at once, before the loop; what is left
  per step is five element-wise operations and δh_{t−1} = δz Uᵀ:

      δh' = δh + ∂L/∂out_t,         δz_o = δh' ⊙ Q_t,        Q = tanh c ⊙ σ'(z_o)
      δc' = δc + δh' ⊙ R_t,          R = o ⊙ (1 − tanh² c)
      δz_{i,f,g} = δc' ⊙ P_t,        P = [g σ'(z_i), c_{t−1} σ'(z_f), i (1 − g²)]
      δc_{t−1} = δc' ⊙ f_t,          δh_{t−1} = δz_t Uᵀ

  ∂L/∂U = Σ_t h_{t−1}ᵀ δz_t and ∂L/∂W = Σ_t x_tᵀ δz_t are one matrix product each.
* With ``lengths``, a padded step keeps the state and outputs zero: its factors P, Q, R
  are zero and f is one, so δz = 0 and δc passes through; δh passes through by one more
  term, (1 − m) ⊙ δh'.

A differentiable backward (``create_graph=True``) is taken from the readable composed
twin, :func:`minimm.functional.recurrent.lstm_simple`.
"""
import numpy as np

from ... import backend
from ...autograd import Function, Tensor, enable_grad, grad, is_grad_enabled
from ..recurrent import _prepare, lstm_simple


def _order(H, xp):
    """Column indices taking the public gate order (i, f, g, o) to (o, i, f, g)."""
    return xp.concatenate([xp.arange(3 * H, 4 * H), xp.arange(0, 3 * H)])


class LSTMFast(Function):
    """The LSTM over x (B, T, in) from (h₀, c₀) with W (in, 4H), U (H, 4H), b (4H,)
    -> (outputs (B, T, H), h_T, c_T); ``masks`` (T, B, 1) booleans or None."""

    def __init__(self, masks=None):
        self.masks = masks

    def forward(self, x, h0, c0, W, U, b):
        xp = backend.get_array_module(x)
        B, T, _ = x.shape
        H = U.shape[0]
        dt = x.dtype.type
        order = _order(H, xp)
        # σ(z) = ½ tanh(z/2) + ½: the o, i, f columns (the first 3H) scaled by ½
        s = xp.ones(4 * H, dtype=x.dtype)
        s[:3 * H] = 0.5
        W_o, U_o, b_o = W[:, order], U[:, order], b[order]
        xt = xp.ascontiguousarray(x.transpose(1, 0, 2)).reshape(T * B, -1)   # time-major
        A = (xt @ (W_o * s)).reshape(T, B, 4 * H)      # ½-scaled x W + b for every step
        A += b_o * s
        U_s = U_o * s
        Hb = xp.empty((T + 1, B, H), dtype=x.dtype)    # h_0 … h_T
        Cb = xp.empty((T + 1, B, H), dtype=x.dtype)
        TC = xp.empty((T, B, H), dtype=x.dtype)        # tanh c_t
        tmp = xp.empty((B, H), dtype=x.dtype)
        Hb[0], Cb[0] = h0, c0
        masks = self.masks
        out = xp.empty((T, B, H), dtype=x.dtype) if masks is not None else None
        for t in range(T):
            a = A[t]                                   # becomes the gate values, in place
            a += Hb[t] @ U_s
            xp.tanh(a, out=a)
            sig = a[:, :3 * H]
            sig *= dt(0.5)
            sig += dt(0.5)
            o, i, f, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            c = Cb[t + 1]
            xp.multiply(f, Cb[t], out=c)
            xp.multiply(i, g, out=tmp)
            c += tmp
            xp.tanh(c, out=TC[t])
            xp.multiply(o, TC[t], out=Hb[t + 1])
            if masks is not None:      # a padded step keeps the state and outputs zero
                m = masks[t]
                xp.multiply(Hb[t + 1], m, out=out[t])
                xp.copyto(Hb[t + 1], Hb[t], where=~m)
                xp.copyto(c, Cb[t], where=~m)
        self.saved = A, Hb, Cb, TC, xt, W_o, U_o, order
        outs = (Hb[1:] if masks is None else out).transpose(1, 0, 2)
        return outs, Hb[T], Cb[T]

    def backward(self, g_out, g_hT, g_cT):
        if is_grad_enabled():   # create_graph: differentiate the composed twin instead
            return self._composed_backward(g_out, g_hT, g_cT)
        A, Hb, Cb, TC, xt, W_o, U_o, order = self.saved
        xp = backend.get_array_module(A)
        T, B, H4 = A.shape
        H = H4 // 4
        o, i, f, g = A[..., :H], A[..., H:2 * H], A[..., 2 * H:3 * H], A[..., 3 * H:]
        # the factors that do not depend on the recurrence, for all steps at once
        dsig = 1 - A[..., :3 * H]
        dsig *= A[..., :3 * H]                         # σ' = σ(1 − σ) for o, i, f
        Q = TC * dsig[..., :H]
        R = 1 - TC * TC
        R *= o
        P = xp.empty((T, B, 3, H), dtype=A.dtype)
        xp.multiply(g, dsig[..., H:2 * H], out=P[:, :, 0])
        xp.multiply(Cb[:T], dsig[..., 2 * H:], out=P[:, :, 1])
        xp.multiply(g, g, out=P[:, :, 2])
        xp.subtract(1, P[:, :, 2], out=P[:, :, 2])
        P[:, :, 2] *= i
        Fk = f
        go = g_out.data.transpose(1, 0, 2)             # (T, B, H), a view
        keep = None
        if self.masks is not None:
            m = self.masks.astype(A.dtype)             # (T, B, 1)
            Q *= m
            R *= m
            P *= m[..., None]
            Fk = xp.where(self.masks, f, A.dtype.type(1))
            go = go * m
            keep = 1 - m
        has_go = bool(go.any())                        # h_T alone is used: no output gradient
        dZ = xp.empty((T, B, H4), dtype=A.dtype)
        dh, dc = g_hT.data.copy(), g_cT.data.copy()
        Ut = U_o.T
        for t in range(T - 1, -1, -1):
            dhn = dh + go[t] if has_go else dh
            dz = dZ[t]
            xp.multiply(dhn, Q[t], out=dz[:, :H])                    # δz_o
            dcn = dhn * R[t]
            dcn += dc                                               # δc'
            xp.multiply(dcn[:, None, :], P[t], out=dz[:, H:].reshape(B, 3, H))  # δz_i,f,g
            dc = xp.multiply(dcn, Fk[t], out=dcn)
            dh_prev = dz @ Ut
            if keep is not None:
                dh_prev += keep[t] * dhn
            dh = dh_prev
        x, h0, c0, W, U, b = self.inputs
        dZ2 = dZ.reshape(T * B, H4)
        gx = gh0 = gc0 = gW = gU = gb = None
        need = self.needs_input_grad

        def unorder(a):                                # columns back to (i, f, g, o)
            out = xp.empty_like(a)
            out[..., order] = a
            return Tensor(out)
        if need[0]:
            gx = Tensor((dZ2 @ W_o.T).reshape(T, B, -1).transpose(1, 0, 2))
        if need[1]:
            gh0 = Tensor(dh)
        if need[2]:
            gc0 = Tensor(dc)
        if need[3]:
            gW = unorder(xt.T @ dZ2)
        if need[4]:
            gU = unorder(Hb[:T].reshape(T * B, H).T @ dZ2)
        if need[5]:
            gb = unorder((xp.ones((1, T * B), dtype=A.dtype) @ dZ2).reshape(H4))
        return gx, gh0, gc0, gW, gU, gb

    def _composed_backward(self, g_out, g_hT, g_cT):
        x, h0, c0, W, U, b = self.inputs
        lengths = None
        if self.masks is not None:
            lengths = backend.to_numpy(self.masks[:, :, 0]).sum(axis=0)
        with enable_grad():
            out, (h, c) = lstm_simple(x, W, U, b, (h0, c0), lengths)
        wanted = [t for t, need in zip(self.inputs, self.needs_input_grad) if need]
        gs = iter(grad([out, h, c], wanted, [g_out, g_hT, g_cT], create_graph=True))
        return tuple(next(gs) if need else None for need in self.needs_input_grad)


def lstm(x, W, U, b=None, state=None, lengths=None):
    """:func:`minimm.functional.lstm` (batch-first, same arguments, same numbers) on the
    fast recurrence -> (outputs (B, T, H), (h_T, c_T))."""
    x, W, U, h, c, masks = _prepare("lstm", x, W, U, b, state, lengths)
    B, T, _ = x.shape
    xp = backend.get_array_module(x)
    if T == 0:
        return Tensor(xp.zeros((B, 0, U.shape[0]), dtype=x.dtype)), (h, c)
    if b is None:
        b = Tensor(xp.zeros(U.shape[1], dtype=x.dtype))
    out, h, c = LSTMFast(masks)(x, h, c, W, U, b)
    return out, (h, c)
