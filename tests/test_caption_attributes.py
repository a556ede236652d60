"""The richer captions: attributes computed from the pixels, and what text alone can reach."""
import colorsys
import hashlib

import numpy as np
import pytest

from minimm.data import captions as C

ALL = C.ATTRIBUTES


def solid(rgb, n=1, size=8):
    """n uint8 images (n, 3, size, size) of one colour."""
    return np.broadcast_to(np.array(rgb, dtype=np.uint8)[None, :, None, None],
                           (n, 3, size, size)).copy()


def oracle(image):
    """The documented formulas, one pixel at a time with colorsys (independent of the code)."""
    x = image.astype(np.float64) / 255
    H, W = x.shape[1:]
    mass, chroma_sum, luma = np.zeros(6), 0.0, 0.0
    for i in range(H):
        for j in range(W):
            r, g, b = x[:, i, j]
            h, s, v = colorsys.rgb_to_hsv(r, g, b)
            c = max(r, g, b) - min(r, g, b)
            deg = h * 360
            k = (1 if deg < 20 or deg >= 300 else 2 if deg < 50 else 3 if deg < 80
                 else 4 if deg < 170 else 5)
            mass[k] += c
            chroma_sum += c
            luma += 0.299 * r + 0.587 * g + 0.114 * b
    colour = 0 if chroma_sum / (H * W) < 0.06 else int(np.argmax(mass[1:]) + 1)
    luma /= H * W
    brightness = 1 if luma < 0.40 else 2 if luma > 0.55 else 0
    ring = [(i, j) for i in range(H) for j in range(W)
            if i < 2 or j < 2 or i >= H - 2 or j >= W - 2]
    bg = np.mean([x[:, i, j] for i, j in ring], axis=0)
    num = den = 0.0
    for i in range(H):
        for j in range(W):
            w = float(((x[:, i, j] - bg) ** 2).sum())
            num, den = num + w * j, den + w
    cx = num / den if den > 0 else (W - 1) / 2
    position = 1 if cx < (W - 1) / 2 - 1.5 else 2 if cx > (W - 1) / 2 + 1.5 else 0
    return colour, brightness, position


def test_plain_captions_are_byte_identical_to_before():
    # sha256 of the captions made by main's captions.py (ed82b44), before attributes existed
    labels = np.arange(2000) % 10
    pinned = {(0, None): "dd951969ac18c43dd0567ffab0dc69cc0bb89ec5d737425ff3552e15b212bf07",
              (3, (0.3, 0.3)): "82fc1a2bce29fdb641f4c8a8e4ffea4e18fe1dfdd01c4a3f6e6e1363071bcaaa"}
    for (seed, noise), digest in pinned.items():
        kw = {} if noise is None else dict(p_true=noise[0], p_wrong=noise[1])
        text = "\n".join(C.make_captions(labels, seed=seed, **kw))
        assert hashlib.sha256(text.encode()).hexdigest() == digest
        assert C.make_captions(labels, seed=seed, attributes=(), **kw) == text.split("\n")


def test_solid_colours_and_brightness():
    # luma 0.43, 0.44, 0.74, 0.44, 0.44, 0.50, 0.08, 0.98, 0.23
    cases = {(230, 60, 60): ("red", ""), (160, 100, 50): ("brown", ""),
             (220, 200, 40): ("yellow", "bright"), (40, 160, 60): ("green", ""),
             (70, 110, 240): ("blue", ""), (128, 128, 128): ("grey", ""),
             (20, 20, 25): ("grey", "dark"), (250, 250, 250): ("grey", "bright"),
             (120, 20, 90): ("red", "dark")}                 # magenta falls in red [300°, 20°)
    images = np.concatenate([solid(rgb) for rgb in cases])
    got = C.pixel_attributes(images)
    for n, (colour, bright) in enumerate(cases.values()):
        assert C.COLOURS[got["colour"][n]] == colour
        assert C.ATTRIBUTE_WORDS["brightness"][got["brightness"][n]] == bright
    assert (got["position"] == 0).all()                     # a flat image has no object


def test_position_of_an_object():
    images = np.zeros((3, 3, 32, 32), dtype=np.uint8)
    images[0, :, 10:20, 3:9] = 255                          # columns 3..8: centroid 5.5
    images[1, :, 10:20, 24:30] = 255                        # centroid 26.5
    images[2, :, 10:20, 13:19] = 255                        # centroid 15.5
    got = C.pixel_attributes(images)
    assert got["position"].tolist() == [1, 2, 0]             # left, right, neither


def test_attributes_match_the_per_pixel_oracle():
    rng = np.random.default_rng(0)
    # random images with a coloured object on a random background, 32×32 as CIFAR
    images = rng.integers(0, 256, size=(12, 3, 32, 32)).astype(np.uint8) // 4
    for n in range(12):
        c0 = rng.integers(0, 24)
        images[n, :, 8:24, c0:c0 + 8] += rng.integers(0, 190, size=(3, 1, 1)).astype(np.uint8)
    got = C.pixel_attributes(images, chunk=5)               # chunking changes nothing
    for n in range(12):
        assert (got["colour"][n], got["brightness"][n], got["position"][n]) == oracle(images[n])
    assert len(set(got["colour"].tolist())) >= 3 and len(set(got["position"].tolist())) == 3


