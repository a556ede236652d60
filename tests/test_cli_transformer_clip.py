"""``python -m minimm train --model transformer`` (each mode) and ``--model clip`` on tiny
synthetic archives: the files each run writes, evaluate agreeing with train, pretraining that
never sees a label, and one-line errors."""
import json

import numpy as np
import pytest

from cifar_fixture import write_cifar_archive
from minimm import train as train_module
from minimm.__main__ import main
from minimm.data import prompts
from minimm.experiments import clip as clip_experiment
from minimm.models import CLIP, MultiModalTransformer

TINY = ["--epochs", "1", "--batch-size", "8", "--d-model", "16", "--depth", "1", "--heads", "2",
        "--no-progress"]
CLASSIFIER_FILES = {"history.json", "metrics.json", "model.npz", "accuracy.png", "loss.png",
                    "confusion.png"}
CLIP_FILES = {"history.json", "metrics.json", "model.npz", "loss.png", "confusion.png",
              "templates.png"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-binary.tar.gz"
    return write_cifar_archive(path, n_train_per_batch=8, n_test=12, seed=1, signal=60)[0]


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("mode", ["multimodal", "image", "text"])
def test_train_transformer_writes_the_case_study_files(device, archive, tmp_path, capsys, mode):
    out = tmp_path / mode
    assert main(["train", "--data", archive, "--model", "transformer", "--mode", mode, *TINY,
                 "--out", str(out), "--device", device]) == 0
    assert CLASSIFIER_FILES <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    model = MultiModalTransformer(48, 10, mode, d_model=16, depth=1, num_heads=2)
    assert metrics["model"] == "transformer" and metrics["mode"] == mode
    assert metrics["parameters"] == sum(p.size for p in model.parameters())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["epochs"] == 1
    history = json.loads((out / "history.json").read_text())
    assert history["val_accuracy"] == [metrics["test_accuracy"]]
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "model.npz"), "--data", archive,
                 "--json", "--device", device]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"] == metrics["test_accuracy"] and again["model"] == "transformer"


def test_train_clip_pretrains_without_labels_then_reports_zero_shot(device, archive, tmp_path,
                                                                    capsys, monkeypatch):
    seen = []
    real = clip_experiment.ContrastiveObjective.__call__

    def spy(self, model, batch):
        seen.append(set(batch))
        return real(self, model, batch)
    monkeypatch.setattr(clip_experiment.ContrastiveObjective, "__call__", spy)
    out = tmp_path / "clip"
    assert main(["train", "--data", archive, "--model", "clip", *TINY, "--embed-dim", "8",
                 "--probe-epochs", "3", "--out", str(out), "--device", device]) == 0
    assert seen and all(keys == {"images", "ids", "lengths"} for keys in seen)   # no labels
    assert CLIP_FILES <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels_used_in_pretraining"] is False
    assert 0.0 <= metrics["zero_shot_accuracy"] <= 1.0
    assert 0.0 <= metrics["linear_probe_accuracy"] <= 1.0
    assert len(metrics["zero_shot_templates"]) == len(prompts.ZERO_SHOT_TEMPLATES) == 18
    assert metrics["zero_shot_templates"][0] == "a picture of a {}"
    assert metrics["zero_shot_templates_held_out"] is True
    assert metrics["zero_shot_accuracy_by_templates"][-1] == metrics["zero_shot_accuracy"]
    model = CLIP(48, embed_dim=8, image_encoder="cnn", text_encoder="transformer", d_model=16,
                 depth=1, num_heads=2)
    assert metrics["parameters"] == sum(p.size for p in model.parameters())
    history = json.loads((out / "history.json").read_text())
    assert {"loss", "val_loss", "logit_scale"} <= set(history)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "model.npz"), "--data", archive,
                 "--json", "--device", device]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["zero_shot_accuracy"] == metrics["zero_shot_accuracy"]
    assert main(["evaluate", "--checkpoint", str(out / "model.npz"), "--data", archive]) == 0
    assert "zero-shot test accuracy" in capsys.readouterr().out


def test_clip_with_vit_and_lstm_towers_and_fewer_templates(device, archive, tmp_path):
    out = tmp_path / "clip-vit"
    assert main(["train", "--data", archive, "--model", "clip", "--image-encoder", "vit",
                 "--text-encoder", "lstm", "--templates", "3", "--probe-epochs", "0", *TINY,
                 "--out", str(out), "--device", device]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_encoder"] == "vit" and metrics["text_encoder"] == "lstm"
    assert len(metrics["zero_shot_accuracy_by_templates"]) == 3
    assert "linear_probe_accuracy" not in metrics


def test_zero_shot_refuses_templates_that_are_training_captions(device, archive):
    model = CLIP(48, embed_dim=8, d_model=16, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="prompts are training captions"):
        clip_experiment.zero_shot(model, np.zeros((2, 3, 32, 32), np.uint8), np.array([0, 1]),
                                  clip_experiment.captions.caption_vocabulary(), 16,
                                  templates=("a photo of {a} {name}",))


@pytest.mark.parametrize("argv,message", [
    (["--model", "transformer", "--d-model", "10", "--heads", "4"],
     "--d-model 10 must be divisible by --heads 4"),
    (["--model", "transformer", "--patch-size", "5"], "--patch-size 5 must divide"),
    (["--model", "transformer", "--multitask"], "--model transformer has one head"),
    (["--model", "clip", "--lam", "0.1"], "--model clip trains with the contrastive loss"),
    (["--model", "clip", "--templates", "19"], "--templates 19: there are 18 held-out"),
    (["--model", "clip", "--d-model", "12", "--heads", "8"], "must be divisible by --heads 8"),
])
def test_bad_options_are_one_line_before_any_data(device, capsys, monkeypatch, argv, message):
    def refuse(*args, **kwargs):
        raise AssertionError("the data was loaded")
    monkeypatch.setattr(clip_experiment.cifar10, "load_data", refuse)
    assert main(["train", "--data", "nowhere.tar.gz", *argv, "--device", device]) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_non_finite_contrastive_loss_stops_fit(device, archive, tmp_path, capsys, monkeypatch):
    real = clip_experiment.ContrastiveObjective.__call__

    def nan_loss(self, model, batch):
        loss, logs = real(self, model, batch)
        return loss * float("nan"), logs
    monkeypatch.setattr(clip_experiment.ContrastiveObjective, "__call__", nan_loss)
    assert main(["train", "--data", archive, "--model", "clip", *TINY, "--out",
                 str(tmp_path / "nan"), "--device", device]) == 2
    assert "nan" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "nan" / "model.npz").exists()
    assert issubclass(train_module.NonFiniteLossError, FloatingPointError)
