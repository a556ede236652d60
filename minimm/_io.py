"""Writing files so that a crash never leaves a half-written one (layer 0: no minimm imports).

Every file minimm writes — checkpoints, JSON results, plots, the downloaded dataset — goes
through :func:`atomic_write`.
"""
import contextlib
import json
import math
import os
import re
import tempfile
import time

STALE_AFTER_S = 3600.0   # a temporary whose writer cannot be identified counts as stale after this


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path`` for writing; when the block ends normally, rename
    it over ``path`` (``os.replace`` is atomic on one file system); when it raises, delete it.

    So ``path`` holds either its previous content or the complete new one, never a part.
    A process killed while writing (kill -9, power loss) cannot delete its temporary
    ``.NAME.PID-XXXXXXXX.tmp``; the next successful write of the same ``path`` removes such
    leftovers (:func:`remove_stale_temporaries`).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.{os.getpid()}-",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes it private; give it a normal mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    remove_stale_temporaries(path)


def remove_stale_temporaries(path):
    """Delete the temporaries that interrupted writes of ``path`` left beside it; return
    their names.

    A temporary is ``.NAME.PID-XXXXXXXX.tmp`` (``.NAME.XXXXXXXX.tmp`` before minimm put the
    writer's process id in the name). It is stale when its process no longer runs, or — when
    that cannot be asked (no id in the name, or Windows) — when it has not been written to for
    an hour. A temporary another running process is still writing is left alone, and so is
    every file of another name.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(r"\." + re.escape(name) + r"\.(?:(\d+)-)?[a-z0-9_]{8}\.tmp")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = pattern.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            pid = int(match.group(1)) if match.group(1) else None
            with contextlib.suppress(OSError):     # it may vanish meanwhile: fine
                if pid != os.getpid() and _stale(entry, pid):
                    os.remove(entry.path)
                    removed.append(entry.name)
    return removed


def _stale(entry, pid):
    if pid is not None and os.name != "nt":       # on Windows os.kill(pid, 0) would kill it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:                    # alive, someone else's
            return False
        return False
    return time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_safe(obj):
    """``obj`` with every nan and inf replaced by None, so that it is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(obj, path):
    """``json.dump(json_safe(obj))`` to ``path``, indented, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(json_safe(obj), f, indent=2)
        f.write("\n")
