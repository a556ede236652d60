"""minimm.data.Loader: per-epoch orders, seeded per-batch transforms, sharding, errors."""
import numpy as np
import pytest

import minimm as mm
from minimm.data.loader import Loader, epoch_permutation


def rows(n=23):
    return {"x": np.arange(n * 2, dtype=np.float32).reshape(n, 2), "y": np.arange(n)}


def read(loader):
    return [batch["y"] for batch in loader]


def test_epoch_orders_are_seeded_permutations(device):
    loader = Loader(rows(23), batch_size=5, seed=3)
    assert len(loader) == 5                                   # 5 + 5 + 5 + 5 + 3
    for epoch in (0, 1, 4):
        loader.set_epoch(epoch)
        batches = read(loader)
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        np.testing.assert_array_equal(np.concatenate(batches), epoch_permutation(23, 3, epoch))
    loader.set_epoch(1)
    again = read(loader)
    loader.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate(read(loader)), np.concatenate(again))
    loader.set_epoch(2)
    assert not np.array_equal(np.concatenate(read(loader)), np.concatenate(again))
    # rows stay aligned across keys, and batches are host NumPy arrays
    for batch in Loader(rows(23), 4, seed=1):
        np.testing.assert_array_equal(batch["x"][:, 0], 2 * batch["y"])
        assert isinstance(batch["x"], np.ndarray) and batch["x"].dtype == np.float32


def test_in_order_and_drop_last(device):
    ordered = Loader(rows(10), batch_size=4, shuffle=False)
    assert [b.tolist() for b in read(ordered)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = Loader(rows(10), batch_size=4, shuffle=False, drop_last=True)
    assert len(dropped) == 2 and [len(b) for b in read(dropped)] == [4, 4]
    assert len(Loader(rows(3), batch_size=4, drop_last=True)) == 0
    # device arrays and Tensors are brought to the host
    data = {"x": mm.tensor(np.ones((3, 2), np.float32), device=device).data, "y": [0, 1, 2]}
    batch = next(iter(Loader(data, 2, shuffle=False)))
    assert isinstance(batch["x"], np.ndarray) and batch["y"].tolist() == [0, 1]


@pytest.mark.parametrize("n,world,batch_size", [(24, 2, 4), (23, 3, 4), (10, 4, 3), (7, 3, 1),
                                                (5, 8, 2)])
def test_shards_are_disjoint_and_make_up_the_epoch(device, n, world, batch_size):
    for epoch in (0, 3):
        shards = []
        for rank in range(world):
            loader = Loader(rows(n), batch_size, seed=11, shard=(rank, world))
            loader.set_epoch(epoch)
            batches = read(loader)
            assert len(batches) == len(loader)
            shards.append(np.concatenate(batches) if batches else np.array([], int))
        everything = np.concatenate(shards)
        assert len(set(everything.tolist())) == len(everything)          # disjoint
        np.testing.assert_array_equal(np.sort(everything), np.arange(n))  # together: all
        # each shard is this epoch's permutation read with a stride, in order
        order = epoch_permutation(n, 11, epoch)
        for rank, shard in enumerate(shards):
            np.testing.assert_array_equal(shard, order[rank::world])
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("n,world,batch_size", [(23, 3, 4), (24, 2, 4), (10, 4, 3), (7, 3, 1)])
def test_sharding_with_drop_last_gives_every_rank_the_same_full_batches(device, n, world,
                                                                        batch_size):
    loaders = [Loader(rows(n), batch_size, seed=2, shard=(r, world), drop_last=True)
               for r in range(world)]
    counts = {len(loader) for loader in loaders}
    assert counts == {n // (world * batch_size)}
    seen = np.concatenate([np.concatenate(read(lo)) for lo in loaders if len(lo)] or [[]])
    kept = n - n % (world * batch_size)
    assert len(seen) == len(set(seen.tolist())) == kept
    np.testing.assert_array_equal(np.sort(seen), np.sort(epoch_permutation(n, 2, 0)[:kept]))
    for loader in loaders:
        assert all(len(b) == batch_size for b in read(loader))


def test_transform_random_numbers_depend_on_seed_epoch_batch_and_rank(device):
    def noisy(batch, rng):
        return {**batch, "x": batch["x"] + rng.standard_normal(batch["x"].shape)}

    def noise(seed=0, epoch=0, shard=None):
        loader = Loader(rows(12), 4, seed=seed, transform=noisy, shard=shard)
        loader.set_epoch(epoch)
        out = {}
        for batch in loader:                       # the noise, keyed by the sample it hit
            for y, x, x0 in zip(batch["y"], batch["x"], rows(12)["x"][batch["y"]]):
                out[int(y)] = x - x0
        return out

    a, b = noise(), noise()
    assert all(np.array_equal(a[k], b[k]) for k in a)               # read again: the same
    c = noise(epoch=1)
    assert not any(np.allclose(a[k], c[k]) for k in a)              # another epoch: new noise
    d = noise(seed=1)
    assert not any(np.allclose(a[k], d[k]) for k in a)
    r0, r1 = noise(shard=(0, 2)), noise(shard=(1, 2))
    assert set(r0).isdisjoint(r1)
    # batch i of rank 0 and batch i of rank 1 draw different numbers
    first = [next(iter(Loader(rows(12), 2, transform=lambda b, rng: {"r": rng.random(1)},
                              shard=(r, 2))))["r"][0] for r in (0, 1)]
    assert first[0] != first[1]
    # the generator handed over is exactly default_rng((seed, epoch, index, rank))
    got = []
    loader = Loader(rows(6), 2, seed=5, transform=lambda b, rng: got.append(rng.random()) or b)
    loader.set_epoch(2)
    list(loader)
    assert got == [np.random.default_rng((5, 2, i, 0)).random() for i in range(3)]


def test_loader_errors(device):
    with pytest.raises(ValueError, match=r"Loader: data arrays must share their first "
                                         r"dimension, got x \(4, 2\), y \(3,\)"):
        Loader({"x": np.zeros((4, 2)), "y": np.zeros(3)})
    with pytest.raises(ValueError, match="share their first dimension, got x \\(\\)"):
        Loader({"x": np.float32(1.0)})
    with pytest.raises(TypeError, match="Loader: data must be a non-empty dict of arrays"):
        Loader((np.zeros(3), np.zeros(3)))
    with pytest.raises(TypeError, match=r"non-empty dict of arrays.*\(empty\)"):
        Loader({})
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="Loader: batch_size must be an integer >= 1"):
            Loader(rows(4), batch_size=bad)
    with pytest.raises(ValueError, match="Loader: seed must be an integer >= 0"):
        Loader(rows(4), seed=-1)
    for shard in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="Loader: (shard|world_size)"):
            Loader(rows(4), shard=shard)
    with pytest.raises(TypeError, match="Loader: transform must be callable"):
        Loader(rows(4), transform="flip")
