"""Layer 1: ``Tensor``, ``Function`` and reverse-mode differentiation.

A :class:`Function` computes ``forward`` on raw backend arrays and ``backward`` from the
upstream gradients given as Tensors, using minimm's own differentiable operations. So the
backward pass is itself a graph when ``create_graph=True`` (higher-order gradients), and plain
array arithmetic otherwise (recording is switched off while it runs).

This file knows no operation: the arithmetic operators of :class:`Tensor` (``+``, ``@``,
``[]``, ``.sum()`` …) are attached by :mod:`minimm.functional`, the layer above. The engine
itself never uses them: gradients arriving by several paths are summed as raw arrays, or by
the one-line Function :class:`_Accumulate` when ``create_graph=True`` records a graph.

Rules the engine enforces, as PyTorch does:

* Only floating-point tensors can require gradients (``mm.tensor``, ``Tensor(...)`` and
  ``requires_grad_()`` refuse integer and bool tensors).
* ``backward()`` and :func:`grad` refuse a value that does not require a gradient (computed
  under :func:`no_grad`, from comparisons or constants only, or a leaf without
  ``requires_grad=True``): nothing could receive a gradient, so training would learn nothing.
* In-place changes between forward and backward are detected by a version counter. Every
  Tensor has ``_version`` (0 at creation); assigning ``t.data = ...`` (also ``t.data -= ...``)
  and the optimisers' in-place updates add one (code that changes ``t.data`` in place itself
  calls :func:`increment_version`). A Function records its inputs' versions in the forward;
  backward raises if one has changed, naming the Function and the tensor, because the
  gradient would silently be that of the new values. Not detected: writing into the array
  behind the tensor directly (``t.data[...] = v``, ``np.copyto(t.data, v)``,
  ``xp.add(t.data, v, out=t.data)``), which minimm cannot see. ``zero_grad`` does not count:
  it changes ``.grad``, not the values.
* dtypes of mixed operands (:func:`as_tensor`, :func:`promote`): a Python or NumPy scalar
  takes the dtype of the tensor it meets unless it is of a higher kind (bool < integer <
  float): then a float gives float32, the default, and an int gives int64; an integer or
  bool tensor meeting a float tensor takes the float's dtype; otherwise NumPy's promotion.
"""
import contextlib
import itertools
import weakref

import numpy as np

from . import backend

_grad_enabled = True
_in_backward = False         # set while the engine runs: its own no-grad arithmetic is not marked
DEFAULT_FLOAT = np.float32   # what a Python float becomes, as torch.get_default_dtype()


@contextlib.contextmanager
def _set_grad_enabled(mode):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, mode
    try:
        yield
    finally:
        _grad_enabled = previous


class _BackwardMode:
    """Context manager for one backward pass: recording as ``create_graph`` says, and the
    engine's own arithmetic not marked as made under no_grad. (A class: cheaper to enter
    than a generator-based context manager, and it is entered on every backward.)"""

    def __init__(self, create_graph):
        self.create_graph = create_graph

    def __enter__(self):
        global _grad_enabled, _in_backward
        self.previous = _grad_enabled, _in_backward
        _grad_enabled, _in_backward = self.create_graph, True

    def __exit__(self, *exc_info):
        global _grad_enabled, _in_backward
        _grad_enabled, _in_backward = self.previous


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
        dtype = DEFAULT_FLOAT if probe.dtype == np.float64 else probe.dtype
    xp = backend.get_array_module(value)
    a = xp.asarray(value, dtype=dtype)
    return backend.to_device(a, device) if device is not None else a


def _check_can_require_grad(dtype, shape, op):
    if dtype.kind not in "fc":
        raise RuntimeError(
            f"{op}: only floating point tensors can require gradients, got a {dtype} tensor "
            f"of shape {tuple(shape)}: a gradient says how the result changes as a value moves "
            f"continuously, and integer or bool values cannot move by an infinitesimal step. "
            f"Convert first, e.g. mm.tensor(x, dtype=np.float32, requires_grad=True)")


