# %% [markdown]
# # 13. Interpretability: looking inside a trained model
#
# *Article: "多模态大模型：技术原理与实战", §9.6 如何确保多模态大模型的可解释性 (how to make a
# multimodal large model interpretable).*
#
# The article's answer is to *look*: visualise the model's structure and weights with tools
# such as TensorBoard or VisualDL, analyse what its attention attends to, and compare. A learner
# who finished chapter 8 has a trained model and no way yet to ask it *why*. This chapter builds
# the looking glasses, each in `minimm/viz.py` or `minimm/callbacks.py` and each tested:
#
# 1. the **computation graph** — of an expression, of one LSTM step, of the whole fused model;
# 2. **saliency maps**: which pixels move a class score (the gradient with respect to the image);
# 3. **Grad-CAM**: which regions of the last convolution's feature maps support the class;
# 4. **attention maps**: which image patches and which caption words a [CLS] token attends to;
# 5. **per-layer gradient and weight norms** recorded during `fit`;
# 6. **TensorBoard** event files of a minimm run, so `tensorboard --logdir runs/` shows it.
#
# One caution runs through all of it: these pictures are *evidence about the model*, not
# explanations of the world — a saliency map shows what the network uses, which may be a
# shortcut (a background colour, a caption word) rather than the object.

# %%
import os
import shutil

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import minimm as mm
from minimm import callbacks, functional as F, viz
from minimm.data import CLASSES, captions, standin
from minimm.data.loader import normalize_images
from minimm.models import MultiModalModel, MultiModalTransformer
from minimm.experiments.cifar10 import Objective, caption_dataset
from minimm.train import fit

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: the small stand-in
SEED = 0
print("minimm", mm.__version__, "| quick mode:", QUICK,
      "| graphviz:", viz.graphviz_available())

# %% [markdown]
# ## 13.1 The computation graph
#
# Chapter 1 printed the graph behind a tensor as indented text. `viz.graph_dot` writes it in
# Graphviz's DOT language — tensors as ovals (blue: leaves that want a gradient, grey:
# constants), Functions as boxes, inputs on the left — and `viz.draw_graph` renders it with
# graphviz when the package and its `dot` program are installed, and with matplotlib
# otherwise. First chapter 1's expression, $y = xw + \tanh(xw)$:

# %%
x = mm.tensor([1.0, -2.0, 0.5], requires_grad=True)
w = mm.tensor([0.3, 0.1, -1.2], requires_grad=True)
a = x * w
L = (a + F.tanh(a)).sum()
dot = viz.graph_dot(L, names={"x": x, "w": w, "a = x·w": a, "L": L})
print(dot)


def show(drawing):
    # a graphviz drawing is displayed as SVG; a matplotlib one is shown like any other figure
    if viz.graphviz_available():
        display(drawing)
    else:
        plt.show()


show(viz.draw_graph(L, names={"x": x, "w": w, "a = x·w": a, "L": L},
                    title="L = Σ (x·w + tanh(x·w))"))

# %% [markdown]
# The node `a` has two consumers, `Add` and `Tanh`; backward adds what comes back along both.
# Now one step of the LSTM of chapter 4, $z = x_tW + h_{t-1}U + b$, four gates, the cell
# update $c_t = f\odot c_{t-1} + i\odot g$ and $h_t = o\odot\tanh c_t$ — the equations as a
# picture: two matrix products, one `Split` into the gate blocks, three sigmoids and two tanh:

# %%
rng = np.random.default_rng(0)
I, H = 3, 2
x_t, h_prev, c_prev = (mm.tensor(rng.standard_normal(s)) for s in ((1, I), (1, H), (1, H)))
W, U, b = (mm.tensor(rng.standard_normal(s), requires_grad=True)
           for s in ((I, 4 * H), (H, 4 * H), (4 * H,)))
h_t, c_t = F.lstm_cell(x_t, h_prev, c_prev, W, U, b)
lstm_names = {"x_t": x_t, "h_{t-1}": h_prev, "c_{t-1}": c_prev, "W": W, "U": U, "b": b,
              "h_t": h_t, "c_t": c_t}
lstm_dot = viz.graph_dot(h_t, c_t, names=lstm_names)
print(lstm_dot.count("shape=box"), "Functions:",
      sorted(set(line.split('label="')[1].split('"')[0] for line in lstm_dot.splitlines()
                 if "shape=box" in line)))
