"""The command line (`python -m minimm demo`) and the importable benchmark."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minimm as mm
from minimm import bench, optim
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


def test_run_benchmarks_quick(device):
    lines = []
    result = bench.run_benchmarks(batch_sizes=(2,), repeats=1, use_torch=False, device=device,
                                  warmup=0, print_fn=lines.append)
    assert result["device"] == device and result["matmul_gflops"] > 0
    assert [r["benchmark"] for r in result["rows"]][:3] == ["image", "text", "fused"]
    keys = {"benchmark", "batch_size", "minimm_ms", "samples_per_s", "gflops",
            "matmul_fraction", "torch_ms", "torch_samples_per_s", "ratio", "loss_gap"}
    for row in result["rows"]:
        assert set(row) == keys
        assert row["batch_size"] == 2 and row["minimm_ms"] > 0 and row["gflops"] > 0
        assert row["torch_ms"] is None and row["ratio"] is None
    assert any(line.startswith("fused") for line in lines)
    assert "fused" in bench.format_table(result)


def test_benchmark_flops_are_the_analytic_counts(device):
    # conv1 3->32 on 32x32 -> 30x30: 2·B·32·30·30·3·9; conv2 32->64 -> 13x13; conv3 64->128 -> 4x4
    B = 5
    want = 2 * B * (32 * 900 * 27 + 64 * 169 * 288 + 128 * 16 * 576)
    assert bench.image_branch_flops(B) == want
    assert bench.lstm_flops(B, 16, 64, 128) == 16 * 2 * B * (64 + 128) * 512
    _, _, flops = bench.BENCHMARKS["fused"](B, device, np.random.default_rng(0), False)
    assert flops == want + bench.lstm_flops(B, 16, 64, 128) + 2 * B * 640 * 10


def test_reference_models_have_the_article_shapes(device):
    rng = np.random.default_rng(0)
    model = bench.Classifier(rng=rng).to(device)
    images = mm.tensor(rng.standard_normal((2, 3, 32, 32)).astype(np.float32), device=device)
    ids = mm.tensor(rng.integers(0, 1000, (2, 16)), device=device).data
    assert model.image(images).shape == (2, 512)
    assert model.text(ids).shape == (2, 128)
    logits = model(images, ids)
    assert logits.shape == (2, 10) and logits.dtype == np.float32


def test_benchmark_models_match_torch(device):
    pytest.importorskip("torch")
    result = bench.run_benchmarks(batch_sizes=(2,), repeats=1, use_torch=True, device=device,
                                  warmup=0, only=["fused"], print_fn=None)
    if result["torch_version"] is None:
        pytest.skip("PyTorch has no CUDA here")
    for row in result["rows"]:
        assert row["loss_gap"] < 1e-4, row          # same weights -> same first loss
        assert row["ratio"] > 0


def test_bench_cli_errors(device, capsys):
    from minimm.__main__ import main
    assert main(["bench", "--only", "nosuch", "--no-torch", "--repeats", "1",
                 "--batch-sizes", "2", "--device", device]) == 2
    assert "unknown benchmark(s) ['nosuch']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--batch-sizes", "a,b"])
    with pytest.raises(SystemExit):
        build_parser().parse_args([])                 # a command is required


def test_register_adds_a_benchmark(device, monkeypatch):
    monkeypatch.setattr(bench, "BENCHMARKS", dict(bench.BENCHMARKS))

    @bench.register("toy")
    def _toy(batch_size, device, rng, use_torch):
        W = mm.tensor(rng.standard_normal((4, 4)).astype(np.float32), requires_grad=True,
                      device=device)
        opt = optim.Adam([W])

        def step():
            loss = (W * W).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.item()
        return step, None, 2 * 16

    result = bench.run_benchmarks((3,), repeats=2, use_torch=False, only=["toy"],
                                  device=device, print_fn=None)
    assert [r["benchmark"] for r in result["rows"]] == ["toy"]
