"""How much the KV cache saves: ``Captioner.generate`` with and without it, side by side.

    python tools/bench_kv_cache.py [--lengths 16,64] [--batch 64] [--repeats 5] [--quick]

An untrained Captioner of the default size (d_model 64, 2 layers, 4 heads, 4 image tokens)
writes captions of exactly L tokens (its ``eos_id`` is set to -1, so no row stops early) for a
batch of random images, greedily. The two variants run interleaved, ``repeats`` times each, in
one process; the table gives medians in ms: the whole ``generate`` call, the image encoding
(the same in both), and the decoding alone (the difference), with the ratios no-cache / cache.
Without the cache, step t runs the whole sequence of P + t tokens through the decoder again
(Σ_t (P + t) ≈ L²/2 token-passes); with it, one token per step (L token-passes) plus the
attention over the cached keys. The results also agree: the same tokens, every time.
"""
import argparse
import statistics
import sys
import time

import numpy as np

import minimm as mm
from minimm.data import caption_vocabulary
from minimm.models import Captioner


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(lengths=(16, 64), batch=64, repeats=5, seed=0, print_fn=print):
    vocab_size = len(caption_vocabulary(attributes=True))
    model = Captioner(vocab_size, max_len=max(lengths), rng=np.random.default_rng(seed))
    model.eos_id = -1                      # never generated: every caption runs to max_len
    model.eval()
    images = np.random.default_rng(seed + 1).integers(0, 256, (batch, 3, 32, 32), np.uint8)
    rows = []
    for L in lengths:
        times = {"cache": [], "no_cache": [], "encode": []}
        model.generate(images[:2], max_len=L)                   # warm-up
        for _ in range(repeats):
            with mm.no_grad():
                t, _ = _time(lambda: model.encode_images(images))
            times["encode"].append(t)
            t, with_cache = _time(lambda: model.generate(images, max_len=L, use_cache=True))
            times["cache"].append(t)
            t, without = _time(lambda: model.generate(images, max_len=L, use_cache=False))
            times["no_cache"].append(t)
            if not np.array_equal(mm.to_numpy(with_cache), mm.to_numpy(without)):
                raise AssertionError(f"bench_kv_cache: the cache changed the tokens at L={L}")
            assert with_cache.shape == (batch, L)
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        rows.append({"length": L, "batch": batch, "cache_ms": med["cache"],
                     "no_cache_ms": med["no_cache"], "encode_ms": med["encode"],
                     "speedup": med["no_cache"] / med["cache"],
                     "decode_speedup": (med["no_cache"] - med["encode"])
                     / (med["cache"] - med["encode"])})
    print_fn(f"{'length':>6} {'batch':>5} {'cache ms':>9} {'no-cache ms':>11} {'encode ms':>9} "
             f"{'speed-up':>8} {'decode only':>11}")
    for r in rows:
        print_fn(f"{r['length']:>6} {r['batch']:>5} {r['cache_ms']:>9.1f} "
                 f"{r['no_cache_ms']:>11.1f} {r['encode_ms']:>9.1f} {r['speedup']:>7.2f}x "
                 f"{r['decode_speedup']:>10.2f}x")
    return rows


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="16,64", help="caption lengths, comma-separated")
    p.add_argument("--batch", type=int, default=64, help="images per generate call")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each variant")
    p.add_argument("--quick", action="store_true", help="lengths 4,8, batch 2, 1 repeat")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        run((4, 8), batch=2, repeats=1)
    else:
        run(tuple(int(v) for v in args.lengths.split(",")), args.batch, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
