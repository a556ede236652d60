"""Mixed precision: float16 compute with float32 masters, and dynamic loss scaling."""
import numpy as np
import pytest

import minimm as mm
from minimm import amp, nn, optim
from minimm import functional as F
from minimm.data.spiral import spiral_data
from minimm.models import MultiModalModel


def _mlp(seed, hidden=32):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(2, hidden, rng=rng), nn.ReLU(), nn.Linear(hidden, 3, rng=rng))


def test_autocast_computes_in_float16_and_returns_float32(rng):
    model = MultiModalModel(20, num_superclasses=2, rng=rng)
    x = mm.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32))
    ids, lengths = rng.integers(2, 20, (2, 5)), np.array([5, 3])
    masters = {n: p for n, p in model.named_parameters()}
    with amp.autocast(model):
        assert model.head.W.dtype == np.float16 and model.head.W is not masters["head.W"]
        logits, super_logits = model(x, ids, lengths)
        assert model.image(mm.tensor(x.data.astype(np.float16))).dtype == np.float16
    # what the layers produced was float16; the cast back to float32 is the last node
    assert logits.dtype == super_logits.dtype == np.float32
    assert logits.creator.inputs[0].dtype == np.float16
    assert dict(model.named_parameters()) == masters and model.head.W is masters["head.W"]
    assert "forward" not in model.__dict__
    F.cross_entropy(logits, np.array([1, 7])).backward()
    grads16 = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    assert all(p.grad.dtype == np.float32 for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    F.cross_entropy(model(x, ids, lengths)[0], np.array([1, 7])).backward()
    # float16 rounding: ~1e-3 relative where no ReLU sits between the loss and the weight.
    # Behind the image branch's ReLUs, a pre-activation within rounding of 0 may change sign,
    # moving a whole gradient entry; measured ≈ 3 % per ReLU layer, 12 % at the first conv.
    for name, g16 in grads16.items():
        g32 = masters[name].grad.numpy()
        tol = 0.2 if name.startswith("image.") else 5e-3
        assert np.linalg.norm(g16 - g32) <= tol * np.linalg.norm(g32), name


def test_autocast_restores_the_model_after_an_exception(rng):
    model = _mlp(0)
    W = model[0].W
    with pytest.raises(ValueError):
        with amp.autocast(model):
            model(mm.tensor(np.zeros((1, 5), np.float32)))     # wrong width: Linear raises
    assert model[0].W is W and "forward" not in model.__dict__


def test_grad_scaler_schedule_step_by_step():
    """Scale 8, growth every 2 clean steps: the scale and whether each step ran, by hand."""
    w = mm.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    opt = optim.SGD([w], lr=1.0)
    scaler = amp.GradScaler(init_scale=8.0, growth_interval=2)
    raw = [1.0, 1.0, 1.0, np.inf, 1.0, np.nan, 1.0, 1.0, 1.0]
    expected_scale = [8, 16, 16, 8, 8, 4, 4, 8, 8]      # after each update()
    expected_taken = [True, True, True, False, True, False, True, True, True]
    for g, scale, taken in zip(raw, expected_scale, expected_taken):
        S = scaler.get_scale()
        before = w.numpy().copy()
        w.grad = mm.tensor(np.array([g * S, 0.5 * S], np.float32))   # a "scaled" gradient
        assert scaler.step(opt) is taken
        if taken:                     # the step used g / S, the true gradient
            np.testing.assert_array_equal(w.numpy(), before - np.array([g, 0.5], np.float32))
        else:                         # skipped: the weights did not move
            np.testing.assert_array_equal(w.numpy(), before)
        scaler.update()
        assert scaler.get_scale() == scale
    assert scaler.skipped_steps == 2 and w.dtype == np.float32


def test_loss_scaling_rescues_gradients_that_float16_flushes_to_zero():
    model = nn.Linear(4, 1, bias=False)
    x = mm.tensor(np.ones((2, 4), np.float32))
    tiny = 1e-8                      # below float16's smallest subnormal, 6e-8

    def grad_with(scaler):
        model.zero_grad()
        with amp.autocast(model):
            y = model(x)
        scaler.scale((y * tiny).sum()).backward()
        opt = optim.SGD(model.parameters(), lr=0.0)
        scaler.step(opt)
        scaler.update()
        return model.W.grad.numpy()

    assert np.all(grad_with(amp.GradScaler(enabled=False)) == 0.0)          # flushed
    np.testing.assert_allclose(grad_with(amp.GradScaler(init_scale=2.0 ** 16)),
                               np.full((4, 1), 2 * tiny), rtol=1e-3)        # rescued


def test_float16_master_weights_would_lose_small_updates():
    assert amp.float16_update_is_lost(1.0, 1e-4)
    assert not amp.float16_update_is_lost(1.0, 1e-3)
    assert np.float32(1.0) + np.float32(1e-4) != np.float32(1.0)


def test_mixed_precision_training_follows_float32_training():
    X, y = spiral_data(n_per_class=60, seed=0)
    X = mm.tensor(X)
    runs = {}
    for mode in ("float32", "mixed"):
        model = _mlp(0)
        opt = optim.Adam(model.parameters(), lr=0.02)
        scaler = amp.GradScaler(init_scale=2.0 ** 10, growth_interval=10)
        losses, scales = [], []
        for _ in range(80):
            if mode == "mixed":
                with amp.autocast(model):
                    logits = model(X)
            else:
                logits = model(X)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            scaler.scale(loss).backward() if mode == "mixed" else loss.backward()
            scaler.step(opt) if mode == "mixed" else opt.step()
            scaler.update() if mode == "mixed" else None
            losses.append(loss.item())
            scales.append(scaler.get_scale())
        runs[mode] = (np.array(losses), model, scales)
    l32, l16 = runs["float32"][0], runs["mixed"][0]
    assert l32[-1] < 0.6 * l32[0]                          # it learned
    assert np.max(np.abs(l16 - l32)) < 2e-3     # and mixed precision followed (1e-4 measured)
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32
               for p in runs["mixed"][1].parameters())
    assert runs["mixed"][2][-1] > 2.0 ** 10                # the scale grew on clean steps


def test_grad_scaler_errors_and_state():
    with pytest.raises(ValueError, match="GradScaler"):
        amp.GradScaler(backoff_factor=1.5)
    with pytest.raises(ValueError, match="growth_interval"):
        amp.GradScaler(growth_interval=0)
    scaler = amp.GradScaler(init_scale=4.0)
    with pytest.raises(RuntimeError, match="GradScaler.update: call step"):
        scaler.update()
    other = amp.GradScaler()
    other.load_state_dict(scaler.state_dict())
    assert other.get_scale() == 4.0
    off = amp.GradScaler(enabled=False)
    loss = mm.tensor(2.0)
    assert off.scale(loss) is loss and off.get_scale() == 1.0
