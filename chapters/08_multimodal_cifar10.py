# %% [markdown]
# # 8. The case study: a multimodal CIFAR-10 classifier, end to end
#
# The article **"多模态大模型：技术原理与实战"** closes its technical part with a case study
# (§4.3, with the walk-through in §5): classify CIFAR-10 images with a model that has a **CNN
# image branch**, an **LSTM text branch**, **fuses** the two by concatenation and predicts the
# class with a softmax layer, trained with Adam and categorical cross-entropy for 10 epochs
# with batch 32, and then plots the accuracy curves (§5.4). Every piece has its own chapter
# already — convolution (3), LSTM (4), the loss (2, 7), Adam — so this one puts them together:
#
# 1. the architecture of §2.3 and where each box lives in `minimm/models.py`;
# 2. the steps of §3.2: preprocess (normalise the images, tokenise the captions), extract
#    features, fuse, predict — with the tensor shape printed at every stage;
# 3. a gradient check of the **whole** model, every parameter of both branches;
# 4. training with `minimm.train.fit` of three models — image only, text only, fused — and the
#    §5.4 curves, the test accuracies side by side and the fused model's confusion matrix (§9.4);
# 5. what the full-size run gives.
#
# Nothing here is new library code: the model is `minimm.models.MultiModalModel`, the training
# loop `minimm.train.fit`, the plots `minimm.plot`, the data `minimm.data`.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import minimm as mm
from minimm import functional as F
from minimm import metrics
from minimm import plot as mmplot
from minimm.data import CLASSES, captions, cifar10
from minimm.models import MultiModalModel
from minimm.experiments.cifar10 import Objective, caption_dataset
from minimm.train import evaluate, fit

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: a small stand-in dataset
SEED = 0                                        # change it to see the spread of the results
print("minimm", mm.__version__, "| quick mode:", QUICK)


# %% [markdown]
# ## 8.1 The architecture (§2.3)
#
# The article describes every multimodal model as four boxes:
#
# $$\underbrace{(x^{\text{img}},\ x^{\text{txt}})}_{\text{input module}}
# \;\longrightarrow\;
# \underbrace{h^{\text{img}} = f_{\text{CNN}}(x^{\text{img}}),\quad h^{\text{txt}} = f_{\text{LSTM}}(x^{\text{txt}})}_{\text{per-modality features}}
# \;\longrightarrow\;
# \underbrace{z = [\,h^{\text{img}};\ h^{\text{txt}}\,]}_{\text{fusion (concatenation)}}
# \;\longrightarrow\;
# \underbrace{\hat y = \operatorname{softmax}(z W + b)}_{\text{prediction}} .$$
#
# In the case study $h^{\text{img}} \in \mathbb{R}^{512}$ (Conv32-Pool-Conv64-Pool-Conv128-Pool,
# flattened), $h^{\text{txt}} \in \mathbb{R}^{128}$ (the LSTM's last hidden state), so
# $z \in \mathbb{R}^{640}$ and $W \in \mathbb{R}^{640\times 10}$. Concatenation is the simplest
# fusion: the prediction layer sees both feature vectors and learns how much to trust each —
# $zW = h^{\text{img}} W_{\text{img}} + h^{\text{txt}} W_{\text{txt}}$, a sum of two "votes" in
# logit space, with $W$ split into its first 512 and last 128 rows. Training it is minimising
#
# $$L(\theta) = -\frac1N\sum_{n=1}^{N} \log \hat y_{n, y_n},$$
#
# the categorical cross-entropy of §3.2 step 5 (chapter 2), by Adam.
#
# The three boxes after the input are the three attributes of `MultiModalModel`: `image`,
# `text`, `head`. The softmax lives in the loss (`F.cross_entropy` takes logits — the same
# model, numerically stable).

