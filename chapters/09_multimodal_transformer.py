# %% [markdown]
# # 9. Patches as words: one Transformer for pixels and captions
#
# The article **"多模态大模型：技术原理与实战"** describes its subject in §3.1 as a pretrained
# Transformer that handles several kinds of data, and cites ViT (Dosovitskiy et al. 2021,
# *"An image is worth 16x16 words"*, its reference 3). Its case study (chapter 8) still reads
# the image with a CNN and the caption with an LSTM and only meets them at the very end, by
# concatenation. This chapter builds the model §3.1 points at, from the pieces of chapters 5
# and 6: cut the image into patches, treat every patch as a *word*, put the patches and the
# caption's words into **one** sequence, and let the article's attention formulas
#
# $$\mathrm{Attention}(Q,K,V)=\mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right)V,\qquad
# \mathrm{MultiHead}(Q,K,V)=\mathrm{Concat}(\text{head}_1,\dots,\text{head}_h)W^O$$
#
# mix them in every layer.
#
# 1. intuition: why a sequence of patches, and why one sequence for both modalities;
# 2. the patch embedding derived — a linear map of each patch, which *is* a convolution with
#    kernel = stride = patch size — and checked against `F.conv2d`;
# 3. the token sequence: [CLS], modality and position embeddings, the padding mask, and why
#    padding cannot change the answer;
# 4. gradient checks;
# 5. training the three modes (image only, text only, both) with the same `fit`;
# 6. the attention of [CLS] over patches and words after training;
# 7. what the full-size runs gave on CIFAR-10.
#
# The code is in `minimm/nn/patch.py` (`PatchEmbedding`) and `minimm/models/transformer.py`
# (`MultiModalTransformer`); the encoder is chapter 6's pre-norm `nn.TransformerEncoder`.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import minimm as mm
from minimm import functional as F, nn
from minimm.data import CLASSES, captions, standin
from minimm.experiments.cifar10 import Objective, caption_dataset, model_inputs
from minimm.models import MultiModalTransformer
from minimm.plot import plot_modes
from minimm.train import evaluate, fit

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: a small stand-in dataset
SEED = 0
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 9.1 Intuition: an image as a sentence
#
# Attention does not care where its tokens come from. It gets $L$ vectors of width $d$ and
# returns $L$ vectors of width $d$, each a weighted mixture of all of them; nothing in
# $\mathrm{softmax}(QK^\top/\sqrt{d_k})V$ says "word". So anything that can be written as a
# sequence of vectors can be read by the same encoder:
#
# * a caption is already a sequence: one learned vector per word (an embedding table);
# * an image becomes one by cutting it into a grid of $p\times p$ patches and mapping each
#   patch, a vector of $3p^2$ pixels, to $d$ numbers. With $p = 4$ a $32\times32$ CIFAR-10
#   image is an $8\times8$ grid: **64 "words"**, read row by row (ViT's order).
#
# Put both in one sequence, and every layer lets a word look at a patch and a patch at a word:
# the fusion happens *inside* the network, at every depth, instead of once at the end as in
# chapter 8. A learned **[CLS]** token in front collects what the classifier needs: its output
# vector is the input of the final linear layer, as in BERT and ViT.

# %%
(x_train, y_train), (x_test, y_test), path = standin.case_study_images(  # chapter 8's data
    QUICK, real=(10_000, 2_000), stand_in=(6_000, 1_000), quick_sizes=(1_200, 300), seed=SEED)
EPOCHS = 2 if path is not None else (2 if QUICK else 3)
print(f"real CIFAR-10 from {path}" if path else
      "NOTE: a SYNTHETIC STAND-IN for CIFAR-10 (chapter 8's), not the real data; the numbers "
      "are about it", f"| {len(y_train)} train / {len(y_test)} test images, {EPOCHS} epochs")
vocab = captions.caption_vocabulary()
train = caption_dataset(x_train, y_train, caption_seed=SEED, vocab=vocab)     # noisy captions
test = caption_dataset(x_test, y_test, caption_seed=SEED + 1, vocab=vocab)

