"""The text modality: synthetic, seeded, noisy captions for CIFAR-10 images.

CIFAR-10 has no text. To train a two-branch (image + text) model honestly, every image gets
a caption generated from templates, with a documented amount of noise. For each image,
independently (a seeded NumPy Generator):

* with probability ``p_true`` (default **0.5**) the caption names the **true** class,
  e.g. "a blurry photo of a kitten";
* with probability ``p_wrong`` (default **0.2**) it names a **wrong** class, drawn uniformly
  from the 9 others, with the same templates — so a wrong caption looks exactly like a
  true one;
* otherwise (default **0.3**) it names **no** class: "a photo of something", "an image".

Each class has a few synonyms ("plane", "jet", "car", "kitten", "puppy", "lorry"…), so the
text branch must learn a word-to-class mapping rather than match one token. Synonyms are
unique to their class; template words carry no class information.

What text alone can reach: with uniform class priors, a caption naming class c names the
truth with probability p_true / (p_true + p_wrong) (= 0.71 by default) and any one other
class with probability (p_wrong / 9) / (p_true + p_wrong), so the best guess is c. A caption
naming nothing leaves a 1-in-10 guess. The Bayes-optimal text-only accuracy is therefore

    acc_text = p_true + (1 - p_true - p_wrong) / 10          = 0.5 + 0.3 / 10 = 0.53

(defaults), whatever the model. Image alone is what the CNN learns (≈ 0.65–0.75 for the
article's small CNN); the fused model can beat both, because the image settles the captions
that name nothing or the wrong class. These captions are synthetic: they test the plumbing
and the fusion, not language understanding.

Richer captions, for a model that writes (``make_captions(..., images=x, attributes=ATTRIBUTES)``):
each caption also states facts computed from the image's own pixels — its dominant colour, its
brightness and where the object sits — so that writing the caption needs the image, not only
the class. :func:`pixel_attributes` documents the formulas and thresholds; without
``attributes`` the captions above are unchanged, byte for byte.

What text alone can reach with them (a writer that never looks at the image): each attribute
right at its majority rate (:func:`majority_rates`) — on the real CIFAR-10 test set colour
0.29 ("brown"), brightness 0.50 (no word), position 0.63 (no word), the class 0.10 — and a
per-token perplexity of 2.59, against 1.37 for a writer that gets class and attributes
right from the image (:func:`perplexity_floor`; every caption naming its true class, all
three attributes, 7.95 words + ``<eos>`` per caption).

Text pipeline: :func:`tokenize` (lowercase, split on non-letters) → :class:`Vocabulary`
(word → id, ``<pad>`` = 0, ``<unk>`` = 1) → :func:`encode` (padded int64 ids and lengths).
"""
import functools
import re

import numpy as np

from .cifar10 import CLASSES

P_TRUE = 0.5
P_WRONG = 0.2

# Synonyms per class, in CLASSES order; no word belongs to two classes.
SYNONYMS = (
    ("airplane", "plane", "jet", "aircraft"),
    ("automobile", "car", "sedan"),
    ("bird", "sparrow", "finch"),
    ("cat", "kitten", "kitty"),
    ("deer", "fawn", "stag"),
    ("dog", "puppy", "hound"),
    ("frog", "toad"),
    ("horse", "pony", "stallion"),
    ("ship", "boat", "vessel"),
    ("truck", "lorry"),
)

# {a} is the indefinite article that fits the name ("a cat", "an airplane").
NAMED_TEMPLATES = (
    "a photo of {a} {name}",
    "a blurry photo of {a} {name}",
    "a small {name} in the picture",
    "there is {a} {name} in this image",
    "a close up of {a} {name}",
    "{a} {name}",
)
NONE_TEMPLATES = (
    "a photo",
    "a blurry photo",
    "an image",
    "a small thing in the picture",
    "there is something in this image",
    "a photo of something",
    "a close up picture",
)

PAD, UNK = "<pad>", "<unk>"


