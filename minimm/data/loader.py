"""Mini-batches (:class:`Loader`, what ``fit`` and ``evaluate`` read) and image normalisation.

    loader = Loader({"x": X, "y": y}, batch_size=32, shuffle=True, seed=0)
    for epoch in range(3):
        loader.set_epoch(epoch)              # the order is a function of (seed, epoch) only
        for batch in loader:                 # {"x": X[idx], "y": y[idx]}: NumPy rows
            ...
"""
import numpy as np

from .. import backend
from ..backend import get_array_module

# Official per-channel statistics of the CIFAR-10 training images (pixels scaled to [0, 1]).
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def num_batches(n, batch_size, drop_last=False):
    """How many batches of ``batch_size`` ``n`` samples make (the last one smaller, or dropped)."""
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


def epoch_permutation(n, seed, epoch):
    """The sample order of epoch ``epoch`` (0, 1, …): a function of (seed, epoch) only."""
    return np.random.default_rng((int(seed), int(epoch))).permutation(n)


class Loader:
    """Mini-batches of the rows of host arrays: one epoch per iteration, as PyTorch's
    ``DataLoader`` (with ``DistributedSampler``'s ``set_epoch`` and sharding).

    data:       a dict {name: array}, any names; every array's first axis is the sample axis
                (N rows). CuPy arrays and Tensors are copied to the host, lists become arrays.
    batch_size: rows per batch; the last batch of an epoch may be smaller (see drop_last).
    shuffle:    read epoch e in the order ``epoch_permutation(N, seed, e)`` — the same order
                whenever epoch e is read again, which is what makes a resumed run repeat the
                uninterrupted one bit for bit. Without shuffling, rows 0, 1, … in turn.
    seed:       a non-negative integer, for the order and for ``transform``'s random numbers.
    transform:  ``transform(batch, rng) -> batch``, applied to each batch on the host (data
                augmentation, for instance). ``rng`` is ``np.random.default_rng((seed, epoch,
                index, rank))``: a batch is transformed the same way each time it is read.
                It returns new arrays: without shuffling a batch's arrays are views of ``data``.
    drop_last:  skip the smaller last batch. With sharding, drop the last N mod
                (world_size · batch_size) rows of the order instead, so that every rank gets
                the same number of full batches (what data-parallel training needs).
    shard:      ``(rank, world_size)``: read only ``order[rank::world_size]`` of each epoch's
                order, so the ranks' shards are disjoint and together are the whole epoch.
                Without drop_last the shards differ by at most one row, and the ranks' batch
                counts by at most one.

    ``len(loader)`` is the number of batches per epoch (on this rank); ``set_epoch(e)``
    chooses the epoch the next iteration reads (``fit`` calls it). Batches are dicts of
    NumPy arrays; moving them to a device is the reader's business (``fit`` does it).
    """

    def __init__(self, data, batch_size=32, shuffle=True, seed=0, transform=None,
                 drop_last=False, shard=None):
        if not isinstance(data, dict) or not data:
            raise TypeError(f"Loader: data must be a non-empty dict of arrays, e.g. "
                            f"{{'x': X, 'y': y}}, got {type(data).__name__}"
                            f"{' (empty)' if isinstance(data, dict) else ''}")
        self.data = {k: _host(v) for k, v in data.items()}
        sizes = {k: (a.shape[0] if a.ndim else None) for k, a in self.data.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError("Loader: data arrays must share their first dimension, got "
                             + ", ".join(f"{k} {tuple(a.shape)}" for k, a in self.data.items()))
        self.n = next(iter(sizes.values()))
        _check_int("batch_size", batch_size, 1)
        _check_int("seed", seed, 0)
        rank, world = (0, 1) if shard is None else tuple(shard)
        _check_int("world_size of shard", world, 1)
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < world:
            raise ValueError(f"Loader: shard must be (rank, world_size) with 0 <= rank < "
                             f"world_size, got {shard!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"Loader: transform must be callable as transform(batch, rng), got "
                            f"{type(transform).__name__}")
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.transform, self.drop_last = transform, bool(drop_last)
        self.rank, self.world_size = int(rank), int(world)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Make the next iteration read epoch ``epoch`` (0, 1, …)."""
        self.epoch = int(epoch)

    def indices(self):
        """This rank's row indices of the current epoch, in the order they are read."""
        order = (epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle
                 else np.arange(self.n))
        if self.world_size > 1:
            if self.drop_last:
                step = self.world_size * self.batch_size
                order = order[:self.n - self.n % step]
            order = order[self.rank::self.world_size]
        return order

    def _rows(self):
        """How many rows this rank reads per epoch."""
        if self.world_size == 1:
            return self.n
        if self.drop_last:
            return self.n // (self.world_size * self.batch_size) * self.batch_size
        return len(range(self.rank, self.n, self.world_size))

    def __len__(self):
        return num_batches(self._rows(), self.batch_size, self.drop_last)

    def __iter__(self):
        order, B = self.indices(), self.batch_size
        contiguous = not self.shuffle and self.world_size == 1    # slices: views, no copies
        for i in range(len(self)):
            rows = slice(i * B, (i + 1) * B) if contiguous else order[i * B:(i + 1) * B]
            batch = {k: a[rows] for k, a in self.data.items()}
            if self.transform is not None:
                rng = np.random.default_rng((self.seed, self.epoch, i, self.rank))
                batch = self.transform(batch, rng)
            yield batch

    def __repr__(self):
        return (f"Loader({self.n} rows of {sorted(self.data)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, shard=({self.rank}, "
                f"{self.world_size}), {len(self)} batches)")


def _host(a):
    a = backend.unwrap(a)
    return backend.to_numpy(a) if hasattr(a, "shape") else np.asarray(a)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Loader: {name} must be an integer >= {minimum}, got {value!r}")


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
