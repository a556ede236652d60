"""The article's multimodal CIFAR-10 model (§2.3, §3.2, §4.3 / §5.2), runnable.

The article's architecture (§2.3) has four parts, and each is one piece of code here:

    input module                 images (B, 3, 32, 32) float32; caption ids (B, T) + lengths (B,)
    per-modality features        ImageBranch: CNN  -> (B, 512)      (§3.2 step 2, "CNN")
                                 TextBranch:  LSTM -> (B, 128)      (§3.2 step 2, "RNN")
    fused representation         concat([image, text], axis=1) -> (B, 640)   (§3.2 step 3)
    prediction module            Linear(640 -> 10) -> logits; softmax lives in the loss

The case study (§4.3 / §5.2) fixes the layers: Conv32-Pool-Conv64-Pool-Conv128-Pool
(3×3 "valid" convolutions with ReLU, 2×2 max pooling), Embedding + LSTM(128) over the words,
concatenation, a softmax Dense layer, Adam, categorical cross-entropy.

The article's Keras code does not run as printed; minimm's version fixes three bugs:

* the image features are never flattened — Dense on a (B, 2, 2, 128) map and
  concatenation with a (B, 128) vector fail; here :class:`ImageBranch` ends in ``Flatten``
  (128·2·2 = 512 features);
* ``vocab_size`` and ``embedding_dim`` are undefined — here they are constructor arguments
  (the vocabulary is :func:`minimm.data.caption_vocabulary`, embedding_dim 64);
* ``load_data`` is undefined and CIFAR-10 has no text — here :mod:`minimm.data` loads the
  binary archive and generates seeded, noisy, synthetic captions.

The Dense layer's softmax is left to the loss (``F.cross_entropy`` takes logits), which is
the same model and numerically stable. An optional second head predicts the superclass
(vehicle / animal) from the same fused features: the multi-task setting of §4.1.3, trained
with ``F.multitask_loss`` (Σ task losses + λ R(θ)).

Modality dropout (an option beyond the article, ``text_dropout=p``): in training mode the text
features of each sample are replaced by zeros with probability p, so the head must also learn
to classify from the image alone and cannot lean on the caption for every sample.
"""

from .. import backend
from .. import functional as F
from .. import nn
from ..autograd import Tensor

EMBED_DIM, HIDDEN_SIZE, IMAGE_FEATURES = 64, 128, 512
MODES = ("multimodal", "image", "text")


class ImageBranch(nn.Sequential):
    """The CNN image branch of §4.3: Conv32-Pool-Conv64-Pool-Conv128-Pool, then Flatten.

    3×3 "valid" convolutions, each followed by ReLU, and 2×2 max pooling; on 32×32 inputs
    the spatial sizes are 32 → 30 → 15 → 13 → 6 → 4 → 2, so (B, 3, 32, 32) -> (B, 512).
    The final ``Flatten`` is the fix for the article's missing flatten.
    """

    def __init__(self, rng=None):
        super().__init__(
            nn.Conv2d(3, 32, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),      # 30 -> 15
            nn.Conv2d(32, 64, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),     # 13 -> 6
            nn.Conv2d(64, 128, 3, rng=rng), nn.ReLU(), nn.MaxPool2d(2),    # 4 -> 2
            nn.Flatten())
        self.out_features = IMAGE_FEATURES


class TextBranch(nn.Module):
    """The RNN text branch of §4.3: Embedding(vocab_size, 64) + LSTM(64 -> 128).

    ``forward(ids, lengths=None)``: ids (B, T) integers, padded after the words; the feature
    of each caption is the LSTM's hidden state h at the caption's **own** last word
    (``lengths[n]``), not at the padded end — (B, 128). Without ``lengths``, h_T.
    """

    def __init__(self, vocab_size, embedding_dim=EMBED_DIM, hidden_size=HIDDEN_SIZE, rng=None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_dim, rng=rng)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, rng=rng)
        self.out_features = int(hidden_size)

    def forward(self, ids, lengths=None):
        x = self.embed(ids)                               # (B, T, embedding_dim)
        _, (h, _) = self.lstm(x, lengths=lengths)         # h: (B, hidden_size)
        return h


