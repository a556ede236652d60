"""Model compression, the article's §9.5 (模型压缩): quantisation and pruning.

**int8, symmetric, one scale per output channel c** (a row of a Conv2d's W (C_out, C_in, kh, kw)
or an Embedding's W; a column of a Linear's or LSTM's W (in, out), since minimm computes x W)::

    s_c = max_i |w_ci| / 127,    q_ci = round(w_ci / s_c) ∈ {−127, …, 127},    ŵ_ci = s_c q_ci

    |w_ci − ŵ_ci| = s_c · |w_ci / s_c − round(w_ci / s_c)| ≤ s_c / 2

(|w_ci / s_c| ≤ 127 by the choice of s_c, so the clip to ±127 never bites and only rounding
errs, by at most half a step). One scale per output channel rather than per tensor because
the channels of a trained layer differ in range, and because the scale factors out of the
product: y_j = Σ_i x_i ŵ_ij = s_j Σ_i x_i q_ij, so an integer kernel computes x q and then
scales each output column (:func:`int8_linear`). Symmetric (no zero point) keeps 0 exact.

**float16**: ŵ = fl16(w), |w − ŵ| ≤ 2⁻¹¹ |w| in float16's normal range (6.1e-5 … 65504).

**Inference** dequantises on load (:func:`load_compressed`): the model computes in float32
with ŵ. On a CPU NumPy has no int8 matrix product faster than float32 BLAS, so an integer
kernel would only be slower here; what int8 buys is 4× less storage and memory traffic.
Biases and other 1-D parameters stay float32 (a few hundred numbers; the usual practice).

**Quantisation-aware training**: the forward computes with fake_quantize(w) = s·clip(round(w/s));
round has derivative 0 almost everywhere, so :class:`RoundSTE` declares the straight-through
estimate ∂round(x)/∂x := 1 and the float32 master weights w keep learning.

**Magnitude pruning** to sparsity s zeroes exactly k = round(s·n) weights of least |w| per
tensor (``scope="layer"``) or over all pruned tensors together (``scope="global"``), ties broken
by position. :meth:`Pruning.attach` keeps them zero through later optimiser steps.

**On disk** (:func:`save_compressed`, through ``mm.save``, so atomic and pickle-free): int8
arrays q with their float32 scales, or float16 arrays; with ``sparse=True`` each pruned
tensor as a bit mask of its nonzeros (``np.packbits``: n/8 bytes) plus only the nonzero values,
so a tensor of n weights and sparsity s takes n/8 + (1 − s)·n·b bytes (b bytes per value).
"""
import math
import os

import numpy as np

from . import backend, functional as F, nn
from ._swap import replaced_parameters
from .autograd import Function, Tensor, increment_version
from .serialization import load, save

DTYPES = ("float32", "float16", "int8")
QMAX = 127          # symmetric int8 uses −127 … 127 (−128 unused keeps the range symmetric)
_FORMAT = 1


# -- which tensors, and along which axis ----------------------------------------------------
def channel_axis(module, name, ndim):
    """The output-channel axis of parameter ``name`` of ``module``: 0 for a Conv2d's W
    (C_out, …) and an Embedding's W (one row per token), the last axis for a weight used as
    x W — Linear, LSTM (W, U) and, by minimm's convention, any other 2-D weight."""
    kind = type(module).__name__
    if kind in ("Conv2d", "Embedding") or ndim > 2:
        return 0
    return ndim - 1


def compressible(model):
    """[(qualified name, output-channel axis, Parameter)] of every weight with ndim ≥ 2, in
    ``named_parameters`` order: what quantisation and pruning act on (biases are left)."""
    out, seen = [], set()
    for mod_name, module in model.named_modules():
        for name, p in module._parameters.items():
            if p is None or p.ndim < 2 or id(p) in seen:
                continue
            seen.add(id(p))
            out.append((f"{mod_name}.{name}" if mod_name else name,
                        channel_axis(module, name, p.ndim), p))
    return out


