"""Training (minimm.train: fit, evaluate, Callback, checkpoints), the CIFAR-10 case study
(minimm.experiments.cifar10), plots (minimm.plot) and the `train` / `evaluate` commands, on
tiny synthetic data and a tiny CIFAR-format archive built in tmp_path."""
import json
import os
import sys

import numpy as np
import pytest

import minimm as mm
from minimm import optim, plot
from minimm.__main__ import main
from minimm.data import caption_vocabulary
from minimm.models import MultiModalModel
from minimm.data.loader import Loader, epoch_permutation
from minimm.experiments.cifar10 import Objective, as_dataset, caption_dataset
from minimm.train import Callback, History, NonFiniteLossError, evaluate, fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_fixture import write_cifar_archive  # noqa: E402

V = len(caption_vocabulary())


def tiny_data(n=24, seed=0, superlabels=True):
    """uint8 images, captions naming the class half of the time, labels, superlabels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    return caption_dataset(images, labels, caption_seed=seed, max_len=8,
                           superlabels=superlabels)


def small_model(mode="multimodal", multitask=True, seed=0):
    return MultiModalModel(V, 10, mode, 2 if multitask else None, embedding_dim=8,
                           hidden_size=16, rng=np.random.default_rng(seed))


# -- fit ----------------------------------------------------------------------------------------
def test_fit_learns_a_separable_task(device):
    # every caption names its class: the text model must learn the words -> classes table
    labels = np.random.default_rng(0).integers(0, 10, 80)
    data = caption_dataset(None, labels, 0, max_len=8, p_true=1.0, p_wrong=0.0)
    assert "images" not in data
    model = small_model("text", multitask=False)
    history = fit(model, data, data, epochs=12, batch_size=16, device=device, progress=False,
                  optimizer=optim.Adam(model.parameters(), lr=3e-2), loss_fn=Objective())
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time",
                      "train_time"}
    assert len(history) == 12 and history.epoch == list(range(1, 13))     # as the bar counts
    assert h["loss"][-1] < 0.2 * h["loss"][0], h["loss"]
    assert h["val_accuracy"][-1] >= 0.95, h["val_accuracy"]
    assert all(0 < t <= e for t, e in zip(h["train_time"], h["epoch_time"]))
    assert model.head.W.device == device


def test_multitask_history_parts_add_up(device):
    data = tiny_data(16)
    model = small_model("text", multitask=True)
    history = fit(model, data, data, epochs=2, batch_size=8, device=device, progress=False,
                  loss_fn=Objective(lam=1e-3, task_weights={"super": 0.5}))
    h = history.history
    for key in ("class_loss", "super_loss", "super_accuracy", "reg_loss"):
        assert key in h and "val_" + key in h
    # L = Σ w_i ℓ_i + λR(θ), epoch means of per-batch values
    for e in range(2):
        want = h["class_loss"][e] + 0.5 * h["super_loss"][e] + h["reg_loss"][e]
        assert h["loss"][e] == pytest.approx(want, rel=1e-5)
        val_want = h["val_class_loss"][e] + 0.5 * h["val_super_loss"][e] + h["val_reg_loss"][e]
        assert h["val_loss"][e] == pytest.approx(val_want, rel=1e-5)
    # λR(θ) from the final weights, written out: λ Σ W² over the weights (ndim >= 2)
    R = sum(float((mm.to_numpy(p.data).astype(np.float64) ** 2).sum())
            for p in model.parameters() if p.ndim >= 2)
    assert h["val_reg_loss"][-1] == pytest.approx(1e-3 * R, rel=1e-4)


def test_resume_is_bit_identical_to_uninterrupted(device, tmp_path):
    data, val = tiny_data(24, seed=1), tiny_data(8, seed=2)
    ckpt = str(tmp_path / "ckpt.npz")

    def run(epochs, **kw):
        model = small_model("multimodal", multitask=True)
        opt = optim.Adam(model.parameters(), lr=1e-2)
        history = fit(model, data, val, epochs=epochs, batch_size=8, optimizer=opt,
                      loss_fn=Objective(lam=1e-4), device=device, progress=False, seed=7, **kw)
        return model, history

    run(1, checkpoint_path=ckpt)                              # interrupted after epoch 1 …
    saved = mm.load(ckpt)
    assert saved["epoch"] == 1 and saved["config"]["mode"] == "multimodal"
    assert saved["fit"] == {"seed": 7, "batch_size": 8, "lam": 1e-4}
    resumed, h_resumed = run(2, checkpoint_path=ckpt, resume=True)    # … and resumed
    straight, h_straight = run(2)
    a, b = resumed.state_dict(), straight.state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert mm.load(ckpt)["epoch"] == 2
    for key in h_straight.history:
        if key not in ("epoch_time", "train_time"):
            assert h_resumed.history[key] == h_straight.history[key], key
    # the epochs really were shuffled differently (so the test could fail)
    assert not np.array_equal(epoch_permutation(24, 7, 0), epoch_permutation(24, 7, 1))
    np.testing.assert_array_equal(epoch_permutation(24, 7, 1), epoch_permutation(24, 7, 1))


def test_resume_without_checkpoint_warns_and_starts(device, tmp_path):
    data = tiny_data(8)
    with pytest.warns(UserWarning, match="no checkpoint at"):
        h = fit(small_model("text"), data, epochs=1, batch_size=8, device=device,
                progress=False, checkpoint_path=str(tmp_path / "none.npz"), resume=True,
                loss_fn=Objective())
    assert len(h) == 1 and os.path.exists(tmp_path / "none.npz")


def test_callbacks_can_stop_training(device):
    seen = []

    def stop_after_two(epoch, logs, model):
        seen.append((epoch, sorted(logs)))
        return epoch == 2

    h = fit(small_model("text", False), tiny_data(8), epochs=5, batch_size=4, device=device,
            progress=False, callbacks=[stop_after_two], loss_fn=Objective())
    assert len(h) == 2 and [e for e, _ in seen] == [1, 2]                 # epochs count from 1
    assert "loss" in seen[0][1] and "epoch_time" in seen[0][1]


def test_evaluate_outputs(device):
    data = tiny_data(10)
    model = small_model("multimodal", multitask=True).to(device)
    result = evaluate(model, data, Objective(), batch_size=4)
    P = result["probabilities"]
    assert P.shape == (10, 10) and P.dtype == np.float32
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result["predictions"], P.argmax(axis=1))
    np.testing.assert_array_equal(result["labels"], data["labels"])          # in order
    assert result["accuracy"] == np.mean(result["predictions"] == data["labels"])
    # the loss is the mean of Σ task cross-entropies, written out from the probabilities
    S = result["super_probabilities"]
    ce = -np.log(P[np.arange(10), data["labels"]]).mean()
    ce_super = -np.log(S[np.arange(10), data["superlabels"]]).mean()
    assert result["class_loss"] == pytest.approx(ce, rel=1e-4)
    assert result["loss"] == pytest.approx(ce + ce_super, rel=1e-4)
    assert result["super_accuracy"] == np.mean(S.argmax(axis=1) == data["superlabels"])
    # batch size does not change the answer
    again = evaluate(model, data, Objective(), batch_size=3)
    np.testing.assert_allclose(again["probabilities"], P, rtol=1e-5, atol=1e-6)


def test_data_formats_and_errors(device):
    data = tiny_data(6, superlabels=False)
    as_tuple = (data["images"], data["ids"], data["lengths"], data["labels"])
    assert sorted(as_dataset(as_tuple)) == ["ids", "images", "labels", "lengths"]
    model = small_model("image", multitask=False)
    h = fit(model, as_dataset(as_tuple), epochs=1, batch_size=4, device=device, progress=False,
            loss_fn=Objective())
    assert len(h) == 1
    with pytest.raises(ValueError, match=r"Loader: data arrays must share their first "
                                         r"dimension, got images \(6, 3, 32, 32\), .*labels \(5,\)"):
        fit(model, {**data, "labels": data["labels"][:5]}, epochs=1, progress=False,
            loss_fn=Objective())
    with pytest.raises(ValueError, match="cifar10.Objective: the batch has no 'labels'"):
        fit(model, {"images": data["images"]}, epochs=1, progress=False, loss_fn=Objective())
    with pytest.raises(ValueError, match="the data has no 'labels'"):
        as_dataset({"images": data["images"]})
    with pytest.raises(ValueError, match=r"unknown data keys \['captions'\]"):
        as_dataset({**data, "captions": data["labels"]})
    with pytest.raises(ValueError, match="cifar10.Objective: the model has a superclass head "
                                         "but the data has no 'superlabels'"):
        fit(small_model("text", True), data, epochs=1, device=device, progress=False,
            loss_fn=Objective())
    with pytest.raises(ValueError, match="fit: resume=True needs a checkpoint_path"):
        fit(model, data, resume=True, progress=False, loss_fn=Objective())
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cifar10.Objective: lam must be a finite number"):
            Objective(lam=bad)
    with pytest.raises(TypeError, match="MultiModalModel has no loss\\(batch\\) method; pass "
                                        "loss_fn"):
        fit(model, data, progress=False)


# -- the generic loop: any model, any batch keys, the three forms of the loss contract ----------
class Regression(mm.nn.Module):
    """y ≈ x·w: a model with its own batch keys and its own loss(batch)."""

    def __init__(self):
        super().__init__()
        self.w = mm.nn.Parameter(np.zeros((3, 1), np.float32))

    def forward(self, features):
        return mm.tensor(features) @ self.w

    def loss(self, batch):
        err = self(batch["features"]) - mm.tensor(batch["target"][:, None])
        mse = (err * err).mean()
        return mse, {"mae": float(np.abs(err.numpy()).mean())}, {"residual": err.data[:, 0]}


def regression_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, 3)).astype(np.float32)
    return {"features": features,
            "target": (features @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)}


def test_fit_trains_any_model_through_model_loss(device):
    data, val = regression_data(40), regression_data(12, seed=1)
    model = Regression()
    history = fit(model, data, val, epochs=30, batch_size=8, device=device, progress=False,
                  optimizer=optim.Adam(model.parameters(), lr=0.1))
    h = history.history
    assert list(h) == ["loss", "mae", "val_loss", "val_mae", "epoch_time", "train_time"]
    assert h["loss"][-1] < 1e-2 * h["loss"][0] and h["val_mae"][-1] < 0.1
    result = evaluate(model, val, batch_size=5)                    # outputs, in data order
    want = mm.to_numpy(model(mm.tensor(val["features"], device=device)).data)[:, 0] \
        - val["target"]
    np.testing.assert_allclose(result["residual"], want, rtol=1e-5, atol=1e-6)
    assert result["loss"] == pytest.approx(float((want.astype(np.float64) ** 2).mean()),
                                           rel=1e-4)
    assert result["mae"] == pytest.approx(float(np.abs(want).mean()), rel=1e-4)


@pytest.mark.parametrize("form", ["loss", "loss_logs", "loss_logs_outputs"])
def test_the_three_forms_of_the_loss_contract(device, form):
    def loss_fn(model, batch):
        mse, logs, outputs = model.loss(batch)
        logs["mae"] = mm.tensor(logs["mae"], device=device)       # a 0-d Tensor log
        return {"loss": mse, "loss_logs": (mse, logs),
                "loss_logs_outputs": (mse, logs, outputs)}[form]

    model = Regression()
    h = fit(model, regression_data(16), epochs=1, batch_size=5, device=device, progress=False,
            loss_fn=loss_fn).history
    result = evaluate(model, regression_data(7), loss_fn, batch_size=3)
    assert set(h) == {"loss", "epoch_time", "train_time"} | ({"mae"} if form != "loss" else set())
    assert ("residual" in result) == (form == "loss_logs_outputs")
    if form == "loss_logs_outputs":
        assert result["residual"].shape == (7,)
    # the epoch mean is weighted by batch size (batches of 3, 3, 1), written out
    losses = [float(model.loss({k: v[i:i + 3] for k, v in regression_data(7).items()})[0].item())
              for i in (0, 3, 6)]
    assert result["loss"] == pytest.approx((3 * losses[0] + 3 * losses[1] + losses[2]) / 7,
                                           rel=1e-6)


def test_loss_fn_misuse_is_named(device):
    model = Regression()
    data = regression_data(4)
    with pytest.raises(TypeError, match="loss_fn must return a scalar Tensor as the loss"):
        fit(model, data, epochs=1, progress=False, loss_fn=lambda m, b: 1.0)
    with pytest.raises(TypeError, match=r"scalar Tensor.*\(4, 1\)"):
        fit(model, data, epochs=1, progress=False,
            loss_fn=lambda m, b: m(b["features"]) * 1.0)
    with pytest.raises(TypeError, match="got a tuple of 4"):
        fit(model, data, epochs=1, progress=False,
            loss_fn=lambda m, b: (m.loss(b)[0], {}, {}, {}))
    with pytest.raises(ValueError, match=r"evaluate: \['residual'\] are both logs and outputs"):
        evaluate(model, data, lambda m, b: (m.loss(b)[0], {"residual": 0.0}, m.loss(b)[2]))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="fit: epochs must be a non-negative integer"):
            fit(model, data, epochs=bad, progress=False)


@pytest.mark.parametrize("data", [
    {"features": np.zeros((0, 3), np.float32), "target": np.zeros(0, np.float32)},
    Loader(regression_data(3), batch_size=4, drop_last=True),             # 0 full batches
    Loader(regression_data(1), batch_size=4, shard=(1, 2)),               # an empty shard
], ids=["no-rows", "drop-last", "empty-shard"])
def test_an_empty_training_set_raises_and_writes_nothing(device, tmp_path, data):
    ckpt = tmp_path / "ckpt.npz"
    with pytest.raises(ValueError, match="fit: the training data gives no batch .* an empty "
                                         "training set would train nothing"):
        fit(Regression(), data, epochs=2, device=device, progress=False, checkpoint_path=ckpt)
    assert os.listdir(tmp_path) == []
    if isinstance(data, dict):
        with pytest.raises(ValueError, match="evaluate: the data is empty"):
            evaluate(Regression(), data)


# -- a non-finite loss stops fit before the optimiser step; the last checkpoint stays ----------
class Poison:
    """A loss function that turns the loss of global batch ``at`` (0, 1, …) into ``value``."""

    def __init__(self, at, value):
        self.at, self.value, self.calls = at, value, 0

    def __call__(self, model, batch):
        loss, logs, outputs = model.loss(batch)
        if self.calls == self.at:
            loss = loss * self.value
        self.calls += 1
        return loss, logs, outputs


class Recorder(Callback):
    """The parameters after every step, the steps backward was seen for, and the
    checkpoint's bytes after every epoch."""

    def __init__(self, ckpt=None):
        self.ckpt, self.after_step, self.backward_steps, self.saved = ckpt, [], [], {}

    def on_after_backward(self, model, step):
        assert all(p.grad is not None for p in model.parameters())
        self.backward_steps.append(step)

    def on_batch_end(self, step, logs, model):
        self.after_step.append({k: v.copy() for k, v in model.state_dict().items()})

    def on_epoch_end(self, epoch, logs, model):
        if self.ckpt is not None:
            self.saved[epoch] = open(self.ckpt, "rb").read()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("epoch,batch,value", [(1, 1, float("nan")), (1, 2, float("inf")),
                                               (1, 5, float("nan")), (2, 1, float("-inf")),
                                               (3, 3, float("nan"))])
