"""minimm — a mini multimodal deep-learning library, NumPy or CuPy, built to be read.

    import minimm as mm
    from minimm import functional as F, nn, optim
"""
from . import backend, functional
from .autograd import Function, Tensor, as_tensor, enable_grad, grad, is_grad_enabled, no_grad, tensor
from .backend import get_array_module, gpu_available, to_numpy
from .errors import UsageError
from .functional import concat, split, stack, where
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .serialization import CheckpointError, load, save
from . import nn, optim  # after the layers below them: nn uses functional, optim uses nn

__version__ = "0.1.0"
