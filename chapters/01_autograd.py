# %% [markdown]
# # 1. Automatic differentiation
#
# *Foundation chapter for the article "多模态大模型：技术原理与实战" (multimodal large models:
# principles and practice).*
#
# Every model in the article — the CNN image branch, the LSTM text branch, attention
# (§4.1.1–§4.1.2), the multi-task loss $L(\theta)=\sum_i \ell(y_i,\hat y_i)+\lambda R(\theta)$
# (§4.1.3) — is trained by gradient descent (§3.2). Gradient descent needs
# $\partial L / \partial \theta$ for *every* parameter $\theta$, and the models have hundreds of
# thousands of them. Nobody derives those by hand: the library records how the loss was
# computed and runs the chain rule backwards through that record. This chapter builds that
# machinery's story with minimm's own engine, `minimm/autograd.py` (about 300 lines).
#
# What we will see:
#
# 1. computational graphs, and how to walk one;
# 2. the chain rule at tensor scale, and why we run it in **reverse**;
# 3. topological order, computed without recursion;
# 4. gradient accumulation (and `zero_grad`);
# 5. `Function`: forward on arrays, backward in differentiable operations — and writing our own;
# 6. gradient checking, and why it must run in float64;
# 7. higher-order gradients: $\tanh''$, Hessian-vector products, `gradgradcheck`;
# 8. the same code on NumPy and on CuPy.

# %%
import inspect
import os
import sys
import time

import matplotlib.pyplot as plt
import numpy as np

import minimm as mm
from minimm import functional as F
from minimm.autograd import _topological_order

QUICK = os.environ.get("MINIMM_QUICK") == "1"  # the tests set this: smaller loops
rng = np.random.default_rng(0)
print("minimm", mm.__version__, "| numpy", np.__version__, "| quick mode:", QUICK)

# %% [markdown]
# ## 1.1 Computational graphs
#
# Take $y = x\cdot w + \tanh(x\cdot w)$. Evaluating it performs three operations; minimm
# remembers each one. Every result `Tensor` points to the `Function` that produced it
# (`tensor.creator`), and each `Function` points to its inputs (`creator.inputs`). Leaves —
# the tensors we made ourselves — have `creator = None`.
#
# So the graph is stored *backwards*: from the output you can reach everything that
# contributed to it, which is exactly the direction the gradient will travel.

# %%
x = mm.tensor([1.0, -2.0, 0.5], requires_grad=True); x.name = "x"
w = mm.tensor([0.3, 0.1, -1.2], requires_grad=True); w.name = "w"
a = x * w                 # (3,)
b = F.tanh(a)             # (3,)
y = a + b                 # (3,)
L = y.sum()               # ()

print("L.creator        :", L.creator)
print("L.creator.inputs :", [t.creator for t in L.creator.inputs])
print("leaf?            :", x.is_leaf, x.creator)


# %% [markdown]
# A few lines walk the graph from the output and draw it as text. (Recursion is fine for a
# drawing of a five-node graph; §1.3 explains why the engine itself must not recurse. Chapter
# 13, *Interpretability*, draws the same graphs as pictures with `minimm.viz.draw_graph`.)

# %%
def draw(t, prefix="", last=True, drawn=None):
    # leaves print their name; results print "name = Function"; a node drawn before is not repeated
    top = drawn is None
    drawn = set() if top else drawn
    name = t.name or "?"
    label = (f"{name} {t.shape} (leaf)" if t.creator is None
             else f"{name} = {t.creator} -> {t.shape}")
    again = id(t) in drawn and t.creator is not None
    branch = "" if top else ("└── " if last else "├── ")
    print(prefix + branch + label + ("   (shared: drawn above)" if again else ""))
    drawn.add(id(t))
    if t.creator is not None and not again:
        kids = t.creator.inputs
        child_prefix = prefix + ("" if top else ("    " if last else "│   "))
        for i, k in enumerate(kids):
            draw(k, child_prefix, i == len(kids) - 1, drawn)