def test_attribute_captions_say_the_attributes_and_share_the_draws():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, size=300)
    images = rng.integers(0, 256, size=(300, 3, 32, 32)).astype(np.uint8)
    images[::3] //= 4                                         # some dark ones
    values = C.pixel_attributes(images)
    caps, kinds, named = C.make_captions(labels, seed=5, images=images, attributes=ALL,
                                         return_kinds=True)
    plain, kinds0, named0 = C.make_captions(labels, seed=5, return_kinds=True)
    np.testing.assert_array_equal(kinds, kinds0)
    np.testing.assert_array_equal(named, named0)
    read = C.read_captions(caps)
    np.testing.assert_array_equal(read["class"], named)
    for name in ALL:
        np.testing.assert_array_equal(read[name], values[name])
    # without its attribute words a named caption is the plain one (up to "a"/"an")
    drop = {w for words in C.ATTRIBUTE_WORDS.values() for w in words if w} | {"an"}
    for cap, p, kind in zip(caps, plain, kinds):
        words = [w for w in C.tokenize(cap) if w not in drop]
        if words[-2:] == ["on", "the"]:
            words = words[:-2]
        if kind != C.NONE:
            assert words == [("a" if w == "an" else w) for w in C.tokenize(p)]
        else:
            assert "thing" in words
    # a subset states only its attributes
    bright = C.make_captions(labels, seed=5, images=images, attributes=("brightness",))
    only = C.read_captions(bright)
    np.testing.assert_array_equal(only["brightness"], values["brightness"])
    assert (only["colour"] == -1).all() and (only["position"] == 0).all()
    # the article fits the word after it ("an airplane", "a dark airplane")
    pairs = [(w, nxt) for c in caps + bright for w, nxt in zip(C.tokenize(c), C.tokenize(c)[1:])
             if w in ("a", "an")]
    assert all((w == "an") == (nxt[0] in "aeiou") for w, nxt in pairs)
    assert any(w == "an" for w, _ in pairs) and any(w == "a" for w, _ in pairs)


def test_vocabulary_for_writing():
    V = C.caption_vocabulary(attributes=True)
    assert V.itos[:4] == ["<pad>", "<unk>", C.BOS, C.EOS]
    plain = C.caption_vocabulary()
    assert set(plain.itos) < set(V.itos) and C.BOS not in plain
    images = np.random.default_rng(2).integers(0, 256, size=(200, 3, 32, 32)).astype(np.uint8)
    caps = C.make_captions(np.arange(200) % 10, images=images, attributes=ALL)
    caps += C.make_captions(np.arange(200) % 10, images=images, attributes=ALL, p_true=0,
                            p_wrong=0)
    assert all(V[w] > 3 for cap in caps for w in C.tokenize(cap))     # no <unk>, no specials


def test_read_captions_of_generated_words():
    read = C.read_captions([["a", "dark", "blue", "jet"], ["a", "cat"],
                            ["a", "red", "blue", "car", "on", "the", "left"], "a bright thing"])
    assert read["class"].tolist() == [0, 3, 1, -1]
    assert read["colour"].tolist() == [5, -1, -1, -1]          # none, or contradicting: -1
    assert read["brightness"].tolist() == [1, 0, 0, 2]
    assert read["position"].tolist() == [0, 0, 1, 0]


def test_majority_rates_and_perplexity_floor():
    values = {"colour": np.array([2, 2, 5, 0]), "brightness": np.array([0, 1, 0, 0])}
    rates = C.majority_rates(values)
    assert rates == {"colour": ("brown", 0.5), "brightness": ("", 0.75)}
    # one class with 2 synonyms and constant attributes: the image adds nothing
    labels = np.full(4, 6)                                     # frog, toad
    caps = ["a frog", "a toad", "a photo of a frog", "a toad"]
    tokens = (2 + 2 + 5 + 2) / 4 + 1                           # words + <eos>
    same = C.perplexity_floor(caps, labels, {"colour": np.zeros(4, int)})
    expected = np.exp((np.log(6) + np.log(2)) / tokens)
    assert same["with_image"] == pytest.approx(expected) == same["text_only"]
    # two equally frequent classes (frog 2 synonyms, truck 2): text alone pays log 2 more
    two = C.perplexity_floor(caps, np.array([6, 6, 9, 9]), {"colour": np.zeros(4, int)})
    assert two["with_image"] == pytest.approx(expected)
    assert two["text_only"] == pytest.approx(np.exp((np.log(6) + 2 * np.log(2)) / tokens))


def test_attribute_errors():
    labels = np.arange(4)
    with pytest.raises(ValueError, match=r"make_captions: attributes \('colour',\) need images"):
        C.make_captions(labels, attributes=("colour",))
    with pytest.raises(ValueError, match="make_captions: attributes must be a tuple drawn from"):
        C.make_captions(labels, images=solid((1, 2, 3), 4), attributes=("size",))
    with pytest.raises(ValueError, match="make_captions: attributes must be a tuple"):
        C.make_captions(labels, images=solid((1, 2, 3), 4), attributes="colour")
    with pytest.raises(ValueError, match=r"pixel_attributes: images must be uint8 \(N, 3, H, W\)"):
        C.pixel_attributes(np.zeros((2, 3, 4, 4), dtype=np.float32))
