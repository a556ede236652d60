"""Layers that own parameters (or none), each a thin Module around a functional operation.

Default initialisations follow PyTorch: Linear draws W and b from U(±1/√in_features)
(``kaiming_uniform`` with a = √5), Embedding from N(0, 1), normalisation layers start at
weight 1 and bias 0. Every constructor takes ``rng`` (a NumPy Generator) and otherwise uses
the default generator that ``nn.init.manual_seed`` resets.
"""
import math

import numpy as np

from .. import functional as F
from . import init
from .module import Module, Parameter


class Linear(Module):
    """y = x W + b with W of shape (in_features, out_features) and b of shape (out_features,)."""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.W = Parameter(init.kaiming_uniform((in_features, out_features), a=math.sqrt(5.0),
                                                rng=rng))
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.b = Parameter(init.uniform((out_features,), -bound, bound, rng)) if bias else None

    def forward(self, x):
        return F.linear(x, self.W, self.b)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.b is not None}")


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class GELU(Module):
    """x Φ(x); ``approximate="tanh"`` for the tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """Inverted dropout in training mode, the identity in evaluation mode."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p, self.rng = p, rng

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self):
        return f"p={self.p}"


class Embedding(Module):
    """A lookup table: integer ids (any shape) -> rows of W (num_embeddings, embedding_dim)."""

    def __init__(self, num_embeddings, embedding_dim, rng=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.W = Parameter(init.normal((num_embeddings, embedding_dim), 0.0, 1.0, rng))

    def forward(self, ids):
        return F.embedding(ids, self.W)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes, then scale by ``weight`` and
    shift by ``bias`` (PyTorch's names)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        shape = ((normalized_shape,) if isinstance(normalized_shape, int)
                 else tuple(normalized_shape))
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(init.ones(shape)) if elementwise_affine else None
        self.bias = Parameter(init.zeros(shape)) if elementwise_affine else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class BatchNorm2d(Module):
    """Batch normalisation per channel of NCHW input (also (N, C)).

    Training: normalise with the batch's statistics and update the running estimates
    (buffers ``running_mean``, ``running_var``, saved in the state dict). Evaluation:
    normalise with the running estimates.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.weight = Parameter(init.ones((num_features,))) if affine else None
        self.bias = Parameter(init.zeros((num_features,))) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: expected input (N, {self.num_features}, H, W), "
                             f"got shape {tuple(x.shape)}")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
