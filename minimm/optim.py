"""Layer 4: optimisers, learning-rate schedules and gradient clipping.

An optimiser updates each parameter's array **in place**, outside the graph, with the same
update rule as PyTorch's namesake (``torch.optim.SGD``, ``Adam``, ``AdamW``), so a model
trained here and there follows the same path. Every constant is a Python float (NumPy 2
keeps float32 arrays float32 when combined with Python floats, NEP 50), and every buffer
is created in the parameter's dtype on the parameter's device, so float32 stays float32 on
NumPy and CuPy alike.

    opt = optim.Adam(model.parameters(), lr=1e-3)
    sched = optim.CosineAnnealingLR(opt, T_max=100)
    loss.backward(); optim.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); opt.zero_grad(); sched.step()
"""
import math

from . import backend
from .autograd import Tensor, increment_version


def _param_list(params, op):
    """A list of Tensors from a list, a generator or a Module (anything with .parameters())."""
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    if isinstance(params, Tensor):
        raise TypeError(f"{op}: params must be an iterable of Tensors, got a single Tensor; "
                        f"wrap it in a list")
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: params[{i}] is a {type(p).__name__}, expected a Tensor "
                            f"(Parameter)")
    if not params:
        raise ValueError(f"{op}: got an empty parameter list")
    return params


def _check_nonnegative(op, **values):
    for name, value in values.items():
        if not value >= 0.0:
            raise ValueError(f"{op}: invalid {name} {value!r} (must be >= 0)")


class Optimizer:
    """Holds the parameters, a mutable ``lr`` and a per-parameter ``state`` dict.

    ``state[i]`` (i the parameter's position) is created the first time parameter i is
    updated, as PyTorch does; parameters whose ``grad`` is None are skipped.
    Subclasses define :meth:`_update` (one parameter) and list their hyperparameters in
    ``_hyper`` so :meth:`state_dict` can save them.
    """
    _hyper = ()

    def __init__(self, params, lr):
        self.params = _param_list(params, type(self).__name__)
        _check_nonnegative(type(self).__name__, lr=lr)
        self.lr = float(lr)
        self.state = {}

    def zero_grad(self):
        """Forget every gradient (``grad = None``, PyTorch's default ``set_to_none``)."""
        for p in self.params:
            p.grad = None

    def step(self):
        """One update of every parameter that has a gradient."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = backend.unwrap(p.grad)
            if g.shape != p.data.shape:
                raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape "
                                 f"{p.data.shape} but its grad has shape {g.shape}")
            xp = backend.get_array_module(p.data)
            self._update(xp, p.data, g, self.state.setdefault(i, {}))
            increment_version(p)   # in place: a graph built before the step is now stale

    def _update(self, xp, theta, g, state):
        raise NotImplementedError

    # -- saving and resuming -----------------------------------------------------------------
    def state_dict(self):
        """{"lr", hyperparameters, "state": {"0": {"step": n, buffers as NumPy copies}, …}}."""
        out = {"lr": self.lr}
        for name in self._hyper:
            out[name] = getattr(self, name)
        out["state"] = {str(i): {k: (backend.to_numpy(v).copy() if hasattr(v, "shape") else v)
                                 for k, v in s.items()}
                        for i, s in self.state.items() if s}
        return out

    def load_state_dict(self, state_dict):
        """Restores lr, hyperparameters and buffers (moved to each parameter's device and
        dtype); errors name the parameter index and both shapes."""
        op = f"{type(self).__name__}.load_state_dict"
        self.lr = float(state_dict["lr"])
        for name in self._hyper:
            if name in state_dict:
                value = state_dict[name]
                value = (tuple(float(v) for v in value) if isinstance(getattr(self, name), tuple)
                         else type(getattr(self, name))(value))
                setattr(self, name, value)
        new_state = {}
        for key, s in state_dict.get("state", {}).items():
            i = int(key)
            if not 0 <= i < len(self.params):
                raise ValueError(f"{op}: state for parameter {i}, but the optimiser has "
                                 f"{len(self.params)} parameters")
            p = self.params[i]
            xp = backend.get_array_module(p.data)
            entry = {}
            for k, v in s.items():
                if hasattr(v, "shape") and v.shape != ():
                    if tuple(v.shape) != p.shape:
                        raise ValueError(f"{op}: buffer {k!r} of parameter {i} has shape "
                                         f"{tuple(v.shape)} in the state dict but the "
                                         f"parameter has shape {p.shape}")
                    entry[k] = xp.array(backend.to_numpy(v), dtype=p.dtype)
                else:
                    entry[k] = v.item() if hasattr(v, "item") else v
            new_state[i] = entry
        self.state = new_state
        return self

    def __repr__(self):
        hyper = ", ".join(f"{n}={getattr(self, n)}" for n in self._hyper)
        return f"{type(self).__name__}(lr={self.lr}, {hyper}, {len(self.params)} parameters)"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``:

        g ← ∇θ + λθ                                   (weight decay λ)
        b ← g on the first step, else μb + (1 − τ)g   (momentum μ, dampening τ)
        g ← g + μb if nesterov else b
        θ ← θ − η g
    """
    _hyper = ("momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        # positional order as torch.optim.SGD
        super().__init__(params, lr)
        _check_nonnegative("SGD", momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"SGD: nesterov momentum needs momentum > 0 and dampening 0, got "
                             f"momentum={momentum}, dampening={dampening}")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)

    def _update(self, xp, theta, g, state):
        mu, lam = self.momentum, self.weight_decay
        if lam != 0.0:
            g = g + lam * theta
        if mu != 0.0:
            if "momentum_buffer" not in state:
                b = state["momentum_buffer"] = g.astype(theta.dtype, copy=True)
            else:
                b = state["momentum_buffer"]
                b *= mu
                b += (1.0 - self.dampening) * g
            g = g + mu * b if self.nesterov else b
        theta -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as ``torch.optim.Adam``:

        g ← ∇θ + λθ                           (L2 weight decay added to the gradient)
        m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²
        θ ← θ − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
    """
    _hyper = ("betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        name = type(self).__name__
        beta1, beta2 = (float(b) for b in betas)
        for i, b in enumerate((beta1, beta2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name}: invalid beta{i + 1} {b!r} (must be in [0, 1))")
        _check_nonnegative(name, eps=eps, weight_decay=weight_decay)
        self.betas, self.eps, self.weight_decay = (beta1, beta2), float(eps), float(weight_decay)

    def _update(self, xp, theta, g, state):
        beta1, beta2 = self.betas
        lam = self.weight_decay
        if lam != 0.0:
            if self._decoupled:
                theta *= 1.0 - self.lr * lam   # AdamW: shrink θ itself, not the gradient
            else:
                g = g + lam * theta
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(theta)
            state["exp_avg_sq"] = xp.zeros_like(theta)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        # bias corrections are Python floats: they never promote float32 to float64
        step_size = self.lr / (1.0 - beta1 ** t)
        denom = xp.sqrt(v)
        denom /= math.sqrt(1.0 - beta2 ** t)
        denom += self.eps
        theta -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``:

        θ ← θ(1 − ηλ), then the Adam step on ∇θ alone.
    """
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


