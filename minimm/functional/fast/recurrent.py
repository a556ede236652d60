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
* the backward (BPTT) works one step at a time on (B, 4H) blocks that stay in the cache,
  into preallocated buffers, with the derivatives of all four gates as one array:

      δh' = δh + ∂L/∂out_t,   δc' = δc + δh' ⊙ o ⊙ (1 − tanh² c_t)
      δz = [δh' ⊙ tanh c_t, δc' ⊙ g, δc' ⊙ c_{t−1}, δc' ⊙ i] ⊙ [σ'(z_o), σ'(z_i), σ'(z_f), 1 − g²]
      δc_{t−1} = δc' ⊙ f,   δh_{t−1} = δz Uᵀ,     σ' = σ(1 − σ)

  (computing the factors for all T steps at once before the loop was measured slower: the
  (T, B, ·) arrays leave the cache, and each pass over them costs more than the per-step
  calls it saves). ∂L/∂U = Σ_t h_{t−1}ᵀ δz_t and ∂L/∂W = Σ_t x_tᵀ δz_t are one matrix
  product each.
* With ``lengths``, a padded step keeps the state and outputs zero, and passes δh and δc
  through unchanged.

A differentiable backward (``create_graph=True``) is taken from the readable composed
twin, :func:`minimm.functional.recurrent.lstm_simple`.
"""

from ... import backend
from ...autograd import Function, Tensor, enable_grad, grad, is_grad_enabled
from ..recurrent import prepare_lstm, lstm_simple


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
        dt = A.dtype.type
        go = g_out.data.transpose(1, 0, 2)             # (T, B, H), a view
        has_go = bool(go.any())                        # h_T alone is used: no output gradient
        dZ = xp.empty((T, B, H4), dtype=A.dtype)
        D = xp.empty((B, H4), dtype=A.dtype)           # the gates' derivatives, per step
        dh, dc = g_hT.data.copy(), g_cT.data.copy()
        Ut = U_o.T
        masks = self.masks
        for t in range(T - 1, -1, -1):
            Gt = A[t]
            o, i, f, g = Gt[:, :H], Gt[:, H:2 * H], Gt[:, 2 * H:3 * H], Gt[:, 3 * H:]
            dhn = dh + go[t] if has_go else dh
            if masks is not None:      # a padded step: the state passed through unchanged
                m = masks[t]
                keep_h, keep_c = xp.where(m, dt(0), dh), xp.where(m, dt(0), dc)
                dhn = dhn * m
                dc = dc * m
            dz = dZ[t]
            xp.multiply(dhn, TC[t], out=dz[:, :H])                   # δo (before σ')
            dcn = TC[t] * TC[t]
            xp.subtract(dt(1), dcn, out=dcn)
            dcn *= o
            dcn *= dhn
            dcn += dc                                                # δc'
            xp.multiply(dcn, g, out=dz[:, H:2 * H])                  # δi
            xp.multiply(dcn, Cb[t], out=dz[:, 2 * H:3 * H])          # δf
            xp.multiply(dcn, i, out=dz[:, 3 * H:])                   # δg
            xp.subtract(dt(1), Gt, out=D)                            # σ' = σ(1 − σ) …
            D *= Gt
            Dg = D[:, 3 * H:]
            xp.multiply(g, g, out=Dg)                                # … and tanh' = 1 − g²
            xp.subtract(dt(1), Dg, out=Dg)
            dz *= D                                                  # δz
            dc = xp.multiply(dcn, f, out=dcn)
            dh = dz @ Ut
            if masks is not None:
                dh += keep_h
                dc += keep_c
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
    x, W, U, h, c, masks = prepare_lstm("lstm", x, W, U, b, state, lengths)
    B, T, _ = x.shape
    xp = backend.get_array_module(x)
    if T == 0:
        return Tensor(xp.zeros((B, 0, U.shape[0]), dtype=x.dtype)), (h, c)
    if b is None:
        b = Tensor(xp.zeros(U.shape[1], dtype=x.dtype))
    out, h, c = LSTMFast(masks)(x, h, c, W, U, b)
    return out, (h, c)
