# %% [markdown]
# # 3. Convolution: im2col, col2im and pooling
#
# **Article:** "多模态大模型：技术原理与实战", §3.2 (特征提取 — feature extraction). The article's
# recipe extracts image features with a convolutional neural network (CNN) and text features
# with an RNN, then fuses them. Its case study (§4.3, §5.2) uses the classic image branch
#
#     Conv(32, 3×3) → MaxPool(2) → Conv(64, 3×3) → MaxPool(2) → Conv(128, 3×3) → MaxPool(2)
#
# on 32×32 CIFAR-10 images. This chapter builds those two layers from scratch:
#
# 1. what a convolution computes, and why sliding a small kernel suits images;
# 2. **im2col**: turning a convolution into one matrix product;
# 3. **col2im**, the transpose of im2col — and therefore its backward;
# 4. max and average pooling, and what max pooling does with ties;
# 5. gradient checks, and two small experiments: loops vs im2col, and feature maps.
#
# The code lives in `minimm/functional/conv.py` (operations) and `minimm/nn/conv.py` (layers).

# %%
import inspect
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import functional as F, nn
from minimm.functional import conv as conv_impl

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: smaller sizes
rng = np.random.default_rng(0)
print("minimm", mm.__version__, "| quick mode:", QUICK)


# %% [markdown]
# ## 3.1 Intuition: one small filter, slid everywhere
#
# A fully connected layer on a 32×32×3 image would need 3,072 weights *per output unit* and
# would treat the pixel in the top-left corner as unrelated to its neighbour. Images have two
# properties a layer can exploit:
#
# * **locality** — what matters about a pixel is mostly in its neighbourhood;
# * **translation equivariance** — an edge is an edge wherever it appears.
#
# A convolution uses one small kernel (say 3×3 over all input channels) and applies the same
# weights at every position. Each output channel is one kernel; its output map says *where* the
# kernel's pattern occurs. For an input $x$ of shape $(N, C, H, W)$ (NCHW, as in PyTorch), a
# weight $W$ of shape $(C_{out}, C, k_h, k_w)$, stride $s$ and zero padding $p$:
#
# $$
# y[n, o, i', j'] = b[o] + \sum_{c=0}^{C-1} \sum_{i=0}^{k_h-1} \sum_{j=0}^{k_w-1}
#     W[o, c, i, j]\; x_{\text{pad}}[n, c,\; s\,i' + i,\; s\,j' + j],
# \qquad
# O_H = \left\lfloor \frac{H + 2p - k_h}{s} \right\rfloor + 1 .
# $$
#
# (Strictly this is a cross-correlation — the kernel is not flipped — as in every deep-learning
# library.) With Keras' default `'valid'` padding ($p = 0$), as in the article, a 3×3 kernel
# shrinks 32×32 to 30×30.
#
# Here is that formula as four nested loops — correct, and hopelessly slow in Python:

