"""The data layer: CIFAR-10 parsing/download/extraction, captions, batching, normalisation.

Every archive here is built by the tests themselves in the official binary layout; no
network is used (the download is served by a patched ``urllib.request.urlopen``).
"""
import hashlib
import io
import os
import tarfile

import numpy as np
import pytest

from minimm.data import captions as C
from minimm.data import cifar10, loader

TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST = "test_batch.bin"
PREFIX = "cifar-10-batches-bin/"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def no_download_settings_from_the_environment(monkeypatch):
    """The download tests assume the defaults: a developer's own settings must not leak in."""
    for name in ("MINIMM_CIFAR10_URL", "MINIMM_CACHE_DIR", "MINIMM_DATA"):
        monkeypatch.delenv(name, raising=False)


def make_split(rng, n):
    """Known images (N, 32, 32, 3) in HWC, labels uint8, and their records in the official layout.

    The record oracle is written independently of the loader: label byte, then the R plane,
    the G plane and the B plane, each row-major.
    """
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    out = bytearray()
    for img, lab in zip(images, labels):
        out.append(int(lab))
        for ch in range(3):
            out += img[:, :, ch].tobytes()
    return images, labels, bytes(out)


def make_blobs(seed=0, n_train=3, n_test=4):
    rng = np.random.default_rng(seed)
    blobs, train_imgs, train_labs = {}, [], []
    for name in TRAIN:
        im, lab, blob = make_split(rng, n_train)
        blobs[name] = blob
        train_imgs.append(im)
        train_labs.append(lab)
    im, lab, blobs[TEST] = make_split(rng, n_test)
    blobs["batches.meta.txt"] = b"\n".join(n.encode() for n in cifar10.CLASSES) + b"\n"
    truth = ((np.concatenate(train_imgs), np.concatenate(train_labs)), (im, lab))
    return blobs, truth


def write_tar(path, blobs, prefix=PREFIX, mode="w:gz", extra=()):
    with tarfile.open(path, mode) as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for info, blob in extra:
            tar.addfile(info, io.BytesIO(blob) if blob is not None else None)
    return str(path)


def check_loaded(result, truth):
    (xtr, ytr), (xte, yte) = result
    for x, y, (img_hwc, lab) in ((xtr, ytr, truth[0]), (xte, yte, truth[1])):
        assert x.dtype == np.uint8 and x.shape == (len(lab), 3, 32, 32)
        assert y.dtype == np.int64 and y.shape == (len(lab),)
        np.testing.assert_array_equal(y, lab.astype(np.int64))
        # channel c of the loaded NCHW image is plane c of the HWC original, pixel by pixel
        for c in range(3):
            np.testing.assert_array_equal(x[:, c], img_hwc[:, :, :, c])
        assert x.flags.writeable


@pytest.fixture
def archive(tmp_path):
    blobs, truth = make_blobs()
    return write_tar(tmp_path / "cifar-10-binary.tar.gz", blobs), truth


# ----------------------------------------------------------------------------- loading

def test_load_from_archive(archive):
    path, truth = archive
    result = cifar10.load_cifar10(path=path)
    check_loaded(result, truth)
    assert result[0][0].shape[0] == 15 and result[1][0].shape[0] == 4


def test_pixel_positions_single_record(tmp_path):
    # one record with every pixel distinct per channel: R = 0, G = 1, B = 2 at (0, 0),
    # then a marker at row 3, column 5 of the G plane only
    rec = np.zeros(3073, dtype=np.uint8)
    rec[0] = 7
    rec[1:1025] = 10
    rec[1025:2049] = 20
    rec[2049:] = 30
    rec[1025 + 3 * 32 + 5] = 255
    blobs = {name: rec.tobytes() for name in TRAIN + [TEST]}
    (xtr, ytr), (xte, yte) = cifar10.load_cifar10(path=write_tar(tmp_path / "a.tar", blobs,
                                                                 mode="w"))
    assert ytr.tolist() == [7] * 5 and yte.tolist() == [7]
    img = xte[0]
    assert img[0].min() == img[0].max() == 10 and img[2].min() == img[2].max() == 30
    assert img[1, 3, 5] == 255 and (img[1] == 255).sum() == 1 and img[1, 0, 0] == 20