# -- int8 and float16 -------------------------------------------------------------------------
def _reduce_axes(ndim, axis):
    return tuple(i for i in range(ndim) if i != axis % ndim)


def quantize_per_channel(w, axis, bits=8):
    """Symmetric per-channel quantisation: returns (q int8, s float32 of shape (w.shape[axis],))
    with s_c = max|w_c| / (2^(bits−1) − 1) and q = round(w / s). A channel of zeros gets s = 0.
    Works on NumPy and CuPy arrays (the result stays where ``w`` is)."""
    w = backend.unwrap(w)
    if w.ndim < 1:
        raise ValueError(f"quantize_per_channel: need an array with a channel axis, got shape "
                         f"{tuple(w.shape)}")
    if not -w.ndim <= axis < w.ndim:
        raise ValueError(f"quantize_per_channel: axis {axis} out of range for shape "
                         f"{tuple(w.shape)}")
    if not 2 <= bits <= 8:
        raise ValueError(f"quantize_per_channel: bits must be in 2..8, got {bits}")
    xp = backend.get_array_module(w)
    qmax = 2 ** (bits - 1) - 1
    shape = [1] * w.ndim
    shape[axis] = w.shape[axis]
    w64 = w.astype(xp.float64)
    s = (xp.abs(w64).max(axis=_reduce_axes(w.ndim, axis)) / qmax).astype(xp.float32)
    safe = xp.where(s > 0, s, 1).astype(xp.float64).reshape(shape)   # a zero channel: q = 0
    q = xp.clip(xp.rint(w64 / safe), -qmax, qmax).astype(xp.int8)
    return q, s


def dequantize(q, s, axis):
    """ŵ = s_c q_c along ``axis`` (float32)."""
    xp = backend.get_array_module(q)
    shape = [1] * q.ndim
    shape[axis] = q.shape[axis]
    return q.astype(xp.float32) * s.astype(xp.float32).reshape(shape)


def to_float16(w):
    """fl16(w), refusing values beyond float16's range (65504) rather than storing inf."""
    w = backend.unwrap(w)
    xp = backend.get_array_module(w)
    big = float(xp.abs(w).max()) if w.size else 0.0
    if not big <= float(np.finfo(np.float16).max):
        raise ValueError(f"to_float16: max |w| = {big:.4g} exceeds float16's largest value "
                         f"65504 (or is not finite)")
    return w.astype(xp.float16)


def int8_linear(x, q, s, b=None):
    """y = (x q) · s + b for a Linear whose W (in, out) is int8 ``q`` with per-column scales
    ``s``: the same numbers as ``F.linear(x, dequantize(q, s, 1), b)``, because the output
    channel's scale factors out of the sum Σ_i x_i q_ij s_j. (On a GPU or with an integer
    BLAS, x q would run in int8/int32; here it is float32.)"""
    xp = backend.get_array_module(q)
    y = F.matmul(x, Tensor(q.astype(xp.float32))) * Tensor(s.astype(xp.float32))
    return y if b is None else y + b


# -- quantisation-aware training: the straight-through estimator ------------------------------
class RoundSTE(Function):
    """y = round(x) (half to even, as ``np.rint`` and ``torch.round``), with the
    straight-through backward ∂y/∂x := 1 (Bengio et al. 2013).

    The true derivative of round is 0 wherever it exists (and undefined at half-integers), so
    it would stop all learning behind it; the estimator pretends round is the identity."""

    def forward(self, x):
        return backend.get_array_module(x).rint(x)

    def backward(self, gy):
        return gy


def round_ste(x):
    return RoundSTE()(x)


def fake_quantize(w, axis, bits=8):
    """ŵ = s · clip(round_ste(w / s), −qmax, qmax) with s the per-channel scale of w's current
    values, treated as a constant; ∂ŵ/∂w = 1 (the clip never bites, round is straight-through)."""
    w_data = backend.unwrap(w)
    xp = backend.get_array_module(w_data)
    _, s = quantize_per_channel(w_data, axis, bits)
    qmax = 2 ** (bits - 1) - 1
    shape = [1] * w_data.ndim
    shape[axis] = w_data.shape[axis]
    s = xp.where(s > 0, s, 1).astype(w_data.dtype).reshape(shape)
    return F.clip(round_ste(w / Tensor(s)), -qmax, qmax) * Tensor(s)