def tokenize(text):
    """Lowercase and split on anything that is not a letter: "A cat, 2x!" -> ["a", "cat", "x"]."""
    return re.findall(r"[a-z]+", text.lower())


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _caption_table():
    """All named captions as a string array of shape (templates, classes, max synonyms).

    Classes with fewer synonyms repeat theirs cyclically, so a uniform index over the last
    axis is not uniform over synonyms — the draw below uses each class's own count instead.
    """
    width = max(len(s) for s in SYNONYMS)
    table = [[[t.format(a=_article(syn[k % len(syn)]), name=syn[k % len(syn)])
               for k in range(width)] for syn in SYNONYMS] for t in NAMED_TEMPLATES]
    return np.array(table, dtype=object)


_NAMED = _caption_table()
_NONE = np.array(NONE_TEMPLATES, dtype=object)
_N_SYNONYMS = np.array([len(s) for s in SYNONYMS], dtype=np.int64)

NONE, TRUE, WRONG = 0, 1, 2  # caption kinds returned by make_captions(..., return_kinds=True)


def make_captions(labels, seed=0, p_true=P_TRUE, p_wrong=P_WRONG, return_kinds=False,
                  images=None, attributes=()):
    """One synthetic caption per label (see the module docstring for the noise model).

    labels: integer class ids in 0..9. Deterministic given ``seed`` (an int or a Generator).
    Returns a list of str; with ``return_kinds=True`` also an int64 array of the kind of each
    caption (``NONE`` = 0, ``TRUE`` = 1, ``WRONG`` = 2) and the class it names (-1 for none).

    ``attributes``: a subset of :data:`ATTRIBUTES` ("colour", "brightness", "position") to
    state in every caption, computed from ``images`` (uint8 (N, 3, H, W)) by
    :func:`pixel_attributes` — "a photo of a dark blue plane on the left". The random draws
    are the same as without attributes, so a seed names the same classes with the same
    templates either way; a caption naming no class describes "a … thing" with a named
    template (the same ``template`` draw). Empty (the default): the plain captions.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"make_captions: labels must be a 1-D integer array, got shape "
                         f"{labels.shape}, dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(f"make_captions: labels must lie in 0..{len(CLASSES) - 1}, got min "
                         f"{labels.min()}, max {labels.max()}")
    if not (0 <= p_true and 0 <= p_wrong and p_true + p_wrong <= 1):
        raise ValueError(f"make_captions: need p_true, p_wrong >= 0 and p_true + p_wrong <= 1, "
                         f"got p_true={p_true}, p_wrong={p_wrong}")
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    u = rng.random(n)
    kind = np.where(u < p_true, TRUE, np.where(u < p_true + p_wrong, WRONG, NONE))
    # a wrong class: shift the truth by 1..9, uniform over the 9 other classes
    wrong = (labels + rng.integers(1, len(CLASSES), size=n)) % len(CLASSES)
    named = np.where(kind == TRUE, labels, wrong).astype(np.int64)
    synonym = (rng.random(n) * _N_SYNONYMS[named]).astype(np.int64)
    template = rng.integers(0, len(NAMED_TEMPLATES), size=n)
    blank = rng.integers(0, len(NONE_TEMPLATES), size=n)
    if attributes:
        captions = _described(images, n, attributes, template,
                              np.where(kind == NONE, len(CLASSES), named), synonym)
    else:
        captions = np.where(kind == NONE, _NONE[blank], _NAMED[template, named, synonym]).tolist()
    if return_kinds:
        return captions, kind.astype(np.int64), np.where(kind == NONE, -1, named)
    return captions


def text_only_accuracy(p_true=P_TRUE, p_wrong=P_WRONG, num_classes=len(CLASSES)):
    """The Bayes-optimal accuracy of a classifier that sees only the caption."""
    return p_true + (1.0 - p_true - p_wrong) / num_classes


# -- pixel attributes: the richer captions ----------------------------------------------------
ATTRIBUTES = ("colour", "brightness", "position")
COLOURS = ("grey", "red", "brown", "yellow", "green", "blue")
HUE_EDGES = (20.0, 50.0, 80.0, 170.0, 300.0)   # degrees: red | brown | yellow | green | blue | red
GREY_CHROMA = 0.06                             # mean chroma below this: "grey"
DARK_BELOW, BRIGHT_ABOVE = 0.40, 0.55          # mean luma thresholds
OFF_CENTRE = 1.5                               # pixels the object's centroid must move aside
BORDER = 2                                     # the background is the outer 2-pixel ring
# the words of each attribute's values; "" = no word in the caption
ATTRIBUTE_WORDS = {"colour": COLOURS, "brightness": ("", "dark", "bright"),
                   "position": ("", "left", "right")}
_POSITION_SUFFIX = np.array(["", " on the left", " on the right"], dtype=object)


def pixel_attributes(images, chunk=2048):
    """Facts about each image computed from its pixels: {"colour", "brightness", "position"},
    each an int64 (N,) index into :data:`ATTRIBUTE_WORDS`. images: uint8 (N, 3, H, W), RGB.

    With r, g, b = pixel / 255 ∈ [0, 1] per pixel:

    * **colour** (the dominant hue): chroma C = max(r, g, b) − min(r, g, b) and hue H in
      degrees, H = 60° · ((g − b)/C mod 6) where r is the maximum, 60° · ((b − r)/C + 2) where
      g is, 60° · ((r − g)/C + 4) where b is (HSV's hue). The hue circle is cut at
      :data:`HUE_EDGES` into red [300°, 20°), brown (orange to brown) [20°, 50°), yellow
      [50°, 80°), green [80°, 170°), blue [170°, 300°); the colour is the sector with the
      largest total chroma Σ C over its pixels (so grey pixels count for nothing) — unless the
      image's mean chroma is below ``GREY_CHROMA`` = 0.06, when it is "grey".
    * **brightness**: mean luma Y = 0.299 r + 0.587 g + 0.114 b (ITU-R BT.601) over the image;
      "dark" if Y < 0.40, "bright" if Y > 0.55, no word otherwise.
    * **position**: where the object sits left to right. The background colour is the mean
      (r, g, b) of the outer ``BORDER`` = 2-pixel ring; each pixel's weight is its squared
      distance from it, w = ‖(r, g, b) − background‖²; the object's column is the weighted
      centroid x̄ = Σ w·x / Σ w (x = 0 … W−1), against the row's centre x₀ = (W − 1)/2: "left"
      if x̄ < x₀ − 1.5, "right" if x̄ > x₀ + 1.5 (on 32 pixels: x̄ < 14, x̄ > 17), no word
      otherwise, nor for a flat image (Σ w = 0); said as "on the left", "on the right".

    On the real CIFAR-10 test set: grey 18%, red 12%, brown 29%, yellow 9%, green 8%, blue
    23%; dark 24%, bright 27%, neither 50%; left 18%, right 19%, neither 63%. Images are
    processed ``chunk`` at a time (memory).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"pixel_attributes: images must be uint8 (N, 3, H, W), got "
                         f"{images.dtype} {images.shape}")
    parts = [_attributes_of(images[i:i + chunk]) for i in range(0, len(images), chunk)]
    return {name: np.concatenate([p[name] for p in parts]) if parts
            else np.zeros(0, dtype=np.int64) for name in ATTRIBUTES}


