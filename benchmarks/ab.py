"""minimm's readable kernels against its fast ones, one train step of a part, in one process.

    python benchmarks/ab.py [--parts full,image,text,mha] [--batch-sizes 32,128]
                            [--steps 20] [--threads 2] [--chwn-from N]

Both variants are NumPy, so they can share a process (unlike minimm and PyTorch, see
bench.py): the two steps alternate, A B B A A B …, and each row gives the medians and the
ratio fast / readable. This is the quick check of a kernel change; bench.py is the
comparison with PyTorch. ``--chwn-from 0`` puts every batch on the CHWN kernels, which the
fast switch otherwise leaves to the readable ones below ``nn.fast.MIN_CHWN_BATCH`` images
(how that threshold was measured).
"""
import argparse
import statistics
import time

import worker  # benchmarks/worker.py: cap_threads, shared by every script



def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="full,image,text,mha")
    ap.add_argument("--batch-sizes", default="32,128")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chwn-from", type=int, default=None, metavar="N",
                    help="nn.fast.MIN_CHWN_BATCH for the fast kernels (default the library's)")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    worker.cap_threads(args.threads)
    import parts
    from minimm.nn import fast
    if args.chwn_from is not None:
        fast.MIN_CHWN_BATCH = args.chwn_from
    print(f"{'part':6s}{'batch':>6s}{'readable ms':>13s}{'fast ms':>10s}{'fast/readable':>15s}")
    for part in args.parts.split(","):
        for B in (int(b) for b in args.batch_sizes.split(",")):
            weights, data = parts.make_weights(part), parts.make_data(part, B)
            readable, _ = parts.minimm_step(part, weights, data)
            with fast.fast_kernels():
                quick, _ = parts.minimm_step(part, weights, data)

            def fast_step():
                with fast.fast_kernels():
                    return quick()
            times = {"readable": [], "fast": []}
            for i in range(args.warmup + args.steps):
                order = [("readable", readable), ("fast", fast_step)]
                for name, step in (order if i % 2 == 0 else order[::-1]):
                    t0 = time.perf_counter()
                    step()
                    if i >= args.warmup:
                        times[name].append(time.perf_counter() - t0)
            r, f = (1e3 * statistics.median(times[k]) for k in ("readable", "fast"))
            print(f"{part:6s}{B:>6d}{r:>13.1f}{f:>10.1f}{f / r:>15.2f}", flush=True)


if __name__ == "__main__":
    main()
