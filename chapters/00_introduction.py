# %% [markdown]
# # 0. Introduction: multimodal models, and the library we build them with
#
# This book follows the survey article **"多模态大模型：技术原理与实战"** (*multimodal large
# models: principles and practice*). Every formula the article states is derived in a chapter,
# transcribed into a small library — **minimm** ("mini multimodal"), written in NumPy and
# running unchanged on an NVIDIA GPU through CuPy — checked against finite differences, and
# finally used to train the article's image + text model on CIFAR-10.
#
# This chapter covers the article's §1–§2: what multimodal data and models are and the
# architecture every chapter builds towards; then a tour of minimm, the notation every chapter
# uses, a map of the book, and where the article's discussion sections (§6–§8, and the
# appendix questions that are not built elsewhere) find their place.

# %% [markdown]
# ## 0.1 Multimodal data and multimodal models (article §1–§2)
#
# *(A summary in our own words of the article's opening sections.)*
#
# A **modality** is a kind of signal: images, text, audio, video, tables, sensor readings.
# Each has its own structure — an image is a grid of pixels with local correlations, a
# sentence is a sequence of discrete tokens whose meaning depends on order. **Multimodal
# data** describes one thing through several modalities at once: a photo with its caption, a
# video with its soundtrack, a medical scan with the doctor's notes.
#
# A **multimodal model** takes more than one modality as input and learns from all of them
# together. The motivation is complementarity: each modality carries information the other
# lacks or blurs, so a model that fuses them can be more accurate and more robust than any
# single-modality model — and can do things no single modality allows, such as answering a
# question about an image or retrieving pictures by a sentence. The article surveys how
# large models of this kind are built (Transformers, BERT-style text encoders, ViT-style image
# encoders) and trained.
#
# ### The architecture (article §2.3)
#
# The article describes a multimodal model as four stages:
#
# 1. **input module** — each modality is preprocessed (images resized and normalised, text
#    tokenised);
# 2. **feature extraction**, one branch per modality — a CNN for images, an RNN (LSTM) for
#    text;
# 3. **fusion** — the per-modality features are combined into one representation (in the
#    article's case study: concatenation);
# 4. **prediction module** — a classifier (a dense layer with softmax) maps the fused
#    representation to the output.

# %%
import importlib.util
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch

import minimm as mm
from minimm import functional as F

QUICK = os.environ.get("MINIMM_QUICK") == "1"   # the tests set this; nothing here is slow anyway


# %%
def box(ax, xy, text, color, w=2.3, h=0.9):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
                                fc=color, ec="black", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def arrow(ax, start, end):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="->", lw=1.2))


fig, ax = plt.subplots(figsize=(10, 3.6))
stages = ["1 input", "2 feature extraction", "3 fusion", "4 prediction"]
for x, s in zip([1.5, 4.5, 7.5, 10.3], stages):
    ax.text(x, 3.3, s, ha="center", fontsize=10, fontweight="bold")

box(ax, (1.5, 2.3), "image 3×32×32\n(resize, normalise)", "#cfe2f3")
box(ax, (1.5, 0.7), "synthetic caption\n(tokenise, ids)", "#fce5cd")
box(ax, (4.5, 2.3), "CNN\nConv32-Pool-Conv64-Pool\nConv128-Pool, flatten", "#cfe2f3", h=1.1)
box(ax, (4.5, 0.7), "Embedding + LSTM(128)\nlast hidden state", "#fce5cd", h=1.1)
box(ax, (7.5, 1.5), "concatenate\n[image ; text]", "#d9ead3")
box(ax, (10.3, 1.5), "Dense + softmax\n10 classes", "#ead1dc", w=2.0)

arrow(ax, (2.7, 2.3), (3.3, 2.3))
arrow(ax, (2.7, 0.7), (3.3, 0.7))
arrow(ax, (5.7, 2.2), (6.3, 1.7))
arrow(ax, (5.7, 0.8), (6.3, 1.3))
arrow(ax, (8.7, 1.5), (9.25, 1.5))

ax.set_xlim(0, 11.6)
ax.set_ylim(0, 3.7)
ax.axis("off")
ax.set_title("The article's §2.3 architecture, as the §4.3/§5 case study instantiates it")
fig.tight_layout()
plt.show()

