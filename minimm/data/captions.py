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

Text pipeline: :func:`tokenize` (lowercase, split on non-letters) → :class:`Vocabulary`
(word → id, ``<pad>`` = 0, ``<unk>`` = 1) → :func:`encode` (padded int64 ids and lengths).
"""
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


def make_captions(labels, seed=0, p_true=P_TRUE, p_wrong=P_WRONG, return_kinds=False):
    """One synthetic caption per label (see the module docstring for the noise model).

    labels: integer class ids in 0..9. Deterministic given ``seed`` (an int or a Generator).
    Returns a list of str; with ``return_kinds=True`` also an int64 array of the kind of each
    caption (``NONE`` = 0, ``TRUE`` = 1, ``WRONG`` = 2) and the class it names (-1 for none).
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
    captions = np.where(kind == NONE, _NONE[blank], _NAMED[template, named, synonym]).tolist()
    if return_kinds:
        return captions, kind.astype(np.int64), np.where(kind == NONE, -1, named)
    return captions


def text_only_accuracy(p_true=P_TRUE, p_wrong=P_WRONG, num_classes=len(CLASSES)):
    """The Bayes-optimal accuracy of a classifier that sees only the caption."""
    return p_true + (1.0 - p_true - p_wrong) / num_classes


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


def caption_vocabulary():
    """Every word the caption templates can produce, so train and test share one table."""
    texts = list(NONE_TEMPLATES) + _NAMED.ravel().tolist()
    return Vocabulary.build(texts)


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