# %% [markdown]
# ## 8.2 The data (§3.2 step 1)
#
# **Images.** The chapter uses the real CIFAR-10 only if you already have it: a path in the
# environment variable `MINIMM_CIFAR10` (the archive `cifar-10-binary.tar.gz` or its extracted
# folder), or the archive in minimm's cache `~/.cache/minimm/` (where
# `python -m minimm train --download` puts it). It never downloads anything. Otherwise — and
# always in quick mode — it builds a small **stand-in** with the same shapes: uint8 images
# $3\times32\times32$ in 10 classes, where the class sets a colour and the orientation of a
# stripe pattern, drowned in strong pixel noise so that an image-only model does *not* reach
# 100 %.

# %%
def find_cifar10():
    # a local copy the user already has, or None; never the network
    candidates = [os.environ.get("MINIMM_CIFAR10"),
                  os.path.join(cifar10.cache_dir(), cifar10.ARCHIVE_NAME),
                  os.path.join(cifar10.cache_dir(), cifar10.FOLDER_NAME)]
    return next((p for p in candidates if p and os.path.exists(os.path.expanduser(p))), None)


def stand_in_images(n, seed, noise=180.0):
    # (n, 3, 32, 32) uint8 images and int64 labels: class c = a colour + stripes at angle (c mod 5)·36°
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    palette = np.array([[230, 60, 60], [60, 200, 60], [60, 60, 230], [220, 220, 60],
                        [200, 60, 200], [60, 200, 200], [240, 140, 40], [140, 80, 40],
                        [150, 150, 150], [30, 30, 30]], dtype=np.float64)
    yy, xx = np.mgrid[0:32, 0:32]
    angle = (labels % 5) * np.pi / 5
    phase = rng.uniform(0, 2 * np.pi, n)
    stripes = np.sin(0.8 * (np.cos(angle)[:, None, None] * xx
                            + np.sin(angle)[:, None, None] * yy) + phase[:, None, None])
    colour = 0.5 * rng.uniform(60, 180, (n, 3, 1, 1)) + 0.5 * palette[labels][:, :, None, None]
    images = colour + 50 * stripes[:, None] + noise * rng.standard_normal((n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


path = None if QUICK else find_cifar10()
if path is not None:
    N_TRAIN, N_TEST, EPOCHS = 10_000, 2_000, 3
    (x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(path=path, download=False)
    x_train, y_train = x_train[:N_TRAIN], y_train[:N_TRAIN]
    x_test, y_test = x_test[:N_TEST], y_test[:N_TEST]
    print(f"real CIFAR-10 from {path}: {len(y_train)} train / {len(y_test)} test images")
else:
    N_TRAIN, N_TEST, EPOCHS = (2_000, 500, 2) if QUICK else (6_000, 1_000, 4)
    x_train, y_train = stand_in_images(N_TRAIN, seed=100 + SEED)
    x_test, y_test = stand_in_images(N_TEST, seed=200 + SEED)
    print("NOTE: this is a SYNTHETIC STAND-IN for CIFAR-10, not the real data"
          + (" (quick mode)" if QUICK else " (no local copy found; set MINIMM_CIFAR10)") + ":")
    print(f"  {len(y_train)} train / {len(y_test)} test images, the class coded by colour and "
          f"stripe angle plus noise. The accuracies below are about this stand-in.")
print("images", x_train.shape, x_train.dtype, "| labels", y_train.shape, y_train.dtype,
      "| class counts", np.bincount(y_train, minlength=10))

# %%
# stand-in: top row the same images without the noise (what the class looks like), bottom
# row as trained; real data: two images per class
rows = [x_train, x_train]
if path is None:
    rows[0] = stand_in_images(N_TRAIN, seed=100 + SEED, noise=0.0)[0]   # same draws, no noise
fig, axes = plt.subplots(2, 10, figsize=(12, 2.8))
for c in range(10):
    i, j = np.flatnonzero(y_train == c)[:2]
    for row, (images, k) in enumerate(zip(rows, (i, j) if path is not None else (i, i))):
        axes[row, c].imshow(images[k].transpose(1, 2, 0))        # CHW -> HWC for imshow
        axes[row, c].axis("off")
    axes[0, c].set_title(CLASSES[c], fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# **Normalising** (§3.2 step 1) maps each channel to zero mean and unit spread with the official
# CIFAR-10 statistics, $\tilde x_c = (x_c/255 - \mu_c)/\sigma_c$. `fit` does it batch by batch on
# the device (`minimm.data.normalize_images`), so the dataset stays uint8 in memory — 4× smaller
# than float32. (The article also resizes; CIFAR-10 is already 32×32.)

# %%
x = mm.tensor(mm.data.normalize_images(x_train[:32]))       # float32 (32, 3, 32, 32)
print(x.dtype, x.shape, "| channel means", x.numpy().mean(axis=(0, 2, 3)).round(2),
      "| stds", x.numpy().std(axis=(0, 2, 3)).round(2))

# %% [markdown]
# **Text.** CIFAR-10 has no text, and the article's code reads captions from an undefined
# `load_data`. minimm's captions are **synthetic**: generated from templates with seeded noise
# (`minimm.data.captions.make_captions`). Independently for each image, with probability
# $p_{\text{true}} = 0.5$ the caption names the true class ("a blurry photo of a kitten"), with
# $p_{\text{wrong}} = 0.2$ a wrong class in the same templates, and otherwise (0.3) no class ("a
# photo of something"). A caption that names class $c$ is right with probability
# $0.5/(0.5+0.2) = 0.71$, so the best a text-only model can do is
#
# $$\text{acc}_{\text{text}}^{\max} = p_{\text{true}} + \frac{1 - p_{\text{true}} - p_{\text{wrong}}}{10}
# = 0.5 + 0.03 = 0.53 .$$
#
# These captions test the plumbing and the fusion, not language understanding: the image has to
# settle the 50 % of captions that name nothing or the wrong class. The test captions are drawn
# with another seed than the training ones.

# %%
print("text alone can reach at most", captions.text_only_accuracy())
vocab = captions.caption_vocabulary()
train = caption_dataset(x_train, y_train, caption_seed=SEED, vocab=vocab)       # max_len 16
test = caption_dataset(x_test, y_test, caption_seed=SEED + 1, vocab=vocab)
print(vocab, "| ids", train["ids"].shape, train["ids"].dtype, "| lengths", train["lengths"][:8])

# the same draw as caption_dataset's (the draws depend on the number of labels, so redo all)
texts, kinds, named = captions.make_captions(y_train, seed=SEED, return_kinds=True)
for i, (t, k) in enumerate(zip(texts[:6], kinds[:6])):
    kind = ("none", "TRUE", "wrong")[k]
    print(f"{CLASSES[y_train[i]]:>10} | {kind:>5} | {t!r:40} -> {captions.tokenize(t)}")
    print(f"{'':>10} | {'':>5} | ids {train['ids'][i].tolist()}")

# %% [markdown]
# Tokenising is lowercase + split on non-letters; the vocabulary maps each word to an id
# (`<pad>` = 0, `<unk>` = 1); `encode` pads every caption with zeros **after** its words to
# 16 ids and keeps its length, so the LSTM's feature is its hidden state at the caption's own
# last word, not after a run of padding. The captions actually drawn for training agree with
# their image as often as promised:

# %%
print("share naming the true class:", (kinds == captions.TRUE).mean().round(3),
      "| a wrong class:", (kinds == captions.WRONG).mean().round(3),
      "| none:", (kinds == captions.NONE).mean().round(3))

# %% [markdown]
# ## 8.3 The model, stage by stage (§3.2 steps 2–4, §4.3)
#
# The article's Keras code does not run as printed. minimm's `MultiModalModel` fixes three bugs:
#
# * **no flatten** — the last pooling layer leaves a $128\times2\times2$ map, and Dense on it, or
#   concatenating it with a 128-vector, fails; `ImageBranch` ends in `Flatten` (512 features);
# * **`vocab_size` and `embedding_dim` are undefined** — here they are constructor arguments
#   (`len(vocab)` and 64);
# * **`load_data` is undefined** (and CIFAR-10 has no text) — here `minimm.data` reads the binary
#   archive and generates the captions above.

# %%
model = MultiModalModel(len(vocab), num_classes=10, mode="multimodal",
                        rng=np.random.default_rng(SEED))
print(model)

def count(module):
    return sum(p.data.size for p in module.parameters())

for name in ("image", "text", "head"):
    print(f"{name:>6}: {count(getattr(model, name)):>7,} parameters")
print(f" total: {count(model):>7,} parameters")

# %% [markdown]
# Now one batch through it, printing the shape after every stage. The image branch is an
# `nn.Sequential`, so we can step through its layers; $3\times3$ "valid" convolutions take 2
# pixels off, pooling halves (rounding down): $32 \to 30 \to 15 \to 13 \to 6 \to 4 \to 2$.

# %%
ids, lengths = train["ids"][:32], train["lengths"][:32]
with mm.no_grad():
    h = x
    print(f"{'input image':>28} {h.shape}")
    for layer in model.image:
        h = layer(h)
        print(f"{type(layer).__name__:>28} {h.shape}")
    h_img = h                                                # (32, 512)

    print(f"{'input caption ids':>28} {ids.shape}")
    e = model.text.embed(ids)                                # (32, 16, 64)
    print(f"{'Embedding':>28} {e.shape}")
    h_txt = model.text(ids, lengths)                         # (32, 128): h at each caption's last word
    print(f"{'LSTM (h at last word)':>28} {h_txt.shape}")

    z = mm.concat([h_img, h_txt], axis=1)                    # (32, 640)
    print(f"{'concat (fusion)':>28} {z.shape}")
    logits = model.head(z)                                   # (32, 10)
    print(f"{'Linear (logits)':>28} {logits.shape}")
    # the same thing in one call, as fit uses it
    print("matches model(images, ids, lengths):",
          np.allclose(logits.numpy(), model(x, ids, lengths).numpy(), atol=1e-5))
    loss = F.cross_entropy(logits, train["labels"][:32]).item()
    print(f"untrained loss {loss:.3f} ≈ log 10 = {np.log(10):.3f}")

# %% [markdown]
# ## 8.4 Gradient check of the whole model
#
# Each operation was checked on its own in the earlier chapters; here we check that they compose:
# the derivative of the loss with respect to **every parameter of both branches and the head**
# (and the input image), against central differences. Finite differences need float64, so we
# take a float64 copy of the model and two images. `mm.gradcheck` wants a function of its
# inputs, so `loss_of` makes the loss a function of the parameters: it puts the gradcheck's
# tensors in place of the model's parameters for one call (bypassing `Module.__setattr__`, so the
# model's registry is not touched) and puts the originals back. With ~360 000 numbers to check,
# random mode compares directional derivatives along a few random directions.

# %%
model64 = MultiModalModel(len(vocab), rng=np.random.default_rng(SEED))
model64.load_state_dict(model.state_dict())
for p in model64.parameters():
    p.data = p.data.astype(np.float64)
params = dict(model64.named_parameters())
names = list(params)

def owner(name):
    # "text.lstm.W" -> (the LSTM module, "W")
    module, *path = model64, *name.split(".")
    for part in path[:-1]:
        module = module._modules[part]
    return module, path[-1]

x64 = mm.data.normalize_images(x_train[:2]).astype(np.float64)
ids2, len2, y2 = train["ids"][:2], train["lengths"][:2], train["labels"][:2]

def loss_of(image, *values):
    saved = [(*owner(n), params[n]) for n in names]
    for (module, attr, _), v in zip(saved, values):
        object.__setattr__(module, attr, v)
    try:
        return F.cross_entropy(model64(image, ids2, len2), y2)
    finally:
        for module, attr, p in saved:
            object.__setattr__(module, attr, p)

print("checking", ", ".join(names))
print("gradcheck:", mm.gradcheck(loss_of, [x64] + [params[n].data for n in names],
                                 mode="random", n_directions=4))

# %% [markdown]
# ## 8.5 Training three models (§3.2 step 5, §4.3, §5)
#
# `fit` is the article's `model.fit(...)`: shuffled mini-batches of 32, Adam with learning rate
# $10^{-3}$, cross-entropy, and after each epoch an evaluation on the held-out set (here: the
# test set, as the article does). We train the same architecture three times — the image branch
# alone (512 → 10), the text branch alone (128 → 10) and the fused model (640 → 10) — with the
# same seed, data and settings.

# %%
histories, results, times = {}, {}, {}
for mode in ("image", "text", "multimodal"):
    m = MultiModalModel(len(vocab), mode=mode, rng=np.random.default_rng(SEED))
    t0 = time.perf_counter()
    histories[mode] = fit(m, train, test, epochs=EPOCHS, batch_size=32, loss_fn=Objective(),
                          optimizer=mm.optim.Adam(m.parameters(), lr=1e-3),
                          progress=False, seed=SEED)
    times[mode] = time.perf_counter() - t0
    results[mode] = evaluate(m, test, Objective())
    print(f"{mode:>10}: test accuracy per epoch",
          [round(a, 3) for a in histories[mode].history["val_accuracy"]],
          f"| {times[mode]:.1f} s")

# %% [markdown]
# §5.4: the accuracy curves of the fused model, training and test, with `minimm.plot`:

# %%
display(mmplot.plot_accuracy(histories["multimodal"], val_label="test",
                             title="Fused model: accuracy (§5.4)"))

# %%
acc = {mode: results[mode]["accuracy"] for mode in results}
epochs = np.arange(1, EPOCHS + 1)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for mode, style in (("image", "o-"), ("text", "s-"), ("multimodal", "^-")):
    ax1.plot(epochs, histories[mode].history["val_accuracy"], style, label=mode)
ax1.axhline(captions.text_only_accuracy(), color="gray", ls=":", label="text ceiling 0.53")
ax1.axhline(0.1, color="gray", ls="--", label="chance")
ax1.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy per epoch",
        xticks=epochs, ylim=(0, 1))
ax1.legend()
bars = ax2.bar(list(acc), list(acc.values()), color=["C0", "C1", "C2"])
ax2.bar_label(bars, fmt="%.3f")
ax2.axhline(captions.text_only_accuracy(), color="gray", ls=":")
ax2.set(ylabel="test accuracy", title="Image only vs text only vs fused", ylim=(0, 1))
plt.tight_layout(); plt.show()

# %% [markdown]
# The text-only model stays near its ceiling of 0.53 however long it trains (on a few hundred
# test images it can land a little above it: the share of true captions is itself random); the
# image-only model is limited by what the CNN can read from the pixels; the fused model beats
# both, because the two sources make *different* mistakes. When the caption names the true
# class (half the time), the text is nearly decisive; when it names nothing or a wrong class,
# the image has to decide. The confusion matrix of the fused model (§9.4: `metrics.confusion_matrix`,
# `plot.plot_confusion_matrix`) shows where it still errs (on the real CIFAR-10, expect the familiar
# confusions among similar animals such as cat ↔ dog, and between automobile and truck):

# %%
fused = results["multimodal"]
cm = metrics.confusion_matrix(fused["labels"], fused["predictions"], 10)
print("fused: accuracy", round(fused["accuracy"], 3),
      "| macro F1", round(metrics.f1_score(fused["labels"], fused["predictions"], 10), 3))
display(mmplot.plot_confusion_matrix(cm, CLASSES, normalize=True,
                                     title="Fused model: confusion matrix (rows = true class)"))

# %% [markdown]
# Which captions does the image rescue? Split the test set by the kind of caption each image got:

# %%
_, test_kinds, _ = captions.make_captions(y_test, seed=SEED + 1, return_kinds=True)
print(f"{'caption kind':>14} {'share':>6} {'image':>7} {'text':>7} {'fused':>7}")
for kind, label in ((captions.TRUE, "true class"), (captions.WRONG, "wrong class"),
                    (captions.NONE, "no class")):
    sel = test_kinds == kind
    row = [(results[m]["predictions"][sel] == y_test[sel]).mean() for m in results]
    print(f"{label:>14} {sel.mean():>6.2f} " + " ".join(f"{a:>7.3f}" for a in row))

# %% [markdown]
# ## 8.6 At full scale
#
# The same model, data pipeline and training loop run from the command line on all 50 000
# training images, the article's 10 epochs, batch 32, Adam $10^{-3}$:
#
# ```
# python -m minimm train --model multimodal --epochs 10      # --data PATH or --download
# ```
#
# On a 2-core CPU (NumPy) this reached **test accuracy 0.792 in 660 s** (macro F1 0.793). After
# only 1 epoch on 10 000 real images, the three models reached **image 0.435, text 0.525,
# fused 0.636** — the same ordering as above: text near its 0.53 ceiling already, the small CNN
# far from done, and fusion clearly ahead of both. Expect the image-only CNN to end around
# 0.65–0.75 after 10 epochs, and the fused model above it by roughly the share of images whose
# caption names the true class and the CNN gets wrong. On a GPU (`--device cuda`, CuPy) the same
# code runs unchanged.

# %%
best_single = max(acc["image"], acc["text"])
print({k: round(v, 3) for k, v in acc.items()}, "| best single branch", round(best_single, 3))
# fusion must help: well above chance, clearly above text alone, and at least as good as the
# better single branch (up to a small tolerance for a short run)
assert acc["multimodal"] > 0.2, acc
assert acc["multimodal"] > acc["text"] + 0.1, acc
assert acc["multimodal"] >= best_single - 0.05, acc

# %% [markdown]
# ## Summary
#
# * The article's §2.3 architecture is four boxes, and `MultiModalModel` has one attribute per
#   box after the input: `image` (CNN, $3\times32\times32 \to 512$), `text` (Embedding + LSTM,
#   16 ids $\to 128$), and `head` on their concatenation ($640 \to 10$ logits).
# * The article's code needed three fixes to run: a `Flatten`, a defined vocabulary size and
#   embedding dimension, and a data loader — with synthetic, seeded, noisy captions, since
#   CIFAR-10 has no text. With $p_{\text{true}} = 0.5$, $p_{\text{wrong}} = 0.2$ the text alone
#   is worth at most 0.53.
# * The gradient of the loss with respect to every parameter of the composed model agrees with
#   finite differences.
# * Trained with `fit` (Adam $10^{-3}$, batch 32), fusion by concatenation beats both single
#   branches: each modality covers the other's failures. On the real data: 0.792 after 10 epochs.
#
# ## Exercises
#
# 1. **Caption noise.** Rebuild the datasets with `caption_dataset(..., p_true=0.8, p_wrong=0.05)`
#    and with `p_true=0.2`. Predict the text-only ceiling with `captions.text_only_accuracy`,
#    then measure the three models. When does fusion stop helping?
# 2. **Adversarial captions.** Set `p_wrong > p_true`. What does the text-only model learn now?
#    Does the fused model learn to *distrust* the text? Look at the head's weights: compare the
#    norms of the first 512 rows (image) and the last 128 (text) of `model.head.W`.
# 3. **Attention fusion.** Replace concatenation with cross-attention (chapter 6): project the
#    text feature to a query and the image's $2\times2$ feature map (before `Flatten`) to 4 keys
#    and values with `nn.MultiHeadAttention`, and classify from the result. Compare accuracy and
#    parameter count.
# 4. **Multi-task head.** Build `MultiModalModel(len(vocab), num_superclasses=2)` and train it
#    with `caption_dataset(..., superlabels=True)` and `fit(..., loss_fn=Objective(lam=1e-4))`
#    — the objective $\sum_i \ell_i + \lambda R(\theta)$ of chapter 7. Does the vehicle/animal
#    task help the 10-class accuracy? Sweep `lam`.
# 5. **Padding.** Encode the captions with `padding="pre"` and train the text model *without*
#    `lengths`. Why does post-padding need the lengths, and what goes wrong without them?
# 6. **Full scale.** Run `python -m minimm train --model image --epochs 10` and the same with
#    `--model text` and `--model multimodal`; plot the three `history.json` curves together.