def test_non_finite_loss_stops_before_the_step_and_keeps_the_checkpoint(device, tmp_path, epoch,
                                                                        batch, value):
    ckpt = str(tmp_path / "ckpt.npz")
    model, rec = Regression(), Recorder(ckpt)
    steps = 5                                                     # 40 rows, batches of 8
    at = (epoch - 1) * steps + batch - 1
    with pytest.raises(NonFiniteLossError, match=rf"fit: the loss is {value} at epoch {epoch}, "
                                                 rf"batch {batch} of {steps}; stopped before the "
                                                 rf"optimiser step"):
        fit(model, regression_data(40), epochs=4, batch_size=8, device=device, progress=False,
            loss_fn=Poison(at, value), checkpoint_path=ckpt, callbacks=[rec],
            optimizer=optim.SGD(model.parameters(), lr=0.05))
    assert rec.backward_steps == list(range(at))     # on_after_backward never saw the bad batch
    # the optimiser step was not taken: the parameters are those after the last good step
    state = {k: mm.to_numpy(v) for k, v in model.state_dict().items()}
    last = rec.after_step[-1] if rec.after_step else {"w": np.zeros((3, 1), np.float32)}
    assert all(np.array_equal(state[k], mm.to_numpy(last[k])) for k in state)
    assert all(np.isfinite(v).all() for v in state.values())
    if epoch == 1:
        assert not os.path.exists(ckpt)                   # nothing was ever good enough to save
    else:                                                 # the last good epoch, byte for byte
        assert open(ckpt, "rb").read() == rec.saved[epoch - 1]
        assert mm.load(ckpt)["epoch"] == epoch - 1
    assert [f for f in os.listdir(tmp_path) if f != "ckpt.npz"] == []


