"""The article's three convolution layers, forward + backward, one minimm kernel against another.

    python benchmarks/bench_conv.py [--batch 128] [--repeats 20] [--threads 2]

Layers (Keras 'valid' padding, as the article): 3→32 on 32×32, 32→64 on 15×15, 64→128 on
6×6, 3×3 kernels, float32, each followed by ReLU and 2×2 max pooling as in the model. The
first layer's input needs no gradient (images), the others do. Variants, all NumPy, so they
alternate in one process:

    readable      F.conv2d → F.relu → F.max_pool2d (the kernels the chapters print)
    fast im2col   the CHWN kernels of minimm.functional.fast, im2col engine, not fused
    fast winograd the same with Winograd's F(2×2, 3×3) engine for every layer
    fused         the fused Conv-ReLU-MaxPool Function (the engine the library picks)

Medians in ms; PyTorch is compared in benchmarks/bench.py (separate processes).
"""
import argparse
import statistics
import time

import worker  # benchmarks/worker.py: cap_threads, shared by every script


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    return ap


LAYERS = [("conv1 3->32 @32x32", 3, 32, 32, False), ("conv2 32->64 @15x15", 32, 64, 15, True),
          ("conv3 64->128 @6x6", 64, 128, 6, True)]


def main(argv=None):
    args = build_parser().parse_args(argv)
    worker.cap_threads(args.threads)
    import numpy as np
    import minimm as mm
    from minimm import functional as F
    from minimm.functional.fast import conv as fast

    def separate(x, W, b):
        return fast.max_pool2d(F.relu(fast.conv2d(x, W, b)), 2)

    def engine(minimum):
        def run(x, W, b):
            saved, fast.WINOGRAD_MIN_CHANNELS = fast.WINOGRAD_MIN_CHANNELS, minimum
            try:
                return separate(x, W, b)
            finally:
                fast.WINOGRAD_MIN_CHANNELS = saved
        return run

    variants = {"readable": lambda x, W, b: F.max_pool2d(F.relu(F.conv2d(x, W, b)), 2),
                "fast im2col": engine(None), "fast winograd": engine(1),
                "fused": lambda x, W, b: fast.conv2d_relu_max_pool2d(x, W, b, 1, 0, 2)}
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, float32, {args.threads} threads, medians of {args.repeats} "
          f"(ms, forward + backward)")
    print(f"{'layer':22s}" + "".join(f"{name:>15s}" for name in variants))
    for name, C, C_out, H, needs_x in LAYERS:
        xa = rng.standard_normal((args.batch, C, H, H)).astype(np.float32)
        Wa = (rng.standard_normal((C_out, C, 3, 3)) * 0.1).astype(np.float32)
        ba = np.zeros(C_out, np.float32)
        times = {v: [] for v in variants}
        for r in range(args.repeats + 2):
            for v, run in (list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]):
                x = mm.tensor(xa, requires_grad=needs_x)
                W, b = mm.tensor(Wa, requires_grad=True), mm.tensor(ba, requires_grad=True)
                t0 = time.perf_counter()
                y = run(x, W, b)
                y.backward(mm.Tensor(np.ones(y.shape, np.float32)))
                if r >= 2:
                    times[v].append(time.perf_counter() - t0)
        print(f"{name:22s}" + "".join(f"{1e3 * statistics.median(t):15.2f}"
                                       for t in times.values()), flush=True)


if __name__ == "__main__":
    main()