class Tensor:
    """An n-dimensional array that remembers how it was computed.

    ``data`` is the backend array; ``grad`` (a Tensor or None) accumulates ``∂L/∂self`` for
    leaves; ``creator`` is the Function that produced it (None for leaves); ``_version``
    counts the in-place changes of ``data`` (see the module docstring).
    """
    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__
    _made_under_no_grad = False   # set on results that would need a graph, made without one

    def __init__(self, data, requires_grad=False, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            data = _as_array(data, device=None)
        self._data = data
        self._version = 0
        self.grad = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad_(True, op=type(self).__name__)
        self.creator = None
        self.name = name
        self._retain_grad = False

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, array):
        # an in-place change of the values: a graph that saved this tensor is now stale
        self._data = array
        self._version += 1

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        self.requires_grad_(flag, op="requires_grad")

    # -- array facts -------------------------------------------------------------------------
    shape = property(lambda self: tuple(self._data.shape))
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: int(self._data.size))
    dtype = property(lambda self: self._data.dtype)
    device = property(lambda self: backend.device_of(self._data))
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

    def requires_grad_(self, flag=True, op="requires_grad_"):
        """Make this leaf require a gradient (or not); only floating point tensors can."""
        if flag:
            _check_can_require_grad(self._data.dtype, self._data.shape, op)
        self._requires_grad = bool(flag)
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
        _check_differentiable(self, "backward", "element 0 of tensors")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for a scalar, but this "
                    f"tensor has shape {self.shape}; call backward(grad) with a gradient of "
                    f"that shape")
            grad = backend.get_array_module(self._data).ones_like(self._data)
        _backward([self], [grad], create_graph)


def tensor(data, dtype=None, requires_grad=False, device="cpu"):
    """A new leaf Tensor from array-like ``data`` (Python floats give float32).

    Like ``torch.tensor`` it copies, so an in-place update (an optimiser step) never writes
    into the caller's array; ``Tensor(array)`` wraps an array without copying."""
    a = _as_array(data, dtype, device)
    if requires_grad:
        _check_can_require_grad(a.dtype, a.shape, "tensor")
    if hasattr(data, "shape"):  # an array or a Tensor: asarray may have handed back the same memory
        a = a.copy()
    return Tensor(a, requires_grad=requires_grad)


def increment_version(tensors):
    """Record that ``tensors`` (a Tensor or an iterable of them) changed in place.

    As ``torch.autograd.graph.increment_version``: call it after writing into ``t.data``
    without assigning it (an optimiser's ``theta -= lr * g``), so that a backward through a
    graph that used the old values raises instead of returning their gradient."""
    for t in ((tensors,) if isinstance(tensors, Tensor) else tensors):
        t._version += 1


# -- dtypes of mixed operands ------------------------------------------------------------------
_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}   # bool < integer < float < complex


def _rank(dtype):
    return _KIND_RANK.get(dtype.kind, -1)


def _is_array(x):
    """A Tensor or an array (a strong operand); Python and NumPy scalars and lists are weak."""
    return isinstance(x, Tensor) or (hasattr(x, "dtype") and hasattr(x, "shape")
                                     and not isinstance(x, np.generic))


def as_tensor(x, like=None):
    """``x`` as a Tensor (itself if it is one); with ``like``, the array or Tensor that ``x``
    meets in an elementwise operation, under minimm's dtype rules (PyTorch's):

    * a Python or NumPy scalar (or a list of them) takes ``like``'s dtype when it is of the
      same kind or lower (bool < integer < float), so float32 stays float32 (under NumPy 2
      ``np.float64(1)`` would otherwise promote it) and an int32 tensor plus 1 stays int32;
      of a higher kind it becomes the default: float32 for a float, int64 for an int;
    * an integer or bool array meeting a floating ``like`` takes ``like``'s dtype (NumPy
      would widen int64 with float32 to float64). It never requires a gradient, so the cast
      loses nothing;
    * any other array keeps its dtype: NumPy's promotion decides (float32 with float64
      gives float64, as in PyTorch).
    """
    if like is None:
        return x if isinstance(x, Tensor) else Tensor(x)
    like = like.data if isinstance(like, Tensor) else like   # an array or a NumPy scalar
    if _is_array(x):
        t = x if isinstance(x, Tensor) else Tensor(x)
        if _rank(t.dtype) < 2 <= _rank(like.dtype):
            return Tensor(t.data.astype(like.dtype))
        return t
    rank = _rank(x.dtype if isinstance(x, np.generic) else np.asarray(x).dtype)
    if rank <= _rank(like.dtype):
        dtype = like.dtype
    else:
        dtype = {2: DEFAULT_FLOAT, 1: np.int64}.get(rank)
    return Tensor(backend.get_array_module(like).asarray(x, dtype=dtype))


