"""Layer 2: every differentiable operation, one module per family.

Importing this package also gives :class:`~minimm.autograd.Tensor` its operators
(``+ - * / ** @ []``, ``.sum()``, ``.reshape()`` …), so layer 1 needs to know no operation.
"""
from ..autograd import Tensor
from .activations import log_softmax, logsumexp, relu, sigmoid, softmax, tanh
from .conv import avg_pool2d, col2im, conv2d, conv2d_simple, im2col, max_pool2d
from .conv import max_pool2d_simple
from .attention import causal_mask, masked_softmax, scaled_dot_product_attention
from .contrastive import clip_logits, clip_loss, normalize
from .losses import cross_entropy, cross_entropy_simple
from .nn_ops import (default_generator, dropout, embedding, erf, gelu, linear,
                     manual_seed)
from .normalization import batch_norm, layer_norm
from .recurrent import lstm, lstm_cell, lstm_cell_simple, lstm_simple
from .regularization import l1_penalty, l2_penalty, multitask_loss, regularized_parameters
from .math import (abs_, add, clip, div, equal, exp, greater, greater_equal, less, less_equal,
                   log, matmul, max, maximum, mean, min, minimum, mul, neg, not_equal, pow, sqrt,
                   sub, sum, where)
from .shape import (broadcast_to, concat, expand_dims, flatten, getitem, permute, reshape,
                    split, squeeze, stack, sum_to, swapaxes, transpose)

abs = abs_


def _install_operators():
    def swap(f):
        return lambda self, other: f(other, self)

    ops = {
        "__add__": add, "__radd__": swap(add), "__sub__": sub, "__rsub__": swap(sub),
        "__mul__": mul, "__rmul__": swap(mul), "__truediv__": div, "__rtruediv__": swap(div),
        "__matmul__": matmul, "__rmatmul__": swap(matmul), "__neg__": neg, "__pow__": pow,
        "__rpow__": lambda self, base: exp(self * log(Tensor(self.data.dtype.type(base)))),
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
    Tensor.__hash__ = object.__hash__  # __eq__ is elementwise, identity stays the hash


_install_operators()
