"""minimm.callbacks: per-layer gradient and weight norms, TensorBoard event files read back."""
import os

import numpy as np
import pytest

import minimm as mm
from minimm import callbacks, functional as F, nn


def tiny_step(model, rng):
    x = mm.tensor(rng.standard_normal((4, 3)), dtype=np.float32)
    loss = F.cross_entropy(model(x), np.array([0, 1, 1, 0]))
    model.zero_grad()
    loss.backward()
    return loss


def test_gradient_norms_record_every_parameter():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 5, rng=rng), nn.Tanh(), nn.Linear(5, 2, rng=rng))
    rec = callbacks.GradientNorms(every=2)
    for step in range(5):
        tiny_step(model, rng)
        rec.on_after_backward(model, step)
        if step == 4:
            last = {n: np.linalg.norm(p.grad.numpy().astype(np.float64))
                    for n, p in model.named_parameters()}
            weights = {n: np.linalg.norm(p.numpy().astype(np.float64))
                       for n, p in model.named_parameters()}
    rec.on_epoch_end(1, {}, model)
    assert rec.steps == [0, 2, 4] and rec.epoch_ends == [5]
    assert list(rec.grad_norms) == ["0.W", "0.b", "2.W", "2.b"]
    for name in rec.grad_norms:
        assert len(rec.grad_norms[name]) == 3
        assert rec.grad_norms[name][-1] == pytest.approx(last[name], rel=1e-12)
        assert rec.weight_norms[name][-1] == pytest.approx(weights[name], rel=1e-12)


def test_gradient_norms_during_fit_and_plot():
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from minimm.experiments.cifar10 import Objective
    from minimm.models import MultiModalModel
    from minimm.train import fit
    rng = np.random.default_rng(0)
    data = {"ids": rng.integers(2, 20, (16, 5)), "lengths": np.full(16, 5),
            "labels": rng.integers(0, 10, 16)}
    model = MultiModalModel(20, mode="text", hidden_size=8, embedding_dim=4,
                            rng=np.random.default_rng(0))
    rec = callbacks.GradientNorms()
    fit(model, data, epochs=2, batch_size=8, progress=False, callbacks=[rec],
        loss_fn=Objective())
    n = len(rec.steps)
    assert rec.steps == [0, 1, 2, 3] and rec.epoch_ends == [2, 4]    # 2 batches per epoch
    assert set(rec.grad_norms) == {n_ for n_, _ in model.named_parameters()}
    assert all(len(v) == n and all(g > 0 for g in v) for v in rec.grad_norms.values())
    fig = rec.plot()
    assert fig.axes[0].get_yscale() == "log" and "gradient norm" in fig.axes[0].get_ylabel()
    plt.close(fig)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        callbacks.GradientNorms(every=0)


def test_tensorboard_writes_events_that_read_back(tmp_path):
    pytest.importorskip("tensorboardX", reason="tensorboardX (optional extra) not installed")
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 2, rng=rng))
    log_dir = str(tmp_path / "runs" / "tiny")
    tb = callbacks.TensorBoard(log_dir, batch_every=2)
    losses = []
    for step in range(4):
        losses.append(float(tiny_step(model, rng).item()))
        tb.on_batch_end(step, {"loss": losses[-1]}, model)
    tb.on_epoch_end(1, {"loss": 0.75, "val_accuracy": 0.5}, model)
    tb.on_epoch_end(2, {"loss": 0.25, "val_accuracy": 0.625}, model)
    tb.close()
    scalars = callbacks.read_scalars(str(tmp_path / "runs"))
    assert scalars["batch/loss"] == [(0, pytest.approx(losses[0], rel=1e-6)),
                                     (2, pytest.approx(losses[2], rel=1e-6))]
    assert scalars["epoch/loss"] == [(1, 0.75), (2, 0.25)]
    assert scalars["epoch/val_accuracy"] == [(1, 0.5), (2, 0.625)]
    # a damaged file is refused, not misread
    path = next(os.path.join(d, f) for d, _, fs in os.walk(log_dir) for f in fs)
    raw = bytearray(open(path, "rb").read())
    raw[-6] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ValueError, match="corrupt record"):
        callbacks.read_scalars(log_dir)


def test_read_scalars_without_files(tmp_path):
    pytest.importorskip("tensorboardX", reason="tensorboardX (optional extra) not installed")
    with pytest.raises(FileNotFoundError, match="no event files"):
        callbacks.read_scalars(str(tmp_path))


def test_tensorboard_without_tensorboardx_says_what_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name.startswith("tensorboardX"):
            raise ImportError("No module named 'tensorboardX'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        callbacks.TensorBoard("runs/x")


def test_tensorboard_itself_reads_the_run(tmp_path):
    pytest.importorskip("tensorboardX", reason="tensorboardX (optional extra) not installed")
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                             reason="tensorboard (optional extra) not installed")
    model = nn.Sequential(nn.Linear(3, 2, rng=np.random.default_rng(0)))
    tb = callbacks.TensorBoard(str(tmp_path), batch_every=1)
    tb.on_epoch_end(1, {"val_accuracy": 0.25}, model)
    tb.on_epoch_end(2, {"val_accuracy": 0.5}, model)
    tb.close()
    acc = ea.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert "epoch/val_accuracy" in acc.Tags()["scalars"]
    assert [(e.step, e.value) for e in acc.Scalars("epoch/val_accuracy")] == [(1, 0.25), (2, 0.5)]
    assert "weights/0.W" in acc.Tags()["histograms"]
