"""benchmarks/: the parts' two twins compute the same model, and the fair driver runs end to
end (tiny sizes; no time is asserted — speed is measured by the benchmarks, not by tests)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import parts  # noqa: E402


def test_analytic_flops_are_the_layer_counts():
    B = 5
    conv = 2 * B * (32 * 900 * 27 + 64 * 169 * 288 + 128 * 16 * 576)
    lstm = 16 * 2 * B * (64 + 128) * 512
    assert parts.analytic_flops("image", B) == conv + 2 * B * 512 * 10
    assert parts.analytic_flops("text", B) == lstm + 2 * B * 128 * 10
    assert parts.analytic_flops("full", B) == conv + lstm + 2 * B * 640 * 10
    assert parts.analytic_flops("mha", B) == 4 * 2 * (B * 64) * 128 * 128 + 4 * B * 64 * 64 * 128


@pytest.mark.parametrize("part", parts.PARTS)
def test_the_minimm_part_is_float32_and_shaped_as_the_article(part):
    weights, data = parts.make_weights(part), parts.make_data(part, 3)
    assert all(w.dtype == np.float32 for w in weights.values())
    if part == "full":
        assert weights["image.0.W"].shape == (32, 3, 3, 3) and weights["head.W"].shape == (640, 10)
        assert data["images"].shape == (3, 3, 32, 32) and data["ids"].shape == (3, 16)
    step, params = parts.minimm_step(part, weights, data)
    first, second = step(), step()
    assert np.isfinite(first) and second != first          # Adam moved the weights
    assert all(p.dtype == np.float32 and p.grad.dtype == np.float32 for p in params)


@pytest.mark.parametrize("part", parts.PARTS)
def test_both_twins_start_from_the_same_loss(part):
    """Same weights, same inputs: the first losses (before any update) agree, and so do
    the second ones (the same Adam step; PyTorch's second LSTM bias is held at 0)."""
    pytest.importorskip("torch")
    weights, data = parts.make_weights(part), parts.make_data(part, 4)
    mm_step, _ = parts.minimm_step(part, weights, data)
    t_step, _ = parts.torch_step(part, weights, data)
    for _ in range(2):
        a, b = mm_step(), t_step()
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


def test_fast_kernels_give_the_same_first_loss(monkeypatch):
    from minimm.nn import fast as fast_switch
    from minimm.nn.fast import disable_fast_kernels
    monkeypatch.setattr(fast_switch, "MIN_CHWN_BATCH", 0)  # the CHWN kernels for 3 images
    weights, data = parts.make_weights("full"), parts.make_data("full", 3)
    readable = parts.minimm_step("full", weights, data)[0]()
    try:
        fast = parts.minimm_step("full", weights, data, kernels="fast")[0]()
    finally:
        disable_fast_kernels()
    assert fast == pytest.approx(readable, rel=1e-6)


def test_bench_driver_runs_each_framework_in_its_own_process(tmp_path):
    frameworks = "minimm,torch"
    try:
        import torch  # noqa: F401
    except ImportError:
        frameworks = "minimm"
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"),
                           "--parts", "text", "--batch-sizes", "2", "--rounds", "1", "--steps",
                           "1", "--warmup", "1", "--threads", "1", "--frameworks", frameworks,
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    row, = result["rows"]
    assert row["part"] == "text" and row["batch"] == 2
    assert len(result["runs"][0]["minimm"]) == 1                 # one process per round
    assert row["minimm_mb"] >= 0 and result["runs"][0]["minimm memory"]["memory_method"]
    if "torch" in frameworks:
        assert row["loss_gap"] < 1e-5 and row["ratio"][1] <= row["ratio"][0] <= row["ratio"][2]
    runs = [r for fw in frameworks.split(",") for r in result["runs"][0][fw]]
    assert len({r["pid"] for r in runs}) == len(runs)             # a fresh process each
    for r in runs:                                                # and only one framework
        assert r["frameworks_loaded"] == [r["framework"]]
    assert "text" in proc.stdout and "ratio" in proc.stdout or frameworks == "minimm"


def test_bench_driver_rejects_an_unknown_part():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench.py"),
                           "--parts", "nosuch"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "unknown part 'nosuch'" in proc.stderr


def _benchmark_commands(text):
    """(script, argv) of every ``python benchmarks/NAME.py ...`` command in ``text``."""
    import re
    import shlex
    text = re.sub(r"\\\n\s*", " ", text)
    found = []
    for m in re.finditer(r"python3? benchmarks/(\w+)\.py([^`\n|;&#]*)", text):
        argv = [a for a in shlex.split(m.group(2)) if a not in ("...",)]
        found.append((m.group(1), argv))
    return found


def test_every_benchmark_command_in_the_docs_parses():
    import importlib
    """The README, the notes and the chapters print concrete commands (the scripts' docstrings print
    templates with [options]); each must parse with that script's own parser."""
    chapters = os.path.join(ROOT, "chapters")
    docs = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "NOTES.md")]
    docs += sorted(os.path.join(chapters, f) for f in os.listdir(chapters) if f.endswith(".py"))
    seen = 0
    for path in docs:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for script, argv in _benchmark_commands(f.read()):
                module = importlib.import_module(script)
                if hasattr(module, "build_parser"):
                    module.build_parser().parse_args(argv)      # SystemExit on a bad one
                    seen += 1
    assert seen >= 1


def test_the_machine_record_names_an_openblas_kernel_override(monkeypatch):
    import bench
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert bench.blas_env() == {"OPENBLAS_CORETYPE": "Haswell"}
    assert bench._machine()["blas_env"] == {"OPENBLAS_CORETYPE": "Haswell"}
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert bench.blas_env() == {}
