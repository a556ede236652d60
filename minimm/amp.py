"""Mixed precision (§9.5: cheaper training): float16 forward and backward, float32 master
weights, dynamic loss scaling — the recipe of Micikevicius et al. (2018), with the names of
``torch.autocast`` and ``torch.cuda.amp.GradScaler``::

    scaler = amp.GradScaler()
    for x, y in batches:
        with amp.autocast(model):               # every layer computes in float16
            logits = model(x)                   # inputs cast to float16, outputs back to float32
        loss = F.cross_entropy(logits, y)       # the loss (softmax, log) in float32
        opt.zero_grad()
        scaler.scale(loss).backward()           # gradients of S·L: small ones survive float16
        scaler.step(opt)                        # g ← g / S; skip the step if any g is inf/nan
        scaler.update()                         # S ← S/2 after an overflow, 2S after N clean steps

Why each piece. float16 keeps 11 significant bits (relative spacing 2⁻¹⁰ ≈ 1e-3) in the
range 6.1e-5 … 65504 (subnormals down to 6e-8, then 0):

* **float32 master weights**: an update η·g smaller than half a float16 spacing of w is
  lost, w₁₆ + η g = w₁₆ (a relative update below 2⁻¹¹ ≈ 4.9e-4 is common); so the
  optimiser updates float32 weights and the forward pass reads float16 copies of them
  (a cast is a node of the graph: its backward casts the gradient back to float32).
* **loss scaling**: gradients smaller than 6e-8 flush to zero in float16. Back-propagating
  S·L instead multiplies every gradient by S (the chain rule is linear in the upstream
  gradient), lifting them into range; dividing the float32 gradients by S afterwards
  gives ∂L/∂θ exactly (S is a power of two).
* **dynamic S**: too large an S overflows (inf or nan somewhere in the backward). Then the
  step is skipped and S halved; after ``growth_interval`` clean steps in a row S doubles,
  so S stays near the largest value that does not overflow.

On a GPU float16 halves memory traffic and runs on tensor cores: that is the point. On a
CPU NumPy has no float16 BLAS: float16 matrix products run in a generic loop and are far
*slower* than float32 (tools/efficiency/amp_speed.py measures the ratio).
"""
import contextlib

import numpy as np

from . import backend
from ._swap import replaced_parameters
from .autograd import Tensor, _Cast


def _cast(x, dtype):
    """A floating Tensor or array in ``dtype`` (a graph node for Tensors); others unchanged."""
    if isinstance(x, Tensor):
        return _Cast(dtype)(x) if x.dtype.kind == "f" and x.dtype != dtype else x
    if hasattr(x, "dtype") and hasattr(x, "astype") and x.dtype.kind == "f":
        return Tensor(x.astype(dtype))
    if isinstance(x, tuple):
        return tuple(_cast(v, dtype) for v in x)
    return x


@contextlib.contextmanager
def autocast(model, dtype=np.float16):
    """Inside the block ``model(...)`` computes in ``dtype``: its floating parameters are seen
    through casts of the float32 masters, its floating inputs are cast to ``dtype``, and its
    floating outputs are cast back to float32 (so the loss is computed in float32, as
    ``torch.autocast`` does for softmax and cross-entropy)."""
    dtype = np.dtype(dtype)
    inner = model.forward
    had_own = "forward" in model.__dict__

    def forward(*args, **kwargs):
        args = [_cast(a, dtype) for a in args]
        kwargs = {k: _cast(v, dtype) for k, v in kwargs.items()}
        return _cast(inner(*args, **kwargs), np.float32)

    cast = (lambda name, p: _Cast(dtype)(p) if p.dtype.kind == "f" and p.dtype != dtype
            else None)
    with replaced_parameters(model, cast):
        object.__setattr__(model, "forward", forward)
        try:
            yield model
        finally:
            if had_own:
                object.__setattr__(model, "forward", inner)
            else:
                del model.__dict__["forward"]


class GradScaler:
    """Dynamic loss scaling, as ``torch.cuda.amp.GradScaler``.

    scale(loss):        S · loss
    unscale_(opt):      g ← g / S for every parameter of ``opt`` (once per step); notes
                        whether any g is inf or nan
    step(opt):          unscale (if not done yet), then ``opt.step()`` unless an overflow was
                        found; returns True when the step was taken
    update():           after an overflow S ← S · backoff_factor (and the clean-step count
                        restarts); after ``growth_interval`` clean steps in a row
                        S ← S · growth_factor
    ``enabled=False`` makes every method a pass-through (S = 1, no checks).
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not init_scale > 0 or not growth_factor > 1 or not 0 < backoff_factor < 1:
            raise ValueError(f"GradScaler: need init_scale > 0, growth_factor > 1 and "
                             f"0 < backoff_factor < 1, got {init_scale}, {growth_factor}, "
                             f"{backoff_factor}")
        if int(growth_interval) < 1:
            raise ValueError(f"GradScaler: growth_interval must be >= 1, got {growth_interval}")
        self.enabled = bool(enabled)
        self._scale = float(init_scale) if self.enabled else 1.0
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self._growth_tracker = 0          # clean steps in a row
        self._found_inf = None            # None: not unscaled yet in this step
        self.skipped_steps = 0

    def get_scale(self):
        return self._scale

    def scale(self, loss):
        return loss * self._scale if self.enabled else loss

    def unscale_(self, optimizer):
        if not self.enabled or self._found_inf is not None:
            return
        inv, found = 1.0 / self._scale, False
        for p in optimizer.params:
            if p.grad is None:
                continue
            g = backend.unwrap(p.grad)
            xp = backend.get_array_module(g)
            g = g * g.dtype.type(inv)               # a new array: grads may be shared
            found = found or not bool(xp.isfinite(g).all())
            p.grad = Tensor(g)
        self._found_inf = found

    def step(self, optimizer):
        if not self.enabled:
            optimizer.step()
            return True
        self.unscale_(optimizer)
        if self._found_inf:
            self.skipped_steps += 1
            return False
        optimizer.step()
        return True

    def update(self):
        if not self.enabled:
            return
        if self._found_inf is None:
            raise RuntimeError("GradScaler.update: call step(optimizer) (or unscale_) first in "
                               "this iteration")
        if self._found_inf:
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                self._scale *= self.growth_factor
                self._growth_tracker = 0
        self._found_inf = None

    def state_dict(self):
        return {"scale": self._scale, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "growth_tracker": self._growth_tracker, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state):
        self._scale = float(state["scale"])
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["growth_tracker"])
        self.skipped_steps = int(state.get("skipped_steps", 0))

    def __repr__(self):
        return (f"GradScaler(scale={self._scale:g}, growth_interval={self.growth_interval}, "
                f"skipped_steps={self.skipped_steps})")


def float16_update_is_lost(w, update):
    """True where adding ``update`` to float16 ``w`` leaves it unchanged: |update| below half
    the spacing of float16 numbers at w (the reason for float32 master weights)."""
    w16 = np.asarray(w, dtype=np.float16)
    return (w16 + np.asarray(update, dtype=np.float16)) == w16


__all__ = ["autocast", "GradScaler", "float16_update_is_lost"]
