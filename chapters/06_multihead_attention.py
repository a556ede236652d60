# %% [markdown]
# # 6. Multi-head attention
#
# The second formula of the article **"多模态大模型：技术原理与实战"** (§4.1.2, explained in
# §4.2.2):
#
# $$\operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\text{head}_1, \ldots, \text{head}_h)\, W^O,
# \qquad \text{head}_i = \operatorname{Attention}(Q W_i^Q,\; K W_i^K,\; V W_i^V).$$
#
# One attention (chapter 5) computes *one* weighted average per query: it can follow one kind of
# relation at a time — "the previous word", "the object this adjective describes", "the image
# patch this word names". Multi-head attention runs $h$ attentions side by side, each in its
# own learned projection of the inputs, and lets the model combine what they found. This chapter
#
# 1. transcribes the formula in four steps — **split, attend, concatenate, project**;
# 2. checks it against an explicit loop over the heads, and its gradients numerically;
# 3. trains a tiny model on a task that needs two different relations and draws each head's
#    weights as a heat map: the heads divide the work.
#
# The module is `nn.MultiHeadAttention` in `minimm/nn/attention.py`.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import functional as F, nn, optim

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: shorter training
rng = np.random.default_rng(0)
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 6.1 Shapes, and why the cost does not grow with $h$
#
# The inputs are sequences of $d_\text{model}$-dimensional vectors: $Q \in \mathbb{R}^{L_q \times
# d_\text{model}}$, $K, V\in\mathbb{R}^{L_k\times d_\text{model}}$ (per example of a batch). Each
# head projects them to $d_k = d_\text{model}/h$ dimensions with its own
# $W_i^Q, W_i^K, W_i^V \in \mathbb{R}^{d_\text{model}\times d_k}$, attends, and returns
# $\text{head}_i\in\mathbb{R}^{L_q\times d_k}$. Concatenating the $h$ heads gives back
# $L_q \times d_\text{model}$, and $W^O\in\mathbb{R}^{d_\text{model}\times d_\text{model}}$ mixes them.
#
# Place the $h$ matrices $W_i^Q$ side by side and they form one matrix
# $W_q = [W_1^Q \;\cdots\; W_h^Q] \in \mathbb{R}^{d_\text{model}\times d_\text{model}}$; then
# $QW_q = [QW_1^Q \;\cdots\; QW_h^Q]$: **one** matrix product projects for all heads, and head $i$
# is simply columns $i d_k$ to $(i+1)d_k - 1$. That is how minimm stores the parameters:
# `W_q, W_k, W_v, W_o`, each $d_\text{model}\times d_\text{model}$ (plus biases). The parameter
# count, $4d_\text{model}^2 + 4d_\text{model}$, and the cost of the projections do not depend on
# $h$; more heads means smaller heads.
#
# ## 6.2 Split, attend, concatenate, project — by hand
#
# A batch of $N=2$ sequences of length 5, $d_\text{model}=8$, $h=2$ heads of $d_k=4$:

# %%
N, L, d_model, h = 2, 5, 8, 2
d_k = d_model // h
mha = nn.MultiHeadAttention(d_model, h, rng=np.random.default_rng(0))
x = mm.tensor(rng.standard_normal((N, L, d_model)), dtype=np.float32)   # Q = K = V = x

# 1. project (all heads at once) and split: (N, L, d_model) -> (N, h, L, d_k)
def split(t):
    return t.reshape(N, L, h, d_k).transpose(0, 2, 1, 3)

Qh = split(x @ mha.W_q + mha.b_q)                        # Q W_i^Q for every i
Kh = split(x @ mha.W_k + mha.b_k)
Vh = split(x @ mha.W_v + mha.b_v)
print("per-head queries:", Qh.shape)

# 2. attend: the head axis is just one more batch axis for scaled_dot_product_attention
heads, weights = F.scaled_dot_product_attention(Qh, Kh, Vh)          # (N, h, L, d_k)

# 3. concatenate: (N, h, L, d_k) -> (N, L, h·d_k)
concat = heads.transpose(0, 2, 1, 3).reshape(N, L, d_model)

# 4. project with W^O
by_hand = concat @ mha.W_o + mha.b_o
module_out = mha(x, x, x)
print("module == by hand:", np.allclose(module_out.numpy(), by_hand.numpy(), atol=1e-6))

# %% [markdown]
# Step 2 treats the heads as a batch axis, which is why the formula's $h$ separate attentions
# cost one call. To be sure that this *is* the formula, compute it literally: a Python loop over
# the heads, each with its own column block of the matrices, then `concat`:

# %%
loop_heads = []
for i in range(h):
    cols = slice(i * d_k, (i + 1) * d_k)                     # head i's columns
    head_i, _ = F.scaled_dot_product_attention(x @ mha.W_q[:, cols] + mha.b_q[cols],
                                               x @ mha.W_k[:, cols] + mha.b_k[cols],
                                               x @ mha.W_v[:, cols] + mha.b_v[cols])
    loop_heads.append(head_i)