show(viz.draw_graph(h_t, c_t, names=lstm_names, title="one LSTM step"))

# %% [markdown]
# ## The model to look into
#
# As in chapter 8: the real CIFAR-10 when `MINIMM_CIFAR10` points at a local copy (10,000
# training and 2,000 test images, 3 epochs), otherwise — and always in quick mode — the
# labelled synthetic stand-in; the fused CNN + LSTM model, Adam $10^{-3}$, batch 32. Two
# callbacks ride along with `fit` (§13.5 and §13.6 read them): `GradientNorms` records the norm
# of every parameter's gradient and value, `TensorBoard` writes the run to `runs/`.

# %%
(x_train, y_train), (x_test, y_test), path = standin.case_study_images(QUICK, seed=SEED)
EPOCHS = 3 if path is not None else (2 if QUICK else 4)
print(f"real CIFAR-10 from {path}" if path else
      "NOTE: a SYNTHETIC STAND-IN for CIFAR-10, not the real data",
      f"| {len(y_train)} train / {len(y_test)} test images, {EPOCHS} epochs")
vocab = captions.caption_vocabulary()
train = caption_dataset(x_train, y_train, caption_seed=SEED, vocab=vocab)
test = caption_dataset(x_test, y_test, caption_seed=SEED + 1, vocab=vocab)

norms = callbacks.GradientNorms(every=5)
watchers = [norms]
LOG_DIR = os.path.join("runs", "ch13_fused")
shutil.rmtree(LOG_DIR, ignore_errors=True)             # a fresh log for this run
try:
    tensorboard = callbacks.TensorBoard(LOG_DIR, batch_every=10)
    watchers.append(tensorboard)
except ImportError as e:
    tensorboard = None
    print("SKIPPED TensorBoard logging:", e)

model = MultiModalModel(len(vocab), mode="multimodal", rng=np.random.default_rng(SEED))
history = fit(model, train, test, epochs=EPOCHS, batch_size=32, loss_fn=Objective(),
              progress=False,
              seed=SEED, optimizer=mm.optim.Adam(model.parameters(), lr=1e-3),
              callbacks=watchers)
if tensorboard is not None:
    tensorboard.close()
model.eval()
print("test accuracy per epoch:", [round(v, 3) for v in history.history["val_accuracy"]])

# %% [markdown]
# The structure of the trained model, as TensorBoard's graph tab would show it: the graph of
# its loss on two images, with the parameters named. Each layer is one or two Functions: each
# convolution one `Conv2d`, `Flatten` a `Reshape`, and the LSTM over the whole caption one
# `Linear` ($x_tW + b$ for all steps at once) and one fused `LSTMSequence` (chapter 4).

# %%
x2 = mm.tensor(normalize_images(x_test[:2]))
loss2 = F.cross_entropy(model(x2, test["ids"][:2], test["lengths"][:2]), y_test[:2])
model_names = {**dict(model.named_parameters()), "loss": loss2}
print("Functions in the model's graph:",
      viz.graph_dot(loss2, names=model_names).count("shape=box"))
show(viz.draw_graph(loss2, names=model_names, title="the fused model's loss"))

# %% [markdown]
# ## 13.2 Saliency: which pixels move the score
#
# For an image $x$ and a class $c$ with logit $s_c(x)$, the first-order Taylor expansion
# $s_c(x + \delta) \approx s_c(x) + \nabla_x s_c \cdot \delta$ says that the pixels with large
# $|\partial s_c / \partial x|$ are those whose change moves the score most. The **saliency
# map** of Simonyan, Vedaldi & Zisserman (2014) is that gradient's magnitude, maximised over the
# colour channels:
#
# $$M_{ij} = \max_{\text{channel } k} \Bigl|\frac{\partial s_c(x)}{\partial x_{k,i,j}}\Bigr| .$$
#
# It is one backward pass — the same reverse mode as training, only down to the input instead of
# the weights. `viz.saliency(forward, images, target)` returns the map and the gradient (the
# tests check the gradient against finite differences on a tiny float64 CNN). We use the
# logit, not the softmax probability, whose gradient would also depend on every other class.
#
# With a caption that names the true class, the fused model hardly needs the image (chapter 8),
# so we take test images whose caption names **no** class: the prediction rests on the pixels.
# For comparison, the same maps of the *untrained* model: a map that looks the same before and
# after training says nothing about what was learned (Adebayo et al., "Sanity checks for
# saliency maps", 2018).

