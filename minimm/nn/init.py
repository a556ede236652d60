"""Initialisers: He (Kaiming) and Glorot (Xavier), uniform and normal, drawn on the host.

Functions without a trailing underscore take a *shape* and return a new float32 NumPy array;
those with one (``kaiming_uniform_``, as in PyTorch) fill an existing Parameter in place,
on its device and in its dtype. Every draw uses ``rng`` (a NumPy Generator) or, when None,
the default generator that :func:`manual_seed` resets, so models are reproducible.

Fan-in and fan-out by layout (minimm's, which differs from PyTorch's for Linear):
    Linear W (in, out):                 fan_in = in,            fan_out = out
    Conv W (C_out, C_in, kh, kw, …):    fan_in = C_in · kh · kw, fan_out = C_out · kh · kw
    a 1-D shape (n,):                   fan_in = fan_out = n
Pass ``fan_in=``/``fan_out=`` to override (a bias uses its weight's fan-in).

The scales, from keeping the activations' variance constant through a layer:
    Kaiming: std = gain / √fan,  uniform bound = √3 · std    (He et al. 2015)
    Xavier:  std = gain · √(2 / (fan_in + fan_out)),  bound = √3 · std    (Glorot & Bengio 2010)
"""
import math

import numpy as np

from .. import backend
from ..functional.random import default_generator, manual_seed  # noqa: F401  (re-exported)

__all__ = ["manual_seed", "default_generator", "calculate_gain", "fans", "uniform", "normal",
           "zeros", "ones", "kaiming_uniform", "kaiming_normal", "xavier_uniform",
           "xavier_normal", "glorot_uniform", "glorot_normal", "uniform_", "normal_", "zeros_",
           "ones_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
           "glorot_uniform_", "glorot_normal_"]


def calculate_gain(nonlinearity="leaky_relu", a=None):
    """The gain PyTorch uses: 1 for linear/sigmoid, 5/3 for tanh, √2 for relu,
    √(2 / (1 + a²)) for leaky_relu with negative slope a (a = 0.01 when None)."""
    if nonlinearity in ("linear", "identity", "sigmoid", "conv2d", "conv1d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        a = 0.01 if a is None else a
        return math.sqrt(2.0 / (1.0 + a * a))
    if nonlinearity == "selu":
        return 0.75
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def fans(shape):
    """(fan_in, fan_out) for minimm's layouts (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("fans: a scalar shape () has no fan-in or fan-out")
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:  # Linear (in, out)
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])  # Conv (out, in, kh, kw)
    return shape[1] * receptive, shape[0] * receptive


def _rng(rng):
    return default_generator() if rng is None else rng


def uniform(shape, low=0.0, high=1.0, rng=None, dtype=np.float32):
    return _rng(rng).uniform(low, high, size=tuple(shape)).astype(dtype)


def normal(shape, mean=0.0, std=1.0, rng=None, dtype=np.float32):
    return (_rng(rng).standard_normal(size=tuple(shape)) * std + mean).astype(dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(tuple(shape), dtype=dtype)


def ones(shape, dtype=np.float32):
    return np.ones(tuple(shape), dtype=dtype)


def _fan(shape, mode, fan_in, fan_out):
    f_in, f_out = fans(shape) if (fan_in is None or fan_out is None) else (fan_in, fan_out)
    f_in = f_in if fan_in is None else fan_in
    f_out = f_out if fan_out is None else fan_out
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return f_in if mode == "fan_in" else f_out


def kaiming_uniform(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None,
                    fan_in=None, fan_out=None, dtype=np.float32):
    """U(−bound, bound), bound = gain · √(3 / fan). With a = √5 and a leaky_relu gain this is
    PyTorch's Linear/Conv default, bound = 1/√fan_in."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode, fan_in, fan_out))
    bound = math.sqrt(3.0) * std
    return uniform(shape, -bound, bound, rng, dtype)


def kaiming_normal(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None,
                   fan_in=None, fan_out=None, dtype=np.float32):
    """N(0, std²), std = gain / √fan (He initialisation for ReLU networks: gain √2)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(shape, mode, fan_in, fan_out))
    return normal(shape, 0.0, std, rng, dtype)


def xavier_uniform(shape, gain=1.0, rng=None, fan_in=None, fan_out=None, dtype=np.float32):
    """U(−bound, bound), bound = gain · √(6 / (fan_in + fan_out))."""
    f_in, f_out = fans(shape)
    f_in, f_out = f_in if fan_in is None else fan_in, f_out if fan_out is None else fan_out
    bound = gain * math.sqrt(6.0 / (f_in + f_out))
    return uniform(shape, -bound, bound, rng, dtype)


def xavier_normal(shape, gain=1.0, rng=None, fan_in=None, fan_out=None, dtype=np.float32):
    """N(0, std²), std = gain · √(2 / (fan_in + fan_out))."""
    f_in, f_out = fans(shape)
    f_in, f_out = f_in if fan_in is None else fan_in, f_out if fan_out is None else fan_out
    return normal(shape, 0.0, gain * math.sqrt(2.0 / (f_in + f_out)), rng, dtype)


glorot_uniform, glorot_normal = xavier_uniform, xavier_normal


# -- in-place versions on a Parameter (PyTorch's names) -----------------------------------------
def _fill(param, array):
    """Write host ``array`` into ``param.data`` keeping its device and dtype."""
    xp = backend.get_array_module(param.data)
    param.data = xp.asarray(array, dtype=param.data.dtype)
    return param


def _in_place(make):
    def fill(param, *args, **kwargs):
        kwargs.setdefault("dtype", np.float64)  # draw in float64, cast once into param's dtype
        return _fill(param, make(param.shape, *args, **kwargs))
    fill.__name__ = make.__name__ + "_"
    fill.__doc__ = f"Fill ``param`` in place with :func:`{make.__name__}` of its shape."
    return fill


uniform_, normal_ = _in_place(uniform), _in_place(normal)
kaiming_uniform_, kaiming_normal_ = _in_place(kaiming_uniform), _in_place(kaiming_normal)
xavier_uniform_, xavier_normal_ = _in_place(xavier_uniform), _in_place(xavier_normal)
glorot_uniform_, glorot_normal_ = xavier_uniform_, xavier_normal_


def zeros_(param):
    return _fill(param, np.zeros(param.shape))


def ones_(param):
    return _fill(param, np.ones(param.shape))