# %%
def conv2d_loops(x, W, b, stride=1, padding=0):
    # The formula above, one output pixel at a time (an oracle, not for real use)
    N, C, H, Wd = x.shape
    C_out, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    OH, OW = (H + 2 * padding - kh) // stride + 1, (Wd + 2 * padding - kw) // stride + 1
    y = np.zeros((N, C_out, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(C_out):
            for i in range(OH):
                for j in range(OW):
                    window = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[n, o, i, j] = (window * W[o]).sum() + b[o]
    return y

x = rng.standard_normal((2, 3, 7, 6))
W = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
y_loops = conv2d_loops(x, W, b, stride=2, padding=1)
y_mm = F.conv2d(mm.tensor(x), mm.tensor(W), mm.tensor(b), stride=2, padding=1)
print(y_loops.shape, "max |difference| =", np.abs(y_mm.numpy() - y_loops).max())

# %% [markdown]
# ## 3.2 im2col: a convolution is a matrix product
#
# Look at the sum again: for a fixed image $n$ and output position $(i', j')$, it is a dot
# product between the flattened kernel $W[o, :, :, :]$ (length $K = C k_h k_w$) and the
# flattened **window** of the input under it. Copy every window into a column:
#
# $$
# \operatorname{col}[n,\; (c, i, j),\; (i', j')] = x_{\text{pad}}[n, c,\; s\,i' + i,\; s\,j' + j]
# \qquad \operatorname{col}[n] \in \mathbb{R}^{K \times P},\; P = O_H O_W .
# $$
#
# Then, with $W_2 = W$ reshaped to $(C_{out}, K)$,
#
# $$ Y[n] = W_2 \, \operatorname{col}[n] + b \;\in\; \mathbb{R}^{C_{out} \times P}, $$
#
# which reshapes to the output $(N, C_{out}, O_H, O_W)$ directly. All the arithmetic is now one
# matrix product, which a BLAS library runs at a large fraction of the CPU's peak. The price is
# memory: every input pixel is copied up to $k_h k_w$ times.
#
# How to build `col` fast? Not with a loop over pixels: fix a kernel offset $(i, j)$; the
# entries $\operatorname{col}[:, (c,i,j), :]$ for *all* images, channels and output positions
# are one strided slice of the padded input, `x_pad[:, :, i : i + s·O_H : s, j : j + s·O_W : s]`.
# So im2col is $k_h k_w$ slice copies (9 for a 3×3 kernel) into a preallocated buffer:

# %%
print(inspect.getsource(conv_impl._window))
print(inspect.getsource(conv_impl.im2col_array))

# %%
# A tiny example: one 1-channel 3x4 image, 2x2 kernel, stride 1 -> 2x3 outputs, 6 columns of 4
x_small = np.arange(12.0).reshape(1, 1, 3, 4)
print(x_small[0, 0])
col = F.im2col(mm.tensor(x_small), kernel_size=2)
print("col shape (N, C·kh·kw, OH·OW):", col.shape)
print(col.numpy()[0])          # column q is the window under output pixel q, row-major

# %% [markdown]
# The readable convolution, `conv2d_simple`, is exactly these steps composed from the
# differentiable `im2col`, `reshape` and `matmul`. `F.conv2d` computes the same numbers with a
# fused `Function` that lives off the teaching path, in `minimm/functional/conv_fast.py`:
# depending on the shapes it stores the columns per image, $(N, K, P)$, or for the whole batch,
# $(K, N P)$ — one big product is faster when images are small and channels many (see
# `conv_fast.choose_layout` and `benchmarks/NOTES.md`). `conv2d_simple` is its test oracle:

# %%
print(inspect.getsource(F.conv2d_simple))
xt, Wt, bt = mm.tensor(x), mm.tensor(W), mm.tensor(b)
print("fused vs composed:", np.abs(F.conv2d(xt, Wt, bt, 1, 1).numpy()
                                   - F.conv2d_simple(xt, Wt, bt, 1, 1).numpy()).max())

# %% [markdown]
# ## 3.3 col2im is the transpose of im2col — hence its backward
#
# im2col is **linear** in $x$: $\operatorname{col} = A x$ for a (huge, sparse) 0/1 matrix $A$
# with exactly one 1 in each row (each column entry is a copy of one pixel, or a padding zero).
# For any linear map the backward pass multiplies the upstream gradient by the transpose:
#
# $$ \frac{\partial L}{\partial x} = A^\top \frac{\partial L}{\partial \operatorname{col}} . $$
#
# What does $A^\top$ do? Row $r$ of $A$ copies pixel $m(r)$, so $(A^\top g)[m] =
# \sum_{r:\, m(r) = m} g[r]$: every column entry is **added back** to the pixel it was copied
# from. That is **col2im**: $k_h k_w$ strided in-place adds into a zero padded buffer, and then
# the padding is cut off. A pixel covered by several windows receives the sum of their
# gradients — the overlap is exactly why it is an add and not a copy.
#
# The defining property of the transpose (the *adjoint*) is that for every $x$ and every $c$
#
# $$ \langle \operatorname{im2col}(x),\, c \rangle = \langle x,\, \operatorname{col2im}(c) \rangle . $$
#
# Let us check it numerically, with stride and padding:

# %%
shape, kernel, stride, padding = (2, 3, 7, 6), (3, 2), 2, 1
x_a = rng.standard_normal(shape)
col_a = F.im2col(mm.tensor(x_a), kernel, stride, padding).numpy()
c = rng.standard_normal(col_a.shape)
back = F.col2im(mm.tensor(c), shape, kernel, stride, padding).numpy()
lhs, rhs = (col_a * c).sum(), (x_a * back).sum()
adjoint_error = abs(lhs - rhs) / abs(lhs)
print(f"<im2col(x), c> = {lhs:.12f}\n<x, col2im(c)> = {rhs:.12f}\nrelative error {adjoint_error:.1e}")

# %% [markdown]
# Since col2im is linear too, *its* backward is the transpose of its transpose: im2col. So
# minimm defines `Im2col` and `Col2im` as a **pair of Functions, each the other's backward**:

# %%
print(inspect.getsource(conv_impl.Im2col))
print(inspect.getsource(conv_impl.Col2im))

# %% [markdown]
# The convolution's gradients follow from $Y[n] = W_2 \operatorname{col}[n] + b$ by the matrix
# product rule:
#
# $$
# \frac{\partial L}{\partial W_2} = \sum_n \frac{\partial L}{\partial Y[n]}\,
#     \operatorname{col}[n]^\top, \qquad
# \frac{\partial L}{\partial b} = \sum_{n,\,p} \frac{\partial L}{\partial Y[n]}_{:,\,p}, \qquad
# \frac{\partial L}{\partial x} = \operatorname{col2im}\!\Big(W_2^\top
#     \frac{\partial L}{\partial Y}\Big).
# $$
#
# In `conv2d_simple` nobody writes them: they *are* the backward of its pieces — `matmul`'s
# backward gives $\partial L/\partial Y\,\operatorname{col}^\top$ and
# $W_2^\top\,\partial L/\partial Y$, and `Im2col`'s backward is col2im. The fused `Conv2d` in
# `conv_fast.py` writes the three formulas in one backward with minimm's differentiable
# operations (so it can be differentiated twice, `create_graph=True`) and skips what nobody
# needs: the first layer's input is the image, which needs no gradient, so neither
# $W_2^\top \partial L/\partial Y$ nor col2im runs for it. Both give the same gradients:

# %%
x64 = rng.standard_normal((2, 3, 6, 5))
W64 = rng.standard_normal((4, 3, 3, 3))
b64 = rng.standard_normal(4)
g_up = rng.standard_normal((2, 4, 4, 3))
grads = {}
for name, conv in (("fused", F.conv2d), ("composed", F.conv2d_simple)):
    ts = [mm.tensor(a, dtype=np.float64, requires_grad=True) for a in (x64, W64, b64)]
    conv(*ts).backward(mm.tensor(g_up, dtype=np.float64))
    grads[name] = [t.grad.numpy() for t in ts]
for label, gf, gc in zip(("dL/dx", "dL/dW", "dL/db"), grads["fused"], grads["composed"]):
    print(f"{label}: shape {gf.shape}, max |fused - composed| = {np.abs(gf - gc).max():.1e}")
    assert np.allclose(gf, gc, atol=1e-12)

# %% [markdown]
# ## 3.4 Pooling
#
# After each convolution the article halves the resolution with **max pooling**: each
# non-overlapping 2×2 window is replaced by its maximum,
#
# $$ y[n, c, i', j'] = \max_{0 \le i < k,\; 0 \le j < k} x[n, c,\; s\,i' + i,\; s\,j' + j],
# \qquad s = k \text{ by default}. $$
#
# Windows that would run past the edge are dropped ("floor" mode), so 13×13 pools to 6×6.
# When the windows tile the input, minimm reshapes $(N, C, H, W)$ to
# $(N, C, H/k, k, W/k, k)$ and takes the max over the two $k$ axes — no columns to build.
# Overlapping windows ($s < k$) go through im2col instead.
#
# **The gradient** of a max is 1 for the element that attains it and 0 elsewhere: each
# window passes its upstream gradient to its winner. With **ties** (after a ReLU, whole windows
# are often 0) there is a choice. Splitting the gradient among the tied elements, or giving it
# to all of them, are both defensible for a single `max`; minimm does what PyTorch does and
# gives it to **the first maximum in row-major order**, so that every window passes on exactly
# its upstream gradient, once:

# %%
x_tie = mm.tensor(np.array([[[[0., 0., 1., 3.],
                              [0., 0., 3., 2.]]]]), requires_grad=True)
y_tie = F.max_pool2d(x_tie, 2)
y_tie.backward(mm.tensor(np.array([[[[10., 20.]]]])))
print("pooled:", y_tie.numpy().ravel())
print("gradient:\n", x_tie.grad.numpy()[0, 0])

# %% [markdown]
# **Average pooling** is linear, $y = \frac{1}{k_h k_w}\sum_{\text{window}} x$, so its backward
# spreads $\bar y / (k_h k_w)$ evenly over the window. minimm composes it from im2col: the
# columns of one channel are its windows, and the mean over a column's entries is the pool.

# %%
x_p = rng.standard_normal((1, 1, 4, 4))
print(F.avg_pool2d(mm.tensor(x_p), 2).numpy()[0, 0])
print(x_p[0, 0].reshape(2, 2, 2, 2).mean(axis=(1, 3)))

# %% [markdown]
# ## 3.5 Gradient checks
#
# Central finite differences in float64 against the analytic backward (chapter 1). For max
# pooling the inputs must be free of ties — at a tie the max is not differentiable and finite
# differences would see a kink — so we use a shuffled `arange`, whose values are far apart.

# %%
x_g = rng.standard_normal((2, 3, 5, 6))
W_g = rng.standard_normal((4, 3, 3, 2))
b_g = rng.standard_normal(4)
checks = {
    "conv2d stride 1, padding 1": mm.gradcheck(lambda x, W, b: F.conv2d(x, W, b, 1, 1),
                                              [x_g, W_g, b_g]),
    "conv2d stride 2, padding 2": mm.gradcheck(lambda x, W, b: F.conv2d(x, W, b, 2, 2),
                                              [x_g, W_g, b_g]),
    "conv2d second derivatives": mm.gradgradcheck(lambda x, W, b: F.conv2d(x, W, b, 2, 1),
                                                 [x_g, W_g, b_g], mode="random"),
}
x_distinct = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) * 0.1
checks["max_pool2d 2x2"] = mm.gradcheck(lambda x: F.max_pool2d(x, 2), [x_distinct])
checks["max_pool2d 3x3 stride 1"] = mm.gradcheck(lambda x: F.max_pool2d(x, 3, 1), [x_distinct])
checks["avg_pool2d 3x3 stride 2"] = mm.gradcheck(lambda x: F.avg_pool2d(x, 3, 2), [x_distinct])
for name, ok in checks.items():
    print(f"{name:30s} {'passed' if ok else 'FAILED'}")

# %% [markdown]
# ## 3.6 Experiment 1: loops against im2col
#
# How much does turning the convolution into one matrix product buy? We time the loop version
# of §3.1 against `F.conv2d` on growing images (batch 4, 3 → 8 channels, 3×3 kernel).

# %%
sizes = [8, 12, 16] if QUICK else [8, 12, 16, 24, 32]
t_loops, t_im2col = [], []
W_e = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
b_e = np.zeros(8, np.float32)
for size in sizes:
    x_e = rng.standard_normal((4, 3, size, size)).astype(np.float32)
    start = time.perf_counter()
    y_ref = conv2d_loops(x_e, W_e, b_e)
    t_loops.append(time.perf_counter() - start)
    start = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        y_fast = F.conv2d(mm.tensor(x_e), mm.tensor(W_e), mm.tensor(b_e))
    t_im2col.append((time.perf_counter() - start) / repeats)
    assert np.allclose(y_fast.numpy(), y_ref, atol=1e-4)
speedups = [a / b for a, b in zip(t_loops, t_im2col)]

fig, ax = plt.subplots(figsize=(6, 4))
ax.semilogy(sizes, np.array(t_loops) * 1e3, "o-", label="nested Python loops")
ax.semilogy(sizes, np.array(t_im2col) * 1e3, "s-", label="im2col + one matmul (F.conv2d)")
ax.set_xlabel("image size (pixels per side)")
ax.set_ylabel("forward time (ms, log scale)")
ax.set_title("Convolution: loops vs im2col")
ax.legend()
plt.tight_layout()
plt.show()
print("speed-ups:", [f"{s:.0f}x" for s in speedups])

# %% [markdown]
# The speed-up grows with the image: the loop pays Python's overhead per output pixel, im2col
# pays it per kernel offset (9 times) and hands the arithmetic to BLAS. In a real network on
# this CPU the remaining cost is mostly *moving data* (building columns, col2im, transposes)
# rather than arithmetic; `benchmarks/phases.py --part image` times each phase.

# %% [markdown]
# ## 3.7 Experiment 2: what a convolution sees
#
# No downloads here: we draw a CIFAR-sized (32×32 RGB) synthetic image — a bright disc and a
# diagonal stripe on a gradient background — and run the article's first layer,
# `nn.Conv2d(3, 32, 3)`, twice: once with hand-made edge kernels in the first channels
# (horizontal and vertical Sobel filters, summed over RGB), once freshly initialised
# (random). Then a ReLU and `nn.MaxPool2d(2)`, as in the article: 32 → 30 → 15.

# %%
yy, xx = np.mgrid[0:32, 0:32] / 31.0
image = np.stack([0.3 + 0.4 * xx, 0.2 + 0.5 * yy, 0.5 - 0.3 * xx])          # (3, 32, 32)
image[:, (yy - 0.35) ** 2 + (xx - 0.35) ** 2 < 0.04] = [[0.9], [0.2], [0.1]]  # a disc
image[:, np.abs(yy - xx - 0.3) < 0.06] = [[0.1], [0.1], [0.9]]              # a stripe
image = image.astype(np.float32)[None]                                      # (1, 3, 32, 32)

conv = nn.Conv2d(3, 32, 3, rng=np.random.default_rng(1))
sobel = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)
conv.W.data[0] = np.stack([sobel] * 3) / 3        # horizontal edges
conv.W.data[1] = np.stack([sobel.T] * 3) / 3      # vertical edges
conv.b.data[:2] = 0
pool = nn.MaxPool2d(2)
with mm.no_grad():
    maps = F.relu(conv(mm.tensor(image)))          # (1, 32, 30, 30)
    pooled = pool(maps)                            # (1, 32, 15, 15)
