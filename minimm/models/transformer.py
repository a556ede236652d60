"""A multimodal Transformer classifier: image patches and caption words in one sequence.

The article's §3.1 describes a pretrained Transformer that handles several kinds of data,
and cites ViT ("an image is worth 16x16 words"). Here both modalities become tokens of one
sequence and the article's attention formulas (§4.1.1, §4.1.2) mix them:

    x = [ c ;  P(image) + E_pos^img + m_img ;  E_word[ids] + E_pos^txt + m_txt ]
          1        L_img = (32/p)² patches            T caption tokens
    h = TransformerEncoder(x, key_padding_mask = caption positions ≥ length)
    logits = h[:, 0] W + b                                     (the [CLS] token's output)

P is :class:`minimm.nn.PatchEmbedding` (4×4 patches of a 32×32 image → 64 tokens), c the
learned [CLS] token, E_pos learned position embeddings (one table per modality: patch
positions are a 2-D grid read row by row, word positions a 1-D order), m_img and m_txt
learned modality embeddings (BERT's segment embeddings: they tell the encoder which tokens
are pixels and which are words). The encoder is the pre-norm ``nn.TransformerEncoder``.
Padding after a caption's last word is hidden from every query by the key-padding mask,
and only the [CLS] output is read, so padding never changes the logits or the gradients.

mode "image" or "text" runs the same code with one part of the sequence absent.
"""
import numpy as np

from .. import backend
from .. import functional as F
from .. import nn
from ..nn import init

MODES = ("multimodal", "image", "text")
DEFAULTS = dict(d_model=128, depth=4, num_heads=4, patch_size=4, dim_ff=None, max_len=16,
                image_size=32, in_channels=3, dropout=0.0)


def key_padding_mask(lengths, T, xp=np):
    """(B, T) boolean, True at caption positions t ≥ lengths[b] (padding), PyTorch's
    convention for ``key_padding_mask``."""
    lengths = xp.asarray(backend.unwrap(lengths)).reshape(-1)
    return xp.arange(T)[None, :] >= lengths[:, None]


