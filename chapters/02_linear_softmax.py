# %% [markdown]
# # 2. Linear models, softmax and cross-entropy
#
# *Article: "多模态大模型：技术原理与实战" (multimodal large models: principles and practice),
# §3.2 — the prediction step and training.*
#
# §3.2 of the article lists the steps of a multimodal pipeline: preprocess, extract features
# (a CNN for images, an RNN for text), **fuse by concatenation, predict, and train with
# cross-entropy and gradient descent**. Whatever the feature extractors are, the last two steps
# are always the same: a *linear layer* maps the fused feature vector to one score (a *logit*)
# per class, *softmax* turns the scores into probabilities, and *cross-entropy* measures how
# much probability the model gave to the right class. The article's CIFAR-10 model ends with
# exactly this: `Dense(10, activation='softmax')`, trained with categorical cross-entropy.
#
# This chapter takes those three pieces apart:
#
# 1. the linear layer $z = xW + b$ and its gradients;
# 2. softmax, and why the textbook formula overflows;
# 3. the log-sum-exp trick, derived;
# 4. cross-entropy and its famously simple gradient $\operatorname{softmax}(z) - \text{onehot}(y)$;
# 5. a gradient check, and a softmax-regression experiment on synthetic data.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import functional as F, nn

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: fewer steps
rng = np.random.default_rng(0)
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 2.1 The linear layer
#
# A linear layer maps a batch of $N$ feature vectors $x \in \mathbb{R}^{N\times d_{in}}$ to
# $N$ score vectors (the logits $z$, when the layer is the classifier):
#
# $$ z = xW + b, \qquad W \in \mathbb{R}^{d_{in}\times d_{out}},\; b \in \mathbb{R}^{d_{out}}. $$
#
# minimm stores $W$ as (in, out), so the formula reads left to right like the code
# (PyTorch stores the transpose). For a loss $L$ with upstream gradient
# $\bar z = \partial L/\partial z$, the chain rule gives, entry by entry
# ($z_{nk} = \sum_j x_{nj} W_{jk} + b_k$):
#
# $$ \frac{\partial L}{\partial x} = \bar z\, W^\top, \qquad
#    \frac{\partial L}{\partial W} = x^\top \bar z, \qquad
#    \frac{\partial L}{\partial b} = \sum_n \bar z_{n}. $$
#
# The bias gradient is a sum over the batch because the same $b$ was broadcast to every row.
# `F.linear` (in `minimm/functional/dense.py`) is one `Function` whose backward is these three
# lines, written with minimm's own differentiable operations:

# %%
print(inspect.getsource(F.dense.Linear))

# %% [markdown]
# `nn.Linear(d_in, d_out)` owns `W` and `b` and initialises them as PyTorch does:
# $U(-1/\sqrt{d_{in}}, 1/\sqrt{d_{in}})$, so the scores start small whatever $d_{in}$ is.

# %%
layer = nn.Linear(4, 3, rng=rng)
x = mm.tensor(rng.standard_normal((5, 4)).astype(np.float32))   # (N=5, d_in=4)
z = layer(x)                                                      # (5, 3)
print("W", layer.W.shape, "b", layer.b.shape, "->", z.shape, z.dtype)
print("max |W| =", float(np.abs(layer.W.numpy()).max()), "<= 1/sqrt(4) =", 0.5)
np.testing.assert_allclose(z.numpy(), x.numpy() @ layer.W.numpy() + layer.b.numpy(), rtol=1e-6)


# %% [markdown]
# ## 2.2 Softmax, and why the textbook formula breaks
#
# Softmax turns $K$ scores into a probability distribution:
#
# $$ \operatorname{softmax}(z)_i = \frac{e^{z_i}}{\sum_{j=1}^{K} e^{z_j}}. $$
#
# Every output is positive and they sum to one; the largest score gets the largest share, and
# adding the same constant to every score changes nothing, because
#
# $$ \frac{e^{z_i - m}}{\sum_j e^{z_j - m}} = \frac{e^{-m} e^{z_i}}{e^{-m}\sum_j e^{z_j}}
#    = \operatorname{softmax}(z)_i \quad\text{for any } m. $$
#
# That invariance is the whole fix for the problem below: float32 overflows at
# $e^{88.7} \approx 3.4\times 10^{38}$, and logits of a few hundred are not unusual early in
# training or after a bad learning rate.

# %%
def naive_softmax(z):
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


z = np.array([[1.0, 2.0, 3.0], [1000.0, 1001.0, 1002.0]], dtype=np.float32)
with np.errstate(over="ignore", invalid="ignore"):
    print("naive  :", naive_softmax(z))
print("minimm :", F.softmax(mm.tensor(z)).numpy())   # subtracts the row maximum first

