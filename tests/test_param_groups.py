"""Parameter groups, as torch.optim's: per-group lr and weight decay for SGD, Adam and AdamW
against hand-written NumPy updates and torch.optim, schedulers over groups, state_dict
round trips (also through a file and from the one-group format), and the errors."""
import numpy as np
import pytest

import minimm as mm
from minimm import optim
from test_optim import _adam_oracle, _sgd_oracle

SHAPES = [(3, 4), (5,), (2, 2)]
# group 0: params 0 and 1 with their own settings; group 1: param 2 with the defaults
CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01), dict(lr=0.02, weight_decay=0.0)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True), dict(lr=0.3, momentum=0.0,
                                                             nesterov=False)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.05), dict(lr=0.003, eps=1e-6)),
    ("AdamW", dict(lr=0.01, weight_decay=0.2), dict(weight_decay=0.0, betas=(0.5, 0.9))),
]
ADAM_DEFAULTS = dict(betas=(0.9, 0.999), eps=1e-8)


def _setup(device, rng, steps=4):
    theta0 = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
    params = [mm.tensor(t.copy(), requires_grad=True, device=device) for t in theta0]
    return theta0, grads, params


def _run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = mm.tensor(g, device=p.device)
        opt.step()


def _groups(params, group_kw):
    return [{"params": params[:2], **group_kw}, {"params": params[2:]}]


def _oracle(name, theta, grads, kw):
    if name == "SGD":
        return _sgd_oracle(theta, grads, **kw)
    full = {**ADAM_DEFAULTS, "weight_decay": 0.01 if name == "AdamW" else 0.0, **kw}
    return _adam_oracle(theta, grads, full["lr"], *full["betas"], full["eps"],
                        full["weight_decay"], decoupled=name == "AdamW")


@pytest.mark.parametrize("name,defaults,group_kw", CASES, ids=[c[0] + str(i)
                                                               for i, c in enumerate(CASES)])
def test_each_group_follows_its_own_hyperparameters(device, rng, name, defaults, group_kw):
    theta0, grads, params = _setup(device, rng)
    opt = getattr(optim, name)(_groups(params, group_kw), **defaults)
    _run(opt, params, grads)
    for i, p in enumerate(params):
        kw = {**defaults, **group_kw} if i < 2 else defaults
        want = _oracle(name, theta0[i], [g[i] for g in grads], kw)
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-5, atol=1e-6)
        assert p.dtype == np.float32


@pytest.mark.parametrize("name,defaults,group_kw", CASES, ids=[c[0] + str(i)
                                                               for i, c in enumerate(CASES)])
def test_groups_against_torch_optim(device, rng, name, defaults, group_kw):
    torch = pytest.importorskip("torch")
    theta0, grads, params = _setup(device, rng, steps=5)
    _run(getattr(optim, name)(_groups(params, group_kw), **defaults), params, grads)
    tparams = [torch.tensor(t.copy(), requires_grad=True) for t in theta0]
    topt = getattr(torch.optim, name)(_groups(tparams, group_kw), **defaults)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g)
        topt.step()
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_param_groups_structure_and_lr(device, rng):
    _, _, params = _setup(device, rng)
    opt = optim.AdamW(_groups(params, dict(lr=0.5, weight_decay=0.0)), lr=0.01)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 1]
    assert opt.params == params                                        # groups concatenated
    assert opt.param_groups[0] == {"params": params[:2], "lr": 0.5, "betas": (0.9, 0.999),
                                   "eps": 1e-8, "weight_decay": 0.0}
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["weight_decay"] == 0.01
    assert opt.lr == 0.5                                               # the first group's
    opt.lr = 0.1                                                       # sets every group's
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    extra = mm.tensor(np.zeros(3, np.float32), requires_grad=True, device=device)
    opt.add_param_group({"params": [extra], "eps": 1e-3})
    assert opt.params[-1] is extra and opt.param_groups[2]["eps"] == 1e-3
    assert opt.param_groups[2]["lr"] == 0.01                           # from the defaults


def test_frozen_group_does_not_move(device, rng):
    theta0, grads, params = _setup(device, rng)
    for cls in (optim.SGD, optim.Adam, optim.AdamW):
        for p, t in zip(params, theta0):
            p.data[...] = mm.tensor(t, device=device).data
        opt = cls([{"params": params[:1], "lr": 0.0}, {"params": params[1:]}], lr=0.1)
        _run(opt, params, grads)
        np.testing.assert_array_equal(params[0].numpy(), theta0[0])
        assert not np.array_equal(params[1].numpy(), theta0[1])


