"""``python -m minimm train --model resnet9 --recipe fast`` on a tiny CIFAR-10 archive: the run's
files, resume bit for bit, evaluate, the recipe's settings and pieces (schedule, smoothing,
flip TTA). Real accuracy is measured on real data, never here."""
import json
import os
import sys

import numpy as np
import pytest

import minimm as mm
from minimm import functional as F, nn, optim
from minimm.__main__ import build_parser, main
from minimm.experiments import cifar10_fast as recipe
from minimm.models.resnet import ResNet9

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_fixture import write_cifar_archive  # noqa: E402

TINY = ["--widths", "4,4,8,8", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-binary.tar.gz"
    return str(write_cifar_archive(path, n_train_per_batch=4, n_test=10, seed=0, signal=60)[0])


def _train(archive, out, *extra):
    return main(["train", "--model", "resnet9", "--recipe", "fast", "--data", archive,
                 "--out", str(out)] + TINY + list(extra))


def test_train_writes_the_run_and_evaluate_reads_it(archive, tmp_path, capsys):
    assert _train(archive, tmp_path / "run", "--epochs", "2") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "resnet9" and metrics["recipe"] == "fast" and metrics["tta"]
    assert metrics["epochs"] == 2 and metrics["train_samples"] == 20
    assert 0 <= metrics["test_accuracy"] <= 1 and 0 <= metrics["test_accuracy_plain"] <= 1
    assert metrics["settings"]["widths"] == [4, 4, 8, 8] and metrics["batch_size"] == 8
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["epoch"] == [1, 2] and len(history["val_accuracy"]) == 2
    for name in ("model.npz", "accuracy.png", "loss.png", "confusion.png"):
        assert (tmp_path / "run" / name).exists(), name
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "model.npz"), "--data",
                 archive, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    # the fast kernels were switched on for the run only
    assert F.conv2d is not None and nn.Sequential.forward.__module__ == "minimm.nn.module"


@pytest.mark.parametrize("extra", [(), ("--whiten",)])
def test_resume_is_bit_identical(archive, tmp_path, monkeypatch, extra):
    """A 2-epoch run killed after epoch 1 (its checkpoint written) and resumed ends where an
    uninterrupted run ends: order, augmentations and learning rates depend on (seed, epoch,
    batch) and the step number alone."""
    with monkeypatch.context() as m:                   # the "kill": stop after epoch 1
        m.setattr(recipe.OneCycleSchedule, "on_epoch_end",
                  lambda self, epoch, logs, model: epoch == 1, raising=False)
        assert _train(archive, tmp_path / "a", "--epochs", "2", *extra) == 0
    assert mm.load(str(tmp_path / "a" / "model.npz"))["epoch"] == 1
    assert _train(archive, tmp_path / "a", "--epochs", "2", "--resume", *extra) == 0
    assert _train(archive, tmp_path / "b", "--epochs", "2", *extra) == 0
    a, b = (mm.load(str(tmp_path / d / "model.npz"))["model"] for d in "ab")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_settings_take_the_recipe_unless_the_command_line_says_otherwise():
    parse = lambda *a: build_parser().parse_args(  # noqa: E731
        ["train", "--model", "resnet9", "--data", "x"] + list(a))
    s = recipe.settings(parse())
    assert s == {**recipe.RECIPES["fast"], "tta": True}
    assert recipe.RECIPES["fast"]["tta_translate"] and s["tta_translate"]
    assert not recipe.settings(parse("--no-tta-translate"))["tta_translate"]
    assert not recipe.settings(parse("--tta-translate", "--no-tta"))["tta_translate"]
    assert recipe.settings(parse("--val-samples", "0"))["val_samples"] == 0
    s = recipe.settings(parse("--epochs", "3", "--batch-size", "64", "--lr", "0.2", "--widths",
                              "8,8,16,16", "--label-smoothing", "0", "--no-tta"))
    assert (s["epochs"], s["batch_size"], s["max_lr"], s["widths"], s["label_smoothing"],
            s["tta"]) == (3, 64, 0.2, (8, 8, 16, 16), 0.0, False)
    with pytest.raises(mm.UsageError, match="--widths needs four"):
        recipe.settings(parse("--widths", "8,8"))
    assert main(["train", "--model", "resnet9", "--recipe", "slow", "--data", "x"]) == 2


