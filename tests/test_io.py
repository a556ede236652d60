"""minimm._io: atomic writes, and the cleanup of temporaries that interrupted writes left."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minimm as mm
from minimm._io import atomic_write, remove_stale_temporaries, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dead_pid():
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def touch(path, age_s=0.0, content=b"partial"):
    path.write_bytes(content)
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


@pytest.mark.skipif(os.name == "nt", reason="process ids are not asked on Windows")
def test_next_successful_save_removes_stale_temporaries_of_the_same_target(device, tmp_path):
    target = tmp_path / "model.npz"
    dead = dead_pid()
    stale = [touch(tmp_path / f".model.npz.{dead}-abcd1234.tmp"),           # writer killed
             touch(tmp_path / ".model.npz.k2j4l5m6.tmp", age_s=2 * 3600)]     # old name, old
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [touch(tmp_path / f".model.npz.{alive.pid}-zzzz9999.tmp"),    # still writing
                touch(tmp_path / f".model.npz.{os.getpid()}-qqqq1111.tmp"),  # this process
                touch(tmp_path / ".model.npz.recent12.tmp"),                  # old name, recent
                touch(tmp_path / f".other.npz.{dead}-abcd1234.tmp"),          # another target
                touch(tmp_path / f".model.npz.bak.{dead}-abcd1234.tmp"),      # another target
                touch(tmp_path / f"model.npz.{dead}-abcd1234.tmp"),           # not hidden
                touch(tmp_path / "notes.txt")]
        mm.save({"w": np.ones(3)}, target)
    finally:
        alive.kill()
        alive.wait()
    assert all(not p.exists() for p in stale)
    assert all(p.exists() for p in keep)
    np.testing.assert_array_equal(mm.load(target)["w"], np.ones(3))


def test_a_failed_write_removes_nothing_and_keeps_the_old_file(device, tmp_path):
    target = tmp_path / "h.json"
    write_json({"a": 1}, target)
    old = touch(tmp_path / ".h.json.oldname1.tmp", age_s=2 * 3600)
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as f:
            f.write("{half")
            raise RuntimeError("crash")
    assert target.read_text() == '{\n  "a": 1\n}\n' and old.exists()   # only success cleans
    assert sorted(os.listdir(tmp_path)) == [".h.json.oldname1.tmp", "h.json"]
    write_json({"a": float("nan")}, target)                            # strict JSON: NaN -> null
    assert target.read_text() == '{\n  "a": null\n}\n' and not old.exists()
    assert remove_stale_temporaries(target) == []


@pytest.mark.skipif(os.name == "nt" or not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_saves_killed_midway_leave_temporaries_the_next_save_removes(device, tmp_path):
    target = tmp_path / "ckpt.npz"
    mm.save({"epoch": 1}, target)
    good = target.read_bytes()
    killer = ("import os, signal, sys\n"
              "from minimm._io import atomic_write\n"
              "with atomic_write(sys.argv[1]) as f:\n"
              "    f.write(b'half a checkpoint')\n"
              "    f.flush()\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _ in range(3):
        code = subprocess.run([sys.executable, "-c", killer, str(target)], env=env).returncode
        assert code == -signal.SIGKILL
    leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert len(leftovers) == 3 and target.read_bytes() == good        # never half-written
    mm.save({"epoch": 2}, target)
    assert os.listdir(tmp_path) == ["ckpt.npz"] and mm.load(target)["epoch"] == 2