def _attributes_of(images):
    x = images.astype(np.float32) / np.float32(255)              # (n, 3, H, W) in [0, 1]
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    hi, lo = x.max(axis=1), x.min(axis=1)
    chroma = hi - lo
    safe = np.where(chroma > 0, chroma, np.float32(1))
    hue = np.where(hi == r, ((g - b) / safe) % 6,
                   np.where(hi == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60
    sector = np.searchsorted(np.array(HUE_EDGES, dtype=np.float32), hue, side="right")
    sector = np.where(sector == len(HUE_EDGES), 0, sector) + 1  # 1 red … 5 blue; red wraps
    mass = np.stack([(chroma * (sector == k)).sum(axis=(1, 2))
                     for k in range(1, len(COLOURS))], axis=1)   # Σ C per colour sector
    colour = np.where(chroma.mean(axis=(1, 2)) < GREY_CHROMA, 0, mass.argmax(axis=1) + 1)

    luma = (0.299 * r + 0.587 * g + 0.114 * b).mean(axis=(1, 2))
    brightness = np.where(luma < DARK_BELOW, 1, np.where(luma > BRIGHT_ABOVE, 2, 0))

    ring = np.ones(x.shape[2:], dtype=bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    background = x[:, :, ring].mean(axis=2)                       # (n, 3)
    w = ((x - background[:, :, None, None]) ** 2).sum(axis=1)     # (n, H, W)
    columns = np.arange(x.shape[3], dtype=np.float32)
    total = w.sum(axis=(1, 2))
    cx = (w.sum(axis=1) @ columns) / np.where(total > 0, total, 1)
    off = np.where(total > 0, cx - (x.shape[3] - 1) / 2, 0)       # a flat image: centred
    position = np.where(off < -OFF_CENTRE, 1, np.where(off > OFF_CENTRE, 2, 0))
    return {"colour": colour.astype(np.int64), "brightness": brightness.astype(np.int64),
            "position": position.astype(np.int64)}


def _check_attributes(attributes):
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or isinstance(attributes, str):
        raise ValueError(f"make_captions: attributes must be a tuple drawn from {ATTRIBUTES}, "
                         f"got {attributes!r}")
    return tuple(a for a in ATTRIBUTES if a in attributes)       # the canonical order


@functools.lru_cache(maxsize=None)
def _described_table(attributes):
    """(templates, classes + "thing", synonyms, brightness, colour) -> caption without position;
    an attribute not asked for contributes no word."""
    width = max(len(s) for s in SYNONYMS)
    names = SYNONYMS + (("thing",),)
    bright = ATTRIBUTE_WORDS["brightness"] if "brightness" in attributes else ("",) * 3
    colours = COLOURS if "colour" in attributes else ("",) * len(COLOURS)

    def caption(template, name, b, c):
        phrase = " ".join(w for w in (b, c, name) if w)
        return template.format(a=_article(phrase), name=phrase)

    return np.array([[[[[caption(t, syn[k % len(syn)], b, c) for c in colours] for b in bright]
                       for k in range(width)] for syn in names] for t in NAMED_TEMPLATES],
                    dtype=object)


def _described(images, n, attributes, template, named, synonym):
    attributes = _check_attributes(attributes)
    if images is None or len(images) != n:
        raise ValueError(f"make_captions: attributes {attributes} need images, one per label "
                         f"({n}), got {None if images is None else len(images)}")
    values = pixel_attributes(images)
    text = _described_table(attributes)[template, named, synonym, values["brightness"],
                                        values["colour"]]
    if "position" in attributes:
        text = text + _POSITION_SUFFIX[values["position"]]
    return text.tolist()


def read_captions(captions):
    """What each caption says, parsed from its words: {"class", "colour", "brightness",
    "position"} -> int64 (N,). "class" is the class a synonym names (-1: none); the attributes
    are indices into :data:`ATTRIBUTE_WORDS` — colour -1 when no colour word is there,
    brightness / position 0 (no word) when none is; two contradicting words give -1.
    ``captions``: strings or lists of words (a decoded generation)."""
    words_of = {}
    for c, syns in enumerate(SYNONYMS):
        words_of.update({w: ("class", c) for w in syns})
    for name, words in ATTRIBUTE_WORDS.items():
        words_of.update({w: (name, v) for v, w in enumerate(words) if w})
    out = {name: [] for name in ("class",) + ATTRIBUTES}
    for caption in captions:
        words = tokenize(caption) if isinstance(caption, str) else caption
        seen = {name: set() for name in out}
        for w in words:
            if w in words_of:
                name, value = words_of[w]
                seen[name].add(value)
        for name, values in seen.items():
            none = 0 if name in ("brightness", "position") else -1
            out[name].append(values.pop() if len(values) == 1 else (-1 if values else none))
    return {name: np.array(v, dtype=np.int64) for name, v in out.items()}


def majority_rates(values):
    """The accuracy of always answering the most frequent value — what a model that does not
    look at the image can reach on each attribute: {name: (word, rate)} for a dict of int
    arrays (as :func:`pixel_attributes` returns); words from :data:`ATTRIBUTE_WORDS`, "" for
    no word, a class index as a string for "class"."""
    out = {}
    for name, v in values.items():
        counts = np.bincount(np.asarray(v))
        top = int(counts.argmax())
        word = str(top) if name == "class" else ATTRIBUTE_WORDS[name][top]
        out[name] = (word, float(counts[top] / counts.sum()))
    return out


def perplexity_floor(captions, labels, values):
    """The lowest per-token perplexity any model can reach on ``captions`` made with
    p_true = 1 (each names its true class) and the attributes in ``values``:
    ``{"with_image": …, "text_only": …}``.

    A caption is a one-to-one function of its draws — template t (6, uniform), synonym s
    (uniform among its class's n_c), class c and attribute values a — so its entropy is
    H = log 6 + E[log n_c] + H(c, a). A model that sees the image (and gets the class and the
    attributes right) pays only the first two terms; one that sees only text pays all three,
    H(c, a) estimated from the empirical joint frequencies. Per token (the words and
    ``<eos>``): exp(H / mean tokens per caption).
    """
    labels = np.asarray(labels).astype(np.int64)
    tokens = np.mean([len(tokenize(c)) + 1 for c in captions])
    base = np.log(len(NAMED_TEMPLATES)) + np.mean(np.log(_N_SYNONYMS[labels]))
    joint = np.stack([labels] + [np.asarray(values[k]) for k in sorted(values)], axis=1)
    _, counts = np.unique(joint, axis=0, return_counts=True)
    p = counts / counts.sum()
    h_joint = float(-(p * np.log(p)).sum())
    return {"with_image": float(np.exp(base / tokens)),
            "text_only": float(np.exp((base + h_joint) / tokens))}


class Vocabulary:
    """A word <-> id table with ``<pad>`` = 0 and ``<unk>`` = 1; unknown words map to 1."""

    def __init__(self, words=()):
        self.itos = [PAD, UNK]
        self.stoi = {PAD: 0, UNK: 1}
        for w in words:
            self.add(w)

    def add(self, word):
        if word not in self.stoi:
            self.stoi[word] = len(self.itos)
            self.itos.append(word)
        return self.stoi[word]

    @classmethod
    def build(cls, texts, min_freq=1):
        """A vocabulary of the words seen at least ``min_freq`` times, in first-seen order."""
        counts = {}
        for text in texts:
            for w in tokenize(text):
                counts[w] = counts.get(w, 0) + 1
        return cls(w for w, c in counts.items() if c >= min_freq)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, word):
        return word in self.stoi

    def __getitem__(self, word):
        return self.stoi.get(word, 1)

    def lookup(self, tokens):
        return [self.stoi.get(w, 1) for w in tokens]

    def decode(self, ids):
        """Ids back to words, padding dropped."""
        return [self.itos[i] for i in np.asarray(ids).tolist() if i != 0]

    def __repr__(self):
        return f"Vocabulary({len(self)} words)"


BOS, EOS = "<bos>", "<eos>"   # a writing model's start and end tokens: ids 2 and 3 below


def caption_vocabulary(attributes=False):
    """Every word the caption templates can produce, so train and test share one table.

    ``attributes=True``: the vocabulary of a model that writes the richer captions —
    ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3, then every word of the plain and the
    attribute captions. The default table is the classifiers' (unchanged)."""
    texts = list(NONE_TEMPLATES) + _NAMED.ravel().tolist()
    if not attributes:
        return Vocabulary.build(texts)
    texts += _described_table(ATTRIBUTES).ravel().tolist() + _POSITION_SUFFIX.tolist()
    vocab = Vocabulary([BOS, EOS])
    for w in Vocabulary.build(texts).itos[2:]:
        vocab.add(w)
    return vocab


def encode(captions, vocab, max_len=16, padding="post"):
    """Captions -> (ids int64 (N, max_len), lengths int64 (N,)).

    Each caption is tokenised, mapped through ``vocab`` (unknown words -> 1), cut to
    ``max_len`` tokens and padded with 0 — after the tokens (``padding="post"``, the default)
    or before them (``"pre"``, as Keras' ``pad_sequences``, so the last LSTM step sees the
    last word). ``lengths`` counts the real tokens.
    """
    if isinstance(captions, str):
        raise TypeError("encode: captions must be a list of strings, got a single str")
    if max_len < 1:
        raise ValueError(f"encode: max_len must be >= 1, got {max_len}")
    if padding not in ("post", "pre"):
        raise ValueError(f"encode: padding must be 'post' or 'pre', got {padding!r}")
    seqs = [vocab.lookup(tokenize(c))[:max_len] for c in captions]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.zeros((len(seqs), max_len), dtype=np.int64)
    if len(seqs):
        flat = np.array([i for s in seqs for i in s], dtype=np.int64)
        rows = np.repeat(np.arange(len(seqs)), lengths)
        start = np.zeros(len(seqs), dtype=np.int64) if padding == "post" else max_len - lengths
        cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths) \
            + np.repeat(start, lengths)
        ids[rows, cols] = flat
    return ids, lengths