# %% [markdown]
# One image as its 64 patches, in the order the encoder reads them (`nn.patchify` does the
# cutting; the numbers are the token positions 0 … 63):

# %%
img = x_train[0]                                                  # (3, 32, 32) uint8
patches = nn.patchify(mm.tensor(img[None].astype(np.float32)), 4).numpy()[0]   # (64, 48)
fig, axes = plt.subplots(8, 8, figsize=(4.5, 4.5))
for l, ax in enumerate(axes.flat):
    ax.imshow(patches[l].reshape(3, 4, 4).transpose(1, 2, 0).astype(np.uint8))
    ax.set_title(str(l), fontsize=6, pad=1)
    ax.axis("off")
fig.suptitle(f"one {CLASSES[y_train[0]]} image as 64 patch tokens (row-major order)",
             fontsize=9)
plt.show()
print("caption:", " ".join(vocab.decode(train["ids"][0])), "| patches", patches.shape)

# %% [markdown]
# ## 9.2 The patch embedding is a convolution
#
# Write patch $l$ (grid row $r$, column $c$, $l = r\cdot\frac{W}{p} + c$) of image $x$
# as the vector $x_l \in \mathbb{R}^{Cp^2}$, channel first, then row, then column inside the
# patch. Its token is one linear map shared by all patches:
#
# $$z_l = x_l W + b,\qquad W \in \mathbb{R}^{Cp^2\times d},\ b\in\mathbb{R}^{d}.$$
#
# Spelled out, $z_{l,k} = b_k + \sum_{ch,i,j} x[ch,\, rp + i,\, cp + j]\; W[(ch,i,j), k]$.
# A convolution with kernel $K\in\mathbb{R}^{d\times C\times p\times p}$ and stride $s$ computes
# $y[k, r, c] = b_k + \sum_{ch,i,j} x[ch,\, rs + i,\, cs + j]\, K[k, ch, i, j]$. With stride
# $s = p$ the windows do not overlap and tile the image, and the two sums are the same sum with
# $K[k, ch, i, j] = W[(ch, i, j), k]$, i.e. $K = W^\top$ reshaped to $(d, C, p, p)$. The
# convolution's output grid $(d, H/p, W/p)$, flattened row by row and transposed, is the token
# matrix $(L, d)$. So the "linear projection of flattened patches" of the ViT paper and the
# strided convolution of its reference code are one operation — here it is reshapes and a
# matrix product:

# %%
pe = nn.PatchEmbedding(patch_size=4, in_channels=3, d_model=8, rng=np.random.default_rng(0))
x = mm.tensor(mm.data.normalize_images(x_train[:2]))            # (2, 3, 32, 32)
z = pe(x)                                                        # (2, 64, 8)
K = mm.tensor(pe.W.numpy().T.reshape(8, 3, 4, 4))                # Wᵀ as a conv kernel
y = F.conv2d(x, K, pe.b, stride=4)                               # (2, 8, 8, 8)
tokens = y.numpy().reshape(2, 8, 64).transpose(0, 2, 1)          # grid -> row-major tokens
print("tokens", z.shape, "| conv", y.shape, "| max |difference|",
      np.abs(z.numpy() - tokens).max())

