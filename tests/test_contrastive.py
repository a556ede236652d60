"""F.clip_loss (symmetric InfoNCE) and F.normalize: against a plain-NumPy transcription and
torch where installed, float64 gradient and second-derivative checks, the gradient with
respect to the logits written out, and the errors."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F

SHAPES = [(1, 3), (3, 2), (6, 5), (4, 1)]        # (N, D): one pair, D = 1, N > D, N < D


def _logsumexp(S, axis):
    m = S.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(S - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def numpy_clip_loss(I, T, s):
    """½ [−mean_i log softmax(S)_ii over rows + the same over columns], S = s Î T̂ᵀ."""
    I = I / np.linalg.norm(I, axis=1, keepdims=True)
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    S = s * I @ T.T
    rows = np.mean(_logsumexp(S, 1) - np.diag(S))
    cols = np.mean(_logsumexp(S, 0) - np.diag(S))
    return 0.5 * (rows + cols)


@pytest.mark.parametrize("N,D", SHAPES)
def test_clip_loss_matches_numpy_transcription(device, xp, N, D):
    rng = np.random.default_rng(N * 10 + D)
    I, T = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    for s in (1.0, 1 / 0.07, 100.0):
        got = F.clip_loss(mm.tensor(I, device=device), mm.tensor(T, device=device), s)
        assert got.shape == () and got.dtype == np.float64
        np.testing.assert_allclose(got.item(), numpy_clip_loss(I, T, s), rtol=1e-12)
    got32 = F.clip_loss(mm.tensor(I.astype(np.float32), device=device),
                        mm.tensor(T.astype(np.float32), device=device),
                        mm.tensor(np.float32(14.3), device=device))
    assert got32.dtype == np.float32                            # float32 stays float32
    np.testing.assert_allclose(got32.item(), numpy_clip_loss(I, T, 14.3), rtol=1e-4)


def test_clip_loss_known_values(device):
    # perfectly aligned orthonormal pairs: S = s·Id, loss = log(1 + (N − 1) e^{−s})
    N, s = 4, 5.0
    E = mm.tensor(np.eye(N) * 3.0, device=device)               # norms are divided out
    np.testing.assert_allclose(F.clip_loss(E, E, s).item(), np.log(1 + (N - 1) * np.exp(-s)),
                               rtol=1e-12)
    # s = 0: every caption equally likely, loss = log N whatever the embeddings
    rng = np.random.default_rng(0)
    I, T = (mm.tensor(rng.standard_normal((5, 3)), device=device) for _ in range(2))
    np.testing.assert_allclose(F.clip_loss(I, T, 0.0).item(), np.log(5), rtol=1e-12)


def test_clip_loss_against_torch(device):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    I, T = rng.standard_normal((7, 4)), rng.standard_normal((7, 4))
    t = np.log(1 / 0.07)
    tI, tT = torch.tensor(I, requires_grad=True), torch.tensor(T, requires_grad=True)
    tt = torch.tensor(t, requires_grad=True)
    S = tt.exp() * torch.nn.functional.normalize(tI) @ torch.nn.functional.normalize(tT).T
    target = torch.arange(7)
    want = (torch.nn.functional.cross_entropy(S, target)
            + torch.nn.functional.cross_entropy(S.T, target)) / 2
    want.backward()
    mI, mT = mm.tensor(I, requires_grad=True, device=device), mm.tensor(T, requires_grad=True,
                                                                         device=device)
    mt = mm.tensor(t, requires_grad=True, device=device)
    got = F.clip_loss(mI, mT, F.exp(mt))
    got.backward()
    np.testing.assert_allclose(got.item(), want.item(), rtol=1e-12)
    for m, w in ((mI, tI), (mT, tT), (mt, tt)):
        np.testing.assert_allclose(mm.to_numpy(m.grad), w.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N,D", SHAPES)
def test_clip_loss_gradcheck_and_gradgradcheck(device, xp, N, D):
    rng = np.random.default_rng(N + 7 * D)
    I, T = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    t = np.array(np.log(1 / 0.07) - 1.0)            # a learned log-temperature, s = e^t
    inputs = [xp.asarray(a) for a in (I, T, t)]
    fn = lambda I, T, t: F.clip_loss(I, T, F.exp(t))      # noqa: E731
    assert mm.gradcheck(fn, inputs)
    assert mm.gradgradcheck(fn, inputs)
    assert mm.gradcheck(lambda I, T: F.clip_loss(I, T, 3.0), inputs[:2])   # a fixed scale


def test_gradient_wrt_logits_is_softmax_minus_diagonal(device, rng):
    # L = ½ [CE(S) + CE(Sᵀ)] ⇒ ∂L/∂S = [(softmax_rows(S) − Id) + (softmax_cols(S) − Id)] / 2N
    N = 5
    S0 = rng.standard_normal((N, N))
    S = mm.tensor(S0, requires_grad=True, device=device)
    target = np.arange(N)
    loss = (F.cross_entropy(S, target) + F.cross_entropy(S.T, target)) * 0.5
    loss.backward()
    rows = np.exp(S0) / np.exp(S0).sum(1, keepdims=True)
    cols = np.exp(S0) / np.exp(S0).sum(0, keepdims=True)
    np.testing.assert_allclose(mm.to_numpy(S.grad), (rows + cols - 2 * np.eye(N)) / (2 * N),
                               rtol=1e-12, atol=1e-15)


def test_clip_logits_rectangular(device, rng):
    I, T = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    S = F.clip_logits(mm.tensor(I, device=device), mm.tensor(T, device=device), 2.0)
    In = I / np.linalg.norm(I, axis=1, keepdims=True)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    np.testing.assert_allclose(mm.to_numpy(S), 2.0 * In @ Tn.T, rtol=1e-12)


def test_normalize(device, xp, rng):
    x = rng.standard_normal((4, 3))
    x[2] = 0.0                                            # a zero row stays zero, no NaN
    y = mm.to_numpy(F.normalize(mm.tensor(x, device=device)))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(y, np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0))
    np.testing.assert_allclose(np.linalg.norm(y[[0, 1, 3]], axis=1), 1.0, rtol=1e-12)
    y0 = mm.to_numpy(F.normalize(mm.tensor(x, device=device), axis=0))
    np.testing.assert_allclose(y0, x / np.linalg.norm(x, axis=0, keepdims=True), rtol=1e-12)
    assert mm.gradcheck(lambda x: F.normalize(x), [xp.asarray(rng.standard_normal((3, 4)))])


def test_clip_loss_errors(device):
    a = mm.tensor(np.zeros((3, 4), np.float32), device=device)
    with pytest.raises(ValueError, match=r"clip_loss: image_emb and text_emb must both be "
                                         r"\(N, D\).*got \(3, 4\) and \(2, 4\)"):
        F.clip_loss(a, mm.tensor(np.zeros((2, 4), np.float32), device=device), 1.0)
    with pytest.raises(ValueError, match=r"clip_loss: .*got \(3, 4\) and \(3, 4, 1\)"):
        F.clip_loss(a, mm.tensor(np.zeros((3, 4, 1), np.float32), device=device), 1.0)
    with pytest.raises(ValueError, match=r"clip_logits: logit_scale must be a scalar, got "
                                         r"shape \(2,\)"):
        F.clip_loss(a, a, mm.tensor(np.ones(2, np.float32), device=device))
    with pytest.raises(ValueError, match=r"clip_logits: .*same D, got \(3, 4\) and \(3, 2\)"):
        F.clip_logits(a, mm.tensor(np.zeros((3, 2), np.float32), device=device), 1.0)
