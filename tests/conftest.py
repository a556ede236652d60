"""Shared fixtures: the backend (NumPy on "cpu", CuPy on "cuda") is a test parameter.

CUDA cases skip visibly, with the reason, where CuPy is missing or no GPU is usable.
"""
import importlib

import numpy
import pytest


def _cupy_status():
    """Return (cupy_module, None) if CuPy can run on a GPU here, else (None, reason)."""
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return None, f"cannot import cupy ({type(exc).__name__}: {exc})"
    try:
        available = bool(cupy.is_available())
    except Exception as exc:
        return None, f"cupy.is_available() raised {type(exc).__name__}: {exc}"
    if not available:
        return None, "cupy imported but cupy.is_available() is False (no usable CUDA device)"
    return cupy, None


_CUPY, _CUPY_REASON = _cupy_status()


@pytest.fixture(params=["cpu", "cuda"], ids=["cpu", "cuda"])
def device(request):
    """The device name a test runs on; the "cuda" case skips unless CuPy has a GPU."""
    if request.param == "cuda" and _CUPY is None:
        pytest.skip(f"CuPy GPU not available: {_CUPY_REASON}")
    return request.param


@pytest.fixture
def xp(device):
    """The array module matching ``device``: numpy for "cpu", cupy for "cuda"."""
    return _CUPY if device == "cuda" else numpy


@pytest.fixture
def rng():
    """A seeded NumPy generator, so every test draws the same numbers."""
    return numpy.random.default_rng(0)