def promote(a, b):
    """The two operands of an elementwise operation (``a + b``, ``maximum``, ``where``, a
    comparison) as Tensors under the rules of :func:`as_tensor`, applied both ways: an
    int32 tensor with 2.5 gives two float32 tensors, an int64 tensor with a float32 one two
    float32 tensors, a bool tensor with 2 a bool and an int64 tensor (NumPy then adds them
    in int64)."""
    if _is_array(a) or not _is_array(b):
        a = as_tensor(a)
        b = as_tensor(b, like=a)
    else:
        b = as_tensor(b)
        a = as_tensor(a, like=b)
    a = as_tensor(a, like=b)   # an integer operand meeting a float one (or a float scalar)
    return a, as_tensor(b, like=a)


# -- Functions ---------------------------------------------------------------------------------
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
        self.needs_input_grad = tuple(x._requires_grad for x in inputs)
        ys = self.forward(*[x._data for x in inputs])
        single = not isinstance(ys, tuple)
        outputs = [Tensor(y) for y in ((ys,) if single else ys)]
        if _grad_enabled and True in self.needs_input_grad:
            self.inputs = inputs
            self._saved_versions = [x._version for x in inputs]
            for y in outputs:
                if y._data.dtype.kind in "fc":   # an integer output has no gradient
                    y._requires_grad, y.creator = True, self
            # weak: the graph points from outputs to creators, never back (no cycles)
            self._outputs = [weakref.ref(y) for y in outputs]
            self._output_meta = [(y.shape, y.dtype) for y in outputs]
        elif not _in_backward and (True in self.needs_input_grad
                                   or any(x._made_under_no_grad for x in inputs)):
            for y in outputs:   # under no_grad, from inputs that wanted a gradient:
                y._made_under_no_grad = True   # remembered for backward's error message
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


class _Accumulate(Function):
    """y = a + b for two gradients of one tensor's shape; ∂y/∂a = ∂y/∂b = 1. The engine's own
    sum of the gradients arriving by several paths when ``create_graph`` records a graph
    (without one it adds the arrays), so layer 1 needs no operator from layer 2."""

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


def _accumulate(a, b):
    """a + b for gradients: differentiable while a graph is being recorded, arrays otherwise."""
    return _Accumulate()(a, b) if _grad_enabled else Tensor(a._data + b._data)


# -- backward ----------------------------------------------------------------------------------
def _check_differentiable(t, op, what):
    if t._requires_grad:
        return
    if t._made_under_no_grad:
        why = ("it was computed under mm.no_grad() (or from a result of it), which records "
               "no graph; compute it outside no_grad() to differentiate it")
    elif t._data.dtype.kind not in "fc":
        why = (f"it is a {t.dtype} tensor (comparisons and integer operations have no "
               f"gradient)")
    else:
        why = ("it is a leaf that does not require grad: created without requires_grad=True, "
               "or computed only from tensors that do not require grad (constants, data, "
               ".detach()), so no gradient can flow to any parameter")
    raise RuntimeError(f"{op}: {what} does not require grad and does not have a grad_fn: "
                       f"{why} (shape {t.shape}, dtype {t.dtype})")


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


def _check_versions(fn, outputs):
    """Refuse to differentiate through tensors changed in place since ``fn``'s forward
    (its inputs at the versions they had then; its outputs, created at version 0)."""
    for i, (x, version) in enumerate(zip(fn.inputs, fn._saved_versions)):
        if x._version != version:
            _modified_in_place(fn, f"input {i}", x, version)
    for i, y in enumerate(outputs):
        if y is not None and y._version:
            _modified_in_place(fn, f"output {i}", y, 0)


def _modified_in_place(fn, role, t, version):
    raise RuntimeError(
        f"backward: one of the variables needed for gradient computation has been modified by "
        f"an inplace operation: the {t.dtype} tensor of shape {t.shape}, {role} of {fn}, is at "
        f"version {t._version}; expected version {version} instead. It was changed after the "
        f"forward pass that used it (an optimiser step, an assignment to .data), so its "
        f"gradient would be that of the new values: call backward before changing it, or run "
        f"the forward pass again")


def _add_gradient(grads, t, g):
    """grads[id(t)] += g, after checking g's shape and casting it to t's float dtype."""
    if g.shape != t.shape:
        raise RuntimeError(f"backward: gradient of shape {g.shape} for a tensor of shape "
                           f"{t.shape} (a Function returned a wrongly shaped gradient)")
    if g.dtype != t.dtype and t.dtype.kind == "f":
        g = _Cast(t.dtype)(g)
    key = id(t)
    grads[key] = g if key not in grads else _accumulate(grads[key], g)