# %% [markdown]
# The second row is the first plus 1000, so its softmax must be the same; the naive formula
# gives `inf / inf = nan`. With $m = \max_j z_j$ every exponent is $\le 0$, so every
# $e^{z_j - m} \in (0, 1]$, and at least one term of the sum equals 1: no overflow, and no
# division by zero either.
#
# ## 2.3 The log-sum-exp trick
#
# Cross-entropy needs the *logarithm* of the softmax. Taking the log of the stable softmax
# would still be wrong for very negative shifted logits: $e^{z_i - m}$ underflows to 0 and
# $\log 0 = -\infty$. Work in log space instead:
#
# $$ \log \operatorname{softmax}(z)_i = z_i - \log\sum_j e^{z_j}, $$
#
# and compute the log-sum-exp with the same shift:
#
# $$ \log\sum_j e^{z_j} = \log\Big(e^{m}\sum_j e^{z_j - m}\Big)
#    = m + \log\sum_j e^{z_j - m}, \qquad m = \max_j z_j. $$
#
# The sum inside is between 1 and $K$, so its log is between 0 and $\log K$: nothing overflows
# and nothing underflows to $\log 0$. Its derivative is the softmax itself,
# $\partial/\partial z_i \log\sum_j e^{z_j} = e^{z_i}/\sum_j e^{z_j}$.

# %%
z = np.array([[0.0, -200.0, 50.0]], dtype=np.float32)
with np.errstate(divide="ignore", under="ignore"):
    print("log(softmax) :", np.log(F.softmax(mm.tensor(z)).numpy()))   # -inf: the underflow
print("log_softmax  :", F.log_softmax(mm.tensor(z)).numpy())            # finite
print("logsumexp    :", F.logsumexp(mm.tensor(z), axis=-1).numpy(), "≈ max =", z.max())

# %% [markdown]
# ## 2.4 Cross-entropy and its gradient
#
# With labels $y_n \in \{0,\dots,K-1\}$, the mean cross-entropy over a batch is the average
# negative log-probability of the right class:
#
# $$ L = -\frac{1}{N}\sum_{n=1}^{N} \log \operatorname{softmax}(z_n)_{y_n}
#      = \frac{1}{N}\sum_n \Big(\log\sum_j e^{z_{nj}} - z_{n y_n}\Big). $$
#
# Differentiate the bracket with respect to $z_{ni}$: the first term gives
# $\operatorname{softmax}(z_n)_i$ (previous section), the second gives $1$ when $i = y_n$. So
#
# $$ \frac{\partial L}{\partial z_{ni}} = \frac{1}{N}\Big(\operatorname{softmax}(z_n)_i
#    - [\,i = y_n\,]\Big) = \frac{1}{N}\big(p_n - \text{onehot}(y_n)\big)_i . $$
#
# The gradient is "prediction minus truth": it pushes probability towards the right class and
# away from the others, and it is bounded ($|p - y| \le 1$) however wrong the model is.
# `F.cross_entropy` is fused — one `Function` with exactly this backward — and
# `F.cross_entropy_simple` composes `log_softmax` and indexing; the composed one is the oracle.

# %%
print(inspect.getsource(F.losses.CrossEntropy))

# %%
logits = rng.standard_normal((6, 4))
labels = rng.integers(0, 4, size=6)
fused = F.cross_entropy(mm.tensor(logits), labels)
composed = F.cross_entropy_simple(mm.tensor(logits), labels)
p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)       # plain NumPy
by_hand = -np.log(p[np.arange(6), labels]).mean()
print(float(fused.numpy()), float(composed.numpy()), by_hand)

z = mm.tensor(logits, requires_grad=True)
F.cross_entropy(z, labels).backward()
onehot = np.eye(4)[labels]
ce_grad_error = np.abs(z.grad.numpy() - (p - onehot) / 6).max()
print("max |grad - (p - onehot)/N| =", ce_grad_error)

# %% [markdown]
# ## 2.5 Gradient check
#
# The derivations above are easy to get subtly wrong (a missing $1/N$, a transposed $W$).
# `mm.gradcheck` compares the backward passes with central finite differences in float64, for
# the composition linear → cross-entropy, on non-square shapes:

# %%
X_small = rng.standard_normal((5, 3))
W_small = rng.standard_normal((3, 4))
b_small = rng.standard_normal(4)
y_small = rng.integers(0, 4, size=5)
mm.gradcheck(lambda X, W, b: F.cross_entropy(F.linear(X, W, b), y_small),
             [X_small, W_small, b_small])
mm.gradgradcheck(lambda X, W, b: F.cross_entropy(F.linear(X, W, b), y_small),
                 [X_small, W_small, b_small])
print("gradcheck and gradgradcheck passed")