a.name, b.name, y.name, L.name = "a", "b", "y", "L"   # names only label the drawing
draw(L)


# %% [markdown]
# `a` appears twice — once as a direct input of `Add`, once through `Tanh`. It is one node with
# two consumers, and its gradient will be the sum of what flows back along both edges (§1.4).

# %% [markdown]
# ## 1.2 The chain rule at tensor scale
#
# For a scalar loss $L$ and any tensor $v$ in the graph write $\bar v = \partial L/\partial v$
# (same shape as $v$). If $y = f(x)$ with Jacobian $J_{ji} = \partial y_j / \partial x_i$, the
# chain rule says
#
# $$
# \bar x_i \;=\; \sum_j \frac{\partial L}{\partial y_j}\,\frac{\partial y_j}{\partial x_i}
# \qquad\text{i.e.}\qquad \bar x = J^\top \bar y .
# $$
#
# This *vector–Jacobian product* is all a `Function` has to supply, and it never has to form
# $J$. Two examples, which are exactly minimm's `backward` methods:
#
# * elementwise $y = a \odot b$: $J$ is diagonal, so $\bar a = \bar y \odot b$, $\bar b = \bar y \odot a$;
# * matrix product $Y = AB$ with $Y_{ik} = \sum_j A_{ij}B_{jk}$:
#   $\bar A_{ij} = \sum_k \bar Y_{ik} B_{jk}$, that is
#   $$\bar A = \bar Y B^\top,\qquad \bar B = A^\top \bar Y .$$
#
# Broadcasting adds one rule: if $b$ of shape $(3,)$ was broadcast against $(4,3)$, each
# $b_j$ was used four times, so $\bar b_j$ sums the four contributions — `sum_to(ḡ, b.shape)`.
#
# When a tensor feeds several consumers $y^{(1)},\dots,y^{(m)}$, the multivariate chain rule
# adds the paths:
#
# $$\bar x = \sum_{c=1}^{m} J_c^\top\, \bar y^{(c)} .$$
#
# ### Why reverse mode
#
# Composing $L = f_K\circ\cdots\circ f_1(\theta)$ gives
# $\nabla_\theta L^\top = \bar L\, J_K J_{K-1}\cdots J_1$ with $\bar L = 1$. Multiplying from the
# **left** (reverse mode) keeps a single row vector the whole way: one backward pass costs
# about as much as one forward pass, and yields the gradient for *all* $n$ parameters at
# once. Multiplying from the right (forward mode) pushes one direction at a time and needs $n$
# passes — as does finite differencing, which needs $2n$ forward evaluations. For a loss
# (one output, $n \approx 10^5$ inputs) reverse mode wins by a factor of order $n$.
#
# A small measurement: the gradient of $L(w)=\sum \tanh(Xw)$ by one `backward()`, and by
# central differences.

# %%
def loss(w, X):
    return F.tanh(X @ w).sum()


for n in ([50, 200] if QUICK else [50, 200, 800]):
    X = mm.tensor(rng.standard_normal((64, n)))
    w0 = rng.standard_normal(n)

    t0 = time.perf_counter()
    w = mm.tensor(w0, requires_grad=True)
    loss(w, X).backward()
    t_reverse = time.perf_counter() - t0

    t0 = time.perf_counter()
    g_fd = np.empty(n)
    with mm.no_grad():
        for i in range(n):                       # 2n forward passes
            e = np.zeros(n); e[i] = 1e-6
            g_fd[i] = (loss(mm.tensor(w0 + e), X).item() - loss(mm.tensor(w0 - e), X).item()) / 2e-6
    t_fd = time.perf_counter() - t0

    print(f"n = {n:4d}: backward {t_reverse*1e3:6.2f} ms, finite differences {t_fd*1e3:7.1f} ms "
          f"(x{t_fd / t_reverse:5.0f}); max |difference| {np.abs(w.grad.numpy() - g_fd).max():.1e}")

