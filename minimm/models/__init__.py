"""Layer 5: models, one module each, built from ``minimm.nn`` layers.

    multimodal   the article's CNN + LSTM classifier (§2.3, §3.2, §4.3 / §5.2)
    transformer  image patches + caption words in one Transformer, classified on [CLS] (§3.1, ViT)
    clip         two towers trained contrastively on (image, caption) pairs; zero-shot use
    captioner    an image-to-text decoder: CNN tokens as a prefix, sampling, a KV cache

A model module imports only ``minimm.nn``, ``minimm.functional`` and the layers below them.
"""
from .captioner import Captioner, caption_loss, teacher_forcing
from .multimodal import (EMBED_DIM, HIDDEN_SIZE, IMAGE_FEATURES, MODES, ImageBranch,
                         MultiModalModel, TextBranch)
from .transformer import MultiModalTransformer
from .clip import CLIP

__all__ = ["ImageBranch", "TextBranch", "MultiModalModel", "MultiModalTransformer", "CLIP",
           "Captioner", "caption_loss", "teacher_forcing", "MODES", "EMBED_DIM", "HIDDEN_SIZE",
           "IMAGE_FEATURES"]
