"""nn.PatchWhitening (the fast records' fixed first layer) and ResNet9's whitened prep block."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn
from minimm.models.resnet import ResNet9
from minimm.nn.whitening import patch_matrix


def _correlated_images(n=40, seed=0):
    """Images whose pixels are correlated across neighbours and colours (a blurred, mixed
    noise), so that the patch covariance is far from the identity."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3, 14, 14))
    z = (z[:, :, 1:, 1:] + z[:, :, :-1, 1:] + z[:, :, 1:, :-1] + 2 * z[:, :, :-1, :-1]) / 5
    mix = np.array([[1.0, 0.5, 0.2], [0.3, 1.0, 0.4], [0.1, 0.6, 1.0]])
    return np.einsum("dc,nchw->ndhw", mix, z) + np.array([0.5, -0.2, 0.1])[:, None, None]


def test_patch_matrix_is_the_patches_written_out():
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float64).reshape(2, 3, 5, 4)
    P = patch_matrix(x, 3)
    rows = []
    for n in range(2):                         # the oracle: one patch at a time
        for p in range(3):
            for q in range(2):
                rows.append(x[n, :, p:p + 3, q:q + 3].reshape(-1))
    np.testing.assert_array_equal(P, np.array(rows))


def test_fit_makes_the_patch_covariance_the_identity():
    x = _correlated_images()
    white = nn.PatchWhitening(3, 3, eps=1e-6)
    lam = white.fit(x)
    P = patch_matrix(x, 3)
    sigma = np.cov(P, rowvar=False)                           # independent: numpy's cov
    want = np.linalg.eigvalsh(sigma)[::-1]
    np.testing.assert_allclose(lam, want, rtol=1e-6, atol=1e-10)
    assert lam[0] / lam[-1] > 50                              # the input is badly conditioned
    W = white.W.reshape(27, 27).astype(np.float64)
    np.testing.assert_allclose(W @ sigma @ W.T, np.diag(lam / (lam + 1e-6)), atol=2e-5)
    # the layer is that linear map on every interior patch (padding 1 keeps the size)
    y = white(mm.tensor(x.astype(np.float32))).numpy()
    assert y.shape == (40, 27, 13, 13) and y.dtype == np.float32
    interior = y[:, :, 1:-1, 1:-1].transpose(0, 2, 3, 1).reshape(-1, 27)
    np.testing.assert_allclose(interior, P @ W.T, rtol=1e-4, atol=1e-3)


def test_the_filters_are_a_buffer_saved_and_never_trained():
    white = nn.PatchWhitening()
    white.fit(_correlated_images(8))
    assert list(white.parameters()) == [] and "W" in white.state_dict()
    fresh = nn.PatchWhitening()
    fresh.load_state_dict(white.state_dict())
    np.testing.assert_array_equal(fresh.W, white.W)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    w64 = white.W.astype(np.float64)
    mm.gradcheck(lambda t: F.conv2d(t, mm.Tensor(w64), None, 1, 1), [x])
    mm.gradcheck(lambda t: white(t), [x])


def test_fit_refuses_what_it_cannot_whiten():
    white = nn.PatchWhitening(3, 3)
    with pytest.raises(ValueError, match=r"PatchWhitening.fit: expected images \(N, 3, H, W\) "
                                         r"with H, W >= 3, got shape \(2, 1, 8, 8\)"):
        white.fit(np.zeros((2, 1, 8, 8)))
    with pytest.raises(TypeError, match="normalised floating-point images, got uint8"):
        white.fit(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="eps > 0"):
        nn.PatchWhitening(eps=0)


def test_resnet9_whitened_prep_block():
    rng = np.random.default_rng(2)
    model = ResNet9(widths=(4, 4, 8, 8), rng=rng, whiten=True)
    images = _correlated_images(8, seed=3).astype(np.float32)
    images = np.pad(images, ((0, 0), (0, 0), (10, 9), (10, 9)), mode="reflect")   # 32×32
    model.prep[0].fit(images)
    assert isinstance(model.prep[0], nn.PatchWhitening) and model.prep[1].kernel_size == (1, 1)
    assert "prep.0.W" in model.state_dict()
    assert not any(n.startswith("prep.0") for n, _ in model.named_parameters())
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    loss = F.cross_entropy(model(mm.Tensor(images)), labels)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == np.float32 for p in model.parameters())
    again = ResNet9.from_config(model.config())
    assert model.config()["whiten"] is True and again.whiten
    again.load_state_dict(model.state_dict())
    model.eval()
    again.eval()
    with mm.no_grad():
        np.testing.assert_array_equal(again(mm.Tensor(images)).numpy(),
                                      model(mm.Tensor(images)).numpy())
    assert ResNet9.from_config({"num_classes": 10, "widths": "4,4,8,8"}).whiten is False
