"""minimm.data.augment: crops and flips, vectorised, reproducible from (seed, epoch, batch)."""
import numpy as np
import pytest

import minimm as mm
from minimm.data import augment


def _images(device, n=6):
    a = np.arange(n * 2 * 5 * 4, dtype=np.uint8).reshape(n, 2, 5, 4)
    return mm.tensor(a, device=device).data


def test_random_crop_is_each_image_shifted_by_its_own_offset(device):
    x = _images(device)
    out = mm.to_numpy(augment.random_crop(x, padding=2, rng=np.random.default_rng(0)))
    src = mm.to_numpy(x)
    rng = np.random.default_rng(0)
    oy, ox = rng.integers(0, 5, 6), rng.integers(0, 5, 6)
    assert out.shape == src.shape and out.dtype == np.uint8
    for n in range(6):                       # the oracle: one padded image at a time
        padded = np.zeros((2, 9, 8), np.uint8)
        padded[:, 2:7, 2:6] = src[n]
        np.testing.assert_array_equal(out[n], padded[:, oy[n]:oy[n] + 5, ox[n]:ox[n] + 4])
    assert len({(a, b) for a, b in zip(oy, ox)}) > 1      # not one shift for the batch


def test_random_flip_mirrors_the_chosen_images(device):
    x = _images(device)
    out = mm.to_numpy(augment.random_flip(x, rng=np.random.default_rng(1)))
    chosen = np.random.default_rng(1).random(6) < 0.5
    src = mm.to_numpy(x)
    assert 0 < chosen.sum() < 6
    np.testing.assert_array_equal(out[chosen], src[chosen][..., ::-1])
    np.testing.assert_array_equal(out[~chosen], src[~chosen])
    np.testing.assert_array_equal(mm.to_numpy(augment.flip(x)), src[..., ::-1])


def test_batch_rng_depends_on_seed_epoch_and_batch_only():
    draw = lambda *k: augment.batch_rng(*k).integers(0, 1 << 30, 4).tolist()  # noqa: E731
    assert draw(0, 3, 7) == draw(0, 3, 7)
    assert len({tuple(draw(*k)) for k in [(0, 3, 7), (1, 3, 7), (0, 4, 7), (0, 3, 8)]}) == 4


def test_augment_errors():
    x = np.zeros((2, 3, 4), np.uint8)
    with pytest.raises(ValueError, match=r"random_crop: expected images \(N, C, H, W\)"):
        augment.random_crop(x)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        augment.random_crop(np.zeros((1, 1, 2, 2)), padding=-1)
    with pytest.raises(ValueError, match=r"random_flip: p must be in \[0, 1\]"):
        augment.random_flip(np.zeros((1, 1, 2, 2)), p=2)
    same = np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(augment.random_crop(same, padding=0), same)


@pytest.mark.parametrize("dy, dx", [(1, 1), (-1, -1), (2, -1), (0, 3), (0, 0)])
def test_translate_shifts_every_image_and_mirrors_the_border(device, dy, dx):
    x = _images(device)
    out = mm.to_numpy(augment.translate(x, dy, dx))
    src = mm.to_numpy(x)
    H, W = src.shape[2:]

    def mirror(i, n):                        # reflection without repeating the edge pixel
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i
    want = np.empty_like(src)
    for i in range(H):                       # the oracle: one output pixel at a time
        for j in range(W):
            want[:, :, i, j] = src[:, :, mirror(i - dy, H), mirror(j - dx, W)]
    assert out.shape == src.shape and out.dtype == src.dtype
    np.testing.assert_array_equal(out, want)


def test_translate_errors():
    with pytest.raises(ValueError, match=r"translate: expected images \(N, C, H, W\)"):
        augment.translate(np.zeros((2, 3, 4)), 1, 1)
    with pytest.raises(ValueError, match=r"translate: a shift of \(4, 0\) pixels needs images "
                                         r"larger than it, got shape \(1, 1, 4, 4\)"):
        augment.translate(np.zeros((1, 1, 4, 4)), 4, 0)
