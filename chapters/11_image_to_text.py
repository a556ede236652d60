# %% [markdown]
# # 11. Image to text: a captioning decoder
#
# The article **"多模态大模型：技术原理与实战"** opens with GPT-4: a model that *looks at an
# image and writes*. Every model of this book so far ends in a classifier — the image goes in, a
# class comes out. This chapter builds the generative half, from scratch and small enough to
# train on two CPU cores: a **decoder** that writes a caption for an image, one word at a time.
#
# 1. captions worth generating: what the pixels say (colour, brightness, where the object sits)
#    beside the class, and what a writer that ignores the image can reach;
# 2. the autoregressive factorisation $p(w_1\dots w_T\mid\text{image})=\prod_t p(w_t\mid
#    w_{<t},\text{image})$ and the per-token perplexity;
# 3. how the words see the image — as a **prefix** (LLaVA) or through **cross-attention** (the
#    original Transformer) — and the causal mask;
# 4. teacher forcing, the masked loss and its gradient, exposure bias;
# 5. training through the same `fit` as chapter 8;
# 6. sampling: greedy, temperature, top-k, with a picture of what temperature does;
# 7. the **KV cache**: why it changes nothing, and what it saves per step;
# 8. example images with the captions the model writes.
#
# The code: `minimm/models/captioner.py` (the model, the loss, generation),
# `minimm/nn/decoder.py` (the decoder block and the cache), `minimm/data/captions.py` (the
# captions) and `minimm/experiments/captioning.py` (the metrics, the command line).

# %%
import os
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import nn
from minimm.data import CLASSES, captions, cifar10
from minimm.experiments.captioning import caption_data, generation_metrics, perplexity
from minimm.models import Captioner, caption_loss, teacher_forcing
from minimm.models.captioner import IGNORE_INDEX
from minimm.train import evaluate, fit

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: a small stand-in, 1 layer
SEED = 0
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 11.1 Captions worth generating
#
# The captions of chapter 8 name a class (or a wrong one, or none): to write one, a model only
# has to classify. Here every caption names the **true** class and also states three facts
# computed from the image's own pixels (`captions.pixel_attributes`), with $r, g, b \in [0, 1]$
# per pixel:
#
# * **colour** — the dominant hue. Chroma $C = \max(r,g,b) - \min(r,g,b)$ and the HSV hue $H$;
#   the hue circle is cut into red $[300°, 20°)$, brown $[20°, 50°)$, yellow $[50°, 80°)$, green
#   $[80°, 170°)$ and blue $[170°, 300°)$, and the colour is the sector with the largest total
#   chroma $\sum C$ — or "grey" when the mean chroma is below 0.06;
# * **brightness** — the mean luma $Y = 0.299r + 0.587g + 0.114b$: "dark" if $Y < 0.40$,
#   "bright" if $Y > 0.55$, no word otherwise;
# * **position** — the background is the mean colour of the 2-pixel border, each pixel weighs
#   $w = \lVert (r,g,b) - \text{background}\rVert^2$, and the object's column is the centroid
#   $\bar x = \sum w x / \sum w$: "on the left" if it is more than 1.5 pixels left of the
#   centre, "on the right" if more than 1.5 pixels right of it, no words otherwise.
#
# The templates and synonyms of chapter 8 stay ("a blurry photo of a dark blue jet on the left"),
# so a caption is still partly random: 6 templates and 2–4 synonyms per class that no image can
# predict.
#
# **The data.** Real CIFAR-10 if the environment variable `MINIMM_CIFAR10` points at the archive
# (and not in quick mode); otherwise a labelled **synthetic stand-in**: a coloured blob on a
# background, left, centred or right, and a small coloured **badge** at the top whose colour
# codes the class — so that the class can be learned in the seconds quick mode has.

# %%
BADGE = np.array([[230, 40, 40], [40, 200, 40], [40, 40, 230], [230, 230, 40], [200, 40, 200],
                  [40, 200, 200], [240, 140, 40], [255, 255, 255], [120, 120, 120], [0, 0, 0]])


