"""Multi-head attention, the article's formula (2) (§4.1.2):

    MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O,
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

The h per-head projections W_i^Q (d_model, d_k), d_k = d_model / h, sit side by side as the
column blocks of one matrix W_q (d_model, d_model), so all heads are projected by one matrix
product and then split: columns i·d_k … (i+1)·d_k of Q W_q are Q W_i^Q. Likewise W_k, W_v;
W_o (d_model, d_model) maps the concatenated heads back.
"""
import math

from .. import backend
from .. import functional as F
from . import init
from .module import Module, Parameter


class MultiHeadAttention(Module):
    """MultiHead(q, k, v) = Concat(head_1, …, head_h) W_o + b_o with
    head_i = Attention(q W_i^Q + b_i^Q, k W_i^K + b_i^K, v W_i^V + b_i^V), inputs batch-first.

    Parameters: ``W_q, W_k, W_v, W_o`` each (d_model, d_model), biases ``b_q, b_k, b_v, b_o``
    (d_model,) (None with ``bias=False``). Initialised as PyTorch's ``nn.MultiheadAttention``:
    W_q, W_k, W_v Xavier-uniform as the blocks of one (d_model, 3·d_model) in-projection,
    W_o U(±1/√d_model), biases zero. ``dropout`` drops attention weights in training mode.

    After each call, ``attn_weights`` holds the attention weights (B, h, L_q, L_k) as a
    backend array (NumPy or CuPy; ``mm.to_numpy`` for plotting), before dropout.
    """

    def __init__(self, d_model, num_heads, bias=True, dropout=0.0, rng=None):
        super().__init__()
        d_model, num_heads = int(d_model), int(num_heads)
        if num_heads <= 0 or d_model % num_heads:
            raise ValueError(f"MultiHeadAttention: d_model={d_model} must be divisible by "
                             f"num_heads={num_heads} (each head gets d_model / num_heads "
                             f"dimensions)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout}")
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.dropout, self.rng = float(dropout), rng
        E = d_model
        for name in ("W_q", "W_k", "W_v"):
            setattr(self, name, Parameter(init.xavier_uniform((E, E), fan_in=E, fan_out=3 * E,
                                                              rng=rng)))
        self.W_o = Parameter(init.uniform((E, E), -1 / math.sqrt(E), 1 / math.sqrt(E), rng))
        for name in ("b_q", "b_k", "b_v", "b_o"):
            setattr(self, name, Parameter(init.zeros((E,))) if bias else None)
        self.attn_weights = None

    def _split_heads(self, x):
        """(B, L, d_model) -> (B, h, L, d_k): head i takes columns i·d_k … (i+1)·d_k."""
        B, L, _ = x.shape
        return F.transpose(F.reshape(x, (B, L, self.num_heads, self.d_k)), 0, 2, 1, 3)

    def _merge_heads(self, x):
        """(B, h, L, d_k) -> (B, L, h·d_k): Concat(head_1, …, head_h) along the features."""
        B, h, L, d_k = x.shape
        return F.reshape(F.transpose(x, 0, 2, 1, 3), (B, L, h * d_k))

    def _check(self, q, k, v):
        name = "MultiHeadAttention"
        for arg, t in (("q", q), ("k", k), ("v", v)):
            if t.ndim != 3 or t.shape[-1] != self.d_model:
                raise ValueError(f"{name}: {arg} must have shape (B, L, d_model={self.d_model}), "
                                 f"got {t.shape}")
        if not q.shape[0] == k.shape[0] == v.shape[0]:
            raise ValueError(f"{name}: q, k and v must have the same batch size, got "
                             f"{q.shape}, {k.shape} and {v.shape}")
        if k.shape[1] != v.shape[1]:
            raise ValueError(f"{name}: k and v must have the same length L_k, got k {k.shape} "
                             f"and v {v.shape}")

    def _combined_mask(self, mask, key_padding_mask, B, L_k, xp):
        """One boolean mask (True = may attend) broadcastable to (B, h, L_q, L_k)."""
        allowed = None
        if mask is not None:
            mask = xp.asarray(backend.unwrap(mask))
            if mask.ndim == 3:       # (B, L_q, L_k): the same for every head
                mask = mask[:, None]
            if mask.ndim not in (2, 4):
                raise ValueError(f"MultiHeadAttention: mask must have shape (L_q, L_k), "
                                 f"(B, L_q, L_k) or (B, h, L_q, L_k), got {mask.shape}")
            allowed = mask
        if key_padding_mask is not None:
            kpm = xp.asarray(backend.unwrap(key_padding_mask))
            if kpm.shape != (B, L_k) or kpm.dtype != bool:
                raise ValueError(f"MultiHeadAttention: key_padding_mask must be boolean of "
                                 f"shape (B, L_k) = ({B}, {L_k}), True at padding; got "
                                 f"{kpm.dtype} {kpm.shape}")
            keep = ~kpm[:, None, None, :]                       # (B, 1, 1, L_k)
            allowed = keep if allowed is None else allowed & keep
        return allowed

    def forward(self, q, k, v, mask=None, key_padding_mask=None, causal=False):
        """q (B, L_q, d_model), k and v (B, L_k, d_model) -> (B, L_q, d_model).

        ``mask``: boolean, True where attention is allowed, of shape (L_q, L_k),
        (B, L_q, L_k) or (B, h, L_q, L_k). ``key_padding_mask``: boolean (B, L_k), True at
        padded keys (PyTorch's convention). ``causal=True`` hides the future.
        """
        self._check(q, k, v)
        B, L_k = q.shape[0], k.shape[1]
        Q = self._split_heads(F.linear(q, self.W_q, self.b_q))   # Q W_i^Q  (B, h, L_q, d_k)
        K = self._split_heads(F.linear(k, self.W_k, self.b_k))   # K W_i^K  (B, h, L_k, d_k)
        V = self._split_heads(F.linear(v, self.W_v, self.b_v))   # V W_i^V  (B, h, L_k, d_k)
        allowed = self._combined_mask(mask, key_padding_mask, B, L_k,
                                      backend.get_array_module(Q))
        heads, weights = F.scaled_dot_product_attention(          # head_i, all i at once
            Q, K, V, mask=allowed, causal=causal,
            dropout=self.dropout if self.training else 0.0, rng=self.rng)
        self.attn_weights = weights.data
        return F.linear(self._merge_heads(heads), self.W_o, self.b_o)   # Concat(heads) W^O

    def extra_repr(self):
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, "
                f"bias={self.b_q is not None}, dropout={self.dropout}")
