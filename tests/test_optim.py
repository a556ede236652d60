"""Optimisers, schedules and gradient clipping against hand-written NumPy updates (and
against torch.optim where PyTorch is installed)."""
import math

import numpy as np
import pytest

import minimm as mm
from minimm import nn, optim

SHAPES = [(3, 4), (5,)]


def _setup(device, rng, dtype=np.float32, steps=3):
    """Parameters on ``device`` and a fixed gradient sequence per parameter (NumPy)."""
    theta0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    params = [mm.tensor(t.copy(), requires_grad=True, device=device) for t in theta0]
    return theta0, grads, params


def _run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = mm.tensor(g, device=p.device)
        opt.step()


# -- hand-computed oracles: PyTorch's documented update rules, in float64 NumPy ---------------
def _sgd_oracle(theta, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    theta, b = theta.astype(np.float64), None
    for g in grads:
        g = g + weight_decay * theta
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        theta = theta - lr * g
    return theta


def _adam_oracle(theta, grads, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False):
    theta = theta.astype(np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            theta = theta * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1),
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_hand_computed_updates(device, rng, kw):
    theta0, grads, params = _setup(device, rng)
    _run(optim.SGD(params, **kw), params, grads)
    for i, p in enumerate(params):
        want = _sgd_oracle(theta0[i], [g[i] for g in grads], **kw)
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-5, atol=1e-6)


def test_sgd_first_steps_written_out(device):
    """Two momentum steps by hand: b₁ = g₁, θ₁ = θ₀ − ηb₁; b₂ = μb₁ + g₂, θ₂ = θ₁ − ηb₂."""
    p = mm.tensor(np.array([1.0, -2.0], np.float32), requires_grad=True, device=device)
    opt = optim.SGD([p], lr=0.5, momentum=0.5)
    p.grad = mm.tensor(np.array([0.2, 0.4], np.float32), device=device)
    opt.step()
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.1, -2.0 - 0.2], rtol=1e-6)
    p.grad = mm.tensor(np.array([1.0, 0.0], np.float32), device=device)
    opt.step()   # b₂ = (0.1 + 1, 0.2 + 0) -> θ₂ = θ₁ − 0.5 b₂
    np.testing.assert_allclose(p.numpy(), [0.9 - 0.55, -2.2 - 0.1], rtol=1e-6)


ADAM_CASES = [
    (optim.Adam, dict(lr=0.01)),
    (optim.Adam, dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6)),
    (optim.Adam, dict(lr=0.01, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.01)),
    (optim.AdamW, dict(lr=0.05, weight_decay=0.3, betas=(0.5, 0.9))),
]


@pytest.mark.parametrize("cls,kw", ADAM_CASES,
                         ids=lambda c: c.__name__ if isinstance(c, type) else str(c))
def test_adam_family_matches_hand_computed_updates(device, rng, cls, kw):
    theta0, grads, params = _setup(device, rng)
    opt = cls(params, **kw)
    _run(opt, params, grads)
    full = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01 if cls is optim.AdamW else 0.0)
    full.update(kw)
    for i, p in enumerate(params):
        want = _adam_oracle(theta0[i], [g[i] for g in grads], full["lr"], *full["betas"],
                            full["eps"], full["weight_decay"], decoupled=cls is optim.AdamW)
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-5, atol=1e-6)
    assert opt.state[0]["step"] == len(grads)


def test_adam_first_step_is_lr_times_sign(device):
    """With bias correction the first step is η·g/(|g| + ε) ≈ η·sign(g) whatever |g| is."""
    p = mm.tensor(np.zeros(3, np.float32), requires_grad=True, device=device)
    opt = optim.Adam([p], lr=0.01)
    p.grad = mm.tensor(np.array([1e-3, -5.0, 2e2], np.float32), device=device)
    opt.step()
    np.testing.assert_allclose(p.numpy(), [-0.01, 0.01, -0.01], rtol=1e-4)


@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01,
                                                      nesterov=True)),
                                     (optim.Adam, dict(lr=0.01, weight_decay=0.01)),
                                     (optim.AdamW, dict(lr=0.01))])
def test_float32_is_kept_in_parameters_and_state(device, rng, cls, kw):
    theta0, grads, params = _setup(device, rng)
    opt = cls(params, **kw)
    _run(opt, params, grads)
    for i, p in enumerate(params):
        assert p.dtype == np.float32
        for value in opt.state[i].values():
            if hasattr(value, "dtype"):
                assert value.dtype == np.float32
                assert mm.backend.device_of(value) == device


def test_float64_parameters_stay_float64(device, rng):
    theta0, grads, params = _setup(device, rng, dtype=np.float64)
    opt = optim.Adam(params, lr=0.01)
    _run(opt, params, grads)
    assert all(p.dtype == np.float64 for p in params)
    assert opt.state[0]["exp_avg"].dtype == np.float64


