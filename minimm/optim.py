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


def _tensors(params, op, where):
    """A list of Tensors from a list, a generator, a Module (anything with .parameters())."""
    if hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    if isinstance(params, Tensor):
        raise TypeError(f"{op}: {where} must be an iterable of Tensors, got a single Tensor; "
                        f"wrap it in a list")
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: {where}[{i}] is a {type(p).__name__}, expected a Tensor "
                            f"(Parameter)")
    return params


def _param_groups(params, op):
    """Parameter groups as PyTorch's: a list of Tensors (or a Module) is one group; a list of
    dicts ``{"params": [...], "lr": ..., ...}`` is one group each."""
    if isinstance(params, dict):
        raise TypeError(f"{op}: params must be an iterable of Tensors or a list of group "
                        f"dicts, got one dict; wrap it in a list")
    if not (hasattr(params, "parameters") and callable(params.parameters)) \
            and not isinstance(params, Tensor):
        params = list(params)
        if params and all(isinstance(g, dict) for g in params):
            groups = []
            for k, g in enumerate(params):
                if "params" not in g:
                    raise ValueError(f"{op}: parameter group {k} has no 'params' entry")
                groups.append({**g, "params": _tensors(g["params"], op,
                                                       f"param_groups[{k}]['params']")})
            return groups
        if any(isinstance(g, dict) for g in params):
            raise TypeError(f"{op}: params mixes Tensors and group dicts; pass one or the other")
    return [{"params": _tensors(params, op, "params")}]


def _check_nonnegative(op, **values):
    for name, value in values.items():
        if not value >= 0.0:
            raise ValueError(f"{op}: invalid {name} {value!r} (must be >= 0)")


