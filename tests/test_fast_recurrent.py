"""The fast LSTM (minimm.functional.fast.recurrent) against the readable LSTM and a plain
NumPy transcription, on both backends."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F
from minimm.functional.fast import recurrent as fast


def lstm_numpy(x, W, U, b, h, c, lengths=None):
    """The LSTM step by step in plain NumPy (gates i, f, g, o), padded steps keeping the
    state and outputting zero."""
    B, T, _ = x.shape
    H = U.shape[0]
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    outs = np.zeros((B, T, H))
    for t in range(T):
        z = x[:, t] @ W + h @ U + b
        i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        valid = np.ones((B, 1), bool) if lengths is None else (t < lengths)[:, None]
        h, c = np.where(valid, h_new, h), np.where(valid, c_new, c)
        outs[:, t] = np.where(valid, h_new, 0)
    return outs, h, c


@pytest.mark.parametrize("lengths", [None, [4, 0, 2]])
def test_fast_lstm_forward_matches_numpy_and_readable(device, lengths):
    rng = np.random.default_rng(0)
    B, T, I, H = 3, 4, 2, 3
    x, W, U = rng.standard_normal((B, T, I)), rng.standard_normal((I, 4 * H)), rng.standard_normal((H, 4 * H))
    b, h0, c0 = rng.standard_normal(4 * H), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    L = None if lengths is None else np.array(lengths)
    T_ = lambda a: mm.tensor(a, device=device)  # noqa: E731
    out, (h, c) = fast.lstm(T_(x), T_(W), T_(U), T_(b), (T_(h0), T_(c0)), L)
    want = lstm_numpy(x, W, U, b, h0, c0, L)
    readable = F.lstm(T_(x), T_(W), T_(U), T_(b), (T_(h0), T_(c0)), L)
    for got, exp, rd in zip((out, h, c), want, (readable[0],) + readable[1]):
        assert got.shape == exp.shape
        np.testing.assert_allclose(got.numpy(), exp, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.numpy(), rd.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lengths", [None, [4, 0, 2]])
@pytest.mark.parametrize("shapes", [(3, 4, 2, 3), (2, 1, 3, 2)])
def test_fast_lstm_gradcheck_and_gradgradcheck(lengths, shapes):
    B, T, I, H = shapes
    rng = np.random.default_rng(1)
    L = None if lengths is None else np.minimum(np.array(lengths[:B]), T)
    args = [rng.standard_normal(s) for s in ((B, T, I), (I, 4 * H), (H, 4 * H), (4 * H,),
                                              (B, H), (B, H))]

    def all_outputs(x, W, U, b, h0, c0):
        out, (h, c) = fast.lstm(x, W, U, b, (h0, c0), L)
        return out, h, c

    def last_state(x, W, U, b, h0, c0):      # the classifier's use: only h_T
        return fast.lstm(x, W, U, b, (h0, c0), L)[1][0]

    mm.gradcheck(all_outputs, args)
    mm.gradcheck(last_state, args)
    mm.gradgradcheck(all_outputs, args)


def test_fast_lstm_float32_gradients_match_the_readable_lstm(device):
    """The article's text branch sizes (small batch), float32, h_T only: same gradients as
    the readable fused LSTM, and every gradient float32."""
    rng = np.random.default_rng(2)
    B, T, I, H = 5, 16, 64, 128
    arrays = [rng.standard_normal((B, T, I)).astype(np.float32),
              (rng.uniform(-1, 1, (I, 4 * H)) / np.sqrt(H)).astype(np.float32),
              (rng.uniform(-1, 1, (H, 4 * H)) / np.sqrt(H)).astype(np.float32),
              (rng.uniform(-1, 1, 4 * H) / np.sqrt(H)).astype(np.float32)]
    G = rng.standard_normal((B, H)).astype(np.float32)
    lengths = np.array([16, 3, 9, 1, 12])
    grads = []
    for run in (fast.lstm, F.lstm):
        ts = [mm.tensor(a, device=device, requires_grad=True) for a in arrays]
        _, (h, _) = run(*ts, lengths=lengths)
        (h * mm.tensor(G, device=device)).sum().backward()
        grads.append([t.grad for t in ts])
    for got, want in zip(*grads):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_fast_lstm_without_bias_and_empty_sequences(device):
    rng = np.random.default_rng(3)
    x = mm.tensor(rng.standard_normal((2, 3, 2)), device=device)
    W, U = (mm.tensor(rng.standard_normal(s), device=device) for s in ((2, 8), (2, 8)))
    out, (h, _) = fast.lstm(x, W, U)
    want = lstm_numpy(x.numpy(), W.numpy(), U.numpy(), 0.0, np.zeros((2, 2)), np.zeros((2, 2)))
    np.testing.assert_allclose(out.numpy(), want[0], rtol=1e-12, atol=1e-12)
    empty, (h0, _) = fast.lstm(mm.tensor(np.zeros((2, 0, 2)), device=device), W, U)
    assert empty.shape == (2, 0, 2) and h0.shape == (2, 2)
    with pytest.raises(ValueError, match="lstm: x of shape"):
        fast.lstm(mm.tensor(np.zeros((2, 3, 5)), device=device), W, U)