# %% [markdown]
# ## 9.3 One sequence for both modalities
#
# `MultiModalTransformer` builds, for a batch of images and captions of $T$ token slots,
#
# $$x = \big[\;c\;;\; z_1 + e^{\text{img}}_1 + m_{\text{img}},\ \dots,\ z_{64} + e^{\text{img}}_{64} + m_{\text{img}}\;;\;
# w_{1} + e^{\text{txt}}_1 + m_{\text{txt}},\ \dots,\ w_{T} + e^{\text{txt}}_T + m_{\text{txt}}\;\big]
# \in \mathbb{R}^{(1 + 64 + T)\times d},$$
#
# with $c$ the learned [CLS] vector, $z_l$ the patch tokens, $w_t$ the word embeddings,
# $e^{\text{img}}$ and $e^{\text{txt}}$ learned **position** embeddings (attention is blind to
# order: permuting the tokens permutes its output, chapter 5) and $m_{\text{img}}, m_{\text{txt}}$
# learned **modality** embeddings, BERT's segment embeddings: one vector added to every token of
# a modality, so the encoder can tell pixels from words. Then
#
# $$h = \mathrm{TransformerEncoder}(x),\qquad \text{logits} = h_0 W_{\text{head}} + b_{\text{head}}.$$
#
# **Padding.** Captions have different lengths; slots past a caption's length hold padding. The
# key-padding mask sets their attention scores to $-\infty$, so for every query $i$ and padded key
# $j$ the weight is exactly $a_{ij} = e^{-\infty}/\sum = 0$. A padded token therefore contributes
# $a_{ij} v_j = 0$ to every output; and in the backward pass its value gets $\partial L/\partial
# v_j = \sum_i a_{ij}\, \partial L/\partial o_i = 0$, its key $\partial L/\partial k_j \propto
# \sum_i \partial L/\partial s_{ij}\, q_i = 0$ (the softmax derivative $a_{ij}(g_{ij} - \sum_k
# g_{ik}a_{ik})$ vanishes with $a_{ij}$). Padded *queries* do compute outputs, but only $h_0$ is
# read. Hence: whatever ids sit past a caption's length, the logits and all the gradients are
# **bit for bit** the same. The tests check exactly that; here is the forward half:

# %%
model = MultiModalTransformer(len(vocab), 10, "multimodal", d_model=32, depth=2, num_heads=4,
                              rng=np.random.default_rng(SEED))
ids, lengths = train["ids"][:4], train["lengths"][:4]
garbage = ids.copy()
pad = np.arange(ids.shape[1])[None, :] >= lengths[:, None]
garbage[pad] = np.random.default_rng(1).integers(2, len(vocab), pad.sum())
x4 = mm.tensor(mm.data.normalize_images(x_train[:4]))
with mm.no_grad():
    same = np.array_equal(model(x4, ids, lengths).numpy(), model(x4, garbage, lengths).numpy())
print("sequence length", 1 + 64 + ids.shape[1], "| lengths", lengths,
      "| logits identical with garbage padding:", same)
print(f"{sum(p.size for p in model.parameters()):,} parameters:",
      {name: sum(p.size for p in m.parameters()) for name, m in
       (("patch", model.patch), ("embed", model.embed), ("encoder", model.encoder),
        ("head", model.head))})

# %% [markdown]
# ## 9.4 Gradient checks
#
# The patch embedding is composed of reshape, transpose and `F.linear`, each checked in its own
# chapter; here the composition, in float64 against central differences, for the input and the
# weights. Then the whole model, a tiny one in float64, with respect to its input images (random
# directions, as in chapter 8).

# %%
rng = np.random.default_rng(0)
pe64 = nn.PatchEmbedding(2, 3, 5, rng=rng)
xs = [rng.standard_normal((2, 3, 4, 6)), rng.standard_normal((12, 5)), rng.standard_normal(5)]


def patch_embed(x, W, b):
    return F.linear(nn.patchify(x, 2), W, b)        # exactly PatchEmbedding.forward


print("PatchEmbedding gradcheck:", mm.gradcheck(patch_embed, xs),
      "| gradgradcheck:", mm.gradgradcheck(patch_embed, xs))
tiny = MultiModalTransformer(len(vocab), 10, "multimodal", d_model=8, depth=1, num_heads=2,
                             image_size=8, rng=np.random.default_rng(1))
for p in tiny.parameters():
    p.data = p.data.astype(np.float64)
images8 = rng.standard_normal((2, 3, 8, 8))
print("whole-model gradcheck (input images):",
      mm.gradcheck(lambda im: tiny(im, ids[:2], lengths[:2]), [images8], mode="random"))

