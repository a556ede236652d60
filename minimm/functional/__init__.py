"""Layer 2: every differentiable operation, one module per family.

    math            arithmetic, reductions, elementwise exp/log/sqrt, comparisons
    shape           reshape, transpose, indexing, concat/split (values move, gradients move back)
    activations     relu, sigmoid, tanh, softplus, gelu; softmax, log_softmax, logsumexp
    special         erf (and erfc on arrays), accurate in the tails
    dense           linear: x W + b
    lookup          embedding
    random          the default generator (manual_seed) and dropout
    normalization   layer_norm, batch_norm
    conv            im2col/col2im, conv2d, pooling (readable)   -> conv_fast (the kernels run)
    recurrent       lstm_cell, lstm (readable)                  -> recurrent_fast
    attention       scaled dot-product attention                -> attention_fast (its softmax)
    losses          cross_entropy
    regularization  the article's multi-task loss Σ ℓ_i + λ R(θ)
    utils           argument checks and helpers shared by the modules above

Each ``*_fast`` module holds the faster kernels a public function runs, tested against the
readable twin in the module it names.

Dtypes: float operations keep their input's dtype (float32 stays float32). Integer or boolean
input to an elementwise function (exp, log, sqrt, sigmoid, tanh, erf, softplus, logsumexp)
becomes float32, as in PyTorch; layers, normalisations, softmaxes and losses refuse it with a
TypeError that says how to convert (raw uint8 images: ``minimm.data.normalize_images``).

Importing this package also gives :class:`~minimm.autograd.Tensor` its operators
(``+ - * / ** @ []``, ``.sum()``, ``.reshape()`` …), so layer 1 needs to know no operation.
"""
from ..autograd import Tensor
from .activations import (gelu, log_sigmoid, log_softmax, logsumexp, relu, sigmoid, softmax,
                          softplus, tanh)
from .attention import causal_mask, masked_softmax, scaled_dot_product_attention
from .conv import avg_pool2d, col2im, conv2d, conv2d_simple, im2col, max_pool2d
from .conv import max_pool2d_simple
from .contrastive import clip_logits, clip_loss, normalize
from .dense import linear
from .losses import cross_entropy, cross_entropy_simple
from .lookup import embedding
from .normalization import batch_norm, layer_norm
from .random import default_generator, dropout, manual_seed
from .recurrent import lstm, lstm_cell, lstm_simple
from .regularization import l1_penalty, l2_penalty, multitask_loss, regularized_parameters
from .math import (abs_, add, clip, div, equal, exp, greater, greater_equal, less, less_equal,
                   log, matmul, max, maximum, mean, min, minimum, mul, neg, not_equal, pow, sqrt,
                   sub, sum, where)
from .shape import (broadcast_to, concat, expand_dims, flatten, getitem, permute, reshape,
                    split, squeeze, stack, sum_to, swapaxes, transpose)
from .special import erf

abs = abs_


def _install_operators():
    def swap(f):
        return lambda self, other: f(other, self)

    ops = {
        "__add__": add, "__radd__": swap(add), "__sub__": sub, "__rsub__": swap(sub),
        "__mul__": mul, "__rmul__": swap(mul), "__truediv__": div, "__rtruediv__": swap(div),
        "__matmul__": matmul, "__rmatmul__": swap(matmul), "__neg__": neg, "__pow__": pow,
        "__rpow__": lambda self, base: pow(base, self),   # base ** x = exp(x · log base)
        "__abs__": abs_, "__getitem__": getitem,
        "__eq__": equal, "__ne__": not_equal, "__lt__": less, "__le__": less_equal,
        "__gt__": greater, "__ge__": greater_equal,
        "sum": sum, "mean": mean, "max": max, "min": min, "reshape": reshape,
        "transpose": transpose, "permute": permute, "swapaxes": swapaxes, "exp": exp,
        "log": log, "sqrt": sqrt, "tanh": tanh, "sigmoid": sigmoid, "relu": relu,
        "clip": clip, "flatten": lambda self, start_dim=0: flatten(self, start_dim),
        "broadcast_to": broadcast_to, "softmax": softmax, "abs": abs_,
    }
    for name, f in ops.items():
        setattr(Tensor, name, f)
    Tensor.T = property(lambda self: transpose(self))
    # no __hash__ needed: __eq__ is attached after the class was made, so Tensor keeps
    # object.__hash__ (identity), and tests/test_ops.py checks that it does


_install_operators()
