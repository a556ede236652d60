"""mm.save / mm.load: round trips, atomic writes, resuming training exactly, clear errors."""
import os

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn, optim


class TwoLayer(nn.Module):
    """x @ W1 + b1 -> relu -> @ W2 + b2, built from Parameters and F ops only."""

    def __init__(self, rng, n_in=4, n_hidden=8, n_out=3):
        super().__init__()
        self.W1 = nn.Parameter((rng.standard_normal((n_in, n_hidden)) * 0.5).astype(np.float32))
        self.b1 = nn.Parameter(np.zeros(n_hidden, np.float32))
        self.W2 = nn.Parameter((rng.standard_normal((n_hidden, n_out)) * 0.5).astype(np.float32))
        self.b2 = nn.Parameter(np.zeros(n_out, np.float32))

    def forward(self, x):
        return F.relu(x @ self.W1 + self.b1) @ self.W2 + self.b2


def _data(rng, n=16):
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def _train(model, opt, x, y, steps, sched=None):
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()


def test_module_round_trip_is_bit_identical(device, rng, tmp_path):
    model = TwoLayer(rng).to(device)
    path = tmp_path / "model.npz"
    mm.save(model, path)
    state = mm.load(path)
    assert sorted(state) == ["W1", "W2", "b1", "b2"]
    other = TwoLayer(np.random.default_rng(1)).to(device)
    other.load_state_dict(state)
    for (name, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        assert q.dtype == np.float32 and q.device == device
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)


def test_nested_dict_round_trip(device, rng, tmp_path):
    W = rng.standard_normal((2, 3)).astype(np.float32)
    obj = {"model": {"enc.W": mm.tensor(W, device=device), "ids": np.arange(4)},
           "epoch": 3, "lr": 0.25, "done": False, "name": "multimodal",
           "betas": (0.9, 0.999), "empty": {}}
    path = tmp_path / "ckpt.npz"
    mm.save(obj, path)
    back = mm.load(path)
    np.testing.assert_array_equal(back["model"]["enc.W"], W)
    assert back["model"]["enc.W"].dtype == np.float32
    assert back["model"]["ids"].dtype == np.arange(4).dtype
    assert back["epoch"] == 3 and isinstance(back["epoch"], int)
    assert back["lr"] == 0.25 and isinstance(back["lr"], float)
    assert back["done"] is False and back["name"] == "multimodal"
    np.testing.assert_array_equal(back["betas"], [0.9, 0.999])
    assert "empty" not in back                             # empty dicts leave no entry
    # plain NumPy can read the file too, with pickling off
    with np.load(path, allow_pickle=False) as npz:
        assert "model/enc.W" in npz.files


def test_resumed_training_equals_uninterrupted(device, rng, tmp_path):
    x, y = _data(rng)
    x = mm.tensor(x, device=device)
    init = TwoLayer(np.random.default_rng(7)).state_dict()

    def fresh():
        model = TwoLayer(np.random.default_rng(99)).to(device)
        model.load_state_dict(init)
        opt = optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-3)
        return model, opt, optim.StepLR(opt, step_size=1, gamma=0.7)

    straight, opt, sched = fresh()
    _train(straight, opt, x, y, 4, sched)

    first, opt, sched = fresh()
    _train(first, opt, x, y, 2, sched)
    path = tmp_path / "ckpt.npz"
    mm.save({"model": first, "optimizer": opt, "scheduler": sched, "step": 2}, path)
    del first, opt, sched

    ckpt = mm.load(path)
    resumed, opt, sched = fresh()
    resumed.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    assert ckpt["step"] == 2 and opt.state[0]["step"] == 2
    _train(resumed, opt, x, y, 2, sched)
    for (name, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)


def test_resumed_sgd_momentum_equals_uninterrupted(device, rng, tmp_path):
    x, y = _data(rng)
    x = mm.tensor(x, device=device)
    straight = TwoLayer(np.random.default_rng(3)).to(device)
    _train(straight, optim.SGD(straight, lr=0.1, momentum=0.9, nesterov=True), x, y, 4)

    first = TwoLayer(np.random.default_rng(3)).to(device)
    opt = optim.SGD(first, lr=0.1, momentum=0.9, nesterov=True)
    _train(first, opt, x, y, 2)
    mm.save({"model": first, "optimizer": opt}, tmp_path / "c.npz")
    ckpt = mm.load(tmp_path / "c.npz")
    resumed = TwoLayer(np.random.default_rng(4)).to(device)
    resumed.load_state_dict(ckpt["model"])
    opt = optim.SGD(resumed, lr=0.1, momentum=0.9, nesterov=True)
    opt.load_state_dict(ckpt["optimizer"])
    _train(resumed, opt, x, y, 2)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_load_into_wrong_shapes_names_parameter_and_shapes(device, rng, tmp_path):
    mm.save(TwoLayer(rng, n_hidden=8), tmp_path / "m.npz")
    other = TwoLayer(rng, n_hidden=5).to(device)
    with pytest.raises(ValueError, match=r"'W1' has shape \(4, 5\) in the model but \(4, 8\)"):
        other.load_state_dict(mm.load(tmp_path / "m.npz"))


def test_crash_during_save_keeps_previous_file(device, rng, tmp_path, monkeypatch):
    model = TwoLayer(rng).to(device)
    path = tmp_path / "model.npz"
    mm.save(model, path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", broken_savez)
    W1_saved = model.W1.numpy().copy()
    model.W1.data = model.W1.data + 1
    with pytest.raises(OSError, match="simulated"):
        mm.save(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]           # no temporary file left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(mm.load(path)["W1"], W1_saved)


def test_save_keeps_path_as_given_and_overwrites(device, tmp_path):
    path = tmp_path / "ckpt"                               # no suffix is added
    mm.save({"a": np.zeros(2, np.float32)}, path)
    mm.save({"a": np.ones(2, np.float32)}, str(path))
    assert os.listdir(tmp_path) == ["ckpt"]
    np.testing.assert_array_equal(mm.load(path)["a"], [1.0, 1.0])


def test_load_errors(device, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.npz"):
        mm.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"not one written by mm.save .*'weights'"):
        mm.load(tmp_path / "foreign.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError, match="is not a minimm checkpoint"):
        mm.load(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        mm.load(tmp_path / "single.npy")


def test_save_errors(device, tmp_path):
    with pytest.raises(TypeError, match="keys must be strings"):
        mm.save({1: np.zeros(2)}, tmp_path / "a.npz")
    with pytest.raises(ValueError, match="contains '/'"):
        mm.save({"a/b": np.zeros(2)}, tmp_path / "a.npz")
    with pytest.raises(TypeError, match="cannot save 'f' of type object"):
        mm.save({"f": object()}, tmp_path / "a.npz")
    with pytest.raises(TypeError, match="would need pickling"):
        mm.save({"ragged": np.array([np.zeros(2), None], dtype=object)}, tmp_path / "a.npz")
    with pytest.raises(TypeError, match="expected a Module or a dict"):
        mm.save(np.zeros(3), tmp_path / "a.npz")
    assert os.listdir(tmp_path) == []
