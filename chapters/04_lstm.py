# %% [markdown]
# # 4. Recurrent networks and the LSTM
#
# *Article: "多模态大模型：技术原理与实战" (multimodal large models: principles and practice),
# §3.2 (feature extraction: "RNN for text"), references 5–6: Hochreiter & Schmidhuber, "Long
# Short-Term Memory" (1997); Bengio, Simard & Frasconi, "Learning long-term dependencies with
# gradient descent is difficult" (1994).*
#
# The article's multimodal model reads its text with an `LSTM(128)` over token embeddings and
# keeps the final hidden state as the text feature. Why an LSTM and not the simplest recurrent
# network? Because of what happens to gradients that travel back through many time steps —
# the problem Bengio et al. analysed in 1994 and the LSTM was designed to fix.
#
# 1. the plain RNN and backpropagation through time (BPTT);
# 2. why its gradients vanish (or explode);
# 3. the LSTM's gates and its additive cell state;
# 4. the LSTM's backward pass (BPTT) derived step by step, and minimm's implementation checked
#    against a NumPy transcription of the forward and of that derivation, and by finite
#    differences;
# 5. an experiment: $\lVert \partial h_T/\partial h_t \rVert$ against $t$ for a tanh RNN and an
#    LSTM;
# 6. variable-length sequences.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import functional as F, nn

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: shorter sequences
rng = np.random.default_rng(0)
print("minimm", mm.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 4.1 The plain RNN and backpropagation through time
#
# A recurrent network reads a sequence $x_1, \dots, x_T$ one step at a time, carrying a
# hidden state (row vectors, batch-first as everywhere in minimm):
#
# $$ h_t = \tanh(x_t W + h_{t-1} U + b), \qquad h_0 = 0 . $$
#
# The same $W, U, b$ are used at every step. Unrolled, the network is a deep feed-forward
# graph with $T$ layers that share weights, and its gradient is ordinary backpropagation on
# that graph — *backpropagation through time*. Write $\delta_t = \partial L / \partial h_t$ for
# the gradient reaching $h_t$ from the later steps. With $a_t$ the pre-activation,
# $\partial h_t / \partial a_t = \operatorname{diag}(1 - h_t^2)$ and
# $\partial a_t / \partial h_{t-1} = U$, so one step back is
#
# $$ \delta_{t-1} = \big(\delta_t \odot (1 - h_t^2)\big)\, U^\top , $$
#
# and $k$ steps back, a product of $k$ Jacobians:
#
# $$ \frac{\partial h_T}{\partial h_t} = \prod_{k=t+1}^{T}
#    \frac{\partial h_k}{\partial h_{k-1}}, \qquad
#    \Big\lVert \frac{\partial h_T}{\partial h_t} \Big\rVert \le
#    \big(\max_k \lVert \operatorname{diag}(1-h_k^2)\rVert \cdot \lVert U \rVert\big)^{T-t}
#    \le \sigma_{\max}(U)^{\,T-t}. $$
#
# ## 4.2 Why the gradients vanish
#
# Bengio, Simard & Frasconi (1994) made this precise: if the largest singular value of $U$
# (times the largest derivative of the nonlinearity, at most 1 for tanh) is below 1, the bound
# shrinks *geometrically* with the distance $T - t$; if it is well above 1 the product can
# grow geometrically instead (exploding gradients). To store information robustly — to stay
# in a region where small noise does not wipe the state out — the network needs the
# contracting regime, so it is exactly the networks that *remember* whose gradients vanish.
# The consequence: a signal at step $t$ that matters for the loss at step $T$ contributes a
# gradient of order $\rho^{T-t}$, drowned by the short-range terms. The network learns
# short-range dependencies and not long ones.
#
# ## 4.3 The LSTM
#
# Hochreiter & Schmidhuber (1997) gave the state a path on which the gradient is not
# multiplied by a squashing Jacobian at every step. The cell state $c_t$ is updated
# *additively*, with multiplicative gates deciding what to write, keep and read (the forget
# gate $f$ was added by Gers, Schmidhuber & Cummins, 2000). With $H$ hidden units and gate
# blocks in order $i, f, g, o$:
#
# $$
# \begin{aligned}
# z_t &= x_t W + h_{t-1} U + b \in \mathbb{R}^{4H} \\
# i_t &= \sigma(z_{t,i}), \quad f_t = \sigma(z_{t,f}), \quad g_t = \tanh(z_{t,g}), \quad
# o_t = \sigma(z_{t,o}) \\
# c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
# h_t &= o_t \odot \tanh(c_t)
# \end{aligned}
# $$
#
# $i$ (input gate) scales what is written, $f$ (forget gate) what is kept, $o$ (output gate)
# what is shown to the rest of the network; $g$ is the candidate content. Along the cell path,
#
# $$ \frac{\partial c_t}{\partial c_{t-1}} = \operatorname{diag}(f_t)
#    \;+\; (\text{terms through } h_{t-1}), $$
#
# no $U$ and no $\tanh'$ in the direct term: when the forget gate is open ($f \approx 1$) the
# error flows back unchanged — the "constant error carousel" of the 1997 paper. The gates
# are learned, so the network itself decides how long to remember.
#
# minimm's `F.lstm_cell` is that transcription, composed from differentiable operations (so it
# is twice differentiable):

# %%
print(inspect.getsource(F.recurrent.lstm_gates))
print(inspect.getsource(F.lstm_cell))

# %% [markdown]
# `nn.LSTM(input_size, hidden_size)` owns $W$ (in, 4H), $U$ (H, 4H) and $b$ (4H), initialised
# from $U(-1/\sqrt H, 1/\sqrt H)$ as in PyTorch, and runs batch-first sequences
# $(N, T, \text{in})$. For speed its forward is one fused `Function` for the whole sequence:
# $xW + b$ for all steps in one matrix product, then the loop over time on raw arrays, and a
# backward that is BPTT written out by hand. Here is that backward, derived.
#
# ### The LSTM's backward pass, step by step
#
# Let $L$ be the loss. Going backwards in time, suppose we know at step $t$
#
# * $\delta h_t = \partial L/\partial h_t$: what the loss wants from $h_t$ — from the output at
#   step $t$ (if the loss reads it) plus what step $t+1$ sends back through $h_t U$;
# * $\delta c_t$: what step $t+1$ sends back through $c_{t+1} = f_{t+1}\odot c_t + \dots$
#   (zero at the last step).
#
# We walk the step's four lines in reverse, each time by the chain rule for elementwise
# products ($y = a \odot b \Rightarrow \bar a = \bar y \odot b$).
#
# **Output** $h_t = o_t \odot \tanh c_t$. The output gate gets
# $\delta o_t = \delta h_t \odot \tanh c_t$, and the cell gets a second contribution on top of
# the one from the future, through $\tanh' = 1 - \tanh^2$:
#
# $$\hat\delta c_t = \delta c_t + \delta h_t \odot o_t \odot (1 - \tanh^2 c_t) .$$
#
# **Cell** $c_t = f_t\odot c_{t-1} + i_t \odot g_t$. Four products, four gradients:
#
# $$\delta i_t = \hat\delta c_t \odot g_t, \qquad \delta g_t = \hat\delta c_t \odot i_t, \qquad
# \delta f_t = \hat\delta c_t \odot c_{t-1}, \qquad
# \delta c_{t-1} = \hat\delta c_t \odot f_t .$$
#
# The last one is the *constant error carousel*: the gradient reaches $c_{t-1}$ multiplied by the
# forget gate only — no weight matrix, no squashing derivative.
#
# **Gates** $i = \sigma(z_i)$, $f = \sigma(z_f)$, $o = \sigma(z_o)$, $g = \tanh(z_g)$, with
# $\sigma' = \sigma(1-\sigma)$ and $\tanh' = 1 - \tanh^2$ written through the outputs:
#
# $$\delta z_t = \bigl[\,\delta i_t \odot i_t(1-i_t),\;\; \delta f_t \odot f_t(1-f_t),\;\;
# \delta g_t \odot (1 - g_t^2),\;\; \delta o_t \odot o_t(1-o_t)\,\bigr] \in \mathbb{R}^{N\times 4H}.$$
#
# **Pre-activation** $z_t = x_t W + h_{t-1} U + b$: the linear layer of chapter 2, used at every
# step with the same weights, so the weight gradients *sum over time*:
#
# $$\frac{\partial L}{\partial x_t} = \delta z_t W^\top, \qquad
# \delta h_{t-1} \mathrel{+}= \delta z_t U^\top, \qquad
# \frac{\partial L}{\partial W} = \sum_t x_t^\top \delta z_t, \qquad
# \frac{\partial L}{\partial U} = \sum_t h_{t-1}^\top \delta z_t, \qquad
# \frac{\partial L}{\partial b} = \sum_t \sum_n (\delta z_t)_n .$$
#
# The "$+=$" is because $h_{t-1}$ also feeds the output at step $t-1$. That is all of BPTT for
# the LSTM: run the forward, keep $i, f, g, o, c$ of every step, then apply these lines for
# $t = T, \dots, 1$. The path through $h$ multiplies by $U^\top$ and the gate derivatives
# at every step (the plain RNN's problem again); the path through $c$ only by $f$.
#
# Below, the derivation transcribed in NumPy — written here, not taken from the library — and
# compared with the gradients minimm's fused `LSTMSequence` computes (`F.lstm`). Its
# `backward` is the same lines on arrays (the library's docstring lists them).

# %%
def lstm_forward_numpy(X, W, U, b):
    # the forward of §4.3, keeping what the backward needs: gates and states of every step
    N, T, _ = X.shape
    H = U.shape[0]
    h, c = np.zeros((N, H)), np.zeros((N, H))
    cache = []
    for t in range(T):
        z = X[:, t] @ W + h @ U + b
        i, f = 1 / (1 + np.exp(-z[:, :H])), 1 / (1 + np.exp(-z[:, H:2 * H]))
        g, o = np.tanh(z[:, 2 * H:3 * H]), 1 / (1 + np.exp(-z[:, 3 * H:]))
        c_next = f * c + i * g
        cache.append((h, c, i, f, g, o, c_next))
        h, c = o * np.tanh(c_next), c_next
    return h, cache


def lstm_backward_numpy(X, W, U, cache, dh_T):
    # BPTT exactly as derived above, for a loss that reads h_T only (δh_T given, δc_T = 0)
    dW, dU, db = np.zeros_like(W), np.zeros_like(U), np.zeros(W.shape[1])
    dX = np.zeros_like(X)
    dh, dc = dh_T, np.zeros_like(dh_T)
    for t in reversed(range(X.shape[1])):
        h_prev, c_prev, i, f, g, o, c = cache[t]
        do = dh * np.tanh(c)
        dc = dc + dh * o * (1 - np.tanh(c) ** 2)                  # δc_t with the output's share
        di, dg, df = dc * g, dc * i, dc * c_prev
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2),
                             do * o * (1 - o)], axis=1)           # δz_t  (N, 4H)
        dX[:, t] = dz @ W.T
        dW += X[:, t].T @ dz
        dU += h_prev.T @ dz
        db += dz.sum(axis=0)
        dh, dc = dz @ U.T, dc * f                                # to step t − 1: δh, carousel
    return dX, dW, dU, db


