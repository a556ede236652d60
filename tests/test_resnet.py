"""minimm.models.resnet: the recipe's ResNet9, its shapes, float32, config round trip and
the same numbers on the fast kernels."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F
from minimm.models.resnet import ResNet9, forward_flops
from minimm.nn import fast


def test_resnet9_shapes_float32_and_config(device):
    model = ResNet9(widths=(4, 8, 8, 16), rng=np.random.default_rng(0)).to(device)
    x = mm.tensor(np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32),
                  device=device)
    logits = model(x)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    F.cross_entropy(logits, mm.tensor(np.array([1, 2]), device=device).data).backward()
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())
    again = ResNet9.from_config(model.config())
    assert again.config() == model.config()
    assert set(again.state_dict()) == set(model.state_dict())
    with pytest.raises(ValueError, match=r"ResNet9: expected images \(B, 3, 32, 32\)"):
        model(mm.tensor(np.zeros((2, 3, 28, 28), np.float32), device=device))


def test_resnet9_flops_count_the_convolutions():
    w = (32, 64, 128, 256)
    conv = lambda hw, a, b: 2 * hw * hw * a * b * 9  # noqa: E731
    assert forward_flops(w) == (conv(32, 3, 32) + conv(32, 32, 64) + 2 * conv(16, 64, 64)
                                + conv(16, 64, 128) + conv(8, 128, 256) + 2 * conv(4, 256, 256)
                                + 2 * 256 * 10)
    whitened = forward_flops(w, whiten=True) - forward_flops(w)
    assert whitened == 2 * 1024 * (3 * 27 * 9 + 27 * 32) - conv(32, 3, 32)


def test_resnet9_on_fast_kernels_matches_the_readable_kernels(device, monkeypatch):
    monkeypatch.setattr(fast, "MIN_CHWN_BATCH", 0)     # the CHWN kernels for 3 images too
    rng = np.random.default_rng(2)
    x = mm.tensor(rng.standard_normal((3, 3, 32, 32)).astype(np.float32), device=device)
    labels = mm.tensor(rng.integers(0, 10, 3), device=device).data
    results = []
    for enabled in (False, True):
        model = ResNet9(widths=(4, 8, 8, 16), rng=np.random.default_rng(3)).to(device)
        if enabled:
            fast.enable_fast_kernels()
        try:
            loss = F.cross_entropy(model(x), labels)
            loss.backward()
            results.append((loss.item(), [p.grad.numpy() for p in model.parameters()],
                            [mm.to_numpy(b) for b in model.state_dict().values()]))
        finally:
            fast.disable_fast_kernels()
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
    for got, want in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-4 * max(1, np.abs(want).max()))
    for got, want in zip(results[1][2], results[0][2]):    # running statistics too
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
