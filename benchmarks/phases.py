"""Where a train step's time goes, per phase, in minimm and in PyTorch (torch.profiler).

    python benchmarks/phases.py [--part full] [--batch 128] [--steps 10] [--threads 2]
                                 [--framework minimm|torch] [--top 25]

Runs one framework per process (call it twice to get both; the other framework is never
imported). Same parts, weights and inputs as bench.py.

minimm: every :class:`minimm.Function` subclass's ``forward`` and ``backward`` and the
optimiser's ``step`` are wrapped with timers, and so are the phase functions that the
kernels name (``PHASES`` below: im2col, col2im, pooling, …). Times are *exclusive*: a phase
called inside another is subtracted from its caller, and each line is keyed by the
outermost Function it ran in ("Conv2d.backward > MatMul.forward"). What no timer covers is
Python, graph bookkeeping and the loss's ``item()``: the "(rest of the step)" line.

PyTorch: ``torch.profiler`` over the same steps, operators by self CPU time.
"""
import argparse
import collections
import functools
import importlib
import time

import worker  # benchmarks/worker.py: cap_threads, shared by every script

# functions inside the kernels worth timing on their own (module, name): those that exist
PHASES = [
    ("minimm.functional.conv", "_im2col_array"),
    ("minimm.functional.conv", "_col2im_array"),
    ("minimm.functional.fast.conv", "im2col_chwn"),
    ("minimm.functional.fast.conv", "col2im_chwn"),
    ("minimm.functional.fast.conv", "to_chwn"),
    ("minimm.functional.fast.conv", "conv_forward_matmul"),
    ("minimm.functional.fast.conv", "conv_backward_dW"),
    ("minimm.functional.fast.conv", "conv_backward_dcol"),
    ("minimm.functional.fast.conv", "pool_forward"),
    ("minimm.functional.fast.conv", "pool_backward"),
    ("minimm.functional.fast.conv", "relu_pool_forward"),
    ("minimm.functional.fast.conv", "relu_pool_backward"),
]


def _profile_minimm(step, steps, top):
    import minimm
    from minimm import optim
    stats = collections.defaultdict(float)
    calls = collections.Counter()
    stack = []   # [name, child time]

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            outer = stack[0][0] if stack else None
            key = name if outer is None or outer == name else f"{outer} > {name}"
            stack.append([name, 0.0])
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                _, child = stack.pop()
                stats[key] += dt - child
                calls[key] += 1
                if stack:
                    stack[-1][1] += dt
        return wrapper

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in set(subclasses(minimm.Function)):
        for meth in ("forward", "backward"):
            if meth in cls.__dict__:
                setattr(cls, meth, timed(f"{cls.__name__}.{meth}", cls.__dict__[meth]))
    for cls in set(subclasses(optim.Optimizer)):
        if "step" in cls.__dict__ or "_update" in cls.__dict__:
            cls.step = timed(f"{cls.__name__}.step", cls.step)
    for mod_name, fn_name in PHASES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        if hasattr(mod, fn_name):
            setattr(mod, fn_name, timed(fn_name, getattr(mod, fn_name)))
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    total = time.perf_counter() - t0
    covered = sum(stats.values())
    rows = sorted(stats.items(), key=lambda kv: -kv[1])
    print(f"minimm: {1e3 * total / steps:.1f} ms per step (with timers), {steps} steps")
    print(f"{'phase (exclusive)':62s} {'ms/step':>8s} {'%':>6s} {'calls/step':>10s}")
    for key, t in rows[:top]:
        print(f"{key:62s} {1e3 * t / steps:8.2f} {100 * t / total:5.1f}% "
              f"{calls[key] / steps:10.1f}")
    rest = sum(t for _, t in rows[top:])
    if rest:
        print(f"{'(other phases)':62s} {1e3 * rest / steps:8.2f} {100 * rest / total:5.1f}%")
    print(f"{'(rest of the step: Python, graph bookkeeping, item())':62s} "
          f"{1e3 * (total - covered) / steps:8.2f} {100 * (total - covered) / total:5.1f}%")


def _profile_torch(step, steps, top):
    import torch
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - t0
    print(f"torch: {1e3 * total / steps:.1f} ms per step (under the profiler), {steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="full")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--framework", choices=["minimm", "torch"], default="minimm")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--kernels", default="default", choices=["default", "fast"])
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    worker.cap_threads(args.threads)
    import parts
    weights, data = parts.make_weights(args.part), parts.make_data(args.part, args.batch)
    if args.framework == "torch":
        import torch
        torch.set_num_threads(args.threads)
        step, _ = parts.torch_step(args.part, weights, data)
    else:
        step, _ = parts.minimm_step(args.part, weights, data, args.kernels)
    for _ in range(args.warmup):
        step()
    print(f"part {args.part}, batch {args.batch}, {args.threads} threads")
    (_profile_torch if args.framework == "torch" else _profile_minimm)(step, args.steps, args.top)


if __name__ == "__main__":
    main()