N, T, I, H = 3, 5, 4, 6
X = rng.standard_normal((N, T, I))
W, U, b = (rng.standard_normal(s) * 0.5 for s in [(I, 4 * H), (H, 4 * H), (4 * H,)])
v_out = rng.standard_normal((N, H))                               # L = <v, h_T>
h_T_np, cache = lstm_forward_numpy(X, W, U, b)
by_hand = lstm_backward_numpy(X, W, U, cache, v_out)

Xt, Wt, Ut, bt = (mm.tensor(a, requires_grad=True) for a in (X, W, U, b))
_, (h_T_mm, _) = F.lstm(Xt, Wt, Ut, bt)
(h_T_mm * mm.tensor(v_out)).sum().backward()
bptt_errors = {name: float(np.abs(t.grad.numpy() - ref).max())
               for name, t, ref in zip(("x", "W", "U", "b"), (Xt, Wt, Ut, bt), by_hand)}
print("max |derivation − minimm|:", bptt_errors)
bptt_error = max(bptt_errors.values())


# %% [markdown]
# ## 4.4 Checking the implementation
#
# The gradients agree with the derivation; now the forward. The NumPy transcription above
# against the fused sequence and the composed one (a loop of `lstm_cell`); then the gradients
# once more, by finite differences in float64 (`gradgradcheck` checks second derivatives too).

