"""CIFAR-10 from the official *binary* archive: download, verify, extract safely, parse.

The dataset is Krizhevsky's (“Learning Multiple Layers of Features from Tiny Images”, 2009):
60,000 colour images of 32×32 pixels in 10 classes, 50,000 for training and 10,000 for test.

The binary archive ``cifar-10-binary.tar.gz`` holds, under ``cifar-10-batches-bin/``,

    data_batch_1.bin … data_batch_5.bin   10,000 training records each
    test_batch.bin                        10,000 test records
    batches.meta.txt                      the class names, one per line

and every record is 3073 bytes: one label byte (0…9), then 1024 red, 1024 green and
1024 blue bytes, each plane row-major over the 32×32 image. So the whole file is a
``(N, 3073)`` byte matrix, read with ``np.frombuffer`` — no pickle, no Python loop.

Where the data comes from (:func:`load_cifar10`):

* ``path=`` a local archive or an extracted folder: read as it is. It is *not* checksum-
  verified (a rebuilt copy, e.g. from the JPEG mirror, has another MD5), but it is checked
  structurally: every expected file present, labels in 0…9, and each batch file's size a
  positive multiple of 3073 of at most 10,000 records — checked on the size the tar header
  (or the file system) declares *before* anything is read, so a small compressed archive
  that would expand into gigabytes is refused without being expanded.
* otherwise the cache folder (``root=``, else ``$MINIMM_CACHE_DIR``, else the older
  ``$MINIMM_DATA``, else ``~/.cache/minimm``): the official archive is downloaded once from
  ``url=`` (else ``$MINIMM_CIFAR10_URL``, else :data:`URL`), with a timeout on every network
  wait, to a temporary name; its MD5 is verified, then it is renamed into place (so the cache
  never holds a partial file), and extracted with path-traversal protection.

Errors: a malformed file or archive raises ValueError naming it; a missing one
FileNotFoundError; a failed download :class:`DownloadError` (an OSError) naming the URL; a
wrong checksum :class:`ChecksumError` (a ValueError) saying how to retry.
"""
import hashlib
import http.client
import io
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

import numpy as np

from .._io import atomic_write

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
FOLDER_NAME = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
META_FILE = "batches.meta.txt"

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")

# The second label for multi-task learning: 0 = vehicle, 1 = animal.
#   vehicles: airplane (0), automobile (1), ship (8), truck (9)
#   animals:  bird (2), cat (3), deer (4), dog (5), frog (6), horse (7)
SUPERCLASSES = ("vehicle", "animal")
_SUPERCLASS_OF = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0], dtype=np.int64)

RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + R, G, B planes
RECORDS_PER_BATCH = 10_000      # every official batch file holds exactly this many
MAX_BATCH_BYTES = RECORDS_PER_BATCH * RECORD_BYTES
MAX_META_BYTES = 1 << 16        # batches.meta.txt: ten class names (61 bytes officially)
# the whole archive: six batch files, the names, and at most 1 MiB of anything else (the
# official one adds a readme.html of 88 bytes); and a bounded number of members
MAX_ARCHIVE_BYTES = 6 * MAX_BATCH_BYTES + MAX_META_BYTES + (1 << 20)
MAX_ARCHIVE_MEMBERS = 100

DEFAULT_TIMEOUT = 60.0          # seconds, for each network wait (connect, each read)


