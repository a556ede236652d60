"""The command line (`python -m minimm demo`). (The benchmarks live in benchmarks/ and are
tested by tests/test_benchmarks.py.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

from minimm.__main__ import build_parser, run_demo, spiral_data

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
