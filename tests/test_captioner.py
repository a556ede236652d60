"""The captioning decoder: teacher forcing, the masked loss, generation, sampling, the cache."""
import numpy as np
import pytest

import minimm as mm
from minimm import optim
from minimm.data import captions as C
from minimm.data.loader import normalize_images
from minimm.models import Captioner, caption_loss, teacher_forcing
from minimm.models.captioner import IGNORE_INDEX, _choose, _token_cross_entropy

V = len(C.caption_vocabulary(attributes=True))


def tiny(device="cpu", seed=0, **kw):
    kw = {"d_model": 16, "num_heads": 2, "num_layers": 2, "max_len": 20, **kw}
    return Captioner(V, rng=np.random.default_rng(seed), **kw).to(device)


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32)).astype(np.uint8)


def batch_of(x, seed=0, max_len=12, device="cpu"):
    caps = C.make_captions(np.arange(len(x)) % 10, seed=seed, p_true=1, p_wrong=0, images=x,
                           attributes=C.ATTRIBUTES)
    ids, lengths = C.encode(caps, C.caption_vocabulary(attributes=True), max_len=max_len)
    x = mm.to_numpy(x)
    return {"images": mm.tensor(normalize_images(x), device=device),
            "ids": mm.tensor(ids, device=device).data, "lengths": lengths}


def test_teacher_forcing_shifts_by_one(xp):
    ids = xp.asarray(np.array([[7, 8, 9], [5, 0, 0], [0, 0, 0]]))
    inputs, targets = teacher_forcing(ids, np.array([3, 1, 0]), bos_id=2, eos_id=3)
    np.testing.assert_array_equal(mm.to_numpy(inputs), [[2, 7, 8, 9], [2, 5, 0, 0],
                                                        [2, 0, 0, 0]])
    np.testing.assert_array_equal(mm.to_numpy(targets), [[7, 8, 9, 3], [5, 3, -100, -100],
                                                         [3, -100, -100, -100]])
    with pytest.raises(ValueError, match=r"teacher_forcing: lengths must be \(B,\) = \(3,\) "
                                         r"in 0..3"):
        teacher_forcing(ids, np.array([4, 1, 0]))


