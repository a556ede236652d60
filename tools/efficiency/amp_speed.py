"""Train-step time of float32 against mixed precision (float16 compute, float32 masters, loss
scaling) on the CPU, side by side in one process, median of --repeats steps.

    python tools/efficiency/amp_speed.py [--repeats 5] [--batch-size 32] [--out amp.json]

Models: an MLP (2 → 256 → 256 → 3, batch 512) and the chapter-08 MultiModalModel. On a CPU
NumPy has no float16 BLAS, so the float16 products are expected to be slower: this measures
by how much. (On a GPU, float16 is the point: tensor cores and half the memory traffic.)
"""
import argparse
import json
import os
import time

import numpy as np

import minimm as mm
from minimm import amp, nn, optim
from minimm import functional as F
from minimm.data import captions
from minimm.models import MultiModalModel


def step_fn(model, inputs, labels, mixed):
    opt = optim.Adam(model.parameters(), lr=1e-3)
    scaler = amp.GradScaler(init_scale=2.0 ** 10)

    def step():
        if mixed:
            with amp.autocast(model):
                logits = model(*inputs)
        else:
            logits = model(*inputs)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        if mixed:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    return step


def median_time(step, repeats):
    step()                                           # warm-up (buffers, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    rng = np.random.default_rng(0)
    vocab = len(captions.caption_vocabulary())
    B = args.batch_size
    cases = {
        "mlp 2-256-256-3, batch 512": (
            lambda: nn.Sequential(nn.Linear(2, 256, rng=np.random.default_rng(0)), nn.ReLU(),
                                  nn.Linear(256, 256, rng=np.random.default_rng(1)), nn.ReLU(),
                                  nn.Linear(256, 3, rng=np.random.default_rng(2))),
            (mm.tensor(rng.standard_normal((512, 2)).astype(np.float32)),),
            rng.integers(0, 3, 512)),
        f"chapter-08 MultiModalModel, batch {B}": (
            lambda: MultiModalModel(vocab, rng=np.random.default_rng(0)),
            (mm.tensor(rng.standard_normal((B, 3, 32, 32)).astype(np.float32)),
             rng.integers(2, vocab, (B, 16)), np.full(B, 16)),
            rng.integers(0, 10, B)),
    }
    results = {}
    for name, (make, inputs, labels) in cases.items():
        t32 = median_time(step_fn(make(), inputs, labels, False), args.repeats)
        t16 = median_time(step_fn(make(), inputs, labels, True), args.repeats)
        results[name] = {"float32_ms": 1e3 * t32, "mixed_ms": 1e3 * t16, "ratio": t16 / t32}
        print(f"{name}: float32 {1e3 * t32:.1f} ms/step, mixed precision {1e3 * t16:.1f} "
              f"ms/step, {t16 / t32:.1f}x the float32 time", flush=True)
    results["threads"] = os.environ.get("OMP_NUM_THREADS", "default")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