def fake_quantized(model, bits=8):
    """Context manager for quantisation-aware training: inside it, every weight with ndim ≥ 2
    is seen by its layer as fake_quantize(w), so the forward pass computes with int8 values
    and the gradient reaches the float32 master weights straight through::

        with compress.fake_quantized(model):
            loss = F.cross_entropy(model(x), y)
        loss.backward(); opt.step()
    """
    axes = {name: axis for name, axis, _ in compressible(model)}
    return replaced_parameters(
        model, lambda name, p: fake_quantize(p, axes[name], bits) if name in axes else None)


class QuantizationAware(nn.Module):
    """``model`` trained quantisation-aware: its forward runs inside :func:`fake_quantized`, so
    any training loop (``fit`` included) trains the float32 weights of ``.model`` through int
    (``bits``) forward passes; afterwards quantise ``.model`` as usual."""

    def __init__(self, model, bits=8):
        super().__init__()
        self.model, self.bits = model, int(bits)

    def forward(self, *args, **kwargs):
        with fake_quantized(self.model, self.bits):
            return self.model(*args, **kwargs)

    def config(self):
        return self.model.config() if hasattr(self.model, "config") else {}


def quantize_model_(model, bits=8):
    """Replace every weight with ndim ≥ 2 by its dequantised ``bits``-bit version ŵ, in place
    (post-training quantisation, in memory); returns the model."""
    for _, axis, p in compressible(model):
        q, s = quantize_per_channel(p.data, axis, bits)
        p.data = dequantize(q, s, axis).astype(p.dtype)
    return model


# -- magnitude pruning --------------------------------------------------------------------------
class Pruning:
    """The masks of a pruned model: ``masks[name]`` is 1 where weight ``name`` is kept, 0 where
    it was pruned (in the parameter's dtype, on its device).

    apply():         w ← w ⊙ mask (in place)
    attach(opt):     after every ``opt.step()`` apply the masks again, and mask the gradients
                     before it. Masking gradients alone would not do: Adam's momentum from
                     steps before pruning moves a weight whose gradient is now 0, and so would
                     SGD's momentum buffer; re-applying the mask after the step is what keeps
                     the pruned weights exactly 0, whatever the optimiser.
    sparsity():      the fraction of zeros over the pruned tensors.
    """

    def __init__(self, model, masks):
        self.params = {name: p for name, _, p in compressible(model)}
        unknown = set(masks) - set(self.params)
        if unknown:
            raise KeyError(f"Pruning: masks for unknown weights {sorted(unknown)}")
        self.masks = masks

    def apply(self):
        for name, mask in self.masks.items():
            p = self.params[name]
            p.data *= mask
            increment_version(p)          # an in-place write: a graph built before it is stale
        return self

    def mask_gradients(self):
        for name, mask in self.masks.items():
            p = self.params[name]
            if p.grad is not None:
                p.grad = Tensor(backend.unwrap(p.grad) * mask)

    def attach(self, optimizer):
        """Wrap ``optimizer.step`` (this instance only) so that the pruned weights stay zero."""
        step = optimizer.step

        def masked_step(*args, **kwargs):
            self.mask_gradients()
            result = step(*args, **kwargs)
            self.apply()
            return result
        optimizer.step = masked_step
        return optimizer

    def sparsity(self):
        zeros = sum(int((self.params[n].data == 0).sum()) for n in self.masks)
        total = sum(self.params[n].size for n in self.masks)
        return zeros / total if total else 0.0

    def __repr__(self):
        return f"Pruning({len(self.masks)} tensors, sparsity {self.sparsity():.4f})"


