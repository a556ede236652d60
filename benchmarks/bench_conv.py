"""Time the article's three convolutions, forward and backward, minimm against PyTorch.

    python tools/bench_conv.py [--batch 128] [--repeats 30] [--profile] [--threads=N]

Layers (Keras 'valid' padding, as the article): 3→32 on 32×32, 32→64 on 15×15, 64→128 on 6×6,
3×3 kernels, float32. The first layer's input needs no gradient (images), the others do.
Both libraries run in one process, interleaved, so machine noise hits both alike; medians
and fastest runs.
``--profile`` also times minimm's phases (im2col, matmuls, col2im) with raw array calls.
"""
import argparse
import os
import sys
import time

# thread counts must be fixed before NumPy's BLAS and PyTorch's OpenMP start
_THREADS = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), None)
if _THREADS:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = _THREADS
# idle OpenMP threads spin for a while by default, stealing the cores minimm runs on next
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minimm as mm  # noqa: E402
from minimm import functional as F  # noqa: E402
from minimm.functional import conv as conv_impl  # noqa: E402

LAYERS = [  # (name, C_in, C_out, H, input needs a gradient)
    ("conv1 3->32 @32x32", 3, 32, 32, False),
    ("conv2 32->64 @15x15", 32, 64, 15, True),
    ("conv3 64->128 @6x6", 64, 128, 6, True),
]