def stand_in_images(n, seed):
    # (n, 3, 32, 32) uint8 and labels: a random-coloured blob at x = 9, 15.5 or 22 on a random
    # grey background, a badge (8 x 6 pixels, top centre) in the class's colour, pixel noise
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    yy, xx = np.mgrid[0:32, 0:32]
    centre = rng.choice([9.0, 15.5, 22.0], n)
    blob = np.exp(-((xx - centre[:, None, None]) ** 2 + (yy - 18) ** 2) / (2 * 6.0 ** 2))
    colour = rng.uniform(20, 235, (n, 3, 1, 1))
    background = rng.uniform(0.2, 1.0, (n, 1, 1, 1)) * 140
    images = background + blob[:, None] * (colour - background)
    images[:, :, 3:9, 12:20] = BADGE[labels][:, :, None, None]
    images += 12 * rng.standard_normal((n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


path = None if QUICK else os.environ.get("MINIMM_CIFAR10")
if path:
    (x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(path=path, download=False)
    N_TRAIN, N_TEST, EPOCHS = 20_000, 1_000, 4
    x_train, y_train, x_test, y_test = x_train[:N_TRAIN], y_train[:N_TRAIN], x_test[:N_TEST], \
        y_test[:N_TEST]
    print(f"real CIFAR-10 from {path}: {N_TRAIN} train / {N_TEST} test images")
else:
    N_TRAIN, N_TEST, EPOCHS = 6_000, 300, 3
    x_train, y_train = stand_in_images(N_TRAIN, seed=100 + SEED)
    x_test, y_test = stand_in_images(N_TEST, seed=200 + SEED)
    print("NOTE: a SYNTHETIC STAND-IN for CIFAR-10, not the real data"
          + (" (quick mode)" if QUICK else " (set MINIMM_CIFAR10 for the real one)")
          + f": {N_TRAIN} train / {N_TEST} test images; the class is the colour of the badge")

vocab = captions.caption_vocabulary(attributes=True)
train_set = caption_data(x_train, y_train, caption_seed=SEED, vocab=vocab)     # 16 ids each
test_set = caption_data(x_test, y_test, caption_seed=SEED + 1, vocab=vocab)
references = [" ".join(vocab.decode(ids)) for ids in test_set["ids"]]
print(vocab, "| <pad> <unk> <bos> <eos> =",
      [vocab[w] for w in ("<pad>", "<unk>", "<bos>", "<eos>")])

# %%
fig, axes = plt.subplots(1, 6, figsize=(13, 2.8))
for ax, i in zip(axes, range(6)):
    ax.imshow(x_test[i].transpose(1, 2, 0))                      # CHW -> HWC for imshow
    ax.set_title(textwrap.fill(references[i], 24), fontsize=8)
    ax.set_xlabel(CLASSES[y_test[i]], fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle("Test images and their reference captions (the true class below each)")
plt.tight_layout(); plt.show()

# %% [markdown]
# **What text alone can reach.** A writer that never looks at the image can at best write the
# most frequent value of each attribute; and since a caption is a one-to-one function of its
# random draws — template $t$ (6, uniform), synonym $s$ (uniform among its class's $n_c$), class
# $c$ and attributes $a$ — its entropy is $H = \log 6 + \mathbb E[\log n_c] + H(c, a)$. A
# writer that reads class and attributes off the image pays only the first two terms; one that
# cannot pays all three. Per token ($T$ words and `<eos>`), the lowest reachable perplexities are
# $\exp(H/\mathbb E[T+1])$ with and without $H(c,a)$ (`captions.perplexity_floor`):

# %%
truth = captions.pixel_attributes(x_test)
majority = captions.majority_rates({"class": y_test, **truth})
for name, (word, rate) in majority.items():
    shown = CLASSES[int(word)] if name == "class" else (word or "(no word)")
    print(f"{name:>10}: the most frequent value {shown!r:12} is right {rate:.3f} of the time")
floor = captions.perplexity_floor(references, y_test, truth)
print(f"perplexity floor per token: {floor['with_image']:.3f} with the image, "
      f"{floor['text_only']:.3f} from text alone")

# %% [markdown]
# ## 11.2 Writing one word at a time
#
# A caption is a sequence $w_1 \dots w_T$ followed by an end token; by the chain rule of
# probability, *any* distribution over sequences factorises as
#
# $$p(w_1, \dots, w_T, \langle\text{eos}\rangle \mid I) = \prod_{t=1}^{T+1}
#   p(w_t \mid w_{<t}, I), \qquad w_{T+1} = \langle\text{eos}\rangle .$$
#
# So a model that gives the distribution of the **next** word, given the image $I$ and the words
# so far, gives the probability of a whole caption — and can write one: pick $w_1$, feed it back,
# pick $w_2$, … until it picks `<eos>`. The end token makes the length part of what is learned.
# Training maximises the log-likelihood $\sum_t \log p(w_t\mid w_{<t}, I)$, i.e. minimises the
# cross-entropy per token, and the usual score is the **per-token perplexity**
#
# $$\text{PPL} = \exp\Big(-\frac{1}{N}\sum_{\text{captions}}\sum_{t} \log p(w_t \mid w_{<t}, I)
#   \Big),\qquad N = \text{the number of tokens},$$
#
# the size of a uniform choice that would be as surprising: an untrained model sits near the
# vocabulary size, a perfect one at the floors above.

# %% [markdown]
# ## 11.3 How the words see the image: a prefix or cross-attention
#
# **The image as a prefix (LLaVA's way, used here).** The image becomes $P$ tokens in the
# decoder's width. The CNN of chapter 8 without its Flatten gives a $128 \times 2 \times 2$ map;
# there are two common ways to turn it into tokens (`ImageTokens`):
#
# * **cells** — each of the $2\times2$ cells is a token, a small MLP (LLaVA-1.5's projector,
#   Linear–GELU–Linear) mapping its 128 numbers to $d$ — LLaVA feeds its ViT's patch features
#   this way;
# * **global** (the default here) — the whole map, the classifier's 512 features, goes through
#   Linear–GELU–Linear to $P\cdot d$ numbers, cut into $P$ tokens — as ClipCap turns one image
#   embedding into a few prefix tokens.
#
# A cell token is read through weights shared by every cell, so telling *which* cell holds what
# is left to the position embeddings and attention; a global token has weights of its own for
# every cell, as the classifier's Flatten + Linear has. On CIFAR-10 this mattered: trained on the
# same 10,000 images for 4 epochs, the global prefix named the true class in 46 % of its
# captions, the cells in 36 % (README, "Image to text").
#
# The tokens are put **in front of** the word embeddings, and one stack of self-attention
# blocks runs over the whole sequence
# $[v_1 \dots v_P, e(\langle\text{bos}\rangle), e(w_1), \dots]$ with the mask
#
# $$M_{ij} = [\, j \le i \,] \ \lor\ [\, j < P \,]:$$
#
# every position sees the whole image and the words before it — never a word after it, which is
# what makes $p(w_t \mid w_{<t}, I)$ a distribution over the *next* word. The logits are read
# at the word positions only.
#
# **The original Transformer's way: cross-attention.** The image stays outside the sequence, as
# an encoder's output $V \in \mathbb R^{P\times d}$, and every decoder block gets a third
# sub-layer between self-attention and the MLP, whose queries come from the words and keys and
# values from the image:
#
# $$x \leftarrow x + \operatorname{Attention}(\operatorname{LN}(x) W_q,\ V W_k,\ V W_v) W_o .$$
#
# What changes: cross-attention costs $T\cdot P$ scores per block instead of $(P+T)^2$ and runs
# the MLP on $T$ positions instead of $P+T$, but needs its own $W_q, W_k, W_v, W_o$ in every
# block; the image's keys and values are computed once and reused at every step of writing. A
# prefix needs nothing new — any decoder-only language model can read an image this way, which is
# why LLaVA (and GPT-4-style systems built on a pretrained language model) use it. With $P = 4$
# image tokens and captions of about 10 words, the two cost about the same here.
#
# Our model: $P = 4$ global tokens, $d = 64$, 2 blocks of 4 heads (on the real data; quick mode
# uses 1 block).

# %%
P = 4
L = 8
M = nn.prefix_causal_mask(P, P + L, P + L)
fig, ax = plt.subplots(figsize=(4.6, 4.2))
ax.imshow(M, cmap="Greens", vmin=0, vmax=1.3)
labels = [f"v{i + 1}" for i in range(P)] + ["<bos>"] + [f"w{t}" for t in range(1, L)]
ax.set_xticks(range(P + L), labels, rotation=90, fontsize=8)
ax.set_yticks(range(P + L), labels, fontsize=8)
ax.axvline(P - 0.5, color="k", lw=0.8), ax.axhline(P - 0.5, color="k", lw=0.8)
ax.set(xlabel="key (what is seen)", ylabel="query (who looks)",
       title="Prefix-causal mask: green = may attend")
plt.tight_layout(); plt.show()

# %%
d_model, layers = (64, 1) if not path else (64, 2)
model = Captioner(len(vocab), d_model=d_model, num_heads=4, num_layers=layers,
                  rng=np.random.default_rng(SEED))
print(model)
print(f"{sum(p.data.size for p in model.parameters()):,} parameters, "
      f"of which {sum(p.data.size for p in model.image.cnn.parameters()):,} in the CNN; "
      f"image prefix: {model.num_prefix} {model.image.prefix} tokens")

with mm.no_grad():
    batch = {k: v[:2] for k, v in test_set.items()}
    inputs, targets = teacher_forcing(batch["ids"], batch["lengths"])
    prefix = model.encode_images(batch["images"])
    print("image tokens  ", prefix.shape, "| decoder inputs", inputs.shape,
          "| logits", model(batch["images"], inputs).shape)
for row_in, row_out in zip(inputs, targets):
    print(" reads:", " ".join(vocab.itos[i] for i in row_in))
    print(" aims: ", " ".join("·" if i == IGNORE_INDEX else vocab.itos[i] for i in row_out))

# %% [markdown]
# ## 11.4 Teacher forcing and the masked loss
#
# **Teacher forcing.** In training the decoder does not read its own words but the reference's:
# it reads `<bos>` $w_1 \dots w_T$ and is scored on $w_1 \dots w_T$ `<eos>` — the same caption
# shifted by one (printed above: "·" marks padding). The mask makes this one pass for all $T+1$
# predictions at once, each seeing only its past.
#
# **The masked loss.** Only caption tokens count: the image prefix has no targets (its logits are
# not even computed) and padding targets are `ignore_index` $= -100$. With $\mathcal K$ the set
# of kept positions, logits $z_t$ and targets $y_t$,
#
# $$\mathcal L = -\frac{1}{|\mathcal K|}\sum_{t\in\mathcal K}
# \log \operatorname{softmax}(z_t)_{y_t}, \qquad \frac{\partial \mathcal L}{\partial z_t} =
# \begin{cases} \big(\operatorname{softmax}(z_t) - \operatorname{onehot}(y_t)\big)/|\mathcal K| &
# t \in \mathcal K,\\ 0 & \text{otherwise.}\end{cases}$$
#
# The mean is over *tokens*, not captions (PyTorch's `ignore_index` convention): a long caption
# weighs more than a short one. Padding gets exactly zero gradient — checked here on the
# untrained model, against the formula:

# %%
from minimm.models.captioner import _token_cross_entropy   # F.cross_entropy(..., ignore_index)

with mm.no_grad():
    z0 = model(batch["images"], inputs).data                      # (2, T+1, V)
B_, T_, V_ = z0.shape
z = mm.tensor(z0.reshape(-1, V_), requires_grad=True)
flat_targets = targets.reshape(-1)
loss = _token_cross_entropy(z, flat_targets)
loss.backward()
kept = flat_targets != IGNORE_INDEX
p = np.exp(z0.reshape(-1, V_) - z0.reshape(-1, V_).max(1, keepdims=True))
p /= p.sum(1, keepdims=True)
expected = (p - np.eye(V_)[np.where(kept, flat_targets, 0)]) * kept[:, None] / kept.sum()
grad_error = float(np.abs(z.grad.numpy() - expected).max())
print(f"loss {loss.item():.4f} (log V = {np.log(V_):.4f}) | {kept.sum()} kept tokens of "
      f"{kept.size} | max |autograd − formula| = {grad_error:.1e} | gradient at padding: "
      f"{np.abs(z.grad.numpy()[~kept]).max():.1f}")

# %% [markdown]
# The decoder block itself — pre-norm self-attention under the prefix-causal mask, then the MLP
# with GPT-2's GELU — is checked end to end against finite differences in float64, every
# parameter and the input at once (random directions):

# %%
block = nn.DecoderBlock(8, 2, 16, rng=np.random.default_rng(1))
for prm in block.parameters():
    prm.data = prm.data.astype(np.float64)
names = [n for n, _ in block.named_parameters()]
mask = nn.prefix_causal_mask(2, 5, 5)


def block_with(x, *values):
    owners = []
    for name, v in zip(names, values):
        owner, attr = block, name.split(".")
        for part in attr[:-1]:
            owner = getattr(owner, part)
        owners.append((owner, attr[-1], getattr(owner, attr[-1])))
        object.__setattr__(owner, attr[-1], v)
    try:
        return block(x, mask=mask)
    finally:
        for owner, attr, old in owners:
            object.__setattr__(owner, attr, old)


x64 = np.random.default_rng(2).standard_normal((2, 5, 8))
values = [prm.data.copy() for prm in block.parameters()]
print("gradcheck:", mm.gradcheck(block_with, [x64] + values, mode="random", n_directions=6))

# %% [markdown]
# **Exposure bias.** Teacher forcing trains each prediction on a *perfect* past. When the model
# writes, its past is its own words — and after its first mistake it is in a situation it never
# met in training, where errors can compound. (Remedies exist — scheduled sampling feeds the
# model its own predictions during training with a growing probability — but short captions
# suffer little; section 11.5 measures how much the model's confidence drops after one wrong
# word.)
#
# ## 11.5 Training through `fit`
#
# The same `fit` as chapter 8, with the loss contract `loss_fn(model, batch) -> (loss, logs,
# outputs)`: `caption_loss` returns the mean token loss, the teacher-forced token accuracy as a
# log, and per caption its summed negative log-likelihood and its number of tokens, so that the
# perplexity over the test set is exact: $\exp(\sum \text{nll} / \sum \text{tokens})$.

# %%
t0 = time.perf_counter()
history = fit(model, train_set, test_set, EPOCHS, mm.optim.Adam(model.parameters(), lr=2e-3),
              loss_fn=caption_loss, batch_size=32, progress=False, seed=SEED)
train_seconds = time.perf_counter() - t0
result = evaluate(model, test_set, caption_loss)
ppl = perplexity(result)
print(f"{EPOCHS} epochs in {train_seconds:.1f} s | test perplexity {ppl:.3f} | teacher-forced "
      f"token accuracy {result['token_accuracy']:.3f}")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
epochs = history.epoch
ax1.plot(epochs, history.history["loss"], "o-", label="train")
ax1.plot(epochs, history.history["val_loss"], "s-", label="test")
ax1.axhline(np.log(floor["with_image"]), color="gray", ls=":", label="floor (with image)")
ax1.axhline(np.log(floor["text_only"]), color="gray", ls="--", label="floor (text only)")
ax1.set(xlabel="epoch", ylabel="cross-entropy per token (nats)", title="Loss", xticks=epochs)
ax1.legend(fontsize=8)
ax2.plot(epochs, history.history["token_accuracy"], "o-", label="train")
ax2.plot(epochs, history.history["val_token_accuracy"], "s-", label="test")
ax2.set(xlabel="epoch", ylabel="next-token accuracy (teacher forced)", ylim=(0, 1),
        title="Next-token accuracy", xticks=epochs)
ax2.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# Now let it write (greedy, with the cache) and read what it wrote:

# %%
gen = generation_metrics(model, x_test, y_test, vocab)
print(f"captions naming the true class: {gen['names_true_class']:.3f} "
      f"(text alone: {majority['class'][1]:.3f})")
print(f"{'attribute':>10} {'accuracy':>9} {'majority':>9}")
for a in captions.ATTRIBUTES:
    print(f"{a:>10} {gen['attribute_accuracy'][a]:>9.3f} {gen['attribute_majority_rate'][a]:>9.3f}")

# %% [markdown]
# Exposure bias, measured: the probability the model gives to each reference token with the
# true past, and with one earlier word replaced by a random word of the vocabulary (the kind of
# past a mistake creates). The geometric mean per token, over the positions after the swap:

# %%
rng = np.random.default_rng(SEED)
inputs, targets = teacher_forcing(test_set["ids"], test_set["lengths"])
swap = 2                                                   # replace the 2nd word
corrupt = inputs.copy()
corrupt[:, swap] = rng.integers(4, len(vocab), len(corrupt))
after = (np.arange(targets.shape[1])[None, :] >= swap) & (targets != IGNORE_INDEX)


def mean_log_p(tokens):
    with mm.no_grad():
        logits = model(test_set["images"], tokens).data
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, np.where(after, targets, 0)[..., None], -1)[..., 0]
    return float(picked[after].mean())


clean, dirty = mean_log_p(inputs), mean_log_p(corrupt)
print(f"p(reference token) after position {swap}: {np.exp(clean):.3f} with the true past, "
      f"{np.exp(dirty):.3f} after one random word")

# %% [markdown]
# ## 11.6 Sampling: greedy, temperature, top-k
#
# To write, the decoder turns each step's logits $z$ into a token:
#
# * **greedy** — $w_t = \arg\max_j z_j$: deterministic, the single most likely word each step
#   (not the most likely *caption*: that would need a search over sequences, e.g. beam search);
# * **temperature** $\tau > 0$ — sample from $\operatorname{softmax}(z/\tau)$: $\tau < 1$
#   sharpens the distribution towards greedy ($\tau \to 0$), $\tau > 1$ flattens it towards
#   uniform ($\tau \to \infty$); the ranking of the words never changes, only how much mass the
#   top ones get;
# * **top-k** — keep the $k$ largest logits, set the rest to $-\infty$, then sample: no word
#   outside the $k$ best can ever be written, however flat $\tau$ makes the rest.
#
# `generate(images, max_len=16, temperature=0.0, top_k=None, use_cache=True, seed=None)` does
# all three (the draws use `np.random.default_rng(seed)`: the same seed, the same captions). Below,
# the distribution at the step where the model names the class, for one test image:

# %%
ids, step_logits = model.generate_with_logits(x_test[:1])
words = [vocab.itos[i] for i in ids[0]]
class_words = {w for syns in captions.SYNONYMS for w in syns}
t_class = next((t for t, w in enumerate(words) if w in class_words), len(words) - 1)
z_step = step_logits[0, t_class].astype(np.float64)
top = np.argsort(-z_step)[:8]
fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), sharey=True)
for ax, (tau, k) in zip(axes, [(0.5, None), (1.0, None), (2.0, None), (2.0, 3)]):
    zz = z_step / tau
    if k:
        zz = np.where(zz >= np.sort(zz)[-k], zz, -np.inf)
    prob = np.exp(zz - zz.max())
    prob /= prob.sum()
    ax.bar(range(8), prob[top], color=["C1" if prob[j] > 0 else "C7" for j in top])
    ax.set_xticks(range(8), [vocab.itos[j] for j in top], rotation=60, fontsize=8)
    ax.set(title=f"τ = {tau}" + (f", top-{k}" if k else ""), xlabel="next word (8 most likely)")
axes[0].set_ylabel("probability")
fig.suptitle(f"How temperature reshapes the next-word distribution after "
             f"'{' '.join(words[:t_class])}'")
plt.tight_layout(); plt.show()

for tau, k in [(0.0, None), (0.7, None), (1.5, None), (1.5, 5)]:
    out = model.decode(model.generate(np.repeat(x_test[:1], 3, axis=0), temperature=tau,
                                      top_k=k, seed=SEED), vocab)
    print(f"τ = {tau}, top-k = {k}: {out}")

# %% [markdown]
# ## 11.7 The KV cache
#
# Written naively, step $t$ runs the whole sequence of $P + t$ tokens through the decoder again
# to get one new distribution. But the keys and values of the first $P + t - 1$ positions are
# *exactly* those of the step before: by the mask, a position never sees what comes after it, so
# nothing new changes them. The cache keeps each block's keys and values (`nn.KVCache`,
# preallocated buffers written in place); a step then projects only its one new token and
# attends to the stored keys. Per step and block, with width $d$:
#
# | | without cache | with cache |
# |---|---|---|
# | projections and MLP | $(P+t)\cdot 12 d^2$ | $12 d^2$ |
# | attention scores and sums | $(P+t)^2 \cdot 2d$ | $(P+t)\cdot 2d$ |
# | memory kept | none | $2 (P+t) d$ per block |
#
# so writing $T$ tokens costs $\sum_t (P+t) \approx T^2/2$ token-passes without the cache and
# $T$ with it. The result must not change — not just the final tokens but the logits at every
# step:

# %%
for n in (1, 4):
    with_cache = model.generate_with_logits(x_test[:n], use_cache=True)
    without = model.generate_with_logits(x_test[:n], use_cache=False)
    gap = float(np.abs(with_cache[1] - without[1]).max())
    same = bool(np.array_equal(with_cache[0], without[0]))
    print(f"batch {n}: {with_cache[0].shape[1]} steps, max |Δ logits| = {gap:.1e}, "
          f"same tokens: {same}")
cache_gap, cache_same = gap, same

# %% [markdown]
# What it saves: an untrained model of the same size (its `<eos>` made unreachable, so every
# caption runs to the full length) writes for 16 images, with and without the cache. The time
# without the cache grows like $T^2$, with it like $T$ (the CNN, the same in both, is a fixed
# cost). `tools/bench_kv_cache.py` measures this at lengths 16 and 64 for the README.

# %%
lengths = (4, 8, 16, 32) if QUICK else (8, 16, 32, 64)
timer = Captioner(len(vocab), d_model=d_model, num_heads=4, num_layers=layers,
                  max_len=max(lengths), rng=np.random.default_rng(1))
timer.eos_id = -1                                        # never written: full-length captions
few = x_test[:16]
seconds = {True: [], False: []}
for T in lengths:
    for use_cache in (True, False):
        t0 = time.perf_counter()
        timer.generate(few, max_len=T, use_cache=use_cache)
        seconds[use_cache].append(time.perf_counter() - t0)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(lengths, 1000 * np.array(seconds[False]), "s-", label="without cache")
ax1.plot(lengths, 1000 * np.array(seconds[True]), "o-", label="with cache")
ax1.set(xlabel="caption length T (tokens)", ylabel="time to write 16 captions (ms)",
        title="generate(): total time", xticks=lengths)
ax1.legend()
speedup = np.array(seconds[False]) / np.array(seconds[True])
ax2.plot(lengths, speedup, "^-", color="C2")
ax2.set(xlabel="caption length T (tokens)", ylabel="speed-up (without / with)",
        title="What the cache saves", xticks=lengths)
plt.tight_layout(); plt.show()
print("speed-up by length:", dict(zip(lengths, speedup.round(2))))

# %% [markdown]
# ## 11.8 Examples
#
# Test images with the caption the model writes (greedy) above the reference:

# %%
fig, axes = plt.subplots(2, 5, figsize=(15, 8.5))
written = gen["captions"]
for ax, i in zip(axes.ravel(), range(10)):
    ax.imshow(x_test[i].transpose(1, 2, 0))
    ax.set_title(textwrap.fill("wrote: " + written[i], 30) + "\n"
                 + textwrap.fill("ref: " + references[i], 30), fontsize=8, loc="left")
    ax.set_xlabel(f"true class: {CLASSES[y_test[i]]}", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 11.9 At full scale
#
# The command line trains the same model on all of CIFAR-10 and writes with it:
#
# ```
# python -m minimm train --model captioner --data cifar-10-binary.tar.gz --out runs/captioner
# python -m minimm caption --checkpoint runs/captioner/model.npz --data ... --count 8
# python -m minimm caption --checkpoint runs/captioner/model.npz --image my_photo.jpg
# ```
#
# `metrics.json` holds the per-token test perplexity, the fraction of captions naming the true
# class, and each attribute's accuracy beside its majority rate. The README's section "Image to
# text" gives the figures measured on a 2-core CPU, against the image-only CNN classifier trained
# for the same time, and the KV cache's speed-up at lengths 16 and 64.
#
# ## Summary
#
# * A caption's probability factorises into next-word distributions,
#   $\prod_t p(w_t\mid w_{<t}, I)$; `<eos>` makes the length part of it; perplexity is the
#   exponentiated mean negative log-likelihood per token.
# * The image enters as a prefix of $P$ projected CNN tokens (LLaVA) under a prefix-causal mask;
#   cross-attention (the original Transformer) is the alternative, with per-block parameters and
#   cheaper attention.
# * Teacher forcing trains all positions in one pass on the shifted caption; the loss counts
#   caption tokens only: $\partial\mathcal L/\partial z_t = (\operatorname{softmax}(z_t) -
#   \operatorname{onehot}(y_t))/|\mathcal K|$ on them, 0 on padding. Writing from its own words
#   exposes the model to pasts it never trained on.
# * Greedy, temperature and top-k turn logits into words; temperature only reshapes, top-k
#   truncates.
# * The KV cache is exact (by causality) and turns $O(T^2)$ token-passes into $O(T)$.
#
# ## Exercises
#
# 1. Show that with $\tau \to 0$ sampling from $\operatorname{softmax}(z/\tau)$ becomes greedy,
#    and with $\tau \to \infty$ uniform. What does top-$k$ with $k = 1$ do at any $\tau$?
# 2. Greedy decoding does not find the most probable caption. Construct a two-step example where
#    the greedy first word leads to a less probable caption than the other, and sketch beam
#    search with beam width 2.
# 3. Add cross-attention: write a `CrossAttentionBlock` with a third sub-layer whose keys and
#    values come from the image tokens, and a cache that computes them once. Compare its cost per
#    step with the prefix model's for $P = 4$ and $P = 64$.
# 4. The loss averages over tokens. Write the version that averages each caption's loss first
#    and then over captions. Which captions gain weight, and what happens to the gradient of a
#    padding position?
# 5. Scheduled sampling: during training, replace each input word by the model's own greedy
#    prediction with probability $\epsilon$. Does the exposure-bias gap of 11.5 shrink?

# %%
# The chapter's own results, in quick mode too
assert grad_error < 1e-6                                    # the masked loss's gradient
assert cache_gap <= 1e-5 and cache_same                     # the cache changes nothing
assert ppl < floor["text_only"] * 1.5 and ppl < len(vocab) / 4, ppl
assert history.history["loss"][-1] < history.history["loss"][0]
assert gen["attribute_accuracy"]["colour"] > gen["attribute_majority_rate"]["colour"] + 0.2
assert gen["names_true_class"] > 2 * majority["class"][1], gen["names_true_class"]

print("chapter 11: all checks passed")
