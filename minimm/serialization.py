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

Every failure of :func:`load` raises one exception type, :class:`CheckpointError` (a
``ValueError``; ``mm.CheckpointError``), whose message names the file and what is wrong with
it: missing (then also a ``FileNotFoundError``), a directory, empty, truncated or corrupt
(a zip CRC or header error), not an .npz, a pickle or an object array (refused: unpickling
can run code), a member that is not an array, or an .npz that ``mm.save`` did not write.
"""
import os

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


class CheckpointError(ValueError):
    """:func:`load` cannot read ``path`` as a checkpoint; the message names the file and why."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """:func:`load` found no file at ``path`` (both a CheckpointError and a FileNotFoundError)."""


_ZIP_MAGIC, _NPY_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x93NUMPY", b"\x80"


def load(path):
    """Read a file written by :func:`save`: a nested dict of NumPy arrays and Python numbers.

    Raises :class:`CheckpointError`, naming ``path``, for every file it cannot read."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointNotFoundError(f"mm.load: no checkpoint at {path!r}")
    if not os.path.isfile(path):
        raise CheckpointError(f"mm.load: {path!r} is a directory (or another non-file), not a "
                              f"checkpoint file")
    flat = _read_arrays(path)
    marker = flat.pop(_MARKER, None)
    if marker is None:
        keys = sorted(flat)[:8]
        raise CheckpointError(f"mm.load: {path!r} is an .npz file but not one written by mm.save "
                              f"(no {_MARKER!r} entry; its keys start {keys})")
    if marker.shape != () or marker.dtype.kind not in "iu":
        raise CheckpointError(f"mm.load: {path!r} has a malformed {_MARKER!r} entry (dtype "
                              f"{marker.dtype}, shape {marker.shape}), not a format version")
    version = int(marker)
    if version > _FORMAT:
        raise CheckpointError(f"mm.load: {path!r} has checkpoint format {version}, newer than "
                              f"this minimm reads ({_FORMAT}); upgrade minimm")
    return _unflatten(flat, path)


def _read_arrays(path):
    """{key: array} of every member of the .npz at ``path``, with pickling off; each way of
    failing (zipfile, zlib and NumPy raise a dozen types) becomes one CheckpointError."""
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if not head:
        raise CheckpointError(f"mm.load: {path!r} is empty (0 bytes), not a checkpoint: an "
                              f"interrupted copy? mm.save itself never leaves a partial file")
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(f"mm.load: refusing to unpickle {path!r}: it is a Python pickle, "
                              f"and loading a pickle can run arbitrary code; mm.load reads only "
                              f".npz files written by mm.save")
    if head.startswith(_NPY_MAGIC):
        raise CheckpointError(f"mm.load: {path!r} holds a single array (.npy), not a minimm "
                              f"checkpoint (.npz written by mm.save)")
    if not head.startswith(_ZIP_MAGIC):
        raise CheckpointError(f"mm.load: {path!r} is not a minimm checkpoint (.npz) file: it "
                              f"does not start like a zip archive (first bytes {head[:4]!r})")
    flat, member = {}, None
    try:
        with np.load(path, allow_pickle=False) as npz:
            for member in npz.files:
                value = npz[member]
                if not isinstance(value, np.ndarray):
                    raise CheckpointError(f"mm.load: {path!r} has a member {member!r} that is "
                                          f"not a NumPy array (.npy); not a file written by "
                                          f"mm.save")
                flat[member] = value
    except CheckpointError:
        raise
    except MemoryError:
        raise
    except Exception as e:
        if isinstance(e, ValueError) and "allow_pickle" in str(e):
            raise CheckpointError(f"mm.load: refusing to unpickle entry {member!r} of {path!r} "
                                  f"(an object array): loading pickled data can run arbitrary "
                                  f"code; mm.save writes arrays of numbers only") from e
        where = f" (entry {member!r})" if member is not None else ""
        raise CheckpointError(f"mm.load: {path!r} is truncated or corrupt, not a readable "
                              f"minimm checkpoint (.npz){where}: {type(e).__name__}: {e}") from e
    return flat


def _unflatten(flat, path):
    """"a/b/c" keys back into nested dicts; 0-d arrays back to Python numbers and strings."""
    tree = {}
    for key, array in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"mm.load: {path!r} has both an entry {name!r} and "
                                      f"entries under it ({key!r}); not a file mm.save wrote")
        if leaf in node:
            raise CheckpointError(f"mm.load: {path!r} has both an entry {key!r} and entries "
                                  f"under it; not a file mm.save wrote")
        node[leaf] = _to_python(array)
    return tree
