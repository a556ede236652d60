"""The decoder block of a writing model (GPT's shape), with a KV cache.

A decoder factorises a sequence as p(w₁ … w_T | prefix) = Π_t p(w_t | w_<t, prefix). Training
computes every position in one pass, with a mask so that position t sees only the prefix and
the positions ≤ t (:func:`prefix_causal_mask`); generation feeds its own tokens back in, one at
a time.

The KV cache: in step t the keys and values of the positions before t are exactly those of
step t − 1 (a position never sees what comes after it, so nothing later changes them). A
:class:`KVCache` keeps them; each step then projects only its new token and attends to the
stored keys — O(t·d) work for the attention and O(d²) for the projections and the MLP, instead
of recomputing all t positions, O(t·d² + t²·d).
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, is_grad_enabled
from .attention import MultiHeadAttention
from .layers import GELU
from .transformer import TransformerEncoderLayer


def prefix_causal_mask(num_prefix, L_q, L_k, start=0, xp=np):
    """(L_q, L_k) boolean, True where attention is allowed: query i, at position start + i,
    may see key j if j ≤ start + i (the past and itself) or j < num_prefix (the prefix — an
    image — is seen whole, in both directions). ``num_prefix = 0`` is the plain causal mask."""
    i = xp.arange(start, start + L_q)[:, None]
    j = xp.arange(L_k)[None, :]
    return (j <= i) | (j < num_prefix)


class KVCache:
    """The keys and values (B, h, length, d_k) of one attention layer for the positions seen
    so far, in buffers of ``capacity`` positions allocated on the first :meth:`append` (so a
    step writes its new keys in place and copies nothing old). For generation only: the
    buffers are plain arrays, outside any autograd graph."""

    def __init__(self, capacity):
        self.capacity, self.length = int(capacity), 0
        self.K = self.V = None

    def append(self, K, V):
        """Store K, V (B, h, L, d_k) after the cached positions; return all keys and values so
        far, (B, h, length + L, d_k) each, as Tensors (views of the buffers)."""
        K, V = backend.unwrap(K), backend.unwrap(V)
        B, h, L, d_k = K.shape
        if self.K is None:
            xp = backend.get_array_module(K)
            self.K = xp.empty((B, h, self.capacity, d_k), dtype=K.dtype)
            self.V = xp.empty((B, h, self.capacity, V.shape[-1]), dtype=V.dtype)
        if self.K.shape[:2] != (B, h) or self.length + L > self.capacity:
            raise ValueError(f"KVCache: cannot append keys of shape {K.shape} to a cache of "
                             f"{self.length}/{self.capacity} positions of shape "
                             f"{self.K.shape[:2]} + (·, {self.K.shape[-1]})")
        end = self.length + L
        self.K[:, :, self.length:end] = K
        self.V[:, :, self.length:end] = V
        self.length = end
        return Tensor(self.K[:, :, :end]), Tensor(self.V[:, :, :end])


class CausalSelfAttention(MultiHeadAttention):
    """Multi-head self-attention over one sequence (the parameters of
    :class:`~minimm.nn.MultiHeadAttention`: W_q, W_k, W_v, W_o and biases), able to read and
    extend a :class:`KVCache`.

    ``forward(x, mask=None, cache=None)``: x (B, L, d_model) -> (B, L, d_model) with
    Q = x W_q + b_q and, without a cache, K = x W_k + b_k, V = x W_v + b_v; with one, K and V
    are the cached keys and values followed by x's own (L_k = cached + L), and x's are stored.
    ``mask``: boolean (L, L_k), True where allowed (:func:`prefix_causal_mask`); None allows all.
    """

    def forward(self, x, mask=None, cache=None):
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"CausalSelfAttention: x must have shape (B, L, d_model="
                             f"{self.d_model}), got {x.shape}")
        Q = self._split_heads(F.linear(x, self.W_q, self.b_q))   # (B, h, L, d_k)
        K = self._split_heads(F.linear(x, self.W_k, self.b_k))
        V = self._split_heads(F.linear(x, self.W_v, self.b_v))
        if cache is not None:
            if is_grad_enabled() and x.requires_grad:
                raise RuntimeError("CausalSelfAttention: a KV cache is for generation; run it "
                                   "under mm.no_grad() (its buffers are outside the graph)")
            K, V = cache.append(K, V)                             # (B, h, cached + L, d_k)
        heads, weights = F.scaled_dot_product_attention(
            Q, K, V, mask=mask, dropout=self.dropout if self.training else 0.0, rng=self.rng)
        self.attn_weights = weights.data
        return F.linear(self._merge_heads(heads), self.W_o, self.b_o)


class DecoderBlock(TransformerEncoderLayer):
    """One pre-norm decoder block (GPT-2's) on x (B, L, d_model):

        x ← x + Dropout(CausalSelfAttention(LN₁(x)))
        x ← x + Dropout(W_2 Dropout(GELU(LN₂(x) W_1 + b_1)) + b_2)

    The encoder layer's sub-modules (``norm1, attn, norm2, ff1, ff2``) with ``attn`` a
    :class:`CausalSelfAttention` and GELU's tanh approximation, as GPT-2 has it,
    ½ u (1 + tanh(√(2/π) (u + 0.044715 u³))) — within 1e-3 of the exact x Φ(x) and, made of
    elementwise NumPy operations, about 5× cheaper here than the erf series.
    ``forward(x, mask=None, cache=None)``: ``mask`` (L, L_k) as there — the decoder passes
    :func:`prefix_causal_mask`; ``cache`` a :class:`KVCache`.
    """

    def __init__(self, d_model, num_heads, dim_ff, dropout=0.0, eps=1e-5, rng=None):
        super().__init__(d_model, num_heads, dim_ff, dropout=dropout, eps=eps, rng=rng)
        self.attn = CausalSelfAttention(d_model, num_heads, dropout=dropout, rng=rng)
        self.act = GELU(approximate="tanh")

    def forward(self, x, mask=None, cache=None):
        x = x + self.drop_attn(self.attn(self.norm1(x), mask=mask, cache=cache))
        z = self.norm2(x)
        return x + self.drop_out(self.ff2(self.drop_ff(self.act(self.ff1(z)))))
