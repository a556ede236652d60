"""minimm.models.MultiModalTransformer: the token sequence against a NumPy transcription,
padding that never changes logits or gradients, every mode training one float32 step, a
float64 gradient check of a tiny model, checkpoints and errors."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn, optim
from minimm.models import MultiModalTransformer

VOCAB = 20
TINY = dict(d_model=8, depth=2, num_heads=2, patch_size=4, max_len=8, image_size=8)


def batch(device, B=3, T=6, image_size=8, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    images = mm.tensor(rng.standard_normal((B, 3, image_size, image_size)).astype(dtype),
                       device=device)
    lengths = np.array([T, 2, 0, 4][:B])
    ids = rng.integers(2, VOCAB, (B, T))
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return images, ids, lengths


def model_of(mode, device, seed=0, **kw):
    return MultiModalTransformer(VOCAB, 10, mode, rng=np.random.default_rng(seed),
                                 **{**TINY, **kw}).to(device)


def grads_of(model, images, ids, lengths, device):
    model.zero_grad()
    logits = model(images, mm.tensor(ids, device=device).data, lengths)
    (logits * mm.tensor(np.linspace(-1, 1, logits.size).reshape(logits.shape)
                        .astype(np.float32), device=device)).sum().backward()
    return mm.to_numpy(logits), {n: mm.to_numpy(p.grad) for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["multimodal", "text"])
def test_garbage_past_lengths_changes_neither_logits_nor_gradients(device, mode):
    model = model_of(mode, device)
    images, ids, lengths = batch(device)
    garbage = ids.copy()
    pad = np.arange(ids.shape[1])[None, :] >= lengths[:, None]
    garbage[pad] = np.random.default_rng(1).integers(0, VOCAB, pad.sum())
    assert (garbage != ids).any()
    logits, grads = grads_of(model, images, ids, lengths, device)
    logits2, grads2 = grads_of(model, images, garbage, lengths, device)
    np.testing.assert_array_equal(logits2, logits)
    for name in grads:
        np.testing.assert_array_equal(grads2[name], grads[name], err_msg=name)
    # without lengths the same garbage is read as words: the test above can fail
    assert not np.allclose(mm.to_numpy(model(images, garbage, None)),
                           mm.to_numpy(model(images, ids, None)))


def test_more_padding_gives_the_same_logits(device):
    model = model_of("multimodal", device)
    images, ids, lengths = batch(device, T=4)
    longer = np.concatenate([ids, np.full((3, 4), 7)], axis=1)        # T = 8, garbage pad
    np.testing.assert_allclose(mm.to_numpy(model(images, longer, lengths)),
                               mm.to_numpy(model(images, ids, lengths)), rtol=1e-5, atol=1e-6)


def test_sequence_is_cls_patches_words_with_modality_and_positions(device):
    model = model_of("multimodal", device, seed=3)
    images, ids, lengths = batch(device, T=5)
    seen = {}

    class Spy(nn.Module):
        def forward(self, x, key_padding_mask=None):
            seen["x"], seen["kpm"] = mm.to_numpy(x), mm.to_numpy(key_padding_mask)
            return x
    model.encoder = Spy()
    model(images, mm.tensor(ids, device=device).data, lengths)
    P = lambda name: mm.to_numpy(getattr(model, name))              # noqa: E731
    img = mm.to_numpy(images)                                          # (3, 3, 8, 8), p = 4
    patches = img.reshape(3, 3, 2, 4, 2, 4).transpose(0, 2, 4, 1, 3, 5).reshape(3, 4, 48)
    image_tokens = patches @ mm.to_numpy(model.patch.W) + mm.to_numpy(model.patch.b) \
        + P("pos_image") + P("modality")[0]
    word_tokens = mm.to_numpy(model.embed.W)[ids] + P("pos_text")[:5] + P("modality")[1]
    want = np.concatenate([np.broadcast_to(P("cls"), (3, 1, 8)), image_tokens, word_tokens], 1)
    np.testing.assert_allclose(seen["x"], want, rtol=1e-5, atol=1e-6)
    assert seen["x"].shape == (3, 1 + 4 + 5, 8)
    want_kpm = np.zeros((3, 10), bool)
    want_kpm[:, 5:] = np.arange(5)[None, :] >= lengths[:, None]
    np.testing.assert_array_equal(seen["kpm"], want_kpm)


def test_attention_maps_ignore_padded_words(device):
    model = model_of("multimodal", device)
    images, ids, lengths = batch(device, T=6)
    model(images, ids, lengths)
    maps = model.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (3, 2, 11, 11)
    for A in maps:
        np.testing.assert_allclose(A.sum(-1), 1.0, rtol=1e-5)
        for b, n in enumerate(lengths):
            assert (A[b, :, :, 5 + n:] == 0).all()                       # padded keys: weight 0


@pytest.mark.parametrize("mode,tokens", [("multimodal", 1 + 4 + 6), ("image", 1 + 4),
                                         ("text", 1 + 6)])
def test_every_mode_trains_one_step_in_float32(device, mode, tokens):
    model = model_of(mode, device)
    assert (model.patch is None) == (mode == "text") and (model.embed is None) == (mode == "image")
    images, ids, lengths = batch(device)
    logits = model(images, ids, lengths)
    assert logits.shape == (3, 10) and logits.dtype == np.float32 and logits.device == device
    assert model.attention_maps()[0].shape[-1] == tokens
    loss = F.cross_entropy(logits, mm.tensor(np.array([1, 5, 9]), device=device).data)
    before = {n: mm.to_numpy(p).copy() for n, p in model.named_parameters()}
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == np.float32, name
    optim.Adam(model.parameters(), lr=1e-2).step()
    assert all(p.dtype == np.float32 for p in model.parameters())
    moved = {n for n, p in model.named_parameters() if not np.array_equal(mm.to_numpy(p),
                                                                          before[n])}
    assert set(before) - moved <= {"modality"}     # unused modality row: zero gradient


def test_tiny_model_gradcheck_float64(device, xp):
    model = model_of("multimodal", device, depth=1)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    _, ids, lengths = batch(device, B=2, T=3)
    images = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    assert mm.gradcheck(lambda x: model(x, ids, lengths), [xp.asarray(images)], mode="random")
    cls0 = model.cls

    def of_cls(c):
        object.__setattr__(model, "cls", c)
        try:
            return model(mm.tensor(images, device=device), ids, lengths)
        finally:
            object.__setattr__(model, "cls", cls0)
    assert mm.gradcheck(of_cls, [xp.asarray(mm.to_numpy(cls0))])


def test_config_round_trip_and_checkpoint(device, tmp_path):
    model = model_of("multimodal", device, seed=5)
    config = model.config()
    assert config["architecture"] == "transformer" and config["dim_ff"] == 32
    rebuilt = MultiModalTransformer.from_config(config, rng=np.random.default_rng(5)).to(device)
    assert rebuilt.config() == config
    images, ids, lengths = batch(device)
    np.testing.assert_array_equal(mm.to_numpy(rebuilt(images, ids, lengths)),
                                  mm.to_numpy(model(images, ids, lengths)))   # same seed
    mm.save({"model": model, "config": config}, tmp_path / "m.npz")
    ckpt = mm.load(tmp_path / "m.npz")
    other = MultiModalTransformer.from_config(ckpt["config"]).to(device)
    other.load_state_dict(ckpt["model"])
    np.testing.assert_array_equal(mm.to_numpy(other(images, ids, lengths)),
                                  mm.to_numpy(model(images, ids, lengths)))


def test_default_model_has_64_patches(device):
    model = MultiModalTransformer(VOCAB, rng=np.random.default_rng(0))
    assert model.pos_image.shape == (64, 128) and model.patch.W.shape == (48, 128)
    assert len(model.encoder.layers) == 4 and model.encoder.layers[0].attn.num_heads == 4


def test_errors(device):
    with pytest.raises(ValueError, match=r"MultiModalTransformer: mode must be one of"):
        MultiModalTransformer(VOCAB, mode="audio")
    with pytest.raises(ValueError, match=r"mode 'text' needs vocab_size >= 2"):
        MultiModalTransformer(None, mode="text")
    with pytest.raises(ValueError, match=r"image_size=30 is not a multiple of patch_size=4"):
        MultiModalTransformer(VOCAB, image_size=30)
    model = model_of("multimodal", device)
    images, ids, lengths = batch(device)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 8, 8\), got \(3, 3, 16, 16\)"):
        model(mm.tensor(np.zeros((3, 3, 16, 16), np.float32), device=device), ids, lengths)
    with pytest.raises(ValueError, match=r"lengths must be \(B,\) = \(3,\) with values in "
                                         r"0..6, got shape \(3,\), values 0..7"):
        model(images, ids, np.array([7, 1, 1]))
    with pytest.raises(ValueError, match=r"T <= max_len=8, got shape \(3, 9\)"):
        model(images, np.zeros((3, 9), np.int64), None)
    with pytest.raises(ValueError, match=r"caption ids are required"):
        model(images, None, None)
    with pytest.raises(ValueError, match=r"images are required"):
        model(None, ids, lengths)
