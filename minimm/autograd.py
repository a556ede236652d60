"""Layer 1: ``Tensor``, ``Function`` and reverse-mode differentiation.

A :class:`Function` computes ``forward`` on raw backend arrays and ``backward`` from the
upstream gradients given as Tensors, using minimm's own differentiable operations. So the
backward pass is itself a graph when ``create_graph=True`` (higher-order gradients), and plain
array arithmetic otherwise (recording is switched off while it runs).

This file knows no operation: the arithmetic operators of :class:`Tensor` (``+``, ``@``,
``[]``, ``.sum()`` …) are attached by :mod:`minimm.functional`, the layer above.
"""
import contextlib
import weakref

import numpy as np

from . import backend

_grad_enabled = True


@contextlib.contextmanager
def _set_grad_enabled(mode):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, mode
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """Context manager: operations inside record no graph (inference, optimiser updates)."""
    return _set_grad_enabled(False)


def enable_grad():
    """Context manager: record the graph even inside ``no_grad``."""
    return _set_grad_enabled(True)


def is_grad_enabled():
    return _grad_enabled


def _as_array(value, dtype=None, device="cpu"):
    if isinstance(value, Tensor):
        value = value.data
    if dtype is None and not hasattr(value, "dtype"):
        # Python floats become float32 (as in PyTorch); ints stay int64, bools bool.
        probe = np.asarray(value)
        dtype = np.float32 if probe.dtype == np.float64 else probe.dtype
    xp = backend.get_array_module(value)
    a = xp.asarray(value, dtype=dtype)
    return backend.to_device(a, device) if device is not None else a


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    ``data`` is the backend array; ``grad`` (a Tensor or None) accumulates ``∂L/∂self`` for
    leaves; ``creator`` is the Function that produced it (None for leaves).
    """
    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            data = _as_array(data, device=None)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.creator = None
        self.name = name
        self._retain_grad = False

    # -- array facts -------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self.creator is None)

    def __bool__(self):
        return bool(self.data)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = str(backend.to_numpy(self.data)).replace("\n", "\n" + " " * 7)
        extra = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({body}, dtype={self.dtype}{dev}{extra})"

    def numpy(self):
        """A NumPy array of the values (copied to the host from the GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def to(self, device):
        """This tensor on ``device`` (``"cpu"`` or ``"cuda"``); a leaf stays a leaf."""
        moved = Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)
        return self if moved.data is self.data else moved

    def detach(self):
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    def retain_grad(self):
        """Also keep ``.grad`` on this non-leaf tensor during backward."""
        self._retain_grad = True
        return self

    def zero_grad(self):
        self.grad = None

    def backward(self, grad=None, create_graph=False):
        """Accumulate ``∂self/∂leaf · grad`` into ``leaf.grad`` for every leaf of the graph.

        Gradients add up over calls (call :meth:`zero_grad` between steps). With
        ``create_graph=True`` the gradients are themselves differentiable.
        """
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for a scalar, but this "
                    f"tensor has shape {self.shape}; call backward(grad) with a gradient of "
                    f"that shape")
            grad = backend.get_array_module(self.data).ones_like(self.data)
        _run_backward([self], [grad], create_graph)


def tensor(data, dtype=None, requires_grad=False, device="cpu"):
    """A new leaf Tensor from array-like ``data`` (Python floats give float32).

    Like ``torch.tensor`` it copies, so an in-place update (an optimiser step) never writes
    into the caller's array; ``Tensor(array)`` wraps an array without copying."""
    a = _as_array(data, dtype, device)
    if hasattr(data, "shape"):  # an array or a Tensor: asarray may have handed back the same memory
        a = a.copy()
    return Tensor(a, requires_grad=requires_grad)