def test_state_dict_round_trip_with_groups(device, rng, tmp_path):
    theta0, grads, params = _setup(device, rng)
    opt = optim.AdamW(_groups(params, dict(lr=0.05, weight_decay=0.0)), lr=0.01)
    _run(opt, params, grads)
    want = [p.numpy().copy() for p in params]

    params2 = [mm.tensor(t.copy(), requires_grad=True, device=device) for t in theta0]
    opt2 = optim.AdamW(_groups(params2, dict(lr=0.05, weight_decay=0.0)), lr=0.01)
    _run(opt2, params2, grads[:2])
    sched = optim.StepLR(opt2, step_size=10)
    mm.save({"optimizer": opt2, "scheduler": sched}, tmp_path / "opt.npz")
    ckpt = mm.load(tmp_path / "opt.npz")
    saved = ckpt["optimizer"]
    assert sorted(saved["param_groups"]) == ["0", "1"]
    assert list(saved["param_groups"]["0"]["params"]) == [0, 1]

    params3 = [mm.tensor(p.numpy().copy(), requires_grad=True, device=device) for p in params2]
    opt3 = optim.AdamW([{"params": params3[:2]}, {"params": params3[2:]}], lr=9.0,
                       weight_decay=9.0)                # everything comes from the state dict
    opt3.load_state_dict(saved)
    assert [g["lr"] for g in opt3.param_groups] == [0.05, 0.01]
    assert [g["weight_decay"] for g in opt3.param_groups] == [0.0, 0.01]
    assert opt3.param_groups[0]["betas"] == (0.9, 0.999)
    sched3 = optim.StepLR(opt3, step_size=10)
    sched3.load_state_dict(ckpt["scheduler"])
    assert sched3.base_lrs == [0.05, 0.01]
    _run(opt3, params3, grads[2:])
    for p, w in zip(params3, want):
        np.testing.assert_array_equal(p.numpy(), w)


def test_loads_the_one_group_format(device, rng):
    theta0, grads, params = _setup(device, rng)
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    _run(opt, params, grads[:2])
    new = opt.state_dict()
    old = {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0,
           "nesterov": False, "state": new["state"]}            # what earlier minimm saved
    params2 = [mm.tensor(p.numpy().copy(), requires_grad=True, device=device) for p in params]
    opt2 = optim.SGD(params2, lr=5.0)
    opt2.load_state_dict(old)
    assert opt2.param_groups[0]["momentum"] == 0.9 and opt2.lr == 0.1
    _run(opt, params, grads[2:])
    _run(opt2, params2, grads[2:])
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_schedulers_over_groups_against_torch(device, rng):
    torch = pytest.importorskip("torch")
    _, _, params = _setup(device, rng)
    S = torch.optim.lr_scheduler

    def ours(make):
        opt = optim.SGD([{"params": params[:1], "lr": 0.3}, {"params": params[1:]}], lr=0.1)
        sched = make(opt)
        out = [sched.get_last_lr()]
        for _ in range(9):
            opt.step()
            sched.step()
            out.append(sched.get_last_lr())
        return out

    def theirs(make):
        tp = [torch.zeros(1, requires_grad=True) for _ in range(2)]
        opt = torch.optim.SGD([{"params": tp[:1], "lr": 0.3}, {"params": tp[1:]}], lr=0.1)
        sched = make(opt)
        out = [sched.get_last_lr()]
        for _ in range(9):
            opt.step()
            sched.step()
            out.append(sched.get_last_lr())
        return out

    for mine, torchs in [
            (lambda o: optim.StepLR(o, 3, 0.5), lambda o: S.StepLR(o, 3, 0.5)),
            (lambda o: optim.CosineAnnealingLR(o, 9, 0.001),
             lambda o: S.CosineAnnealingLR(o, 9, 0.001)),
            (lambda o: optim.OneCycleLR(o, [0.6, 0.2], 10, pct_start=0.3),
             lambda o: S.OneCycleLR(o, [0.6, 0.2], total_steps=10, pct_start=0.3,
                                    cycle_momentum=False))]:
        np.testing.assert_allclose(ours(mine), theirs(torchs), rtol=1e-9)


def test_group_errors(device, rng):
    _, _, params = _setup(device, rng)
    with pytest.raises(ValueError, match=r"SGD: some parameters appear in more than one "
                                         r"parameter group"):
        optim.SGD([{"params": params[:2]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match=r"Adam: parameter group 1 has no 'params' entry"):
        optim.Adam([{"params": params[:1]}, {"lr": 0.1}])
    with pytest.raises(TypeError, match=r"Adam: params mixes Tensors and group dicts"):
        optim.Adam([params[0], {"params": params[1:]}])
    with pytest.raises(TypeError, match=r"got one dict; wrap it in a list"):
        optim.Adam({"params": params})
    with pytest.raises(ValueError, match=r"Adam: invalid weight_decay -1"):
        optim.Adam([{"params": params[:1], "weight_decay": -1}])
    with pytest.raises(ValueError, match=r"SGD: got an empty parameter list"):
        optim.SGD([{"params": []}], lr=0.1)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\] is a ndarray"):
        optim.SGD([{"params": [np.zeros(2)]}], lr=0.1)
    one = optim.Adam(params, lr=0.1)
    two = optim.Adam(_groups(params, {}), lr=0.1)
    with pytest.raises(ValueError, match=r"the state dict has 1 parameter groups but the "
                                         r"optimiser has 2"):
        two.load_state_dict(one.state_dict())
    other = optim.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    with pytest.raises(ValueError, match=r"parameter group 0 has 2 parameters in the state "
                                         r"dict but 1 in the optimiser"):
        other.load_state_dict(two.state_dict())
    with pytest.raises(ValueError, match=r"OneCycleLR: 3 max_lr values for 2 parameter groups"):
        optim.OneCycleLR(two, [0.1, 0.2, 0.3], 10)