literal = mm.concat(loop_heads, axis=-1) @ mha.W_o + mha.b_o
loop_error = float(np.abs(literal.numpy() - module_out.numpy()).max())
print("max |literal formula − module|:", loop_error)

# %% [markdown]
# The module's `forward` is these four steps, with masks passed through (`mask`, True =
# allowed; `key_padding_mask`, True = padding, PyTorch's convention; `causal`):

# %%
print(inspect.getsource(nn.MultiHeadAttention.forward))
print(inspect.getsource(nn.MultiHeadAttention._split_heads))
print(inspect.getsource(nn.MultiHeadAttention._merge_heads))


# %% [markdown]
# ## 6.3 Gradient check
#
# The backward pass needs no new code: it is the chain rule through `linear`, `reshape`,
# `transpose` and attention, each already checked. We check the whole module anyway, with
# respect to its inputs **and** its parameters, in float64 and with a padding mask. A small
# helper swaps the module's parameters for the Tensors the check perturbs:

# %%
def with_params(module, names, params, *args, **kwargs):
    saved = [getattr(module, n) for n in names]
    for n, p in zip(names, params):
        object.__setattr__(module, n, p)
    try:
        return module(*args, **kwargs)
    finally:
        for n, p in zip(names, saved):
            object.__setattr__(module, n, p)

small = nn.MultiHeadAttention(4, 2, rng=np.random.default_rng(1))
names = ["W_q", "W_k", "W_v", "W_o", "b_o"]
params = [getattr(small, n).data.astype(np.float64) for n in names]
q = rng.standard_normal((2, 3, 4)); kv = rng.standard_normal((2, 4, 4))    # cross-attention
padding = np.array([[False, False, False, True], [False, True, True, True]])
mm.gradcheck(lambda q, kv, *p: with_params(small, names, p, q, kv, kv, key_padding_mask=padding),
             [q, kv] + params)
print("gradcheck passed: inputs and parameters of MultiHeadAttention")

# %% [markdown]
# If PyTorch is installed, `torch.nn.MultiheadAttention` computes the same function. Its
# in-projection is one $(3d_\text{model}\times d_\text{model})$ matrix applied as $xW^\top$, so
# `W_q` is the transpose of its first block (the test suite checks outputs, weights and
# gradients; here just the output):

# %%
try:
    import torch
except ImportError:
    torch = None
    print("torch not installed: skipped")
if torch is not None:
    ref = torch.nn.MultiheadAttention(d_model, h, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.tensor(np.concatenate([mha.W_q.numpy().T, mha.W_k.numpy().T,
                                                              mha.W_v.numpy().T])))
        ref.in_proj_bias.copy_(torch.tensor(np.concatenate([mha.b_q.numpy(), mha.b_k.numpy(),
                                                            mha.b_v.numpy()])))
        ref.out_proj.weight.copy_(torch.tensor(mha.W_o.numpy().T))
        ref.out_proj.bias.copy_(torch.tensor(mha.b_o.numpy()))
    xt = torch.tensor(x.numpy())
    out_ref, _ = ref(xt, xt, xt)
    torch_error = np.abs(out_ref.detach().numpy() - module_out.numpy()).max()
    print("max |minimm − torch|:", float(torch_error))

# %% [markdown]
# ## 6.4 Experiment: heads that divide the work
#
# A task that needs two *different* relations at once. The input is a sequence of $L=8$ random
# tokens from a vocabulary of 8; at every position the model must output
#
# * the **previous** token (position $i-1$; position 0 wraps around to the last one), and
# * the **first** token of the sequence.
#
# The model is as small as it can be: token embedding + learned positional embedding, **one**
# multi-head attention layer with $h=2$, and two linear read-outs, one per task. Without
# attention no position could see any other token; with a single head, each position gets one
# weighted average, which cannot be both "the token before me" and "the first token". Two
# heads can each take one relation. We train with the sum of the two cross-entropies (the
# multi-task loss of chapter 7, with $\lambda = 0$) and then look at the weights that
# `.attn_weights` kept.

# %%
vocab, L, d_model, h = 8, 8, 32, 2

class TwoRelations(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model, rng=rng)
        self.pos = nn.LearnedPositionalEmbedding(L, d_model, rng=rng)
        self.attn = nn.MultiHeadAttention(d_model, h, rng=rng)
        self.read_prev = nn.Linear(d_model, vocab, rng=rng)
        self.read_first = nn.Linear(d_model, vocab, rng=rng)

    def forward(self, ids):
        x = self.pos(self.tok(ids))                           # (N, L, d_model)
        z = self.attn(x, x, x)
        return self.read_prev(z), self.read_first(z)

def batch(n):
    ids = rng.integers(0, vocab, (n, L))
    return ids, np.roll(ids, 1, axis=1), np.repeat(ids[:, :1], L, axis=1)

model = TwoRelations(np.random.default_rng(0))
ids_show, _, _ = batch(1)
model(ids_show)
before = model.attn.attn_weights[0].copy()                     # (h, L, L) of one sequence

