"""Operations that move values around without arithmetic: the gradient moves them back."""
from .. import backend
from ..autograd import Function, as_tensor
from .utils import check_broadcast


def _normalise_shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape an array of shape {x.shape} "
                             f"({x.size} elements) into shape {self.shape}") from None

    def backward(self, gy):
        return reshape(gy, self.in_shape)


def reshape(x, *shape):
    shape = _normalise_shape(shape)
    x = as_tensor(x)
    return x if x.shape == shape else Reshape(shape)(x)


class Transpose(Function):
    """Permutes axes; the gradient permutes them back with the inverse permutation."""

    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return transpose(gy)
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a % len(self.axes)] = i
        return transpose(gy, *inverse)


def transpose(x, *axes):
    """Reverses the axes, or permutes them as ``axes`` says (like ``ndarray.transpose``)."""
    axes = _normalise_shape(axes) if axes else None
    return Transpose(axes)(x)


permute = transpose


def swapaxes(x, a, b):
    x = as_tensor(x)
    axes = list(range(x.ndim))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, *axes)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        if check_broadcast("broadcast_to", x.shape, self.shape) != self.shape:
            raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {self.shape}")
        xp = backend.get_array_module(x)
        return xp.broadcast_to(x, self.shape)

    def backward(self, gy):
        return sum_to(gy, self.in_shape)


def broadcast_to(x, shape):
    x = as_tensor(x)
    shape = tuple(shape)
    return x if x.shape == shape else BroadcastTo(shape)(x)


class SumTo(Function):
    """Sums a broadcast array back to ``shape``: the adjoint of broadcasting."""

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        lead = x.ndim - len(self.shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(self.shape) if s == 1 and x.shape[lead + i] != 1)
        y = x.sum(axis=axes, keepdims=True)
        return y.reshape(self.shape) if lead else y

    def backward(self, gy):
        return broadcast_to(gy, self.in_shape)


def sum_to(x, shape):
    x = as_tensor(x)
    shape = tuple(shape)
    return x if x.shape == shape else SumTo(shape)(x)


def _index_arrays(index):
    """Tensors inside an index become arrays; tell whether it uses advanced indexing."""
    items = index if isinstance(index, tuple) else (index,)
    items = tuple(backend.unwrap(i) for i in items)
    advanced = any(hasattr(i, "shape") or isinstance(i, list) for i in items)
    return (items if isinstance(index, tuple) else items[0]), advanced


class GetItem(Function):
    def __init__(self, index):
        self.index, self.advanced = _index_arrays(index)

    def forward(self, x):
        self.in_shape = x.shape
        if self.advanced:
            xp = backend.get_array_module(x)
            items = self.index if isinstance(self.index, tuple) else (self.index,)
            # host (NumPy) index arrays move to x's device too, for CuPy's scatter_add
            items = tuple(xp.asarray(i) if isinstance(i, list) or hasattr(i, "shape") else i
                          for i in items)
            self.index = items if isinstance(self.index, tuple) else items[0]
        return x[self.index]

    def backward(self, gy):
        return GetItemGrad(self.index, self.advanced, self.in_shape)(gy)


class GetItemGrad(Function):
    """Scatters ``gy`` into zeros of the input's shape; repeated indices add up."""

    def __init__(self, index, advanced, in_shape):
        self.index, self.advanced, self.in_shape = index, advanced, in_shape

    def forward(self, gy):
        xp = backend.get_array_module(gy)
        gx = xp.zeros(self.in_shape, dtype=gy.dtype)
        if self.advanced:
            backend.scatter_add(xp, gx, self.index, gy)
        else:  # basic slicing never repeats an element
            gx[self.index] = gy
        return gx

    def backward(self, ggx):
        return GetItem(self.index)(ggx)


def getitem(x, index):
    return GetItem(index)(x)


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        ref = xs[0]
        if not -ref.ndim <= self.axis < ref.ndim:  # % below would silently wrap it
            raise ValueError(f"concat: axis {self.axis} is out of range for tensors of shape "
                             f"{ref.shape}")
        axis = self.axis % ref.ndim
        for i, x in enumerate(xs):
            if x.ndim != ref.ndim or any(a != b for d, (a, b) in enumerate(zip(x.shape, ref.shape))
                                         if d != axis):
                raise ValueError(f"concat: tensor {i} has shape {x.shape}, which does not match "
                                 f"tensor 0's shape {ref.shape} outside axis {self.axis}")
        self.sizes = [x.shape[axis] for x in xs]
        return backend.get_array_module(*xs).concatenate(xs, axis=axis)

    def backward(self, gy):
        return split(gy, self.sizes, axis=self.axis)


def concat(tensors, axis=0):
    """Joins tensors along an existing ``axis``."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concat: needs at least one tensor")
    return Concat(axis)(*tensors)


def expand_dims(x, axis):
    x = as_tensor(x)
    if not -(x.ndim + 1) <= axis <= x.ndim:
        raise ValueError(f"expand_dims: axis {axis} is out of range for shape {x.shape}")
    shape = list(x.shape)
    shape.insert(axis % (x.ndim + 1), 1)
    return reshape(x, shape)


def squeeze(x, axis):
    x = as_tensor(x)
    if x.shape[axis] != 1:
        raise ValueError(f"squeeze: axis {axis} of shape {x.shape} has size {x.shape[axis]}, not 1")
    shape = list(x.shape)
    del shape[axis]
    return reshape(x, shape)


def stack(tensors, axis=0):
    """Joins same-shaped tensors along a new ``axis``."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("stack: needs at least one tensor")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape} but tensor 0 has shape "
                             f"{tensors[0].shape}")
    return concat([expand_dims(t, axis) for t in tensors], axis=axis)


class Split(Function):
    def __init__(self, sizes, axis):
        self.sizes, self.axis = sizes, axis

    def forward(self, x):
        if sum(self.sizes) != x.shape[self.axis]:
            raise ValueError(f"split: sizes {self.sizes} add up to {sum(self.sizes)}, but axis "
                             f"{self.axis} of shape {x.shape} has {x.shape[self.axis]}")
        bounds, start = [], 0
        for s in self.sizes:
            bounds.append((start, start + s))
            start += s
        index = [slice(None)] * x.ndim
        parts = []
        for a, b in bounds:
            index[self.axis] = slice(a, b)
            parts.append(x[tuple(index)])
        return tuple(parts)

    def backward(self, *gys):
        return concat(gys, axis=self.axis)


def split(x, sections, axis=0):
    """Splits into equal ``sections`` (an int) or pieces of the given sizes (a list)."""
    x = as_tensor(x)
    n = x.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            raise ValueError(f"split: axis {axis} of shape {x.shape} does not divide into "
                             f"{sections} equal sections")
        sections = [n // sections] * sections
    return Split([int(s) for s in sections], axis)(x)


def flatten(x, start_dim=1):
    """Merges the axes from ``start_dim`` on: (N, C, H, W) -> (N, C·H·W)."""
    x = as_tensor(x)
    merged = 1
    for s in x.shape[start_dim:]:
        merged *= s
    return reshape(x, x.shape[:start_dim] + (merged,))   # not −1: that is ambiguous when empty