def _gradients(roots, root_grads, wanted, create_graph, order=None):
    """The gradient of Σₖ ⟨rootₖ, root_gradₖ⟩ with respect to each tensor in ``wanted``: a
    list in ``wanted``'s order, None for a tensor that no path from the roots reaches.

    One sweep over the Functions in topological order: each receives the total gradient of
    its outputs (every consumer came before it) and adds its inputs' shares to ``grads``.
    ``grads`` maps id(tensor) → the gradient summed so far; the ids stay valid because the
    graph (``order`` and the roots) holds every tensor that is a key. A wanted leaf's total
    is what remains in ``grads`` at the end; a wanted non-leaf's is kept when its creator runs.
    """
    wanted_ids = {id(t) for t in wanted if t.creator is not None}   # non-leaves
    grads, kept = {}, {}
    with _BackwardMode(create_graph):
        for t, g in zip(roots, root_grads):
            g = g if isinstance(g, Tensor) else Tensor(_as_array(g, t.dtype, device=None))
            if g.shape != t.shape:
                raise RuntimeError(f"backward: grad has shape {g.shape} but the tensor has "
                                   f"shape {t.shape}")
            _add_gradient(grads, t, g)
        for fn in _topological_order(roots) if order is None else order:
            outs = fn.outputs()
            gys = [grads.pop(id(y), None) if y is not None else None for y in outs]
            if all(g is None for g in gys):
                continue
            if wanted_ids:
                for y, g in zip(outs, gys):
                    if g is not None and id(y) in wanted_ids:
                        kept[id(y)] = g
            for x, version in zip(fn.inputs, fn._saved_versions):
                if x._version != version:
                    _check_versions(fn, outs)   # raises, naming the tensor
            for y in outs:
                if y is not None and y._version:
                    _check_versions(fn, outs)
            xp = backend.get_array_module(*fn.inputs)
            # an output nobody used (one half of a split, say) contributes zero
            gys = [g if g is not None else Tensor(xp.zeros(shape, dtype))
                   for g, (shape, dtype) in zip(gys, fn._output_meta)]
            gxs = fn.backward(*gys)
            gxs = gxs if isinstance(gxs, tuple) else (gxs,)
            if len(gxs) != len(fn.inputs):
                raise RuntimeError(f"{fn}.backward returned {len(gxs)} gradients for "
                                   f"{len(fn.inputs)} inputs")
            for x, gx, needed in zip(fn.inputs, gxs, fn.needs_input_grad):
                if needed and gx is not None:
                    _add_gradient(grads, x, gx if isinstance(gx, Tensor) else Tensor(gx))
    return [kept.get(id(t), grads.get(id(t))) for t in wanted]


def _backward(roots, root_grads, create_graph):
    """``Tensor.backward``: add the gradients into ``.grad`` of every leaf that requires one
    and of every non-leaf that called :meth:`Tensor.retain_grad`."""
    order = _topological_order(roots)
    # a tensor can receive a gradient only as a root or as the input of a Function in the graph
    receivers, seen = [], set()
    for t in itertools.chain(roots, *(fn.inputs for fn in order)):
        if ((t.creator is None and t._requires_grad) or t._retain_grad) and id(t) not in seen:
            seen.add(id(t))
            receivers.append(t)
    gradients = _gradients(roots, root_grads, receivers, create_graph, order)
    with _BackwardMode(create_graph):
        for t, g in zip(receivers, gradients):
            if g is not None:
                t.grad = g if t.grad is None else _accumulate(t.grad, g)


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
    for i, y in enumerate(outputs):
        _check_differentiable(y, "grad", f"element {i} of outputs")
    for i, x in enumerate(inputs):
        if not x._requires_grad:
            raise RuntimeError(f"grad: input {i} (shape {x.shape}, dtype {x.dtype}) does not "
                               f"require grad, so it has no gradient to compute; create it "
                               f"with requires_grad=True")
    root_grads = []
    for y, g in zip(outputs, grad_outputs):
        if g is None:
            if y.size != 1:
                raise RuntimeError(f"grad: grad_outputs needed for an output of shape {y.shape}")
            g = backend.get_array_module(y.data).ones_like(y.data)
        root_grads.append(g)
    result = _gradients(outputs, root_grads, inputs, create_graph)
    return result[0] if single else tuple(result)
