"""The LSTM cell, the fused sequence Function and nn.LSTM.

The oracle is a step-by-step NumPy transcription of the gate equations, written here:
    z = x W + h U + b;  i, f, g, o = σ(z_i), σ(z_f), tanh(z_g), σ(z_o)
    c' = f c + i g;  h' = o tanh(c')
"""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn
from minimm.nn import init


def _np(t):
    return mm.to_numpy(t)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _cell_oracle(x, h, c, W, U, b):
    H = h.shape[-1]
    z = x @ W + h @ U + b
    i, f = _sigmoid(z[:, :H]), _sigmoid(z[:, H:2 * H])
    g, o = np.tanh(z[:, 2 * H:3 * H]), _sigmoid(z[:, 3 * H:])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def _lstm_oracle(x, W, U, b, h, c, lengths=None):
    B, T, _ = x.shape
    outputs = np.zeros((B, T, h.shape[1]))
    for t in range(T):
        h_new, c_new = _cell_oracle(x[:, t], h, c, W, U, b)
        valid = np.ones(B, bool) if lengths is None else t < lengths
        h = np.where(valid[:, None], h_new, h)
        c = np.where(valid[:, None], c_new, c)
        outputs[:, t] = np.where(valid[:, None], h_new, 0)
    return outputs, h, c


def _params(rng, I, H, B):
    return (rng.standard_normal((I, 4 * H)) * 0.5, rng.standard_normal((H, 4 * H)) * 0.5,
            rng.standard_normal(4 * H) * 0.5, rng.standard_normal((B, H)),
            rng.standard_normal((B, H)))


@pytest.mark.parametrize("B,I,H", [(3, 2, 4), (1, 5, 2), (2, 3, 3)])
def test_lstm_cell_forward_and_gradients(device, xp, rng, B, I, H):
    W, U, b, h, c = _params(rng, I, H, B)
    x = rng.standard_normal((B, I))
    h_new, c_new = F.lstm_cell(*(mm.tensor(a, device=device) for a in (x, h, c, W, U, b)))
    h_ref, c_ref = _cell_oracle(x, h, c, W, U, b)
    np.testing.assert_allclose(_np(h_new), h_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_np(c_new), c_ref, rtol=1e-12, atol=1e-12)
    inputs = [xp.asarray(a) for a in (x, h, c, W, U, b)]
    assert mm.gradcheck(F.lstm_cell, inputs)
    assert mm.gradgradcheck(F.lstm_cell, inputs, mode="random")


def test_lstm_cell_errors(device, rng):
    W, U, b, h, c = (mm.tensor(a, device=device) for a in _params(rng, 3, 4, 2))
    with pytest.raises(ValueError, match=r"lstm_cell: x of shape \(2, 5\) does not match W "
                                         r"of shape \(3, 16\)"):
        F.lstm_cell(mm.tensor(np.zeros((2, 5)), device=device), h, c, W, U, b)
    with pytest.raises(ValueError, match=r"lstm_cell: W must be \(in, 4H\) and U \(H, 4H\)"):
        F.lstm_cell(mm.tensor(np.zeros((2, 3)), device=device), h, c, W,
                    mm.tensor(np.zeros((4, 12)), device=device), b)


def _run(fn, device, x, W, U, b, h, c, lengths=None):
    out, (hT, cT) = fn(*(mm.tensor(a, device=device) for a in (x, W, U, b)),
                       state=(mm.tensor(h, device=device), mm.tensor(c, device=device)),
                       lengths=lengths)
    return _np(out), _np(hT), _np(cT)


@pytest.mark.parametrize("lengths", [None, np.array([5, 2, 0, 1])])
def test_lstm_sequence_against_oracle(device, rng, lengths):
    B, T, I, H = 4, 5, 3, 2
    W, U, b, h, c = _params(rng, I, H, B)
    x = rng.standard_normal((B, T, I))
    ref = _lstm_oracle(x, W, U, b, h, c, lengths)
    for fn in (F.lstm, F.lstm_simple):
        for got, want in zip(_run(fn, device, x, W, U, b, h, c, lengths), ref):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lengths", [None, np.array([3, 1, 2])])
