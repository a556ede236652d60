# %% [markdown]
# # 10. Contrastive pretraining: learning from (image, caption) pairs without labels
#
# The article **"多模态大模型：技术原理与实战"** calls its models *pretrained* (§3.1: a
# pretrained Transformer that handles several kinds of data) but trains its case study with
# labels. This chapter goes one step beyond the article, to the pretraining recipe behind most
# image–text models since CLIP (Radford et al. 2021): learn from **pairs** alone. Nobody says
# "this is a cat"; the data only says "this caption belongs to this image". From that, an image
# encoder and a text encoder learn one shared space, and the text encoder then turns into a
# classifier for free — **zero-shot** classification: write each class name into a few prompt
# sentences, and give each image the class whose sentences it matches best.
#
# 1. intuition: a matching game within each batch;
# 2. the symmetric InfoNCE loss and its gradient, derived; the temperature's role;
# 3. the loss checked against a NumPy transcription and by gradient checks;
# 4. pretraining on captioned CIFAR-10 with `fit` — the batches hold no labels;
# 5. the similarity matrix after training;
# 6. zero-shot accuracy with prompt templates the model never saw, against the number of
#    templates; a linear probe; the same image encoder trained with labels;
# 7. collapse: the classic failure of contrastive code, and why the negatives prevent it.
#
# The code: `F.clip_loss` in `minimm/functional/contrastive.py`, the model `CLIP` in
# `minimm/models/clip.py`, the held-out templates in `minimm/data/prompts.py`, the training and
# evaluation glue in `minimm/experiments/clip.py`.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import functional as F
from minimm.data import CLASSES, captions, prompts, standin
from minimm.experiments.cifar10 import Objective, caption_dataset
from minimm.experiments.clip import (ContrastiveObjective, embed_images, linear_probe,
                                     pairs, zero_shot)
from minimm.models import CLIP, MultiModalModel
from minimm.models.clip import decay_groups
from minimm.train import evaluate, fit

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: a small stand-in dataset
SEED = 0
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 10.1 Intuition: who goes with whom?
#
# Take a batch of $N$ images and their $N$ captions, shuffle the captions, and ask the model to
# put them back. An image encoder gives each image a vector $I_i$, a text encoder each caption a
# vector $T_j$, both of width $D$; normalised to unit length, their dot product $\hat I_i\cdot\hat
# T_j$ is a cosine similarity in $[-1, 1]$. The $N\times N$ matrix of similarities should be
# largest on its diagonal: in row $i$, caption $i$ should beat the other $N-1$ captions (the
# **negatives**), and in column $j$, image $j$ should beat the other images. Each row and each
# column is an $N$-way classification whose correct class is "the diagonal" — so the loss is the
# cross-entropy of chapter 2, used twice.
#
# The labels never appear. What makes it work on CIFAR-10 is that a caption which names "kitten"
# is only similar to images of cats: to win the matching game the image encoder must learn to see
# cats. (Our captions are the case study's synthetic ones: half name the true class, a fifth a
# wrong one, the rest none. A caption that names nothing can't be matched — it is noise the loss
# has to live with.)

# %%
(x_train, y_train), (x_test, y_test), path = standin.case_study_images(  # chapter 8's data
    QUICK, real=(10_000, 2_000), stand_in=(6_000, 1_000), quick_sizes=(1_200, 300), seed=SEED)
EPOCHS = 3 if path is not None else (3 if QUICK else 4)
print(f"real CIFAR-10 from {path}" if path else
      "NOTE: a SYNTHETIC STAND-IN for CIFAR-10 (chapter 8's), not the real data; the numbers "
      "are about it", f"| {len(y_train)} train / {len(y_test)} test images, {EPOCHS} epochs")
vocab = captions.caption_vocabulary()
train_pairs = pairs(x_train, y_train, SEED, vocab, 16)         # {"images", "ids", "lengths"}
test_pairs = pairs(x_test, y_test, SEED + 1, vocab, 16)
print("what pretraining sees:", sorted(train_pairs), "— no labels")

