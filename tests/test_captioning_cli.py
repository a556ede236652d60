"""`train --model captioner`, `caption` and `evaluate` of a captioner, on a tiny archive."""
import json
import os
import sys

import numpy as np
import pytest

from minimm.__main__ import main
from minimm.data import captions as C
from minimm.experiments import captioning

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_fixture import write_cifar_archive  # noqa: E402

TINY = ["--d-model", "16", "--heads", "2", "--depth", "1", "--batch-size", "16",
        "--no-progress"]


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-binary.tar.gz"
    return write_cifar_archive(path, n_train_per_batch=8, n_test=12, seed=0, signal=60)[0]


@pytest.fixture(scope="module")
def run(archive, tmp_path_factory):
    """A finished two-epoch run of a tiny captioner: its folder."""
    out = tmp_path_factory.mktemp("run") / "captioner"
    assert main(["train", "--model", "captioner", "--data", archive, "--epochs", "2",
                 "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_the_metrics(run):
    assert {"model.npz", "metrics.json", "history.json"} <= set(os.listdir(run))
    m = json.loads((run / "metrics.json").read_text())
    assert m["model"] == "captioner" and m["epochs"] == 2 and m["test_samples"] == 12
    assert 1.0 < m["test_perplexity"] < len(C.caption_vocabulary(attributes=True))
    assert m["test_perplexity"] == pytest.approx(np.exp(m["test_loss"]), rel=0.3)
    assert 0.0 <= m["names_true_class"] <= 1.0
    assert set(m["attribute_accuracy"]) == set(m["attribute_majority_rate"]) == set(C.ATTRIBUTES)
    assert all(0.0 < r <= 1.0 for r in m["attribute_majority_rate"].values())
    floor = m["perplexity_floor"]
    assert 1.0 < floor["with_image"] < floor["text_only"] <= m["test_perplexity"] + 50
    assert len(m["examples"]) == 8 and all(set(e) == {"generated", "reference"}
                                           for e in m["examples"])
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2] and len(history["val_token_accuracy"]) == 2
    assert history["loss"][1] < history["loss"][0]


def test_metrics_agree_with_the_generated_captions(run, archive, capsys):
    # evaluate recomputes the same numbers from the checkpoint and the test set
    assert main(["evaluate", "--checkpoint", str(run / "model.npz"), "--data", archive,
                 "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "metrics.json").read_text())
    for key in ("test_perplexity", "names_true_class", "attribute_accuracy"):
        assert again[key] == pytest.approx(saved[key])
    assert main(["evaluate", "--checkpoint", str(run / "model.npz"), "--data", archive]) == 0
    assert "greedy captions naming the true class" in capsys.readouterr().out


def test_caption_prints_generated_next_to_reference(run, archive, capsys):
    assert main(["caption", "--checkpoint", str(run / "model.npz"), "--data", archive,
                 "--count", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "test images 0..2 (greedy)" in lines[0] and lines[1].split()[:3] == [
        "#", "class", "generated"]
    assert [line.split()[0] for line in lines[2:]] == ["0", "1", "2"]
    saved = json.loads((run / "metrics.json").read_text())["examples"]
    for line, example in zip(lines[2:], saved):      # the same greedy captions as metrics.json
        assert example["generated"] in line and line.endswith(example["reference"])
    assert main(["caption", "--checkpoint", str(run / "model.npz"), "--data", archive,
                 "--index", "5", "--temperature", "1.0", "--top-k", "3", "--seed", "4"]) == 0
    first = capsys.readouterr().out
    assert main(["caption", "--checkpoint", str(run / "model.npz"), "--data", archive,
                 "--index", "5", "--temperature", "1.0", "--top-k", "3", "--seed", "4"]) == 0
    assert capsys.readouterr().out == first and "temperature 1, top-3, seed 4" in first
    assert main(["caption", "--checkpoint", str(run / "model.npz"), "--data", archive,
                 "--index", "12"]) == 2
    assert "--index 12: the test set has 12 images (0..11)" in one_error_line(
        capsys.readouterr().err)


def test_caption_of_a_users_image(run, tmp_path, capsys, monkeypatch):
    PIL = pytest.importorskip("PIL.Image")
    picture = np.zeros((64, 48, 3), dtype=np.uint8)
    picture[:, :, 2] = 200                                    # a blue picture, 48 wide
    path = tmp_path / "mine.png"
    PIL.fromarray(picture).save(path)
    image = captioning.load_image(str(path))
    assert image.shape == (1, 3, 32, 32) and image.dtype == np.uint8
    assert (image[0, 2] == 200).all() and (image[0, :2] == 0).all()
    assert main(["caption", "--checkpoint", str(run / "model.npz"), "--image", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path} (greedy): ")
    assert out[1] == "  its pixels (32x32): colour blue, brightness dark, position (none)"
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    for bad, want in ((tmp_path / "nowhere.jpg", "no such file"),
                      (not_an_image, "not an image Pillow can read")):
        assert main(["caption", "--checkpoint", str(run / "model.npz"), "--image",
                     str(bad)]) == 2
        assert want in one_error_line(capsys.readouterr().err)
    monkeypatch.setitem(sys.modules, "PIL", None)             # as if Pillow were missing
    assert main(["caption", "--checkpoint", str(run / "model.npz"), "--image", str(path)]) == 2
    assert "pip install 'minimm[images]'" in one_error_line(capsys.readouterr().err)


def test_caption_and_train_refuse_with_one_line(run, archive, tmp_path, capsys):
    clf = tmp_path / "clf"
    assert main(["train", "--model", "image", "--data", archive, "--epochs", "1", "--out",
                 str(clf), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["caption", "--checkpoint", str(clf / "model.npz"), "--data", archive]) == 2
    assert "is not a captioner checkpoint (kind 'image')" in one_error_line(
        capsys.readouterr().err)
    assert main(["caption", "--checkpoint", str(run / "model.npz"), "--max-tokens", "40",
                 "--data", archive]) == 2
    assert "this captioner writes at most 17 tokens" in one_error_line(capsys.readouterr().err)
    for extra, want in ((["--d-model", "10", "--heads", "4"], "must be divisible by --heads"),
                        (["--multitask"], "the captioner has no class head"),
                        (["--dropout", "1"], "--dropout must be below 1"),
                        (["--image-prefix", "cells", "--image-tokens", "5"],
                         "--image-tokens 5: with --image-prefix cells it must be 4 or 16"),
                        (["--image-tokens", "65"], "with --image-prefix global it must be in "
                                                   "1..64")):
        assert main(["train", "--model", "captioner", "--data", archive, "--out",
                     str(tmp_path / "x"), *extra]) == 2
        assert want in one_error_line(capsys.readouterr().err)
    assert main(["caption", "--checkpoint", "x.npz", "--index", "1", "--count", "2"]) == 2
    assert "not allowed with argument" in one_error_line(capsys.readouterr().err)


def test_time_budget_stops_before_the_budget_is_exceeded(archive, tmp_path):
    budget = captioning.TimeBudget(25.0)
    stops = [budget.on_epoch_end(e, {"train_time": 10.0}, None) for e in (1, 2)]
    assert stops == [False, True]                 # 20 s done; a third epoch would reach 30
    out = tmp_path / "budget"
    assert main(["train", "--model", "captioner", "--data", archive, "--epochs", "50",
                 "--time-budget", "1e-6", "--out", str(out), *TINY]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 1 and m["time_budget"] == 1e-6       # one epoch, then stopped