def test_masked_loss_and_its_gradient(device, rng):
    """L = −(1/n) Σ_{kept t} log softmax(z_t)[y_t]: only caption tokens count, and
    ∂L/∂z_t = (softmax(z_t) − onehot(y_t)) / n there, 0 at padding."""
    model = tiny(device)
    batch = batch_of(images(4), device=device)
    loss, logs, out = caption_loss(model, batch)
    inputs, targets = (mm.to_numpy(a) for a in teacher_forcing(batch["ids"], batch["lengths"]))
    logits = mm.to_numpy(model(batch["images"], inputs)).astype(np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    kept = targets != IGNORE_INDEX
    n = kept.sum()
    assert n == (batch["lengths"] + 1).sum()                  # words and <eos>, per caption
    picked = np.take_along_axis(logp, np.where(kept, targets, 0)[..., None], -1)[..., 0]
    assert loss.item() == pytest.approx(-(picked * kept).sum() / n, rel=1e-5)
    np.testing.assert_allclose(mm.to_numpy(out["nll"]), -(picked * kept).sum(1), rtol=1e-4)
    np.testing.assert_array_equal(mm.to_numpy(out["tokens"]), kept.sum(1))
    hits = ((logits.argmax(-1) == targets) & kept).sum() / n
    assert logs["token_accuracy"] == pytest.approx(hits)
    # the gradient of the loss with respect to the logits, from the loss itself
    z = mm.tensor(logits.reshape(-1, V), requires_grad=True, device=device)
    ce = _token_cross_entropy(z, mm.tensor(targets.reshape(-1), device=device).data)
    ce.backward()
    p = np.exp(logp.reshape(-1, V))
    onehot = np.eye(V)[np.where(kept, targets, 0).reshape(-1)]
    expected = (p - onehot) * kept.reshape(-1, 1) / n
    np.testing.assert_allclose(mm.to_numpy(z.grad), expected, atol=1e-12)
    t = mm.tensor(targets.reshape(-1), device=device).data
    assert mm.gradcheck(lambda z: _token_cross_entropy(z, t), [z.data.copy()], mode="random")


def test_padding_and_the_future_never_change_the_logits(device, rng):
    model = tiny(device)
    batch = batch_of(images(3), device=device)
    inputs, _ = teacher_forcing(batch["ids"], batch["lengths"])
    inputs = mm.to_numpy(inputs)
    base = mm.to_numpy(model(batch["images"], inputs))
    L = inputs.shape[1]
    noisy = inputs.copy()
    pad = np.arange(L)[None, :] > batch["lengths"][:, None]           # the padded inputs
    noisy[pad] = rng.integers(4, V, size=pad.sum())
    got = mm.to_numpy(model(batch["images"], noisy))
    real = ~pad
    np.testing.assert_array_equal(got[real], base[real])
    changed = inputs.copy()
    changed[:, 3] = (changed[:, 3] + 1) % V                            # a word in the middle
    got = mm.to_numpy(model(batch["images"], changed))
    np.testing.assert_array_equal(got[:, :3], base[:, :3])
    assert np.abs(got[:, 3:] - base[:, 3:]).max() > 1e-4
    other = mm.to_numpy(model(batch_of(images(3, seed=1), device=device)["images"], inputs))
    assert (np.abs(other - base).max(axis=(0, 2)) > 1e-5).all()         # the image: everywhere


@pytest.mark.parametrize("N, prefix, image_tokens, temperature, top_k, seed", [
    (1, "global", 4, 0.0, None, None), (5, "cells", 16, 0.0, None, None),
    (3, "global", 1, 0.0, None, None), (4, "cells", 4, 1.0, None, 7),
    (2, "global", 9, 1.0, None, 7), (6, "global", 4, 0.8, 5, 11), (1, "cells", 16, 0.8, 5, 11)])
def test_cache_gives_the_same_logits_at_every_step(N, prefix, image_tokens, temperature, top_k,
                                                   seed, device):
    """Batch sizes 1–6, image prefixes of 1 to 16 tokens, greedy and seeded sampling with
    and without top-k: every step's logits agree to 1e-5 (float32) and the tokens exactly."""
    model = tiny(device, seed=N, image_tokens=image_tokens, image_prefix=prefix)
    x = images(N, seed=N)
    kw = dict(max_len=12, temperature=temperature, top_k=top_k, seed=seed)
    ids_c, logits_c = model.generate_with_logits(x, use_cache=True, **kw)
    ids_f, logits_f = model.generate_with_logits(x, use_cache=False, **kw)
    assert logits_c.dtype == np.float32 and logits_c.shape == logits_f.shape
    assert logits_c.shape[:2] == ids_c.shape and ids_c.shape[0] == N
    np.testing.assert_array_equal(mm.to_numpy(ids_c), mm.to_numpy(ids_f))
    np.testing.assert_allclose(mm.to_numpy(logits_c), mm.to_numpy(logits_f), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(mm.to_numpy(model.generate(x, use_cache=True, **kw)),
                                  mm.to_numpy(ids_c))


def test_generation_equals_teacher_forcing_on_its_own_tokens(device):
    model = tiny(device, seed=3)
    x = images(4, seed=3)
    ids, logits = model.generate_with_logits(x, max_len=10)
    ids, logits = mm.to_numpy(ids), mm.to_numpy(logits)
    inputs = np.concatenate([np.full((4, 1), model.bos_id), ids[:, :-1]], axis=1)
    forced = mm.to_numpy(model(mm.tensor(normalize_images(x), device=device), inputs))
    np.testing.assert_allclose(logits, forced, atol=1e-5)
    logits[..., [model.pad_id, model.bos_id]] = -np.inf                # never written
    np.testing.assert_array_equal(ids, logits.argmax(-1))             # greedy: the argmax


def test_generation_stops_at_eos_and_pads_after(device):
    model = tiny(device, seed=4)
    model.head.b.data[model.eos_id] += 3.0                          # make <eos> likely
    x = images(16, seed=4)
    ids = mm.to_numpy(model.generate(x, max_len=12, temperature=1.0, seed=0))
    eos = ids == model.eos_id
    assert eos.any(axis=1).all() and ids.shape[1] < 12               # all stopped, early
    first = eos.argmax(axis=1)
    assert len(set(first.tolist())) > 1                               # at different steps
    after = np.arange(ids.shape[1])[None, :] > first[:, None]
    assert (ids[after] == model.pad_id).all()
    assert (eos.sum(axis=1) == 1).all()
    assert ids.shape[1] == first.max() + 1                            # no all-padding column
    words = model.decode(ids, C.caption_vocabulary(attributes=True))
    assert [len(w.split()) if w else 0 for w in words] == first.tolist()
    model.head.b.data[model.eos_id] += 100.0
    assert mm.to_numpy(model.generate(x[:2])).tolist() == [[model.eos_id]] * 2


def test_sampling_is_seeded_and_top_k_restricts(device):
    model = tiny(device, seed=5)
    x = images(6, seed=5)
    a = mm.to_numpy(model.generate(x, temperature=1.0, seed=1))
    assert np.array_equal(a, mm.to_numpy(model.generate(x, temperature=1.0, seed=1)))
    assert not np.array_equal(a, mm.to_numpy(model.generate(x, temperature=1.0, seed=2)))
    greedy = mm.to_numpy(model.generate(x))
    np.testing.assert_array_equal(mm.to_numpy(model.generate(x, temperature=1.5, top_k=1,
                                                             seed=3)), greedy)
    ids, logits = model.generate_with_logits(x, temperature=2.0, top_k=3, seed=4)
    ids, logits = mm.to_numpy(ids), mm.to_numpy(logits)
    logits[..., [model.pad_id, model.bos_id]] = -np.inf
    rank = (logits > np.take_along_axis(logits, ids[..., None], -1)).sum(-1)
    live = np.concatenate([np.ones((6, 1), bool), (ids != model.eos_id).cumprod(1)[:, :-1]
                           .astype(bool)], axis=1)                    # steps before the end
    assert (rank[live] < 3).all()                                     # always one of the top 3


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.5, None), (2.0, 3)])
def test_choose_draws_from_the_tempered_distribution(temperature, top_k):
    z = np.array([2.0, 1.0, 0.5, 0.0, -1.0], dtype=np.float32)
    n = 40000
    draws = mm.to_numpy(_choose(np.tile(z, (n, 1)), temperature, top_k,
                                np.random.default_rng(0)))
    p = np.exp(z / temperature)
    if top_k:
        p[np.argsort(-z)[top_k:]] = 0
    p /= p.sum()
    freq = np.bincount(draws, minlength=5) / n
    assert np.abs(freq - p).max() < 4 * np.sqrt(0.25 / n)            # 4 binomial std at most
    assert (freq[p == 0] == 0).all()
    assert (mm.to_numpy(_choose(np.tile(z, (3, 1)), 0.0, None, None)) == 0).all()
    banned = mm.to_numpy(_choose(np.tile(z, (n, 1)), temperature, top_k,
                                 np.random.default_rng(1), banned=(0, 2)))
    assert not np.isin(banned, [0, 2]).any() and (np.bincount(banned) > 0).sum() >= 2