def test_non_finite_loss_after_resume_names_the_checkpoint_it_kept(device, tmp_path):
    ckpt = str(tmp_path / "ckpt.npz")
    data = regression_data(24)
    model = Regression()
    fit(model, data, epochs=2, batch_size=8, device=device, progress=False, checkpoint_path=ckpt)
    good = open(ckpt, "rb").read()
    for at, where in ((0, "epoch 3, batch 1 of 3"), (4, "epoch 4, batch 2 of 3")):
        # resumed at epoch 3: global batch 0 of this run is epoch 3's first
        with pytest.raises(NonFiniteLossError, match=rf"{where}; stopped before the optimiser "
                                                     rf"step; {ckpt} still holds epoch"):
            fit(Regression(), data, epochs=5, batch_size=8, device=device, progress=False,
                checkpoint_path=ckpt, resume=True, loss_fn=Poison(at, float("nan")))
        if at == 0:
            assert open(ckpt, "rb").read() == good
    assert mm.load(ckpt)["epoch"] == 3                 # epoch 3 was good in the second case
    resumed = fit(Regression(), data, epochs=5, batch_size=8, device=device, progress=False,
                  checkpoint_path=ckpt, resume=True)           # and it goes on from there
    assert len(resumed) == 5


def test_parameters_that_turn_non_finite_are_never_checkpointed(device, tmp_path):
    class Explode(Callback):             # a finite loss, then an inf gradient at one step
        def on_after_backward(self, model, step):
            if step == 5:
                model.w.grad.data[...] = np.inf

    ckpt = str(tmp_path / "ckpt.npz")
    rec = Recorder(ckpt)
    model = Regression()
    with pytest.raises(NonFiniteLossError, match=r"fit: after epoch 2 the parameters \['w'\] "
                                                 r"hold nan or inf, though every loss was "
                                                 r"finite; stopped before checkpointing; .* "
                                                 r"still holds epoch 1"):
        fit(model, regression_data(24), epochs=3, batch_size=8, device=device, progress=False,
            checkpoint_path=ckpt, callbacks=[Explode(), rec],
            optimizer=optim.SGD(model.parameters(), lr=0.1))
    assert open(ckpt, "rb").read() == rec.saved[1]