class Optimizer:
    """Holds ``param_groups`` and a per-parameter ``state`` dict, as ``torch.optim.Optimizer``.

    ``param_groups`` is a list of dicts, each ``{"params": [Tensors], "lr": η, …}`` with every
    hyperparameter of the optimiser; a value a group does not give comes from ``defaults``
    (the constructor's keywords). So biases and norms can skip weight decay, or one tower
    can learn slower or be frozen (lr 0)::

        optim.AdamW([{"params": decayed, "weight_decay": 0.1},
                     {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)

    ``params`` is every parameter in order (groups concatenated); ``state[i]`` (i the
    position in ``params``) is created the first time parameter i is updated, as PyTorch
    does; parameters whose ``grad`` is None are skipped. ``lr`` reads the first group's rate
    and sets every group's (one group: PyTorch's ``param_groups[0]["lr"]``). Subclasses list
    their hyperparameters in ``_hyper``, check a group in :meth:`_check_group` and define
    :meth:`_update` (one parameter, with its group's values).
    """
    _hyper = ()

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups, self.params, self.state = [], [], {}
        for group in _param_groups(params, type(self).__name__):
            self.add_param_group(group)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")

    def add_param_group(self, group):
        """Append a group (a dict with "params"); missing hyperparameters come from
        ``defaults``. A parameter may belong to one group only."""
        op = type(self).__name__
        group = {**self.defaults, **group}
        group["params"] = _tensors(group["params"], op, f"param_groups[{len(self.param_groups)}]"
                                                        f"['params']")
        seen = {id(p) for p in self.params}
        if any(id(p) in seen for p in group["params"]) or \
                len({id(p) for p in group["params"]}) != len(group["params"]):
            raise ValueError(f"{op}: some parameters appear in more than one parameter group "
                             f"(or twice in one)")
        self._check_group(group)
        self.param_groups.append(group)
        self.params.extend(group["params"])

    def _check_group(self, group):
        _check_nonnegative(type(self).__name__, lr=group["lr"])
        group["lr"] = float(group["lr"])

    @property
    def lr(self):
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for group in self.param_groups:
            group["lr"] = float(value)

    def zero_grad(self):
        """Forget every gradient (``grad = None``, PyTorch's default ``set_to_none``)."""
        for p in self.params:
            p.grad = None

    def _indexed(self):
        """(i, parameter, its group) for every parameter, i its position in ``params``."""
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, p, group
                i += 1

    def step(self):
        """One update of every parameter that has a gradient."""
        for i, p, group in self._indexed():
            if p.grad is None:
                continue
            g = backend.unwrap(p.grad)
            if g.shape != p.data.shape:
                raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape "
                                 f"{p.data.shape} but its grad has shape {g.shape}")
            xp = backend.get_array_module(p.data)
            self._update(xp, p.data, g, self.state.setdefault(i, {}), group)
            increment_version(p)   # in place: a graph built before the step is now stale

    def _update(self, xp, theta, g, state, group):
        raise NotImplementedError

    # -- saving and resuming -----------------------------------------------------------------
    def state_dict(self):
        """{"state": {"0": {"step": n, buffers as NumPy copies}, …}, "param_groups": {"0":
        {"lr", hyperparameters, "params": [indices into params]}, …}} — PyTorch's layout, with
        the group list written as a dict keyed "0", "1", … so ``mm.save`` can store it."""
        groups, i = {}, 0
        for k, group in enumerate(self.param_groups):
            entry = {name: value for name, value in group.items() if name != "params"}
            entry["params"] = list(range(i, i + len(group["params"])))
            i += len(group["params"])
            groups[str(k)] = entry
        state = {str(i): {k: (backend.to_numpy(v).copy() if hasattr(v, "shape") else v)
                          for k, v in s.items()}
                 for i, s in self.state.items() if s}
        return {"state": state, "param_groups": groups}

    def _hyper_value(self, name, value):
        """A saved hyperparameter back in its Python type (tuples for betas, bools…)."""
        like = self.defaults.get(name)
        if isinstance(like, tuple):
            return tuple(float(v) for v in value)
        if isinstance(like, bool):
            return bool(value)
        return float(value) if isinstance(like, (int, float)) or name == "lr" else value

    def _load_groups(self, state_dict, op):
        saved = state_dict.get("param_groups")
        if saved is None:   # the one-group format of earlier minimm: lr and hyper at the top
            saved = [{k: state_dict[k] for k in ("lr",) + self._hyper if k in state_dict}]
            saved[0]["params"] = range(len(self.params))
        elif isinstance(saved, dict):
            saved = [saved[str(k)] for k in range(len(saved))]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"{op}: the state dict has {len(saved)} parameter groups but the "
                             f"optimiser has {len(self.param_groups)}")
        for k, (entry, group) in enumerate(zip(saved, self.param_groups)):
            n = len(entry.get("params", ()))
            if n != len(group["params"]):
                raise ValueError(f"{op}: parameter group {k} has {n} parameters in the state "
                                 f"dict but {len(group['params'])} in the optimiser")
            for name, value in entry.items():
                if name != "params":
                    group[name] = self._hyper_value(name, value)

    def load_state_dict(self, state_dict):
        """Restores every group's lr and hyperparameters and the buffers (moved to each
        parameter's device and dtype); errors name the parameter index and both shapes.
        Reads the one-group format of earlier versions too."""
        op = f"{type(self).__name__}.load_state_dict"
        self._load_groups(state_dict, op)
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
        groups = "; ".join(f"group {k}: {len(g['params'])} parameters, lr={g['lr']}, "
                           + ", ".join(f"{n}={g[n]}" for n in self._hyper)
                           for k, g in enumerate(self.param_groups))
        return f"{type(self).__name__}({groups})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD`` (per group):

        g ← ∇θ + λθ                                   (weight decay λ)
        b ← g on the first step, else μb + (1 − τ)g   (momentum μ, dampening τ)
        g ← g + μb if nesterov else b
        θ ← θ − η g
    """
    _hyper = ("momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        # positional order as torch.optim.SGD
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, group):
        super()._check_group(group)
        _check_nonnegative("SGD", momentum=group["momentum"], weight_decay=group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov momentum needs momentum > 0 and dampening 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")
        for name in ("momentum", "dampening", "weight_decay"):
            group[name] = float(group[name])
        group["nesterov"] = bool(group["nesterov"])

    def _update(self, xp, theta, g, state, group):
        mu, lam = group["momentum"], group["weight_decay"]
        if lam != 0.0:
            g = g + lam * theta
        if mu != 0.0:
            if "momentum_buffer" not in state:
                b = state["momentum_buffer"] = g.astype(theta.dtype, copy=True)
            else:
                b = state["momentum_buffer"]
                b *= mu
                b += (1.0 - group["dampening"]) * g
            g = g + mu * b if group["nesterov"] else b
        theta -= group["lr"] * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as ``torch.optim.Adam`` (per group):

        g ← ∇θ + λθ                           (L2 weight decay added to the gradient)
        m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²
        θ ← θ − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
    """
    _hyper = ("betas", "eps", "weight_decay")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _check_group(self, group):
        super()._check_group(group)
        name = type(self).__name__
        betas = tuple(float(b) for b in group["betas"])
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name}: invalid beta{i + 1} {b!r} (must be in [0, 1))")
        _check_nonnegative(name, eps=group["eps"], weight_decay=group["weight_decay"])
        group["betas"] = betas
        group["eps"], group["weight_decay"] = float(group["eps"]), float(group["weight_decay"])

    def _update(self, xp, theta, g, state, group):
        beta1, beta2 = group["betas"]
        lr, lam = group["lr"], group["weight_decay"]
        if lam != 0.0:
            if self._decoupled:
                theta *= 1.0 - lr * lam   # AdamW: shrink θ itself, not the gradient
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
        step_size = lr / (1.0 - beta1 ** t)
        denom = xp.sqrt(v)
        denom /= math.sqrt(1.0 - beta2 ** t)
        denom += group["eps"]
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
    """Sets each parameter group's ``lr`` from the epoch (or step) counter, as
    ``torch.optim.lr_scheduler``: group k gets ``lr_at(t, base_lrs[k])``.

    The constructor records ``base_lrs`` (each group's rate then) and applies epoch 0; each
    :meth:`step` advances ``last_epoch`` by one and sets the new rates, returned by
    :meth:`get_last_lr` as a list, one per group.
    """

    def __init__(self, optimizer, base_lrs=None):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lrs = (list(base_lrs) if base_lrs is not None
                         else [g["lr"] for g in optimizer.param_groups])
        self.last_epoch = -1
        self.step()

    def lr_at(self, t, base_lr):
        raise NotImplementedError

    def _apply(self):
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = float(self.lr_at(self.last_epoch, base))

    def step(self):
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        return {"base_lrs": [float(b) for b in self.base_lrs], "last_epoch": self.last_epoch}

    def load_state_dict(self, state):
        base = state["base_lrs"] if "base_lrs" in state else [state["base_lr"]]   # one group
        self.base_lrs = [float(b) for b in (base if hasattr(base, "__len__") else [base])]
        if len(self.base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: {len(self.base_lrs)} "
                             f"base rates for {len(self.optimizer.param_groups)} parameter "
                             f"groups")
        self.last_epoch = int(state["last_epoch"])
        self._apply()


