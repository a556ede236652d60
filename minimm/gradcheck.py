"""Numerical gradient checks: does every backward agree with central finite differences?

For a function f with outputs y and a random upstream gradient ḡ, the scalar
φ(x) = Σ ⟨yₖ(x), ḡₖ⟩ has the gradient that backward computes, ∂φ/∂x = Jᵀḡ. A central difference
(φ(x + εe) − φ(x − εe)) / 2ε estimates it with error O(ε²), which float64 makes small
enough to trust; in float32 the rounding error of φ, divided by ε, would swamp it.

Two modes: ``"exhaustive"`` perturbs every element (eᵢ the unit vectors, small inputs) and
``"random"`` compares directional derivatives ⟨∂φ/∂x, d⟩ along a few random unit directions d
(cheap for big inputs). ``"auto"`` picks exhaustive up to ``max_exhaustive`` elements.
"""
import numpy as np

from . import backend
from .autograd import Tensor, enable_grad, grad, no_grad


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` with a report of the worst disagreement."""


def _phi(outputs, gys):
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return float(sum((backend.to_numpy(y.data).astype(np.float64) * g).sum()
                     for y, g in zip(outputs, gys) if y is not None))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, mode="auto", n_directions=8,
              max_exhaustive=512, seed=0, raise_exception=True):
    """Check ``fn``'s analytic gradients against central differences.

    ``inputs``: arrays or Tensors; floating ones are checked (they should be float64),
    integer ones (labels, ids) are passed through. ``fn(*tensors)`` returns a Tensor or a
    tuple of Tensors. Returns True; on failure raises :class:`GradcheckError` naming the
    input, the worst index, both values and the max abs/rel errors (or returns False when
    ``raise_exception=False``). Gradient shapes and dtypes are asserted too.
    """
    rng = np.random.default_rng(seed)
    xs = [x if isinstance(x, Tensor) else Tensor(x) for x in inputs]
    xs = [Tensor(x.data.copy(), requires_grad=x.dtype.kind == "f") for x in xs]
    checked = [i for i, x in enumerate(xs) if x.requires_grad]
    for i in checked:
        if xs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {xs[i].dtype}; finite differences need "
                            f"float64 (float32 rounding error / eps would swamp them)")

    outputs = fn(*xs)
    outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    gys = [rng.standard_normal(y.shape) if y is not None else None for y in outs]
    pairs = [(y, g) for y, g in zip(outs, gys) if y is not None and y.requires_grad]
    xp = backend.get_array_module(*xs)
    # no output in the graph: the analytic gradient is zero (a constant first derivative)
    analytic = (grad([y for y, _ in pairs], [xs[i] for i in checked],
                     [xp.asarray(g, dtype=y.dtype) for y, g in pairs])
                if pairs else [None] * len(checked))

    def phi():
        with no_grad():
            return _phi(fn(*xs), gys)

    report = []
    for i, g in zip(checked, analytic):
        x = xs[i]
        if g is None:
            g = np.zeros(x.shape)
        else:
            if g.shape != x.shape or g.dtype != x.dtype:
                raise GradcheckError(f"gradcheck: gradient of input {i} has shape {g.shape} and "
                                     f"dtype {g.dtype}, expected {x.shape} and {x.dtype}")
            g = backend.to_numpy(g.data)
        exhaustive = mode == "exhaustive" or (mode == "auto" and x.size <= max_exhaustive)
        directions = (np.eye(x.size) if exhaustive else
                      rng.standard_normal((n_directions, x.size)))
        if not exhaustive:
            directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        original = x.data.copy()
        numeric = []
        for d in directions:
            step = xp.asarray(eps * d.reshape(x.shape))
            x.data = original + step
            f_plus = phi()
            x.data = original - step
            f_minus = phi()
            numeric.append((f_plus - f_minus) / (2 * eps))
        x.data = original
        numeric = np.array(numeric)
        expected = directions @ g.ravel()
        err = np.abs(expected - numeric)
        bad = err > atol + rtol * np.abs(numeric)
        if bad.any():
            k = int(np.argmax(err - (atol + rtol * np.abs(numeric))))
            where = (f"index {tuple(int(j) for j in np.unravel_index(k, x.shape))}" if exhaustive
                     else f"random direction {k}")
            rel = err / np.maximum(np.abs(numeric), 1e-12)
            report.append(
                f"input {i} (shape {x.shape}): {int(bad.sum())} of {len(err)} "
                f"{'elements' if exhaustive else 'directions'} disagree; max abs error "
                f"{err.max():.3e}, max rel error {rel.max():.3e}; worst at {where}: "
                f"analytic {expected[k]:.6e}, numeric {numeric[k]:.6e}")
    if report:
        if raise_exception:
            raise GradcheckError("gradcheck failed:\n  " + "\n  ".join(report))
        return False
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, **kwargs):
    """Check second derivatives: gradcheck of x ↦ ∂⟨fn(x), ḡ⟩/∂x built with ``create_graph``."""
    rng = np.random.default_rng(seed + 1)
    fixed = {}

    def first_derivative(*xs):
        with enable_grad():  # gradcheck evaluates us under no_grad, but we need a graph
            return _first_derivative(*xs)

    def _first_derivative(*xs):
        outputs = fn(*xs)
        outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        outs = [y for y in outs if y is not None and y.requires_grad]
        if "gys" not in fixed:  # one upstream gradient for every evaluation
            fixed["gys"] = [rng.standard_normal(y.shape) for y in outs]
        xp = backend.get_array_module(*xs)
        wrt = [x for x in xs if x.requires_grad]
        gs = grad(outs, wrt, [xp.asarray(g, dtype=y.dtype) for y, g in zip(outs, fixed["gys"])],
                  create_graph=True)
        return tuple(g if g is not None else Tensor(xp.zeros(x.shape, x.dtype))
                     for g, x in zip(gs, wrt))

    return gradcheck(first_derivative, inputs, eps=eps, atol=atol, rtol=rtol, seed=seed, **kwargs)