print("conv:", maps.shape, " pooled:", pooled.shape)

fig, axes = plt.subplots(2, 4, figsize=(11, 5.5))
axes[0, 0].imshow(image[0].transpose(1, 2, 0))
axes[0, 0].set_title("input 32x32")
for ax, ch, title in [(axes[0, 1], 0, "Sobel horizontal"), (axes[0, 2], 1, "Sobel vertical"),
                      (axes[0, 3], 2, "random kernel 2")]:
    im = ax.imshow(maps.numpy()[0, ch], cmap="gray")
    fig.colorbar(im, ax=ax, fraction=0.046, label="ReLU(conv) output")
    ax.set_title(f"{title} (30x30)")
for ax, ch in zip(axes[1], [0, 1, 3, 4]):
    im = ax.imshow(pooled.numpy()[0, ch], cmap="gray")
    fig.colorbar(im, ax=ax, fraction=0.046, label="max-pooled output")
    ax.set_title(f"channel {ch} pooled (15x15)")
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# The Sobel channels light up exactly along the disc's and the stripe's edges; the random
# kernels respond to mixtures of colour and edges. Training (chapter 8) turns the 32 random
# kernels into detectors useful for classifying CIFAR-10. After pooling, each map is a quarter
# the size but still shows where the pattern occurs, only more coarsely — the network trades
# resolution for channels: 3×32×32 → 32×15×15 → 64×6×6 → 128×2×2 = 512 features.