# %% [markdown]
# The case study of the article (§4.3, §5) classifies **CIFAR-10** images this way. One
# honest caveat up front: **CIFAR-10 has no text.** The captions used in this book are
# **synthetic** — generated per image from templates, with a documented, seeded amount of
# noise (some captions name the true class, some a wrong one, some none). They exist so
# that "text only", "image only" and the fused model give different, honest accuracies;
# they are not real human descriptions, and accuracies with them say nothing about real
# multimodal data.
#
# (The article's printed code does not run as printed — it never flattens the image
# features and leaves `vocab_size`, `embedding_dim` and `load_data` undefined. Chapter 8
# builds a version that runs, and measures it.)

# %% [markdown]
# ## 0.2 A tour of minimm
#
# The library is a house of layers; each layer imports only the layers below it, and each
# is small enough to read in one sitting.
#
# | layer | package / module | owns |
# |---|---|---|
# | 0 backend | `minimm/backend.py` | the array module (NumPy or CuPy), devices, moving arrays |
# | 1 autograd | `minimm/autograd.py` | `Tensor`, `Function` (forward on arrays, backward in differentiable ops), the graph, backward, `no_grad` |
# | 2 functional | `minimm/functional/` | every differentiable operation: math, shape, activations, conv, recurrent, attention, losses |
# | 3 nn | `minimm/nn/` | `Module`, `Parameter`, layers that own parameters |
# | 4 optim | `minimm/optim.py` | SGD (momentum, weight decay), Adam |
# | 5 models | `minimm/models/` | the article's multimodal model (`models/multimodal.py`), and the later chapters' models |
# | 6 training | `minimm/train.py`, `metrics.py`, `callbacks.py`, `plot.py` | fit / evaluate / History, metrics, training callbacks, plots |
# | data | `minimm/data/` | CIFAR-10 download and parsing; synthetic captions; the chapters' stand-in images; batching |
# | tools | `minimm/gradcheck.py`, `minimm/viz.py`, `minimm/__main__.py` | numerical gradient checks; looking inside models; the command line |
#
# The book is written alongside the library, so not every layer may exist in your copy yet.
# The cell below asks Python which modules are present, without importing the missing ones:

# %%
layers = [
    ("0 backend", "minimm.backend"), ("1 autograd", "minimm.autograd"),
    ("2 functional", "minimm.functional"), ("3 nn", "minimm.nn"), ("4 optim", "minimm.optim"),
    ("5 models", "minimm.models"), ("6 training", "minimm.train"), ("6 metrics", "minimm.metrics"),
    ("6 callbacks", "minimm.callbacks"), ("data", "minimm.data"), ("tools", "minimm.gradcheck"),
    ("tools (viz)", "minimm.viz"), ("tools (CLI)", "minimm.__main__"),
]
present = {}
for layer, module in layers:
    present[module] = importlib.util.find_spec(module) is not None
    print(f"{layer:13s} {module:20s} {'built' if present[module] else 'not yet'}")

# %%
# the public names of what is built so far
print("Tensor ops   :", ", ".join(n for n in ("add", "mul", "matmul", "exp", "log", "sum", "mean",
                                             "reshape", "transpose", "concat", "stack") if hasattr(F, n)))
print("activations  :", ", ".join(n for n in ("relu", "sigmoid", "tanh", "softmax", "log_softmax")
                                  if hasattr(F, n)))
print("losses       :", ", ".join(n for n in ("cross_entropy", "multitask_loss") if hasattr(F, n)))
if present["minimm.nn"]:
    from minimm import nn
    print("nn           :", ", ".join(n for n in ("Module", "Parameter", "Sequential", "Linear",
                                                  "Conv2d", "LSTM", "MultiHeadAttention")
                                      if hasattr(nn, n)))

# %% [markdown]
# ## 0.3 A first taste: a tensor, an operation, a gradient
#
# minimm looks like PyTorch on purpose. Make a tensor that wants a gradient, compute with
# it, call `backward()`, read `.grad`. For
# $L = \sum_i \tanh(w_i x_i)$ the gradient is
# $\partial L/\partial w_i = x_i\,(1-\tanh^2(w_i x_i))$ — chapter 1 explains how the library
# gets there.

# %%
x = mm.tensor([1.0, 2.0, -0.5])                      # (3,) float32 data
w = mm.tensor([0.5, -0.3, 2.0], requires_grad=True)  # (3,) a "parameter"
L = F.tanh(w * x).sum()                              # () a scalar
L.backward()

expected = x.numpy() * (1 - np.tanh(w.numpy() * x.numpy()) ** 2)
print("L        =", L)
print("dL/dw    =", w.grad)
print("by hand  =", expected)

