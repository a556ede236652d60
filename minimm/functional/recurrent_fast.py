"""The fused LSTM kernel behind :func:`minimm.functional.lstm`: a whole sequence as one
Function whose backward is backpropagation through time written on arrays (a few array
operations per step instead of a graph of Functions, and ∂L/∂U as one matrix product over all
steps).

Readable twin: :func:`minimm.functional.recurrent.unroll` (and :func:`lstm_simple` around
it), passed in as ``twin``; ``tests/test_lstm.py`` checks values and gradients against it on
every backend. Measurements are in ``benchmarks/NOTES.md``.
"""
from .. import backend
from ..autograd import Function, Tensor, grad, is_grad_enabled


class LSTMSequence(Function):
    """The LSTM over T steps from ZX = x W + b (B, T, 4H), h₀, c₀ (B, H) and U (H, 4H)
    -> (outputs (B, T, H), h_T, c_T). With ``masks`` ((T, B, 1) booleans, True while a
    sequence is valid) a padded step keeps the state and outputs zero. ``twin(ZX, h₀, c₀, U,
    masks)`` computes the same composed from differentiable operations; a differentiable
    gradient (``create_graph=True``) is taken through it.

    Backward (BPTT), for t = T … 1, with δh, δc the gradients reaching h_t, c_t:
        δh' = δh + ∂L/∂out_t,      δo = δh' ⊙ tanh c_t
        δc' = δc + δh' ⊙ o ⊙ (1 − tanh² c_t)
        δi = δc' ⊙ g, δf = δc' ⊙ c_{t−1}, δg = δc' ⊙ i,   δc_{t−1} = δc' ⊙ f
        δz = [δi σ'(z_i), δf σ'(z_f), δg (1 − g²), δo σ'(z_o)],  σ' = σ(1 − σ)
        δh_{t−1} = δz Uᵀ,   ∂L/∂ZX_t = δz,   ∂L/∂U = Σ_t h_{t−1}ᵀ δz_t
    At a padded step δh and δc pass through unchanged and δz = 0.
    """

    def __init__(self, masks=None, twin=None):
        self.masks, self.twin = masks, twin

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
        outs = self.twin(*self.inputs, self.masks)
        wanted = [x for x, need in zip(self.inputs, self.needs_input_grad) if need]
        gs = iter(grad(list(outs), wanted, [g_out, g_hT, g_cT], create_graph=True))
        return tuple(next(gs) if need else None for need in self.needs_input_grad)