def test_one_cycle_schedule_follows_the_step_number():
    W = mm.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = optim.SGD([W], lr=1.0)
    cycle = recipe.OneCycleSchedule(opt, max_lr=0.4, total_steps=8, pct_start=0.25)
    lrs = []
    for step in range(8):
        cycle.on_after_backward(None, step)
        lrs.append(opt.lr)
    assert lrs[0] == pytest.approx(0.04) and lrs[1] == pytest.approx(0.4)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] == pytest.approx(0.004)


def test_smoothed_cross_entropy_is_the_mixture_of_targets():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    target = np.full((5, 4), 0.1 / 4)
    target[np.arange(5), t] += 0.9
    want = -(target * logp).sum(1).mean()
    got = recipe.smoothed_cross_entropy(mm.tensor(x), t, 0.1)
    assert got.item() == pytest.approx(want, rel=1e-12)
    mm.gradcheck(lambda a: recipe.smoothed_cross_entropy(a, t, 0.1), [x])


def test_flip_tta_averages_the_logits_of_both_mirror_images():
    model = ResNet9(widths=(4, 4, 8, 8), rng=np.random.default_rng(1))
    model.eval()
    images = np.random.default_rng(2).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    batch = {"images": images, "labels": np.array([0, 1, 2])}
    _, _, out = recipe.FlipTTAObjective(0.0)(model, batch)
    x = mm.data.normalize_images(images) if hasattr(mm, "data") else None
    from minimm.data.loader import normalize_images
    x = normalize_images(images)
    with mm.no_grad():
        logits = (model(mm.Tensor(x)).data + model(mm.Tensor(x[..., ::-1].copy())).data) / 2
    P = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], P / P.sum(1, keepdims=True), rtol=1e-5)


def test_the_curve_uses_val_samples_and_the_final_accuracy_every_test_image(archive, tmp_path):
    """--val-samples 4: the per-epoch curve reads the first 4 of the 10 test images (its
    accuracies are multiples of 1/4), the final plain and TTA accuracies all 10 (their
    confusion matrix counts 10), the same numbers the evaluate command gives."""
    assert _train(archive, tmp_path / "run", "--epochs", "2", "--val-samples", "4") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert metrics["settings"]["val_samples"] == 4 and metrics["test_samples"] == 10
    assert all(abs(a * 4 - round(a * 4)) < 1e-9 for a in history["val_accuracy"])
    assert np.sum(metrics["confusion_matrix"]) == 10
    assert abs(metrics["test_accuracy_plain"] * 10 - round(metrics["test_accuracy_plain"] * 10)) \
        < 1e-9
    ckpt = mm.load(str(tmp_path / "run" / "model.npz"))
    assert ckpt["config"]["val_samples"] == 4 and ckpt["config"]["test_samples"] == 10
    model = ResNet9.from_config(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    from minimm.data import cifar10
    _, (x_test, y_test) = cifar10.load_cifar10(archive, download=False)
    from minimm.data.loader import normalize_images
    with mm.no_grad():
        logits = model(mm.Tensor(normalize_images(x_test))).data
    assert metrics["test_accuracy_plain"] == pytest.approx((logits.argmax(1) == y_test).mean())


def test_val_samples_zero_means_every_test_image(archive, tmp_path):
    assert _train(archive, tmp_path / "run", "--epochs", "1", "--val-samples", "0",
                  "--no-tta") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert metrics["settings"]["val_samples"] == 0
    assert history["val_accuracy"][-1] == pytest.approx(metrics["test_accuracy"])


def test_translate_tta_weighs_six_views():
    """½ m(x) + ¼ m(x shifted down-right) + ¼ m(x shifted up-left), m the flip average; the
    shifts mirror the border (numpy's reflect padding, written out here)."""
    model = ResNet9(widths=(4, 4, 8, 8), rng=np.random.default_rng(4))
    model.eval()
    images = np.random.default_rng(5).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    batch = {"images": images, "labels": np.array([0, 1, 2])}
    _, _, out = recipe.TranslateTTAObjective(0.0)(model, batch)
    from minimm.data.loader import normalize_images
    x = normalize_images(images)
    down = np.concatenate([x[:, :, 1:2], x[:, :, :-1]], axis=2)            # row −1 mirrors row 1
    down = np.concatenate([down[..., 1:2], down[..., :-1]], axis=3)
    up = np.concatenate([x[:, :, 1:], x[:, :, -2:-1]], axis=2)             # row 32 mirrors 30
    up = np.concatenate([up[..., 1:], up[..., -2:-1]], axis=3)

    def m(v):
        with mm.no_grad():
            return (model(mm.Tensor(v.copy())).data
                    + model(mm.Tensor(v[..., ::-1].copy())).data) / 2
    logits = 0.5 * m(x) + 0.25 * m(down) + 0.25 * m(up)
    P = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], P / P.sum(1, keepdims=True), rtol=1e-5)
    assert isinstance(recipe.tta_objective(0.1, True, True), recipe.TranslateTTAObjective)
    assert type(recipe.tta_objective(0.1, True)) is recipe.FlipTTAObjective
    assert type(recipe.tta_objective(0.1, False, True)) is recipe.SmoothedObjective