# -- callbacks, one read per step, epoch numbers ------------------------------------------------
def test_callback_hooks_order_and_step_numbers(device, tmp_path):
    events = []

    class Log(Callback):
        def on_train_begin(self, model, optimizer):
            events.append(("begin", type(optimizer).__name__))

        def on_after_backward(self, model, step):
            events.append(("backward", step))

        def on_batch_end(self, step, logs, model):
            assert set(logs) == {"loss", "mae"} and isinstance(logs["loss"], float)
            events.append(("batch", step))

        def on_epoch_end(self, epoch, logs, model):
            events.append(("epoch", epoch))

        def on_train_end(self, history, model):
            events.append(("end", len(history)))

    ckpt = str(tmp_path / "c.npz")
    fit(Regression(), regression_data(10), epochs=2, batch_size=4, device=device,
        progress=False, callbacks=[Log()], checkpoint_path=ckpt)
    assert events == [("begin", "Adam"),
                      ("backward", 0), ("batch", 0), ("backward", 1), ("batch", 1),
                      ("backward", 2), ("batch", 2), ("epoch", 1),
                      ("backward", 3), ("batch", 3), ("backward", 4), ("batch", 4),
                      ("backward", 5), ("batch", 5), ("epoch", 2), ("end", 2)]
    events.clear()                                          # a resumed run continues the count
    fit(Regression(), regression_data(10), epochs=3, batch_size=4, device=device,
        progress=False, callbacks=[Log()], checkpoint_path=ckpt, resume=True)
    assert [e for e in events if e[0] in ("backward", "epoch")] == [
        ("backward", 6), ("backward", 7), ("backward", 8), ("epoch", 3)]


