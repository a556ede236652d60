"""Looking inside a model — the article's §9.6 (如何确保多模态大模型的可解释性: visualise the
model's structure, analyse what it attends to). Tools on top of the library; each returns
NumPy arrays (or text) and draws only when asked, so matplotlib and graphviz stay optional.

    graph_dot(*outputs, names)          the computation graph behind tensors, as DOT text
    draw_graph(*outputs, names)         rendered by graphviz when installed, else matplotlib
    saliency(forward, images, target)   |∂ score_target / ∂ pixel| (Simonyan et al. 2014)
    gradcam(forward, images, target, layer)
                                        Grad-CAM on a layer's feature maps (Selvaraju et al. 2017)
    attention_weights(model)            every ``.attn_weights`` a forward pass left, by module
    query_attention(weights, query=0)   one query's row (the [CLS] token's), heads averaged
    plot_reliability_diagram(bins)      a reliability diagram of metrics.reliability_bins

A "score" is a logit, before the softmax: its gradient says what raises that class's evidence,
while the softmax's would also depend on every other class.
"""
import contextlib
import shutil

import numpy as np

from . import backend
from .autograd import Tensor, enable_grad, grad
from .nn import GELU, Conv2d, ReLU, Sigmoid, Tanh


# -- the computation graph ----------------------------------------------------------------------
def _graph(outputs, names):
    """(tensor nodes, function nodes, edges) reachable from ``outputs`` through
    ``creator.inputs``, numbered in the order first met (an explicit stack: no recursion)."""
    label_of = {id(t): n for n, t in (names or {}).items()}
    tensors, functions, edges = {}, {}, []          # id -> (node name, object); (from, to)
    stack = list(reversed(outputs))
    while stack:
        t = stack.pop()
        if id(t) in tensors:
            continue
        tensors[id(t)] = (f"t{len(tensors)}", t)
        fn = t.creator
        if fn is None:
            continue
        if id(fn) not in functions:
            functions[id(fn)] = (f"f{len(functions)}", fn)
            for x in fn.inputs:
                stack.append(x)
        edges.append((functions[id(fn)][0], tensors[id(t)][0]))
    for fname, fn in functions.values():     # inputs -> function, once per input slot
        for x in fn.inputs:
            if id(x) in tensors:
                edges.append((tensors[id(x)][0], fname))

    def tensor_label(t):
        name = label_of.get(id(t)) or t.name
        shape = "×".join(str(s) for s in t.shape) or "scalar"
        return f"{name}\n{shape}" if name else shape

    nodes = {}
    for tname, t in tensors.values():
        kind = "result" if t.creator is not None else ("leaf" if t.requires_grad else "constant")
        nodes[tname] = (tensor_label(t), kind)
    for fname, fn in functions.values():
        nodes[fname] = (type(fn).__name__, "function")
    out_names = [tensors[id(t)][0] for t in outputs]
    return nodes, edges, out_names


_DOT_STYLE = {
    "function": 'shape=box, style="rounded,filled", fillcolor="#fce5cd"',
    "leaf": 'shape=ellipse, style=filled, fillcolor="#cfe2f3"',
    "constant": 'shape=ellipse, style=filled, fillcolor="#eeeeee"',
    "result": "shape=ellipse",
}