def _check_sparsity(sparsity, op):
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{op}: sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


def _smallest(score, k):
    """A 0/1 keep-mask of ``score``'s shape with exactly k zeros at the k smallest scores (ties
    broken by position, so the count is exact even among equal magnitudes)."""
    xp = backend.get_array_module(score)
    keep = xp.ones(score.size, dtype=bool)
    keep[xp.argsort(score.ravel(), kind="stable")[:k]] = False
    return keep.reshape(score.shape)


def prune(model, sparsity, scope="layer", previous=None):
    """One-shot magnitude pruning: zero the k = round(sparsity · n) weights of least |w|,
    per tensor (``scope="layer"``) or over all weights with ndim ≥ 2 at once (``"global"``);
    returns the :class:`Pruning` (already applied). With ``previous`` (a Pruning), what it
    pruned is pruned first, so the masks only ever grow (iterative pruning)."""
    sparsity = _check_sparsity(sparsity, "prune")
    if scope not in ("layer", "global"):
        raise ValueError(f"prune: scope must be 'layer' or 'global', got {scope!r}")
    targets = compressible(model)
    if not targets:
        raise ValueError("prune: the model has no weight with ndim >= 2 to prune")
    scores = {}
    for name, _, p in targets:
        xp = backend.get_array_module(p.data)
        score = xp.abs(p.data).astype(xp.float64)
        if previous is not None and name in previous.masks:
            score[previous.masks[name] == 0] = -1.0      # already pruned: first to go
        scores[name] = score
    keep = {}
    if scope == "layer":
        for name, score in scores.items():
            keep[name] = _smallest(score, int(round(sparsity * score.size)))
    else:
        xp = backend.get_array_module(next(iter(scores.values())))
        flat = xp.concatenate([s.ravel() for s in scores.values()])
        kept, start = _smallest(flat, int(round(sparsity * flat.size))), 0
        for name, score in scores.items():
            keep[name] = kept[start:start + score.size].reshape(score.shape)
            start += score.size
    params = {name: p for name, _, p in targets}
    masks = {name: k.astype(params[name].dtype) for name, k in keep.items()}
    return Pruning(model, masks).apply()


def sparsity_schedule(final, rounds, initial=0.0):
    """The gradual-pruning schedule of Zhu & Gupta (2017), one sparsity per round t = 1..n:
    s_t = s_f + (s_i − s_f)(1 − t/n)³ — prune fast while many weights are redundant, slowly
    near the end; the last round reaches s_f."""
    final = _check_sparsity(final, "sparsity_schedule")
    if int(rounds) < 1:
        raise ValueError(f"sparsity_schedule: rounds must be >= 1, got {rounds}")
    n = int(rounds)
    return [final + (initial - final) * (1 - t / n) ** 3 for t in range(1, n + 1)]


def iterative_prune(model, final_sparsity, rounds, finetune, scope="layer"):
    """Prune to each sparsity of :func:`sparsity_schedule` in turn, calling
    ``finetune(model, pruning)`` after each round (it trains with ``pruning.attach(opt)``);
    returns the final :class:`Pruning`, at exactly ``final_sparsity``."""
    pruning = None
    for s in sparsity_schedule(final_sparsity, rounds):
        pruning = prune(model, s, scope, previous=pruning)
        finetune(model, pruning)
        pruning.apply()
    return pruning


