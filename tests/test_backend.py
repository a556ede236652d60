"""Layer 0: the array module comes from the data; devices; moving arrays."""
import types

import numpy as np
import pytest

import minimm as mm
from minimm import backend


def test_get_array_module_from_arrays_and_tensors(device, xp):
    a = xp.ones(3)
    t = mm.tensor(np.ones(3), device=device)
    assert backend.get_array_module(a) is xp
    assert backend.get_array_module(t) is xp
    assert mm.get_array_module(np.ones(2), t) is xp  # any GPU operand decides
    assert backend.get_array_module() is np
    assert backend.get_array_module(1.0, [1, 2]) is np


def test_tensor_lives_on_its_device(device, xp):
    t = mm.tensor([1.0, 2.0], device=device)
    assert isinstance(t.data, xp.ndarray)
    assert t.device == device
    assert backend.device_of(t.data) == device


def test_to_numpy(device, xp):
    a = xp.arange(6.0).reshape(2, 3)
    for value in (a, mm.tensor(a), mm.tensor(np.arange(6.0).reshape(2, 3), device=device)):
        out = mm.to_numpy(value)
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(mm.to_numpy([1, 2]), [1, 2])


def test_to_device_round_trip(device, xp):
    a = np.arange(4.0)
    moved = backend.to_device(a, device)
    assert isinstance(moved, xp.ndarray)
    back = backend.to_device(moved, "cpu")
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a)
    assert backend.to_device(a, "cpu") is a  # no copy when already there


def test_check_device_names():
    assert backend.check_device(None) == "cpu"
    assert backend.check_device("cpu") == "cpu"
    for bad in ("gpu", "CPU", "tpu", "cuda0"):
        with pytest.raises(ValueError, match=rf"unknown device '{bad}': expected 'cpu' or 'cuda'"):
            backend.check_device(bad)
    with pytest.raises(ValueError, match=r"unknown device 'gpu'"):
        mm.tensor([1.0], device="gpu")


def test_cuda_without_cupy_says_cupy_is_missing(monkeypatch):
    monkeypatch.setattr(backend, "cp", None)
    monkeypatch.setattr(backend, "_CUPY_IMPORT_ERROR", ImportError("No module named 'cupy'"))
    assert backend.gpu_available() is False
    for name in ("cuda", "cuda:0"):
        with pytest.raises(RuntimeError, match=rf"device '{name}' needs CuPy, which failed to "
                                               r"import \(ImportError: No module named 'cupy'\); "
                                               r"install it with: pip install 'minimm\[gpu\]'"):
            backend.check_device(name)
    with pytest.raises(RuntimeError, match="needs CuPy"):
        mm.tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match="needs CuPy"):
        mm.tensor([1.0]).to("cuda")
    assert backend.get_array_module(np.ones(2)) is np


class _FakeCupyArray:
    pass


def _fake_cupy(available):
    def is_available():
        if isinstance(available, Exception):
            raise available
        return available
    return types.SimpleNamespace(ndarray=_FakeCupyArray, is_available=is_available)


@pytest.mark.parametrize("available", [False, RuntimeError("CUDA driver version is insufficient")])
def test_cuda_with_cupy_but_no_gpu_says_no_gpu(monkeypatch, available):
    """A successful import proves nothing: cupy.is_available() decides."""
    monkeypatch.setattr(backend, "cp", _fake_cupy(available))
    assert backend.gpu_available() is False
    with pytest.raises(RuntimeError, match=r"device 'cuda': CuPy is installed but no CUDA GPU is "
                                           r"available \(cupy.is_available\(\) is False\)"):
        backend.check_device("cuda")
    assert backend.get_array_module(np.ones(2)) is np


def test_gpu_available_is_what_check_device_asks(monkeypatch):
    monkeypatch.setattr(backend, "cp", _fake_cupy(True))
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA GPU is available"):
        backend.check_device("cuda")
    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    assert backend.check_device("cuda:1") == "cuda"


@pytest.mark.parametrize("index,values,expected", [
    (np.array([0, 2, 0, 0]), np.array([1.0, 2.0, 3.0, 4.0]), [8.0, 0.0, 2.0]),
    (np.array([True, False, True]), np.array([5.0, 6.0]), [5.0, 0.0, 6.0]),
    (slice(1, None), np.array([1.0, 1.0]), [0.0, 1.0, 1.0]),
])
def test_scatter_add_accumulates_repeated_indices(device, xp, index, values, expected):
    target = xp.zeros(3)
    if isinstance(index, np.ndarray):
        index = xp.asarray(index)
    backend.scatter_add(xp, target, index, xp.asarray(values))
    np.testing.assert_array_equal(mm.to_numpy(target), expected)
