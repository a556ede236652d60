"""Patches as words (ViT, Dosovitskiy et al. 2021, "an image is worth 16x16 words").

An image (C, H, W) is cut into L = (H/p)·(W/p) non-overlapping p×p patches, read in
row-major order (left to right, then top to bottom), and each patch — a vector of C·p·p
pixels, channel first, then patch row, then patch column — is mapped to a token by one
shared linear map:

    z_l = x_l W + b,   x_l ∈ R^{C·p·p},  W (C·p·p, d_model),  b (d_model,)

This is exactly a convolution with kernel = stride = p and d_model output channels (its
kernel W_conv (d_model, C, p, p) is Wᵀ reshaped), followed by flattening the (H/p, W/p)
grid and moving the channels last; the tests check that equality. Here it is written as
reshapes and one matrix product, so it needs no Function of its own: the gradient is the
chain rule through reshape, transpose and ``F.linear``.
"""
import math

from .. import functional as F
from . import init
from .module import Module, Parameter


def patchify(x, patch_size):
    """(N, C, H, W) -> (N, L, C·p·p): the patches of each image in row-major order, each
    flattened channel-first (the layout a convolution kernel (·, C, p, p) reads)."""
    N, C, H, W = x.shape
    p = patch_size
    x = F.reshape(x, (N, C, H // p, p, W // p, p))        # (N, C, row, i, col, j)
    x = F.transpose(x, 0, 2, 4, 1, 3, 5)                   # (N, row, col, C, i, j)
    return F.reshape(x, (N, (H // p) * (W // p), C * p * p))


class PatchEmbedding(Module):
    """z = patchify(x) W + b: images (N, C, H, W) -> tokens (N, L, d_model),
    L = (H/p)(W/p) in row-major patch order; W (C·p·p, d_model), b (d_model,).

    Initialised as the equivalent ``Conv2d`` (PyTorch's default, U(±1/√(C·p·p))), which is
    what ViT's reference code uses for its patch projection. H and W must be multiples of p.
    """

    def __init__(self, patch_size, in_channels, d_model, rng=None):
        super().__init__()
        self.patch_size, self.in_channels = int(patch_size), int(in_channels)
        self.d_model = int(d_model)
        if self.patch_size < 1 or self.in_channels < 1 or self.d_model < 1:
            raise ValueError(f"PatchEmbedding: patch_size, in_channels and d_model must be "
                             f"positive, got {patch_size}, {in_channels}, {d_model}")
        fan_in = self.in_channels * self.patch_size ** 2
        self.W = Parameter(init.kaiming_uniform((fan_in, self.d_model), a=math.sqrt(5.0),
                                                rng=rng))
        bound = 1.0 / math.sqrt(fan_in)
        self.b = Parameter(init.uniform((self.d_model,), -bound, bound, rng))

    def num_patches(self, H, W):
        return (H // self.patch_size) * (W // self.patch_size)

    def forward(self, x):
        p = self.patch_size
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PatchEmbedding: expected images (N, C={self.in_channels}, H, W), "
                             f"got shape {x.shape}")
        if x.shape[2] % p or x.shape[3] % p:
            raise ValueError(f"PatchEmbedding: image size {x.shape[2]}×{x.shape[3]} is not a "
                             f"multiple of patch_size={p} (input shape {x.shape})")
        return F.linear(patchify(x, p), self.W, self.b)      # (N, L, d_model)

    def extra_repr(self):
        return (f"patch_size={self.patch_size}, in_channels={self.in_channels}, "
                f"d_model={self.d_model}")