def test_one_read_from_the_device_per_step(device, monkeypatch):
    import minimm.train as train_module
    reads = []
    real = train_module._read
    monkeypatch.setattr(train_module, "_read", lambda loss, logs: reads.append(1) or
                        real(loss, logs))

    def no_item(self):
        raise AssertionError("fit read a value with .item() (a GPU synchronisation)")
    monkeypatch.setattr(mm.Tensor, "item", no_item)
    train = Loader(regression_data(20), batch_size=4)          # built before counting
    to_numpy_calls = []
    real_to_numpy = mm.backend.to_numpy
    monkeypatch.setattr(mm.backend, "to_numpy", lambda a: to_numpy_calls.append(1) or
                        real_to_numpy(a))

    def loss_fn(model, batch):        # a loss and three device-side logs
        err = model(batch["features"]) - mm.tensor(batch["target"][:, None], device=device)
        mse = (err * err).mean()
        return mse, {"a": mse * 2.0, "b": err.mean(), "c": (err.data > 0).mean()}

    model = Regression()
    fit(model, train, epochs=2, device=device, progress=False, loss_fn=loss_fn)
    assert len(reads) == 10                                     # 2 epochs of 5 steps
    # one copy per step (the loss and its logs together) and one per epoch (the parameter check)
    assert len(to_numpy_calls) == 10 + 2