def as_tensor(x, like=None):
    """``x`` as a Tensor; a Python or NumPy scalar takes the dtype of ``like`` so float32 stays
    float32 (under NumPy 2 a float64 scalar such as ``np.float64(1)`` would otherwise promote)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and (not hasattr(x, "dtype") or isinstance(x, np.generic)):
        xp = backend.get_array_module(like)
        dtype = like.dtype if xp.issubdtype(like.dtype, xp.inexact) else None
        return Tensor(xp.asarray(x, dtype=dtype))
    return Tensor(x)


class Function:
    """One differentiable operation.

    Subclasses define ``forward(*arrays) -> array or tuple of arrays`` and
    ``backward(*grad_outputs: Tensor) -> Tensor or tuple (one per input, None allowed)``.
    Inside ``backward``: ``self.inputs`` are the input Tensors, ``self.outputs()`` the outputs,
    and ``self.needs_input_grad[i]`` says whether input i wants a gradient (so costly
    gradients nobody needs, such as that of the input images, are skipped).
    """

    def __call__(self, *inputs):
        inputs = [as_tensor(x) for x in inputs]
        self.needs_input_grad = tuple(x.requires_grad for x in inputs)
        ys = self.forward(*[x.data for x in inputs])
        single = not isinstance(ys, tuple)
        outputs = [Tensor(y) for y in ((ys,) if single else ys)]
        if _grad_enabled and any(self.needs_input_grad):
            self.inputs = inputs
            for y in outputs:
                y.requires_grad, y.creator = True, self
            # weak: the graph points from outputs to creators, never back (no cycles)
            self._outputs = [weakref.ref(y) for y in outputs]
            self._output_meta = [(y.shape, y.dtype) for y in outputs]
        return outputs[0] if single else tuple(outputs)

    def outputs(self):
        return [ref() for ref in self._outputs]

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__


class _Cast(Function):
    """y = x in another dtype; the gradient is cast back. Keeps a float32 leaf's gradient
    float32 when a float64 operand promoted the forward pass."""

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.in_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return _Cast(self.in_dtype)(gy)


def _topological_order(roots):
    """Functions reachable from ``roots``, each after every Function that consumes its outputs.

    Iterative depth-first post-order: a 100,000-op chain needs no recursion.
    """
    order, seen = [], set()
    stack = [(t.creator, False) for t in roots if t.creator is not None]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if fn in seen:
            continue
        seen.add(fn)
        stack.append((fn, True))
        stack.extend((x.creator, False) for x in fn.inputs
                     if x.creator is not None and x.creator not in seen)
    return order[::-1]


def _run_backward(roots, root_grads, create_graph, wanted=None):
    """Propagate gradients from ``roots``. With ``wanted`` (tensors), return their gradients
    instead of accumulating into the leaves' ``.grad``."""
    grads = {}  # id(tensor) -> gradient Tensor summed over every path so far
    keep = {}   # id -> tensor, so ids stay valid

    def add(t, g):
        if g.shape != t.shape:
            raise RuntimeError(f"backward: gradient of shape {g.shape} for a tensor of shape "
                               f"{t.shape} (a Function returned a wrongly shaped gradient)")
        if g.dtype != t.dtype and t.dtype.kind == "f":
            g = _Cast(t.dtype)(g)
        key = id(t)
        keep[key] = t
        grads[key] = g if key not in grads else grads[key] + g

    for t, g in zip(roots, root_grads):
        g = g if isinstance(g, Tensor) else Tensor(_as_array(g, t.dtype, device=None))
        if g.shape != t.shape:
            raise RuntimeError(f"backward: grad has shape {g.shape} but the tensor has shape "
                               f"{t.shape}")
        add(t, g)
    wanted_ids = None if wanted is None else {id(t) for t in wanted}

    with _set_grad_enabled(create_graph):
        for fn in _topological_order(roots):
            outs = fn.outputs()
            gys = [grads.pop(id(y), None) if y is not None else None for y in outs]
            if all(g is None for g in gys):
                continue
            xp = backend.get_array_module(*fn.inputs)
            # an output nobody used (one half of a split, say) contributes zero
            gys = [g if g is not None else Tensor(xp.zeros(shape, dtype))
                   for g, (shape, dtype) in zip(gys, fn._output_meta)]
            for y, g in zip(outs, gys):
                if y is not None and (y._retain_grad or (wanted_ids and id(y) in wanted_ids)):
                    keep[("out", id(y))] = (y, g)
            gxs = fn.backward(*gys)
            gxs = gxs if isinstance(gxs, tuple) else (gxs,)
            if len(gxs) != len(fn.inputs):
                raise RuntimeError(f"{fn}.backward returned {len(gxs)} gradients for "
                                   f"{len(fn.inputs)} inputs")
            for x, gx, needed in zip(fn.inputs, gxs, fn.needs_input_grad):
                if needed and gx is not None:
                    add(x, gx if isinstance(gx, Tensor) else Tensor(gx))
        # roots and leaves are never popped above: what is left are their total gradients
        results = {}
        for key, t in keep.items():
            if isinstance(key, tuple):
                y, g = t
                results[id(y)] = g
                if y._retain_grad and wanted is None:
                    y.grad = g if y.grad is None else y.grad + g
            elif key in grads:
                results[key] = grads[key]
                if wanted is None and t.creator is None and t.requires_grad:
                    t.grad = grads[key] if t.grad is None else t.grad + grads[key]
    if wanted is not None:
        return [results.get(id(t)) for t in wanted]


def grad(outputs, inputs, grad_outputs=None, create_graph=False):
    """``∂outputs/∂inputs · grad_outputs`` for each input, without touching any ``.grad``.

    Like ``torch.autograd.grad``; an input the outputs do not depend on gets ``None``.
    With ``create_graph=True`` the results can be differentiated again.
    """
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    root_grads = []
    for y, g in zip(outputs, grad_outputs):
        if g is None:
            if y.size != 1:
                raise RuntimeError(f"grad: grad_outputs needed for an output of shape {y.shape}")
            g = backend.get_array_module(y.data).ones_like(y.data)
        root_grads.append(g)
    result = _run_backward(outputs, root_grads, create_graph, wanted=inputs)
    return result[0] if single else tuple(result)