def test_load_from_folder_with_and_without_subfolder(tmp_path):
    blobs, truth = make_blobs(seed=1)
    nested = tmp_path / "nested"
    (nested / "cifar-10-batches-bin").mkdir(parents=True)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name, blob in blobs.items():
        (nested / "cifar-10-batches-bin" / name).write_bytes(blob)
        (flat / name).write_bytes(blob)
    check_loaded(cifar10.load_cifar10(path=nested), truth)
    check_loaded(cifar10.load_cifar10(path=str(flat)), truth)


def test_archive_without_prefix_and_class_names(tmp_path):
    blobs, truth = make_blobs(seed=2)
    blobs["batches.meta.txt"] = b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
    path = write_tar(tmp_path / "flat.tar.gz", blobs, prefix="")
    check_loaded(cifar10.load_cifar10(path=path), truth)
    assert cifar10.class_names(path) == tuple("abcdefghij")
    assert cifar10.class_names(tmp_path / "nothing-here") == cifar10.CLASSES


def test_truncated_record_names_the_file(tmp_path):
    blobs, _ = make_blobs()
    blobs["data_batch_3.bin"] = blobs["data_batch_3.bin"][:-10]
    path = write_tar(tmp_path / "bad.tar.gz", blobs)
    with pytest.raises(ValueError, match=r"data_batch_3\.bin.*not a positive multiple.*3073"):
        cifar10.load_cifar10(path=path)


def test_bad_label_names_file_record_and_value(tmp_path):
    blobs, _ = make_blobs()
    test = bytearray(blobs[TEST])
    test[2 * 3073] = 12
    blobs[TEST] = bytes(test)
    with pytest.raises(ValueError, match=r"test_batch\.bin: record 2 has label 12"):
        cifar10.load_cifar10(path=write_tar(tmp_path / "bad.tar.gz", blobs))


def test_missing_test_batch(tmp_path):
    blobs, _ = make_blobs()
    del blobs[TEST]
    path = write_tar(tmp_path / "bad.tar.gz", blobs)
    with pytest.raises(FileNotFoundError, match=r"bad\.tar\.gz: missing test_batch\.bin"):
        cifar10.load_cifar10(path=path)