@pytest.mark.parametrize("option, translate", [("--tta-translate", True),
                                               ("--no-tta-translate", False)])
def test_tta_translate_is_saved_and_evaluate_uses_it(archive, tmp_path, capsys, option,
                                                     translate):
    assert _train(archive, tmp_path / "run", "--epochs", "1", option) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tta_translate"] == metrics["settings"]["tta_translate"] == translate
    ckpt = mm.load(str(tmp_path / "run" / "model.npz"))
    assert bool(ckpt["config"]["tta_translate"]) == translate
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "model.npz"), "--data",
                 archive, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["tta_translate"] == translate
    assert evaluated["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)


def test_whiten_fits_the_filters_saves_them_and_evaluate_reads_them(archive, tmp_path, capsys):
    assert _train(archive, tmp_path / "run", "--epochs", "1", "--whiten") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["settings"]["whiten"] is True
    ckpt = mm.load(str(tmp_path / "run" / "model.npz"))
    assert ckpt["config"]["whiten"] and np.abs(ckpt["model"]["prep.0.W"]).max() > 0
    from minimm.data import cifar10
    from minimm.data.loader import normalize_images
    from minimm import nn as mnn
    (x_train, _), _ = cifar10.load_cifar10(archive, download=False)
    white = mnn.PatchWhitening()
    white.fit(normalize_images(x_train[:recipe.WHITEN_IMAGES]))   # the filters are the data's
    np.testing.assert_allclose(ckpt["model"]["prep.0.W"], white.W, rtol=1e-6)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "model.npz"), "--data",
                 archive, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    assert recipe.settings(build_parser().parse_args(
        ["train", "--model", "resnet9", "--data", "x", "--no-whiten"]))["whiten"] is False


def test_the_recipe_commands_in_the_benchmark_notes_parse():
    """benchmarks/NOTES.md prints the commands of its recipe measurements on their own lines
    (the README's are checked by test_commands); each must parse."""
    import shlex
    notes = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "benchmarks", "NOTES.md")
    with open(notes, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.startswith("python -m minimm train")]
    assert len(lines) >= 2
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[3:])
        assert args.model == "resnet9" and recipe.settings(args)["whiten"] == ("--whiten" in line)
