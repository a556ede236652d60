"""Writing files so that a crash never leaves a half-written one (layer 0: no minimm imports).

Every file minimm writes — checkpoints, JSON results, plots, the downloaded dataset — goes
through :func:`atomic_write`.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path`` for writing; when the block ends normally, rename
    it over ``path`` (``os.replace`` is atomic on one file system); when it raises, delete it.

    So ``path`` holds either its previous content or the complete new one, never a part.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
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


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