def graph_dot(*outputs, names=None, title=None):
    """The graph that produced ``outputs`` (Tensors) as Graphviz DOT text, inputs on the left.

    Ellipses are tensors, labelled with their name (from ``names`` — a dict {label: tensor},
    e.g. ``dict(model.named_parameters())`` — or ``tensor.name``) and shape: blue the leaves
    that want a gradient, grey constants, white intermediate results (outputs drawn bold).
    Boxes are the Functions; an edge x → f means x is an input of f, f → y that f made y.
    Only what requires a gradient is recorded, so build the graph with a leaf that does.
    """
    if not outputs or not all(isinstance(t, Tensor) for t in outputs):
        raise TypeError(f"graph_dot: expected one or more Tensors, got "
                        f"{[type(t).__name__ for t in outputs]}")
    nodes, edges, out_names = _graph(outputs, names)
    lines = [f'digraph "{_escape(title or "minimm")}" {{', "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f'  labelloc=t; label="{_escape(title)}";')
    for node, (label, kind) in nodes.items():
        bold = ", penwidth=2.5" if node in out_names else ""
        lines.append(f'  {node} [label="{_escape(label)}", {_DOT_STYLE[kind]}{bold}];')
    for a, b in edges:
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _escape(text):
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def graphviz_available():
    """True when the ``graphviz`` Python package imports and its ``dot`` program is on PATH
    (``pip install graphviz`` and the system package, e.g. ``apt-get install graphviz``)."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def draw_graph(*outputs, names=None, title=None, engine="auto", ax=None):
    """Draw the graph of :func:`graph_dot`. ``engine="graphviz"`` returns a
    ``graphviz.Source`` (shown as SVG in Jupyter; ``.render(...)`` writes a file);
    ``"matplotlib"`` draws a layered picture on ``ax`` (a new figure if None) and returns the
    figure; ``"auto"`` takes graphviz when :func:`graphviz_available`, else matplotlib."""
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise ValueError(f"draw_graph: engine must be 'auto', 'graphviz' or 'matplotlib', "
                         f"got {engine!r}")
    if engine == "graphviz" or (engine == "auto" and graphviz_available()):
        if not graphviz_available():
            raise ImportError("draw_graph(engine='graphviz') needs the graphviz Python package "
                              "and its dot program: pip install graphviz, and the system "
                              "package (apt-get install graphviz); engine='matplotlib' needs "
                              "neither")
        import graphviz
        return graphviz.Source(graph_dot(*outputs, names=names, title=title))
    return _draw_matplotlib(outputs, names, title, ax)


def _layers(nodes, edges):
    """Column of each node: the length of the longest path reaching it from a source."""
    preds = {n: [] for n in nodes}
    for a, b in edges:
        preds[b].append(a)
    column = {}
    for n in nodes:                        # iterative longest path over a DAG
        stack = [n]
        while stack:
            m = stack[-1]
            todo = [p for p in preds[m] if p not in column]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            column[m] = 1 + max((column[p] for p in preds[m]), default=-1)
    return column


def _draw_matplotlib(outputs, names, title, ax):
    import matplotlib.pyplot as plt
    nodes, edges, out_names = _graph(outputs, names)
    column = _layers(nodes, edges)
    by_column = {}
    for n in nodes:
        by_column.setdefault(column[n], []).append(n)
    pos = {}
    for c, members in by_column.items():
        for i, n in enumerate(members):
            pos[n] = (c, (len(members) - 1) / 2 - i)
    width = max(by_column) + 1
    height = max(len(m) for m in by_column.values())
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(1.6 * width + 1, 18), min(0.9 * height + 1.2, 12)))
    fig = ax.figure
    colors = {"function": "#fce5cd", "leaf": "#cfe2f3", "constant": "#eeeeee",
              "result": "white"}
    for a, b in edges:
        ax.annotate("", xy=pos[b], xytext=pos[a],
                    arrowprops=dict(arrowstyle="->", color="0.4", lw=0.8,
                                    shrinkA=14, shrinkB=14))
    for n, (label, kind) in nodes.items():
        box = "round,pad=0.3" if kind == "function" else "ellipse,pad=0.3"
        ax.text(*pos[n], label, ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle=box, fc=colors[kind], ec="black",
                          lw=2.0 if n in out_names else 0.8))
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-height / 2 - 0.2, height / 2 + 0.2)
    ax.axis("off")
    ax.set_title(title or "computation graph (inputs left; boxes: Functions, ovals: tensors)",
                 fontsize=9)
    return fig


# -- gradients with respect to the input --------------------------------------------------------
def _target_scores(logits, target):
    """Σ_n logits[n, target[n]]: samples are independent, so ∂/∂x_n is that of x_n's own score.
    A model with two heads returns (logits, super_logits): the first, the class head, counts."""
    if isinstance(logits, tuple):
        logits = logits[0]
    if logits.ndim != 2:
        raise ValueError(f"saliency/gradcam: forward must return logits (N, classes), got "
                         f"shape {logits.shape}")
    xp = backend.get_array_module(logits)
    target = xp.asarray(backend.unwrap(target)).astype(np.int64).reshape(-1)
    N, K = logits.shape
    if target.shape[0] != N or int(target.min()) < 0 or int(target.max()) >= K:
        raise ValueError(f"saliency/gradcam: target must hold {N} class ids in 0..{K - 1}, got "
                         f"{target.shape[0]} in {int(target.min())}..{int(target.max())}")
    onehot = xp.zeros(logits.shape, dtype=logits.dtype)
    onehot[xp.arange(N), target] = 1
    return (logits * Tensor(onehot)).sum()


def _as_input(images):
    x = images.data if isinstance(images, Tensor) else images
    if not hasattr(x, "dtype") or x.dtype.kind != "f":
        raise TypeError("saliency/gradcam: images must be a float array or Tensor (normalise "
                        "uint8 images first, e.g. minimm.data.normalize_images)")
    return Tensor(x, requires_grad=True)


def saliency(forward, images, target):
    """The saliency map of Simonyan, Vedaldi & Zisserman (2014): how much each pixel moves the
    score of class ``target``,

        g = ∂ s_target(x) / ∂x  (N, C, H, W),     map[n, i, j] = max_c |g[n, c, i, j]|.

    forward: a function of the images Tensor returning logits (N, classes) — for the
    multimodal model ``lambda x: model(x, ids, lengths)``; put the model in eval mode first.
    Returns {"map": (N, H, W), "gradient": (N, C, H, W)} as NumPy arrays.
    """
    x = _as_input(images)
    with enable_grad():
        score = _target_scores(forward(x), target)
        g, = grad(score, [x])
    g = backend.to_numpy(g.data)
    return {"map": np.abs(g).max(axis=1), "gradient": g}


@contextlib.contextmanager
def capture_output(module):
    """Within the block, ``store["output"]`` is the Tensor that ``module`` last returned (its
    ``forward`` is wrapped on the instance, and restored afterwards)."""
    store = {}
    original = module.forward

    def forward(*args, **kwargs):
        store["output"] = original(*args, **kwargs)
        return store["output"]

    object.__setattr__(module, "forward", forward)
    try:
        yield store
    finally:
        del module.__dict__["forward"]


def last_conv_features(branch):
    """The module whose output Grad-CAM reads in a Sequential CNN branch: the activation that
    follows the last ``nn.Conv2d`` (its rectified feature maps), or that convolution itself."""
    layers = list(branch)
    convs = [i for i, m in enumerate(layers) if isinstance(m, Conv2d)]
    if not convs:
        raise ValueError(f"last_conv_features: no Conv2d in {type(branch).__name__}")
    i = convs[-1]
    nxt = layers[i + 1] if i + 1 < len(layers) else None
    return nxt if isinstance(nxt, (ReLU, GELU, Sigmoid, Tanh)) else layers[i]


def upsample_bilinear(maps, size):
    """(N, h, w) -> (N, H, W) by bilinear interpolation between pixel centres (as
    ``align_corners=False``): separable, one matrix per axis, no loop over samples."""
    maps = np.asarray(maps, dtype=np.float64)
    H, W = size

    def weights(n_in, n_out):
        centre = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        centre = np.clip(centre, 0, n_in - 1)
        lo = np.floor(centre).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = centre - lo
        M = np.zeros((n_out, n_in))
        M[np.arange(n_out), lo] += 1 - frac
        M[np.arange(n_out), hi] += frac
        return M

    Ry, Rx = weights(maps.shape[1], H), weights(maps.shape[2], W)
    return Ry @ maps @ Rx.T                          # (H, h) (N, h, w) (w, W)


def gradcam(forward, images, target, layer):
    """Grad-CAM (Selvaraju et al. 2017) for class ``target`` on the feature maps A (N, K, h, w)
    that ``layer`` outputs:

        α_k = (1 / hw) Σ_ij ∂ s_target / ∂A_k[i, j]        (how much map k matters)
        cam = ReLU(Σ_k α_k A_k)  (N, h, w), upsampled to the input's H × W and divided by its
        maximum per image (so each map lies in [0, 1]; an all-zero map stays zero).

    forward, images, target as for :func:`saliency`; ``layer`` a Module called during forward
    (for minimm's image branch ``last_conv_features(model.image)``). Returns NumPy arrays
    {"cam" (N, H, W), "cam_raw" (N, h, w), "activations" A, "gradients" ∂s/∂A, "weights" α}.
    """
    x = _as_input(images)
    with enable_grad(), capture_output(layer) as store:
        score = _target_scores(forward(x), target)
        if "output" not in store:
            raise ValueError(f"gradcam: the layer {layer!r} was not called by forward")
        A = store["output"]
        if A.ndim != 4:
            raise ValueError(f"gradcam: the layer must output feature maps (N, K, h, w), got "
                             f"{A.shape}")
        dA, = grad(score, [A])
    A, dA = backend.to_numpy(A.data), backend.to_numpy(dA.data)
    alpha = dA.mean(axis=(2, 3))                                  # (N, K)
    cam_raw = np.maximum(np.einsum("nk,nkij->nij", alpha, A), 0)   # (N, h, w)
    cam = upsample_bilinear(cam_raw, x.shape[2:])
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    return {"cam": cam, "cam_raw": cam_raw, "activations": A, "gradients": dA,
            "weights": alpha}


# -- attention ----------------------------------------------------------------------------------
def attention_weights(model):
    """{module name: weights} for every sub-module with an ``attn_weights`` array left by the
    last forward pass (``nn.MultiHeadAttention``: (B, h, L_q, L_k)), as NumPy arrays, in the
    model's order; empty if nothing has attended yet."""
    found = {}
    for name, module in model.named_modules():
        w = getattr(module, "attn_weights", None)
        if w is not None:
            found[name or type(model).__name__] = backend.to_numpy(backend.unwrap(w))
    return found


def query_attention(weights, query=0, heads="mean"):
    """What one query attends to: row ``query`` of the weights, (B, L_k).

    weights (B, h, L_q, L_k) or (B, L_q, L_k); query 0 is the [CLS] token in a model that puts
    it first. ``heads``: "mean" averages the heads (each row still sums to 1), "max" takes the
    largest weight per key, an int picks one head, None keeps them all -> (B, h, L_k).
    """
    w = np.asarray(backend.to_numpy(backend.unwrap(weights)))
    if w.ndim == 3:
        w = w[:, None]
    if w.ndim != 4:
        raise ValueError(f"query_attention: weights must be (B, h, L_q, L_k) or (B, L_q, L_k), "
                         f"got shape {w.shape}")
    if not -w.shape[2] <= query < w.shape[2]:
        raise ValueError(f"query_attention: query {query} out of range for L_q = {w.shape[2]}")
    row = w[:, :, query]                                          # (B, h, L_k)
    if heads is None:
        return row
    if heads == "mean":
        return row.mean(axis=1)
    if heads == "max":
        return row.max(axis=1)
    if isinstance(heads, (int, np.integer)) and -row.shape[1] <= heads < row.shape[1]:
        return row[:, heads]
    raise ValueError(f"query_attention: heads must be 'mean', 'max', None or a head index "
                     f"< {row.shape[1]}, got {heads!r}")


# -- calibration --------------------------------------------------------------------------------
def plot_reliability_diagram(bins, ax=None, label="model", color="C0"):
    """Bars of accuracy per confidence bin (from :func:`minimm.metrics.reliability_bins`)
    against the diagonal of perfect calibration, the gap shaded, and the share of samples
    per bin on a twin axis. Returns the figure."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5))
    edges, counts = bins["edges"], bins["counts"]
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    filled = counts > 0
    ax.bar(centres[filled], bins["accuracy"][filled], width[filled], color=color, alpha=0.75,
           edgecolor="black", lw=0.5, label=f"{label}: accuracy per bin")
    ax.bar(centres[filled], bins["confidence"][filled] - bins["accuracy"][filled],
           width[filled], bottom=bins["accuracy"][filled], color="red", alpha=0.25,
           edgecolor="red", lw=0.5, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    share = ax.twinx()
    share.plot(centres[filled], counts[filled] / counts.sum(), "o:", color="0.3", ms=3)
    share.set_ylabel("share of samples in the bin (dotted)")
    share.set_ylim(0, 1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (largest softmax probability)",
           ylabel="accuracy in the bin")
    ax.legend(loc="upper left", fontsize=8)
    return ax.figure


__all__ = ["graph_dot", "draw_graph", "graphviz_available", "saliency", "gradcam",
           "capture_output", "last_conv_features", "upsample_bilinear", "attention_weights",
           "query_attention", "plot_reliability_diagram"]