def test_parameters_without_grad_are_skipped(device, rng):
    theta0, grads, params = _setup(device, rng)
    opt = optim.Adam(params, lr=0.1)
    params[0].grad = mm.tensor(grads[0][0], device=device)
    opt.step()
    np.testing.assert_array_equal(params[1].numpy(), theta0[1])
    assert 1 not in opt.state or not opt.state[1]
    assert not np.array_equal(params[0].numpy(), theta0[0])


def test_zero_grad_and_module_parameters(device):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(np.ones((2, 2), np.float32))

    model = Tiny().to(device)
    opt = optim.SGD(model, lr=0.1)          # a Module is accepted in place of its parameters
    assert opt.params == model.parameters()
    model.W.grad = mm.tensor(np.ones((2, 2), np.float32), device=device)
    opt.zero_grad()
    assert model.W.grad is None


def test_lr_is_mutable_and_used(device):
    p = mm.tensor(np.zeros(2, np.float32), requires_grad=True, device=device)
    opt = optim.SGD([p], lr=1.0)
    opt.lr = 0.25
    p.grad = mm.tensor(np.ones(2, np.float32), device=device)
    opt.step()
    np.testing.assert_allclose(p.numpy(), [-0.25, -0.25])


def test_bad_arguments_raise_clear_errors(device):
    p = mm.tensor(np.zeros(2, np.float32), requires_grad=True, device=device)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[0\] is a ndarray"):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="invalid lr -1"):
        optim.Adam([p], lr=-1)
    with pytest.raises(ValueError, match="invalid beta2 1.0"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov momentum needs momentum > 0"):
        optim.SGD([p], lr=0.1, nesterov=True)
    p.grad = mm.tensor(np.zeros(3, np.float32), device=device)
    with pytest.raises(ValueError, match=r"parameter 0 has shape \(2,\) but its grad has shape \(3,\)"):
        optim.SGD([p], lr=0.1).step()


# -- state_dict / load_state_dict --------------------------------------------------------------
@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                     (optim.Adam, dict(lr=0.01)), (optim.AdamW, dict(lr=0.01))])
def test_optimizer_state_dict_resumes_exactly(device, rng, cls, kw):
    theta0, grads, params = _setup(device, rng, steps=4)
    opt = cls(params, **kw)
    _run(opt, params, grads)
    want = [p.numpy().copy() for p in params]

    params2 = [mm.tensor(t.copy(), requires_grad=True, device=device) for t in theta0]
    opt2 = cls(params2, **kw)
    _run(opt2, params2, grads[:2])
    saved = opt2.state_dict()
    params3 = [mm.tensor(p.numpy().copy(), requires_grad=True, device=device) for p in params2]
    opt3 = cls(params3, lr=123.0)             # lr and buffers come from the state dict
    opt3.load_state_dict(saved)
    assert opt3.lr == kw["lr"]
    _run(opt3, params3, grads[2:])
    for p, w in zip(params3, want):
        np.testing.assert_array_equal(p.numpy(), w)


def test_load_state_dict_shape_mismatch(device, rng):
    theta0, grads, params = _setup(device, rng)
    opt = optim.Adam(params, lr=0.01)
    _run(opt, params, grads[:1])
    state = opt.state_dict()
    other = optim.Adam([mm.tensor(np.zeros(s, np.float32), device=device)
                        for s in ((4, 4), (5,))], lr=0.01)
    with pytest.raises(ValueError, match=r"exp_avg' of parameter 0 has shape \(3, 4\) .* "
                                         r"parameter has shape \(4, 4\)"):
        other.load_state_dict(state)


# -- against PyTorch, where it is installed ---------------------------------------------------
TORCH_CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.05)),
    ("AdamW", dict(lr=0.01, weight_decay=0.2)),
]


@pytest.mark.parametrize("name,kw", TORCH_CASES, ids=[c[0] + str(i) for i, c in enumerate(TORCH_CASES)])
def test_against_torch_optim(device, rng, name, kw):
    torch = pytest.importorskip("torch")
    theta0, grads, params = _setup(device, rng, steps=5)
    _run(getattr(optim, name)(params, **kw), params, grads)
    tparams = [torch.tensor(t.copy(), requires_grad=True) for t in theta0]
    topt = getattr(torch.optim, name)(tparams, **kw)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-6, atol=1e-7)


# -- schedules -------------------------------------------------------------------------------
def _lrs(sched, n):
    out = [sched.get_last_lr()[0]]          # one rate per parameter group, as PyTorch
    for _ in range(n):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def _opt(device, lr):
    return optim.SGD([mm.tensor(np.zeros(1, np.float32), requires_grad=True, device=device)], lr=lr)