def test_not_an_archive_and_missing_path(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not a tar file at all" * 10)
    with pytest.raises(ValueError, match=r"junk\.tar\.gz: cannot be read as a tar archive"):
        cifar10.load_cifar10(path=junk)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        cifar10.load_cifar10(path=tmp_path / "absent.tar.gz")


# ----------------------------------------------------------------------------- extraction

@pytest.mark.parametrize("name", ["../evil", "cifar-10-batches-bin/../../evil", "/tmp/evil"])
def test_extraction_rejects_path_traversal(tmp_path, name):
    blobs, _ = make_blobs()
    evil = tarfile.TarInfo(name)
    evil.size = 4
    path = write_tar(tmp_path / "evil.tar.gz", blobs, extra=[(evil, b"evil")])
    dest = tmp_path / "cache"
    with pytest.raises(ValueError, match="refusing to extract member.*path traversal"):
        cifar10.extract_archive(path, dest)
    assert not (tmp_path / "evil").exists() and not (dest / "cifar-10-batches-bin").exists()
    assert os.listdir(dest) == []  # the temporary folder is gone too


def test_extraction_rejects_link_outside(tmp_path):
    blobs, _ = make_blobs()
    link = tarfile.TarInfo(PREFIX + "escape")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../../etc/passwd"
    path = write_tar(tmp_path / "link.tar.gz", blobs, extra=[(link, None)])
    with pytest.raises(ValueError, match="refusing to extract link.*outside"):
        cifar10.extract_archive(path, tmp_path / "cache")


def test_extraction_of_valid_archive(archive, tmp_path):
    path, truth = archive
    folder = cifar10.extract_archive(path, tmp_path / "cache")
    assert sorted(os.listdir(folder)) == sorted(TRAIN + [TEST, "batches.meta.txt"])
    check_loaded(cifar10.load_cifar10(path=folder), truth)


# ----------------------------------------------------------------------------- download

class FakeResponse(io.BytesIO):
    pass


def serve(monkeypatch, payload):
    """Patch urlopen to return ``payload``; returns the list of URLs requested."""
    calls = []

    def fake_urlopen(url, *args, **kwargs):
        calls.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    return calls


def test_download_checksum_mismatch_leaves_nothing(archive, tmp_path, monkeypatch):
    path, _ = archive
    payload = open(path, "rb").read()
    calls = serve(monkeypatch, payload)
    root = tmp_path / "cache"
    actual = hashlib.md5(payload).hexdigest()
    with pytest.raises(cifar10.ChecksumError,
                       match=f"expected {cifar10.MD5}, got {actual}"):
        cifar10.load_cifar10(root=root)
    assert calls == [cifar10.URL]
    assert os.listdir(root) == []  # no archive, no temporary file


def test_download_verifies_caches_and_downloads_once(archive, tmp_path, monkeypatch):
    path, truth = archive
    payload = open(path, "rb").read()
    monkeypatch.setattr(cifar10, "MD5", hashlib.md5(payload).hexdigest())
    calls = serve(monkeypatch, payload)
    root = tmp_path / "cache"
    check_loaded(cifar10.load_cifar10(root=root), truth)
    assert len(calls) == 1
    assert (root / "cifar-10-binary.tar.gz").read_bytes() == payload
    assert sorted(os.listdir(root)) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]
    check_loaded(cifar10.load_cifar10(root=root), truth)  # from the cache
    monkeypatch.setenv("MINIMM_DATA", str(root))
    check_loaded(cifar10.load_cifar10(download=False), truth)  # root from the environment
    assert len(calls) == 1


def test_download_false_without_cache(tmp_path, monkeypatch):
    calls = serve(monkeypatch, b"")
    with pytest.raises(FileNotFoundError, match=r"download=False.*load_cifar10\(path="):
        cifar10.load_cifar10(root=tmp_path / "empty", download=False)
    assert calls == []


def test_unverified_archive_in_cache_is_not_trusted_nor_deleted(archive, tmp_path):
    path, _ = archive
    root = tmp_path / "cache"
    root.mkdir()
    (root / "cifar-10-binary.tar.gz").write_bytes(open(path, "rb").read())
    with pytest.raises(cifar10.ChecksumError, match="left in place"):
        cifar10.load_cifar10(root=root, download=False)
    assert (root / "cifar-10-binary.tar.gz").exists()


# ----------------------------------------------------------------------------- superclass

def test_superclass_mapping():
    animals = {"bird", "cat", "deer", "dog", "frog", "horse"}
    expected = [1 if name in animals else 0 for name in cifar10.CLASSES]
    got = cifar10.superclass(np.arange(10))
    assert got.dtype == np.int64 and got.tolist() == expected
    assert cifar10.SUPERCLASSES == ("vehicle", "animal")
    with pytest.raises(ValueError, match="superclass: labels must lie in 0..9"):
        cifar10.superclass(np.array([3, 10]))


# ----------------------------------------------------------------------------- captions

def class_of_words():
    """word -> class, from the synonym table; the tests check that it is a function."""
    table = {}
    for c, words in enumerate(C.SYNONYMS):
        for w in words:
            assert w not in table, f"synonym {w!r} belongs to two classes"
            table[w] = c
    return table


def named_classes(captions):
    """The class each caption names (parsed from its words), -1 when it names none."""
    table = class_of_words()
    out = []
    for cap in captions:
        hits = {table[w] for w in C.tokenize(cap) if w in table}
        assert len(hits) <= 1, cap
        out.append(hits.pop() if hits else -1)
    return np.array(out)