class MultiModalModel(nn.Module):
    """The article's fused classifier (§2.3 / §4.3), or one branch alone.

    mode:             "multimodal" (image + text, concatenated: 512 + 128 = 640 features),
                      "image" (CNN only, 512) or "text" (LSTM only, 128).
    num_classes:      the main head, Linear(features -> num_classes) returning logits.
    num_superclasses: None for one task; 2 adds a second head, Linear(features -> 2), for
                      vehicle / animal (multi-task learning, §4.1.3).
    text_dropout:     modality dropout, mode "multimodal" only: in training mode each sample's
                      text features are zeroed with this probability (drawn with ``rng``, or
                      minimm's default generator); not rescaled, since at test time the text
                      is there at its trained size. 0 (default) is the article's model.

    ``forward(images, ids=None, lengths=None)`` returns the logits (B, num_classes), or
    ``(logits, super_logits)`` with a second head. A branch the mode does not use ignores
    its input (pass None). Attributes ``image``, ``text`` (None when unused), ``head`` and
    ``super_head`` (None for one task).
    """

    def __init__(self, vocab_size, num_classes=10, mode="multimodal", num_superclasses=None,
                 embedding_dim=EMBED_DIM, hidden_size=HIDDEN_SIZE, text_dropout=0.0, rng=None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"MultiModalModel: mode must be one of {MODES}, got {mode!r}")
        if mode != "image" and (vocab_size is None or int(vocab_size) < 2):
            raise ValueError(f"MultiModalModel: mode {mode!r} needs vocab_size >= 2 "
                             f"(<pad>, <unk> and words), got {vocab_size!r}")
        if num_superclasses is not None and int(num_superclasses) < 2:
            raise ValueError(f"MultiModalModel: num_superclasses must be None or >= 2, got "
                             f"{num_superclasses!r}")
        if not 0.0 <= float(text_dropout) < 1.0:
            raise ValueError(f"MultiModalModel: text_dropout must be in [0, 1), got "
                             f"{text_dropout!r}")
        if text_dropout and mode != "multimodal":
            raise ValueError(f"MultiModalModel: text_dropout drops the text next to the image; "
                             f"mode {mode!r} has no second modality (use mode='multimodal')")
        self.mode = mode
        self.text_dropout, self.rng = float(text_dropout), rng
        self.vocab_size = int(vocab_size) if vocab_size is not None else 0
        self.num_classes = int(num_classes)
        self.num_superclasses = int(num_superclasses) if num_superclasses else None
        self.embedding_dim, self.hidden_size = int(embedding_dim), int(hidden_size)
        self.image = ImageBranch(rng) if mode in ("multimodal", "image") else None
        self.text = (TextBranch(vocab_size, embedding_dim, hidden_size, rng)
                     if mode in ("multimodal", "text") else None)
        features = sum(b.out_features for b in (self.image, self.text) if b is not None)
        self.head = nn.Linear(features, self.num_classes, rng=rng)       # the "softmax Dense"
        self.super_head = (nn.Linear(features, self.num_superclasses, rng=rng)
                           if self.num_superclasses else None)

    @property
    def multitask(self):
        return self.super_head is not None

    def features(self, images=None, ids=None, lengths=None):
        """The fused representation (§3.2 step 3): concat(image features, text features)."""
        feats = []
        if self.image is not None:
            if images is None:
                raise ValueError(f"MultiModalModel({self.mode!r}): images are required")
            feats.append(self.image(images))                  # (B, 512)
        if self.text is not None:
            if ids is None:
                raise ValueError(f"MultiModalModel({self.mode!r}): caption ids are required")
            h_txt = self.text(ids, lengths)                   # (B, 128)
            if self.training and self.text_dropout > 0.0:
                h_txt = self._drop_text(h_txt)
            feats.append(h_txt)
        return feats[0] if len(feats) == 1 else F.concat(feats, axis=1)   # (B, 640)

    def _drop_text(self, h_txt):
        """h_txt with the rows of a random ``text_dropout`` share of the samples zeroed."""
        xp = backend.get_array_module(h_txt)
        rng = self.rng if self.rng is not None else F.default_generator()
        u = rng.random((h_txt.shape[0], 1))                   # one draw per sample, host side
        keep = xp.asarray(u >= self.text_dropout, dtype=h_txt.dtype)
        return h_txt * Tensor(keep)

    def forward(self, images=None, ids=None, lengths=None):
        z = self.features(images, ids, lengths)
        logits = self.head(z)                                 # softmax is in the loss
        if self.super_head is None:
            return logits
        return logits, self.super_head(z)

    def config(self):
        """The constructor's arguments as a dict of numbers and strings (saved with a
        checkpoint, so :meth:`from_config` rebuilds the same architecture)."""
        return {"mode": self.mode, "vocab_size": self.vocab_size,
                "num_classes": self.num_classes,
                "num_superclasses": self.num_superclasses or 0,
                "embedding_dim": self.embedding_dim, "hidden_size": self.hidden_size,
                "text_dropout": self.text_dropout}

    @classmethod
    def from_config(cls, config, rng=None):
        return cls(int(config["vocab_size"]), int(config["num_classes"]), str(config["mode"]),
                   int(config.get("num_superclasses", 0)) or None,
                   int(config.get("embedding_dim", EMBED_DIM)),
                   int(config.get("hidden_size", HIDDEN_SIZE)),
                   float(config.get("text_dropout", 0.0)), rng=rng)

    def extra_repr(self):
        extra = f", text_dropout={self.text_dropout}" if self.text_dropout else ""
        return f"mode={self.mode!r}, multitask={self.multitask}{extra}"


__all__ = ["ImageBranch", "TextBranch", "MultiModalModel", "MODES", "EMBED_DIM",
           "HIDDEN_SIZE", "IMAGE_FEATURES"]