def test_non_finite_loss_in_a_log_only_is_kept(device):
    # a log is a measurement, not the loss: only the loss decides whether to stop
    h = fit(Regression(), regression_data(8), epochs=1, batch_size=4, device=device,
            progress=False, loss_fn=lambda m, b: (m.loss(b)[0], {"ratio": float("inf")}))
    assert h.history["ratio"] == [float("inf")]


def test_resume_with_a_random_transform_is_bit_identical(device, tmp_path):
    def jitter(batch, rng):          # augmentation: noise drawn from (seed, epoch, batch)
        return {**batch, "features": batch["features"]
                + 0.1 * rng.standard_normal(batch["features"].shape).astype(np.float32)}

    def run(epochs, **kw):
        model = Regression()
        loader = Loader(regression_data(20), batch_size=6, seed=4, transform=jitter)
        fit(model, loader, epochs=epochs, device=device, progress=False,
            optimizer=optim.Adam(model.parameters(), lr=0.05), **kw)
        return mm.to_numpy(model.w.data)

    ckpt = str(tmp_path / "c.npz")
    run(2, checkpoint_path=ckpt)
    resumed = run(4, checkpoint_path=ckpt, resume=True)
    straight = run(4)
    np.testing.assert_array_equal(resumed, straight)
    assert mm.load(ckpt)["fit"] == {"seed": 4, "batch_size": 6}          # the loader's own
    unjittered = Regression()
    fit(unjittered, Loader(regression_data(20), batch_size=6, seed=4), epochs=4, device=device,
        progress=False, optimizer=optim.Adam(unjittered.parameters(), lr=0.05))
    assert not np.array_equal(mm.to_numpy(unjittered.w.data), straight)  # the noise mattered


