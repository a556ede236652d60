"""The article's formula (3) (§4.1.3): a multi-task loss plus a regulariser,

    L(θ) = Σ_{i=1..N} ℓ(y_i, ŷ_i) + λ R(θ),    R(θ) = Σ θ²  (L2)  or  Σ |θ|  (L1).

The task losses ℓ_i are scalar Tensors computed by the caller (a cross-entropy per task, say);
this module adds them up exactly as written and adds λ R(θ). Its gradient is
∂L/∂θ = Σ ∂ℓ_i/∂θ + λ·2θ (L2, "weight decay") or + λ·sign(θ) (L1).

Which θ are regularised is the caller's choice. The default, when a Module is passed, is
:func:`regularized_parameters`: the weight matrices and kernels (ndim ≥ 2), not the biases
or the scales and shifts of normalisation layers (1-D) — penalising those only limits how far
a layer can shift or rescale its output, which is not what makes a model overfit.
"""
from ..autograd import Tensor, as_tensor
from .math import abs_, add, mul, sum


def regularized_parameters(params):
    """The parameters R(θ) penalises by default: those with ndim ≥ 2 (weights, kernels,
    embeddings), not biases or LayerNorm/BatchNorm scales (1-D).

    ``params``: a Module (anything with ``parameters()``) or an iterable of Tensors.
    """
    params = params.parameters() if hasattr(params, "parameters") else params
    return [p for p in params if p.ndim >= 2]


def _as_param_list(params, op):
    if hasattr(params, "parameters"):          # a Module: its weights by default
        return regularized_parameters(params)
    if isinstance(params, Tensor):
        return [params]
    params = list(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: params[{i}] is a {type(p).__name__}, expected a Tensor "
                            f"(or pass a Module)")
    return params


def l2_penalty(params):
    """R(θ) = Σ_p Σ θ²  over every tensor p in ``params`` (a list, or a Module's weights);
    ∂R/∂θ = 2θ. A scalar Tensor (0 for an empty list)."""
    params = _as_param_list(params, "l2_penalty")
    if not params:
        return Tensor(0.0)
    return _sum_all([sum(p * p) for p in params])


def l1_penalty(params):
    """R(θ) = Σ_p Σ |θ|;  ∂R/∂θ = sign(θ) (0 at 0). A scalar Tensor (0 for an empty list)."""
    params = _as_param_list(params, "l1_penalty")
    if not params:
        return Tensor(0.0)
    return _sum_all([sum(abs_(p)) for p in params])


def _sum_all(terms):
    total = terms[0]
    for t in terms[1:]:
        total = add(total, t)
    return total


_PENALTIES = {"l2": l2_penalty, "l1": l1_penalty}


def multitask_loss(task_losses, params, lam, reg="l2", weights=None, return_terms=False):
    """L(θ) = Σ_i ℓ_i + λ R(θ): the plain sum of the task losses plus the weighted penalty.

    ``task_losses``: a list of scalar Tensors (named ``"task_0"``, ``"task_1"`` …) or a dict
    name → scalar Tensor. ``params``: the θ of R(θ) — a list of Tensors, or a Module, whose
    :func:`regularized_parameters` (weights, not biases or norm scales) are then used.
    ``lam``: λ ≥ 0. ``reg``: ``"l2"`` (R = Σθ²) or ``"l1"`` (R = Σ|θ|).
    ``weights`` (an extension of the article's formula, default all 1): per-task factors w_i,
    giving Σ w_i ℓ_i + λ R(θ); a list in task order or a dict keyed like ``task_losses``.

    Returns the total, a scalar Tensor. With ``return_terms=True`` returns ``(total, terms)``,
    ``terms`` a dict of scalar Tensors: each task's contribution w_i·ℓ_i under its name, and
    λ·R(θ) under ``"reg"`` — so ``total == sum(terms.values())`` and each can be logged.
    """
    named, w = _check_multitask(task_losses, lam, reg, weights)
    terms = {}
    for (name, loss), w_i in zip(named, w):
        terms[name] = loss if w_i == 1.0 else mul(loss, w_i)       # w_i ℓ_i
    params = _as_param_list(params, "multitask_loss")
    R = _PENALTIES[reg](params) if params else as_tensor(0.0, like=named[0][1].data)
    terms["reg"] = mul(R, float(lam))                               # λ R(θ)
    total = _sum_all(list(terms.values()))                          # Σ_i w_i ℓ_i + λ R(θ)
    return (total, terms) if return_terms else total


def _check_multitask(task_losses, lam, reg, weights):
    """The (name, loss) pairs in task order and their weights w_i, or a clear error."""
    op = "multitask_loss"
    if reg not in _PENALTIES:
        raise ValueError(f"{op}: reg must be 'l2' or 'l1', got {reg!r}")
    if float(lam) < 0:
        raise ValueError(f"{op}: the regularisation weight lam must be >= 0, got {float(lam)}")
    if isinstance(task_losses, dict):
        named = list(task_losses.items())
    elif isinstance(task_losses, Tensor):
        named = [("task_0", task_losses)]
    else:
        named = [(f"task_{i}", loss) for i, loss in enumerate(task_losses)]
    if not named:
        raise ValueError(f"{op}: task_losses is empty; give at least one task loss")
    if "reg" in dict(named):
        raise ValueError(f"{op}: a task may not be named 'reg' (that key holds λ·R(θ))")
    for name, loss in named:
        if not isinstance(loss, Tensor) or loss.size != 1:
            shape = loss.shape if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"{op}: task loss {name!r} must be a scalar Tensor, got {shape}")
    if weights is None:
        return named, [1.0] * len(named)
    if isinstance(weights, dict):
        unknown = set(weights) - {n for n, _ in named}
        if unknown:
            raise ValueError(f"{op}: weights name unknown tasks {sorted(unknown)}")
        return named, [float(weights.get(n, 1.0)) for n, _ in named]
    w = [float(x) for x in weights]
    if len(w) != len(named):
        raise ValueError(f"{op}: {len(w)} weights for {len(named)} task losses")
    return named, w