# %% [markdown]
# ## 1.3 Topological order
#
# Reverse mode may call a `Function`'s `backward` only when the gradient of its outputs is
# *complete* — when every consumer of those outputs has already sent its contribution. An order
# with that property is a (reversed) **topological order** of the graph. minimm computes it in
# `_topological_order`:

# %%
print(inspect.getsource(_topological_order))

# %%
order = _topological_order([L])
print(" -> ".join(str(fn) for fn in order))

# the property the engine relies on: every consumer comes before the Function it consumes from
position = {fn: i for i, fn in enumerate(order)}
for fn in order:
    for t in fn.inputs:
        if t.creator is not None:
            assert position[fn] < position[t.creator], (fn, t.creator)
print("every Function comes after all of its consumers")


# %% [markdown]
# `Add` consumes `Mul`'s output both directly and via `Tanh`, so `Mul` must wait for both:
# the order is `Sum, Add, Tanh, Mul`, never `…, Mul, Tanh`.
#
# **Why iterative?** The obvious version is a recursive depth-first search. Python allows about
# a thousand nested calls (`sys.getrecursionlimit()`), and a graph can be much deeper than
# that: an RNN unrolled over a long sequence, or simply a loop of updates. Here is the
# recursive version a learner would write first, on a 10,000-operation chain:

# %%
def recursive_order(fn, seen, order):
    seen.add(fn)
    for t in fn.inputs:
        if t.creator is not None and t.creator not in seen:
            recursive_order(t.creator, seen, order)
    order.append(fn)
    return order


N_CHAIN = 10_000
z = mm.tensor(1.0, dtype="float64", requires_grad=True)
h = z
for _ in range(N_CHAIN):
    h = h * 1.0001                     # a 10,000-deep chain of Mul

print("recursion limit:", sys.getrecursionlimit())
try:
    recursive_order(h.creator, set(), [])
    print("recursive version survived")
except RecursionError as e:
    print("recursive version: RecursionError:", e)

t0 = time.perf_counter()
h.backward()
print(f"minimm: dh/dz = {z.grad.item():.6f} (exact 1.0001^{N_CHAIN} = {1.0001**N_CHAIN:.6f}) "
      f"in {time.perf_counter() - t0:.2f} s")

# %% [markdown]
# minimm keeps its own stack of `(function, expanded)` pairs instead of Python's call stack:
# a function is pushed once to be *expanded* (its producers pushed after it) and once more to be
# *emitted* after all of them. Same post-order, no depth limit.

# %% [markdown]
# ## 1.4 Gradients accumulate
#
# `backward()` **adds** into `.grad`; it never overwrites. That is what makes a reused node
# right — $y = x\cdot x + x$ has $dy/dx = 2x + 1$, the sum over the three uses of $x$ — and it
# is also why a training loop must clear gradients between steps (`zero_grad`, also on
# modules and optimisers).

# %%
x = mm.tensor(3.0, dtype="float64", requires_grad=True)
y = x * x + x                        # x used three times: dy/dx = 2x + 1 = 7
y.backward()
print("after one backward :", x.grad)

y.backward()                         # same graph again: 7 + 7
print("after two backwards:", x.grad)

x.zero_grad()
(x * x + x).backward()
print("after zero_grad    :", x.grad)
reused_grad = x.grad.item()
assert reused_grad == 7.0

# %% [markdown]
# Inside one backward pass the same summation happens for intermediate tensors: the engine keeps
# a running total per tensor (`grads[id(t)] + g` in `_run_backward`) and only hands it to the
# producer once the topological order says every consumer is done.

# %% [markdown]
# ## 1.5 `Function`: forward on arrays, backward in differentiable operations
#
# A `Function` has two halves:
#
# * `forward(*arrays)` works on raw NumPy/CuPy arrays — fast, no bookkeeping;
# * `backward(*grad_outputs)` receives $\bar y$ as **Tensors** and returns $\bar x$ built from
#   minimm's own differentiable operations, reading `self.inputs` and `self.outputs()`.
#
# Because the backward is written in differentiable operations, running it with recording on
# (`create_graph=True`) builds a graph of the gradient itself — higher-order derivatives for
# free (§1.7). With recording off (the default) it is plain array arithmetic. Here is the base
# class, then three operations from `minimm/functional/`. The binary operations (`Add`, `Mul`,
# …) share one `forward`, in their base class `_Binary`: it checks that the two shapes
# broadcast and then calls the operation's own `compute(a, b)` — so `Mul` defines `compute`
# (its forward on arrays) and `backward`:

# %%
print(inspect.getsource(mm.Function))

# %%
from minimm.functional import activations, math as fmath

for cls in (fmath._Binary, fmath.Mul, fmath.Exp, activations.Tanh):
    print(inspect.getsource(cls))


# %% [markdown]
# `Exp` and `Tanh` differentiate through their **output** ($\frac{d}{dx}e^x = e^x = y$,
# $\frac{d}{dx}\tanh x = 1-y^2$), so they read `self.outputs()` instead of recomputing. `Mul`
# skips a gradient nobody asked for (`needs_input_grad`), and `sum_to` folds broadcast
# dimensions back (§1.2).
#
# ### Your own operation: `Cube`
#
# $y = x^3$, $\;\bar x = \bar y \cdot 3x^2$. Four lines:

# %%
class Cube(mm.Function):
    # y = x³;  ∂y/∂x = 3x²
    def forward(self, x):
        return x ** 3

    def backward(self, gy):
        x, = self.inputs
        return gy * 3.0 * x * x          # Tensors in, Tensors out: differentiable again


def cube(x):
    return Cube()(x)


x = mm.tensor([1.0, -2.0, 0.5], requires_grad=True)
cube(x).sum().backward()
print(x.grad, "expected", 3 * x.numpy() ** 2)

# %% [markdown]
# ## 1.6 Gradient checking
#
# `mm.gradcheck(fn, inputs)` compares backward against central differences. With a random
# upstream gradient $\bar g$ it forms the scalar $\varphi(x) = \langle f(x), \bar g\rangle$, whose
# gradient is the vector–Jacobian product $J^\top\bar g$ that backward computes, and checks every
# component (or, for big inputs, random directions $d$) against
#
# $$
# \frac{\varphi(x+\varepsilon d)-\varphi(x-\varepsilon d)}{2\varepsilon}.
# $$

# %%
print("Cube first derivative :", mm.gradcheck(cube, [rng.standard_normal((3, 4))]))
print("Cube second derivative:", mm.gradgradcheck(cube, [rng.standard_normal((3, 4))]))


# %% [markdown]
# ### Catching a planted bug
#
# A classic slip: forgetting the power rule's exponent decrement, or its factor. Gradcheck says
# which input, how many elements, and the worst one:

# %%
class BuggyCube(Cube):
    def backward(self, gy):
        x, = self.inputs
        return gy * 3.0 * x              # bug: should be 3x²


try:
    mm.gradcheck(lambda x: BuggyCube()(x), [rng.standard_normal((2, 3))])
    caught_bug = False
except mm.GradcheckError as e:
    caught_bug = True
    print(e)
assert caught_bug


# %% [markdown]
# A subtler bug passes the first-order check and fails only the second: a backward computed on
# raw arrays (`x.data`) instead of Tensors gives correct numbers but cuts the graph, so the
# gradient cannot be differentiated again. `gradgradcheck` catches that:

# %%
class ArrayCube(Cube):
    def backward(self, gy):
        x, = self.inputs
        return gy * mm.Tensor(3.0 * x.data ** 2)   # right values, but a constant to autograd


print("first order :", mm.gradcheck(lambda x: ArrayCube()(x), [rng.standard_normal(4)]))
print("second order:", mm.gradgradcheck(lambda x: ArrayCube()(x), [rng.standard_normal(4)],
                                        raise_exception=False))


