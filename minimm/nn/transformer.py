"""The Transformer encoder, built from the article's attention formulas (Vaswani et al. 2017).

Attention is blind to order — permuting the tokens permutes its output the same way — so
positions are added to the token vectors first: a fixed sinusoidal code or a learned table.
Each encoder layer is pre-norm (as in GPT-2 and ViT, which train without warm-up tricks):

    x ← x + Dropout(MultiHead(LN(x), LN(x), LN(x)))
    x ← x + Dropout(W_2 Dropout(GELU(W_1 LN(x) + b_1)) + b_2)
"""
import numpy as np

from .. import backend
from ..autograd import Tensor
from . import init
from .attention import MultiHeadAttention
from .layers import GELU, Dropout, LayerNorm, Linear
from .module import Module, Parameter, Sequential


def sinusoidal_positional_encoding(max_len, d_model, dtype=np.float32):
    """PE (max_len, d_model) with PE[pos, 2i] = sin(pos / 10000^{2i/d}) and
    PE[pos, 2i+1] = cos(pos / 10000^{2i/d}): each pair of columns is a sine and cosine of one
    frequency, the wavelengths rising geometrically from 2π to 10000·2π, so PE[pos + k] is a
    fixed rotation of PE[pos] (relative positions are linear functions of the code).
    Computed in float64, returned as a NumPy array of ``dtype``.
    """
    if max_len <= 0 or d_model <= 0:
        raise ValueError(f"sinusoidal_positional_encoding: max_len and d_model must be "
                         f"positive, got {max_len} and {d_model}")
    pos = np.arange(max_len, dtype=np.float64)[:, None]             # (max_len, 1)
    two_i = np.arange(0, d_model, 2, dtype=np.float64)[None, :]     # 2i = 0, 2, 4, …
    angle = pos / 10000.0 ** (two_i / d_model)                      # pos / 10000^{2i/d}
    pe = np.zeros((max_len, d_model))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])                  # odd d: one cosine fewer
    return pe.astype(dtype)


def _check_length(name, x, max_len, d_model):
    if x.ndim < 2 or x.shape[-1] != d_model:
        raise ValueError(f"{name}: expected input (..., L, d_model={d_model}), got {x.shape}")
    if x.shape[-2] > max_len:
        raise ValueError(f"{name}: sequence length {x.shape[-2]} exceeds max_len={max_len}")


class SinusoidalPositionalEncoding(Module):
    """x + PE[:L] for x (..., L, d_model), PE the fixed :func:`sinusoidal_positional_encoding`
    (a buffer: saved and moved with the module, never trained)."""

    def __init__(self, d_model, max_len=5000):
        super().__init__()
        self.d_model, self.max_len = int(d_model), int(max_len)
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model))

    def forward(self, x):
        _check_length("SinusoidalPositionalEncoding", x, self.max_len, self.d_model)
        xp = backend.get_array_module(x)
        pe = xp.asarray(self.pe[: x.shape[-2]], dtype=x.dtype)      # in x's dtype and device
        return x + Tensor(pe)

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Module):
    """x + W[:L] for x (..., L, d_model): one trained vector per position, W (max_len, d_model)
    drawn from N(0, 0.02²) as in BERT and GPT. It cannot represent positions beyond max_len."""

    def __init__(self, max_len, d_model, rng=None):
        super().__init__()
        self.max_len, self.d_model = int(max_len), int(d_model)
        self.W = Parameter(init.normal((max_len, d_model), 0.0, 0.02, rng))

    def forward(self, x):
        _check_length("LearnedPositionalEmbedding", x, self.max_len, self.d_model)
        return x + self.W[: x.shape[-2]]

    def extra_repr(self):
        return f"max_len={self.max_len}, d_model={self.d_model}"


class TransformerEncoderLayer(Module):
    """One pre-norm encoder layer on x (B, L, d_model):

        x ← x + Dropout(MHA(LN₁(x)))                     (self-attention, a residual)
        x ← x + Dropout(FFN(LN₂(x))),  FFN(z) = W_2 Dropout(GELU(z W_1 + b_1)) + b_2

    with ``dim_ff`` hidden units. Sub-modules: ``norm1, attn, norm2, ff1, ff2`` (Linear).
    """

    def __init__(self, d_model, num_heads, dim_ff, dropout=0.0, eps=1e-5, rng=None):
        super().__init__()
        self.norm1 = LayerNorm(d_model, eps=eps)
        self.attn = MultiHeadAttention(d_model, num_heads, dropout=dropout, rng=rng)
        self.norm2 = LayerNorm(d_model, eps=eps)
        self.ff1 = Linear(d_model, dim_ff, rng=rng)
        self.act = GELU()
        self.ff2 = Linear(dim_ff, d_model, rng=rng)
        self.drop_attn = Dropout(dropout, rng=rng)
        self.drop_ff = Dropout(dropout, rng=rng)
        self.drop_out = Dropout(dropout, rng=rng)

    def forward(self, x, mask=None, key_padding_mask=None, causal=False):
        z = self.norm1(x)
        x = x + self.drop_attn(self.attn(z, z, z, mask=mask, key_padding_mask=key_padding_mask,
                                         causal=causal))
        z = self.norm2(x)
        return x + self.drop_out(self.ff2(self.drop_ff(self.act(self.ff1(z)))))


class TransformerEncoder(Module):
    """``num_layers`` :class:`TransformerEncoderLayer` s in sequence (each with its own freshly
    initialised parameters), then a final LayerNorm (``final_norm=True``; pre-norm layers leave
    the residual stream unnormalised, so a model normally ends with one).

    ``forward(x, mask=None, key_padding_mask=None, causal=False)``: x (B, L, d_model) -> same.
    """

    def __init__(self, d_model, num_heads, dim_ff, num_layers, dropout=0.0, final_norm=True,
                 eps=1e-5, rng=None):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"TransformerEncoder: num_layers must be >= 1, got {num_layers}")
        self.layers = Sequential(*[TransformerEncoderLayer(d_model, num_heads, dim_ff, dropout,
                                                           eps, rng)
                                   for _ in range(num_layers)])
        self.norm = LayerNorm(d_model, eps=eps) if final_norm else None

    def forward(self, x, mask=None, key_padding_mask=None, causal=False):
        for layer in self.layers:
            x = layer(x, mask=mask, key_padding_mask=key_padding_mask, causal=causal)
        return self.norm(x) if self.norm is not None else x
