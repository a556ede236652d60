"""The article's model (minimm.models): every constructor built once, shapes through the
§4.3 architecture, a forward/backward/Adam step in float32, lengths-aware text features,
and the concatenation + Dense head against a plain-NumPy transcription."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, optim
from minimm.models import ImageBranch, MultiModalModel, TextBranch

VOCAB = 30


def batch(device, B=2, T=6, seed=0):
    rng = np.random.default_rng(seed)
    images = mm.tensor(rng.standard_normal((B, 3, 32, 32)).astype(np.float32), device=device)
    ids_np = rng.integers(2, VOCAB, (B, T))
    lengths = np.array([T, 2] + [T // 2] * (B - 2))[:B]
    ids_np[np.arange(T)[None, :] >= lengths[:, None]] = 0          # padding after the words
    ids = mm.tensor(ids_np, device=device).data
    return images, ids, lengths


@pytest.mark.parametrize("mode,features", [("multimodal", 640), ("image", 512), ("text", 128)])
@pytest.mark.parametrize("multitask", [False, True], ids=["one_head", "two_heads"])
def test_every_model_trains_one_step_in_float32(device, mode, features, multitask):
    model = MultiModalModel(VOCAB, 10, mode, 2 if multitask else None,
                            rng=np.random.default_rng(0)).to(device)
    assert model.head.W.shape == (features, 10)
    assert (model.image is None) == (mode == "text") and (model.text is None) == (mode == "image")
    images, ids, lengths = batch(device)
    out = model(images, ids, lengths)
    logits, super_logits = out if multitask else (out, None)
    assert logits.shape == (2, 10) and logits.dtype == np.float32 and logits.device == device
    labels = mm.tensor(np.array([3, 7]), device=device).data
    loss = F.cross_entropy(logits, labels)
    if multitask:
        assert isinstance(out, tuple) and super_logits.shape == (2, 2)
        assert super_logits.dtype == np.float32
        loss = F.multitask_loss([loss, F.cross_entropy(super_logits, labels % 2)], model, 1e-3)
    else:
        assert model.super_head is None
    before = {n: mm.to_numpy(p.data).copy() for n, p in model.named_parameters()}
    opt = optim.Adam(model.parameters(), lr=1e-2)
    opt.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.shape == p.shape and p.grad.dtype == np.float32, name
    opt.step()
    for name, p in model.named_parameters():
        assert p.dtype == np.float32 and p.device == device, name
    moved = [n for n, p in model.named_parameters()
             if not np.array_equal(mm.to_numpy(p.data), before[n])]
    assert set(moved) == set(before), set(before) - set(moved)   # Adam moved every tensor


def test_image_branch_shapes(device):
    branch = ImageBranch(rng=np.random.default_rng(0)).to(device)
    x = mm.tensor(np.zeros((3, 3, 32, 32), np.float32), device=device)
    sizes = []
    for layer in branch:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    # Conv32 30×30, Pool 15, Conv64 13, Pool 6, Conv128 4, Pool 2, Flatten 512
    assert sizes == [(32, 30, 30), (32, 30, 30), (32, 15, 15), (64, 13, 13), (64, 13, 13),
                     (64, 6, 6), (128, 4, 4), (128, 4, 4), (128, 2, 2), (512,)]
    assert branch.out_features == 512


def test_text_branch_reads_each_caption_at_its_own_length(device):
    branch = TextBranch(VOCAB, 8, 5, rng=np.random.default_rng(1)).to(device)
    _, ids, lengths = batch(device, B=3, T=7)
    h = mm.to_numpy(branch(ids, lengths).data)
    assert h.shape == (3, 5) and h.dtype == np.float32
    for n in range(3):   # the same caption, unpadded, run alone: the same final state
        alone = branch(ids[n:n + 1, :lengths[n]])
        np.testing.assert_allclose(h[n], mm.to_numpy(alone.data)[0], rtol=1e-5, atol=1e-6)
    # without lengths the padded steps would change the state of the short captions
    h_padded_end = mm.to_numpy(branch(ids).data)
    assert not np.allclose(h_padded_end[1], h[1], atol=1e-4)


def test_fusion_is_concatenation_then_dense(device):
    model = MultiModalModel(VOCAB, 10, "multimodal", 2, rng=np.random.default_rng(2)).to(device)
    images, ids, lengths = batch(device, B=3)
    z_img = mm.to_numpy(model.image(images).data)
    z_txt = mm.to_numpy(model.text(ids, lengths).data)
    logits, super_logits = model(images, ids, lengths)
    # plain NumPy: [z_img, z_txt] W + b for each head
    z = np.concatenate([z_img, z_txt], axis=1)
    W, b = mm.to_numpy(model.head.W.data), mm.to_numpy(model.head.b.data)
    Ws, bs = mm.to_numpy(model.super_head.W.data), mm.to_numpy(model.super_head.b.data)
    np.testing.assert_allclose(mm.to_numpy(logits.data), z @ W + b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mm.to_numpy(super_logits.data), z @ Ws + bs, rtol=1e-4, atol=1e-5)


def test_config_round_trip_and_seeded_init(device):
    for mode, sup in (("multimodal", 2), ("image", None), ("text", 2)):
        model = MultiModalModel(VOCAB, 10, mode, sup, rng=np.random.default_rng(5))
        config = model.config()
        assert config["mode"] == mode and config["num_superclasses"] == (sup or 0)
        twin = MultiModalModel.from_config(config, rng=np.random.default_rng(5)).to(device)
        a, b = model.state_dict(), twin.state_dict()
        assert list(a) == list(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])     # same seed, same weights


def test_model_errors(device):
    with pytest.raises(ValueError, match="MultiModalModel: mode must be one of"):
        MultiModalModel(VOCAB, mode="audio")
    with pytest.raises(ValueError, match="mode 'text' needs vocab_size >= 2"):
        MultiModalModel(None, mode="text")
    with pytest.raises(ValueError, match="num_superclasses must be None or >= 2"):
        MultiModalModel(VOCAB, num_superclasses=1)
    model = MultiModalModel(VOCAB, mode="multimodal").to(device)
    images, ids, lengths = batch(device)
    with pytest.raises(ValueError, match=r"MultiModalModel\('multimodal'\): caption ids are "
                                         r"required"):
        model(images)
    with pytest.raises(ValueError, match=r"MultiModalModel\('multimodal'\): images are required"):
        model(None, ids, lengths)
    image_only = MultiModalModel(None, mode="image").to(device)
    assert image_only(images).shape == (2, 10)               # no captions needed
