"""Switching minimm's layers onto the fast kernels of :mod:`minimm.functional.fast`.

:func:`enable_fast_kernels` routes ``F.conv2d``, ``F.lstm``, ``nn.MaxPool2d`` and
``nn.MultiHeadAttention`` through the fast kernels (same arguments, same numbers up to
rounding); :func:`disable_fast_kernels` restores the readable ones. (A stop-gap until the
layers dispatch to the fast kernels themselves.)
"""
from .. import functional as F
from ..functional.fast import attention as fast_attention
from ..functional.fast import conv as fast_conv
from ..functional.fast import recurrent as fast_recurrent
from .attention import MultiHeadAttention
from .conv import MaxPool2d

_READABLE = {"conv2d": F.conv2d, "lstm": F.lstm, "pool": MaxPool2d.pool,
             "mha": MultiHeadAttention.forward}


def multi_head_attention_forward(module, q, k, v, mask=None, key_padding_mask=None,
                                 causal=False):
    """:meth:`minimm.nn.MultiHeadAttention.forward` on the fused Function (same arguments,
    same numbers, ``module.attn_weights`` set); with dropout active in training mode, the
    readable path."""
    from .. import backend
    from ..functional.attention import causal_mask
    if module.dropout > 0 and module.training:
        return _READABLE["mha"](module, q, k, v, mask, key_padding_mask, causal)
    module._check(q, k, v)
    B, L_q, L_k = q.shape[0], q.shape[1], k.shape[1]
    xp = backend.get_array_module(q)
    allowed = module._allowed(mask, key_padding_mask, B, L_q, L_k, xp)
    if causal:
        future = causal_mask(L_q, L_k, xp)
        allowed = future if allowed is None else allowed & future
    biases = [module.b_q, module.b_k, module.b_v, module.b_o]
    if biases[0] is None:
        from ..autograd import Tensor
        biases = [Tensor(xp.zeros(module.d_model, dtype=q.dtype))] * 4
    y, weights = fast_attention.multi_head_attention(
        q, k, v, module.W_q, module.W_k, module.W_v, module.W_o, *biases,
        num_heads=module.num_heads, allowed=allowed)
    module.attn_weights = weights
    return y


def enable_fast_kernels():
    F.conv2d = fast_conv.conv2d
    F.lstm = fast_recurrent.lstm
    MaxPool2d.pool = staticmethod(fast_conv.max_pool2d)
    MultiHeadAttention.forward = multi_head_attention_forward


def disable_fast_kernels():
    F.conv2d, F.lstm = _READABLE["conv2d"], _READABLE["lstm"]
    MaxPool2d.pool = staticmethod(_READABLE["pool"])
    MultiHeadAttention.forward = _READABLE["mha"]
