"""Convolution and pooling layers (NCHW), thin Modules around :mod:`minimm.functional.conv`.

Conv2d's default initialisation is PyTorch's: W and b from U(±1/√fan_in) with
fan_in = C_in · kh · kw (``kaiming_uniform`` with a = √5), drawn from ``rng`` (a NumPy
Generator) or the default generator that ``nn.init.manual_seed`` resets.
"""
import math

from .. import functional as F
from ..functional.utils import int_pair
from . import init
from .module import Module, Parameter


class Conv2d(Module):
    """y = conv2d(x, W, b): x (N, C_in, H, W) -> (N, C_out, OH, OW);
    W of shape (out_channels, in_channels, kh, kw), b of shape (out_channels,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None):
        super().__init__()
        kh, kw = int_pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = int_pair(stride, "stride", "Conv2d", 1)
        self.padding = int_pair(padding, "padding", "Conv2d", 0)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = (kh, kw)
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.W = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5.0), rng=rng))
        bound = 1.0 / math.sqrt(self.in_channels * kh * kw)
        self.b = (Parameter(init.uniform((self.out_channels,), -bound, bound, rng)) if bias
                  else None)

    def forward(self, x):
        return F.conv2d(x, self.W, self.b, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.b is not None}")


class _Pool2d(Module):
    """A window reduction over kernel_size windows every stride pixels (stride defaults to
    kernel_size); subclasses name the functional operation."""
    pool = None

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return self.pool(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool2d):
    """Max over each window (the gradient goes to the first maximum, as in PyTorch)."""
    pool = staticmethod(F.max_pool2d)


class AvgPool2d(_Pool2d):
    """Mean over each window."""
    pool = staticmethod(F.avg_pool2d)


class Flatten(Module):
    """(N, C, H, W) -> (N, C·H·W): merges the axes from ``start_dim`` on."""

    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}"
