"""Multi-head attention as one Function: the article's formulas (1) and (2) (§4.1.1–4.1.2),

    MultiHead(q, k, v) = Concat(head_1, …, head_h) W_o + b_o,
    head_i = softmax(Q_i K_iᵀ / √d_k) V_i,   Q = q W_q + b_q,  K = k W_k + b_k,  V = v W_v + b_v,

with the backward written out on arrays instead of recorded step by step. The readable
version (:class:`minimm.nn.MultiHeadAttention` over
:func:`minimm.functional.scaled_dot_product_attention`) records about fifteen Functions,
each with its own copy (the heads split and merged by transposes, the scale applied to Q,
the softmax's temporaries). Here:

* self-attention (q, k, v the same tensor) projects with one product by [W_q W_k W_v]
  (d_model, 3·d_model); the 1/√d_k is folded into W_q and b_q;
* the heads are never copied: Q_i, K_i, V_i are strided views of the projection
  (B, L, 3, h, d_k), which the batched matrix products read as they are, and the heads'
  outputs are written straight into the (B, L, h, d_k) = (B, L, d_model) layout W_o reads;
* the softmax's row sums are matrix products with a ones vector (a BLAS call, faster than
  NumPy's reduction over rows of 64); the row maximum uses ``maximum.reduceat``;
* the backward uses FlashAttention's identity for the softmax: with P = softmax(S) and
  O = P V,  Σ_j ∂L/∂P_ij P_ij = Σ_d ∂L/∂O_id O_id,  so
      ∂L/∂S = P ⊙ (∂L/∂P − rowsum(∂L/∂O ⊙ O))
  costs two passes over the (B, h, L_q, L_k) scores; the rest are matrix products:
      ∂L/∂V_i = P_iᵀ ∂L/∂O_i,  ∂L/∂Q_i = ∂L/∂S_i K_i,  ∂L/∂K_i = ∂L/∂S_iᵀ Q_i,
      ∂L/∂W = inputᵀ ∂L/∂(projection),  ∂L/∂input = ∂L/∂(projection) Wᵀ.

Masks (boolean, True = may attend, broadcastable to (B, h, L_q, L_k)) are supported, a
fully masked row giving zero weights; dropout is not (the module falls back to the readable
path). A differentiable backward (``create_graph=True``) is taken from the readable path.
"""
import contextlib
import math

import numpy as np

from ... import backend
from ...autograd import Function, Tensor, enable_grad, grad, is_grad_enabled
from ..attention_fast import row_max


def _rowsum(a, xp):
    """Σ over the last axis, keepdims, as a product with ones (one BLAS call)."""
    return a @ xp.ones((a.shape[-1], 1), dtype=a.dtype)


def _matmul_into(a, b, out, xp):
    """out[...] = a @ b, written in place when the backend allows a strided ``out``."""
    if xp is np:
        np.matmul(a, b, out=out)
    else:
        out[...] = a @ b


# the backward forms ∂L/∂S (B, h, L_q, L_k) for this many bytes' worth of batch rows at a
# time, so that its temporaries stay small beside the weights the module keeps
SCORES_CHUNK_BYTES = 2 ** 20


def _softmax_rows(S, mask, xp):
    """S ← softmax(S + mask) over the last axis, in place; a row with no allowed entry
    (mask all −∞) becomes 0."""
    quiet = (np.errstate(invalid="ignore", over="ignore") if xp is np
             else contextlib.nullcontext())
    with quiet:
        if mask is not None:
            S += mask
        m = row_max(S)
        if mask is not None:
            m = xp.where(xp.isfinite(m), m, S.dtype.type(0))          # a fully masked row
        S -= m
        xp.exp(S, out=S)
        s = _rowsum(S, xp)
        if mask is not None:
            s = xp.where(s > 0, s, s.dtype.type(1))                   # 0 / 1 = 0
        S /= s