# %% [markdown]
# ### Why float64: the V-shaped error curve
#
# Taylor's theorem gives the central difference's **truncation** error,
#
# $$
# \frac{f(x+\varepsilon)-f(x-\varepsilon)}{2\varepsilon} = f'(x) + \frac{\varepsilon^2}{6}f'''(\xi),
# $$
#
# which shrinks with $\varepsilon$. But $f(x\pm\varepsilon)$ is computed with relative
# **rounding** error about $u$ (unit roundoff: $u = 2^{-24}\approx 6\cdot10^{-8}$ in float32,
# $2^{-53}\approx 1.1\cdot10^{-16}$ in float64), and dividing by $2\varepsilon$ amplifies it:
#
# $$
# \text{error}(\varepsilon) \;\approx\; \frac{\varepsilon^2}{6}\,|f'''| \;+\; \frac{u\,|f|}{\varepsilon}.
# $$
#
# The sum is smallest at $\varepsilon^\ast \approx (3u|f|/|f'''|)^{1/3} \propto u^{1/3}$, where the
# error is $\propto u^{2/3}$: about $10^{-10}$ in float64 but about $10^{-5}$ in float32 —
# the size of the gradient errors we want to detect. So gradient checks run in float64
# (`mm.gradcheck` refuses anything else), with $\varepsilon = 10^{-6}$ near the bottom of the V.
#
# The experiment: $f(x) = e^x\tanh x$ at 16 points, differenced in each precision, compared with
# minimm's float64 backward (itself gradient-checked above).

# %%
def f(x):
    return F.exp(x) * F.tanh(x)


x0 = np.linspace(0.2, 1.5, 16)
xr = mm.tensor(x0, requires_grad=True)
f(xr).sum().backward()
exact = xr.grad.numpy()                                   # float64 reference

epsilons = np.logspace(-14, 0, 29 if QUICK else 57)
fd_error = {}
for dtype in (np.float32, np.float64):
    errs = []
    for eps in epsilons:
        x, h = x0.astype(dtype), dtype(eps)
        with mm.no_grad():
            fd = (f(mm.tensor(x + h)).numpy() - f(mm.tensor(x - h)).numpy()) / (2 * h)
        assert fd.dtype == dtype                          # the whole computation stayed in dtype
        errs.append(np.abs(fd.astype(np.float64) - exact).max())
    fd_error[dtype.__name__] = np.array(errs)

best = {k: (epsilons[v.argmin()], v.min()) for k, v in fd_error.items()}
for k, (e, err) in best.items():
    print(f"{k}: best eps = {e:.1e}, max error there = {err:.1e}")

# %%
fig, ax = plt.subplots(figsize=(6.4, 4.2))
for (name, errs), color in zip(fd_error.items(), ("tab:orange", "tab:blue")):
    u = np.finfo(name).eps / 2
    ax.loglog(epsilons, errs, "o-", ms=3, color=color, label=f"{name} (measured)")
    model = epsilons ** 2 / 6 * 4.75 + u * 4.06 / epsilons  # max |f'''|, max |f| on [0.2, 1.5]
    ax.loglog(epsilons, model, "--", color=color, alpha=0.6, label=f"{name}: ε²|f'''|/6 + u|f|/ε")
    ax.axvline(best[name][0], color=color, lw=0.8, ls=":")
ax.axvline(1e-6, color="gray", lw=1, label="gradcheck's ε = 1e-6")
ax.set_xlabel("step ε")
ax.set_ylabel("max |central difference − exact|")
ax.set_title("Finite-difference error: rounding (left) vs truncation (right)")
ax.set_ylim(1e-12, 10)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Left of each minimum the rounding term $u|f|/\varepsilon$ dominates (slope $-1$); right of it
# the truncation term $\varepsilon^2|f'''|/6$ (slope $+2$) — the same in both precisions, so
# the two right arms lie on top of each other. In float32 the best achievable error is
# about six orders of magnitude worse, and for $\varepsilon \lesssim 10^{-8}$ the step vanishes entirely
# ($x+\varepsilon = x$ in float32) — the flat plateau on the left.

# %%
try:
    mm.gradcheck(cube, [rng.standard_normal(3).astype(np.float32)])
except TypeError as e:
    print("TypeError:", e)

