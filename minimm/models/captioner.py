"""An image goes in, text comes out: a small captioning decoder (GPT-4's shape).

    image (B, 3, 32, 32) ─ CNN (the article's branch, no Flatten) ─► feature map (B, 128, 2, 2)
        ─► P image tokens (B, P, d) by a Linear-GELU-Linear projector (:class:`ImageTokens`)
    [image tokens | <bos> w₁ … w_T] + positions ─► DecoderBlock × n (prefix-causal mask)
        ─► LayerNorm ─► Linear(d → vocab) at the caption positions: logits for w₁ … w_T <eos>

The image tokens are a *prefix* to the words: one sequence, one self-attention, the image
seen whole by every position, each word seeing only the words before it. The tokens come from
the whole map (``image_prefix="global"``, the default: ClipCap maps one image vector to a few
prefix tokens) or one per cell of it (``"cells"``: LLaVA feeds its patch features this way).
On CIFAR-10 the global prefix named the true class more often for the same training (10,000
images, 4 epochs: 0.46 against 0.36; README "Image to text"): a cell token can only be read
through weights shared by all cells, a global token has weights of its own for every cell, as
the classifier's Flatten + Linear. (The original Transformer instead keeps the image in an
encoder and lets each decoder layer attend to it by cross-attention; chapter 11 compares.)

Training is teacher forcing (:func:`teacher_forcing`): the decoder reads ``<bos> w₁ … w_T``
and is scored on ``w₁ … w_T <eos>`` — the targets shifted by one — with the loss over those
caption tokens only: the image prefix produces no targets and padding is ``IGNORE_INDEX``
(:func:`caption_loss`). Padding sits after the words, so by causality it never changes the
logits at real positions: no padding mask is needed.

Generation (:meth:`Captioner.generate`) writes one token at a time from ``<bos>``, greedily
or by seeded sampling, and stops at ``<eos>``; a :class:`~minimm.nn.KVCache` per layer makes
each step cost one token's work instead of the whole sequence's.
"""

import numpy as np

from .. import backend
from .. import functional as F
from .. import nn
from ..autograd import Tensor, no_grad
from ..data.loader import normalize_images
from ..nn import init
from ..nn.module import Parameter
from .multimodal import ImageBranch

IGNORE_INDEX = -100          # a target the loss skips (PyTorch's default ignore_index)
PAD_ID, BOS_ID, EOS_ID = 0, 2, 3   # as in minimm.data.caption_vocabulary(attributes=True)


class ImageTokens(nn.Module):
    """The image as P tokens in the decoder's width, from the conv stack of
    :class:`~minimm.models.ImageBranch` without its Flatten, (B, 3, 32, 32) -> (B, 128, 2, 2):

    * ``prefix="cells"`` (LLaVA's way): each cell of the map is a token — the 2×2 = 4 cells
      row-major, (B, 4, 128), or with ``num_tokens=16`` the 4×4 map before the last pooling —
      each mapped by LLaVA-1.5's projector Linear(128, d) · GELU · Linear(d, d) -> (B, P, d);
    * ``prefix="global"`` (ClipCap's way): the whole map flattened, the classifier's 512
      features, mapped by Linear(512, d) · GELU · Linear(d, P·d) to ``num_tokens`` tokens —
      every token a function of every cell, each with weights of its own.

    (GELU's tanh form, as in the decoder blocks.)"""

    features = 128

    def __init__(self, d_model, num_tokens=4, prefix="global", rng=None):
        super().__init__()
        if prefix not in ("cells", "global"):
            raise ValueError(f"ImageTokens: prefix must be 'cells' or 'global', got {prefix!r}")
        if prefix == "cells" and num_tokens not in (4, 16):
            raise ValueError(f"ImageTokens: num_tokens must be 4 (the 2×2 map) or 16 (4×4, "
                             f"before the last pooling) for cells, got {num_tokens}")
        if not 1 <= int(num_tokens) <= 64:
            raise ValueError(f"ImageTokens: num_tokens must be in 1..64, got {num_tokens}")
        self.num_tokens, self.prefix, self.d_model = int(num_tokens), prefix, int(d_model)
        layers = list(ImageBranch(rng))[:-1]                      # no Flatten
        self.cnn = nn.Sequential(*(layers[:-1] if prefix == "cells" and num_tokens == 16
                                   else layers))
        width = self.features if prefix == "cells" else 4 * self.features
        out = d_model if prefix == "cells" else self.num_tokens * d_model
        self.proj1 = nn.Linear(width, d_model, rng=rng)
        self.act = nn.GELU(approximate="tanh")
        self.proj2 = nn.Linear(d_model, out, rng=rng)

    def forward(self, images):
        fmap = self.cnn(images)                                   # (B, 128, 2, 2) or 4×4
        B, C, H, W = fmap.shape
        if self.prefix == "global":                               # (B, 512) -> (B, P, d)
            z = self.proj2(self.act(self.proj1(F.reshape(fmap, (B, C * H * W)))))
            return F.reshape(z, (B, self.num_tokens, self.d_model))
        tokens = F.transpose(F.reshape(fmap, (B, C, H * W)), 0, 2, 1)   # (B, H·W, 128)
        return self.proj2(self.act(self.proj1(tokens)))