# %% [markdown]
# ## 9.5 Training the three modes with the same `fit`
#
# The same model class in three modes: `"image"` (the sequence is [CLS] + 64 patches — a small
# ViT), `"text"` ([CLS] + the caption) and `"multimodal"` (both). They are trained exactly like
# chapter 8's models: `fit` with the case study's loss (`Objective`, the cross-entropy), Adam,
# the noisy synthetic captions (half name the true class, so text alone is worth at most 0.53).
# The encoder here is small (d = 32 in quick mode, 64 otherwise; 2 layers) so the chapter runs
# in seconds on a CPU.

# %%
D_MODEL, DEPTH = (32, 2) if QUICK else (64, 2)
histories, results, models, seconds = {}, {}, {}, {}
for mode in ("image", "text", "multimodal"):
    m = MultiModalTransformer(len(vocab), 10, mode, d_model=D_MODEL, depth=DEPTH, num_heads=4,
                              rng=np.random.default_rng(SEED))
    t0 = time.perf_counter()
    histories[mode] = fit(m, train, test, EPOCHS, mm.optim.Adam(m.parameters(), lr=1e-3),
                          loss_fn=Objective(), batch_size=32, progress=False, seed=SEED)
    seconds[mode] = time.perf_counter() - t0
    results[mode] = evaluate(m, test, Objective())
    models[mode] = m
    print(f"{mode:>10}: test accuracy per epoch",
          [round(a, 3) for a in histories[mode].history["val_accuracy"]],
          f"| {seconds[mode]:.1f} s")

# %%
acc = {mode: results[mode]["accuracy"] for mode in results}
modes = {mode: histories[mode] for mode in ("image", "text", "multimodal")}
display(plot_modes(modes, acc, ceiling=captions.text_only_accuracy(),
                   titles=("Transformer: test accuracy per epoch",
                           "Patches only vs words only vs one sequence")))

# %% [markdown]
# ## 9.6 Where does [CLS] look?
#
# After every call the encoder's attention layers keep their weights (`model.attention_maps()`,
# one $(B, h, L, L)$ array per layer). Row 0 of the last layer is what [CLS] reads just before the
# classifier: its weights over the 64 patches, reshaped to the $8\times8$ grid, and over the
# caption's words (padding gets exactly 0). Averaged over the heads:

# %%
fused = models["multimodal"]
show = [int(np.flatnonzero(test["lengths"] == n)[0]) for n in
        sorted(set(test["lengths"].tolist()), reverse=True)[:2]] + [1, 2]
batch = {k: v[show] for k, v in test.items()}
with mm.no_grad():
    predicted = fused(*model_inputs(batch)).numpy().argmax(1)
A = fused.attention_maps()[-1].mean(axis=1)[:, 0]              # (4, L): [CLS]'s row, mean of heads
fig, axes = plt.subplots(2, 4, figsize=(13, 5.6), gridspec_kw={"height_ratios": [3, 2]})
for k, b in enumerate(show):
    n = int(test["lengths"][b])
    grid = A[k, 1:65].reshape(8, 8)
    ax = axes[0, k]
    ax.imshow(test["images"][b].transpose(1, 2, 0))
    im = ax.imshow(np.kron(grid, np.ones((4, 4))), cmap="magma", alpha=0.6)
    ax.set_title(f"true {CLASSES[y_test[b]]}, predicted {CLASSES[predicted[k]]}", fontsize=8)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046, label="attention weight")
    words = vocab.decode(test["ids"][b][:n])
    axes[1, k].bar(range(n), A[k, 65:65 + n], color="C2")
    axes[1, k].set_xticks(range(n), words, rotation=45, ha="right", fontsize=8)
    axes[1, k].set(ylabel="attention weight", xlabel="caption word")
    axes[1, k].set_title(f"patches {grid.sum():.2f} | words {A[k, 65:65 + n].sum():.2f} "
                         f"| [CLS] {A[k, 0]:.2f}", fontsize=8)
fig.suptitle("[CLS] attention in the last layer (mean over heads): over the 8×8 patches "
             "(top) and the caption's words (bottom)")
plt.tight_layout(); plt.show()

