"""Module: registration, dotted names, zero_grad, train/eval, to(), state dicts."""
import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn


class Block(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.fc = nn.Linear(3, 4, rng=rng)
        self.drop = nn.Dropout(0.5)
        self.scale = nn.Parameter(np.ones(4, np.float32))

    def forward(self, x):
        return self.drop(F.relu(self.fc(x))) * self.scale


class Net(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.block = Block(rng)
        self.body = nn.Sequential(nn.Linear(4, 4, rng=rng), nn.Tanh(), nn.Linear(4, 2, rng=rng))
        self.bn = nn.BatchNorm2d(2)
        self.tied = self.body[0]  # the same module under a second name: no duplicates

    def forward(self, x):
        return self.body(self.block(x))


def test_named_parameters_dotted_and_unique(rng):
    net = Net(rng)
    names = [n for n, _ in net.named_parameters()]
    assert names == ["block.scale", "block.fc.W", "block.fc.b", "body.0.W", "body.0.b",
                     "body.2.W", "body.2.b", "bn.weight", "bn.bias"]  # module's own first
    assert len(net.parameters()) == len(set(map(id, net.parameters()))) == 9
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())


def test_shared_parameter_counted_once(rng):
    a = nn.Linear(2, 2, rng=rng)
    seq = nn.Sequential(a, nn.ReLU(), a)
    assert [n for n, _ in seq.named_parameters()] == ["0.W", "0.b"]
    out = seq(mm.tensor(np.ones((1, 2), np.float32)))
    out.sum().backward()
    assert a.W.grad is not None  # both uses contribute to the one gradient


def test_reassigning_attribute_unregisters(rng):
    m = Block(rng)
    m.scale = None
    assert "scale" not in dict(m.named_parameters())
    m.fc = nn.ReLU()
    assert [n for n, _ in m.named_parameters()] == []


def test_zero_grad(device, rng):
    net = Net(rng).to(device)
    x = mm.tensor(rng.standard_normal((5, 3)).astype(np.float32), device=device)
    net(x).sum().backward()
    assert net.block.fc.W.grad is not None
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_train_eval_propagate(device, rng):
    net = Net(rng).to(device)
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    x = mm.tensor(rng.standard_normal((5, 3)).astype(np.float32), device=device)
    np.testing.assert_array_equal(mm.to_numpy(net(x)), mm.to_numpy(net(x)))  # dropout off
    net.train()
    assert net.block.drop.training and net.body[1].training


def test_to_moves_parameters_and_buffers(device, rng):
    net = Net(rng)
    params_before = net.parameters()
    net.to(device)
    assert all(p.device == device for p in net.parameters())
    assert [id(p) for p in net.parameters()] == [id(p) for p in params_before]  # same objects
    assert mm.backend.device_of(net.bn.running_mean) == device
    net.to("cpu")
    assert all(p.device == "cpu" for p in net.parameters())


def test_state_dict_round_trip(device, rng):
    net = Net(rng).to(device)
    net.bn(mm.tensor(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), device=device))
    state = net.state_dict()
    assert set(state) == {n for n, _ in net.named_parameters()} | {"bn.running_mean",
                                                                    "bn.running_var"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    other = Net(np.random.default_rng(99)).to(device)
    assert not np.array_equal(mm.to_numpy(other.block.fc.W), state["block.fc.W"])
    other.load_state_dict(state)
    for name, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
        assert value.dtype == state[name].dtype
    assert other.block.fc.W.device == device
    # the state dict is a copy: changing the model does not change it
    state_copy = state["block.fc.W"].copy()
    other.block.fc.W.data = other.block.fc.W.data * 0
    np.testing.assert_array_equal(state["block.fc.W"], state_copy)


def test_load_state_dict_errors(rng):
    net = Net(rng)
    state = net.state_dict()
    bad = dict(state)
    bad["body.2.W"] = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"parameter 'body.2.W' has shape \(4, 2\) in the "
                                         r"model but \(4, 3\) in the state dict"):
        net.load_state_dict(bad)
    bad = dict(state)
    bad["bn.running_var"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"buffer 'bn.running_var' has shape \(2,\)"):
        net.load_state_dict(bad)
    missing = dict(state)
    del missing["block.fc.b"]
    with pytest.raises(KeyError, match=r"missing keys \['block.fc.b'\]"):
        net.load_state_dict(missing)
    extra = dict(state, **{"head.W": np.zeros(2)})
    with pytest.raises(KeyError, match=r"unexpected keys \['head.W'\]"):
        net.load_state_dict(extra)
    net.load_state_dict(missing, strict=False)  # non-strict loads what is there


def test_sequential_indexing_and_repr(rng):
    seq = nn.Sequential(nn.Linear(3, 4, rng=rng), nn.ReLU(), nn.Linear(4, 1, rng=rng))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU)
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(seq)
    y = seq(mm.tensor(np.ones((2, 3), np.float32)))
    assert y.shape == (2, 1) and y.dtype == np.float32


def test_module_without_super_init_errors():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"Broken: call super\(\).__init__\(\) before "
                                             r"assigning attribute 'fc'"):
        Broken()