def test_captions_proportions_and_kinds():
    n = 20000
    labels = np.random.default_rng(5).integers(0, 10, size=n)
    caps, kinds, named = C.make_captions(labels, seed=0, return_kinds=True)
    parsed = named_classes(caps)
    np.testing.assert_array_equal(parsed, named)
    true = np.mean(parsed == labels)
    none = np.mean(parsed == -1)
    wrong = 1 - true - none
    # binomial std at n = 20000 is <= 0.0036: these bands are > 4 sigma wide, and the
    # alternative settings below move the proportions far outside them
    assert abs(true - 0.5) < 0.015 and abs(wrong - 0.2) < 0.015 and abs(none - 0.3) < 0.015
    np.testing.assert_array_equal(kinds == C.TRUE, parsed == labels)
    # wrong classes are spread over the 9 others
    w = parsed[(parsed != labels) & (parsed >= 0)]
    shift = (w - labels[(parsed != labels) & (parsed >= 0)]) % 10
    counts = np.bincount(shift, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()
    # other settings move the proportions as asked
    caps2 = C.make_captions(labels, seed=0, p_true=0.8, p_wrong=0.0)
    parsed2 = named_classes(caps2)
    assert abs(np.mean(parsed2 == labels) - 0.8) < 0.015
    assert np.all((parsed2 == labels) | (parsed2 == -1))
    assert all(c == -1 for c in named_classes(C.make_captions(labels[:500], p_true=0, p_wrong=0)))


def test_captions_text_only_accuracy_matches_formula():
    n = 20000
    labels = np.random.default_rng(6).integers(0, 10, size=n)
    parsed = named_classes(C.make_captions(labels, seed=3))
    guess = np.random.default_rng(7).integers(0, 10, size=n)
    predicted = np.where(parsed >= 0, parsed, guess)  # the Bayes rule of the docstring
    assert C.text_only_accuracy() == pytest.approx(0.5 + 0.3 / 10)
    assert abs(np.mean(predicted == labels) - C.text_only_accuracy()) < 0.015


def test_captions_deterministic_and_varied():
    labels = np.arange(200) % 10
    a = C.make_captions(labels, seed=11)
    assert a == C.make_captions(labels, seed=11)
    assert a != C.make_captions(labels, seed=12)
    assert len(set(a)) > 50  # templates and synonyms vary
    used = {w for cap in C.make_captions(np.arange(5000) % 10, seed=0) for w in C.tokenize(cap)}
    assert {"plane", "car", "kitten", "puppy", "lorry", "boat"} <= used
    with pytest.raises(ValueError, match="make_captions: labels must lie in 0..9"):
        C.make_captions(np.array([1, 10]))
    with pytest.raises(ValueError, match="p_true \\+ p_wrong <= 1"):
        C.make_captions(labels, p_true=0.9, p_wrong=0.2)


def test_tokenize_and_vocabulary():
    assert C.tokenize("A Photo of an AIRPLANE, 2x!") == ["a", "photo", "of", "an", "airplane", "x"]
    vocab = C.caption_vocabulary()
    assert vocab["<pad>"] == 0 and vocab["<unk>"] == 1 and vocab["zebra"] == 1
    assert len(vocab) < 1000 and len(set(vocab.itos)) == len(vocab)
    caps = C.make_captions(np.arange(3000) % 10, seed=0)
    assert all(vocab[w] > 1 for cap in caps for w in C.tokenize(cap))  # no <unk> in captions
    built = C.Vocabulary.build(["b a", "a c", "a"], min_freq=2)
    assert built.itos == ["<pad>", "<unk>", "a"]


def test_encode_padding_and_lengths():
    vocab = C.Vocabulary(["a", "photo", "of", "cat"])
    ids, lengths = C.encode(["a photo of a cat", "cat", "a zebra", ""], vocab, max_len=4)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    np.testing.assert_array_equal(ids, [[2, 3, 4, 2], [5, 0, 0, 0], [2, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(lengths, [4, 1, 2, 0])
    pre, lengths_pre = C.encode(["cat", "a photo"], vocab, max_len=3, padding="pre")
    np.testing.assert_array_equal(pre, [[0, 0, 5], [0, 2, 3]])
    np.testing.assert_array_equal(lengths_pre, [1, 2])
    assert vocab.decode(ids[0]) == ["a", "photo", "of", "a"]
    with pytest.raises(TypeError, match="encode: captions must be a list"):
        C.encode("a cat", vocab)


# ----------------------------------------------------------------------------- batching

def test_batches_cover_every_index_once(xp):
    n = 103
    x = xp.asarray(np.arange(n * 2).reshape(n, 2))
    y = xp.asarray(np.arange(n))
    seen = []
    sizes = []
    for xb, yb in loader.batches((x, y), 10, shuffle=True, seed=0):
        assert xp.all(xb[:, 0] == 2 * yb)  # rows stay aligned
        seen.append(np.asarray(yb.get() if hasattr(yb, "get") else yb))
        sizes.append(len(yb))
    seen = np.concatenate(seen)
    assert sizes == [10] * 10 + [3] and len(sizes) == loader.num_batches(n, 10)
    assert sorted(seen.tolist()) == list(range(n)) and seen.tolist() != list(range(n))
    kept = np.concatenate([np.asarray(b.get() if hasattr(b, "get") else b)
                           for (b,) in loader.batches((y,), 10, seed=0, drop_last=True)])
    assert kept.size == 100 == 10 * loader.num_batches(n, 10, drop_last=True)
    assert len(set(kept.tolist())) == 100


def test_batches_determinism_and_no_shuffle():
    y = np.arange(50)
    caps = [f"c{i}" for i in range(50)]
    a = [b.tolist() for b, _ in loader.batches((y, caps), 8, seed=3)]
    assert a == [b.tolist() for b, _ in loader.batches((y, caps), 8, seed=3)]
    assert a != [b.tolist() for b, _ in loader.batches((y, caps), 8, seed=4)]
    for b, c in loader.batches((y, caps), 8, seed=3):
        assert c.tolist() == [f"c{i}" for i in b]
    rng = np.random.default_rng(0)  # one Generator: a new order each epoch
    e1 = [b.tolist() for (b,) in loader.batches((y,), 50, seed=rng)]
    e2 = [b.tolist() for (b,) in loader.batches((y,), 50, seed=rng)]
    assert e1 != e2
    ordered = np.concatenate([b for (b,) in loader.batches((y,), 8, shuffle=False)])
    np.testing.assert_array_equal(ordered, y)
    with pytest.raises(ValueError, match=r"share their first dimension.*\(50,\), \(49,\)"):
        next(loader.batches((y, y[:49]), 8))
    with pytest.raises(TypeError, match="pass a tuple of arrays"):
        next(loader.batches(y, 8))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        next(loader.batches((y,), 0))


def test_normalize_images_float32(xp):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(4, 3, 5, 6), dtype=np.uint8)
    mean = np.array([0.4914, 0.4822, 0.4465])
    std = np.array([0.2470, 0.2435, 0.2616])
    oracle = (x / 255.0 - mean[None, :, None, None]) / std[None, :, None, None]
    out = loader.normalize_images(xp.asarray(x))
    assert out.dtype == np.float32 and out.shape == x.shape
    got = out.get() if hasattr(out, "get") else out
    np.testing.assert_allclose(got, oracle, rtol=1e-5, atol=1e-5)
    assert loader.CIFAR10_MEAN.dtype == loader.CIFAR10_STD.dtype == np.float32
    with pytest.raises(TypeError, match="normalize_images: expected uint8"):
        loader.normalize_images(xp.asarray(x, dtype=xp.float32))
    with pytest.raises(ValueError, match=r"normalize_images: expected images \(N, 3, H, W\)"):
        loader.normalize_images(xp.asarray(x[:, :2]))
