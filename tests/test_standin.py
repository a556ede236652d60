"""minimm.data.standin: the chapters' image source (a local CIFAR-10, else a stand-in)."""
import numpy as np

from minimm.data import cifar10, standin


def test_stand_in_shapes_classes_and_determinism():
    x, y = standin.stand_in_images(200, seed=3)
    assert x.shape == (200, 3, 32, 32) and x.dtype == np.uint8
    assert y.dtype == np.int64 and set(np.unique(y)) <= set(range(10))
    x2, y2 = standin.stand_in_images(200, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    clean, y3 = standin.stand_in_images(200, seed=3, noise=0.0)
    np.testing.assert_array_equal(y3, y)
    # without noise the class colour shows: the mean colour of class c is nearest to
    # E[tint]/2 + PALETTE[c]/2 = 60 + PALETTE[c]/2 (the stripes average out)
    means = np.stack([clean[y == c].mean(axis=(0, 2, 3)) for c in range(10)])
    d = ((means[:, None] - (60 + standin.PALETTE[None] / 2)) ** 2).sum(-1)
    assert (d.argmin(axis=1) == np.arange(10)).all()


def test_case_study_images_quick_is_always_the_stand_in(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIMM_CIFAR10", str(tmp_path))     # exists, but quick wins
    (xt, yt), (xs, ys), path = standin.case_study_images(True, quick_sizes=(30, 10))
    assert path is None and xt.shape[0] == 30 and xs.shape[0] == 10


def test_find_cifar10_reads_the_environment_then_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(cifar10, "cache_dir", lambda root=None: str(tmp_path / "cache"))
    monkeypatch.delenv("MINIMM_CIFAR10", raising=False)
    assert standin.find_cifar10() is None
    monkeypatch.setenv("MINIMM_CIFAR10", str(tmp_path / "missing.tar.gz"))
    assert standin.find_cifar10() is None
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(b"")
    monkeypatch.setenv("MINIMM_CIFAR10", str(archive))
    assert standin.find_cifar10() == str(archive)


def test_case_study_images_reads_a_real_archive(monkeypatch, tmp_path):
    from cifar_fixture import write_cifar_archive
    archive, ((x_train, y_train), (x_test, y_test)) = write_cifar_archive(
        tmp_path / "cifar-10-binary.tar.gz", n_train_per_batch=4, n_test=5, signal=40)
    monkeypatch.setenv("MINIMM_CIFAR10", archive)
    (xt, yt), (xs, ys), path = standin.case_study_images(False, real=(7, 3))
    assert path == archive and xt.dtype == np.uint8
    np.testing.assert_array_equal(xt, x_train[:7])
    np.testing.assert_array_equal(ys, y_test[:3])