opt = optim.Adam(model.parameters(), lr=1e-2)
steps = 300 if QUICK else 600
history = []
for step in range(steps):
    ids, prev, first = batch(64)
    logits_prev, logits_first = model(ids)
    loss_prev = F.cross_entropy(logits_prev.reshape(-1, vocab), prev.reshape(-1))
    loss_first = F.cross_entropy(logits_first.reshape(-1, vocab), first.reshape(-1))
    loss = F.multitask_loss([loss_prev, loss_first], model, lam=0.0)
    opt.zero_grad(); loss.backward(); opt.step()
    history.append((loss_prev.item(), loss_first.item()))

with mm.no_grad():
    ids, prev, first = batch(512)
    logits_prev, logits_first = model(ids)
acc_prev = float((logits_prev.numpy().argmax(-1) == prev).mean())
acc_first = float((logits_first.numpy().argmax(-1) == first).mean())
mean_weights = model.attn.attn_weights.mean(axis=0)   # (h, L, L), mean over 512 sequences
print(f"accuracy: previous token {acc_prev:.3f}, first token {acc_first:.3f}")

# %%
fig, axes = plt.subplots(1, 2 * h + 1, figsize=(18, 3.8),
                         gridspec_kw={"width_ratios": [1.3] + [1] * (2 * h)})
hist = np.array(history)
axes[0].plot(hist[:, 0], label="previous token"); axes[0].plot(hist[:, 1], label="first token")
axes[0].set_yscale("log"); axes[0].set_xlabel("step")
axes[0].set_ylabel("cross-entropy per task")
axes[0].set_title("training loss"); axes[0].legend()
for i in range(h):
    for j, (w, when) in enumerate(((before[i], "untrained"), (mean_weights[i], "trained"))):
        ax = axes[1 + 2 * i + j]
        im = ax.imshow(w, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {i + 1}, {when}")
        ax.set_xlabel("key position"); ax.set_ylabel("query position")
fig.colorbar(im, ax=axes[1:].tolist(), fraction=0.015, label="attention weight $a_{ij}$")
plt.show()

# %% [markdown]
# Before training both heads spread their weight almost uniformly. After training one head puts
# its weight on **column 0** (every query looks at the first token) and the other on the
# **sub-diagonal** (query $i$ looks at key $i-1$; query 0 at the last key) — nobody told them
# which head should do what. Which head takes which job depends on the random initialisation.
# Chapter 13, *Interpretability*, reads the same `.attn_weights` from a small fusion
# Transformer — which image patches and caption words its [CLS] token attends to — and
# chapter 9, *The multimodal Transformer*, builds the full model of that kind.

# %%
first_score = mean_weights[:, :, 0].mean(axis=1)                     # weight on key 0, per head
prev_score = np.array([np.mean([mean_weights[i, p, (p - 1) % L] for p in range(L)])
                       for i in range(h)])
first_head, prev_head = int(first_score.argmax()), int(prev_score.argmax())
print("weight on the first token, per head:   ", np.round(first_score, 3))
print("weight on the previous token, per head:", np.round(prev_score, 3))

# %% [markdown]
# ## Summary
#
# * $\operatorname{MultiHead}(Q,K,V) = \operatorname{Concat}(\text{head}_1..\text{head}_h)W^O$ with
#   $\text{head}_i = \operatorname{Attention}(QW_i^Q, KW_i^K, VW_i^V)$, computed as
#   **split → attend → concatenate → project**; the per-head matrices are column blocks of
#   `W_q, W_k, W_v`, and the heads are a batch axis for the attention.
# * Parameters and projection cost are independent of $h$: $d_k = d_\text{model}/h$.
# * The module equals the literal per-head loop, passes gradcheck, and matches PyTorch.
# * Trained on a task with two relations, the two heads specialise, one per relation.
#
# ## Exercises
#
# 1. Train the experiment's model with $h=1$ (and the same $d_\text{model}$). Which task does it
#    learn, and what accuracy does it reach on the other?
# 2. Count the multiply-adds of one forward pass of `MultiHeadAttention` as a function of
#    $B, L_q, L_k, d_\text{model}$ and $h$. For which sequence length do the projections and
#    the attention itself cost the same?
# 3. Show that $\operatorname{Concat}(\text{head}_1,\ldots,\text{head}_h)W^O =
#    \sum_i \text{head}_i W^O_i$, where $W^O_i$ are the row blocks of $W^O$. What does this say
#    about how the heads' results are combined?
# 4. Replace `causal=False` by `causal=True` in the experiment. Which of the two tasks becomes
#    impossible at which positions, and why?
# 5. PyTorch averages the weights over heads unless `average_attn_weights=False`. Draw the
#    averaged map of the trained model: what would you conclude from it alone?

# %%
# The chapter's own results, in quick mode too
assert loop_error < 1e-6                            # the module is the literal formula
assert acc_prev > 0.95 and acc_first > 0.95         # both relations learned
assert first_head != prev_head                      # ... by different heads
assert first_score[first_head] > 0.8 and prev_score[prev_head] > 0.8
print("chapter 6: all checks passed")