# %% [markdown]
# ## 10.2 The loss and its gradient
#
# With $S = s\,\hat I \hat T^\top$ ($N\times N$; $s>0$ a scale), the **symmetric InfoNCE** loss is
#
# $$L = \tfrac12\left[\underbrace{-\frac1N\sum_{i}\log\frac{e^{S_{ii}}}{\sum_j e^{S_{ij}}}}_{\ell_{\text{row}}:\ \text{image}\to\text{text}}
# \;\underbrace{-\frac1N\sum_{j}\log\frac{e^{S_{jj}}}{\sum_i e^{S_{ij}}}}_{\ell_{\text{col}}:\ \text{text}\to\text{image}}\right].$$
#
# **Gradient with respect to the logits.** Chapter 2 derived $\partial/\partial z$ of
# $-\log\mathrm{softmax}(z)_y$ as $\mathrm{softmax}(z) - \mathrm{onehot}(y)$. Row $i$ of $S$ is
# such a $z$ with $y = i$; column $j$ is one with $y = j$. With the row softmax $P_{ij} =
# e^{S_{ij}}/\sum_k e^{S_{ik}}$ and the column softmax $Q_{ij} = e^{S_{ij}}/\sum_k e^{S_{kj}}$,
#
# $$G := \frac{\partial L}{\partial S} = \frac{(P - \mathbb 1) + (Q - \mathbb 1)}{2N}.$$
#
# **Through the similarities.** $S_{ij} = s\,\hat I_i\cdot\hat T_j$ gives
# $\partial L/\partial \hat I = s\,G\hat T$, $\partial L/\partial \hat T = s\,G^\top \hat I$ and
# $\partial L/\partial s = \sum_{ij} G_{ij}\,S_{ij}/s$. Reading the first row by row:
#
# $$\frac{\partial L}{\partial \hat I_i} = \frac{s}{2N}\Big[\sum_j (P_{ij} + Q_{ij})\,\hat T_j - 2\,\hat T_i\Big]:$$
#
# gradient *descent* pulls image $i$ towards its own caption and pushes it away from every other
# caption, each push weighted by how much that caption currently competes ($P_{ij}+Q_{ij}$):
# the **hard negatives** are pushed hardest.
#
# **Through the normalisation.** $\hat I = I/\lVert I\rVert$ has the Jacobian $(\mathbb 1 -
# \hat I\hat I^\top)/\lVert I\rVert$, so $\partial L/\partial I = (g - \hat I(\hat I\cdot g))/\lVert
# I\rVert$ with $g = \partial L/\partial\hat I$: only the part of $g$ tangent to the sphere
# survives. The loss only ever rotates embeddings; their length is irrelevant to it.
#
# **The temperature.** $s = e^{t} = 1/\tau$. With $s\to 0$ every softmax is uniform, $L\to\log N$
# whatever the embeddings, and every negative is pushed equally little. With large $s$ the
# softmaxes concentrate on the largest similarities: the loss only cares about the few hardest
# negatives, and — since cosines are bounded by 1 — a large $s$ is what lets the loss get close
# to 0 at all: with perfectly separated unit vectors, $S = s\mathbb 1$ and $L = \log(1 +
# (N-1)e^{-s})$. CLIP learns $t$ (starting at $\tau = 0.07$, $s \approx 14.3$) and clips $s$ at
# 100 so the softmax cannot become arbitrarily sharp.

# %%
rng = np.random.default_rng(0)
N, D = 8, 4
I0, T0 = rng.standard_normal((N, D)), rng.standard_normal((N, D))
T_close = I0 + 0.3 * rng.standard_normal((N, D))                # captions near their images
scales = np.geomspace(0.1, 100, 40)
fig, ax = plt.subplots(figsize=(6, 3.8))
for T, label in ((T0, "unrelated pairs"), (T_close, "matching pairs")):
    ax.plot(scales, [F.clip_loss(mm.tensor(I0), mm.tensor(T), s).item() for s in scales],
            label=label)
ax.plot(scales, np.log(1 + (N - 1) * np.exp(-scales)), "k:", label="perfect: log(1+(N−1)e^{−s})")
ax.axhline(np.log(N), color="gray", ls="--", label="log N (uniform)")
ax.axvline(1 / 0.07, color="C3", ls="-.", label="CLIP's start, s = 1/0.07")
ax.set(xscale="log", xlabel="logit scale s = 1/τ", ylabel="symmetric InfoNCE loss",
       title=f"The temperature's role (N = {N} pairs)")
