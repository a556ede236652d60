"""CIFAR-10 loading against hostile or broken inputs, and downloads that fail.

Archives are built by hand here (tiny, or a tar header that declares a huge member and then
stops: the loader must refuse it from the header alone). Downloads never touch the network:
they use file:// URLs, a local HTTP server thread, and a socket that accepts and never answers.
"""
import gzip
import hashlib
import http.server
import io
import os
import socket
import sys
import tarfile
import threading

import numpy as np
import pytest

from minimm.data import cifar10

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_fixture import PREFIX, TEST_FILE, TRAIN_FILES, write_cifar_archive  # noqa: E402

RECORD = 3073


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch):
    for name in ("MINIMM_CIFAR10_URL", "MINIMM_CACHE_DIR", "MINIMM_DATA"):
        monkeypatch.delenv(name, raising=False)


def _blobs(n=2, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name in TRAIN_FILES + [TEST_FILE]:
        rows = rng.integers(0, 256, (n, RECORD), dtype=np.uint8)
        rows[:, 0] = rng.integers(0, 10, n)
        out[name] = rows.tobytes()
    return out


def _tar_gz(path, blobs, extra_headers=()):
    """A .tar.gz of ``blobs``, then raw tar headers (with no data after them: a member that
    declares a size and never delivers it, as a hostile archive would before its payload)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(PREFIX + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        end = tar.offset                     # where the end-of-archive blocks will start
    data = raw.getvalue()[:end]
    for info in extra_headers:
        data += info.tobuf(format=tarfile.GNU_FORMAT)
    path.write_bytes(gzip.compress(data, compresslevel=1))
    return path


def _header(name, size):
    info = tarfile.TarInfo(name)
    info.size = size
    return info


# --- declared sizes are checked before anything is read --------------------------------------

@pytest.mark.parametrize("records", [10_001, 40_000, 3_000_000])
def test_oversized_batch_refused_from_its_header(tmp_path, records):
    blobs = _blobs()
    del blobs["data_batch_2.bin"]
    path = _tar_gz(tmp_path / "bomb.tar.gz", blobs,
                   [_header(PREFIX + "data_batch_2.bin", records * RECORD)])
    message = (rf"data_batch_2\.bin: size {records * RECORD} bytes holds {records} records, more "
               rf"than the 10000 of a CIFAR-10 batch file")
    with pytest.raises(ValueError, match=message):
        cifar10.load_cifar10(path=path)
    dest = tmp_path / "cache"
    with pytest.raises(ValueError, match=message):
        cifar10.extract_archive(path, dest)
    assert os.listdir(dest) == []              # nothing was written


def test_real_zero_bomb_refused(tmp_path):
    """10,001 records of zeros: 30.7 MB that gzip squeezes into a few tens of kB."""
    blobs = _blobs()
    blobs["data_batch_1.bin"] = bytes(10_001 * RECORD)
    path = tmp_path / "zeros.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(PREFIX + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    assert os.path.getsize(path) < 1_000_000
    with pytest.raises(ValueError, match="10001 records, more than the 10000"):
        cifar10.load_cifar10(path=path)


def test_exactly_the_official_maximum_is_accepted_by_the_size_check():
    cifar10.check_batch_size(10_000 * RECORD, "x.bin")       # no error
    cifar10.check_batch_size(RECORD, "x.bin")
    for size in (0, RECORD - 1, RECORD + 1, 10_000 * RECORD + RECORD):
        with pytest.raises(ValueError, match=r"CIFAR-10 file x\.bin: size"):
            cifar10.check_batch_size(size, "x.bin")


@pytest.mark.parametrize("size", [0, 5, RECORD * 3 + 7])
def test_sizes_that_are_not_whole_records_refused_from_the_header(tmp_path, size):
    blobs = _blobs()
    del blobs[TEST_FILE]
    path = _tar_gz(tmp_path / "odd.tar.gz", blobs, [_header(PREFIX + TEST_FILE, size)])
    with pytest.raises(ValueError, match=rf"test_batch\.bin: size {size} bytes is not a positive "
                                         r"multiple of the record size 3073"):
        cifar10.load_cifar10(path=path)


def test_oversized_class_names_refused(tmp_path):
    path = _tar_gz(tmp_path / "meta.tar.gz", _blobs(),
                   [_header(PREFIX + "batches.meta.txt", 50_000_000)])
    with pytest.raises(ValueError, match=r"batches\.meta\.txt: size 50000000 bytes, more than"):
        cifar10.load_cifar10(path=path)
    with pytest.raises(ValueError, match=r"batches\.meta\.txt: size 50000000 bytes"):
        cifar10.class_names(path)


def test_huge_unrelated_member_refused_before_it_is_expanded(tmp_path):
    path = _tar_gz(tmp_path / "junk.tar.gz", _blobs(), [_header("padding.bin", 10 ** 10)])
    with pytest.raises(ValueError, match=r"members declare \d+ bytes in 7 entries so far \(at "
                                         r"member 'padding\.bin'\), more than the CIFAR-10 "
                                         r"binary archive ever holds"):
        cifar10.load_cifar10(path=path)
    with pytest.raises(ValueError, match="more than the CIFAR-10 binary archive ever holds"):
        cifar10.extract_archive(path, tmp_path / "cache")


def test_too_many_members_refused(tmp_path):
    path = _tar_gz(tmp_path / "many.tar.gz", _blobs(),
                   [_header(f"empty_{i}", 0) for i in range(200)])
    with pytest.raises(ValueError, match=r"in 101 entries so far"):
        cifar10.load_cifar10(path=path)


def test_oversized_files_in_a_folder_refused_before_reading(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, blob in _blobs().items():
        (folder / name).write_bytes(blob)
    with open(folder / "data_batch_4.bin", "wb") as f:
        f.truncate(50_000 * RECORD)                  # sparse: no disk used, 153 MB declared
    with pytest.raises(ValueError, match=r"data_batch_4\.bin: size 153650000 bytes holds 50000 "
                                         r"records"):
        cifar10.load_cifar10(path=tmp_path)
    (folder / "data_batch_4.bin").write_bytes(_blobs()["data_batch_4.bin"])
    with open(folder / "batches.meta.txt", "wb") as f:
        f.truncate(1 << 30)
    with pytest.raises(ValueError, match=r"batches\.meta\.txt: size 1073741824 bytes"):
        cifar10.load_cifar10(path=tmp_path)


@pytest.mark.parametrize("label", [10, 11, 128, 255])
@pytest.mark.parametrize("source", ["archive", "folder"])
def test_labels_of_ten_or_more_refused(tmp_path, label, source):
    blobs = _blobs(n=3)
    batch = bytearray(blobs["data_batch_5.bin"])
    batch[1 * RECORD] = label                      # record 1's label byte
    blobs["data_batch_5.bin"] = bytes(batch)
    if source == "archive":
        path = _tar_gz(tmp_path / "labels.tar.gz", blobs)
    else:
        path = tmp_path / "flat"
        path.mkdir()
        for name, blob in blobs.items():
            (path / name).write_bytes(blob)
    with pytest.raises(ValueError, match=rf"data_batch_5\.bin: record 1 has label {label}, "
                                         r"expected 0\.\.9 \(1 bad record\(s\)\)"):
        cifar10.load_cifar10(path=path)


def test_small_honest_archive_still_loads(tmp_path):
    path, ((x, y), (xt, yt)) = write_cifar_archive(tmp_path / "ok.tar.gz", 3, 4, signal=8)
    (x2, y2), (xt2, yt2) = cifar10.load_cifar10(path=path)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(yt2, yt)


# --- downloads ---------------------------------------------------------------------------------

@pytest.fixture
def payload(tmp_path, monkeypatch):
    """A tiny archive's bytes, with the expected MD5 patched to match it."""
    path, truth = write_cifar_archive(tmp_path / "served.tar.gz", 2, 3, signal=8)
    blob = open(path, "rb").read()
    monkeypatch.setattr(cifar10, "MD5", hashlib.md5(blob).hexdigest())
    return blob, truth


class _Server:
    """A local HTTP server in a thread: /ok serves the payload, /cut announces the whole
    payload and closes after half, /stall sends half and then waits, anything else is 404."""

    def __init__(self, blob):
        release = self.release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path not in ("/ok", "/cut", "/stall"):
                    self.send_error(404, "no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                if self.path == "/ok":
                    self.wfile.write(blob)
                    return
                self.wfile.write(blob[: len(blob) // 2])
                self.wfile.flush()
                if self.path == "/stall":
                    release.wait(30)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(payload):
    s = _Server(payload[0])
    yield s
    s.close()


def _load_in_thread(**kwargs):
    """Run load_cifar10 in a thread and give up after 30 s, so a missing timeout fails the test
    instead of hanging the suite."""
    outcome = {}

    def run():
        try:
            outcome["result"] = cifar10.load_cifar10(**kwargs)
        except BaseException as e:   # noqa: BLE001 (handed back to the test)
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "load_cifar10 did not return: no timeout on the download"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_download_over_http_from_url_argument(server, payload, tmp_path):
    root = tmp_path / "cache"
    (x, y), _ = _load_in_thread(root=root, url=server.url + "/ok", timeout=10)
    np.testing.assert_array_equal(y, payload[1][0][1])
    assert sorted(os.listdir(root)) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]


def test_stalled_server_times_out_naming_the_url(tmp_path):
    """A socket that accepts (the kernel completes the handshake) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/cifar-10-binary.tar.gz"
    root = tmp_path / "cache"
    try:
        with pytest.raises(cifar10.DownloadError, match=rf"download from {url} failed \(.*timed "
                                                        r"out.*nothing was written to"):
            _load_in_thread(root=root, url=url, timeout=0.3)
    finally:
        listener.close()
    assert os.listdir(root) == []


def test_stall_in_the_middle_of_the_body_times_out_and_leaves_nothing(server, tmp_path):
    root = tmp_path / "cache"
    with pytest.raises(cifar10.DownloadError, match=rf"{server.url}/stall failed .*timed out"):
        _load_in_thread(root=root, url=server.url + "/stall", timeout=0.5)
    assert os.listdir(root) == []                 # no partial file, no temporary file


def test_cut_connection_leaves_nothing(server, tmp_path):
    root = tmp_path / "cache"
    with pytest.raises(cifar10.DownloadError, match=rf"{server.url}/cut failed \(ConnectionError: "
                                                    r"the connection was cut: \d+ of the \d+ "
                                                    r"bytes announced arrived\)"):
        _load_in_thread(root=root, url=server.url + "/cut", timeout=10)
    assert os.listdir(root) == []


def test_http_error_and_refused_connection_name_the_url(server, tmp_path):
    with pytest.raises(cifar10.DownloadError, match=rf"{server.url}/gone failed \(HTTPError: .*404"):
        _load_in_thread(root=tmp_path / "a", url=server.url + "/gone", timeout=10)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/x"   # bound, not listening: refused
    try:
        with pytest.raises(cifar10.DownloadError, match=rf"{url} failed \(URLError: .*refused"):
            _load_in_thread(root=tmp_path / "b", url=url, timeout=10)
    finally:
        closed.close()
    with pytest.raises(cifar10.DownloadError, match=r"nowhere://x failed \(URLError: unknown url"):
        _load_in_thread(root=tmp_path / "c", url="nowhere://x", timeout=10)
    assert all(os.listdir(tmp_path / d) == [] for d in "abc")
    assert issubclass(cifar10.DownloadError, OSError)


def test_url_and_cache_from_environment_file_url(payload, tmp_path, monkeypatch):
    served = tmp_path / "mirror" / "cifar-10-binary.tar.gz"
    served.parent.mkdir()
    served.write_bytes(payload[0])
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("MINIMM_CIFAR10_URL", served.as_uri())
    monkeypatch.setenv("MINIMM_CACHE_DIR", str(cache))
    monkeypatch.setenv("MINIMM_DATA", str(tmp_path / "older-name"))     # the newer name wins
    assert cifar10.download_url() == served.as_uri()
    assert cifar10.cache_dir() == str(cache)
    (_, y), _ = _load_in_thread(timeout=10)
    np.testing.assert_array_equal(y, payload[1][0][1])
    assert os.path.isfile(cache / "cifar-10-binary.tar.gz")
    assert not (tmp_path / "older-name").exists()
    # arguments win over the environment
    assert cifar10.download_url("file:///elsewhere") == "file:///elsewhere"
    assert cifar10.cache_dir(tmp_path / "arg") == str(tmp_path / "arg")
    monkeypatch.delenv("MINIMM_CACHE_DIR")
    assert cifar10.cache_dir() == str(tmp_path / "older-name")          # still read


def test_missing_file_url_names_the_url(tmp_path):
    url = (tmp_path / "absent.tar.gz").as_uri()
    with pytest.raises(cifar10.DownloadError, match=rf"download from {url} failed"):
        _load_in_thread(root=tmp_path / "cache", url=url)


def test_download_false_names_the_configured_url(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMM_CIFAR10_URL", "https://mirror.example/cifar.tgz")
    with pytest.raises(FileNotFoundError, match=r"allow the download from "
                                                r"https://mirror\.example/cifar\.tgz"):
        cifar10.load_cifar10(root=tmp_path, download=False)


def test_checksum_error_says_how_to_retry_and_a_retry_works(payload, tmp_path, monkeypatch):
    served = tmp_path / "served.tar.gz"
    root = tmp_path / "cache"
    good_md5 = cifar10.MD5
    monkeypatch.setattr(cifar10, "MD5", "0" * 32)
    with pytest.raises(cifar10.ChecksumError) as info:
        cifar10.load_cifar10(root=root, url=served.as_uri())
    message = str(info.value)
    for part in (served.as_uri(), "expected " + "0" * 32, "Nothing was kept",
                 "no partial file to remove", "run again with --download", "MINIMM_CIFAR10_URL",
                 "--data"):
        assert part in message, part
    assert os.listdir(root) == []                 # verified: there is no partial file
    monkeypatch.setattr(cifar10, "MD5", good_md5)  # the "retry": same call, good bytes
    (_, y), _ = cifar10.load_cifar10(root=root, url=served.as_uri())
    np.testing.assert_array_equal(y, payload[1][0][1])