# %%
rng_net = np.random.default_rng(2)
image_branch = nn.Sequential(
    nn.Conv2d(3, 32, 3, rng=rng_net), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, rng=rng_net), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, rng=rng_net), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten())
features = image_branch(mm.tensor(np.repeat(image, 4, axis=0)))
print("image features:", features.shape, features.dtype)

# %% [markdown]
# ## Summary
#
# * A convolution applies one small kernel at every position: few weights, local, translation
#   equivariant. Output size $\lfloor (H + 2p - k)/s \rfloor + 1$.
# * **im2col** copies every window into a column, so the convolution becomes
#   $Y = W_2\,\operatorname{col} + b$: one matrix product. It is built from $k_h k_w$ strided
#   slice copies, never a loop over pixels.
# * im2col is linear with a 0/1 matrix; its transpose **col2im** adds each column entry back
#   to its pixel. $\langle \operatorname{im2col}(x), c\rangle = \langle x,
#   \operatorname{col2im}(c)\rangle$ — so each is the other's backward, and convolution is
#   differentiable any number of times.
# * $\partial L/\partial W_2 = \sum_n \bar Y[n] \operatorname{col}[n]^\top$,
#   $\partial L/\partial x = \operatorname{col2im}(W_2^\top \bar Y)$; the first layer skips the
#   latter.
# * Max pooling passes each window's gradient to its (first) maximum; average pooling spreads
#   it evenly.
#
# ## Exercises
#
# 1. Show that the number of multiply-adds of a convolution is $N C_{out} O_H O_W C k_h k_w$,
#    and compute it for the article's three layers at batch 128. Which layer dominates?
# 2. Write col2im for stride 1 and no padding as a sum of $k_h k_w$ shifted copies, and verify
#    it against `F.col2im`. Why is it an add (`+=`) and not an assignment?
# 3. A 1×1 convolution is a linear layer applied at every pixel. Show it with `F.conv2d` and
#    `F.linear` (mind the layouts: minimm's Linear weight is (in, out)).
# 4. Max pooling with *shared* gradients at ties (each tied element gets $\bar y / m$) is what
#    `F.max` does. Compute both versions on an all-zero window. When could the difference
#    matter in training?
# 5. Express `avg_pool2d` with kernel $k$ and stride $k$ as a convolution with a fixed
#    weight. What is that weight, and what are its input and output channels?
# 6. Run `python benchmarks/phases.py --part image` and find the phase that costs the most for
#    each layer. Is it arithmetic or data movement?

# %%
# The chapter's own results, in quick mode too
assert adjoint_error < 1e-12
assert all(checks.values())
assert min(speedups) > 1
assert features.shape == (4, 512)
print("chapter 3: all checks passed")