def test_lstm_sequence_gradients(device, xp, rng, lengths):
    B, T, I, H = 3, 3, 2, 2
    W, U, b, h, c = _params(rng, I, H, B)
    x = rng.standard_normal((B, T, I))

    def fn(x, W, U, b, h, c):
        out, (hT, cT) = F.lstm(x, W, U, b, (h, c), lengths)
        return out, hT, cT

    inputs = [xp.asarray(a) for a in (x, W, U, b, h, c)]
    assert mm.gradcheck(fn, inputs)                      # the fused array backward
    assert mm.gradgradcheck(fn, inputs, mode="random")   # through the composed twin


def test_fused_and_composed_first_derivatives_agree(device, rng):
    B, T, I, H = 2, 4, 3, 3
    W, U, b, h, c = _params(rng, I, H, B)
    x = rng.standard_normal((B, T, I))
    gy = rng.standard_normal((B, T, H))
    results = []
    for fn in (F.lstm, F.lstm_simple):
        for create_graph in (False, True):
            ts = [mm.tensor(a, device=device, requires_grad=True) for a in (x, W, U, b, h, c)]
            out, (hT, cT) = fn(*ts[:4], state=(ts[4], ts[5]), lengths=np.array([4, 2]))
            loss = (out * mm.tensor(gy, device=device)).sum() + (hT * cT).sum()
            results.append([_np(g) for g in mm.grad(loss, ts, create_graph=create_graph)])
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-12)


def test_nn_lstm_shapes_init_and_float32(device, rng):
    init.manual_seed(0)
    lstm = nn.LSTM(64, 128).to(device)
    assert [n for n, _ in lstm.named_parameters()] == ["W", "U", "b"]
    assert lstm.W.shape == (64, 512) and lstm.U.shape == (128, 512) and lstm.b.shape == (512,)
    bound = 1 / np.sqrt(128)
    for p in lstm.parameters():
        assert p.dtype == np.float32 and np.abs(_np(p)).max() <= bound
    x = mm.tensor(rng.standard_normal((2, 5, 64)).astype(np.float32), device=device,
                  requires_grad=True)
    out, (h, c) = lstm(x)
    assert out.shape == (2, 5, 128) and h.shape == (2, 128) and c.shape == (2, 128)
    assert out.dtype == h.dtype == c.dtype == np.float32
    (out.sum() + c.sum()).backward()
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in lstm.parameters())


def test_nn_lstm_lengths_final_state_and_padding(device, rng):
    """Each sequence's final state equals running it alone, unpadded, to its own length."""
    lstm = nn.LSTM(3, 4, rng=rng).to(device)
    B, T = 3, 6
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    lengths = np.array([6, 2, 4])
    out, (h, c) = lstm(mm.tensor(x, device=device), lengths=lengths)
    out, h, c = _np(out), _np(h), _np(c)
    for n in range(B):
        L = lengths[n]
        out_n, (h_n, c_n) = lstm(mm.tensor(x[n:n + 1, :L], device=device))
        np.testing.assert_allclose(h[n], _np(h_n)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c[n], _np(c_n)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[n, :L], _np(out_n)[0], rtol=1e-5, atol=1e-6)
        assert not out[n, L:].any()  # outputs at padded steps are zero
    # padded inputs do not matter at all
    x2 = x.copy()
    x2[1, 2:] = 100.0
    _, (h2, _) = lstm(mm.tensor(x2, device=device), lengths=lengths)
    np.testing.assert_allclose(_np(h2), h, rtol=1e-6)