# %% [markdown]
# ## 1.7 Higher-order gradients
#
# With `create_graph=True` the backward pass is recorded like any other computation, so its
# result can be differentiated again. For $y = \tanh x$:
#
# $$
# y' = 1 - y^2, \qquad
# y'' = -2\,y\,y' = -2\tanh x\,\bigl(1-\tanh^2 x\bigr).
# $$
#
# `mm.grad(outputs, inputs, create_graph=True)` (like `torch.autograd.grad`) returns the
# gradient without touching `.grad`:

# %%
xs = np.linspace(-4, 4, 81 if QUICK else 401)
x = mm.tensor(xs, requires_grad=True)
y = F.tanh(x)
dy, = mm.grad(y.sum(), [x], create_graph=True)     # dy/dx, itself a graph
d2y, = mm.grad(dy.sum(), [x])                      # d²y/dx²

t = np.tanh(xs)
closed_form = -2 * t * (1 - t ** 2)
tanh2_error = np.abs(d2y.numpy() - closed_form).max()
print(f"max |autograd − closed form| for tanh'': {tanh2_error:.1e}")

fig, ax = plt.subplots(figsize=(6.4, 3.6))
ax.plot(xs, t, label="tanh x")
ax.plot(xs, dy.numpy(), label="first derivative (autograd)")
ax.plot(xs, closed_form, "k-", lw=3, alpha=0.25, label="−2 tanh x (1 − tanh² x)")
ax.plot(xs[::len(xs) // 20], d2y.numpy()[::len(xs) // 20], "o", ms=4, color="tab:red", label="second derivative (autograd)")
ax.set_xlabel("x")
ax.set_ylabel("value")
ax.set_title("tanh and its first two derivatives, by autograd and in closed form")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Hessian-vector products
#
# Newton-type methods and curvature analyses need $Hv$ for a vector $v$, without ever forming
# the $n\times n$ Hessian. Differentiate the scalar $\langle\nabla f(w), v\rangle$:
#
# $$
# \nabla_w \bigl(\nabla_w f(w)^\top v\bigr) = H v .
# $$
#
# Two backward passes, cost independent of $n$. Check on
# $f(w) = \tfrac12 w^\top A w + \sum_i w_i^3$, whose Hessian is $A + \operatorname{diag}(6w)$
# for symmetric $A$, and against finite differences of gradients.

# %%
n = 6
A = rng.standard_normal((n, n)); A = (A + A.T) / 2
w0, v0 = rng.standard_normal(n), rng.standard_normal(n)


def f_cubic(w):
    return 0.5 * (w @ mm.tensor(A) @ w) + (w ** 3).sum()


def gradient(w_array, create_graph=False):
    w = mm.tensor(w_array, requires_grad=True)
    g, = mm.grad(f_cubic(w), [w], create_graph=create_graph)
    return w, g


w, g = gradient(w0, create_graph=True)
Hv, = mm.grad((g * mm.tensor(v0)).sum(), [w])

Hv_exact = (A + np.diag(6 * w0)) @ v0
Hv_fd = (gradient(w0 + 1e-6 * v0)[1].numpy() - gradient(w0 - 1e-6 * v0)[1].numpy()) / 2e-6
hvp_error = np.abs(Hv.numpy() - Hv_exact).max()
print("Hv (autograd):", np.round(Hv.numpy(), 6))
print(f"vs closed form {hvp_error:.1e}, vs finite differences of gradients "
      f"{np.abs(Hv.numpy() - Hv_fd).max():.1e}")


# %% [markdown]
# `mm.gradgradcheck` automates this for any function: it gradient-checks the map
# $x \mapsto J(x)^\top\bar g$ built with `create_graph=True`. Every operation in minimm is
# tested this way; here a composite:

# %%
def composite(x, W):
    return F.softmax(F.tanh(x @ W) * x.sum(axis=1, keepdims=True), axis=-1)


ok = mm.gradgradcheck(composite, [rng.standard_normal((2, 3)), rng.standard_normal((3, 4))])
print("gradgradcheck of softmax(tanh(xW) * Σx):", ok)

# %% [markdown]
# ## 1.8 NumPy or CuPy: the same code
#
# minimm never asks a global switch which array library to use: every operation takes the
# module from its inputs (`mm.get_array_module`), so a tensor created with `device="cuda"`
# runs every forward and backward in CuPy. The cell below runs on the GPU when one is present
# and on the CPU otherwise — the code does not change.

# %%
device = "cuda" if mm.gpu_available() else "cpu"
x_np = rng.standard_normal((4, 5)).astype(np.float32)
W_np = rng.standard_normal((5, 3)).astype(np.float32)

x = mm.tensor(x_np, device=device)
W = mm.tensor(W_np, device=device, requires_grad=True)
F.tanh(x @ W).sum().backward()
print("device:", W.grad.device, "| array module:", mm.get_array_module(W.grad).__name__,
      "| dtype:", W.grad.dtype)

# the same on the CPU, for comparison
W_cpu = mm.tensor(W_np, requires_grad=True)
F.tanh(mm.tensor(x_np) @ W_cpu).sum().backward()
print("max |device − cpu| =", np.abs(W.grad.numpy() - W_cpu.grad.numpy()).max())
assert W.grad.dtype == np.float32            # float32 in, float32 gradient out

# %% [markdown]
# ## Summary
#
# * A `Tensor` remembers its `creator`; a `Function` remembers its `inputs`: the graph points
#   from outputs back to leaves.
# * Backward is the chain rule as vector–Jacobian products, $\bar x = J^\top \bar y$, summed over
#   every consumer; reverse mode gives all $n$ parameter gradients for about the cost of one
#   forward pass.
# * The engine visits Functions in a topological order computed with an explicit stack, so a
#   10,000-deep graph is no problem.
# * `.grad` accumulates; call `zero_grad` between steps.
# * A `Function` computes forward on arrays and backward with differentiable Tensor
#   operations — which makes `create_graph=True`, Hessian-vector products and `gradgradcheck`
#   work for every operation.
# * Gradient checks run in float64: central differences have error
#   $\approx \varepsilon^2|f'''|/6 + u|f|/\varepsilon$, which bottoms out near $10^{-10}$ in
#   float64 and $10^{-5}$ in float32.
# * The same code runs on NumPy and CuPy; the array module comes from the data.
#
# ## Exercises
#
# 1. minimm has no `sin`. Write `Sin` and `Cos` as a pair of `Function`s whose backwards call
#    each other (`Sin.backward` returns `gy * cos(x)`, `Cos.backward` returns `-gy * sin(x)`).
#    Check both with `mm.gradcheck` and `mm.gradgradcheck`.
# 2. Draw (with `draw`) the graph of the *gradient* of $\tanh$ built with `create_graph=True`.
#    Which operations appear, and why?
# 3. Repeat the error-curve experiment with $f(x) = x^3$ at $x=1$ and predict $\varepsilon^\ast$
#    from the formula before you run it. What happens for a function with $f'''=0$, such as
#    $x^2$?
# 4. Build a 10,000-step chain `h = h + x` (not `h * c`). What is $dh/dx$? How long does the
#    backward take compared with the forward?
# 5. Compute the full Hessian of `f_cubic` with $n$ Hessian-vector products (one per unit
#    vector) and compare it with $A + \operatorname{diag}(6w)$.
# 6. Why does `Exp.backward` use `self.outputs()` rather than recomputing $e^x$? What would go
#    wrong with `create_graph=True` if it used `y.data` instead?

# %%
# The chapter's own results, in quick mode too
assert reused_grad == 7.0 and caught_bug
assert best["float64"][1] < 1e-8 < 1e-6 < best["float32"][1]     # float32 cannot check to 1e-6
assert best["float64"][0] < best["float32"][0]                   # ε* ∝ u^(1/3)
assert tanh2_error < 1e-12 and hvp_error < 1e-10
print("chapter 1: all checks passed")
