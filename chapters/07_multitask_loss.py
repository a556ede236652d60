# %% [markdown]
# # 7. The multi-task loss with a regulariser
#
# The third formula of the article **"多模态大模型：技术原理与实战"** (§4.1.3, explained in
# §4.2.3) is the objective a multimodal model is trained on:
#
# $$L(\theta) = \sum_{i=1}^{M} \ell(y_i, \hat y_i) + \lambda R(\theta).$$
#
# (The article writes the number of tasks as $N$; this book keeps $N$ for the batch size, see the
# notation table of chapter 0, and writes $M$.) Each of the $M$ tasks the model solves
# contributes its own loss $\ell(y_i, \hat y_i)$ — for
# the CIFAR-10 model of chapter 8, the ten-class label *and* the animal-vs-vehicle label of the
# same image — and a **regulariser** $R(\theta)$, weighted by $\lambda \ge 0$, penalises large
# parameters. This chapter
#
# 1. transcribes the formula, with the two usual regularisers $R(\theta)=\sum\theta^2$ (L2) and
#    $\sum|\theta|$ (L1), and says which parameters to regularise;
# 2. derives its gradient, and sees that L2 is the "weight decay" of every optimiser;
# 3. checks the gradient numerically;
# 4. sweeps $\lambda$ on a small two-task problem and plots training loss, validation loss and
#    the size of the weights against it.
#
# The code is in `minimm/functional/regularization.py`.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import functional as F, nn, optim

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: a shorter sweep
rng = np.random.default_rng(0)
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 7.1 The formula, as code
#
# The sum is the **plain sum** of the task losses, exactly as written: every task counts the
# same. (Weighting the tasks, $\sum_i w_i\ell_i$, is a common extension — useful when one loss
# is on a much larger scale than another — and `multitask_loss` takes optional `weights`; the
# article's formula is the default $w_i = 1$.) The regulariser is one of
#
# $$R_2(\theta) = \sum_{p}\sum_{j} \theta_{p,j}^2 \quad(\text{L2}), \qquad
# R_1(\theta) = \sum_{p}\sum_{j} |\theta_{p,j}| \quad(\text{L1}),$$
#
# summed over every parameter tensor $p$ that is regularised. `F.multitask_loss` returns the
# total as a scalar Tensor, and with `return_terms=True` also each term — each task's loss and
# $\lambda R(\theta)$ under `"reg"` — so that training can log them separately; the terms add up
# to the total.

# %%
print(inspect.getsource(F.l2_penalty))
src = inspect.getsource(F.multitask_loss)
print(src[src.index("    terms = {}"):])                    # the formula's lines

# %% [markdown]
# **Which parameters?** Regularisation shrinks the *weights* — matrices and kernels, which decide
# how strongly each input feature drives each output and are what a model overfits with. The
# biases and the scales and shifts of normalisation layers only move or rescale a layer's output;
# shrinking them towards 0 does not simplify the function, it only fights the normalisation. So
# when given a Module, `multitask_loss` regularises `F.regularized_parameters(module)`: the
# parameters with two or more dimensions. The caller can pass any list instead.

# %%
model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))
for name, p in model.named_parameters():
    chosen = any(p is q for q in F.regularized_parameters(model))
    print(f"{name:10s} {str(p.shape):8s} regularised: {chosen}")

x = mm.tensor(rng.standard_normal((5, 4)), dtype=np.float32)
logits = model(x)
loss_a = F.cross_entropy(logits, np.array([0, 1, 2, 0, 1]))          # task a
loss_b = (logits[:, 0] ** 2).mean()                                  # task b (a regression)
total, terms = F.multitask_loss({"a": loss_a, "b": loss_b}, model, lam=1e-2, return_terms=True)
print({k: round(v.item(), 5) for k, v in terms.items()}, "total:", round(total.item(), 5))
terms_error = abs(total.item() - sum(v.item() for v in terms.values()))

