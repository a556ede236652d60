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
