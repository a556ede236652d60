"""MultiModalModel(text_dropout=p): modality dropout zeroes the text features of a random share
p of the samples in training mode, and changes nothing in evaluation mode."""
import numpy as np
import pytest

import minimm as mm
from minimm.models import MultiModalModel


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    images = mm.tensor(rng.standard_normal((n, 3, 32, 32)), dtype=np.float32)
    ids = rng.integers(2, 30, (n, 6))
    return images, ids, np.full(n, 6)


def pair(p):
    plain = MultiModalModel(30, rng=np.random.default_rng(1))
    dropped = MultiModalModel(30, text_dropout=p, rng=np.random.default_rng(1))
    dropped.load_state_dict(plain.state_dict())
    return plain, dropped


def test_eval_mode_is_the_plain_model():
    plain, dropped = pair(0.5)
    x, ids, lengths = batch(8)
    plain.eval(), dropped.eval()
    with mm.no_grad():
        np.testing.assert_array_equal(dropped(x, ids, lengths).numpy(),
                                      plain(x, ids, lengths).numpy())


def test_training_mode_drops_whole_captions_at_rate_p():
    plain, dropped = pair(0.3)
    dropped.rng = np.random.default_rng(7)
    x, ids, lengths = batch(200)
    with mm.no_grad():
        full = plain(x, ids, lengths).numpy()
        out = dropped(x, ids, lengths).numpy()
        image_only = (plain.image(x) @ plain.head.W[:512] + plain.head.b).numpy()
    same_full = np.isclose(out, full, atol=1e-5).all(axis=1)
    same_image = np.isclose(out, image_only, atol=1e-5).all(axis=1)
    assert (same_full ^ same_image).all()            # each sample: all its text, or none
    # 200 draws at p = 0.3: 60 expected, the binomial spread is about 6.5
    assert 40 <= same_image.sum() <= 80
    # the draw is the rng's: the same seed drops the same samples
    dropped.rng = np.random.default_rng(7)
    with mm.no_grad():
        np.testing.assert_array_equal(dropped(x, ids, lengths).numpy(), out)


def test_a_dropped_caption_sends_no_gradient_to_the_text_branch():
    _, dropped = pair(0.5)
    x, ids, lengths = batch(1)
    for seed in range(50):                           # find a seed whose one draw drops it
        if np.random.default_rng(seed).random((1, 1))[0, 0] < 0.5:
            break
    dropped.rng = np.random.default_rng(seed)
    dropped(x, ids, lengths).sum().backward()
    assert all(not p.grad.numpy().any() for p in dropped.text.parameters())
    assert dropped.image[0].W.grad.numpy().any()
    assert not dropped.head.W.grad.numpy()[512:].any()


def test_config_round_trip_and_checks():
    model = MultiModalModel(30, text_dropout=0.25)
    assert model.config()["text_dropout"] == 0.25
    assert MultiModalModel.from_config(model.config()).text_dropout == 0.25
    assert MultiModalModel.from_config({k: v for k, v in model.config().items()
                                        if k != "text_dropout"}).text_dropout == 0.0
    assert "text_dropout=0.25" in repr(model)
    with pytest.raises(ValueError, match="text_dropout must be in \\[0, 1\\)"):
        MultiModalModel(30, text_dropout=1.0)
    with pytest.raises(ValueError, match="mode 'image' has no second modality"):
        MultiModalModel(30, mode="image", text_dropout=0.1)
