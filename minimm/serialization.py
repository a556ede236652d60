"""Checkpoints: ``mm.save(obj, path)`` and ``mm.load(path)`` as plain ``.npz`` files.

What is saved is a tree of arrays and numbers, never pickled objects, so loading a file
cannot run code (``np.load(..., allow_pickle=False)``):

    mm.save(model, "model.npz")                              # its state_dict
    mm.save({"model": model, "optimizer": opt, "epoch": 3}, "ckpt.npz")
    ckpt = mm.load("ckpt.npz")      # {"model": {...arrays}, "optimizer": {...}, "epoch": 3}
    model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["optimizer"])

Nested dicts are flattened with "/" in the keys ("optimizer/state/0/exp_avg"); numbers and
strings become 0-d arrays and come back as Python numbers and strings; anything with a
``state_dict()`` method (a Module, an optimiser, a schedule) is saved as its state dict.
Empty dicts leave no entry (an optimiser that never stepped loads back without "state").
The file is written under a temporary name in the same folder and renamed over ``path``
only when complete, so a crash midway leaves the previous checkpoint intact.
"""
import os
import zipfile

import numpy as np

from . import backend
from ._io import atomic_write
from .autograd import Tensor

_MARKER = "__minimm__"   # present in every file mm.save writes; the value is the format version
_FORMAT = 1
_RESERVED = {"file", "allow_pickle", _MARKER}   # np.savez's own argument names


def _flatten(obj, prefix, out):
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"mm.save: keys must be strings, got {key!r} "
                                f"({type(key).__name__}) under {prefix or 'the top level'!r}")
            if "/" in key or not key:
                raise ValueError(f"mm.save: key {key!r} is empty or contains '/', which "
                                 f"separates nested keys")
            _flatten(value, f"{prefix}/{key}" if prefix else key, out)
        return out
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, (bool, int, float, str, np.generic)) or hasattr(obj, "shape"):
        array = np.asarray(backend.to_numpy(obj) if hasattr(obj, "shape") else obj)
    elif isinstance(obj, (list, tuple)):
        array = np.asarray(obj)
    else:
        raise TypeError(f"mm.save: cannot save {prefix!r} of type {type(obj).__name__}; "
                        f"expected arrays, Tensors, numbers, strings or dicts of them")
    if array.dtype == object:
        raise TypeError(f"mm.save: {prefix!r} would need pickling (object array); save arrays "
                        f"of numbers instead")
    if prefix in _RESERVED:
        raise ValueError(f"mm.save: the top-level key {prefix!r} is reserved; nest it under "
                         f"another key")
    out[prefix] = array
    return out


def save(obj, path):
    """Write ``obj`` (a Module, a dict of arrays, or nested dicts with numbers) to ``path``
    as an .npz file, atomically. ``path`` is used exactly as given (no suffix is added)."""
    arrays = _flatten(obj, "", {})
    if "" in arrays:
        raise TypeError(f"mm.save: expected a Module or a dict, got {type(obj).__name__}")
    arrays[_MARKER] = np.asarray(_FORMAT)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _to_python(a):
    """0-d arrays back to Python numbers / strings; other arrays unchanged."""
    return a.item() if a.shape == () else a


def load(path):
    """Read a file written by :func:`save`: a nested dict of NumPy arrays and Python numbers."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"mm.load: no checkpoint at {path!r}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"mm.load: {path!r} is not a minimm checkpoint (.npz) file: "
                         f"{type(e).__name__}: {e}") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"mm.load: {path!r} holds a single array (.npy), not a minimm "
                         f"checkpoint (.npz written by mm.save)")
    with npz:
        flat = {key: npz[key] for key in npz.files}
    if _MARKER not in flat:
        keys = sorted(flat)[:8]
        raise ValueError(f"mm.load: {path!r} is an .npz file but not one written by mm.save "
                         f"(no {_MARKER!r} entry; its keys start {keys})")
    version = int(flat.pop(_MARKER))
    if version > _FORMAT:
        raise ValueError(f"mm.load: {path!r} has checkpoint format {version}, newer than this "
                         f"minimm reads ({_FORMAT}); upgrade minimm")
    tree = {}
    for key, array in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = _to_python(array)
    return tree