class MultiModalTransformer(nn.Module):
    """[CLS] + image patches + caption tokens → TransformerEncoder → Linear on [CLS].

    vocab_size: caption vocabulary (id 0 = <pad>); ignored in mode "image".
    num_classes: the head's outputs; 0 or None for no head (an encoder: forward returns the
    [CLS] features, as CLIP's towers use it).
    mode: "multimodal", "image" or "text". d_model, depth, num_heads, dim_ff (default
    4·d_model): the encoder. patch_size p: image_size must be a multiple of it. max_len:
    the longest caption. Parameters: ``cls`` (d_model,), ``patch`` (PatchEmbedding),
    ``pos_image`` (L_img, d_model), ``embed`` (Embedding), ``pos_text`` (max_len, d_model),
    ``modality`` (2, d_model) rows image and text, ``encoder``, ``head``.

    ``forward(images=None, ids=None, lengths=None)`` -> logits (B, num_classes), called as
    :class:`~minimm.models.MultiModalModel`; ``features(...)`` -> the [CLS] output (B, d).
    """

    def __init__(self, vocab_size, num_classes=10, mode="multimodal", d_model=128, depth=4,
                 num_heads=4, patch_size=4, dim_ff=None, max_len=16, image_size=32,
                 in_channels=3, dropout=0.0, rng=None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"MultiModalTransformer: mode must be one of {MODES}, got {mode!r}")
        if mode != "image" and (vocab_size is None or int(vocab_size) < 2):
            raise ValueError(f"MultiModalTransformer: mode {mode!r} needs vocab_size >= 2, got "
                             f"{vocab_size!r}")
        if int(image_size) % int(patch_size):
            raise ValueError(f"MultiModalTransformer: image_size={image_size} is not a "
                             f"multiple of patch_size={patch_size}")
        self.mode, self.num_classes = mode, int(num_classes or 0)
        self.vocab_size = int(vocab_size) if vocab_size is not None else 0
        self.d_model, self.depth, self.num_heads = int(d_model), int(depth), int(num_heads)
        self.patch_size, self.max_len = int(patch_size), int(max_len)
        self.image_size, self.in_channels = int(image_size), int(in_channels)
        self.dim_ff = int(dim_ff) if dim_ff else 4 * self.d_model
        self.dropout = float(dropout)
        d = self.d_model
        self.cls = nn.Parameter(init.normal((d,), 0.0, 0.02, rng))
        self.modality = nn.Parameter(init.normal((2, d), 0.0, 0.02, rng))
        self.patch = self.embed = self.pos_image = self.pos_text = None
        if mode in ("multimodal", "image"):
            self.patch = nn.PatchEmbedding(self.patch_size, self.in_channels, d, rng=rng)
            L_img = self.patch.num_patches(self.image_size, self.image_size)
            self.pos_image = nn.Parameter(init.normal((L_img, d), 0.0, 0.02, rng))
        if mode in ("multimodal", "text"):
            self.embed = nn.Embedding(self.vocab_size, d, rng=rng)
            self.embed.W.data *= np.float32(0.02)          # N(0, 1) -> N(0, 0.02²), as BERT
            self.pos_text = nn.Parameter(init.normal((self.max_len, d), 0.0, 0.02, rng))
        self.encoder = nn.TransformerEncoder(d, self.num_heads, self.dim_ff, self.depth,
                                             dropout=self.dropout, rng=rng)
        self.head = nn.Linear(d, self.num_classes, rng=rng) if self.num_classes else None

    # -- the token sequence -------------------------------------------------------------------
    def image_tokens(self, images):
        """P(images) + E_pos^img + m_img: (B, L_img, d_model)."""
        if images.ndim != 4 or images.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"MultiModalTransformer: expected images (B, {self.in_channels}, "
                             f"{self.image_size}, {self.image_size}), got {images.shape}")
        return self.patch(images) + self.pos_image + self.modality[0]

    def text_tokens(self, ids, lengths):
        """E_word[ids] + E_pos^txt + m_txt (B, T, d_model) and the padding mask (B, T)."""
        xp = backend.get_array_module(ids)
        ids = xp.asarray(backend.unwrap(ids))
        if ids.ndim != 2 or ids.shape[1] > self.max_len:
            raise ValueError(f"MultiModalTransformer: ids must be (B, T) with T <= max_len="
                             f"{self.max_len}, got shape {ids.shape}")
        B, T = ids.shape
        if lengths is None:
            padding = xp.zeros((B, T), dtype=bool)
        else:
            lengths = backend.to_numpy(lengths)
            if lengths.shape != (B,) or lengths.min(initial=0) < 0 or lengths.max(initial=0) > T:
                raise ValueError(f"MultiModalTransformer: lengths must be (B,) = ({B},) with "
                                 f"values in 0..{T}, got shape {lengths.shape}, values "
                                 f"{lengths.min(initial=0)}..{lengths.max(initial=0)}")
            padding = key_padding_mask(lengths, T, xp)
        tokens = self.embed(ids) + self.pos_text[:T] + self.modality[1]
        return tokens, padding

    def features(self, images=None, ids=None, lengths=None):
        """The [CLS] token's output h[:, 0] (B, d_model), after the final LayerNorm."""
        parts, masks = [], []
        if self.patch is not None:
            if images is None:
                raise ValueError(f"MultiModalTransformer({self.mode!r}): images are required")
            parts.append(self.image_tokens(images))
        if self.embed is not None:
            if ids is None:
                raise ValueError(f"MultiModalTransformer({self.mode!r}): caption ids are "
                                 f"required")
            words, padding = self.text_tokens(ids, lengths)
            parts.append(words)
            masks.append(padding)
        B = parts[0].shape[0]
        xp = backend.get_array_module(parts[0])
        cls = F.broadcast_to(F.reshape(self.cls, (1, 1, self.d_model)), (B, 1, self.d_model))
        x = F.concat([cls] + parts, axis=1)                        # (B, 1 + L_img + T, d)
        kpm = None
        if masks:                                                  # only caption tokens pad
            visible = xp.zeros((B, x.shape[1] - masks[0].shape[1]), dtype=bool)
            kpm = xp.concatenate([visible, masks[0]], axis=1)
        h = self.encoder(x, key_padding_mask=kpm)
        return h[:, 0]

    def forward(self, images=None, ids=None, lengths=None):
        h = self.features(images, ids, lengths)
        return self.head(h) if self.head is not None else h

    def attention_maps(self):
        """The last call's attention weights, one NumPy array (B, h, L, L) per layer."""
        return [backend.to_numpy(layer.attn.attn_weights) for layer in self.encoder.layers]

    # -- checkpoints --------------------------------------------------------------------------
    def config(self):
        """The constructor's arguments (numbers and strings), so :meth:`from_config` rebuilds
        the architecture from a checkpoint; "architecture" names the class."""
        return {"architecture": "transformer", "mode": self.mode,
                "vocab_size": self.vocab_size, "num_classes": self.num_classes,
                "d_model": self.d_model, "depth": self.depth, "num_heads": self.num_heads,
                "patch_size": self.patch_size, "dim_ff": self.dim_ff, "max_len": self.max_len,
                "image_size": self.image_size, "in_channels": self.in_channels,
                "dropout": self.dropout}

    @classmethod
    def from_config(cls, config, rng=None):
        kw = {k: type(v)(config[k]) if v is not None else int(config[k])
              for k, v in DEFAULTS.items() if k in config}
        return cls(int(config["vocab_size"]), int(config["num_classes"]), str(config["mode"]),
                   rng=rng, **kw)

    def extra_repr(self):
        return (f"mode={self.mode!r}, d_model={self.d_model}, depth={self.depth}, "
                f"num_heads={self.num_heads}, patch_size={self.patch_size}")


__all__ = ["MultiModalTransformer", "key_padding_mask"]
