"""The images the chapters train on: the real CIFAR-10 where the learner already has it, a
labelled synthetic stand-in otherwise (and always in quick mode). Nothing here downloads.

    path = find_cifar10()                # $MINIMM_CIFAR10, or the archive in minimm's cache
    (x_train, y_train), (x_test, y_test), path = case_study_images(quick)

The stand-in has CIFAR-10's shapes — uint8 images (N, 3, 32, 32) in 10 classes — and codes the
class c by a colour and the angle of a stripe pattern, (c mod 5)·36°, drowned in strong pixel
noise so that an image-only model does *not* reach 100 %. It says nothing about real photos.
"""
import os

import numpy as np

from . import cifar10

PALETTE = np.array([[230, 60, 60], [60, 200, 60], [60, 60, 230], [220, 220, 60],
                    [200, 60, 200], [60, 200, 200], [240, 140, 40], [140, 80, 40],
                    [150, 150, 150], [30, 30, 30]], dtype=np.float64)


def find_cifar10():
    """A local copy of CIFAR-10 the learner already has, or None (the network is never used):
    the path in the environment variable ``MINIMM_CIFAR10`` (the binary archive or its
    extracted folder), else the archive or folder in minimm's cache."""
    candidates = [os.environ.get("MINIMM_CIFAR10"),
                  os.path.join(cifar10.cache_dir(), cifar10.ARCHIVE_NAME),
                  os.path.join(cifar10.cache_dir(), cifar10.FOLDER_NAME)]
    return next((p for p in candidates if p and os.path.exists(os.path.expanduser(p))), None)


def stand_in_images(n, seed, noise=180.0):
    """(images uint8 (n, 3, 32, 32), labels int64 (n,)): class c is the colour PALETTE[c]
    (half of it; the other half a random tint) plus stripes at angle (c mod 5)·36° with a
    random phase, plus Gaussian pixel noise of standard deviation ``noise`` (0 shows the
    clean pattern of the same draws)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    yy, xx = np.mgrid[0:32, 0:32]
    angle = (labels % 5) * np.pi / 5
    phase = rng.uniform(0, 2 * np.pi, n)
    stripes = np.sin(0.8 * (np.cos(angle)[:, None, None] * xx
                            + np.sin(angle)[:, None, None] * yy) + phase[:, None, None])
    colour = 0.5 * rng.uniform(60, 180, (n, 3, 1, 1)) + 0.5 * PALETTE[labels][:, :, None, None]
    images = colour + 50 * stripes[:, None] + noise * rng.standard_normal((n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def case_study_images(quick, real=(10_000, 2_000), stand_in=(6_000, 1_000),
                      quick_sizes=(2_000, 500), seed=0):
    """((x_train, y_train), (x_test, y_test), path) for a chapter: the first ``real`` =
    (train, test) images of the local CIFAR-10 when :func:`find_cifar10` finds one and not
    ``quick``; else stand-in images, ``quick_sizes`` or ``stand_in`` many, drawn with seeds
    100 + seed (train) and 200 + seed (test). ``path`` is None for the stand-in."""
    path = None if quick else find_cifar10()
    if path is not None:
        (x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(path=path, download=False)
        n_train, n_test = real
        return (x_train[:n_train], y_train[:n_train]), (x_test[:n_test], y_test[:n_test]), path
    n_train, n_test = quick_sizes if quick else stand_in
    return (stand_in_images(n_train, seed=100 + seed), stand_in_images(n_test, seed=200 + seed),
            None)


__all__ = ["find_cifar10", "stand_in_images", "case_study_images", "PALETTE"]
