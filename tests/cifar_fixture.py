"""A small CIFAR-10 binary archive, built by the tests in the official layout.

Records are written independently of the loader: one label byte, then the R, G and B planes
of the 32×32 image, each row-major; files ``cifar-10-batches-bin/data_batch_1..5.bin`` and
``test_batch.bin`` in a gzipped tar, as in ``cifar-10-binary.tar.gz``.
"""
import io
import tarfile

import numpy as np

PREFIX = "cifar-10-batches-bin/"
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


def records(images_nchw, labels):
    """uint8 images (N, 3, 32, 32) and labels -> the bytes of N records."""
    n = len(labels)
    rows = np.empty((n, 1 + 3 * 32 * 32), dtype=np.uint8)
    rows[:, 0] = labels
    rows[:, 1:] = images_nchw.reshape(n, -1)      # NCHW rows are the R, G, B planes in order
    return rows.tobytes()


def make_images(rng, labels, signal=0):
    """Random uint8 images; with ``signal`` > 0 the class shifts one colour plane's
    brightness, so an image model can learn something."""
    images = rng.integers(0, 256 - signal if signal else 256, size=(len(labels), 3, 32, 32),
                          dtype=np.int64)
    if signal:
        shift = signal * (labels // 3 + 1) // 4                      # 1..4 quarters of signal
        images[np.arange(len(labels)), labels % 3] += shift[:, None, None]
    return np.clip(images, 0, 255).astype(np.uint8)


def write_cifar_archive(path, n_train_per_batch=20, n_test=40, seed=0, signal=0):
    """Write a tar.gz at ``path``; return (path, ((x_train, y_train), (x_test, y_test)))."""
    rng = np.random.default_rng(seed)
    blobs, xs, ys = {}, [], []
    for name in TRAIN_FILES:
        y = rng.integers(0, 10, n_train_per_batch)
        x = make_images(rng, y, signal)
        blobs[name] = records(x, y)
        xs.append(x)
        ys.append(y)
    y_test = rng.integers(0, 10, n_test)
    x_test = make_images(rng, y_test, signal)
    blobs[TEST_FILE] = records(x_test, y_test)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(PREFIX + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return str(path), ((np.concatenate(xs), np.concatenate(ys)), (x_test, y_test))