# %% [markdown]
# What to look for: the share of [CLS]'s attention that goes to the words rather than the
# patches, and which words get it — a word that names a class should draw more weight than
# "a" or "photo". How much the model trusts the caption shows in the split; on the stand-in,
# the patches carry the colour everywhere, so the patch weights are spread rather than
# concentrated on an object. (Attention weights say where information was *read*, not why the
# answer is what it is; chapter 13 compares them with gradients.)

# %% [markdown]
# ## 9.7 At full scale, against the CNN + LSTM
#
# The command line trains the same model on all of CIFAR-10, writing the same files as the
# article's model (history.json, metrics.json, model.npz, the curves and the confusion matrix):
#
# ```
# python -m minimm train --model transformer --mode multimodal --d-model 64 --depth 4 --heads 4 --batch-size 64 --lr 1e-3 --epochs 3 --data cifar-10-binary.tar.gz
# python -m minimm train --model transformer --mode image --d-model 64 --depth 4 --heads 4 --batch-size 64 --lr 1e-3 --epochs 4 --data cifar-10-binary.tar.gz
# python -m minimm train --model transformer --mode text --d-model 64 --depth 4 --heads 4 --batch-size 64 --lr 1e-3 --epochs 4 --data cifar-10-binary.tar.gz
# ```
#
# The measured figures — each model given about 15 minutes of training on a 2-core CPU — are in
# the README section "Transformer and CLIP on CIFAR-10". What to expect, and why: on a short CPU
# budget a small ViT learns the pixels more slowly than the article's CNN (a convolution builds
# in locality and translation invariance; the Transformer has to learn them from data — ViT's
# paper needs very large datasets or heavy augmentation to win), so the image-only Transformer
# trails the image-only CNN; the text-only Transformer reaches the 0.53 ceiling just as the LSTM
# does; and the fused sequence beats both of its own single modalities, because the patches
# settle the captions that name nothing or the wrong class.

# %%
best_single = max(acc["image"], acc["text"])
print({k: round(v, 3) for k, v in acc.items()}, "| best single modality", round(best_single, 3))
assert acc["multimodal"] > 0.2, acc                      # learned something
assert acc["multimodal"] > acc["text"] + 0.05, acc       # the patches add to the words

# %% [markdown]
# ## Summary
#
# * An image is a sequence of patch tokens: $z_l = x_l W + b$ over the $(H/p)(W/p)$ patches in
#   row-major order — the same numbers as a convolution with kernel = stride = $p$.
# * `MultiModalTransformer` puts [CLS], 64 patch tokens and the caption's word tokens in one
#   sequence, each with a learned position and modality embedding, and classifies from [CLS]'s
#   output of chapter 6's pre-norm encoder. Fusion happens in every attention layer.
# * The key-padding mask makes padding contribute exactly zero, forward and backward: garbage
#   past a caption's length changes neither the logits nor any gradient.
# * The same class in modes "image", "text" and "multimodal" gives the three models of chapter 8
#   with attention in place of the CNN, the LSTM and the concatenation.
#
# ## Exercises
#
# 1. **Patch size.** Train with `patch_size=8` (16 tokens) and `patch_size=2` (256 tokens).
#    How do accuracy and time per epoch change? Attention's cost grows as $L^2$: check it.
# 2. **No modality embedding.** Set `model.modality.data[...] = 0` and freeze it (leave it out
#    of the optimiser's parameters). Does the fused model still learn? Why might the position
#    embeddings already tell the modalities apart?
# 3. **Mean pooling.** Replace the [CLS] readout by the mean of the patch and word outputs (mind
#    the padding mask: average over the real tokens only). Compare the accuracy.
# 4. **Convolutional stem.** Replace `PatchEmbedding` by two $3\times3$ convolutions with stride 2
#    (8×8 = 64 tokens again). A CNN's locality in the first layer often helps small ViTs a lot.
# 5. **Attention vs caption kind.** Split the test images by the kind of their caption
#    (`captions.make_captions(..., return_kinds=True)`) and compare the share of [CLS]'s
#    attention on words for captions naming the true class, a wrong class and none.
