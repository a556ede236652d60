"""Layer 0: the array module.

minimm runs on NumPy (``"cpu"``) or CuPy (``"cuda"``). The module is always chosen from the
arrays themselves (:func:`get_array_module`), never from a global switch, so one code path
serves both backends. This file knows nothing about tensors: anything carrying an array in a
``.data`` attribute is unwrapped by duck typing.
"""
import numpy as np

try:  # keep the original error: it is the most useful thing to show a user without CuPy
    import cupy as cp
    _CUPY_IMPORT_ERROR = None
except Exception as e:  # ImportError, or a CUDA library failing to load
    cp = None
    _CUPY_IMPORT_ERROR = e


def gpu_available():
    """True when CuPy imports *and* sees a CUDA device (an import alone proves nothing)."""
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:
        return False


def unwrap(a):
    """The array behind a Tensor, or ``a`` itself (NumPy arrays have their own ``.data``,
    a memory buffer, so they are returned as they are)."""
    if isinstance(a, np.ndarray) or (cp is not None and isinstance(a, cp.ndarray)):
        return a
    return getattr(a, "data", a)


def is_cupy_array(a):
    return cp is not None and isinstance(unwrap(a), cp.ndarray)


def get_array_module(*args):
    """``cupy`` if any argument (array or Tensor) lives on the GPU, else ``numpy``."""
    if cp is not None:
        for a in args:
            if isinstance(unwrap(a), cp.ndarray):
                return cp
    return np


def check_device(device):
    """Normalise a device string to ``"cpu"`` or ``"cuda"``; explain what is missing for cuda."""
    if device is None:
        return "cpu"
    device = str(device)
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if cp is None:
            raise RuntimeError(
                f"device {device!r} needs CuPy, which failed to import "
                f"({type(_CUPY_IMPORT_ERROR).__name__}: {_CUPY_IMPORT_ERROR}); "
                "install it with: pip install 'minimm[gpu]'")
        if not gpu_available():
            raise RuntimeError(
                f"device {device!r}: CuPy is installed but no CUDA GPU is available "
                "(cupy.is_available() is False)")
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def device_of(a):
    return "cuda" if is_cupy_array(a) else "cpu"


def to_device(a, device):
    """Move an array to ``device`` (a no-op when it is already there)."""
    a = unwrap(a)
    device = check_device(device)
    if device == "cpu":
        return cp.asnumpy(a) if is_cupy_array(a) else np.asarray(a)
    return cp.asarray(a)


def to_numpy(a):
    """A NumPy array from a Tensor, a NumPy array or a CuPy array (copied to the host)."""
    return to_device(a, "cpu")


def scatter_add(xp, target, index, values):
    """``target[index] += values`` with repeated indices accumulating, on either backend."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)
    return target