def test_resume_refuses_another_model_and_too_few_epochs(device, tmp_path):
    ckpt = str(tmp_path / "c.npz")
    data = tiny_data(8)
    fit(small_model("text", False), data, epochs=2, batch_size=4, device=device,
        progress=False, checkpoint_path=ckpt, loss_fn=Objective())
    for other, why in ((small_model("multimodal", False), r"'mode': \('text', 'multimodal'\)"),
                       (small_model("text", True), r"'num_superclasses': \(0, 2\)")):
        with pytest.raises(mm.UsageError, match=rf"fit: cannot resume: {ckpt} holds another "
                                                rf"model than MultiModalModel.*{why}"):
            fit(other, data, epochs=3, device=device, progress=False, checkpoint_path=ckpt,
                resume=True, loss_fn=Objective())
    with pytest.raises(mm.UsageError, match=r"has done 2 epochs, more than epochs=1"):
        fit(small_model("text", False), data, epochs=1, device=device, progress=False,
            checkpoint_path=ckpt, resume=True, loss_fn=Objective())
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.raises(mm.UsageError, match="cannot read the checkpoint .*bad.npz"):
        fit(small_model("text", False), data, epochs=3, device=device, progress=False,
            checkpoint_path=str(tmp_path / "bad.npz"), resume=True, loss_fn=Objective())


def test_history_json_round_trip(device, tmp_path):
    h = History()
    h.append({"loss": 2.0, "accuracy": 0.25})
    h.append({"loss": 1.5, "accuracy": 0.5})
    h.to_json(tmp_path / "h.json")
    assert json.loads((tmp_path / "h.json").read_text()) == {
        "epoch": [1, 2], "loss": [2.0, 1.5], "accuracy": [0.25, 0.5]}
    again = History(h.state_dict())
    assert again.history == h.history and again.epoch == [1, 2]
    assert os.listdir(tmp_path) == ["h.json"]                 # no temporary file left


# -- plots --------------------------------------------------------------------------------------
def test_plots_write_pngs_atomically(device, tmp_path):
    pytest.importorskip("matplotlib")
    history = {"loss": [2.0, 1.0, 0.8], "val_loss": [2.1, 1.3, 1.2],
               "accuracy": [0.2, 0.5, 0.6], "val_accuracy": [0.2, 0.4, 0.45]}
    fig = plot.plot_accuracy(history, tmp_path / "acc.png")
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [history["accuracy"],
                                                          history["val_accuracy"]]
    fig = plot.plot_loss(History(history), tmp_path / "loss.png")
    assert len(fig.axes[0].get_lines()) == 2
    cm = np.array([[5, 1], [2, 7]])
    fig = plot.plot_confusion_matrix(cm, ["a", "b"], tmp_path / "cm.png", normalize=True)
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.83", "0.17", "0.22", "0.78"]
    assert sorted(os.listdir(tmp_path)) == ["acc.png", "cm.png", "loss.png"]
    for name in os.listdir(tmp_path):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="plot: the history has no 'accuracy'"):
        plot.plot_accuracy({"loss": [1.0]})
    with pytest.raises(ValueError, match="plot_confusion_matrix: 3 class names for a 2x2"):
        plot.plot_confusion_matrix(cm, ["a", "b", "c"])


# -- the command line ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-binary.tar.gz"
    return write_cifar_archive(path, n_train_per_batch=24, n_test=40, seed=0, signal=60)[0]


