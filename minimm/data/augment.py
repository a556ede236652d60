"""Data augmentation for image batches: random crops (translations) and horizontal flips.

Both are vectorised over the batch (one gather for the crops, one ``where`` for the flips:
no Python loop over images or pixels) and work on NumPy or CuPy arrays of any dtype
(uint8 images before normalisation, typically). The randomness comes from an explicit
NumPy Generator; :func:`batch_rng` derives it from (seed, epoch, batch index) alone, so a
run resumed at any epoch draws exactly the augmentations an uninterrupted run draws.

    rng = batch_rng(seed, epoch, b)
    images = random_flip(random_crop(images, padding=4, rng=rng), rng=rng)

:func:`flip` and :func:`translate` transform every image alike, for test-time augmentation.
"""
import numpy as np

from ..backend import get_array_module


def batch_rng(seed, epoch, batch):
    """The Generator of batch ``batch`` of epoch ``epoch``: a function of the three alone."""
    return np.random.default_rng((int(seed), int(epoch), int(batch)))


def _check(op, images):
    if images.ndim != 4:
        raise ValueError(f"{op}: expected images (N, C, H, W), got shape {tuple(images.shape)}")


def random_crop(images, padding=4, rng=None, fill=0):
    """Each image shifted by its own random (dy, dx) ∈ [−padding, padding]²: the
    H × W crop of the image zero-padded by ``padding`` pixels (``fill`` for the border) at
    offset (padding + dy, padding + dx). Returns a new array, same shape and dtype."""
    _check("random_crop", images)
    padding = int(padding)
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    if padding == 0:
        return images.copy()
    xp = get_array_module(images)
    rng = rng if rng is not None else np.random.default_rng()
    N, C, H, W = images.shape
    padded = xp.full((N, C, H + 2 * padding, W + 2 * padding), fill, dtype=images.dtype)
    padded[:, :, padding:padding + H, padding:padding + W] = images
    oy = xp.asarray(rng.integers(0, 2 * padding + 1, N))
    ox = xp.asarray(rng.integers(0, 2 * padding + 1, N))
    n = xp.arange(N)[:, None, None, None]
    c = xp.arange(C)[None, :, None, None]
    rows = (oy[:, None] + xp.arange(H)[None, :])[:, None, :, None]      # (N, 1, H, 1)
    cols = (ox[:, None] + xp.arange(W)[None, :])[:, None, None, :]      # (N, 1, 1, W)
    return padded[n, c, rows, cols]


def random_flip(images, p=0.5, rng=None):
    """Each image mirrored left-right with probability ``p``. Returns a new array."""
    _check("random_flip", images)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_flip: p must be in [0, 1], got {p}")
    xp = get_array_module(images)
    rng = rng if rng is not None else np.random.default_rng()
    flip = xp.asarray(rng.random(images.shape[0]) < p)[:, None, None, None]
    return xp.where(flip, images[..., ::-1], images)


def flip(images):
    """All images mirrored left-right (for flip test-time augmentation)."""
    _check("flip", images)
    return images[..., ::-1]


def translate(images, dy, dx):
    """All images shifted by (dy, dx) pixels, out[..., i, j] = x[..., i − dy, j − dx], the
    uncovered border filled by mirror reflection (for translation test-time augmentation).
    Returns a view of a new array, same shape and dtype."""
    _check("translate", images)
    dy, dx = int(dy), int(dx)
    N, C, H, W = images.shape
    if not (abs(dy) < H and abs(dx) < W):
        raise ValueError(f"translate: a shift of ({dy}, {dx}) pixels needs images larger than "
                         f"it, got shape {tuple(images.shape)}")
    xp = get_array_module(images)
    py, px = abs(dy), abs(dx)
    padded = xp.pad(images, ((0, 0), (0, 0), (py, py), (px, px)), mode="reflect")
    return padded[:, :, py - dy:py - dy + H, px - dx:px - dx + W]


__all__ = ["batch_rng", "random_crop", "random_flip", "flip", "translate"]