# -- on disk ----------------------------------------------------------------------------------
def compress_state(model, dtype="int8", sparse=False):
    """The tree that :func:`save_compressed` writes: {"compress": {"format", "dtype",
    "sparse"}, "weights": {name: {...}}, "dense": {name: float32}}. Each weight entry holds
    "shape" and "axis" and, by dtype, "values" (float32 / float16) or "q" and "scale" (int8);
    with ``sparse`` its values are only those where "mask" (packed bits) is set."""
    if dtype not in DTYPES:
        raise ValueError(f"compress_state: dtype must be one of {DTYPES}, got {dtype!r}")
    weights, names = {}, set()
    for name, axis, p in compressible(model):
        names.add(name)
        w = backend.to_numpy(p.data).astype(np.float32)
        entry = {"shape": np.asarray(w.shape, dtype=np.int64), "axis": int(axis)}
        nonzero = w != 0
        if dtype == "int8":
            values, entry["scale"] = quantize_per_channel(w, axis)
        elif dtype == "float16":
            values = to_float16(w)
        else:
            values = w
        if sparse:
            entry["mask"] = np.packbits(nonzero.ravel())
            values = values[nonzero]
        entry["q" if dtype == "int8" else "values"] = values
        weights[name] = entry
    dense = {k: v.astype(np.float32) if v.dtype.kind == "f" else v
             for k, v in model.state_dict().items() if k not in names}
    return {"compress": {"format": _FORMAT, "dtype": dtype, "sparse": int(bool(sparse))},
            "weights": weights, "dense": dense}


def decompress_state(tree):
    """The float32 state dict (name -> NumPy array) that a compressed tree stands for."""
    info = tree.get("compress")
    if not isinstance(info, dict) or "dtype" not in info:
        raise ValueError("decompress_state: not a compressed model (no 'compress' entry); "
                         "write one with minimm.compress.save_compressed")
    if int(info.get("format", 0)) > _FORMAT:
        raise ValueError(f"decompress_state: format {info['format']} is newer than this "
                         f"minimm reads ({_FORMAT})")
    dtype, sparse = info["dtype"], bool(info["sparse"])
    state = {}
    for name, entry in tree.get("weights", {}).items():
        shape = tuple(int(n) for n in np.atleast_1d(entry["shape"]))
        axis = int(entry["axis"])
        values = np.atleast_1d(entry["q" if dtype == "int8" else "values"])
        if sparse:
            n = math.prod(shape)
            nonzero = np.unpackbits(np.atleast_1d(entry["mask"]), count=n).astype(bool)
            full = np.zeros(n, dtype=values.dtype)
            full[nonzero] = values
            values = full.reshape(shape)
        values = values.reshape(shape)
        state[name] = (dequantize(values, np.atleast_1d(entry["scale"]), axis)
                       if dtype == "int8" else values.astype(np.float32))
    for name, value in tree.get("dense", {}).items():
        state[name] = np.asarray(value)
    return state


def save_compressed(model, path, dtype="int8", sparse=False, config=None):
    """Write ``model``'s weights compressed (:func:`compress_state`) to ``path`` with ``mm.save``
    (atomic); ``config`` (default ``model.config()`` if it has one) is stored beside them.
    Returns the file's size in bytes."""
    tree = compress_state(model, dtype, sparse)
    if config is None and hasattr(model, "config"):
        config = model.config()
    if config:
        tree["config"] = dict(config)
    save(tree, path)
    return os.path.getsize(path)


def load_compressed(path, model=None):
    """Read a file written by :func:`save_compressed`; returns (float32 state dict, config).
    With ``model``, the dequantised weights are also loaded into it (``load_state_dict``)."""
    tree = load(path)
    state = decompress_state(tree)
    if model is not None:
        model.load_state_dict(state)
    return state, tree.get("config", {})


def sparse_size_bytes(n, sparsity, value_bytes=4):
    """Bytes of one pruned tensor of n weights stored as a bit mask + the nonzero values:
    ⌈n/8⌉ + (n − round(s·n)) · value_bytes (the arrays alone, without the file's headers)."""
    return -(-n // 8) + (n - int(round(sparsity * n))) * value_bytes


__all__ = ["channel_axis", "compressible", "quantize_per_channel", "dequantize", "to_float16",
           "int8_linear", "RoundSTE", "round_ste", "fake_quantize", "fake_quantized",
           "QuantizationAware", "quantize_model_",
           "Pruning", "prune", "sparsity_schedule", "iterative_prune", "compress_state",
           "decompress_state", "save_compressed", "load_compressed", "sparse_size_bytes"]