def test_cli_train_quick_then_evaluate(device, archive, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", archive, "--quick", "--model", "multimodal",
                 "--out", str(out), "--device", device, "--batch-size", "16"])
    assert code == 0
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "batch" in captured.err          # the tqdm bar
    assert "epoch 1/1 val" in captured.err                   # the evaluation has its own bar
    assert "test accuracy" in captured.out
    files = sorted(os.listdir(out))
    assert {"history.json", "metrics.json", "model.npz", "accuracy.png", "loss.png",
            "confusion.png"} <= set(files)
    assert not [f for f in files if f.endswith(".tmp")]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    history = json.loads((out / "history.json").read_text())
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time"} <= set(history)
    assert history["epoch"] == [1]                         # --quick: 1 epoch, counted as shown
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "task_accuracy", "macro_f1", "macro_auc", "model", "epochs",
                "train_samples", "seconds", "confusion_matrix"):
        assert key in metrics, key
    assert metrics["model"] == "multimodal" and metrics["epochs"] == 1
    assert metrics["train_samples"] == 120 and metrics["test_samples"] == 40  # all, < quick caps
    assert np.sum(metrics["confusion_matrix"]) == 40
    assert metrics["test_accuracy"] == history["val_accuracy"][-1]
    assert set(metrics["task_accuracy"]) == {"class", "superclass"}
    ckpt = mm.load(out / "model.npz")
    assert ckpt["config"]["mode"] == "multimodal" and ckpt["config"]["vocab_size"] == V
    assert ckpt["config"]["caption_seed"] == 0 and ckpt["config"]["test_samples"] == 40

    code = main(["evaluate", "--checkpoint", str(out / "model.npz"), "--data", archive,
                 "--device", device, "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test_accuracy"] == metrics["test_accuracy"]
    assert printed["macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert printed["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)


def test_cli_multitask_resume_and_limits(device, archive, tmp_path, capsys):
    out = tmp_path / "mt"
    args = ["train", "--data", archive, "--model", "text", "--multitask", "--lam", "1e-4",
            "--limit-train", "48", "--limit-test", "20", "--out", str(out), "--device", device,
            "--no-progress", "--batch-size", "16"]
    assert main(args + ["--epochs", "1"]) == 0
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    err = capsys.readouterr().err          # no bar: one line per epoch instead
    assert "epoch 1/1 loss " in err and "epoch 2/2 loss " in err and "val_accuracy" in err
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2] and "val_super_accuracy" in history
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["superclass_source"] == "super_head" and metrics["epochs"] == 2
    assert metrics["train_samples"] == 48 and metrics["test_samples"] == 20
    assert mm.load(out / "model.npz")["epoch"] == 2
    capsys.readouterr()
    evaluated = main(["evaluate", "--checkpoint", str(out / "model.npz"), "--data", archive,
                      "--json"])
    assert evaluated == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]


def test_cli_errors_and_missing_matplotlib(device, archive, tmp_path, capsys, monkeypatch):
    assert main(["train", "--out", str(tmp_path / "x"), "--device", device,
                 "--cache-dir", str(tmp_path / "empty-cache")]) == 2
    err = capsys.readouterr().err
    assert "no CIFAR-10 data given: pass --data PATH" in err and "--download" in err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none.npz"), "--data",
                 archive]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # `import matplotlib` fails
    out = tmp_path / "noplot"
    assert main(["train", "--data", archive, "--model", "text", "--limit-train", "16",
                 "--limit-test", "8", "--epochs", "1", "--out", str(out), "--no-progress",
                 "--device", device]) == 0
    assert "warning: matplotlib is not installed" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["history.json", "metrics.json", "model.npz"]


def test_plot_modes_draws_each_mode_and_its_final_bar(tmp_path):
    histories = {"image": {"val_accuracy": [0.3, 0.5]}, "text": {"val_accuracy": [0.5, 0.52]},
                 "multimodal": History({"val_accuracy": [0.55, 0.7]})}
    acc = {"image": 0.5, "text": 0.52, "multimodal": 0.7}
    fig = plot.plot_modes(histories, acc, ceiling=0.53, path=tmp_path / "modes.png")
    left, right = fig.axes
    curves = [list(line.get_ydata()) for line in left.get_lines()][:3]
    assert curves == [[0.3, 0.5], [0.5, 0.52], [0.55, 0.7]]
    assert [line.get_label() for line in left.get_lines()][3:] == ["text ceiling 0.53", "chance"]
    assert [round(p.get_height(), 3) for p in right.patches] == [0.5, 0.52, 0.7]
    assert [t.get_text() for t in right.texts] == ["0.500", "0.520", "0.700"]
    assert (tmp_path / "modes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
