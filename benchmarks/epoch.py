"""Seconds for one CIFAR-10 training epoch of the article's full model (image + text), as
``python -m minimm train`` runs it: real data, synthetic captions with their lengths,
Adam, batch 128 by default.

    python benchmarks/epoch.py --data /work/data/cifar10/cifar-10-binary.tar.gz \
        [--batch-size 128] [--limit-train N] [--threads 2] [--kernels default|fast]

The figure is the ``train_seconds_per_epoch`` that the train command writes to
metrics.json (the training loop only: no data loading, no evaluation), and, with
``--limit-train``, scaled to 50,000 images. The thread count is fixed in the environment
before NumPy loads.
"""
import argparse
import json
import os
import tempfile
import time

import worker  # benchmarks/worker.py: cap_threads, shared by every script


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kernels", default="default", choices=["default", "fast"])
    ap.add_argument("--model", default="multimodal")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    worker.cap_threads(args.threads)
    if args.kernels == "fast":
        from minimm.nn.fast import enable_fast_kernels
        enable_fast_kernels()
    from minimm.__main__ import main as cli
    with tempfile.TemporaryDirectory(prefix="minimm-epoch-") as out:
        cmd = ["train", "--data", args.data, "--model", args.model, "--epochs", "1",
               "--batch-size", str(args.batch_size), "--out", out, "--no-progress",
               "--limit-test", "1000"]
        if args.limit_train:
            cmd += ["--limit-train", str(args.limit_train)]
        t0 = time.perf_counter()
        code = cli(cmd)
        wall = time.perf_counter() - t0
        if code:
            raise SystemExit(code)
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
    n = metrics["train_samples"]
    seconds = metrics["train_seconds_per_epoch"]
    print(json.dumps({"train_samples": n, "batch_size": args.batch_size,
                      "kernels": args.kernels, "threads": args.threads,
                      "train_seconds": seconds, "seconds_per_50000": seconds * 50000 / n,
                      "wall_seconds": wall, "test_accuracy_1000": metrics["test_accuracy"]}))


if __name__ == "__main__":
    main()