ax.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 10.3 Checks
#
# The loss against a plain NumPy transcription of the formula, the gradient $G$ against the
# closed form above, and float64 finite-difference checks of first and second derivatives (with
# respect to both embeddings and the log-temperature $t$).

# %%
def numpy_clip_loss(I, T, s):
    I = I / np.linalg.norm(I, axis=1, keepdims=True)
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    S = s * I @ T.T
    lse_rows = np.log(np.exp(S).sum(axis=1))
    lse_cols = np.log(np.exp(S).sum(axis=0))
    return 0.5 * (np.mean(lse_rows - np.diag(S)) + np.mean(lse_cols - np.diag(S)))


print("clip_loss vs NumPy:", F.clip_loss(mm.tensor(I0), mm.tensor(T0), 14.3).item(),
      numpy_clip_loss(I0, T0, 14.3))
S = mm.tensor(rng.standard_normal((N, N)), requires_grad=True)
target = np.arange(N)
((F.cross_entropy(S, target) + F.cross_entropy(S.T, target)) * 0.5).backward()
E = np.exp(S.numpy())
G = (E / E.sum(1, keepdims=True) + E / E.sum(0, keepdims=True) - 2 * np.eye(N)) / (2 * N)
print("dL/dS = (P + Q − 2·1)/2N:", np.allclose(S.grad.numpy(), G))
inputs = [I0, T0, np.array(np.log(1 / 0.07))]
loss_of = lambda I, T, t: F.clip_loss(I, T, F.exp(t))            # noqa: E731
print("gradcheck:", mm.gradcheck(loss_of, inputs), "| gradgradcheck:",
      mm.gradgradcheck(loss_of, inputs))

# %% [markdown]
# ## 10.4 Pretraining
#
# `CLIP` has two towers: here the article's CNN branch for the images (chapter 8: 512 features)
# and a small Transformer for the captions (chapter 9 in mode "text": [CLS] + words), each
# followed by a linear projection ($W_i$, $W_t$) to a shared 128-wide space, and the learned
# log-temperature $t$. `fit` trains it with `ContrastiveObjective` — the loss above, nothing else
# — and AdamW whose parameter groups (`decay_groups`) decay the weight matrices but not the
# biases, norms, embeddings or $t$. The test pairs give a validation loss after each epoch.

# %%
clip_model = CLIP(len(vocab), embed_dim=128, image_encoder="cnn", text_encoder="transformer",
                  d_model=32, depth=2, num_heads=4, rng=np.random.default_rng(SEED))
opt = mm.optim.AdamW(decay_groups(clip_model, 0.1), lr=1e-3)
print([(len(g["params"]), g["weight_decay"]) for g in opt.param_groups],
      "(parameters, weight decay) per group")
t0 = time.perf_counter()
history = fit(clip_model, train_pairs, test_pairs, EPOCHS, opt, loss_fn=ContrastiveObjective(),
              batch_size=64, progress=False, seed=SEED)
clip_seconds = time.perf_counter() - t0
h = history.history
print(f"{clip_seconds:.1f} s | loss", np.round(h["loss"], 3), "| test loss",
      np.round(h["val_loss"], 3), "| logit scale", np.round(h["logit_scale"], 2))

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ep = np.arange(1, EPOCHS + 1)
ax1.plot(ep, h["loss"], "o-", label="train pairs")
ax1.plot(ep, h["val_loss"], "s--", label="test pairs")
ax1.axhline(np.log(64), color="gray", ls=":", label="log 64 (chance, batch 64)")
ax1.set(xlabel="epoch", ylabel="symmetric InfoNCE", title="Contrastive loss", xticks=ep)
ax1.legend()
ax2.plot(ep, h["logit_scale"], "o-", color="C3")
ax2.set(xlabel="epoch", ylabel="s = exp(t) (epoch mean)", title="The learned logit scale",
        xticks=ep)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 10.5 The similarity matrix
#
# Twelve test pairs, two per class for six classes, ordered by class: the cosine similarity of
# every image with every caption. Matching pairs sit on the diagonal; since a caption describes a
# class, not an instance, an image is also close to the *other* caption of its class (the 2×2
# blocks) — unless that caption names nothing or a wrong class.