# %%
h_ref = h_T_np
c_ref = cache[-1][-1]                                             # c_T
_, (h_fused, c_fused) = F.lstm(X, W, U, b)
_, (h_comp, _) = F.lstm_simple(X, W, U, b)
max_err = max(np.abs(h_fused.numpy() - h_ref).max(), np.abs(c_fused.numpy() - c_ref).max(),
              np.abs(h_comp.numpy() - h_ref).max())
print("max |minimm - numpy| =", max_err)

x0, h0, c0 = rng.standard_normal((2, I)), rng.standard_normal((2, H)), rng.standard_normal((2, H))
mm.gradcheck(F.lstm_cell, [x0, h0, c0, W, U, b])
mm.gradgradcheck(F.lstm_cell, [x0, h0, c0, W, U, b], mode="random")
lengths = np.array([5, 2, 4])
mm.gradcheck(lambda X, W, U, b: F.lstm(X, W, U, b, lengths=lengths)[1], [X, W, U, b])
print("gradcheck (cell, and 5-step sequences with lengths) and gradgradcheck passed")

# %% [markdown]
# ## 4.5 Experiment: gradient norms through time
#
# We run a random input sequence of length $T$ through (a) a tanh RNN and (b) an LSTM, both
# with $H = 32$ and PyTorch's default initialisation, take the scalar $L = \langle v, h_T\rangle$
# for a fixed random $v$, and ask `mm.grad` for $\partial L / \partial h_t$ at *every* step —
# the BPTT quantities $\delta_t$. Each recurrent network is built step by step from
# differentiable operations, so every $h_t$ is a node of the graph.
#
# For the LSTM the state is the pair $(h_t, c_t)$; we report $\lVert(\delta h_t,
# \delta c_t)\rVert$. We also vary the forget gate's bias $b_f$: with $b_f = 0$ (PyTorch's
# default) the forget gate starts near $\sigma(0) = 0.5$, which halves the carousel at every
# step; $b_f = 1$ is the usual recommendation (Gers et al. 2000; Jozefowicz et al. 2015);
# $b_f = 3$ starts with $f \approx 0.95$.