def teacher_forcing(ids, lengths, bos_id=BOS_ID, eos_id=EOS_ID):
    """Decoder inputs and targets from captions padded after their words.

    ids (B, T) int, lengths (B,) -> inputs (B, T + 1) = ``<bos> w₁ … w_T`` (padding as it was)
    and targets (B, T + 1) = ``w₁ … w_L <eos>`` then ``IGNORE_INDEX``: the target at position
    t is the input at t + 1 (shifted by one), ``<eos>`` right after the last word."""
    ids = backend.unwrap(ids)
    xp = backend.get_array_module(ids)
    ids = ids.astype(xp.int64)
    lengths = xp.asarray(backend.unwrap(lengths)).astype(xp.int64)
    B, T = ids.shape
    if lengths.shape != (B,) or (B and (int(lengths.min()) < 0 or int(lengths.max()) > T)):
        raise ValueError(f"teacher_forcing: lengths must be (B,) = ({B},) in 0..{T}, got "
                         f"shape {lengths.shape}")
    inputs = xp.concatenate([xp.full((B, 1), bos_id, dtype=xp.int64), ids], axis=1)
    col = xp.arange(T + 1)[None, :]
    targets = xp.concatenate([ids, xp.zeros((B, 1), dtype=xp.int64)], axis=1)
    targets = xp.where(col == lengths[:, None], eos_id, targets)
    targets = xp.where(col > lengths[:, None], IGNORE_INDEX, targets)
    return inputs, targets


def _token_cross_entropy(logits, targets):
    """Mean cross-entropy over the targets that are not ``IGNORE_INDEX``."""
    return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)


def caption_loss(model, batch):
    """The loss contract of ``fit``: the mean cross-entropy per caption token (words and
    ``<eos>``; not the image prefix, not padding) under teacher forcing.

    Returns (loss, {"token_accuracy"}, {"nll", "tokens"}): the fraction of targets that the
    argmax predicts, and per caption the summed negative log-likelihood (nats) and the number
    of target tokens, so that ``exp(Σ nll / Σ tokens)`` is the exact per-token perplexity."""
    lengths = backend.to_numpy(batch["lengths"])
    T = int(lengths.max()) if lengths.size else 0                 # the batch's longest caption:
    inputs, targets = teacher_forcing(batch["ids"][:, :T], lengths, model.bos_id,  # padding
                                      model.eos_id)               # beyond it changes nothing
    logits = model(batch["images"], inputs)                       # (B, L, V)
    B, L, V = logits.shape
    flat, t = F.reshape(logits, (B * L, V)), targets.reshape(-1)
    loss = _token_cross_entropy(flat, t)
    with no_grad():
        xp = backend.get_array_module(targets)
        logp = F.log_softmax(flat, axis=-1).data                  # (B·L, V)
        kept = t != IGNORE_INDEX
        picked = logp[xp.arange(B * L), xp.where(kept, t, 0)]
        nll = -(picked * kept).reshape(B, L).sum(axis=1)
        hit = (logp.argmax(axis=-1) == t) & kept
        tokens = kept.reshape(B, L).sum(axis=1)
    accuracy = float(hit.sum()) / max(int(tokens.sum()), 1)
    return loss, {"token_accuracy": accuracy}, {"nll": nll, "tokens": tokens}