# %% [markdown]
# ## 0.4 NumPy or CuPy
#
# minimm runs on the CPU with NumPy or on an NVIDIA GPU with CuPy, with the same code: every
# operation asks its *inputs* which array module they belong to, so moving the data
# (`device="cuda"`, `tensor.to("cuda")`, `module.to("cuda")`) is all it takes. `mm.gpu_available()`
# is True only when CuPy imports *and* sees a CUDA device.

# %%
device = "cuda" if mm.gpu_available() else "cpu"
print("GPU available:", mm.gpu_available(), "-> using", device)

a = mm.tensor(np.arange(6.0).reshape(2, 3), device=device, requires_grad=True)
(a * a).sum().backward()
print("array module:", mm.get_array_module(a).__name__, "| grad on", a.grad.device)
print(mm.to_numpy(a.grad))

# %% [markdown]
# ## 0.5 Notation
#
# One table for the whole book; every chapter uses these letters with these meanings.
#
# | symbol | meaning | where it first matters |
# |---|---|---|
# | $N$ | batch size: the samples in a mini-batch (or in a data set, in a mean over it); index $n$ | ch02, everywhere after |
# | $x$, $x_n$ | an input (a vector, an image, a sequence); the $n$-th sample | ch01 |
# | $y_n$, $\hat y_n$ | the true label of sample $n$; the predicted label $\arg\max_k p_{n,k}$ | ch02 |
# | $K$ | number of classes; index $k$ (10 for CIFAR-10) | ch02 |
# | $z$, $p$ | logits $z \in \mathbb{R}^K$ (scores before the softmax); probabilities $p = \operatorname{softmax}(z)$ | ch02 |
# | $\ell$, $L$ | a loss term; the total loss that is minimised | ch02, ch07 |
# | $\theta$, $\eta$ | all parameters; the learning rate | ch01, ch07 |
# | $W$, $b$ | a weight matrix, stored (in, out) so that a layer is $xW + b$; a bias | ch02 |
# | $\bar v$ | the gradient $\partial L/\partial v$ of the loss with respect to a tensor $v$ (same shape as $v$) | ch01 |
# | $J$ | a Jacobian, $\bar x = J^\top \bar y$ | ch01 |
# | $\odot$, $\sigma$ | elementwise product; the logistic sigmoid $1/(1+e^{-z})$ | ch04 |
# | $C$, $H \times W$ | image channels, height and width: images are $(N, C, H, W)$ (and $W$ without a size is a weight) | ch03 |
# | $C_{\text{out}}$, $k_h \times k_w$, $s$, $p$ | output channels, kernel size, stride, zero padding of a convolution | ch03 |
# | $T$, $t$ | number of time steps of a sequence; the step | ch04 |
# | $h_t$, $c_t$, $H$ | LSTM hidden and cell state at step $t$; the hidden size ($H$ as a size: hidden units) | ch04 |
# | $i, f, g, o$ | the LSTM's input, forget, candidate and output gates (blocks of $z_t \in \mathbb{R}^{4H}$) | ch04 |
# | $Q, K, V$ | queries, keys, values (matrices; $K$ as a matrix is the keys, as a count the classes) | ch05 |
# | $L_q$, $L_k$ | number of queries and of keys (sequence lengths in attention) | ch05 |
# | $d_k$, $d_v$, $d_\text{model}$ | key/query width, value width, the model width | ch05, ch06 |
# | $h$, $W^Q_i, W^K_i, W^V_i, W^O$ | number of heads; head $i$'s projections and the output projection | ch06 |
# | $M$ | number of tasks in the multi-task loss $\sum_{i=1}^{M}\ell_i + \lambda R(\theta)$ | ch07 |
# | $\lambda$, $R(\theta)$ | regularisation strength; the regulariser ($\sum\theta^2$ or $\sum\lvert\theta\rvert$) | ch07 |
# | $h^{\text{img}}$, $h^{\text{txt}}$ | image and text features of the multimodal model | ch08 |
#
# The article writes its multi-task loss as $\sum_{i=1}^{N}$ with $N$ the number of tasks;
# this book keeps $N$ for the batch and writes $M$ for the tasks.
#
# ## 0.6 Map of the book
#
# | chapter | article section | teaches |
# |---|---|---|
# | 00 introduction | §1–§2 (and pointers for §6–§8) | multimodal data and models, the architecture, a tour of minimm, the notation |
# | 01 autograd | (foundation) | graphs, chain rule, topological order, gradient checks, higher-order gradients |
# | 02 linear & softmax | §3.2 | linear models, softmax, cross-entropy, stable log-sum-exp |
# | 03 convolution | §3.2 (CNN) | im2col / col2im, pooling |
# | 04 LSTM | §3.2 (RNN), refs 5–6 | gates, backpropagation through time derived, vanishing gradients |
# | 05 attention | §4.1.1, §4.2.1 | $\mathrm{softmax}(QK^\top/\sqrt{d_k})V$ and its backward; why $\sqrt{d_k}$ |
# | 06 multi-head attention | §4.1.2, §4.2.2 | $\mathrm{Concat}(\text{head}_1,\dots,\text{head}_h)W^O$; per-head maps |
# | 07 multi-task loss | §4.1.3, §4.2.3 | $L(\theta)=\sum_i \ell(y_i,\hat y_i)+\lambda R(\theta)$; a $\lambda$ sweep |
# | 08 multimodal CIFAR-10 | §2.3, §3.2, §4.3, §5 | the article's model trained on CIFAR-10, accuracy curves, whom the fused model believes |
# | 09 the multimodal Transformer | §3.1, ref. 3 (ViT) | image patches and words in one Transformer, [CLS], attention maps |
# | 10 contrastive pretraining | beyond the article (CLIP) | symmetric InfoNCE, temperature, zero-shot classification |
# | 11 image to text | beyond the article | a causal decoder, teacher forcing, sampling, a KV cache |
# | 12 evaluation | §9.4 | accuracy, F1 from the confusion matrix, ROC/AUC, imbalance, calibration |
# | 13 interpretability | §9.6 | graph drawing, saliency, Grad-CAM, attention maps, TensorBoard logs |
# | 14 efficiency | §9.5 | quantisation, pruning, mixed precision, data parallelism |
#
# `chapters/README.md` lists the same chapters with their run times.
#
# Every chapter follows the same pattern: the article's section → intuition → derivation →
# the code, imported from minimm → a gradient check → a small experiment with a plot →
# summary and exercises. Each runs top to bottom in a quick mode (`MINIMM_QUICK=1`).
#
# ## 0.7 The article's discussion sections, and where their ideas are built
#
# The article's §6 (application scenarios), §7 (tools and resources), §8 (summary: trends and
# challenges) and the appendix questions §9.1–§9.3 and §9.7 are discussion, not formulas or
# code; this book does not restate them. Where they raise an idea that can be computed, it is
# built here:
#
# | the article discusses | built in |
# |---|---|
# | applications: classifying an image with its text | chapter 8 (the case study), chapter 9 (one Transformer over both) |
# | applications: retrieval across modalities, zero-shot recognition | chapter 10, *Contrastive pretraining* |
# | applications: describing an image in words | chapter 11, *Image to text* |
# | tools: deep-learning frameworks, GPUs | minimm itself (NumPy / CuPy, §0.4), compared with PyTorch in chapter 6 and the benchmarks |
# | tools: visualising a model (TensorBoard, VisualDL) | chapter 13, *Interpretability* (graphs, TensorBoard event files) |
# | challenges: noisy, weakly aligned data across modalities | chapter 8 (synthetic captions with a known share of wrong ones; whom the model believes) |
# | challenges: robustness when one modality misleads or is missing | chapter 8 (modality dropout) |
# | challenges: evaluating honestly | chapter 12, *Evaluation* (imbalance, calibration) |
# | challenges: cost of training and inference | chapter 14, *Efficiency* |
# | challenges: explaining a decision | chapter 13, *Interpretability* |
#
# What the book cannot show: anything about real multimodal data at scale. Its text is
# synthetic, its models are small, and its numbers are about them.
#
# ## Summary
#
# * Multimodal models extract features from each modality with a suited network, fuse them,
#   and predict from the fused representation (article §2.3).
# * minimm is a layered, readable library: backend → autograd → functional → nn → optim →
#   models → training; NumPy or CuPy with the same code.
# * The CIFAR-10 captions used later are synthetic.
# * One notation table (§0.5) holds for every chapter: $N$ is always the batch size.
#
# ## Exercises
#
# 1. Name three pairs of modalities and a task for which neither modality alone suffices.
# 2. In the diagram, fusion is concatenation. What would *summing* the two feature vectors
#    require of their shapes, and what might it lose?
# 3. Change the first-taste example to $L=\sum_i \sigma(w_i x_i)$ (`F.sigmoid`) and check
#    `w.grad` against $x_i\,\sigma(1-\sigma)$ by hand.

# %%
assert np.allclose(w.grad.numpy(), expected, rtol=1e-5, atol=1e-6)
assert w.grad.dtype == np.float32 and present["minimm.autograd"]
print("chapter 0: all checks passed")
