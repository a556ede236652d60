"""The article's text branch, Embedding(1000, 64) + LSTM(64 -> 128), forward and backward:
minimm's readable kernels against its fast ones.

    python benchmarks/bench_lstm.py [--batch 128] [--steps 16] [--repeats 30] [--threads 2]
                                    [--lengths]

The loss is Σ h_T ⊙ G for a fixed random G (the classifier uses h_T only); with
``--lengths`` the captions are padded (random lengths 1..steps), as in training. Both are
NumPy, so they alternate in one process; medians of the forward and the backward, in ms.
PyTorch is compared in benchmarks/bench.py (separate processes).
"""
import argparse
import statistics
import time

import worker  # benchmarks/worker.py: cap_threads, shared by every script


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", action="store_true")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    worker.cap_threads(args.threads)
    import numpy as np
    import minimm as mm
    from minimm import nn
    from minimm.nn import fast

    rng = np.random.default_rng(0)
    emb, lstm = nn.Embedding(1000, 64, rng=rng), nn.LSTM(64, 128, rng=rng)
    ids = rng.integers(0, 1000, size=(args.batch, args.steps))
    lengths = rng.integers(1, args.steps + 1, args.batch) if args.lengths else None
    G = mm.tensor(rng.standard_normal((args.batch, 128)).astype(np.float32))

    def step():
        emb.zero_grad()
        lstm.zero_grad()
        t0 = time.perf_counter()
        _, (h, _) = lstm(emb(ids), lengths=lengths)
        loss = (h * G).sum()
        t1 = time.perf_counter()
        loss.backward()
        return t1 - t0, time.perf_counter() - t1

    def fast_step():
        with fast.fast_kernels():
            return step()
    times = {"readable": [], "fast": []}
    for r in range(args.repeats + 3):
        order = [("readable", step), ("fast", fast_step)]
        for name, run in (order if r % 2 == 0 else order[::-1]):
            t = run()
            if r >= 3:
                times[name].append(t)
    print(f"Embedding(1000,64) + LSTM(64->128), T={args.steps}, B={args.batch}, "
          f"{'padded' if args.lengths else 'full-length'} captions, {args.threads} threads, "
          f"medians of {args.repeats} (ms)")
    for name, ts in times.items():
        fwd, bwd = (1e3 * statistics.median(t[i] for t in ts) for i in (0, 1))
        print(f"{name:9s} forward {fwd:7.2f}  backward {bwd:7.2f}  total {fwd + bwd:7.2f}")


if __name__ == "__main__":
    main()
