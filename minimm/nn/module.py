"""``Module`` and ``Parameter``: containers that find their own parameters.

Assigning a :class:`Parameter` or a :class:`Module` to an attribute registers it, so
``parameters()`` and ``state_dict()`` need no bookkeeping from the layer's author.
"""
from collections import OrderedDict

import numpy as np

from .. import backend
from ..autograd import Tensor


class Parameter(Tensor):
    """A Tensor that a Module trains: a leaf with ``requires_grad=True``."""

    def __init__(self, data, requires_grad=True, name=None):
        super().__init__(data, requires_grad=requires_grad, name=name)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer and model. Subclasses define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attribute {name!r}")
        for table in (self._parameters, self._modules, self._buffers):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """State that is saved and moved with the module but not trained (running means)."""
        object.__setattr__(self, name, array)
        self._buffers[name] = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    # -- traversal ---------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) pairs, each parameter once, in registration order."""
        seen = set()
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        for mod_name, m in self.named_modules():
            for name in m._buffers:
                yield (f"{mod_name}.{name}" if mod_name else name), m, name

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def to(self, device):
        """Moves every parameter and buffer to ``device`` in place (parameters stay the same
        objects, so an optimiser built before the move still holds them)."""
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            if p.grad is not None:
                p.grad = Tensor(backend.to_device(p.grad.data, device))
        for _, m, name in self.named_buffers():
            object.__setattr__(m, name, backend.to_device(getattr(m, name), device))
        return self

    # -- state -------------------------------------------------------------------------------
    def state_dict(self):
        """Name -> NumPy array copy of every parameter and buffer."""
        state = OrderedDict((n, backend.to_numpy(p.data).copy()) for n, p in self.named_parameters())
        for n, m, name in self.named_buffers():
            state[n] = backend.to_numpy(getattr(m, name)).copy()
        return state

    def load_state_dict(self, state, strict=True):
        """Copies values in place; errors name the parameter and both shapes."""
        own = dict(self.named_parameters())
        buffers = {n: (m, name) for n, m, name in self.named_buffers()}
        if strict:
            missing = [k for k in list(own) + list(buffers) if k not in state]
            unexpected = [k for k in state if k not in own and k not in buffers]
            if missing or unexpected:
                raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys "
                               f"{unexpected}")
        for key, value in state.items():
            value = np.asarray(backend.to_numpy(value))
            if key in own:
                p = own[key]
                if value.shape != p.shape:
                    raise ValueError(f"load_state_dict: parameter {key!r} has shape {p.shape} "
                                     f"in the model but {value.shape} in the state dict")
                xp = backend.get_array_module(p.data)
                # a copy, as torch's copy_: in-place optimiser steps must not write into `state`
                p.data = xp.array(value, dtype=p.dtype)
            elif key in buffers:
                m, name = buffers[key]
                old = getattr(m, name)
                if value.shape != old.shape:
                    raise ValueError(f"load_state_dict: buffer {key!r} has shape {old.shape} "
                                     f"in the model but {value.shape} in the state dict")
                object.__setattr__(m, name, backend.get_array_module(old).array(
                    value, dtype=old.dtype))
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")


class Sequential(Module):
    """Applies its modules in order."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x