# -- gradient clipping ------------------------------------------------------------------------
def clip_grad_norm_(params, max_norm, norm_type=2.0):
    """Scale all gradients by min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ the norm of every gradient
    concatenated (PyTorch's ``clip_grad_norm_``). Returns ‖g‖ before clipping as a float.

    The scaled gradients are new arrays: backward may hand one gradient Tensor to several
    parameters, and scaling it in place would scale it twice.
    """
    if isinstance(params, Tensor):
        params = [params]
    params = [p for p in (params.parameters() if hasattr(params, "parameters") else params)
              if p.grad is not None]
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not params:
        return 0.0
    grads = [p.grad.data for p in params]
    xp = backend.get_array_module(*grads)
    if norm_type == math.inf:
        total = max(float(xp.abs(g).max()) if g.size else 0.0 for g in grads)
    elif norm_type == 2.0:
        total = math.sqrt(sum(float(xp.vdot(g.ravel(), g.ravel())) for g in grads))
    else:
        raise ValueError(f"clip_grad_norm_: norm_type must be 2 or inf, got {norm_type}")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for p in params:
            p.grad = Tensor(p.grad.data * p.grad.dtype.type(coef))  # NumPy 1.x: keep 0-d float32
    return total


# -- learning-rate schedules ------------------------------------------------------------------
class LRScheduler:
    """Sets ``optimizer.lr`` from the epoch (or step) counter, as ``torch.optim.lr_scheduler``.

    The constructor records ``base_lr`` and applies epoch 0; each :meth:`step` advances
    ``last_epoch`` by one and sets the new rate, returned by :meth:`get_last_lr`.
    """

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = -1
        self.step()

    def lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = float(self.lr_at(self.last_epoch))

    def get_last_lr(self):
        return self.optimizer.lr

    def state_dict(self):
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        self.base_lr, self.last_epoch = float(state["base_lr"]), int(state["last_epoch"])
        self.optimizer.lr = float(self.lr_at(self.last_epoch))


class StepLR(LRScheduler):
    """η_t = η₀ · γ^⌊t / step_size⌋."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if int(step_size) < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """η_t = η_min + (η₀ − η_min)(1 + cos(π t / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if int(T_max) < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class OneCycleLR(LRScheduler):
    """The one-cycle policy (Smith & Topsakal), as ``torch.optim.lr_scheduler.OneCycleLR``
    with ``three_phase=False`` and ``cycle_momentum=False``: the rate rises from
    max_lr/div_factor to max_lr over the first pct_start of the steps, then anneals to
    max_lr/(div_factor·final_div_factor). Call :meth:`step` once per batch.
    """

    def __init__(self, optimizer, max_lr, total_steps, pct_start=0.3, anneal_strategy="cos",
                 div_factor=25.0, final_div_factor=1e4):
        if int(total_steps) < 1:
            raise ValueError(f"OneCycleLR: total_steps must be a positive integer, got "
                             f"{total_steps}")
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self.total_steps, self.anneal_strategy = int(total_steps), anneal_strategy
        self.max_lr = float(max_lr)
        self.initial_lr = self.max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        # (last step of the phase, rate at its start, rate at its end)
        self.phases = [(float(pct_start * self.total_steps) - 1, self.initial_lr, self.max_lr),
                       (float(self.total_steps - 1), self.max_lr, self.min_lr)]
        optimizer.lr = self.initial_lr
        super().__init__(optimizer)

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lr_at(self, t):
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: step {t} is past total_steps={self.total_steps}")
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(self.phases):
            if t <= end_step or i == len(self.phases) - 1:
                return self._anneal(start, end, (t - start_step) / (end_step - start_step))
            start_step = end_step
