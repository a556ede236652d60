"""minimm against PyTorch, one train step of the article's model, measured fairly.

    python benchmarks/bench.py [--parts full,image,text,mha] [--batch-sizes 32,128]
                               [--rounds 3] [--steps 10] [--warmup 3] [--threads 2]
                               [--json results.json] [--markdown]

One step = forward + backward + an Adam update, float32 (the parts: ``benchmarks/parts.py``).
How the comparison is made fair:

* each framework runs in a **fresh process of its own** (``benchmarks/worker.py``), never
  both in one: after a matrix product OpenBLAS (NumPy's BLAS) keeps a worker thread spinning
  for about 0.1 s, which slowed the PyTorch steps interleaved with minimm's in one process;
* the processes **alternate** (minimm first in even rounds, PyTorch first in odd ones), for
  ``--rounds`` rounds over all parts, so slow phases of a shared machine hit both alike;
  each row gives the median over the rounds of each process's median step time, with the
  range (min–max) over the rounds, and the ratio as the median of the per-round ratios;
* both are capped at the **same thread count** (OMP/OpenBLAS/MKL variables before either
  library loads, and ``torch.set_num_threads``);
* both get the **same weights and inputs**, drawn once here by minimm's initialisers and a
  seeded generator and written to .npz files in a temporary folder; their first losses
  (before any update) are compared — ``|Δloss|`` shows both compute the same model;
* every parameter and gradient is asserted float32 after a step, in both;
* **peak memory**, in one more process per framework and row: what one step adds to the
  resident set on top of the model, optimiser state and inputs (the high-water mark reset
  after the warm-up, with glibc returning freed blocks at once; see worker.py).

The machine is shared: read the ratios, measured side by side, rather than the absolute
times, and rerun when the ranges are wide. Exit status 1 when a worker fails.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import parts  # noqa: E402


def _csv(cast):
    def parse(text):
        try:
            return [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return parse


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=_csv(str), default=list(parts.PARTS), metavar="P1,P2")
    ap.add_argument("--batch-sizes", type=_csv(int), default=[32, 128], metavar="B1,B2")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (>= 1)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both frameworks")
    ap.add_argument("--frameworks", type=_csv(str), default=["minimm", "torch"])
    ap.add_argument("--kernels", default="default", choices=["default", "fast"],
                    help="minimm's kernels: the library's default, or the fast ones patched in")
    ap.add_argument("--json", default=None, metavar="PATH", help="write every measurement")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    return ap


def _machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": datetime.date.today().isoformat(),
            "load_before": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "blas_env": blas_env()}


def blas_env():
    """The OpenBLAS variables that choose its kernels, where set. OPENBLAS_CORETYPE makes
    NumPy's BLAS run the kernels of the core it names whatever the CPU is (some machines
    set it to an older core for old OpenBLAS builds): on the AVX-512 AMD EPYC of
    benchmarks/NOTES.md, OPENBLAS_CORETYPE=Haswell halves NumPy's float32 matmul rate.
    PyTorch's own kernels ignore it; the workers inherit it, so the record says it."""
    return {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
            if k in os.environ}