# %%
pick = np.concatenate([np.flatnonzero(y_test == c)[:2] for c in range(6)])
I = embed_images(clip_model, x_test[pick])
with mm.no_grad():
    clip_model.eval()
    T = clip_model.encode_text(test_pairs["ids"][pick], test_pairs["lengths"][pick]).numpy()
Sim = (I / np.linalg.norm(I, axis=1, keepdims=True)) @ (T / np.linalg.norm(T, axis=1,
                                                                             keepdims=True)).T
texts = [" ".join(vocab.decode(test_pairs["ids"][i])) for i in pick]
fig, ax = plt.subplots(figsize=(8, 6.5))
im = ax.imshow(Sim, cmap="viridis")
ax.set_xticks(range(len(pick)), texts, rotation=60, ha="right", fontsize=8)
ax.set_yticks(range(len(pick)), [f"{CLASSES[y_test[i]]} image" for i in pick], fontsize=8)
ax.set(xlabel="caption (test pairs)", ylabel="image (true class)",
       title="Cosine similarity of test images and captions after pretraining")
fig.colorbar(im, ax=ax, label="cos(Î_i, T̂_j)")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 10.6 Zero-shot classification with held-out prompts
#
# For class $k$ and templates $m = 1\dots M$, encode the prompt "template $m$ with the name of
# class $k$", normalise, average over the templates and normalise again:
#
# $$c_k = \frac{\bar c_k}{\lVert\bar c_k\rVert},\qquad \bar c_k = \frac1M\sum_{m}\frac{T(\text{prompt}_{k,m})}{\lVert T(\text{prompt}_{k,m})\rVert},
# \qquad \hat y(x) = \arg\max_k\ \hat I(x)\cdot c_k .$$
#
# The templates must not be training captions, or the accuracy would partly measure how well the
# text tower memorised those exact sentences. `prompts.ZERO_SHOT_TEMPLATES` are 18 sentences
# written with the caption vocabulary's words (an unseen word would be `<unk>`) that never occur
# as a training caption — `check_held_out` proves both:

# %%
held_out = prompts.check_held_out()
print(len(held_out), "prompts, e.g.", held_out[:3], "| none is one of the",
      len(prompts.training_captions()), "possible training captions")
print("a training template is refused:", end=" ")
try:
    prompts.check_held_out(("a photo of {a} {name}",))
except ValueError as e:
    print(e)

# %%
result = zero_shot(clip_model, x_test, y_test, vocab, 16)
# a linear probe on the frozen image tower, and the same tower trained with labels
feats = [embed_images(clip_model, x, features=True) for x in (x_train, x_test)]
probe = linear_probe(feats[0], y_train, feats[1], y_test, epochs=30)
supervised = MultiModalModel(len(vocab), mode="image", rng=np.random.default_rng(SEED))
labelled = caption_dataset(x_train, y_train, SEED, vocab)
fit(supervised, labelled, None, EPOCHS, mm.optim.Adam(supervised.parameters(), lr=1e-3),
    loss_fn=Objective(), batch_size=64, progress=False, seed=SEED)
sup_acc = evaluate(supervised, caption_dataset(x_test, y_test, SEED + 1, vocab),
                   Objective())["accuracy"]
print(f"zero-shot {result['accuracy']:.3f} | linear probe {probe:.3f} | same CNN trained with "
      f"labels {sup_acc:.3f} | chance 0.100")

# %%
M = np.arange(1, len(prompts.ZERO_SHOT_TEMPLATES) + 1)
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.plot(M, result["accuracy_by_templates"], "o-", label="zero-shot (held-out templates)")
ax.axhline(probe, color="C1", ls="--", label="linear probe on the frozen tower")
ax.axhline(sup_acc, color="C2", ls="-.", label="same CNN trained with labels")
ax.axhline(0.1, color="gray", ls=":", label="chance")
ax.set(xlabel="number of prompt templates averaged (M)", ylabel="test accuracy", ylim=(0, 1),
       title="Zero-shot accuracy against the number of templates")
ax.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# A single template gives a noisy class vector: one sentence's embedding also carries what the
# sentence's other words do to the text tower. Averaging over templates cancels that part and
# keeps the class — the curve usually rises over the first few templates and then flattens (it
# need not be monotone: some templates are simply worse than others).