# %% [markdown]
# ## 7.2 The gradient, and weight decay
#
# The derivative of a sum is the sum of the derivatives:
#
# $$\frac{\partial L}{\partial \theta} = \sum_{i=1}^M \frac{\partial \ell_i}{\partial\theta}
# + \lambda \frac{\partial R}{\partial\theta}, \qquad
# \frac{\partial R_2}{\partial\theta} = 2\theta, \qquad
# \frac{\partial R_1}{\partial\theta} = \operatorname{sign}(\theta).$$
#
# Two consequences:
#
# * **Shared parameters add up the tasks' gradients.** A parameter used by two tasks (the
#   image branch that feeds both classifiers) receives both pulls; a parameter only one task
#   uses receives only that task's. That is the whole mechanism of multi-task learning: the
#   shared part is shaped by all tasks at once.
# * **L2 is weight decay.** One gradient-descent step with learning rate $\eta$ is
#   $\theta \leftarrow \theta - \eta\big(\nabla\textstyle\sum\ell_i + 2\lambda\theta\big)
#   = (1 - 2\eta\lambda)\,\theta - \eta\nabla\textstyle\sum\ell_i$: before each step every weight
#   shrinks by the factor $1 - 2\eta\lambda$. That is what `optim.SGD(..., weight_decay=wd)`
#   does with $wd = 2\lambda$. (For Adam the two are *not* the same — the penalty's gradient gets
#   rescaled by Adam's per-parameter step sizes; AdamW applies the decay directly.) L1 instead
#   subtracts a constant $\eta\lambda$ from every $|\theta|$ each step, which drives small weights
#   exactly to zero: a sparse model.
#
# Check the formula against minimm: with task losses that do not depend on $W$'s second column,
# that column's gradient must be exactly $2\lambda W$ (L2) or $\lambda\operatorname{sign}W$ (L1).

# %%
W = mm.tensor(rng.standard_normal((3, 2)), requires_grad=True)
x = mm.tensor(rng.standard_normal((6, 3)))
lam = 0.05
decay_errors = {}
for reg in ("l2", "l1"):
    W.zero_grad()
    task_1 = ((x @ W[:, :1]) ** 2).mean()                       # uses column 0 only
    task_2 = F.tanh(x @ W[:, :1]).sum()                         # so does task 2
    F.multitask_loss([task_1, task_2], [W], lam, reg=reg).backward()
    expected = 2 * lam * W.numpy()[:, 1] if reg == "l2" else lam * np.sign(W.numpy()[:, 1])
    decay_errors[reg] = float(np.abs(W.grad.numpy()[:, 1] - expected).max())
print("max |gradient − penalty gradient| on the unused column:", decay_errors)

# %% [markdown]
# ## 7.3 Gradient check
#
# Finite differences in float64 on a tiny two-task model (a classification through one matrix,
# a regression through another), both regularisers, and second derivatives too:

# %%
xs = rng.standard_normal((4, 3)); labels = np.array([0, 1, 1, 0])
def two_tasks(W1, W2, b, reg):
    ce = F.cross_entropy(mm.tensor(xs) @ W1 + b, labels)
    mse = ((mm.tensor(xs) @ W2) ** 2).mean()
    return F.multitask_loss([ce, mse], [W1, W2], 0.1, reg=reg)

params = [rng.standard_normal((3, 2)), rng.standard_normal((3, 1)), rng.standard_normal(2)]
for reg in ("l2", "l1"):
    mm.gradcheck(lambda *p: two_tasks(*p, reg), params)
    mm.gradgradcheck(lambda *p: two_tasks(*p, reg), params)
    print(reg, "gradcheck and gradgradcheck passed")

# %% [markdown]
# ## 7.4 Experiment: sweeping $\lambda$
#
# A small problem on which a network overfits easily: 100 training examples of 20 features, two
# binary tasks that both depend on the first few features (and 10 % of the labels of each are
# flipped, so a perfect fit of the training set means fitting noise). The model is a shared
# hidden layer of 64 tanh units and one linear head per task. For each $\lambda$ we train it from
# the same initialisation with full-batch Adam, and measure on the training set and on 2,000
# held-out examples the task part $\sum_i\ell_i$ of the loss, and the norm of the weights
# $\sqrt{R_2(\theta)}$.

# %%
D, n_train, n_val = 20, 100, 2000
w_a = np.zeros(D); w_a[:5] = rng.standard_normal(5)
w_b = np.zeros(D); w_b[:5] = rng.standard_normal(5); w_b[5:8] = rng.standard_normal(3)

def make_data(n):
    x = rng.standard_normal((n, D)).astype(np.float32)
    y_a, y_b = (x @ w_a > 0).astype(np.int64), (x @ w_b > 0).astype(np.int64)
    for y in (y_a, y_b):                                    # 10 % label noise
        flip = rng.random(n) < 0.1
        y[flip] = 1 - y[flip]
    return x, y_a, y_b

train, val = make_data(n_train), make_data(n_val)