def _heads_backward(P, gO, O, Q, K, V, gQ, gK, gV, xp):
    """∂L/∂Q_i, ∂L/∂K_i, ∂L/∂V_i (written into gQ, gK, gV, all (B, h, L, d_k) views) from the
    weights P, ∂L/∂O and O, a few batch rows at a time:

        r = rowsum(∂L/∂O ⊙ O),  ∂L/∂S = P ⊙ (∂L/∂O Vᵀ − r),
        ∂L/∂Q = ∂L/∂S K,  ∂L/∂K = ∂L/∂Sᵀ Q,  ∂L/∂V = Pᵀ ∂L/∂O."""
    B = P.shape[0]
    step = max(1, SCORES_CHUNK_BYTES // max(1, P[0].size * P.itemsize))
    for b0 in range(0, B, step):
        s = slice(b0, b0 + step)
        r = _rowsum(gO[s] * O[s], xp)            # Σ_d ∂L/∂O ⊙ O = Σ_j ∂L/∂P ⊙ P
        gS = gO[s] @ V[s].transpose(0, 1, 3, 2)  # ∂L/∂P
        gS -= r
        gS *= P[s]                               # ∂L/∂S (of the scaled scores)
        _matmul_into(gS, K[s], gQ[s], xp)
        _matmul_into(gS.transpose(0, 1, 3, 2), Q[s], gK[s], xp)
        _matmul_into(P[s].transpose(0, 1, 3, 2), gO[s], gV[s], xp)


class MultiHeadAttentionFast(Function):
    """y = Concat_i(softmax(Q_i K_iᵀ/√d_k) V_i) W_o + b_o for inputs (x, W_q, W_k, W_v, W_o,
    b_q, b_k, b_v, b_o) when ``self_attention`` (q = k = v = x), else (q, k, v, W_q, …).
    After the forward, ``weights`` holds the attention weights (B, h, L_q, L_k)."""

    def __init__(self, num_heads, allowed=None, self_attention=True):
        self.h, self.allowed, self.self_attention = int(num_heads), allowed, self_attention

    def forward(self, *arrays):
        n_in = 1 if self.self_attention else 3
        ins, (W_q, W_k, W_v, W_o, b_q, b_k, b_v, b_o) = arrays[:n_in], arrays[n_in:]
        q = ins[0]
        xp = backend.get_array_module(q)
        B, L_q, E = q.shape
        L_k = ins[-1].shape[1]
        h, d = self.h, E // self.h
        self.scale = scale = q.dtype.type(1.0 / math.sqrt(d))
        if self.self_attention:
            x2 = q.reshape(B * L_q, E)
            W_qkv = xp.concatenate([W_q * scale, W_k, W_v], axis=1)        # (E, 3E)
            b_qkv = xp.concatenate([b_q * scale, b_k, b_v])
            QKV = (x2 @ W_qkv).reshape(B, L_q, 3, h, d)
            QKV += b_qkv.reshape(3, h, d)
            Qh, Kh, Vh = (QKV[:, :, j].transpose(0, 2, 1, 3) for j in range(3))  # views
            self.saved_in = (x2, W_qkv, QKV)
        else:
            k, v = ins[1], ins[2]
            proj = []
            for t, W, b in ((q, W_q * scale, b_q * scale), (k, W_k, b_k), (v, W_v, b_v)):
                P_ = (t.reshape(-1, E) @ W).reshape(t.shape[0], t.shape[1], h, d)
                P_ += b.reshape(h, d)
                proj.append(P_)
            Qh, Kh, Vh = (p.transpose(0, 2, 1, 3) for p in proj)
            self.saved_in = tuple(proj)
        S = xp.empty((B, h, L_q, L_k), dtype=q.dtype)                    # becomes P
        O = xp.empty((B, L_q, h, d), dtype=q.dtype)
        Oh = O.transpose(0, 2, 1, 3)                                     # heads, merged
        mask = (None if self.allowed is None else
                xp.where(self.allowed, q.dtype.type(0), q.dtype.type(-np.inf)))
        # a few batch rows at a time, so that the softmax's passes run in the cache
        step = max(1, SCORES_CHUNK_BYTES // max(1, S[0].size * S.itemsize))
        for b0 in range(0, B, step):
            c = slice(b0, b0 + step)
            _matmul_into(Qh[c], Kh[c].transpose(0, 1, 3, 2), S[c], xp)  # Q Kᵀ / √d_k
            _softmax_rows(S[c], None if mask is None else
                          (mask[c] if mask.ndim == 4 and mask.shape[0] == B else mask), xp)
            _matmul_into(S[c], Vh[c], Oh[c], xp)                         # P V
        O2 = O.reshape(B * L_q, E)
        y = O2 @ W_o
        y += b_o
        self.P, self.O2, self.heads = S, O2, (Qh, Kh, Vh)
        self.weights = S
        return y.reshape(B, L_q, E)

    def backward(self, gy):
        if is_grad_enabled():
            return self._composed_backward(gy)
        n_in = 1 if self.self_attention else 3
        W_q, W_k, W_v, W_o = (t.data for t in self.inputs[n_in:n_in + 4])
        xp = backend.get_array_module(gy.data)
        P, O2, (Qh, Kh, Vh) = self.P, self.O2, self.heads
        B, h, L_q, L_k = P.shape
        E = O2.shape[1]
        d = E // h
        gy2 = gy.data.reshape(B * L_q, E)
        gW_o = O2.T @ gy2
        gb_o = _rowsum(gy2.T, xp).reshape(E)
        gO = (gy2 @ W_o.T).reshape(B, L_q, h, d).transpose(0, 2, 1, 3)   # (B, h, L_q, d)
        Oh = O2.reshape(B, L_q, h, d).transpose(0, 2, 1, 3)
        scale = self.scale
        if self.self_attention:
            x2, W_qkv, QKV = self.saved_in
            gQKV = xp.empty(QKV.shape, dtype=QKV.dtype)               # (B, L, 3, h, d)
            heads = [gQKV[:, :, j].transpose(0, 2, 1, 3) for j in range(3)]
        else:
            L_k = Kh.shape[2]
            blocks = [xp.empty((B, L, h, d), dtype=P.dtype) for L in (L_q, L_k, L_k)]
            heads = [b_.transpose(0, 2, 1, 3) for b_ in blocks]
        _heads_backward(P, gO, Oh, Qh, Kh, Vh, *heads, xp)
        if self.self_attention:
            g2 = gQKV.reshape(B * L_q, 3 * E)
            gx = g2 @ W_qkv.T
            gW = x2.T @ g2
            gb = _rowsum(g2.T, xp).reshape(3 * E)
            gWs = [gW[:, :E] * scale, gW[:, E:2 * E], gW[:, 2 * E:]]
            gbs = [gb[:E] * scale, gb[E:2 * E], gb[2 * E:]]
            gxs = [Tensor(gx.reshape(B, L_q, E))]
        else:
            gxs, gWs, gbs = [], [], []
            for t, Wt, b_, sc in zip(self.inputs[:3], (W_q, W_k, W_v), blocks,
                                     (scale, 1, 1)):
                g2 = b_.reshape(-1, E)
                gxs.append(Tensor((g2 @ (Wt.T * sc)).reshape(t.shape)))
                gWs.append(t.data.reshape(-1, E).T @ g2 * sc)
                gbs.append(_rowsum(g2.T, xp).reshape(E) * sc)
        need = self.needs_input_grad
        out = [g if need[i] else None for i, g in enumerate(gxs)]
        out += [Tensor(g) if need[n_in + i] else None for i, g in enumerate(gWs + [gW_o])]
        out += [Tensor(g) if need[n_in + 4 + i] else None for i, g in enumerate(gbs + [gb_o])]
        self.P = self.O2 = self.heads = self.saved_in = None
        return tuple(out)

    def _composed_backward(self, gy):
        from ..attention import scaled_dot_product_attention
        from ..dense import linear
        from ..shape import reshape, transpose
        n_in = 1 if self.self_attention else 3
        ins = list(self.inputs[:n_in]) * (3 if self.self_attention else 1)
        W_q, W_k, W_v, W_o, b_q, b_k, b_v, b_o = self.inputs[n_in:]
        h = self.h

        def split(t):
            B, L, E = t.shape
            return transpose(reshape(t, (B, L, h, E // h)), 0, 2, 1, 3)
        with enable_grad():
            heads, _ = scaled_dot_product_attention(
                split(linear(ins[0], W_q, b_q)), split(linear(ins[1], W_k, b_k)),
                split(linear(ins[2], W_v, b_v)), mask=self.allowed)
            B, _, L, d = heads.shape
            y = linear(reshape(transpose(heads, 0, 2, 1, 3), (B, L, h * d)), W_o, b_o)
        wanted = [t for t, need in zip(self.inputs, self.needs_input_grad) if need]
        gs = iter(grad(y, wanted, gy, create_graph=True))
        return tuple(next(gs) if need else None for need in self.needs_input_grad)


def multi_head_attention(q, k, v, W_q, W_k, W_v, W_o, b_q, b_k, b_v, b_o, num_heads,
                         allowed=None):
    """MultiHead(q, k, v) as one Function -> (y (B, L_q, d_model), weights (B, h, L_q, L_k)).
    Self-attention when q, k and v are the same tensor (one fused projection)."""
    if q is k and k is v:
        fn = MultiHeadAttentionFast(num_heads, allowed, self_attention=True)
        y = fn(q, W_q, W_k, W_v, W_o, b_q, b_k, b_v, b_o)
    else:
        fn = MultiHeadAttentionFast(num_heads, allowed, self_attention=False)
        y = fn(q, k, v, W_q, W_k, W_v, W_o, b_q, b_k, b_v, b_o)
    return y, fn.weights

