"""nn.PatchEmbedding: patches as words (ViT), against a strided convolution, a plain-NumPy
transcription and torch where installed; float64 gradient checks."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn

# (N, C, H, W, patch_size, d_model): square, non-square, batch 1, one channel, 1×1 patches
SHAPES = [(2, 3, 8, 8, 4, 5), (1, 3, 4, 6, 2, 7), (3, 1, 6, 9, 3, 4), (1, 2, 3, 3, 1, 3)]


def _numpy_patch_embedding(x, W, b, p):
    """z[n, r·(W/p) + c, :] = Σ_{ch, i, j} x[n, ch, r p + i, c p + j] W[(ch, i, j), :] + b,
    written as an explicit loop over the (few) patch positions."""
    N, C, H, Wd = x.shape
    rows, cols = H // p, Wd // p
    z = np.zeros((N, rows * cols, W.shape[1]))
    for r in range(rows):
        for c in range(cols):
            patch = x[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(N, -1)
            z[:, r * cols + c] = patch @ W + b
    return z


def _with_params(module, W, b):
    """module's forward with W and b replaced by the given Tensors (for gradcheck)."""
    def f(x, W_, b_):
        saved = module.W, module.b
        object.__setattr__(module, "W", W_)
        object.__setattr__(module, "b", b_)
        try:
            return module(x)
        finally:
            object.__setattr__(module, "W", saved[0])
            object.__setattr__(module, "b", saved[1])
    return f


@pytest.mark.parametrize("N,C,H,W,p,d", SHAPES)
def test_patch_embedding_equals_strided_convolution(device, xp, N, C, H, W, p, d):
    rng = np.random.default_rng(N * 100 + H)
    pe = nn.PatchEmbedding(p, C, d, rng=rng).to(device)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    z = pe(mm.tensor(x, device=device))
    L = (H // p) * (W // p)
    assert z.shape == (N, L, d) and z.dtype == np.float32 and pe.num_patches(H, W) == L
    W_, b_ = mm.to_numpy(pe.W), mm.to_numpy(pe.b)
    # the kernel of the equivalent convolution: Wᵀ reshaped to (d_model, C, p, p)
    kernel = mm.tensor(W_.T.reshape(d, C, p, p), device=device)
    conv = F.conv2d(mm.tensor(x, device=device), kernel, pe.b, stride=p)   # (N, d, H/p, W/p)
    tokens = mm.to_numpy(conv).reshape(N, d, L).transpose(0, 2, 1)           # row-major grid
    np.testing.assert_allclose(mm.to_numpy(z), tokens, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mm.to_numpy(z), _numpy_patch_embedding(
        x.astype(np.float64), W_, b_, p), rtol=1e-5, atol=1e-5)


def test_patch_embedding_against_torch_conv2d(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    pe = nn.PatchEmbedding(4, 3, 6, rng=rng).to(device)
    x = rng.standard_normal((2, 3, 8, 12)).astype(np.float32)
    kernel = torch.tensor(mm.to_numpy(pe.W).T.reshape(6, 3, 4, 4).copy())
    want = torch.nn.functional.conv2d(torch.tensor(x), kernel, torch.tensor(mm.to_numpy(pe.b)),
                                      stride=4).flatten(2).transpose(1, 2)
    np.testing.assert_allclose(mm.to_numpy(pe(mm.tensor(x, device=device))), want.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_tokens_are_in_row_major_patch_order(device):
    # patch (r, c) of a 2×3 grid filled with the number 10 r + c; W sums the pixels
    p, rows, cols = 2, 2, 3
    grid = 10 * np.arange(rows)[:, None] + np.arange(cols)[None, :]
    x = np.kron(grid, np.ones((p, p)))[None, None].astype(np.float32)     # (1, 1, 4, 6)
    pe = nn.PatchEmbedding(p, 1, 1).to(device)
    pe.W.data[...] = 1.0
    pe.b.data[...] = 0.0
    z = mm.to_numpy(pe(mm.tensor(x, device=device)))[0, :, 0] / (p * p)
    np.testing.assert_array_equal(z, [0, 1, 2, 10, 11, 12])


@pytest.mark.parametrize("N,C,H,W,p,d", SHAPES)
def test_patch_embedding_gradcheck(device, xp, N, C, H, W, p, d):
    rng = np.random.default_rng(N + C + H + W)
    pe = nn.PatchEmbedding(p, C, d, rng=rng).to(device)
    x = rng.standard_normal((N, C, H, W))
    Wm = rng.standard_normal((C * p * p, d))
    b = rng.standard_normal(d)
    inputs = [xp.asarray(a) for a in (x, Wm, b)]
    assert mm.gradcheck(_with_params(pe, Wm, b), inputs)       # shapes and dtypes asserted too
    assert mm.gradgradcheck(_with_params(pe, Wm, b), inputs)


def test_patch_embedding_float32_gradients_and_errors(device, rng):
    pe = nn.PatchEmbedding(4, 3, 8, rng=rng).to(device)
    x = mm.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), device=device,
                  requires_grad=True)
    pe(x).sum().backward()
    assert x.grad.dtype == pe.W.grad.dtype == pe.b.grad.dtype == np.float32
    assert pe.W.shape == (48, 8) and pe.W.grad.shape == (48, 8) and pe.b.grad.shape == (8,)
    assert np.abs(mm.to_numpy(pe.W)).max() <= 1 / np.sqrt(48)             # U(±1/√fan_in)
    with pytest.raises(ValueError, match=r"PatchEmbedding: image size 8×6 is not a multiple "
                                         r"of patch_size=4"):
        pe(mm.tensor(np.zeros((1, 3, 8, 6), np.float32), device=device))
    with pytest.raises(ValueError, match=r"PatchEmbedding: expected images \(N, C=3, H, W\), "
                                         r"got shape \(1, 1, 8, 8\)"):
        pe(mm.tensor(np.zeros((1, 1, 8, 8), np.float32), device=device))
    with pytest.raises(ValueError, match=r"PatchEmbedding: patch_size, in_channels and "
                                         r"d_model must be positive"):
        nn.PatchEmbedding(0, 3, 8)