class TwoTaskNet(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.shared = nn.Linear(D, 64, rng=rng)
        self.head_a = nn.Linear(64, 2, rng=rng)
        self.head_b = nn.Linear(64, 2, rng=rng)

    def forward(self, x):
        h = F.tanh(self.shared(x))                          # shared by both tasks
        return self.head_a(h), self.head_b(h)

def task_losses(model, data):
    x, y_a, y_b = data
    logits_a, logits_b = model(mm.tensor(x))
    return {"a": F.cross_entropy(logits_a, y_a), "b": F.cross_entropy(logits_b, y_b)}

lams = ([0, 1e-3, 1e-2, 3e-2, 1e-1, 1] if QUICK
        else [0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1])
steps = 200 if QUICK else 500
sweep = []
for lam in lams:
    model = TwoTaskNet(np.random.default_rng(1))            # the same start for every λ
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        total = F.multitask_loss(task_losses(model, train), model, lam)
        opt.zero_grad(); total.backward(); opt.step()
    with mm.no_grad():
        tr = sum(v.item() for v in task_losses(model, train).values())
        va = sum(v.item() for v in task_losses(model, val).values())
        norm = float(np.sqrt(F.l2_penalty(model).item()))
    sweep.append((lam, tr, va, norm))
    print(f"λ = {lam:<7g} train Σℓ = {tr:.3f}   validation Σℓ = {va:.3f}   ‖W‖ = {norm:.2f}")
sweep = np.array(sweep)

# %%
x_pos = np.where(sweep[:, 0] > 0, sweep[:, 0], sweep[1, 0] / 10)   # λ = 0 drawn left of the rest
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
axes[0].plot(x_pos, sweep[:, 1], "o-", label="training")
axes[0].plot(x_pos, sweep[:, 2], "s-", label="validation")
axes[0].axhline(2 * np.log(2), color="gray", ls=":", label="chance (2 ln 2)")
axes[0].set_ylabel(r"$\sum_i \ell_i$ (two tasks)"); axes[0].legend()
axes[1].plot(x_pos, sweep[:, 3], "o-", color="C2")
axes[1].set_ylabel(r"$\sqrt{R_2(\theta)}$, norm of the weights")
for ax in axes:
    ax.set_xscale("log"); ax.set_xlabel(r"$\lambda$ (leftmost point: $\lambda = 0$)")
plt.tight_layout(); plt.show()
best = int(np.argmin(sweep[:, 2]))
print(f"best validation loss at λ = {sweep[best, 0]:g}")

# %% [markdown]
# The three regimes of regularisation in one picture:
#
# * **$\lambda = 0$**: the training loss goes to almost zero — the network memorises the
#   flipped labels too — and the validation loss is the worst of all (overfitting);
# * **moderate $\lambda$**: the weights shrink, the training loss rises, and the validation loss
#   falls to its minimum: the penalty stops the network from fitting the noise;
# * **large $\lambda$**: the penalty dominates, the weights are driven to ≈ 0, and both losses
#   climb to chance level, $2\ln 2$ (underfitting).
#
# $\lambda$ is a hyperparameter: chosen on validation data, never on the training loss (which
# always prefers $\lambda = 0$).
#
# ## Summary
#
# * $L(\theta) = \sum_i \ell_i + \lambda R(\theta)$ is the plain sum of the task losses plus the
#   weighted penalty; `F.multitask_loss` computes it and, on request, each term.
# * $\partial L/\partial\theta = \sum_i\partial\ell_i/\partial\theta + 2\lambda\theta$ (L2) or
#   $+\lambda\operatorname{sign}\theta$ (L1): shared parameters collect every task's gradient;
#   L2 is weight decay, L1 makes weights sparse.
# * Regularise weights (ndim ≥ 2), not biases or normalisation parameters.
# * Too little $\lambda$ overfits, too much underfits; validation data picks it.
#
# ## Exercises
#
# 1. Train the sweep's model with `optim.SGD(..., weight_decay=2 * lam)` and $\lambda = 0$ in
#    the loss. Do you get the same weights as with the penalty in the loss? Why is the answer
#    different for `optim.Adam`?
# 2. Repeat the sweep with `reg="l1"`. Count the weights of `shared.W` with
#    $|\theta| < 10^{-3}$ for each $\lambda$. Which input features survive?
# 3. Give task b the weight 0 (`weights={"b": 0.0}`): does task a's validation loss get better
#    or worse than when both tasks are trained together? What does this say about sharing?
# 4. Regularise everything (`model.parameters()` instead of the module). Does it change the
#    curves noticeably here? Construct a case where regularising a LayerNorm's scale hurts.
# 5. The article writes the sum over the tasks $i = 1..M$. Derive what changes if one uses the
#    *mean* over tasks instead, and how $\lambda$ must be rescaled to keep the same minimiser.

# %%
# The chapter's own results, in quick mode too
assert terms_error < 1e-6                                   # the terms add up to the total
assert max(decay_errors.values()) < 1e-12                   # ∂(λR)/∂θ = 2λθ or λ sign θ
lam_, tr, va, norm = sweep.T
assert np.all(np.diff(norm) < 0)                            # more λ, smaller weights
assert tr[0] < tr[-1] and tr[0] < 0.1                       # λ = 0 fits the training set
assert va[best] < va[0] - 0.5 and va[best] < va[-1] - 0.1   # and a moderate λ generalises best
assert 0 < best < len(lams) - 1
print("chapter 7: all checks passed")