# %%
T_long = 40 if QUICK else 80
N, I, H = 16, 8, 32
X = rng.standard_normal((N, T_long, I)).astype(np.float32)
v = mm.tensor(rng.standard_normal((N, H)).astype(np.float32))


def rnn_state_gradients(X, v):
    gen = np.random.default_rng(1)
    bound = 1 / np.sqrt(H)
    W = mm.tensor(gen.uniform(-bound, bound, (I, H)).astype(np.float32), requires_grad=True)
    U = mm.tensor(gen.uniform(-bound, bound, (H, H)).astype(np.float32), requires_grad=True)
    b = mm.tensor(gen.uniform(-bound, bound, H).astype(np.float32), requires_grad=True)
    h = mm.tensor(np.zeros((N, H), np.float32))
    states = []
    for t in range(X.shape[1]):
        h = F.tanh(F.linear(mm.tensor(X[:, t]), W, b) + h @ U)   # (N, H)
        states.append(h)
    deltas = mm.grad((h * v).sum(), states)
    return np.array([np.linalg.norm(d.numpy()) for d in deltas])


def lstm_state_gradients(X, v, forget_bias):
    lstm = nn.LSTM(I, H, rng=np.random.default_rng(1))
    lstm.b.data[H:2 * H] += forget_bias                          # the f block of b
    h = c = mm.tensor(np.zeros((N, H), np.float32))
    hs, cs = [], []
    for t in range(X.shape[1]):
        h, c = F.lstm_cell(mm.tensor(X[:, t]), h, c, lstm.W, lstm.U, lstm.b)
        hs.append(h)
        cs.append(c)
    deltas = mm.grad((h * v).sum(), hs + cs)
    T = X.shape[1]
    return np.array([np.sqrt(np.linalg.norm(dh.numpy()) ** 2 + np.linalg.norm(dc.numpy()) ** 2)
                     for dh, dc in zip(deltas[:T], deltas[T:])])


norms = {"tanh RNN": rnn_state_gradients(X, v)}
for fb in (0.0, 1.0, 3.0):
    norms[f"LSTM, forget bias {fb:g}"] = lstm_state_gradients(X, v, fb)
for name, n in norms.items():
    print(f"{name:24s} |dL/dstate| at t=1: {n[0]:.2e}   at t=T: {n[-1]:.2e}")

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
steps = np.arange(1, T_long + 1)
for name, n in norms.items():
    ax.semilogy(steps, n, label=name)
