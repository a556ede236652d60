"""A fixed first layer that whitens image patches: the fast CIFAR-10 records' first layer
(Page, "How to train your ResNet 8", 2018; Jordan's airbench, 2024).

The k×k patches of normalised images are strongly correlated (neighbouring pixels, the
three colours), so a first convolution trained by gradient descent sees a badly conditioned
problem. With Σ = V Λ Vᵀ the covariance of the C·k·k-dimensional patches of the training
images, the C·k·k filters

    W = (Λ + ε)^{-1/2} Vᵀ          (each row a principal direction, scaled by 1/√(λᵢ + ε))

turn every patch p into W (p − μ) + W μ, whose covariance is diag(λᵢ / (λᵢ + ε)) ≈ I. The
layer is the convolution y = conv2d(x, W) with padding k // 2 (the image size is kept); W
is a buffer — fitted once from data by :meth:`PatchWhitening.fit`, saved and moved with the
model, never trained. A trainable 1×1 convolution after it then mixes the whitened channels.
"""
import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from ..functional.conv_fast import im2col_array
from .module import Module


def patch_matrix(images, k):
    """The k×k patches of ``images`` (N, C, H, W) as rows (N·(H−k+1)·(W−k+1), C·k·k),
    entries ordered (c, a, b) like a convolution weight's (C, k, k): the convolution's own
    im2col columns (layout (N, C·k·k, OH·OW)), one row per output pixel."""
    col = im2col_array(images, (k, k), (1, 1), (0, 0), "nkp")
    return col.transpose(0, 2, 1).reshape(-1, col.shape[1])


class PatchWhitening(Module):
    """y = conv2d(x, W, padding k // 2) with the fixed whitening filters W = (Λ + ε)^{-1/2} Vᵀ
    of the training images' k×k patches (module docstring): (N, C, H, W) -> (N, C·k·k, H, W).
    Call :meth:`fit` before use; until then W is zero."""

    def __init__(self, in_channels=3, kernel_size=3, eps=1e-2):
        super().__init__()
        self.in_channels, self.kernel_size, self.eps = int(in_channels), int(kernel_size), eps
        if self.in_channels < 1 or self.kernel_size < 1 or not eps > 0:
            raise ValueError(f"PatchWhitening: in_channels and kernel_size must be >= 1 and eps "
                             f"> 0, got {in_channels}, {kernel_size}, {eps}")
        self.out_channels = self.in_channels * self.kernel_size ** 2
        k = self.kernel_size
        self.register_buffer("W", np.zeros((self.out_channels, self.in_channels, k, k),
                                           np.float32))

    def fit(self, images, chunk=500):
        """Set W from ``images`` (N, C, H, W), floating point and normalised as the model will
        see them. Σ is accumulated in float64 over chunks of ``chunk`` images; the
        eigenvalues λ₁ ≥ λ₂ ≥ … order the filters. Returns the eigenvalues."""
        x = backend.to_numpy(images)
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < self.kernel_size:
            raise ValueError(f"PatchWhitening.fit: expected images (N, {self.in_channels}, H, W) "
                             f"with H, W >= {self.kernel_size}, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"PatchWhitening.fit: expected normalised floating-point images, "
                            f"got {x.dtype} (minimm.data.normalize_images converts uint8)")
        D = self.out_channels
        total, outer, n = np.zeros(D), np.zeros((D, D)), 0
        for i in range(0, len(x), chunk):
            P = patch_matrix(x[i:i + chunk], self.kernel_size).astype(np.float64)
            total += P.sum(axis=0)
            outer += P.T @ P
            n += len(P)
        if n < 2:
            raise ValueError(f"PatchWhitening.fit: need at least two patches, got {n}")
        mu = total / n
        sigma = (outer - n * np.outer(mu, mu)) / (n - 1)        # the patches' covariance
        lam, V = np.linalg.eigh(sigma)                           # ascending
        lam, V = np.maximum(lam[::-1], 0.0), V[:, ::-1]          # largest first
        W = V.T / np.sqrt(lam + self.eps)[:, None]               # (Λ + ε)^{-1/2} Vᵀ
        k = self.kernel_size
        xp = backend.get_array_module(self.W)
        self.register_buffer("W", xp.asarray(W.reshape(D, self.in_channels, k, k),
                                             dtype=self.W.dtype))
        return lam

    def forward(self, x):
        xp = backend.get_array_module(backend.unwrap(x))
        W = Tensor(xp.asarray(self.W, dtype=x.dtype))
        return F.conv2d(x, W, None, 1, self.kernel_size // 2)

    def extra_repr(self):
        return f"{self.in_channels}, kernel_size={self.kernel_size}, eps={self.eps}"


__all__ = ["PatchWhitening", "patch_matrix"]