class Captioner(nn.Module):
    """A decoder that writes a caption for an image (module docstring).

    vocab_size: the table of :func:`minimm.data.caption_vocabulary` (``attributes=True``);
    ``bos_id``, ``eos_id``, ``pad_id`` its special tokens (2, 3, 0 there).
    d_model, num_heads, num_layers, dim_ff (default 4·d_model), dropout: the decoder.
    image_prefix, image_tokens: how the image becomes P tokens (:class:`ImageTokens`):
    "global": P tokens from all of the CNN's map, or "cells" of it, 4 (2×2) or 16 (4×4).
    max_len: the most tokens it writes (words and ``<eos>``); the position table covers the
    P image tokens, ``<bos>`` and max_len − 1 fed-back words.

    ``forward(images, tokens)``: images (B, 3, 32, 32), float32 normalised or uint8 (then
    normalised as in training), tokens (B, L) ids -> logits (B, L, vocab_size) at the caption
    positions (the prefix's are not computed).
    """

    def __init__(self, vocab_size, d_model=64, num_heads=4, num_layers=2, dim_ff=None,
                 max_len=32, dropout=0.0, image_tokens=4, image_prefix="global", bos_id=BOS_ID,
                 eos_id=EOS_ID, pad_id=PAD_ID, rng=None):
        super().__init__()
        if int(vocab_size) <= max(bos_id, eos_id, pad_id):
            raise ValueError(f"Captioner: vocab_size={vocab_size} must exceed the special "
                             f"ids (bos {bos_id}, eos {eos_id}, pad {pad_id})")
        if int(max_len) < 1:
            raise ValueError(f"Captioner: max_len must be >= 1, got {max_len}")
        self.vocab_size, self.d_model = int(vocab_size), int(d_model)
        self.num_heads, self.num_layers = int(num_heads), int(num_layers)
        self.max_len, self.dropout = int(max_len), float(dropout)
        self.dim_ff = int(dim_ff) if dim_ff else 4 * self.d_model
        self.bos_id, self.eos_id, self.pad_id = int(bos_id), int(eos_id), int(pad_id)
        self.image = ImageTokens(self.d_model, image_tokens, image_prefix, rng)
        self.num_prefix = self.image.num_tokens
        self.embed = nn.Embedding(self.vocab_size, self.d_model, rng=rng)
        # GPT-2's N(0, 0.02²) rather than N(0, 1): word vectors as small as the image tokens,
        # so the image is heard from the first step (with N(0, 1) the words drown it out)
        self.embed.W.data = init.normal(self.embed.W.shape, 0.0, 0.02, rng)
        self.W_pos = Parameter(init.normal((self.num_prefix + self.max_len, self.d_model),
                                           0.0, 0.02, rng))
        self.blocks = nn.Sequential(*[nn.DecoderBlock(self.d_model, self.num_heads, self.dim_ff,
                                                      self.dropout, rng=rng)
                                      for _ in range(self.num_layers)])
        self.norm = nn.LayerNorm(self.d_model)
        self.head = nn.Linear(self.d_model, self.vocab_size, rng=rng)

    # -- the decoder ------------------------------------------------------------------------
    def _decode(self, x, start=0, caches=None, keep_from=0):
        """x (B, L, d): the embedded sequence from absolute position ``start``, through the
        blocks (and their caches) -> logits (B, L − keep_from, V) of the positions from
        ``keep_from`` on (the others get no LayerNorm and no head)."""
        L = x.shape[1]
        if start + L > self.W_pos.shape[0]:
            raise ValueError(f"Captioner: position {start + L} exceeds the "
                             f"{self.W_pos.shape[0]} positions of max_len={self.max_len}")
        x = x + self.W_pos[start:start + L]
        xp = backend.get_array_module(x)
        # one new token after the prefix sees everything before it: no mask needed
        mask = (None if start >= self.num_prefix and L == 1
                else nn.prefix_causal_mask(self.num_prefix, L, start + L, start, xp))
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, cache=None if caches is None else caches[i])
        return self.head(self.norm(x[:, keep_from:] if keep_from else x))

    def encode_images(self, images):
        """The image prefix (B, P, d_model); uint8 images are normalised as in training."""
        return self.image(self._as_images(images))

    def forward(self, images, tokens):
        prefix = self.encode_images(images)
        x = F.concat([prefix, self.embed(tokens)], axis=1)       # (B, P + L, d)
        return self._decode(x, keep_from=self.num_prefix)        # the caption positions

    def loss(self, batch):
        """:func:`caption_loss` (what ``fit`` and ``evaluate`` call without a ``loss_fn``)."""
        return caption_loss(self, batch)

    def _as_images(self, images):
        params = self.parameters()
        device = params[0].device if params else "cpu"
        if isinstance(images, Tensor):
            return images
        images = backend.to_device(images, device)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Captioner: images must be (N, 3, H, W), got {images.shape}")
        if images.dtype == np.uint8:
            return Tensor(normalize_images(images))
        return Tensor(images.astype(backend.get_array_module(images).float32, copy=False))

    # -- generation -------------------------------------------------------------------------
    def generate(self, images, max_len=16, temperature=0.0, top_k=None, use_cache=True,
                 seed=None):
        """Write a caption for each image: token ids (N, T), T ≤ max_len, each row the
        words then ``<eos>`` then ``pad_id``; T is shorter than max_len when every row has
        stopped; ``<pad>`` and ``<bos>`` are never written (no caption target is either).
        temperature 0: greedy (argmax); > 0: sample from softmax(logits / temperature),
        among the ``top_k`` most likely tokens if given, with ``np.random.default_rng(seed)``.
        ``use_cache``: a KV cache per layer (the same result, less work per step)."""
        return self.generate_with_logits(images, max_len, temperature, top_k, use_cache,
                                         seed)[0]

    def generate_with_logits(self, images, max_len=16, temperature=0.0, top_k=None,
                             use_cache=True, seed=None):
        """:meth:`generate`, also returning the logits (N, T, vocab_size) float32 from which
        each step's token was chosen (for tests and pictures)."""
        self._check_generate(max_len, temperature, top_k)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                return self._generate(images, int(max_len), float(temperature), top_k,
                                      use_cache, np.random.default_rng(seed))
        finally:
            self.train(was_training)

    def _generate(self, images, max_len, temperature, top_k, use_cache, rng):
        prefix = self.encode_images(images)                        # (N, P, d)
        N, P = prefix.shape[0], prefix.shape[1]
        xp = backend.get_array_module(prefix)
        caches = [nn.KVCache(P + max_len) for _ in self.blocks] if use_cache else None
        fed = xp.full((N, 1), self.bos_id, dtype=xp.int64)        # the tokens read so far
        done = xp.zeros(N, dtype=bool)
        ids, logits = [], []
        for t in range(max_len):
            if not use_cache:                                       # the whole sequence again
                x, start = F.concat([prefix, self.embed(fed)], axis=1), 0
            elif t == 0:                                            # prefix and <bos>
                x, start = F.concat([prefix, self.embed(fed)], axis=1), 0
            else:                                                   # only the newest token
                x, start = self.embed(fed[:, -1:]), P + t
            step = self._decode(x, start, caches, keep_from=x.shape[1] - 1).data[:, 0]
            token = _choose(step, temperature, top_k, rng, banned=(self.pad_id, self.bos_id))
            token = xp.where(done, self.pad_id, token)
            done = done | (token == self.eos_id)
            ids.append(token)
            logits.append(step)
            if bool(done.all()):
                break
            fed = xp.concatenate([fed, token[:, None]], axis=1)
        return xp.stack(ids, axis=1), xp.stack(logits, axis=1)

    def _check_generate(self, max_len, temperature, top_k):
        if not 1 <= int(max_len) <= self.max_len:
            raise ValueError(f"Captioner.generate: max_len must be in 1..{self.max_len} (the "
                             f"model's max_len), got {max_len}")
        if not float(temperature) >= 0:
            raise ValueError(f"Captioner.generate: temperature must be >= 0, got {temperature}")
        if top_k is not None and not 1 <= int(top_k) <= self.vocab_size:
            raise ValueError(f"Captioner.generate: top_k must be None or in 1..vocab_size="
                             f"{self.vocab_size}, got {top_k}")

    def decode(self, ids, vocab):
        """Generated ids (N, T) -> captions (list of str): the words before ``<eos>``."""
        out = []
        for row in backend.to_numpy(ids).tolist():
            words = []
            for i in row:
                if i == self.eos_id:
                    break
                words.append(vocab.itos[i])
            out.append(" ".join(words))
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def config(self):
        """The constructor's arguments (saved with a checkpoint; :meth:`from_config`)."""
        return {"vocab_size": self.vocab_size, "d_model": self.d_model,
                "num_heads": self.num_heads, "num_layers": self.num_layers,
                "dim_ff": self.dim_ff, "max_len": self.max_len, "dropout": self.dropout,
                "image_tokens": self.num_prefix, "image_prefix": self.image.prefix,
                "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}

    @classmethod
    def from_config(cls, config, rng=None):
        keys = ("d_model", "num_heads", "num_layers", "dim_ff", "max_len", "image_tokens",
                "bos_id", "eos_id", "pad_id")
        kwargs = {k: int(config[k]) for k in keys if k in config}
        if "dropout" in config:
            kwargs["dropout"] = float(config["dropout"])
        if "image_prefix" in config:
            kwargs["image_prefix"] = str(config["image_prefix"])
        return cls(int(config["vocab_size"]), rng=rng, **kwargs)

    def extra_repr(self):
        return (f"vocab_size={self.vocab_size}, d_model={self.d_model}, "
                f"num_layers={self.num_layers}, num_heads={self.num_heads}, "
                f"max_len={self.max_len}")


def _choose(logits, temperature, top_k, rng, banned=()):
    """The next token per row of logits z (N, V), never one of ``banned``: the argmax at
    temperature 0; otherwise a draw from softmax(z / temperature) over the top_k largest z
    (ties at the k-th kept), by inverse CDF with one uniform per row from ``rng`` (on the
    host, so NumPy and CuPy draw the same tokens)."""
    xp = backend.get_array_module(logits)
    if banned:
        logits = logits.copy()
        logits[:, list(banned)] = -np.inf
    if temperature == 0:
        return logits.argmax(axis=-1).astype(xp.int64)
    z = backend.to_numpy(logits).astype(np.float64) / temperature
    if top_k is not None:
        kth = np.sort(z, axis=-1)[:, -int(top_k)][:, None]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    c = np.cumsum(p, axis=-1)
    u = (1.0 - rng.random(len(p))) * c[:, -1]                   # in (0, Σp]
    token = (c < u[:, None]).sum(axis=-1)                       # the first c_j ≥ u: p_j > 0
    return xp.asarray(token.astype(np.int64))


__all__ = ["Captioner", "ImageTokens", "caption_loss", "teacher_forcing",
           "IGNORE_INDEX", "PAD_ID", "BOS_ID", "EOS_ID"]