def test_nn_lstm_fused_matches_composed(device, rng):
    lstm = nn.LSTM(3, 5, rng=rng).to(device)
    x = rng.standard_normal((4, 3, 3)).astype(np.float32)
    grads = []
    for fused in (True, False):
        lstm.fused = fused
        lstm.zero_grad()
        out, (h, c) = lstm(mm.tensor(x, device=device), lengths=np.array([3, 1, 2, 3]))
        (out.sum() + (h * c).sum()).backward()
        grads.append([_np(p.grad) for p in lstm.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nn_lstm_errors(device):
    lstm = nn.LSTM(3, 4).to(device)
    x = mm.tensor(np.zeros((2, 5, 3), np.float32), device=device)
    with pytest.raises(ValueError, match=r"LSTM: expected input \(B, T, 3\), got shape "
                                         r"\(2, 5, 2\)"):
        lstm(mm.tensor(np.zeros((2, 5, 2), np.float32), device=device))
    with pytest.raises(ValueError, match=r"lstm: length 6 is out of range for sequences of 5 "
                                         r"steps \(valid: 0..5\)"):
        lstm(x, lengths=np.array([6, 1]))
    with pytest.raises(ValueError, match=r"lstm: length -1 is out of range"):
        lstm(x, lengths=np.array([-1, 1]))
    with pytest.raises(ValueError, match=r"lstm: lengths must have shape \(2,\)"):
        lstm(x, lengths=np.array([1, 2, 3]))
    with pytest.raises(TypeError, match="lstm: lengths must be integers"):
        lstm(x, lengths=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"lstm: state must be \(h, c\) of shape \(2, 4\)"):
        lstm(x, state=(np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32)))


def test_nn_lstm_against_torch(device, rng):
    torch = pytest.importorskip("torch")
    lstm = nn.LSTM(3, 4, rng=rng).to(device)
    t_lstm = torch.nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        t_lstm.weight_ih_l0.copy_(torch.from_numpy(_np(lstm.W).T))
        t_lstm.weight_hh_l0.copy_(torch.from_numpy(_np(lstm.U).T))
        t_lstm.bias_ih_l0.copy_(torch.from_numpy(_np(lstm.b)))
        t_lstm.bias_hh_l0.zero_()
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    out, (h, c) = lstm(mm.tensor(x, device=device))
    t_out, (t_h, t_c) = t_lstm(torch.from_numpy(x))
    np.testing.assert_allclose(_np(out), t_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(h), t_h[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(c), t_c[0].detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf, 1e30])
@pytest.mark.parametrize("fn", [F.lstm, F.lstm_simple], ids=["fused", "simple"])
def test_padded_steps_never_reach_the_gradients(device, rng, fn, fill):
    """Whatever the padded steps (past ``lengths``) hold — NaN, ±inf, huge — the outputs and
    every gradient equal those of the same batch padded with zeros, and the input gradient is
    zero there. (0 · NaN = NaN: the padded steps are zeroed before the input map x W + b.)"""
    B, T, I, H = 3, 5, 2, 3
    W, U, b, h, c = _params(rng, I, H, B)
    lengths = np.array([5, 2, 0])
    x = rng.standard_normal((B, T, I))
    padded = np.arange(T)[None, :] >= lengths[:, None]
    results = []
    for pad in (0.0, fill):
        xs = np.where(padded[:, :, None], pad, x)
        ts = [mm.tensor(a, device=device, requires_grad=True) for a in (xs, W, U, b, h, c)]
        out, (hT, cT) = fn(*ts[:4], state=(ts[4], ts[5]), lengths=lengths)
        loss = (out * out).sum() + (hT * cT).sum()
        grads = mm.grad(loss, ts)
        results.append([_np(t) for t in (out, hT, cT, *grads)])
    for clean, dirty in zip(*results):
        assert np.isfinite(dirty).all()
        np.testing.assert_allclose(dirty, clean, rtol=1e-12, atol=1e-14)
    assert not results[1][3][padded].any()                     # ∂L/∂x = 0 at padded steps


def test_padded_nan_steps_and_second_derivatives(device, rng):
    """The composed backward (create_graph=True, taken through the twin) is clean too."""
    B, T, I, H = 2, 4, 2, 2
    W, U, b, h, c = _params(rng, I, H, B)
    x = rng.standard_normal((B, T, I))
    x[1, 1:] = np.nan
    ts = [mm.tensor(a, device=device, requires_grad=True) for a in (x, W, U, b)]
    out, (hT, _) = F.lstm(*ts, state=(h, c), lengths=np.array([4, 1]))
    gW, = mm.grad((out.sum() + hT.sum()), [ts[1]], create_graph=True)
    gU, = mm.grad((gW * gW).sum(), [ts[2]])
    assert np.isfinite(_np(gW)).all() and np.isfinite(_np(gU)).all()
