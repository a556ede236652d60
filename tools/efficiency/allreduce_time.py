"""Time of one all-reduce of the chapter-08 model's gradients, under mpiexec:

    mpiexec -n 2 python tools/efficiency/allreduce_time.py [--repeats 50] [--out t.json]

Measures ``ProcessGroup.all_reduce_gradients`` (pack every gradient into one flat buffer,
one MPI Allreduce, unpack) against one Allreduce per parameter tensor, each the median of
--repeats after a barrier, and the train-step time of the model for scale. Rank 0 prints.
"""
import argparse
import json
import time

import numpy as np

import minimm as mm
from minimm import distributed
from minimm import functional as F
from minimm.data import captions
from minimm.models import MultiModalModel


def timed(group, fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        group.barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    group = distributed.init()
    vocab = len(captions.caption_vocabulary())
    model = MultiModalModel(vocab, rng=np.random.default_rng(0))
    rng = np.random.default_rng(group.rank)
    B = args.batch_size
    images = mm.tensor(rng.standard_normal((B, 3, 32, 32)).astype(np.float32))
    ids, lengths, labels = rng.integers(2, vocab, (B, 16)), np.full(B, 16), rng.integers(0, 10, B)

    def backward():
        model.zero_grad()
        F.cross_entropy(model(images, ids, lengths), labels).backward()

    t_step = timed(group, backward, 5)
    params = model.parameters()
    grads = [p.grad for p in params]

    def flat():
        for p, g in zip(params, grads):
            p.grad = g
        group.all_reduce_gradients(params, weight=B)

    def per_tensor():
        for p in params:
            group.all_reduce(p.grad.data.copy())

    t_flat = timed(group, flat, args.repeats)
    t_each = timed(group, per_tensor, args.repeats)
    n = sum(p.size for p in params)
    out = {"world_size": group.world_size, "parameters": n, "tensors": len(params),
           "megabytes": 4 * n / 1e6, "flat_allreduce_ms": 1e3 * t_flat,
           "per_tensor_allreduces_ms": 1e3 * t_each,
           f"forward_backward_batch{B}_ms": 1e3 * t_step}
    if group.is_main:
        print(json.dumps(out, indent=2))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