def test_step_lr_closed_form(device):
    got = _lrs(optim.StepLR(_opt(device, 0.1), step_size=3, gamma=0.5), 9)
    want = [0.1 * 0.5 ** (t // 3) for t in range(10)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_cosine_closed_form(device):
    got = _lrs(optim.CosineAnnealingLR(_opt(device, 0.2), T_max=8, eta_min=0.01), 8)
    want = [0.01 + (0.2 - 0.01) * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(9)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[-1] == pytest.approx(0.01)


def test_one_cycle_closed_form(device):
    max_lr, total = 0.5, 20
    got = _lrs(optim.OneCycleLR(_opt(device, 1.0), max_lr=max_lr, total_steps=total), total - 1)
    lo, hi = max_lr / 25, max_lr
    end = lo / 1e4
    up = 0.3 * total - 1                              # the last step of the warm-up phase
    want = []
    for t in range(total):
        if t <= up:
            pct, a, b = t / up, lo, hi
        else:
            pct, a, b = (t - up) / (total - 1 - up), hi, end
        want.append(b + (a - b) / 2 * (math.cos(math.pi * pct) + 1))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(max_lr / 25) and max(got) == pytest.approx(max_lr)
    assert got[-1] == pytest.approx(max_lr / 25 / 1e4)
    with pytest.raises(ValueError, match="past total_steps=20"):
        sched = optim.OneCycleLR(_opt(device, 1.0), max_lr=max_lr, total_steps=total)
        for _ in range(total + 1):
            sched.step()


def test_schedules_against_torch(device):
    torch = pytest.importorskip("torch")

    def torch_lrs(make, lr, n):
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched = make(topt)
        out = [sched.get_last_lr()[0]]
        for _ in range(n):
            topt.step()
            sched.step()
            out.append(sched.get_last_lr()[0])
        return out

    S = torch.optim.lr_scheduler
    np.testing.assert_allclose(_lrs(optim.StepLR(_opt(device, 0.1), 2, 0.3), 7),
                               torch_lrs(lambda o: S.StepLR(o, 2, 0.3), 0.1, 7), rtol=1e-12)
    np.testing.assert_allclose(_lrs(optim.CosineAnnealingLR(_opt(device, 0.1), 6, 0.001), 6),
                               torch_lrs(lambda o: S.CosineAnnealingLR(o, 6, 0.001), 0.1, 6),
                               rtol=1e-9)
    np.testing.assert_allclose(
        _lrs(optim.OneCycleLR(_opt(device, 0.1), 0.3, 15, pct_start=0.4), 14),
        torch_lrs(lambda o: S.OneCycleLR(o, 0.3, total_steps=15, pct_start=0.4,
                                         cycle_momentum=False), 0.1, 14), rtol=1e-12)


def test_scheduler_state_dict_roundtrip(device):
    sched = optim.CosineAnnealingLR(_opt(device, 0.1), T_max=10)
    _lrs(sched, 4)
    state = sched.state_dict()
    sched2 = optim.CosineAnnealingLR(_opt(device, 0.1), T_max=10)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert _lrs(sched2, 3) == _lrs(sched, 3)


# -- gradient clipping -----------------------------------------------------------------------
def _with_grads(device, grads):
    params = [mm.tensor(np.zeros_like(g), requires_grad=True, device=device) for g in grads]
    for p, g in zip(params, grads):
        p.grad = mm.tensor(g, device=device)
    return params


def test_clip_grad_norm_scales_to_max_norm(device, rng):
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), ()]]
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    params = _with_grads(device, grads)
    got = optim.clip_grad_norm_(params, max_norm=0.5)
    assert got == pytest.approx(total, rel=1e-6)
    coef = 0.5 / (total + 1e-6)
    for p, g in zip(params, grads):
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-6)
    new_total = math.sqrt(sum(float((p.grad.numpy().astype(np.float64) ** 2).sum()) for p in params))
    assert new_total == pytest.approx(0.5, rel=1e-5)


def test_clip_grad_norm_leaves_small_gradients(device):
    g = np.array([0.3, 0.4], np.float32)                 # ‖g‖ = 0.5
    params = _with_grads(device, [g])
    params.append(mm.tensor(np.zeros(2, np.float32), requires_grad=True, device=device))  # no grad
    assert optim.clip_grad_norm_(params, 1.0) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_array_equal(params[0].grad.numpy(), g)
    assert params[1].grad is None


def test_clip_grad_norm_inf_and_shared_gradient(device):
    g = np.array([3.0, -4.0], np.float32)
    a, b = _with_grads(device, [g, g])
    b.grad = a.grad                                     # one gradient Tensor, two parameters
    assert optim.clip_grad_norm_([a, b], 1.0, norm_type=math.inf) == pytest.approx(4.0)
    np.testing.assert_allclose(a.grad.numpy(), g / 4.0, rtol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), g / 4.0, rtol=1e-6)   # not scaled twice
    assert mm.optim.clip_grad_norm_ is optim.clip_grad_norm_


def test_clip_grad_norm_against_torch(device, rng):
    torch = pytest.importorskip("torch")
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (7,)]]
    params = _with_grads(device, grads)
    tparams = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for p, g in zip(tparams, grads):
        p.grad = torch.tensor(g)
    want = float(torch.nn.utils.clip_grad_norm_(tparams, 0.7))
    assert optim.clip_grad_norm_(params, 0.7) == pytest.approx(want, rel=1e-6)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)
