"""The multi-task loss, formula (3): L(θ) = Σ_{i=1..N} ℓ(y_i, ŷ_i) + λ R(θ)."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn


def _scalar(value, device, dtype=np.float64):
    return mm.tensor(np.array(value, dtype=dtype), device=device)


@pytest.mark.parametrize("reg", ["l2", "l1"])
def test_forward_matches_formula(device, rng, reg):
    losses = [0.7, 1.9, 0.05]
    thetas = [rng.standard_normal((3, 4)), rng.standard_normal(5), rng.standard_normal((2, 2, 3))]
    lam = 0.3
    total = F.multitask_loss([_scalar(v, device) for v in losses],
                             [mm.tensor(t, device=device) for t in thetas], lam, reg=reg)
    R = (sum(float(np.sum(t ** 2)) for t in thetas) if reg == "l2"
         else sum(float(np.sum(np.abs(t))) for t in thetas))
    assert total.shape == () or total.size == 1
    np.testing.assert_allclose(float(mm.to_numpy(total)), sum(losses) + lam * R, rtol=1e-12)


def test_penalties_match_numpy(device, rng):
    thetas = [rng.standard_normal((3, 4)), rng.standard_normal(7)]
    ts = [mm.tensor(t, device=device) for t in thetas]
    np.testing.assert_allclose(float(mm.to_numpy(F.l2_penalty(ts))),
                               sum(float((t * t).sum()) for t in thetas), rtol=1e-12)
    np.testing.assert_allclose(float(mm.to_numpy(F.l1_penalty(ts))),
                               sum(float(np.abs(t).sum()) for t in thetas), rtol=1e-12)
    assert float(mm.to_numpy(F.l2_penalty([]))) == 0.0


def test_terms_add_up_to_total_and_are_named(device, rng):
    theta = mm.tensor(rng.standard_normal((4, 3)), device=device)
    losses = {"label": _scalar(1.25, device), "animal_vs_vehicle": _scalar(0.5, device)}
    total, terms = F.multitask_loss(losses, [theta], lam=0.01, return_terms=True)
    assert list(terms) == ["label", "animal_vs_vehicle", "reg"]
    np.testing.assert_allclose(float(total.item()), sum(float(t.item()) for t in terms.values()),
                               rtol=1e-15)
    R = float((mm.to_numpy(theta) ** 2).sum())
    np.testing.assert_allclose(terms["reg"].item(), 0.01 * R, rtol=1e-12)   # λ·R(θ)
    assert terms["label"].item() == 1.25

    _, terms = F.multitask_loss([_scalar(1.0, device), _scalar(2.0, device)], [theta], 0.0,
                                return_terms=True)
    assert list(terms) == ["task_0", "task_1", "reg"] and terms["reg"].item() == 0.0


def test_task_weights_extension(device, rng):
    theta = mm.tensor(rng.standard_normal(6), device=device)
    l0, l1 = _scalar(2.0, device), _scalar(3.0, device)
    R = float((mm.to_numpy(theta) ** 2).sum())
    total, terms = F.multitask_loss([l0, l1], [theta], 0.5, weights=[0.25, 2.0],
                                    return_terms=True)
    np.testing.assert_allclose(total.item(), 0.25 * 2.0 + 2.0 * 3.0 + 0.5 * R, rtol=1e-12)
    np.testing.assert_allclose(terms["task_1"].item(), 6.0)
    total = F.multitask_loss({"a": l0, "b": l1}, [theta], 0.5, weights={"b": 0.0})
    np.testing.assert_allclose(total.item(), 2.0 + 0.5 * R, rtol=1e-12)


@pytest.mark.parametrize("reg", ["l2", "l1"])
def test_gradient_is_task_gradients_plus_penalty_gradient(device, rng, reg):
    # ∂L/∂θ = Σ ∂ℓ_i/∂θ + λ·2θ (L2) or λ·sign θ (L1)
    x = rng.standard_normal((5, 3))
    W = mm.tensor(rng.standard_normal((3, 2)), device=device, requires_grad=True)
    xt = mm.tensor(x, device=device)
    lam = 0.2
    F.multitask_loss([(xt @ W).sum(), ((xt @ W) * 2.0).sum()], [W], lam, reg=reg).backward()
    task_grad = 3.0 * x.sum(0)[:, None] * np.ones((1, 2))
    w = mm.to_numpy(W)
    expected = task_grad + (lam * 2 * w if reg == "l2" else lam * np.sign(w))
    np.testing.assert_allclose(mm.to_numpy(W.grad), expected, rtol=1e-12)


@pytest.mark.parametrize("reg", ["l2", "l1"])
def test_gradcheck(xp, rng, reg):
    x = xp.asarray(rng.standard_normal((4, 3)))
    labels = xp.asarray(np.array([0, 1, 1, 0]))

    def f(W1, W2, b):
        ce = F.cross_entropy(x @ W1 + b, labels)
        mse = ((x @ W2) ** 2).mean()
        return F.multitask_loss([ce, mse], [W1, W2], 0.1, reg=reg)

    params = [xp.asarray(rng.standard_normal(s)) for s in ((3, 2), (3, 1), (2,))]
    assert mm.gradcheck(f, params)
    assert mm.gradgradcheck(f, params)


def test_default_regularised_parameters_are_weights_not_biases_or_norm_scales(device, rng):
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2)).to(device)
    chosen = F.regularized_parameters(model)
    assert [p.shape for p in chosen] == [(4, 8), (8, 2)]
    assert chosen[0] is model[0].W and chosen[1] is model[3].W
    loss = _scalar(1.0, device, np.float32)
    by_module = F.multitask_loss([loss], model, 0.5)
    by_list = F.multitask_loss([loss], [model[0].W, model[3].W], 0.5)
    everything = F.multitask_loss([loss], model.parameters(), 0.5)
    np.testing.assert_allclose(by_module.item(), by_list.item(), rtol=1e-6)
    assert everything.item() > by_module.item()      # the biases and LayerNorm weight count there


def test_float32_stays_float32(device, rng):
    W = mm.tensor(rng.standard_normal((3, 3)).astype(np.float32), device=device,
                  requires_grad=True)
    loss = (W * W).mean()
    total = F.multitask_loss([loss, loss], [W], 1e-3)
    assert total.dtype == np.float32
    total.backward()
    assert W.grad.dtype == np.float32


def test_errors(device):
    loss = _scalar(1.0, device)
    theta = [mm.tensor(np.ones(3), device=device)]
    with pytest.raises(ValueError, match=r"multitask_loss: reg must be 'l2' or 'l1', got 'l3'"):
        F.multitask_loss([loss], theta, 0.1, reg="l3")
    with pytest.raises(ValueError, match=r"lam must be >= 0, got -0.1"):
        F.multitask_loss([loss], theta, -0.1)
    with pytest.raises(ValueError, match=r"task loss 'task_1' must be a scalar Tensor, got \(2,\)"):
        F.multitask_loss([loss, mm.tensor(np.ones(2), device=device)], theta, 0.1)
    with pytest.raises(ValueError, match=r"task_losses is empty"):
        F.multitask_loss([], theta, 0.1)
    with pytest.raises(ValueError, match=r"2 weights for 1 task losses"):
        F.multitask_loss([loss], theta, 0.1, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"may not be named 'reg'"):
        F.multitask_loss({"reg": loss}, theta, 0.1)
    with pytest.raises(TypeError, match=r"params\[0\] is a ndarray, expected a Tensor"):
        F.multitask_loss([loss], [np.ones(3)], 0.1)
