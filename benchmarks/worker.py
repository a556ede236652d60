"""One framework, one part, one batch size, in a fresh process: the unit that bench.py runs.

    python benchmarks/worker.py --framework minimm|torch --part full --weights W.npz \
        --data D.npz --threads 2 [--steps 10] [--warmup 3]

Prints one JSON object: the step times (s), the first loss (before any update) and the
thread settings. The thread count is fixed through the environment (OMP/OpenBLAS/MKL)
before NumPy or PyTorch is imported, and for PyTorch also by ``torch.set_num_threads``.

``--memory`` measures the peak memory of a step instead of its time: after the warm-up steps
(so that libraries' lazily loaded code, thread pools and Adam's buffers are in place),
Linux's resident-set high-water mark is reset (``/proc/self/clear_refs`` ← 5) and two more
steps run; the figure is VmHWM after them minus VmRSS at the reset — the memory one step
needs on top of the model, its optimiser state and the inputs (activations, gradients,
workspace). bench.py starts these processes with ``MALLOC_MMAP_THRESHOLD_=65536`` so that
glibc returns every freed block of 64 KiB or more to the system at once (otherwise memory
cached from an earlier step would hide part of the peak); that setting slows allocation,
which is why time and memory are measured in separate processes. Where the reset is
refused, ``ru_maxrss`` minus the same baseline (an upper bound).
"""
import argparse
import json
import os
import sys
import time

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cap_threads(threads):
    """Cap every BLAS / OpenMP pool at ``threads`` (it must run before NumPy or PyTorch loads)
    and put this folder and the repository root on ``sys.path``, so that ``import parts`` and
    ``import minimm`` find this checkout. Every benchmark script calls it first."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    here = os.path.dirname(os.path.abspath(__file__))
    for i, folder in enumerate((here, os.path.dirname(here))):
        if folder not in sys.path:
            sys.path.insert(i, folder)


def _status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM after clear_refs"
    except OSError:
        return "ru_maxrss"


def _peak_kb(method):
    if method.startswith("VmHWM"):
        return _status_kb("VmHWM")
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", choices=["minimm", "torch"], required=True)
    ap.add_argument("--part", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--memory", action="store_true", help="measure peak memory, not time")
    ap.add_argument("--kernels", default="default", choices=["default", "fast"],
                    help="minimm: the library's kernels, or the fast ones patched in")
    args = ap.parse_args(argv)
    cap_threads(args.threads)

    import numpy as np
    import parts
    parts.check_part(args.part)
    with np.load(args.weights) as f:
        weights = {k: f[k] for k in f.files}
    with np.load(args.data) as f:
        data = {k: f[k] for k in f.files}
    info = {"framework": args.framework, "part": args.part, "threads": args.threads,
            "pid": os.getpid(), "frameworks_loaded": None}
    if args.framework == "torch":
        import torch
        torch.set_num_threads(args.threads)
        info.update(version=torch.__version__, torch_threads=torch.get_num_threads())
        step, params = parts.torch_step(args.part, weights, data)

        def dtypes():
            return [(str(p.dtype).replace("torch.", ""),
                     None if p.grad is None else str(p.grad.dtype).replace("torch.", ""))
                    for p in params if p.requires_grad]
    else:
        import minimm
        info.update(version=minimm.__version__, minimm_path=os.path.dirname(minimm.__file__))
        step, params = parts.minimm_step(args.part, weights, data, args.kernels)
        info["kernels"] = args.kernels

        def dtypes():
            return [(str(p.dtype), None if p.grad is None else str(p.grad.dtype)) for p in params]
    info["numpy"] = np.__version__

    import gc
    times = []
    for i in range(args.warmup + (0 if args.memory else args.steps)):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
        if i == 0:
            first_loss = loss
            # float32 end to end: every parameter and gradient after a step (a float64 one
            # would double the cost and make the comparison meaningless)
            bad = [(k, d) for k, d in enumerate(dtypes()) if d != ("float32", "float32")]
            if bad:
                raise SystemExit(f"worker {args.framework} {args.part}: parameters (index, "
                                 f"(dtype, grad dtype)) not float32 after a step: {bad}")
    if args.memory:
        gc.collect()
        method = _reset_peak()
        base_kb = _status_kb("VmRSS")
        for _ in range(2):
            loss = step()
        info.update(peak_kb=_peak_kb(method) - base_kb, base_kb=base_kb, memory_method=method,
                    malloc_mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_"))
    if not np.isfinite(loss):
        raise SystemExit(f"worker {args.framework} {args.part}: non-finite loss {loss}")
    # the other framework was never imported here
    info["frameworks_loaded"] = sorted(m for m in ("minimm", "torch") if m in sys.modules)
    info.update(first_loss=first_loss, last_loss=loss, times=times[args.warmup:],
                warmup_times=times[:args.warmup], n_params=len(params))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
