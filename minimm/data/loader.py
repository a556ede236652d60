"""Mini-batches and image normalisation (NumPy or CuPy arrays alike)."""
import numpy as np

from ..backend import get_array_module

# Official per-channel statistics of the CIFAR-10 training images (pixels scaled to [0, 1]).
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def num_batches(n, batch_size, drop_last=False):
    """How many batches :func:`batches` yields for ``n`` samples (for progress bars)."""
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(arrays, batch_size, shuffle=True, seed=None, drop_last=False):
    """Yield tuples of aligned mini-batches ``(a[idx], b[idx], …)`` over one epoch.

    arrays:  a tuple or list of arrays sharing their first dimension (images, labels,
             token ids…); a list of str (captions) is turned into a NumPy array.
    shuffle: permute the samples with a NumPy Generator seeded by ``seed`` (an int, None
             or a Generator — pass one Generator to get a new order every epoch);
             without shuffling, the batches are plain slices (views, no copies).
    drop_last: skip the last batch when it is smaller than ``batch_size``.

    Every sample appears exactly once per epoch (except those dropped by ``drop_last``).
    """
    if not isinstance(arrays, (tuple, list)) or hasattr(arrays, "shape"):
        raise TypeError("batches: pass a tuple of arrays, e.g. batches((x, y), 32), "
                        f"got {type(arrays).__name__}")
    arrays = [a if hasattr(a, "shape") else np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("batches: need at least one array")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
    sizes = [a.shape[0] if a.ndim else None for a in arrays]
    if None in sizes or len(set(sizes)) != 1:
        raise ValueError("batches: arrays must share their first dimension, got shapes "
                         + ", ".join(str(tuple(a.shape)) for a in arrays))
    n = sizes[0]
    stop = n - n % batch_size if drop_last else n
    if not shuffle:
        for i in range(0, stop, batch_size):
            yield tuple(a[i:i + batch_size] for a in arrays)
        return
    order = np.random.default_rng(seed).permutation(n)
    # one copy of the permutation per array module, so CuPy arrays are indexed on the GPU
    orders = {}
    for a in arrays:
        xp = get_array_module(a)
        if xp not in orders:
            orders[xp] = order if xp is np else xp.asarray(order)
    for i in range(0, stop, batch_size):
        yield tuple(a[orders[get_array_module(a)][i:i + batch_size]] for a in arrays)


def normalize_images(x, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    """uint8 images (N, C, H, W) -> float32 ``(x / 255 - mean_c) / std_c`` per channel.

    The constants are float32 and so is the result (NumPy 2 would promote float32 combined
    with float64 constants to float64). Works on NumPy and CuPy arrays.
    """
    xp = get_array_module(x)
    if x.dtype != np.uint8:
        raise TypeError(f"normalize_images: expected uint8 images, got dtype {x.dtype}")
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    std = np.asarray(std, dtype=np.float32).reshape(-1)
    if x.ndim != 4 or x.shape[1] != mean.size or std.size != mean.size:
        raise ValueError(f"normalize_images: expected images (N, {mean.size}, H, W) matching "
                         f"mean {mean.shape} and std {std.shape}, got {tuple(x.shape)}")
    scale = xp.asarray(1.0 / (255.0 * std), dtype=xp.float32).reshape(1, -1, 1, 1)
    shift = xp.asarray(mean / std, dtype=xp.float32).reshape(1, -1, 1, 1)
    return (x.astype(xp.float32) * scale - shift).astype(xp.float32, copy=False)