# %% [markdown]
# ## 10.7 Collapse, and why the negatives prevent it
#
# The classic bug of from-scratch contrastive code is a loss that only *pulls* pairs together
# (say $-\frac1N\sum_i \hat I_i\cdot\hat T_i$): it is minimised by mapping every image and every
# caption to one point, and the model happily does so — retrieval then is chance. InfoNCE cannot
# collapse: if all embeddings are equal, every $S_{ij} = s$ and $L = \log N$ exactly, the loss of
# a model that knows nothing, so moving away from collapse always lowers it. Two numbers tell
# them apart after training: the mean pairwise cosine **distance** of the image embeddings (0 for
# a collapsed model) and retrieval against chance. (The test suite trains both losses on a small
# problem and checks exactly this.)

# %%
In = embed_images(clip_model, x_test)
In /= np.linalg.norm(In, axis=1, keepdims=True)
n = len(In)
spread = 1 - ((In @ In.T).sum() - n) / (n * (n - 1))
same = np.full((4, 3), 1.0)
print(f"mean pairwise cosine distance of the test images: {spread:.3f} (0 = collapsed)")
print("InfoNCE of a collapsed batch:", round(F.clip_loss(mm.tensor(same), mm.tensor(same),
                                                         14.3).item(), 4),
      "= log 4 =", round(np.log(4), 4))
assert spread > 0.1, spread
assert result["accuracy"] > 0.2, result["accuracy"]            # far above chance

# %% [markdown]
# ## 10.8 At full scale
#
# ```
# python -m minimm train --model clip --image-encoder cnn --text-encoder transformer --d-model 64 --depth 2 --heads 4 --batch-size 64 --lr 1e-3 --epochs 12 --data cifar-10-binary.tar.gz
# ```
#
# pretrains on the 50 000 training pairs and writes metrics.json with `zero_shot_accuracy` (the 18
# held-out templates are listed in it), `zero_shot_accuracy_by_templates` and
# `linear_probe_accuracy`. The measured figures and their budgets are in the README section
# "Transformer and CLIP on CIFAR-10". Reference points from the literature: OpenAI's CLIP ViT-B/32,
# trained on 400 million pairs, reaches about 90 % zero-shot on CIFAR-10; our captions are
# synthetic and only half of them name the right class, so the interesting comparison is with the
# same encoder trained *with* labels on the same budget.
#
# ## Summary
#
# * Contrastive pretraining needs pairs, not labels: the symmetric InfoNCE is the cross-entropy of
#   "which caption is this image's?" over the rows of $S = s\hat I\hat T^\top$, plus the same over
#   the columns; $\partial L/\partial S = (P + Q - 2\mathbb 1)/2N$.
# * Its gradient pulls each image to its caption and pushes it from the others, hardest from the
#   most similar; through the normalisation it only rotates embeddings.
# * The logit scale $s = 1/\tau$ sets how hard the negatives are: learned from $\tau = 0.07$,
#   clipped at 100.
# * Zero-shot classification averages the text embeddings of prompt templates per class; honest
#   numbers need templates that were not training captions.
# * Negatives are what keep the embedding from collapsing; test for spread and retrieval.
#
# ## Exercises
#
# 1. **Batch size.** Train with batch 16 and 256. More negatives per batch make the task harder
#    and the gradient more informative — but with 10 classes, more of them are false negatives
#    (captions of the same class). Which effect wins on zero-shot accuracy?
# 2. **Fixed temperature.** Freeze $t$ at $\log(1/0.07)$, then at $\log 1$ and $\log 100$ (leave
#    it out of the optimiser). Compare the loss curves and the zero-shot accuracy.
# 3. **The collapsing loss.** Train with $-\mathrm{mean}_i\,\hat I_i\cdot\hat T_i$ instead of
#    `F.clip_loss` and measure the spread and the retrieval accuracy of 10.7.
# 4. **Clean captions.** Build the pairs with `caption_dataset(..., p_true=1.0, p_wrong=0.0)` and
#    retrain: how far is the zero-shot accuracy from the supervised one now?
# 5. **ViT tower.** Use `CLIP(..., image_encoder="vit")` (chapter 9's Transformer in image mode)
#    and compare with the CNN tower at the same time budget.