ax.set_xlabel("time step t")
ax.set_ylabel(r"$\|\partial \langle v, h_T\rangle / \partial\, \mathrm{state}_t\|$")
ax.set_title(f"gradient reaching step t from step T = {T_long}")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the plot from right to left, i.e. backwards in time. The RNN's gradient falls by
# roughly a constant factor per step — a straight line on the log scale, Bengio et al.'s
# geometric decay — and is many orders of magnitude smaller after a few dozen steps. The
# LSTM with a half-open forget gate ($b_f = 0$) decays almost as fast: the architecture alone
# does not save the gradient, the *open forget gate* does. With $b_f = 1$ the decay is much
# slower, and with $b_f = 3$ the gradient reaching the first step is of the same order as at
# the last: the cell state carries it. Training can then close the gates where forgetting helps.
#
# ## 4.6 Variable-length sequences
#
# Captions have different lengths. Padding them to a common $T$ is fine as long as the padded
# steps do not change the state: `nn.LSTM(…)(x, lengths=lengths)` keeps each sequence's state
# frozen after its own last step (a `where` with a per-step mask), so $(h_T, c_T)$ is the state
# at that step, and its outputs at padded steps are zero.

# %%
lstm = nn.LSTM(4, 3, rng=np.random.default_rng(2))
x = rng.standard_normal((2, 6, 4)).astype(np.float32)
lengths = np.array([6, 3])
out, (h_T, c_T) = lstm(mm.tensor(x), lengths=lengths)
_, (h_alone, _) = lstm(mm.tensor(x[1:, :3]))                    # sequence 1, unpadded
padding_error = np.abs(h_T.numpy()[1] - h_alone.numpy()[0]).max()
print("sequence 1: h_T with padding vs run alone:", padding_error)
print("outputs at its padded steps:\n", out.numpy()[1, 3:])

# %% [markdown]
# ## Summary
#
# - An RNN is a deep network unrolled in time with shared weights; BPTT is backpropagation on
#   that graph.
# - The gradient from step $T$ to step $t$ is a product of $T - t$ Jacobians
#   $\operatorname{diag}(1-h_k^2)U^\top$; it vanishes (or explodes) geometrically (Bengio et al.
#   1994).
# - The LSTM's cell state is updated additively, $c_t = f_t c_{t-1} + i_t g_t$, so the direct
#   gradient path is multiplied only by the forget gate; with $f \approx 1$ it carries errors
#   over long distances (Hochreiter & Schmidhuber 1997).
# - Initialisation matters: a forget-gate bias of 1 or more keeps gradients alive at the start.
# - BPTT for the LSTM, derived: $\delta o = \delta h\odot\tanh c$,
#   $\hat\delta c = \delta c + \delta h\odot o\odot(1-\tanh^2 c)$, $\delta c_{t-1} = \hat\delta c\odot f$,
#   the gate derivatives give $\delta z_t$, and $\partial L/\partial U = \sum_t h_{t-1}^\top\delta z_t$.
# - minimm's `nn.LSTM` runs that fused BPTT for speed, with the composed cell as its oracle, and
#   handles padded batches with `lengths`.
#
# ## Exercises
#
# 1. Scale the RNN's $U$ so that its largest singular value is 1.5, then 3. What happens to the
#    curve? Add gradient clipping by norm and explain what it can and cannot fix.
# 2. Replace tanh by ReLU in the RNN and initialise $U$ to the identity (Le et al. 2015).
#    Compare with the LSTM.
# 3. Prove that $\partial c_T/\partial c_t = \prod_k \operatorname{diag}(f_k)$ when the paths
#    through $h$ are ignored. With $f$ constant, after how many steps has the signal fallen by
#    $e^{-1}$?
# 4. Build a task where the label is the first token of a length-50 sequence. Train a tanh RNN
#    and an LSTM ($b_f = 1$) on it with `optim.Adam`. Which learns it?
# 5. Why must the *outputs* at padded steps be masked separately from the *state*? (Hint: what
#    would the model see if you averaged the outputs over time?)
# 6. Extend `lstm_backward_numpy` to return $\partial L/\partial h_0$ and $\partial L/\partial c_0$
#    and to accept a loss on *every* output $h_t$ (a $\delta h$ per step, added as the derivation
#    says). Check it against `F.lstm` with `h0`, `c0` given as Tensors that require a gradient.

# %%
# The chapter's own results, in quick mode too
rnn = norms["tanh RNN"]
lstm_open = norms["LSTM, forget bias 3"]
assert max_err < 1e-12 and bptt_error < 1e-12
assert rnn[0] < 1e-4 * rnn[-1]                  # the RNN's gradient has vanished
assert lstm_open[0] > 1e-2 * lstm_open[-1]      # the LSTM with an open forget gate keeps it
assert lstm_open[0] > 1e3 * rnn[0]
assert padding_error < 1e-6 and not out.numpy()[1, 3:].any()
print("chapter 4: all checks passed")