# %%
texts, kinds, _ = captions.make_captions(y_test, seed=SEED + 1, return_kinds=True)
pick = np.flatnonzero(kinds == captions.NONE)[:5]
images = normalize_images(x_test[pick])                           # float32 (5, 3, 32, 32)
ids, lengths = test["ids"][pick], test["lengths"][pick]
with mm.no_grad():
    predicted = model(mm.tensor(images), ids, lengths).numpy().argmax(axis=1)
print("true:     ", [CLASSES[c] for c in y_test[pick]])
print("predicted:", [CLASSES[c] for c in predicted])
print("captions: ", [texts[i] for i in pick])


def forward(m):
    return lambda img: m(img, ids, lengths)                       # the caption held fixed


sal = viz.saliency(forward(model), images, predicted)
untrained = MultiModalModel(len(vocab), mode="multimodal", rng=np.random.default_rng(SEED + 7))
untrained.eval()
sal_untrained = viz.saliency(forward(untrained), images, predicted)
print("saliency maps", sal["map"].shape, "| largest |∂s/∂x| per image:",
      np.round(sal["map"].max(axis=(1, 2)), 4))

# %%
fig, axes = plt.subplots(3, len(pick), figsize=(2.3 * len(pick), 7.2))
for col, n in enumerate(pick):
    axes[0, col].imshow(x_test[n].transpose(1, 2, 0))
    axes[0, col].set_title(f"true {CLASSES[y_test[n]]}\npredicted {CLASSES[predicted[col]]}",
                           fontsize=8)
    for row, (maps, what) in enumerate(((sal, "trained"), (sal_untrained, "untrained")), 1):
        im = axes[row, col].imshow(maps["map"][col], cmap="hot")
        fig.colorbar(im, ax=axes[row, col], fraction=0.046, label="|∂s/∂x|")
        axes[row, col].set_title(f"saliency, {what}", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle("Saliency of the predicted class's logit (captions name no class)")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 13.3 Grad-CAM: which regions support the class
#
# Pixel gradients are noisy: they show edges the score is sensitive to, pixel by pixel.
# **Grad-CAM** (Selvaraju et al. 2017) asks the same question one level up, of the last
# convolution's feature maps $A^k$ (here the ReLU after the third convolution: 128 maps of
# $4\times4$). Each map gets a weight — the average gradient of the class score over its
# positions — and the weighted sum, rectified, says where the evidence for the class sits:
#
# $$\alpha_k^c = \frac{1}{hw}\sum_{i,j}\frac{\partial s_c}{\partial A^k_{ij}}, \qquad
# \text{CAM}^c = \operatorname{ReLU}\Bigl(\sum_k \alpha^c_k A^k\Bigr) .$$
#
# `viz.gradcam(forward, images, target, layer)` captures the layer's output during the forward
# pass, asks `mm.grad` for $\partial s_c/\partial A$, and upsamples the $4\times4$ map
# bilinearly to $32\times32$ (scaled to a maximum of 1 per image). The article's CNN ends at
# $4\times4$ before its last pooling, so the map is coarse: Grad-CAM can only be as sharp as the
# layer it reads.

# %%
layer = viz.last_conv_features(model.image)
print("Grad-CAM reads", layer, "— the activation after", model.image[6])
cam = viz.gradcam(forward(model), images, predicted, layer)
print("feature maps", cam["activations"].shape, "| weights α", cam["weights"].shape,
      "| CAM before upsampling", cam["cam_raw"].shape)

fig, axes = plt.subplots(2, len(pick), figsize=(2.3 * len(pick), 4.9))
for col, n in enumerate(pick):
    axes[0, col].imshow(x_test[n].transpose(1, 2, 0))
    axes[0, col].set_title(f"{CLASSES[y_test[n]]} → {CLASSES[predicted[col]]}", fontsize=8)
    axes[1, col].imshow(x_test[n].transpose(1, 2, 0))
    im = axes[1, col].imshow(cam["cam"][col], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[1, col].set_title("Grad-CAM overlay", fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
fig.colorbar(im, ax=axes[1].tolist(), fraction=0.02, label="Grad-CAM (1 = strongest evidence)")
fig.suptitle("Grad-CAM of the predicted class on the last convolution's maps")
plt.show()

# %% [markdown]
# ## 13.4 Attention maps: what the [CLS] token looks at
#
# Attention hands us its weights for free: every row of
# $A = \operatorname{softmax}(QK^\top/\sqrt{d_k})$ (chapter 5) is a distribution over the keys,
# and `nn.MultiHeadAttention` keeps the last one in `.attn_weights`, shape $(B, h, L_q, L_k)$
# (chapter 6). To read them on our task we need a model whose attention mixes the modalities:
# chapter 9's `MultiModalTransformer` from `minimm.models`, made small so that it trains
# quickly. With `patch_size=8` the image is cut into $4\times4 = 16$ patches of $8\times8$
# pixels, each projected to $d = 32$ by `nn.PatchEmbedding` (the "image is worth 16×16 words"
# idea at CIFAR scale); the caption's words are embedded to the same $d$; a learned **[CLS]**
# vector goes first; every patch and every word gets a learned position embedding of its
# modality and a modality embedding (image / text); one pre-norm encoder layer with 4 heads
# attends over all $1 + 16 + 16$ tokens, padding masked, and after the encoder's final
# LayerNorm the class is read from the [CLS] output. The sequence is laid out as
# $[\,\text{CLS};\ \text{patch}_1, \dots, \text{patch}_{16};\ \text{word}_1, \dots,
# \text{word}_{16}\,]$, so in an attention row index 0 is [CLS], 1–16 the patches (row by
# row) and 17–32 the caption's word slots. (Chapter 9 trains the same class with 64 patches of
# $4\times4$ pixels and two layers; `viz.attention_weights` reads any model's `.attn_weights`
# the same way.)

# %%
attn_model = MultiModalTransformer(len(vocab), 10, "multimodal", d_model=32, depth=1,
                                   num_heads=4, patch_size=8, max_len=test["ids"].shape[1],
                                   rng=np.random.default_rng(SEED))
N_PATCHES = attn_model.pos_image.shape[0]                  # 16: (32 / 8)² patches
GRID = attn_model.image_size // attn_model.patch_size     # 4: patches per row
PATCHES = slice(1, 1 + N_PATCHES)                          # after [CLS], before the words
WORDS = slice(1 + N_PATCHES, None)
ATTN = "encoder.layers.0.attn"                             # the one layer's attention module
attn_history = fit(attn_model, train, test, epochs=EPOCHS, batch_size=32, loss_fn=Objective(),
                   progress=False, seed=SEED,
                   optimizer=mm.optim.Adam(attn_model.parameters(), lr=3e-3))
attn_model.eval()
print("multimodal Transformer, test accuracy per epoch:",
      [round(v, 3) for v in attn_history.history["val_accuracy"]])

# %%
shown = np.r_[np.flatnonzero(kinds == captions.TRUE)[:2],            # two true captions,
              np.flatnonzero(kinds == captions.WRONG)[:1],           # a wrong one, and one
              np.flatnonzero(kinds == captions.NONE)[:1]]            # that names no class
with mm.no_grad():
    logits = attn_model(mm.tensor(normalize_images(x_test[shown])), test["ids"][shown],
                        test["lengths"][shown])
weights = viz.attention_weights(attn_model)
print({name: w.shape for name, w in weights.items()})
cls_row = viz.query_attention(weights[ATTN], query=0)         # (B, 1 + 16 + 16), heads averaged
patch_part, word_part = cls_row[:, PATCHES], cls_row[:, WORDS]
print("[CLS] attention, share on: itself", np.round(cls_row[:, 0], 3),
      "| patches", np.round(patch_part.sum(1), 3), "| words", np.round(word_part.sum(1), 3))
fig, axes = plt.subplots(2, len(shown), figsize=(3.2 * len(shown), 6))
for col, n in enumerate(shown):
    words = captions.tokenize(texts[n])
    kind = ("no class", "true class", "wrong class")[kinds[n]]
    axes[0, col].imshow(x_test[n].transpose(1, 2, 0))
    grid = viz.upsample_bilinear(patch_part[col].reshape(1, GRID, GRID), (32, 32))[0]
    im = axes[0, col].imshow(grid, cmap="magma", alpha=0.55,
                             vmin=0, vmax=max(patch_part.max(), 1e-6))
    axes[0, col].set_title(f"{CLASSES[y_test[n]]} → {CLASSES[logits.numpy()[col].argmax()]}\n"
                           f"caption: {kind}", fontsize=8)
    axes[0, col].axis("off")
    fig.colorbar(im, ax=axes[0, col], fraction=0.046, label="weight on the patch")
    axes[1, col].bar(range(len(words)), word_part[col, :len(words)], color="C1")
    axes[1, col].set_xticks(range(len(words)), words, rotation=60, fontsize=7)
    axes[1, col].set(ylabel="[CLS] weight on the word", ylim=(0, max(word_part.max(), 1e-6)))
fig.suptitle("What the [CLS] token attends to (one layer, heads averaged)")
plt.tight_layout(); plt.show()

# %% [markdown]
# Four examples are anecdotes. Over the whole test set: how the [CLS] token divides its weight
# between patches and words for each kind of caption, and, among the words, how much one class
# word ("kitten", "lorry", …) gets against one template word ("a", "photo", "of", …).

# %%
class_word_ids = [vocab[w] for names in captions.SYNONYMS for w in names]
rows = []
with mm.no_grad():
    for start in range(0, len(y_test), 250):
        sl = slice(start, start + 250)
        attn_model(mm.tensor(normalize_images(x_test[sl])), test["ids"][sl], test["lengths"][sl])
        rows.append(viz.query_attention(viz.attention_weights(attn_model)[ATTN], 0))
cls_all = np.concatenate(rows)                                   # (N, 33)
words_all = cls_all[:, WORDS]
real = np.arange(words_all.shape[1])[None, :] < test["lengths"][:, None]
is_class = np.isin(test["ids"], class_word_ids) & real
is_template = real & ~is_class
print(f"{'caption kind':>12} {'on patches':>11} {'on words':>9} {'per class word':>15} "
      f"{'per template word':>18}")
attention_by_kind = {}
for k, label in ((captions.TRUE, "true class"), (captions.WRONG, "wrong class"),
                 (captions.NONE, "no class")):
    sel = kinds == k
    per_class = (words_all[sel] * is_class[sel]).sum() / max(is_class[sel].sum(), 1)
    per_template = (words_all[sel] * is_template[sel]).sum() / is_template[sel].sum()
    attention_by_kind[label] = (cls_all[sel, PATCHES].sum(1).mean(),
                                words_all[sel].sum(1).mean(), per_class, per_template)
    print(f"{label:>12} " + " ".join(f"{v:>{w}.3f}" for v, w in
                                     zip(attention_by_kind[label], (11, 9, 15, 18))))

# %% [markdown]
# Read the table, not a hope. Among the words, a class word — the only word of a caption that
# carries information — should get more weight than a template word, if the attention has
# learned anything about the text; how the weight divides between patches and words depends on
# how easy the images are (on the stand-in they are easy, and the patches dominate). On the real
# CIFAR-10 (10,000 training images, 3 epochs) this chapter printed: one class word gets 0.32 of
# the [CLS] token's attention, one template word 0.02; without a class word, the patches get
# 0.78 instead of 0.59. A wrong caption gets the same attention as a true one — the table's
# first two rows: attention shows *where* the model looks, not whether what it found there is
# true, which is chapter 8's lesson about trusting the text, seen from inside. The patch maps are coarse (16 patches) and, with
# one layer, often diffuse; attention weights are one view among several, and they need not
# coincide with what the gradient says matters.
#
# ## 13.5 Per-layer gradient and weight norms during training
#
# `callbacks.GradientNorms` read $\lVert\partial L/\partial\theta\rVert_2$ and
# $\lVert\theta\rVert_2$ of every parameter tensor during the fused model's `fit` above (every
# 5th optimiser step, from `fit`'s `on_after_backward` hook, before the optimiser steps). This
# is the first thing to look at when training misbehaves: a layer whose gradient norm is many
# orders below the others is not learning (the vanishing gradients of chapter 4), spikes
# announce an exploding step, and a weight norm that keeps growing is what $\lambda R(\theta)$
# of chapter 7 would rein in.

# %%
print(f"recorded at {len(norms.steps)} steps")
for name in norms.grad_norms:
    g, v = norms.grad_norms[name], norms.weight_norms[name]
    print(f"{name:>14}: grad norm {g[0]:.2e} -> {g[-1]:.2e}   weight norm {v[0]:.2f} -> "
          f"{v[-1]:.2f}")
fig = norms.plot(title="fused model: per-layer norms during fit")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 13.6 TensorBoard
#
# The `TensorBoard` callback wrote the same run as TensorBoard event files — the epoch's loss
# and accuracies as scalars, every 10th batch's loss, and each epoch a histogram of every
# parameter and its gradient — under `runs/ch13_fused/` (relative to this notebook). In a
# terminal, from the `chapters/` folder,
#
# ```
# tensorboard --logdir runs/
# ```
#
# serves them at http://localhost:6006 like any PyTorch or TensorFlow run (`pip install
# tensorboard`; writing needs only the optional `tensorboardX`). Here we read the scalars back
# with `callbacks.read_scalars`, which parses the event files itself:

# %%
if tensorboard is not None:
    scalars = callbacks.read_scalars(LOG_DIR)
    for tag in sorted(scalars):
        steps_values = scalars[tag]
        print(f"{tag:>22}: {len(steps_values)} points, last (step {steps_values[-1][0]}) "
              f"{steps_values[-1][1]:.4f}")
    val_acc = [v for _, v in scalars["epoch/val_accuracy"]]
    assert np.allclose(val_acc, history.history["val_accuracy"], atol=1e-6)
else:
    print("SKIPPED: tensorboardX is not installed (pip install tensorboardX)")

# %% [markdown]
# ## Summary
#
# * `viz.graph_dot` / `viz.draw_graph`: the graph behind any tensor, as DOT text, rendered by
#   graphviz or matplotlib — the model's structure as its computation.
# * Saliency $= \max_k|\partial s_c/\partial x_k|$: one backward pass to the input; check it
#   against an untrained model before reading anything into it.
# * Grad-CAM: $\operatorname{ReLU}(\sum_k \alpha_k^c A^k)$ with $\alpha_k^c$ the mean gradient
#   of map $k$; coarse, class-specific, as sharp as the layer it reads.
# * Attention maps: rows of the attention weights, here the [CLS] query's over patches and
#   words; they show where the model looks, not whether it is right.
# * Gradient and weight norms per layer, and TensorBoard event files, are callbacks of `fit`.
#
# ## Exercises
#
# 1. **SmoothGrad.** Average the saliency map over 20 copies of the image with Gaussian noise
#    (σ = 0.15 of the pixel range) added. Does the map get cleaner?
# 2. **Grad-CAM one layer earlier.** Run `viz.gradcam` on `model.image[4]` (the ReLU after the
#    second convolution, $13\times13$ maps). What changes?
# 3. **The caption's saliency.** The text enters as integer ids, which have no gradient. Take the
#    gradient of the class score with respect to the *embeddings* instead (capture
#    `model.text.embed` with `viz.capture_output`) and rank the words of a caption by it.
# 4. **Attention and truth.** Over the test set, compare the [CLS] weight on the class word for
#    true and for wrong captions. Is there any difference? What would you need to change in
#    training for there to be one?
# 5. **Log a sweep.** Train the model with three learning rates, each with its own
#    `callbacks.TensorBoard("runs/lr_<value>")`, and compare the curves in TensorBoard.
# 6. **Vanishing gradients, seen.** Train a model whose text branch is a plain tanh RNN over
#    long, padded captions (chapter 4) and plot its per-layer gradient norms with
#    `GradientNorms`.

# %%
# The chapter's own results, in quick mode too
assert lstm_dot.count("shape=box") == 14
assert sal["map"].shape == (len(pick), 32, 32) and np.isfinite(sal["gradient"]).all()
assert cam["cam"].shape == (len(pick), 32, 32) and cam["cam"].max() <= 1.0 + 1e-12
assert np.allclose(cls_row.sum(axis=1), 1, atol=1e-5)
assert np.allclose(cls_all.sum(axis=1), 1, atol=1e-5)
assert cls_all.shape == (len(y_test), 1 + N_PATCHES + test["ids"].shape[1])      # (N, 33)
assert len(norms.steps) >= EPOCHS and all(len(v) == len(norms.steps)
                                          for v in norms.grad_norms.values())
assert history.history["val_accuracy"][-1] > 0.2
print("chapter 13: all checks passed")
