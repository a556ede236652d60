"""Switching minimm's layers onto the fast kernels of :mod:`minimm.functional.fast`.

:func:`enable_fast_kernels` routes ``F.conv2d``, ``F.lstm``, ``F.batch_norm``, ``F.embedding``,
``nn.MaxPool2d``, ``nn.MultiHeadAttention`` and the Conv2d → ReLU → MaxPool2d triples of
``nn.Sequential`` through the fast kernels (same arguments, same numbers up to
rounding); :func:`disable_fast_kernels` restores the readable ones. The layout-changing
kernels (convolution, pooling, batch norm) take only batches of at least ``MIN_CHWN_BATCH``
images; smaller ones stay on the readable kernels, which are faster there. (A stop-gap
until the layers dispatch to the fast kernels themselves.)
"""
import contextlib

from .. import functional as F
from ..functional.fast import attention as fast_attention
from ..functional.fast import conv as fast_conv
from ..functional.fast import lookup as fast_lookup
from ..functional.fast import normalization as fast_normalization
from ..functional.fast import recurrent as fast_recurrent
from ..functional.utils import int_pair
from .attention import MultiHeadAttention
from .conv import Conv2d, MaxPool2d
from .layers import ReLU
from .module import Sequential

_READABLE = {"conv2d": F.conv2d, "lstm": F.lstm, "pool": MaxPool2d.pool,
             "batch_norm": F.batch_norm, "embedding": F.embedding,
             "mha": MultiHeadAttention.forward, "sequential": Sequential.forward}

# The CHWN kernels (convolution, the fused Conv-ReLU-MaxPool, max pooling, batch norm) pay
# for their layout changes only on large enough batches: on the article's image branch
# benchmarks/ab.py measured them 1.0-1.15x as slow as the readable kernels at 32 and 48
# images, 1.5-1.85x as fast from 64 on (benchmarks/NOTES.md). A batch smaller than this goes
# through the readable kernels; 0 sends every batch through the CHWN ones.
MIN_CHWN_BATCH = 64


def _chwn(x):
    """Whether the CHWN kernels take ``x``: a 4-D batch of at least MIN_CHWN_BATCH images."""
    shape = x.shape
    return len(shape) == 4 and shape[0] >= MIN_CHWN_BATCH


def conv2d(x, W, b=None, stride=1, padding=0):
    """``F.conv2d`` while the fast kernels are on: :func:`~minimm.functional.fast.conv.conv2d`
    (CHWN) for a batch of MIN_CHWN_BATCH or more, else the readable kernel. Same numbers."""
    fn = fast_conv.conv2d if _chwn(x) else _READABLE["conv2d"]
    return fn(x, W, b, stride, padding)


def max_pool2d(x, kernel_size, stride=None):
    """``nn.MaxPool2d``'s pooling while the fast kernels are on (CHWN from MIN_CHWN_BATCH)."""
    fn = fast_conv.max_pool2d if _chwn(x) else _READABLE["pool"]
    return fn(x, kernel_size, stride)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=True,
               momentum=0.1, eps=1e-5):
    """``F.batch_norm`` while the fast kernels are on (CHWN from MIN_CHWN_BATCH images)."""
    fn = fast_normalization.batch_norm if _chwn(x) else _READABLE["batch_norm"]
    return fn(x, running_mean, running_var, weight, bias, training, momentum, eps)


def sequential_forward(seq, x):
    """:meth:`minimm.nn.Sequential.forward` with each Conv2d → ReLU → MaxPool2d (windows side
    by side) run as one fused Function (:func:`~minimm.functional.fast.conv.
    conv2d_relu_max_pool2d`): the same numbers, fewer passes over memory, less memory kept."""
    mods = list(seq)
    i = 0
    while i < len(mods):
        m = mods[i]
        if (i + 2 < len(mods) and type(m) is Conv2d and type(mods[i + 1]) is ReLU
                and type(mods[i + 2]) is MaxPool2d and _chwn(x)):
            pool = mods[i + 2]
            kernel = int_pair(pool.kernel_size, "kernel_size", "MaxPool2d", 1)
            if pool.stride is None or int_pair(pool.stride, "stride", "MaxPool2d", 1) == kernel:
                x = fast_conv.conv2d_relu_max_pool2d(x, m.W, m.b, m.stride, m.padding, kernel)
                i += 3
                continue
        x = m(x)
        i += 1
    return x


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
    allowed = module._combined_mask(mask, key_padding_mask, B, L_k, xp)
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


@contextlib.contextmanager
def fast_kernels():
    """``with fast_kernels(): ...`` runs the block on the fast kernels and restores whatever
    was in place before, even after an error."""
    before = _current()
    enable_fast_kernels()
    try:
        yield
    finally:
        _restore(before)


def _current():
    return (F.conv2d, F.lstm, F.batch_norm, F.embedding, MaxPool2d.__dict__["pool"],
            MultiHeadAttention.forward, Sequential.forward)


def _restore(state):
    (F.conv2d, F.lstm, F.batch_norm, F.embedding, pool, MultiHeadAttention.forward,
     Sequential.forward) = state
    MaxPool2d.pool = pool


def enable_fast_kernels():
    F.conv2d = conv2d
    F.lstm = fast_recurrent.lstm
    F.batch_norm = batch_norm
    F.embedding = fast_lookup.embedding
    MaxPool2d.pool = staticmethod(max_pool2d)
    MultiHeadAttention.forward = multi_head_attention_forward
    Sequential.forward = sequential_forward


def disable_fast_kernels():
    F.conv2d, F.lstm = _READABLE["conv2d"], _READABLE["lstm"]
    F.batch_norm, F.embedding = _READABLE["batch_norm"], _READABLE["embedding"]
    MaxPool2d.pool = staticmethod(_READABLE["pool"])
    MultiHeadAttention.forward = _READABLE["mha"]
    Sequential.forward = _READABLE["sequential"]