def _timer(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def minimm_step(x, W, b):
    """Returns (forward ms, backward ms)."""
    ts = {}

    def fwd():
        ts["y"] = F.conv2d(x, W, b)

    tf = _timer(fwd)
    y = ts["y"]
    g = np.ones(y.shape, dtype=np.float32)
    W.grad = b.grad = x.grad = None
    tb = _timer(lambda: y.backward(g))
    return tf, tb


def torch_step(torch, x, W, b):
    ts = {}

    def fwd():
        ts["y"] = torch.nn.functional.conv2d(x, W, b)

    tf = _timer(fwd)
    y = ts["y"]
    g = torch.ones_like(y)
    W.grad = b.grad = x.grad = None
    tb = _timer(lambda: y.backward(g))
    return tf, tb


def profile(x, W, stride=(1, 1), padding=(0, 0), repeats=20):
    """Fastest ms of each phase of minimm's conv (the layout it picks), as raw array calls."""
    C_out, kernel, N = W.shape[0], W.shape[2:], x.shape[0]
    OH, OW = conv_impl._out_size("conv2d", x.shape[2:], kernel, stride, padding)
    layout = conv_impl.Conv2d.choose_layout(x.shape, W.shape, (OH, OW))
    W2 = W.reshape(C_out, -1)
    phases = {}

    def t(name, fn):
        phases.setdefault(f"[{layout}] {name}", []).append(_timer(fn))

    for _ in range(repeats):
        box = {}
        t("im2col", lambda: box.setdefault("col", conv_impl._im2col_array(
            x, kernel, stride, padding, layout)))
        col = box["col"]
        t("fwd matmul", lambda: box.setdefault("y", W2 @ col))
        gy = np.ones((N, C_out, OH * OW), np.float32)
        if layout != "nkp":
            to_nchw, from_nchw = ((C_out, N, -1), (1, 0, 2)), (1, 0, 2)
            if layout == "kpn":
                to_nchw, from_nchw = ((C_out, -1, N), (2, 0, 1)), (1, 2, 0)
            t("output to NCHW", lambda: np.ascontiguousarray(
                box["y"].reshape(to_nchw[0]).transpose(to_nchw[1])))
            t("gy to the columns' order", lambda: box.setdefault("gY", np.ascontiguousarray(
                gy.transpose(from_nchw)).reshape(C_out, -1)))
            gY = box["gY"]
            t("dW matmul", lambda: gY @ col.T)
        else:
            gY = gy
            t("dW matmul + sum", lambda: (gY @ col.transpose(0, 2, 1)).sum(0))
        ones = np.ones((gY.shape[-1], 1), np.float32)
        t("db ones-matmul", lambda: gY @ ones)
        t("dX matmul", lambda: box.setdefault("gcol", W2.T @ gY))
        t("col2im", lambda: conv_impl._col2im_array(box["gcol"], x.shape, kernel, stride,
                                                    padding, layout))
    return {k: float(np.min(v)) for k, v in phases.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--threads", help="BLAS/OpenMP threads for both libraries (--threads=N)")
    args = parser.parse_args(argv)
    try:
        import torch
        if _THREADS:
            torch.set_num_threads(int(_THREADS))
    except ImportError:
        torch = None
        print("torch not installed: minimm figures only")

    rng = np.random.default_rng(0)
    N = args.batch
    threads = _THREADS or "default"
    print(f"batch {N}, float32, 3x3 kernels, padding 0, threads {threads}; "
          f"medians of {args.repeats} runs (ms)")
    header = f"{'layer':22s} {'phase':9s} {'minimm':>8s}"
    print(header + (f" {'torch':>8s} {'ratio':>6s} | best: {'minimm':>7s} {'torch':>7s} "
                    f"{'ratio':>6s}" if torch else ""))
    totals = {"mm": 0.0, "torch": 0.0, "mm best": 0.0, "torch best": 0.0}
    for name, C_in, C_out, H, x_grad in LAYERS:
        xa = rng.standard_normal((N, C_in, H, H)).astype(np.float32)
        Wa = (rng.standard_normal((C_out, C_in, 3, 3)) * 0.1).astype(np.float32)
        ba = np.zeros(C_out, np.float32)
        x = mm.tensor(xa, requires_grad=x_grad)
        W = mm.tensor(Wa, requires_grad=True)
        b = mm.tensor(ba, requires_grad=True)
        times = {"mm": [], "torch": []}
        if torch:
            xt = torch.tensor(xa, requires_grad=x_grad)
            Wt = torch.tensor(Wa, requires_grad=True)
            bt = torch.tensor(ba, requires_grad=True)
        for r in range(args.repeats + 3):  # 3 warm-up rounds, interleaved
            m = minimm_step(x, W, b)
            t = torch_step(torch, xt, Wt, bt) if torch else None
            if r >= 3:
                times["mm"].append(m)
                if torch:
                    times["torch"].append(t)
        arrays = {k: np.array(v) for k, v in times.items() if v}
        med = {k: np.median(a, axis=0) for k, a in arrays.items()}
        best = {k: a.min(axis=0) for k, a in arrays.items()}     # least disturbed run
        step_best = {k: a.sum(axis=1).min() for k, a in arrays.items()}
        rows = [("forward", med["mm"][0], best["mm"][0], 0), ("backward", med["mm"][1],
                                                               best["mm"][1], 1)]
        for phase, m_med, m_best, i in rows:
            line = f"{name:22s} {phase:9s} {m_med:8.2f}"
            if torch:
                line += (f" {med['torch'][i]:8.2f} {m_med / med['torch'][i]:6.2f} | "
                         f"{m_best:13.2f} {best['torch'][i]:7.2f} "
                         f"{m_best / best['torch'][i]:6.2f}")
            print(line)
        totals["mm"] += med["mm"].sum()
        totals["mm best"] += step_best["mm"]
        if torch:
            totals["torch"] += med["torch"].sum()
            totals["torch best"] += step_best["torch"]
            print(f"{name:22s} {'total':9s} {med['mm'].sum():8.2f} {med['torch'].sum():8.2f} "
                  f"{med['mm'].sum() / med['torch'].sum():6.2f} | {step_best['mm']:13.2f} "
                  f"{step_best['torch']:7.2f} {step_best['mm'] / step_best['torch']:6.2f}")
        if args.profile:
            for phase, ms in profile(xa, Wa).items():
                print(f"{'':22s}   {phase:30s} {ms:7.2f}")
    line = f"{'all three':22s} {'fwd+bwd':9s} {totals['mm']:8.2f}"
    if torch:
        line += (f" {totals['torch']:8.2f} {totals['mm'] / totals['torch']:6.2f} | "
                 f"{totals['mm best']:13.2f} {totals['torch best']:7.2f} "
                 f"{totals['mm best'] / totals['torch best']:6.2f}")
    print(line)
    print("(ratio = minimm / torch; 'best' = fastest run, the least disturbed on a shared "
          "machine; profile phases are fastest runs too)")


if __name__ == "__main__":
    main()