class StepLR(LRScheduler):
    """η_t = η₀ · γ^⌊t / step_size⌋."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if int(step_size) < 1:
            raise ValueError(f"StepLR: step_size must be a positive integer, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer)

    def lr_at(self, t, base_lr):
        return base_lr * self.gamma ** (t // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """η_t = η_min + (η₀ − η_min)(1 + cos(π t / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        if int(T_max) < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive integer, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, t, base_lr):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class OneCycleLR(LRScheduler):
    """The one-cycle policy (Smith & Topsakal), as ``torch.optim.lr_scheduler.OneCycleLR``
    with ``three_phase=False`` and ``cycle_momentum=False``: the rate rises from
    max_lr/div_factor to max_lr over the first pct_start of the steps, then anneals to
    max_lr/(div_factor·final_div_factor). ``max_lr``: one number, or one per parameter group.
    Call :meth:`step` once per batch.
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
        n = len(optimizer.param_groups)
        max_lrs = [float(m) for m in max_lr] if hasattr(max_lr, "__len__") else [float(max_lr)] * n
        if len(max_lrs) != n:
            raise ValueError(f"OneCycleLR: {len(max_lrs)} max_lr values for {n} parameter groups")
        self.total_steps, self.anneal_strategy = int(total_steps), anneal_strategy
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        # the last step of each phase: the warm-up, then the annealing
        self.phase_ends = (float(pct_start * self.total_steps) - 1, float(self.total_steps - 1))
        super().__init__(optimizer, base_lrs=max_lrs)       # the base of each group: its max_lr

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lr_at(self, t, max_lr):
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: step {t} is past total_steps={self.total_steps}")
        initial = max_lr / self.div_factor
        phases = [(self.phase_ends[0], initial, max_lr),
                  (self.phase_ends[1], max_lr, initial / self.final_div_factor)]
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                return self._anneal(start, end, (t - start_step) / (end_step - start_step))
            start_step = end_step