def superclass(labels):
    """The superclass of each CIFAR-10 label: 0 = vehicle, 1 = animal (int64, same shape).

    Vehicles are airplane, automobile, ship, truck; animals are bird, cat, deer, dog, frog,
    horse (``SUPERCLASSES[k]`` names superclass ``k``).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"superclass: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"superclass: labels must lie in 0..9, got min {labels.min()}, "
                         f"max {labels.max()}")
    return _SUPERCLASS_OF[labels]


# ----------------------------------------------------------------------------- parsing

def parse_records(buf, name="<bytes>"):
    """Bytes of CIFAR-10 records -> (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    ``name`` is only used in error messages, so they say which file is malformed.
    """
    check_batch_size(len(buf), name)
    records = np.frombuffer(buf, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise ValueError(f"CIFAR-10 file {name}: record {bad[0]} has label {labels[bad[0]]}, "
                         f"expected 0..9 ({bad.size} bad record(s))")
    images = records[:, 1:].reshape(-1, 3, 32, 32)  # R, G, B planes -> NCHW
    return images, labels


def check_batch_size(size, name):
    """Refuse a batch file of ``size`` bytes unless it is a positive multiple of the record
    size holding at most 10,000 records (the format's limits); used on declared sizes too."""
    if size == 0 or size % RECORD_BYTES:
        raise ValueError(
            f"CIFAR-10 file {name}: size {size} bytes is not a positive multiple of the "
            f"record size {RECORD_BYTES} (1 label byte + 3072 pixel bytes); "
            "the file is truncated or not a CIFAR-10 batch")
    if size > MAX_BATCH_BYTES:
        raise ValueError(
            f"CIFAR-10 file {name}: size {size} bytes holds {size // RECORD_BYTES} records, "
            f"more than the {RECORDS_PER_BATCH} of a CIFAR-10 batch file (at most "
            f"{MAX_BATCH_BYTES} bytes); refused before reading it: not a CIFAR-10 batch, or a "
            f"malicious archive (a small compressed file can expand into gigabytes)")


def _check_declared_size(base, size, name):
    if base == META_FILE:
        if size > MAX_META_BYTES:
            raise ValueError(f"CIFAR-10 file {name}: size {size} bytes, more than the "
                             f"{MAX_META_BYTES} a list of class names needs; refused before "
                             f"reading it")
    else:
        check_batch_size(size, name)


class _ArchiveBudget:
    """Counts an archive's members and declared bytes as they are listed, and refuses one
    larger than any CIFAR-10 archive before its data is decompressed."""

    def __init__(self, archive):
        self.archive, self.members, self.bytes = archive, 0, 0

    def add(self, member):
        self.members += 1
        self.bytes += member.size
        if self.members > MAX_ARCHIVE_MEMBERS or self.bytes > MAX_ARCHIVE_BYTES:
            raise ValueError(
                f"CIFAR-10 archive {self.archive}: its members declare {self.bytes} bytes in "
                f"{self.members} entries so far (at member {member.name!r}), more than the "
                f"CIFAR-10 binary archive ever holds ({MAX_ARCHIVE_BYTES} bytes, "
                f"{MAX_ARCHIVE_MEMBERS} entries); refused before expanding it")


def _stack(parts):
    """Concatenate parsed batches; always copies, so the result is writeable and owned."""
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


def _strip(name):
    while name.startswith("./"):
        name = name[2:]
    return name


def _read_archive(archive, wanted=TRAIN_FILES + TEST_FILES + (META_FILE,)):
    """{basename: bytes} of the wanted members, read straight from the tar in one pass."""
    wanted = set(wanted)
    blobs = {}
    budget = _ArchiveBudget(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:  # streaming: a .gz archive is decompressed once
                name = _strip(member.name)
                folder, base = os.path.split(name)
                take = (member.isfile() and base in wanted and base not in blobs
                        and folder in ("", FOLDER_NAME))
                # from the header alone, before its data is expanded
                if take:
                    _check_declared_size(base, member.size, f"{archive}:{base}")
                budget.add(member)
                if take:
                    blobs[base] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"CIFAR-10 archive {archive}: cannot be read as a tar archive "
                         f"({type(e).__name__}: {e})") from e
    return blobs


def _read_folder(folder):
    """{basename: bytes} of the expected files in ``folder`` or ``folder/cifar-10-batches-bin``."""
    sub = os.path.join(folder, FOLDER_NAME)
    if os.path.isdir(sub):
        folder = sub
    blobs = {}
    for base in TRAIN_FILES + TEST_FILES + (META_FILE,):
        p = os.path.join(folder, base)
        if os.path.isfile(p):
            _check_declared_size(base, os.path.getsize(p), p)
            with open(p, "rb") as f:
                blobs[base] = f.read()
    return blobs, folder


def _parse_all(blobs, source):
    missing = [b for b in TRAIN_FILES + TEST_FILES if b not in blobs]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 at {source}: missing {', '.join(missing)} (expected "
            f"{FOLDER_NAME}/data_batch_1..5.bin and {FOLDER_NAME}/test_batch.bin)")
    train = _stack([parse_records(blobs[b], f"{source}:{b}") for b in TRAIN_FILES])
    test = _stack([parse_records(blobs[b], f"{source}:{b}") for b in TEST_FILES])
    return train, test


def _load_local(path):
    if os.path.isdir(path):
        blobs, folder = _read_folder(path)
        return _parse_all(blobs, folder)
    if os.path.isfile(path):
        return _parse_all(_read_archive(path), path)
    raise FileNotFoundError(f"load_cifar10: no such file or folder: {path}")


# ----------------------------------------------------------------------------- cache, download

def cache_dir(root=None):
    """The cache folder: ``root``, else ``$MINIMM_CACHE_DIR``, else ``$MINIMM_DATA`` (the
    older name), else ``~/.cache/minimm``."""
    root = (root or os.environ.get("MINIMM_CACHE_DIR") or os.environ.get("MINIMM_DATA")
            or os.path.join("~", ".cache", "minimm"))
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def download_url(url=None):
    """The archive's URL: ``url``, else ``$MINIMM_CIFAR10_URL``, else :data:`URL`."""
    return url or os.environ.get("MINIMM_CIFAR10_URL") or URL


def file_md5(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class ChecksumError(ValueError):
    """A downloaded or cached archive does not have the expected MD5."""


class DownloadError(OSError):
    """The archive could not be fetched (no network, a refused or stalled connection, an HTTP
    error, a cut transfer); the message names the URL."""


def download_cifar10(root=None, url=None, md5=None, timeout=DEFAULT_TIMEOUT):
    """Download the official archive into the cache and return its path.

    The bytes go to a temporary file in the cache folder, whose MD5 is computed while it is
    written; only a verified file is renamed (``os.replace``, atomic) to
    ``cifar-10-binary.tar.gz``. On a checksum mismatch or any error, the temporary file is
    deleted, so the cache never holds a half-written or wrong archive. ``timeout`` (seconds)
    bounds every wait for the server, so a stalled one raises :class:`DownloadError`.
    """
    url = download_url(url)
    md5 = md5 or MD5
    folder = cache_dir(root)
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, ARCHIVE_NAME)
    print(f"downloading {url} to {final}", file=sys.stderr)
    with atomic_write(final) as out:   # raising inside the block deletes the temporary file
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a bad URL
            raise _download_error(url, folder, e) from e
        h, received = hashlib.md5(), 0
        with response:
            announced = getattr(response, "headers", {}).get("Content-Length")
            while True:
                try:
                    block = response.read(1 << 20)
                except (OSError, http.client.HTTPException) as e:  # stalled, cut, reset
                    raise _download_error(url, folder, e) from e
                if not block:
                    break
                h.update(block)
                out.write(block)
                received += len(block)
        if announced is not None and announced.isdigit() and received != int(announced):
            raise _download_error(url, folder, ConnectionError(
                f"the connection was cut: {received} of the {announced} bytes announced arrived"))
        actual = h.hexdigest()
        if actual != md5:
            raise ChecksumError(
                f"CIFAR-10 download from {url}: MD5 mismatch, expected {md5}, got {actual} "
                f"(a broken, cut or changed download). Nothing was kept: the bytes went to a "
                f"temporary file in {folder}, now deleted, so there is no partial file to "
                f"remove. To retry, run again with --download (load_cifar10(download=True)); to "
                f"use a mirror, set MINIMM_CIFAR10_URL (or --url / url=); if you have the "
                f"archive, pass it with --data (load_cifar10(path='.../{ARCHIVE_NAME}'))")
    return final


def _download_error(url, folder, e):
    # URLError wraps the socket's error in .reason; HTTPError's str() has the status code
    reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", None) or e
    return DownloadError(
        f"CIFAR-10 download from {url} failed ({type(e).__name__}: {reason}); nothing was "
        f"written to {folder}. Check the network and retry, set MINIMM_CIFAR10_URL (or --url / "
        f"url=) to a mirror, or pass a local copy of {ARCHIVE_NAME} with --data "
        f"(load_cifar10(path=...))")


def _safe_members(tar, dest, archive):
    """The archive's members, after refusing any that would land outside ``dest``."""
    dest = os.path.realpath(dest)

    def inside(target):
        target = os.path.realpath(target)
        return target == dest or target.startswith(dest + os.sep)

    members = []
    budget = _ArchiveBudget(archive)
    for m in tar:  # listed one by one, so a bad header stops us before the rest is expanded
        name = m.name
        base = os.path.basename(_strip(name))
        if m.isfile() and base in TRAIN_FILES + TEST_FILES + (META_FILE,):
            _check_declared_size(base, m.size, f"{archive}:{base}")
        budget.add(m)
        members.append(m)
        parts = name.replace("\\", "/").split("/")
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts \
                or not inside(os.path.join(dest, name)):
            raise ValueError(f"CIFAR-10 archive {archive}: refusing to extract member {name!r}, "
                             "its path leaves the destination folder (path traversal)")
        if m.issym() or m.islnk():
            base = os.path.dirname(os.path.join(dest, name)) if m.issym() else dest
            if os.path.isabs(m.linkname) or not inside(os.path.join(base, m.linkname)):
                raise ValueError(f"CIFAR-10 archive {archive}: refusing to extract link {name!r} "
                                 f"-> {m.linkname!r}, it points outside the destination folder")
        elif not (m.isfile() or m.isdir()):
            raise ValueError(f"CIFAR-10 archive {archive}: refusing to extract {name!r}, "
                             "not a regular file or folder")
    return members


def extract_archive(archive, dest):
    """Extract ``archive`` into ``dest/cifar-10-batches-bin`` safely and atomically.

    Every member is checked first (no absolute paths, no ``..``, no links leaving ``dest``);
    the files go to a temporary folder next to ``dest`` and are moved into place only when
    all expected batches are there.
    """
    final = os.path.join(dest, FOLDER_NAME)
    os.makedirs(dest, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest)
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _safe_members(tar, tmp, archive)
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **kwargs)
        except (tarfile.TarError, EOFError) as e:
            raise ValueError(f"CIFAR-10 archive {archive}: cannot be extracted "
                             f"({type(e).__name__}: {e})") from e
        blobs, folder = _read_folder(tmp)
        _parse_all(blobs, archive)  # validate before it becomes the cache
        os.replace(folder, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(folder):
    return all(os.path.isfile(os.path.join(folder, b)) for b in TRAIN_FILES + TEST_FILES)


def load_cifar10(path=None, root=None, download=True, url=None, timeout=DEFAULT_TIMEOUT):
    """Load CIFAR-10 as ``((x_train, y_train), (x_test, y_test))``.

    Images are uint8 ``(N, 3, 32, 32)`` (NCHW, channels R, G, B); labels are int64 in 0…9.

    path:     a local ``cifar-10-binary.tar.gz`` (read directly, no extraction) or a folder
              holding ``cifar-10-batches-bin/`` or the ``.bin`` files. Not checksum-verified,
              but validated; errors name the file.
    root:     the cache folder used when ``path`` is None (default ``$MINIMM_CACHE_DIR``, then
              ``$MINIMM_DATA``, then ``~/.cache/minimm``).
    download: when the cache lacks the data, download the official archive (MD5-verified).
    url:      where to download it from (default ``$MINIMM_CIFAR10_URL``, then :data:`URL`).
    timeout:  seconds to wait for the server at each step before giving up.
    """
    if path is not None:
        return _load_local(os.path.abspath(os.path.expanduser(os.fspath(path))))

    folder = cache_dir(root)
    extracted = os.path.join(folder, FOLDER_NAME)
    archive = os.path.join(folder, ARCHIVE_NAME)
    if not _complete(extracted):
        if os.path.isfile(extracted) or os.path.isdir(extracted) and os.listdir(extracted):
            raise FileNotFoundError(
                f"load_cifar10: the cache folder {extracted} exists but is incomplete; it was "
                "left alone — move it away to re-extract, or pass path=")
        if not os.path.isfile(archive):
            if not download:
                raise FileNotFoundError(
                    f"load_cifar10: CIFAR-10 is not in the cache {folder} and download=False. "
                    f"Pass a local copy with load_cifar10(path='/path/to/{ARCHIVE_NAME}') "
                    f"(or an extracted folder), or allow the download from {download_url(url)}")
            archive = download_cifar10(root, url=url, timeout=timeout)
        else:
            actual = file_md5(archive)
            if actual != MD5:  # a file we did not verify: leave it, but do not trust it
                raise ChecksumError(
                    f"load_cifar10: cached {archive} has MD5 {actual}, expected {MD5}; "
                    "it was left in place. Delete it and run again with --download "
                    "(load_cifar10(download=True)) to fetch it again, or load it "
                    "explicitly with load_cifar10(path=...) (--data)")
        if os.path.isdir(extracted):
            os.rmdir(extracted)  # empty, checked above
        extract_archive(archive, folder)
    return _load_local(extracted)


def class_names(path=None, root=None):
    """The class names from ``batches.meta.txt`` when present, else :data:`CLASSES`."""
    if path is None:
        path = os.path.join(cache_dir(root), FOLDER_NAME)
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    blob = None
    if os.path.isdir(path):
        blob = _read_folder(path)[0].get(META_FILE)
    elif os.path.isfile(path):
        blob = _read_archive(path, (META_FILE,)).get(META_FILE)
    if blob is None:
        return CLASSES
    names = tuple(line.strip() for line in io.StringIO(blob.decode("utf-8")) if line.strip())
    return names or CLASSES
