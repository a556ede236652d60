"""CLIP-style contrastive image–text pretraining (Radford et al. 2021) and zero-shot use.

Two towers map each modality to one shared embedding space, trained without labels: a
batch of N (image, caption) pairs is scored all against all and the symmetric InfoNCE
(:func:`minimm.functional.clip_loss`) asks every image to pick its own caption among the N,
and every caption its own image:

    I = f_img(images) W_i,   T = f_txt(ids, lengths) W_t          (N, embed_dim) each
    L = clip_loss(I, T, s),  s = min(exp(t), 100)                t = log(1/0.07) at the start

f_img is the ViT of :class:`~minimm.models.MultiModalTransformer` in mode "image" (its
[CLS] output) or the article's CNN branch; f_txt its Transformer in mode "text" or the
article's LSTM branch. W_i, W_t are linear projections without bias; t is the learned
log-temperature (s = 1/τ), clipped at s = 100 as CLIP does so the softmax cannot become
arbitrarily sharp.

Zero-shot classification turns the text tower into a classifier with no training: each
class k is written into M prompt templates ("a picture of a {}", …), the M text
embeddings are normalised, averaged and renormalised into c_k, and an image is assigned
to the class with the largest cosine similarity Î·c_k. (A linear probe instead fits a
softmax regression on the frozen image features: :func:`minimm.experiments.clip.linear_probe`.)
"""
import math

import numpy as np

from .. import functional as F
from .. import nn
from ..nn import init
from .multimodal import IMAGE_FEATURES, ImageBranch, TextBranch
from .transformer import MultiModalTransformer

IMAGE_ENCODERS, TEXT_ENCODERS = ("vit", "cnn"), ("transformer", "lstm")