def run_worker(framework, part, weights, data, args, memory=False):
    cmd = [sys.executable, os.path.join(HERE, "worker.py"), "--framework", framework,
           "--part", part, "--weights", weights, "--data", data, "--threads", str(args.threads),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if framework == "minimm":
        cmd += ["--kernels", args.kernels]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if memory:   # freed blocks >= 64 KiB go back to the system at once (see worker.py)
        cmd.append("--memory")
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {framework} {part} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _spread(values):
    return statistics.median(values), min(values), max(values)


def summarise(runs, frameworks):
    """Rows {part, batch, <fw>_ms (median, min, max), ratio (…), <fw>_mb, mem_ratio, loss_gap}."""
    rows = []
    for (part, B), by_fw in runs.items():
        row = {"part": part, "batch": B}
        for fw in frameworks:
            meds = [1e3 * statistics.median(r["times"]) for r in by_fw[fw]]
            row[f"{fw}_ms"] = _spread(meds)
            row[f"{fw}_mb"] = by_fw[fw + " memory"]["peak_kb"] / 1024
            row[f"{fw}_first_loss"] = by_fw[fw][0]["first_loss"]
        if len(frameworks) == 2:
            a, b = frameworks
            ratios = [statistics.median(x["times"]) / statistics.median(y["times"])
                      for x, y in zip(by_fw[a], by_fw[b])]
            row["ratio"] = _spread(ratios)
            row["mem_ratio"] = row[f"{a}_mb"] / row[f"{b}_mb"] if row[f"{b}_mb"] > 0 else None
            row["loss_gap"] = abs(row[f"{a}_first_loss"] - row[f"{b}_first_loss"])
            row["samples_per_s"] = B / (row[f"{a}_ms"][0] / 1e3)
        rows.append(row)
    return rows


def format_table(rows, frameworks, markdown=False):
    def ms(t):
        return f"{t[0]:.1f} [{t[1]:.1f}–{t[2]:.1f}]"
    cols = ["part", "batch"] + [f"{fw} ms" for fw in frameworks]
    if len(frameworks) == 2:
        cols += ["ratio", f"{frameworks[0]} MB", f"{frameworks[1]} MB", "mem ratio", "|Δloss|"]
    lines = []
    for r in rows:
        cells = [r["part"], str(r["batch"])] + [ms(r[f"{fw}_ms"]) for fw in frameworks]
        if len(frameworks) == 2:
            q = r["ratio"]
            cells += [f"{q[0]:.2f} [{q[1]:.2f}–{q[2]:.2f}]", f"{r[f'{frameworks[0]}_mb']:.1f}",
                      f"{r[f'{frameworks[1]}_mb']:.1f}",
                      "-" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}",
                      f"{r['loss_gap']:.1e}"]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(c), *(len(l[i]) for l in lines)) for i, c in enumerate(cols)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i > 0 else c.ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(cols), "-" * (sum(widths) + 2 * len(widths))] + [fmt(l) for l in lines])


def main(argv=None):
    args = build_parser().parse_args(argv)
    for p in args.parts:
        parts.check_part(p)
    if args.rounds < 1 or args.steps < 1 or args.warmup < 1 or args.threads < 1:
        raise SystemExit("error: --rounds, --steps, --warmup and --threads must be >= 1")
    frameworks = args.frameworks
    machine = _machine()
    print(f"benchmarks/bench.py {machine['date']}: {machine['cpu']}, {machine['cpus']} CPUs, "
          f"Python {machine['python']}; {args.threads} threads each; {args.rounds} rounds x "
          f"{args.steps} steps (after {args.warmup} warm-up) per process; load average "
          f"{machine['load_before']}", flush=True)
    if machine["blas_env"]:
        print("  note: " + " ".join(f"{k}={v}" for k, v in machine["blas_env"].items())
              + " is set: NumPy's BLAS runs the kernels it names, not the best for this CPU "
              "(see blas_env in benchmarks/bench.py)", flush=True)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="minimm-bench-") as tmp:
        files = {}
        import numpy as np
        for part in args.parts:
            wpath = os.path.join(tmp, f"{part}-weights.npz")
            np.savez(wpath, **parts.make_weights(part))
            for B in args.batch_sizes:
                dpath = os.path.join(tmp, f"{part}-{B}-data.npz")
                np.savez(dpath, **parts.make_data(part, B))
                files[part, B] = (wpath, dpath)
                runs[part, B] = {fw: [] for fw in frameworks}
        versions = {}
        for (part, B), (wpath, dpath) in files.items():
            for fw in frameworks:
                res = runs[part, B][fw + " memory"] = run_worker(fw, part, wpath, dpath, args,
                                                                 memory=True)
                print(f"  memory  {part:5s} B={B:<4d} {fw:6s} +{res['peak_kb'] / 1024:.1f} MB "
                      f"(first loss {res['first_loss']:.6f})", flush=True)
        for r in range(args.rounds):
            for k, (part, B) in enumerate(files):
                order = frameworks if (r + k) % 2 == 0 else frameworks[::-1]
                for fw in order:
                    res = run_worker(fw, part, *files[part, B], args)
                    versions[fw] = res["version"]
                    versions["numpy"] = res["numpy"]
                    runs[part, B][fw].append(res)
                    print(f"  round {r + 1} {part:5s} B={B:<4d} {fw:6s} "
                          f"{1e3 * statistics.median(res['times']):8.1f} ms", flush=True)
    rows = summarise(runs, frameworks)
    machine["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print("\nversions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
          + f"; load average after {machine['load_after']}")
    print("ms: median over rounds of each process's median step [min–max over rounds]; "
          "ratio = minimm / torch per round; MB: peak resident memory the steps add\n")
    print(format_table(rows, frameworks, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "versions": versions, "args": vars(args),
                       "rows": rows, "runs": [{"part": p, "batch": B, **v}
                                              for (p, B), v in runs.items()]}, f, indent=1)
    return rows


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