# %% [markdown]
# ## 2.6 Experiment: softmax regression on synthetic data
#
# Three classes of points in the plane, each a Gaussian blob around its own centre. A single
# `nn.Linear(2, 3)` followed by softmax is *softmax regression* (multinomial logistic
# regression): its decision boundaries are straight lines, which is all these blobs need.
# We train it with plain gradient descent, written out: $\theta \leftarrow \theta - \eta\,
# \partial L/\partial\theta$ for $\theta \in \{W, b\}$.

# %%
def make_blobs(n_per_class, rng):
    centres = np.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])
    X = np.concatenate([c + rng.standard_normal((n_per_class, 2)) * 0.8 for c in centres])
    y = np.repeat(np.arange(3), n_per_class)
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order]


X_train, y_train = make_blobs(200, rng)
X_test, y_test = make_blobs(100, rng)

model = nn.Linear(2, 3, rng=np.random.default_rng(1))
lr, steps = 0.5, (60 if QUICK else 200)
losses = []
for step in range(steps):
    loss = F.cross_entropy(model(mm.tensor(X_train)), y_train)
    model.zero_grad()
    loss.backward()
    with mm.no_grad():
        for p in model.parameters():
            p.data -= lr * p.grad.data          # gradient descent, float32 throughout
    losses.append(float(loss.numpy()))

with mm.no_grad():
    pred = model(mm.tensor(X_test)).numpy().argmax(axis=1)
test_accuracy = float((pred == y_test).mean())
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; test accuracy {test_accuracy:.3f}")
print("parameters still float32:", model.W.dtype, model.b.dtype)

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
ax1.plot(losses)
ax1.set_xlabel("gradient step")
ax1.set_ylabel("cross-entropy (train)")
ax1.set_title("training loss (full batch of 600 points)")

gx, gy = np.meshgrid(np.linspace(-4, 4, 200), np.linspace(-4, 5, 200))
grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
with mm.no_grad():
    regions = model(mm.tensor(grid)).numpy().argmax(axis=1).reshape(gx.shape)
colors = ["tab:blue", "tab:orange", "tab:green"]
ax2.contourf(gx, gy, regions, alpha=0.2, levels=[-0.5, 0.5, 1.5, 2.5], colors=colors)
for k in range(3):
    sel = y_test == k
    ax2.scatter(X_test[sel, 0], X_test[sel, 1], s=10, color=colors[k],
                label=f"class {k} (shaded: predicted {k})")
ax2.set_xlabel("feature $x_1$")
ax2.set_ylabel("feature $x_2$")
ax2.legend(fontsize=8, loc="upper right")
ax2.set_title(f"decision regions and test points, test accuracy {test_accuracy:.2f}")
plt.tight_layout()
plt.show()

# %% [markdown]
# The loss falls fast and then flattens: the blobs overlap a little, so no straight line can
# separate them perfectly and the cross-entropy cannot reach zero. The boundaries in the right
# panel are straight because $\arg\max_k (xW + b)_k$ changes where two scores are equal, a
# linear equation in $x$.
#
# ## Summary
#
# - A linear layer is $z = xW + b$; its gradients are $\bar z W^\top$, $x^\top \bar z$ and the
#   batch sum of $\bar z$.
# - Softmax is invariant to shifting all logits, so subtracting the maximum makes it overflow-free.
# - $\log\sum_j e^{z_j} = m + \log\sum_j e^{z_j - m}$ keeps log-probabilities finite; minimm's
#   `log_softmax`, `logsumexp` and `cross_entropy` all use it.
# - Cross-entropy's gradient with respect to the logits is $(p - \text{onehot}(y))/N$.
# - Softmax regression is the article's prediction module with an identity feature extractor.
#
# ## Exercises
#
# 1. Show that softmax is *not* invariant to scaling the logits. What happens to
#    $\operatorname{softmax}(z/\tau)$ as the temperature $\tau \to 0$ and $\tau \to \infty$?
# 2. Derive $\partial \operatorname{softmax}(z)_i / \partial z_j$ and check that
#    $\operatorname{softmax}$'s backward in `minimm/functional/activations.py` is $J^\top \bar y$.
# 3. Remove the $1/N$ from the cross-entropy (use a sum). How must the learning rate change to
#    get the same training curve?
# 4. Replace `nn.Linear(2, 3)` by `nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))`
#    and make the data non-linearly separable (rings). Which model wins?
# 5. Run the experiment in float64 (`X_train.astype(np.float64)` and float64 parameters): does
#    the loss curve change visibly?

# %%
# The chapter's own results, in quick mode too
assert losses[-1] < 0.5 * losses[0]
assert test_accuracy > 0.85
assert ce_grad_error < 1e-12
print("chapter 2: all checks passed")