def test_a_tiny_captioner_learns_to_describe(device):
    """Two kinds of image, two captions: teacher forcing teaches greedy decoding to write
    each one, word for word."""
    red = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    red[:, 0] = 220
    blue = np.zeros((4, 3, 32, 32), dtype=np.uint8)
    blue[:, 2] = 220
    x = np.concatenate([red, blue])
    vocab = C.caption_vocabulary(attributes=True)
    caps = ["a red car"] * 4 + ["a photo of a blue jet"] * 4
    ids, lengths = C.encode(caps, vocab, max_len=8)
    model = tiny(device, seed=6, num_layers=1)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    batch = {"images": mm.tensor(normalize_images(x), device=device),
             "ids": mm.tensor(ids, device=device).data, "lengths": lengths}
    first = None
    for _ in range(40):
        loss, _, _ = caption_loss(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in model.parameters())
    written = model.decode(model.generate(x[[0, 4]], max_len=8), vocab)
    assert written == ["a red car", "a photo of a blue jet"]


def test_image_tokens_cells_and_global(device, rng):
    x = mm.tensor(normalize_images(images(2)), device=device)
    for prefix, P in (("cells", 4), ("cells", 16), ("global", 1), ("global", 6)):
        model = tiny(device, image_prefix=prefix, image_tokens=P)
        assert model.encode_images(x).shape == (2, P, 16) and model.num_prefix == P
    cells = tiny(device, image_prefix="cells")
    with mm.no_grad():
        fmap = cells.image.cnn(x).data                                     # (2, 128, 2, 2)
        tokens = cells.image(x).data
    one = mm.tensor(np.ascontiguousarray(fmap[:, :, 0, 1])[:, None], device=device)
    with mm.no_grad():                                # cell (row 0, column 1) is token 1
        alone = cells.image.proj2(cells.image.act(cells.image.proj1(one))).data
    np.testing.assert_allclose(mm.to_numpy(tokens[:, 1:2]), mm.to_numpy(alone), atol=1e-6)


def test_config_round_trip_and_checkpoint(tmp_path, device):
    model = tiny(device, seed=7, image_tokens=16, image_prefix="cells", dropout=0.1)
    again = Captioner.from_config(model.config())
    assert again.config() == model.config() and again.num_prefix == 16
    assert again.image.prefix == "cells"
    mm.save({"model": model, "config": model.config()}, str(tmp_path / "c.npz"))
    ckpt = mm.load(str(tmp_path / "c.npz"))
    loaded = Captioner.from_config(ckpt["config"]).to(device)
    loaded.load_state_dict(ckpt["model"])
    x = images(3, seed=7)
    np.testing.assert_array_equal(mm.to_numpy(loaded.generate(x)), mm.to_numpy(model.generate(x)))


def test_captioner_errors():
    model = tiny()
    x = images(1)
    with pytest.raises(ValueError, match=r"Captioner.generate: max_len must be in 1..20"):
        model.generate(x, max_len=21)
    with pytest.raises(ValueError, match="Captioner.generate: temperature must be >= 0"):
        model.generate(x, temperature=-1.0)
    with pytest.raises(ValueError, match=r"Captioner.generate: top_k must be None or in "
                                         r"1..vocab_size"):
        model.generate(x, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match=r"Captioner: images must be \(N, 3, H, W\)"):
        model.generate(np.zeros((2, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="Captioner: vocab_size=3 must exceed the special ids"):
        Captioner(3)
    with pytest.raises(ValueError, match="ImageTokens: num_tokens must be 4"):
        Captioner(V, image_tokens=9, image_prefix="cells")
    with pytest.raises(ValueError, match="ImageTokens: prefix must be 'cells' or 'global'"):
        Captioner(V, image_prefix="patches")
    with pytest.raises(ValueError, match=r"Captioner: position 25 exceeds the 24 positions"):
        model(mm.tensor(normalize_images(x)), np.zeros((1, 21), dtype=np.int64))
