"""The command line (`python -m minimm demo`, `train`, `evaluate`). (The benchmarks live in
benchmarks/, outside the package, and are tested by tests/test_benchmarks.py.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

import minimm as mm
from minimm.__main__ import build_parser
from minimm.data.spiral import spiral_data
from minimm.experiments.spiral import run_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_command_learns_the_spirals(device):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "minimm", "demo", "--steps", "150",
                          "--device", device], capture_output=True, text=True, env=env,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    losses = [float(line.split("loss")[1]) for line in lines if line.startswith("step")]
    assert len(losses) >= 3 and losses[-1] < 0.5 * losses[0]
    final = [line for line in lines if line.startswith("final")][-1]
    test_acc = float(final.split("test accuracy")[1].split()[0])
    assert test_acc > 0.6, out.stdout          # chance is 1/3


def test_run_demo_returns_falling_losses(device):
    result = run_demo(steps=60, device=device, print_fn=None)
    assert len(result["losses"]) == 60
    assert result["losses"][-1] < result["losses"][0]
    assert 0.0 <= result["test_accuracy"] <= 1.0


def test_spiral_data_is_balanced(device):
    X, y = spiral_data(n_per_class=50, n_classes=4)
    assert X.shape == (200, 2) and X.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(y), [50] * 4)


def test_cli_requires_a_command(device):
    with pytest.raises(SystemExit):
        build_parser().parse_args([])                 # a command is required


# -- one clear line for every bad argument ------------------------------------------------------
import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

from minimm import experiments  # noqa: E402
from minimm.__main__ import main  # noqa: E402
from minimm.data import cifar10  # noqa: E402
from minimm.experiments import cifar10 as cifar10_experiment  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cifar_fixture import write_cifar_archive  # noqa: E402

BAD = {experiments.positive_int: ["0", "-1", "1.5", "nan", "inf", "1e3", "abc", ""],
       experiments.non_negative_int: ["-1", "0.5", "nan", "inf", "x"],
       experiments.positive_float: ["0", "-0.001", "nan", "inf", "-inf", "abc", ""],
       experiments.non_negative_float: ["-1e-9", "nan", "inf", "-inf", "x"],
       experiments.positive_ints: ["0", "a,b", "32,-1", ",", "nan"],
       experiments.names: [",", " , "],
       cifar10_experiment.MAX_LEN: ["0", "257", "-1", "nan", "16.5", "x"]}
REQUIRED = {"evaluate": ["--checkpoint", "nowhere.npz"]}


def numeric_options():
    """(command, option, type) for every option that takes a value, of every subcommand."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.nargs != 0 and action.type is not None:
                found.append((command, action.option_strings[0], action.type))
    return found


def test_every_numeric_option_is_checked_by_its_type(device):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, p in sub.choices.items():
        for action in p._actions:
            numeric = isinstance(action.default, (int, float)) and not isinstance(
                action.default, bool) or action.dest in ("epochs", "limit_train", "limit_test")
            if action.option_strings and action.nargs != 0 and numeric:
                assert action.type in BAD, (command, action.option_strings, action.type)
    assert len(numeric_options()) >= 18


@pytest.fixture
def no_data(monkeypatch):
    """load_cifar10 must not be reached: a refused argument is refused before any data."""
    def refuse(*args, **kwargs):
        raise AssertionError("load_cifar10 was called")
    monkeypatch.setattr(cifar10, "load_cifar10", refuse)


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("command,option,kind", numeric_options(),
                         ids=[f"{c} {o}" for c, o, _ in numeric_options()])
def test_bad_numbers_give_one_error_line_and_exit_2(device, capsys, no_data, command, option,
                                                    kind):
    for bad in BAD[kind]:
        code = main([command, *REQUIRED.get(command, []), option, bad, "--device", device])
        assert code == 2, (option, bad)
        line = one_error_line(capsys.readouterr().err)
        if bad in ("-inf", "-1e-9"):          # argparse reads these as an option, not a value
            assert line.startswith(f"error: minimm {command}: argument {option}: expected one "
                                   f"argument"), line
            continue
        assert line.startswith(f"error: minimm {command}: argument {option}: must be "), line
        assert repr(bad) in line


