"""mm.load on every kind of bad file: one exception type (mm.CheckpointError, a ValueError),
with the path in the message — never a bare zip, zlib, EOF or attribute error.

The files are damaged by hand here: truncated at every length, single bytes flipped across
the whole file, foreign members, pickles, object arrays, empty files, directories.
"""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import minimm as mm
from minimm import serialization


@pytest.fixture
def good(tmp_path):
    """A small real checkpoint (a few hundred bytes) and what it holds."""
    path = tmp_path / "good.npz"
    tree = {"model": {"W": np.arange(6, dtype=np.float32).reshape(2, 3)}, "epoch": 2}
    mm.save(tree, path)
    return path, path.read_bytes()


def _same_tree(loaded):
    return (sorted(loaded) == ["epoch", "model"] and loaded["epoch"] == 2
            and np.array_equal(loaded["model"]["W"], np.arange(6).reshape(2, 3))
            and loaded["model"]["W"].dtype == np.float32)


def _refused(path, match=None):
    with pytest.raises(mm.CheckpointError, match=match) as info:
        mm.load(path)
    assert str(path) in str(info.value), "the message names the file"
    assert str(info.value).startswith("mm.load: ")
    return info.value


def test_checkpoint_error_is_exported_and_a_value_error():
    assert mm.CheckpointError is serialization.CheckpointError
    assert issubclass(mm.CheckpointError, ValueError)
    assert issubclass(serialization.CheckpointNotFoundError, mm.CheckpointError)
    assert issubclass(serialization.CheckpointNotFoundError, FileNotFoundError)


def test_every_truncation_is_refused(good, tmp_path):
    path, blob = good
    bad = tmp_path / "cut.npz"
    for n in range(len(blob)):               # every proper prefix, the empty one included
        bad.write_bytes(blob[:n])
        _refused(bad)


def test_every_flipped_byte_is_refused_or_harmless(good, tmp_path):
    """A byte flipped anywhere either leaves the content intact (zip fields nobody reads, such
    as timestamps) or is refused with CheckpointError — never another exception, and never
    different data returned as if it were the checkpoint."""
    path, blob = good
    bad = tmp_path / "flipped.npz"
    refused = 0
    for i in range(len(blob)):
        damaged = bytearray(blob)
        damaged[i] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        try:
            loaded = mm.load(bad)
        except mm.CheckpointError as e:
            assert str(bad) in str(e)
            refused += 1
        else:
            assert _same_tree(loaded), f"byte {i} flipped: different data loaded silently"
    assert refused > len(blob) // 2          # most bytes matter (data, CRCs, headers)


def test_crc_error_in_the_data_is_a_checkpoint_error(good, tmp_path):
    path, blob = good
    marker = np.arange(6, dtype=np.float32).tobytes()
    at = blob.index(marker)                  # the array's bytes, stored uncompressed
    damaged = bytearray(blob)
    damaged[at + 5] ^= 0x01
    bad = tmp_path / "crc.npz"
    bad.write_bytes(bytes(damaged))
    error = _refused(bad, r"is truncated or corrupt.*\(entry 'model/W'\).*BadZipFile.*CRC")
    assert isinstance(error.__cause__, zipfile.BadZipFile)   # the original stays attached


def test_empty_file_and_directory(tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _refused(empty, r"is empty \(0 bytes\)")
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    _refused(folder, "is a directory")


def test_missing_file_is_both_a_checkpoint_error_and_file_not_found(tmp_path):
    missing = tmp_path / "nowhere" / "model.npz"
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        mm.load(missing)
    _refused(missing, "no checkpoint at")


def test_not_a_zip(tmp_path):
    for name, blob in [("text.npz", b"hello, this is text\n" * 20), ("one_byte.npz", b"P"),
                       ("almost.npz", b"PK\x05\x06" + bytes(18))]:   # an empty zip's end record
        p = tmp_path / name
        p.write_bytes(blob)
        _refused(p)


def test_pickles_are_refused_naming_the_operation_and_the_file(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(pickle.dumps({"W": np.zeros(3)}))
    _refused(p, r"^mm\.load: refusing to unpickle .*model\.pkl.*it is a Python pickle")
    # an .npz whose member is an object array: np.savez pickles it inside the zip
    obj = tmp_path / "objects.npz"
    np.savez(obj, __minimm__=np.asarray(1), ragged=np.array([np.zeros(2), None], dtype=object))
    _refused(obj, r"refusing to unpickle entry 'ragged' of .*objects\.npz.*object array")


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_foreign_members(tmp_path):
    marker = _npy(np.asarray(1))
    # a member that is not an array (NumPy hands back its raw bytes)
    p = _zip(tmp_path / "text_member.npz", {"__minimm__.npy": marker, "notes.txt": b"hello"})
    _refused(p, r"member 'notes\.txt' that is not a NumPy array")
    # an array member whose .npy header is garbage
    p = _zip(tmp_path / "bad_header.npz", {"__minimm__.npy": marker, "W.npy": b"\x93NUMPY junk"})
    _refused(p, r"truncated or corrupt.*\(entry 'W'\)")
    # a compressed member whose deflate stream is damaged (zlib.error inside zipfile)
    p = tmp_path / "deflate.npz"
    np.savez_compressed(p, __minimm__=np.asarray(1), W=np.arange(1000.0))
    blob = bytearray(p.read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    p.write_bytes(bytes(blob))
    _refused(p)
    # no marker: some other program's .npz
    p = _zip(tmp_path / "other.npz", {"weights.npy": _npy(np.zeros(2))})
    _refused(p, r"not one written by mm\.save .*'weights'")
    # a marker that is not a version number
    p = _zip(tmp_path / "marker.npz", {"__minimm__.npy": _npy(np.zeros(3))})
    _refused(p, r"malformed '__minimm__' entry \(dtype float64, shape \(3,\)\)")
    # a newer format
    p = _zip(tmp_path / "future.npz", {"__minimm__.npy": _npy(np.asarray(99))})
    _refused(p, r"checkpoint format 99, newer than this minimm reads")


def test_conflicting_keys(tmp_path):
    marker = _npy(np.asarray(1))
    for first, second in [("a", "a/b"), ("a/b", "a")]:
        p = _zip(tmp_path / "clash.npz", {"__minimm__.npy": marker, f"{first}.npy": _npy(np.ones(1)),
                                          f"{second}.npy": _npy(np.ones(1))})
        _refused(p, r"has both an entry .* and entries under it")


def test_good_file_still_loads(good):
    path, _ = good
    assert _same_tree(mm.load(path))
    assert _same_tree(mm.load(os.fspath(path)))
