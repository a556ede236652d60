"""minimm.models.CLIP: the collapse guard (a small contrastive problem keeps its embedding
spread and retrieves far above chance, while a loss without negatives collapses under the
same measurements), every tower combination, the clipped temperature, zero-shot class
embeddings against NumPy, held-out prompt templates, parameter groups, the linear probe."""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, optim
from minimm.data import captions, prompts
from minimm.models import CLIP
from minimm.experiments.clip import linear_probe
from minimm.models.clip import FeatureBatchNorm, decay_groups

VOCAB = captions.caption_vocabulary()
TINY = dict(embed_dim=16, d_model=16, depth=1, num_heads=2, patch_size=4, image_size=8,
            max_len=8)


def synthetic_pairs(n, seed, size=8):
    """Images coded by a class colour under strong noise; captions that name the class
    (a random template and synonym each). Returns images (float32), ids, lengths, labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    palette = np.random.default_rng(42).uniform(-1.5, 1.5, (10, 3))
    x = palette[y][:, :, None, None] + 0.8 * rng.standard_normal((n, 3, size, size))
    text = captions.make_captions(y, seed=seed, p_true=1.0, p_wrong=0.0)
    ids, lengths = captions.encode(text, VOCAB, max_len=8)
    return x.astype(np.float32), ids, lengths, y


def spread_and_retrieval(I, T, y):
    """(1 − mean off-diagonal cosine of the images, mean per-dimension std of Î times √D,
    image→text and text→image retrieval accuracy by class)."""
    I = I / np.linalg.norm(I, axis=1, keepdims=True)
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    n = len(I)
    spread = 1.0 - ((I @ I.T).sum() - n) / (n * (n - 1))
    std = I.std(axis=0).mean() * math.sqrt(I.shape[1])     # ≈ 1 spread over the sphere
    S = I @ T.T
    return (float(spread), float(std), float((y[S.argmax(1)] == y).mean()),
            float((y[S.argmax(0)] == y).mean()))


def train_tiny(device, loss_name, steps=80):
    model = CLIP(len(VOCAB), rng=np.random.default_rng(0), **TINY).to(device)
    opt = optim.AdamW(decay_groups(model, 0.01), lr=3e-3)
    X, ids, lengths, _ = synthetic_pairs(2000, 1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(X), 40)
        I, T = model(mm.tensor(X[idx], device=device), ids[idx], lengths[idx])
        if loss_name == "infonce":
            loss = F.clip_loss(I, T, model.logit_scale)
        else:   # the classic bug: pull pairs together, no negatives to push apart
            loss = -(F.normalize(I) * F.normalize(T)).sum(axis=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_collapse_guard_embeddings_keep_their_spread(device):
    Xt, ids, lengths, y = synthetic_pairs(200, 2)
    results = {}
    for loss_name in ("infonce", "positive_only"):
        model = train_tiny(device, loss_name)
        with mm.no_grad():
            I, T = model(mm.tensor(Xt, device=device), ids, lengths)
            pid, pl = captions.encode(prompts.check_held_out(), VOCAB, max_len=8)
            C = model.class_embeddings(pid, pl, 10)
            zero_shot = float((mm.to_numpy(model.zero_shot_logits(
                mm.tensor(Xt, device=device), C)).argmax(1) == y).mean())
        results[loss_name] = spread_and_retrieval(mm.to_numpy(I), mm.to_numpy(T), y), zero_shot
    (spread, std, i2t, t2i), zero_shot = results["infonce"]
    assert spread > 0.5 and std > 0.5, results            # not one point, not one direction
    assert i2t > 0.8 and t2i > 0.8 and zero_shot > 0.8, results      # chance is 0.1
    (spread, std, i2t, t2i), _ = results["positive_only"]
    assert spread < 0.05 and std < 0.2, results           # the guard does see a collapse


def test_cnn_tower_does_not_collapse(device):
    # the article's CNN gives nearly the same ReLU features for every image at the start;
    # without FeatureBatchNorm this run ends with spread 0.41 and retrieval 0.40 / 0.33 (and
    # the same tower collapses to one point on chapter 10's noisier stand-in)
    X, ids, lengths, y = synthetic_pairs(480, 7, size=32)
    model = CLIP(len(VOCAB), image_encoder="cnn", rng=np.random.default_rng(0),
                 **{**TINY, "image_size": 32}).to(device)
    opt = optim.AdamW(decay_groups(model, 0.01), lr=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(60):
        idx = rng.integers(0, 400, 40)
        I, T = model(mm.tensor(X[idx], device=device), ids[idx], lengths[idx])
        loss = F.clip_loss(I, T, model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with mm.no_grad():
        I, T = model(mm.tensor(X[400:], device=device), ids[400:], lengths[400:])
    spread, std, i2t, t2i = spread_and_retrieval(mm.to_numpy(I), mm.to_numpy(T), y[400:])
    assert spread > 0.3 and std > 0.3 and i2t > 0.5 and t2i > 0.5, (spread, std, i2t, t2i)


def test_feature_batch_norm_against_numpy(device, rng):
    bn = FeatureBatchNorm(3).to(device)
    x = rng.standard_normal((6, 3)).astype(np.float32) * 4 + 2
    y = mm.to_numpy(bn(mm.tensor(x, device=device)))
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(mm.to_numpy(bn.running_mean), 0.1 * x.mean(0), rtol=1e-5)
    bn.eval()
    np.testing.assert_allclose(mm.to_numpy(bn(mm.tensor(x, device=device))),
                               (x - 0.1 * x.mean(0)) / np.sqrt(0.9 + 0.1 * x.var(0, ddof=1)
                                                               + 1e-5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("image_encoder", ["vit", "cnn"])
@pytest.mark.parametrize("text_encoder", ["transformer", "lstm"])
def test_every_tower_combination_trains_one_step(device, image_encoder, text_encoder):
    size = 32 if image_encoder == "cnn" else 8
    model = CLIP(len(VOCAB), image_encoder=image_encoder, text_encoder=text_encoder,
                 rng=np.random.default_rng(0), **{**TINY, "image_size": size}).to(device)
    X, ids, lengths, _ = synthetic_pairs(4, 3, size=size)
    I, T = model(mm.tensor(X, device=device), ids, lengths)
    assert I.shape == T.shape == (4, 16) and I.dtype == T.dtype == np.float32
    assert model.W_i.shape[0] == (512 if image_encoder == "cnn" else 16)
    assert model.W_t.shape[0] == (128 if text_encoder == "lstm" else 16)
    F.clip_loss(I, T, model.logit_scale).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == np.float32, name
    optim.AdamW(decay_groups(model, 0.1), lr=1e-3).step()
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_logit_scale_starts_at_one_over_007_and_is_clipped_at_100(device):
    model = CLIP(len(VOCAB), rng=np.random.default_rng(0), **TINY).to(device)
    assert model.t.shape == () and model.t.dtype == np.float32
    np.testing.assert_allclose(model.logit_scale.item(), 1 / 0.07, rtol=1e-6)
    model.logit_scale.backward()
    np.testing.assert_allclose(model.t.grad.item(), 1 / 0.07, rtol=1e-6)   # ∂e^t/∂t = e^t
    model.t.data[...] = math.log(200.0)
    model.t.grad = None
    scale = model.logit_scale
    assert scale.item() == 100.0
    scale.backward()
    assert model.t.grad.item() == 0.0                        # clipped: no gradient


def test_class_embeddings_and_zero_shot_logits_against_numpy(device, rng):
    model = CLIP(len(VOCAB), rng=np.random.default_rng(1), **TINY).to(device)
    texts = prompts.prompts(prompts.ZERO_SHOT_TEMPLATES[:3], ("cat", "dog"))
    assert texts[:3] == ["a picture of a cat", "an image of a cat", "a photo of the cat"]
    ids, lengths = captions.encode(texts, VOCAB, max_len=8)
    T = mm.to_numpy(model.encode_text(ids, lengths))
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    c = T.reshape(2, 3, -1).mean(axis=1)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    C = model.class_embeddings(ids, lengths, 2)
    np.testing.assert_allclose(mm.to_numpy(C), c, rtol=1e-5, atol=1e-6)
    X = synthetic_pairs(5, 4)[0]
    I = mm.to_numpy(model.encode_image(mm.tensor(X, device=device)))
    I = I / np.linalg.norm(I, axis=1, keepdims=True)
    np.testing.assert_allclose(mm.to_numpy(model.zero_shot_logits(mm.tensor(X, device=device),
                                                                  C)),
                               (1 / 0.07) * I @ c.T, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"6 prompts are not num_classes=4 classes"):
        model.class_embeddings(ids, lengths, 4)


def test_text_padding_never_changes_the_text_embedding(device):
    model = CLIP(len(VOCAB), rng=np.random.default_rng(2), **TINY).to(device)
    _, ids, lengths, _ = synthetic_pairs(6, 5)
    garbage = ids.copy()
    pad = np.arange(ids.shape[1])[None, :] >= lengths[:, None]
    garbage[pad] = 7
    np.testing.assert_array_equal(mm.to_numpy(model.encode_text(garbage, lengths)),
                                  mm.to_numpy(model.encode_text(ids, lengths)))


def test_held_out_templates_are_not_training_captions():
    texts = prompts.check_held_out()
    assert len(texts) == 10 * len(prompts.ZERO_SHOT_TEMPLATES) == 180
    seen = prompts.training_captions()
    assert ("a", "photo", "of", "a", "cat") in seen and ("a", "photo") in seen
    assert not any(tuple(captions.tokenize(t)) in seen for t in texts)
    with pytest.raises(ValueError, match=r"60 prompts are training captions"):
        prompts.check_held_out(captions.NAMED_TEMPLATES)
    with pytest.raises(ValueError, match=r"words outside the caption vocabulary: \['drawing'\]"):
        prompts.check_held_out(("a drawing of {a} {name}",))


def test_decay_groups_cover_every_parameter_once(device):
    model = CLIP(len(VOCAB), rng=np.random.default_rng(0), **TINY)
    decay, no_decay = decay_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert {"t", "image.cls", "text.embed.W", "image.pos_image", "text.pos_text",
            "image.modality", "image.patch.b"} <= kept
    assert {"W_i", "W_t", "image.patch.W", "text.encoder.layers.0.attn.W_q"} <= decayed
    assert all(p.ndim == 2 for p in decay["params"])
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0


def test_config_round_trip_and_checkpoint(device, tmp_path):
    model = CLIP(len(VOCAB), image_encoder="vit", text_encoder="lstm",
                 rng=np.random.default_rng(3), **TINY).to(device)
    config = model.config()
    assert config["architecture"] == "clip"
    assert CLIP.from_config(config).config() == config
    mm.save({"model": model, "config": config}, tmp_path / "clip.npz")
    ckpt = mm.load(tmp_path / "clip.npz")
    other = CLIP.from_config(ckpt["config"]).to(device)
    other.load_state_dict(ckpt["model"])
    X, ids, lengths, _ = synthetic_pairs(3, 6)
    for a, b in zip(other(mm.tensor(X, device=device), ids, lengths),
                    model(mm.tensor(X, device=device), ids, lengths)):
        np.testing.assert_array_equal(mm.to_numpy(a), mm.to_numpy(b))
    assert other.logit_scale.item() == model.logit_scale.item()


def test_linear_probe_separates_separable_features_and_not_noise(rng):
    centres = rng.standard_normal((10, 8)) * 3
    y = rng.integers(0, 10, 600)
    X = centres[y] + rng.standard_normal((600, 8))
    # the best possible here: the nearest true centre (Gaussian classes of equal spread)
    bayes = ((((X[500:, None] - centres) ** 2).sum(-1)).argmin(1) == y[500:]).mean()
    assert bayes > 0.85
    assert linear_probe(X[:500], y[:500], X[500:], y[500:], epochs=100) > bayes - 0.04
    noise = linear_probe(X[:500], rng.permutation(y[:500]), X[500:], y[500:], epochs=100)
    assert noise < 0.3                                       # labels unrelated: near chance


def test_errors():
    with pytest.raises(ValueError, match=r"CLIP: image_encoder must be one of \('vit', 'cnn'\)"):
        CLIP(len(VOCAB), image_encoder="resnet")
    with pytest.raises(ValueError, match=r"temperature and max_logit_scale must be positive"):
        CLIP(len(VOCAB), temperature=0.0)