def test_epochs_zero_and_negative_are_refused_alike(device, capsys, no_data):
    messages = []
    for bad in ("0", "-1"):
        assert main(["train", "--epochs", bad, "--data", "x"]) == 2
        messages.append(one_error_line(capsys.readouterr().err).replace(repr(bad), "N"))
    assert messages[0] == messages[1] == ("error: minimm train: argument --epochs: must be a "
                                          "positive integer, got N (see minimm train --help)")


def test_unknown_choices_and_options_are_one_line_too(device, capsys, no_data):
    for argv in (["train", "--model", "nosuch"], ["train", "--no-such-option"], ["nosuch"], [],
                 ["evaluate"], ["demo", "--device", "tpu"]):
        assert main(argv) == 2, argv
        one_error_line(capsys.readouterr().err)
    assert main(["train", "--help"]) == 0 and "--cache-dir" in capsys.readouterr().out


def test_out_of_memory_is_one_line(device, capsys, monkeypatch):
    from minimm.experiments import spiral

    def too_big(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(spiral, "run_demo", too_big)
    assert main(["demo", "--hidden", "1000000000"]) == 2
    assert "out of memory: use smaller sizes" in one_error_line(capsys.readouterr().err)


def test_a_missing_gpu_is_one_line(device, capsys, no_data):
    if mm.gpu_available():
        pytest.skip("a GPU is present: --device cuda is fine here")
    for command in (["demo"], ["train", "--data", "x"],
                    ["evaluate", "--checkpoint", "x.npz"]):
        assert main(command + ["--device", "cuda"]) == 2
        assert one_error_line(capsys.readouterr().err).startswith("error: --device cuda: ")


# -- files: the output folder, checkpoints -------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-binary.tar.gz"
    return write_cifar_archive(path, n_train_per_batch=8, n_test=12, seed=0, signal=60)[0]


@pytest.fixture(scope="module")
def text_run(archive, tmp_path_factory):
    """A finished one-epoch run of the text model: its folder."""
    out = tmp_path_factory.mktemp("run") / "text"
    assert main(["train", "--data", archive, "--model", "text", "--epochs", "1",
                 "--batch-size", "8", "--out", str(out), "--no-progress"]) == 0
    return out


def test_out_that_is_a_file_is_refused(device, tmp_path, capsys, no_data):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, want in ((afile, "is a file, not a folder"),
                      (afile / "below", "cannot create the folder")):
        assert main(["train", "--data", "x", "--out", str(out), "--device", device]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: --out {out}") and want in line
    assert afile.read_text() == "mine"


def test_out_defaults_to_runs_model(device, archive, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", archive, "--model", "text", "--epochs", "1",
                 "--limit-train", "8", "--limit-test", "4", "--no-progress",
                 "--device", device]) == 0
    assert (tmp_path / "runs" / "text" / "model.npz").exists()


def corrupt_checkpoints(folder, good):
    """(path, what the message must say) for files evaluate and --resume must refuse."""
    folder.mkdir(exist_ok=True)
    blob = open(good, "rb").read()
    cases = {"empty.npz": b"", "random.npz": os.urandom(2048), "truncated.npz": blob[:len(blob) // 2],
             "text.npz": b"not a checkpoint at all\n"}
    out = []
    for name, content in cases.items():
        (folder / name).write_bytes(content)
        out.append((folder / name, "cannot read the checkpoint"))
    mm.save({"w": np.ones(2)}, folder / "weights-only.npz")
    out.append((folder / "weights-only.npz", "not a training checkpoint"))
    (folder / "adir.npz").mkdir()
    out.append((folder / "adir.npz", "cannot read the checkpoint"))
    ckpt = mm.load(good)
    mm.save({**ckpt, "config": {**ckpt["config"], "kind": "nosuch"}}, folder / "kind.npz")
    out.append((folder / "kind.npz", "names no model this minimm trains"))
    bad_w = {k: (np.zeros((3, 3), np.float32) if k == "head.W" else v)
             for k, v in ckpt["model"].items()}
    mm.save({**ckpt, "model": bad_w}, folder / "shapes.npz")
    out.append((folder / "shapes.npz", "does not fit MultiModalModel"))
    mm.save({**ckpt, "config": {**ckpt["config"], "hidden_size": 7}}, folder / "config.npz")
    out.append((folder / "config.npz", "MultiModalModel"))     # another model, or a misfit
    out.append((folder / "missing.npz", "no checkpoint at"))
    return out


def test_evaluate_refuses_bad_checkpoints_with_one_line(device, archive, text_run, tmp_path,
                                                        capsys):
    for path, want in corrupt_checkpoints(tmp_path / "bad", text_run / "model.npz"):
        code = main(["evaluate", "--checkpoint", str(path), "--data", archive,
                     "--device", device])
        assert code == 2, path
        line = one_error_line(capsys.readouterr().err)
        assert want in line and str(path) in line, (path, line)


def test_resume_refuses_bad_checkpoints_before_loading_data(device, text_run, tmp_path, capsys,
                                                            no_data):
    out = tmp_path / "resume"
    for path, want in corrupt_checkpoints(tmp_path / "bad", text_run / "model.npz"):
        if path.name in ("missing.npz", "kind.npz"):   # missing: starts afresh; kind: not checked
            continue
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        if path.is_dir():
            (out / "model.npz").mkdir()
        else:
            shutil.copy(path, out / "model.npz")
        code = main(["train", "--model", "text", "--resume", "--epochs", "3", "--data", "x",
                     "--out", str(out), "--device", device])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and want in line and "model.npz" in line, (path, line)


def test_resume_with_another_model_kind_or_fewer_epochs(device, text_run, tmp_path, capsys,
                                                        no_data):
    out = tmp_path / "other"
    shutil.copytree(text_run, out)
    before = (out / "model.npz").read_bytes()
    for argv, want in ((["--model", "multimodal"], r"'mode': ('text', 'multimodal')"),
                       (["--model", "image"], "'mode': ('text', 'image')"),
                       (["--model", "text", "--multitask"], "'num_superclasses': (0, 2)"),
                       (["--model", "text", "--epochs", "0"], "must be a positive integer")):
        code = main(["train", *argv, "--resume", "--data", "x", "--out", str(out),
                     "--device", device])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and want in line, line
    assert (out / "model.npz").read_bytes() == before
    # --epochs below what the checkpoint has done: refused, before the data
    mm.save({**mm.load(out / "model.npz"), "epoch": 3}, out / "model.npz")
    code = main(["train", "--model", "text", "--resume", "--data", "x", "--out", str(out),
                 "--epochs", "2", "--device", device])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "has done 3 epochs, more than --epochs 2" in line, line


def test_non_finite_loss_from_the_cli_keeps_the_good_run(device, archive, text_run, tmp_path,
                                                         capsys):
    out = tmp_path / "diverge"
    shutil.copytree(text_run, out)
    before = {name: (out / name).read_bytes() for name in ("model.npz", "history.json")}
    code = main(["train", "--data", archive, "--model", "image", "--lr", "1e30", "--epochs", "2",
                 "--batch-size", "8", "--out", str(out), "--no-progress", "--device", device])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2, line
    assert line.startswith("error: fit: the loss is nan at epoch 1, batch 2 of 5") or \
        "parameters" in line, line
    assert line.endswith("(this run: --lr 1e+30)")
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


# -- data that cannot be had: every time, the remedy ----------------------------------------------
def test_missing_data_always_names_the_remedy(device, tmp_path, capsys, monkeypatch):
    url = (tmp_path / "no-such-server" / "cifar-10-binary.tar.gz").as_uri()
    monkeypatch.setattr(cifar10, "URL", url)            # the download fails without a network
    monkeypatch.setenv("MINIMM_CIFAR10_URL", url)
    cache = tmp_path / "cache"
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b not gzip")
    for extra, start in (([], "error: no CIFAR-10 data given: pass --data PATH"),
                         (["--download"], "error: cannot load CIFAR-10 ("),
                         (["--data", str(tmp_path / "none.tar.gz")], "error: cannot load CIFAR-10 ("),
                         (["--data", str(broken)], "error: cannot load CIFAR-10 (")):
        code = main(["train", "--out", str(tmp_path / "o"), "--cache-dir", str(cache),
                     "--device", device, *extra])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
        line = errors[0]
        assert line.startswith(start), line
        for remedy in ("pass --data PATH", "--download to fetch it once from", str(cache),
                       "Offline, copy the archive"):
            assert remedy in line, (remedy, line)
    # a broken cache is named as such, not as "no data given"
    (cache / "cifar-10-batches-bin").mkdir(parents=True)
    (cache / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(b"x")
    assert main(["train", "--out", str(tmp_path / "o"), "--cache-dir", str(cache)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: cannot load CIFAR-10 ("), line         # with its reason
    assert "pass --data PATH" in line


def test_cache_dir_and_url_reach_load_cifar10(device, tmp_path, monkeypatch, capsys):
    calls = []
    rng = np.random.default_rng(0)
    fake = ((rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 8)),
            (rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4)))

    def load_cifar10(**kwargs):
        calls.append(kwargs)
        return fake
    monkeypatch.setattr(cifar10, "load_cifar10", load_cifar10)
    common = ["train", "--model", "text", "--epochs", "1", "--no-progress", "--device", device]
    assert main(common + ["--download", "--cache-dir", str(tmp_path / "c"), "--url",
                          "https://example.org/c.tgz", "--out", str(tmp_path / "a")]) == 0
    assert main(common + ["--out", str(tmp_path / "b")]) == 0
    assert main(common + ["--data", "somewhere.tar.gz", "--out", str(tmp_path / "d")]) == 0
    assert calls == [{"download": True, "root": str(tmp_path / "c"),
                      "url": "https://example.org/c.tgz"},
                     {"download": False, "root": None, "url": None},
                     {"path": "somewhere.tar.gz"}]


# -- evaluate: a short summary; the JSON behind a flag or in a file --------------------------------
def test_evaluate_prints_a_summary_and_writes_json_on_request(device, archive, text_run,
                                                              tmp_path, capsys):
    ckpt = str(text_run / "model.npz")
    assert main(["evaluate", "--checkpoint", ckpt, "--data", archive, "--device", device]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) <= 16, captured.out                                  # not 177 lines
    assert lines[0].startswith(f"text model, 1 epoch(s), 12 test images ({ckpt})")
    assert lines[1].startswith("test accuracy ") and "macro F1" in lines[1] \
        and "macro AUC" in lines[1]
    assert lines[2].split() == ["class", "precision", "recall", "F1"]
    assert [line.split()[0] for line in lines[3:13]] == list(cifar10.CLASSES)
    assert "evaluate" in captured.err                                     # its progress bar
    metrics_file = tmp_path / "out" / "metrics.json"
    assert main(["evaluate", "--checkpoint", ckpt, "--data", archive, "--device", device,
                 "--json", "--metrics", str(metrics_file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(metrics_file.read_text()) == printed
    trained = json.loads((text_run / "metrics.json").read_text())
    assert printed["test_accuracy"] == trained["test_accuracy"]
    assert f"test accuracy {printed['test_accuracy']:.4f}" in lines[1]
    assert main(["evaluate", "--checkpoint", ckpt, "--data", archive, "--metrics",
                 str(tmp_path)]) == 2
    assert "is a folder" in one_error_line(capsys.readouterr().err)
