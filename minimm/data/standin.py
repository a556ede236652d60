"""A labelled synthetic stand-in for CIFAR-10, for the chapters' quick mode, and where the
chapters look for a real copy.

:func:`stand_in_images` draws uint8 images (n, 3, 32, 32) in 10 classes: class c sets a
colour and the angle (c mod 5)·36° of a stripe pattern, drowned in strong pixel noise so an
image model does not reach 100 % (the stand-in chapter 08 introduced, the same draws).
:func:`find_cifar10` returns a local copy the user already has — ``$MINIMM_CIFAR10`` or the
archive or folder in minimm's cache — or None; it never touches the network.
"""
import os

import numpy as np

from . import cifar10

PALETTE = np.array([[230, 60, 60], [60, 200, 60], [60, 60, 230], [220, 220, 60],
                    [200, 60, 200], [60, 200, 200], [240, 140, 40], [140, 80, 40],
                    [150, 150, 150], [30, 30, 30]], dtype=np.float64)


def stand_in_images(n, seed, noise=180.0):
    """(images uint8 (n, 3, 32, 32), labels int64 (n,)): class c = colour PALETTE[c] mixed
    with a random one, plus stripes at angle (c mod 5)·36°, plus N(0, noise²) pixel noise."""
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


def find_cifar10():
    """A local CIFAR-10 (``$MINIMM_CIFAR10``, or the archive or folder in the cache), or None."""
    candidates = [os.environ.get("MINIMM_CIFAR10"),
                  os.path.join(cifar10.cache_dir(), cifar10.ARCHIVE_NAME),
                  os.path.join(cifar10.cache_dir(), cifar10.FOLDER_NAME)]
    return next((p for p in candidates if p and os.path.exists(os.path.expanduser(p))), None)