class FeatureBatchNorm(nn.Module):
    """y = (x − μ_B) / √(σ²_B + ε) · weight + bias for features x (N, C), statistics over the
    batch per feature (running estimates in evaluation), as ``torch.nn.BatchNorm1d``.

    Why the CNN tower needs it: the article's CNN ends in ReLU and max pooling, so at
    initialisation its 512 features are ≥ 0 and nearly the same for every image (on the
    stand-in their spread across images is under a tenth of their mean): all image embeddings
    point one way, every similarity in a batch is about equal, and the contrastive gradient
    shrinks those small differences further until the embeddings collapse to one point (loss
    exactly log N). Standardising each feature over the batch leaves only what differs between
    images. (A LayerNorm, per image over its features, does not remove a pattern every image
    shares; CLIP's own ResNet ends in attention pooling instead.)
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.weight = nn.Parameter(init.ones((num_features,)))
        self.bias = nn.Parameter(init.zeros((num_features,)))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(num_features, dtype=np.float32))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class CLIP(nn.Module):
    """Image tower + text tower, each projected to ``embed_dim``; a learned temperature.

    image_encoder: "vit" (patches + [CLS], sizes d_model, depth, num_heads, patch_size) or
    "cnn" (the article's Conv32-Pool-Conv64-Pool-Conv128-Pool, 512 features, then a
    :class:`FeatureBatchNorm`).
    text_encoder: "transformer" (same sizes, captions up to max_len) or "lstm" (the
    article's Embedding(64) + LSTM(128)). Parameters ``W_i`` (F_img, embed_dim), ``W_t``
    (F_txt, embed_dim), both N(0, 1/F) as CLIP's projections, and ``t`` (0-d), log(1/0.07).

    ``encode_image(images)`` (B, embed_dim) and ``encode_text(ids, lengths)`` (B, embed_dim)
    are not normalised (the loss and the zero-shot scores normalise them);
    ``forward(images, ids, lengths)`` returns both; ``logit_scale`` is s = min(e^t, 100).
    """

    def __init__(self, vocab_size, embed_dim=128, image_encoder="vit", text_encoder="transformer",
                 d_model=128, depth=4, num_heads=4, patch_size=4, max_len=16, image_size=32,
                 temperature=0.07, max_logit_scale=100.0, rng=None):
        super().__init__()
        if image_encoder not in IMAGE_ENCODERS or text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"CLIP: image_encoder must be one of {IMAGE_ENCODERS} and "
                             f"text_encoder one of {TEXT_ENCODERS}, got {image_encoder!r} and "
                             f"{text_encoder!r}")
        if not (temperature > 0 and max_logit_scale > 0):
            raise ValueError(f"CLIP: temperature and max_logit_scale must be positive, got "
                             f"{temperature} and {max_logit_scale}")
        self.vocab_size, self.embed_dim = int(vocab_size), int(embed_dim)
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.d_model, self.depth, self.num_heads = int(d_model), int(depth), int(num_heads)
        self.patch_size, self.max_len = int(patch_size), int(max_len)
        self.image_size = int(image_size)
        self.temperature, self.max_logit_scale = float(temperature), float(max_logit_scale)
        sizes = dict(d_model=self.d_model, depth=self.depth, num_heads=self.num_heads,
                     max_len=self.max_len, rng=rng)
        if image_encoder == "vit":
            self.image = MultiModalTransformer(None, None, "image", patch_size=self.patch_size,
                                               image_size=self.image_size, **sizes)
            F_img = self.d_model
        else:
            self.image = nn.Sequential(ImageBranch(rng), FeatureBatchNorm(IMAGE_FEATURES))
            F_img = IMAGE_FEATURES
        if text_encoder == "transformer":
            self.text = MultiModalTransformer(self.vocab_size, None, "text", **sizes)
            F_txt = self.d_model
        else:
            self.text = TextBranch(self.vocab_size, rng=rng)
            F_txt = self.text.out_features
        self.W_i = nn.Parameter(init.normal((F_img, self.embed_dim), 0.0, F_img ** -0.5, rng))
        self.W_t = nn.Parameter(init.normal((F_txt, self.embed_dim), 0.0, F_txt ** -0.5, rng))
        self.t = nn.Parameter(np.array(math.log(1.0 / self.temperature), dtype=np.float32))

    @property
    def logit_scale(self):
        """s = min(exp(t), max_logit_scale): a 0-d Tensor; no gradient once clipped."""
        return F.clip(F.exp(self.t), hi=self.max_logit_scale)

    def encode_image(self, images):
        """f_img(images) W_i: (B, embed_dim)."""
        return F.matmul(self.image(images), self.W_i)

    def encode_text(self, ids, lengths=None):
        """f_txt(ids, lengths) W_t: (B, embed_dim); padding past ``lengths`` is ignored."""
        h = self.text(None, ids, lengths) if self.text_encoder == "transformer" \
            else self.text(ids, lengths)
        return F.matmul(h, self.W_t)

    def forward(self, images, ids, lengths=None):
        """(I, T) = (encode_image(images), encode_text(ids, lengths)), for ``F.clip_loss``."""
        return self.encode_image(images), self.encode_text(ids, lengths)

    # -- zero-shot ----------------------------------------------------------------------------
    def class_embeddings(self, ids, lengths, num_classes):
        """c_k = normalize(mean_m normalize(T_{k,m})) (num_classes, embed_dim), from prompt
        ids (num_classes·M, T) written class by class (rows k·M … k·M + M − 1 are class k's
        M templates)."""
        T_e = F.normalize(self.encode_text(ids, lengths))
        K = int(num_classes)
        if T_e.shape[0] % K:
            raise ValueError(f"CLIP.class_embeddings: {T_e.shape[0]} prompts are not "
                             f"num_classes={K} classes × M templates")
        return F.normalize(F.mean(F.reshape(T_e, (K, -1, self.embed_dim)), axis=1))

    def zero_shot_logits(self, images, class_emb):
        """s · Î cᵀ (B, num_classes): the prediction is the nearest class embedding."""
        return F.clip_logits(self.encode_image(images), class_emb, self.logit_scale)

    # -- checkpoints --------------------------------------------------------------------------
    def config(self):
        return {"architecture": "clip", "vocab_size": self.vocab_size,
                "embed_dim": self.embed_dim, "image_encoder": self.image_encoder,
                "text_encoder": self.text_encoder, "d_model": self.d_model,
                "depth": self.depth, "num_heads": self.num_heads, "patch_size": self.patch_size,
                "max_len": self.max_len, "image_size": self.image_size,
                "temperature": self.temperature, "max_logit_scale": self.max_logit_scale}

    @classmethod
    def from_config(cls, config, rng=None):
        c = dict(config)
        ints = ("embed_dim", "d_model", "depth", "num_heads", "patch_size", "max_len",
                "image_size")
        kw = {k: int(c[k]) for k in ints if k in c}
        kw.update({k: float(c[k]) for k in ("temperature", "max_logit_scale") if k in c})
        kw.update({k: str(c[k]) for k in ("image_encoder", "text_encoder") if k in c})
        return cls(int(c["vocab_size"]), rng=rng, **kw)

    def extra_repr(self):
        return (f"image_encoder={self.image_encoder!r}, text_encoder={self.text_encoder!r}, "
                f"embed_dim={self.embed_dim}")


def decay_groups(model, weight_decay):
    """Two parameter groups for AdamW, as open_clip trains CLIP: the weight matrices decayed
    by ``weight_decay``; biases, norm gains, the [CLS] token, t (all < 2-D) and the token,
    position and modality embeddings not (decaying t would pull the temperature to 1)."""
    embeddings = ("embed.W", "pos_image", "pos_text", "modality")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or name.endswith(embeddings)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)},
            {"params": no_decay, "weight_decay": 0.0}]


__all__ = ["CLIP", "FeatureBatchNorm", "decay_groups", "IMAGE_ENCODERS", "TEXT_ENCODERS"]
