"""Where the runner's work executes: a Dask cluster (``dask.distributed``), the one execution engine.

    --scheduler local  --workers N                 a LocalCluster on this machine (the default); N = 1 runs in
                                                   the runner's own process (one worker thread, no start-up)
    --scheduler tcp://HOST:8786                    an existing cluster (``dask scheduler`` + ``dask worker``)
    --scheduler slurm --cluster-config FILE.toml   a ``dask_jobqueue.SLURMCluster`` from a small TOML file

A SLURM config (every key but ``jobs`` is passed to ``SLURMCluster``; see ``data/cluster-slurm.example.toml``)::

    jobs = 4                  # batch jobs to submit (cluster.scale(jobs=...))
    cores = 8                 # per job
    processes = 8             # worker processes per job (one thread each)
    memory = "32GiB"          # per job
    walltime = "04:00:00"
    queue = "cpu"
    account = "mylab"                 # optional
    job_script_prologue = ["module load python/3.11", "source /path/to/biocodec/.venv/bin/activate"]

Workers run one numeric thread each (the cluster gives the parallelism): the thread limits of
:data:`WORKER_THREAD_ENV` are in the environment *before* a worker imports numpy/torch/TensorFlow (inherited
by local worker processes, exported in the SLURM job script); a remote ``tcp://`` cluster must be started with
them (``OMP_NUM_THREADS=1 dask worker ... --nthreads 1``), and the threads every worker really uses are
recorded in the ``runs`` table (:func:`worker_threads`).  Local worker processes die with the runner, even on
``kill -9`` (``PR_SET_PDEATHSIG`` plus distributed's own parent watch).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from distributed.diagnostics.plugin import WorkerPlugin

#: One thread per worker for every numeric library (the cluster gives the parallelism).
WORKER_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}

SLURM_KEYS = {"jobs", "cores", "processes", "memory", "walltime", "queue", "account", "job_script_prologue",
              "job_extra_directives", "python", "local_directory", "log_directory", "interface"}


class ClusterConfigError(ValueError):
    """A scheduler address or cluster config file the runner cannot use."""


def die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (even by ``kill -9``), and exit
    now if the parent is already gone.  Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: distributed's parent watch still ends the worker
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def _limit_torch_threads() -> None:
    if "torch" in sys.modules:  # already imported by this worker: its pool is sized, shrink it now
        sys.modules["torch"].set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


class _LocalWorkerSetup(WorkerPlugin):
    """Worker plugin of a local process cluster: die with the runner (even on ``kill -9``), one torch thread."""

    name = "biocodec-local-worker"

    def __init__(self, runner_pid: int):
        self.runner_pid = runner_pid

    def setup(self, worker) -> None:
        die_with_parent(self.runner_pid)
        _limit_torch_threads()


class _WorkerThreads(WorkerPlugin):
    """Worker plugin for any cluster: numeric threads limited where the worker's environment allows."""

    name = "biocodec-worker-threads"

    def setup(self, worker) -> None:
        _limit_torch_threads()


def worker_threads() -> dict:
    """What this worker process really runs with (stored in ``runs.worker_threads``)."""
    out = {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].get_num_threads()
    return out


@contextmanager
def worker_environment() -> Iterator[None]:
    """While open, worker processes started from here get :data:`WORKER_THREAD_ENV` before their first
    import (the environment they inherit, and distributed's ``nanny.pre-spawn-environ``)."""
    import dask

    with _thread_environment(), dask.config.set({"distributed.nanny.pre-spawn-environ": dict(WORKER_THREAD_ENV)}):
        yield


@contextmanager
def _thread_environment() -> Iterator[None]:
    """:data:`WORKER_THREAD_ENV` in ``os.environ`` while open; the previous values afterwards."""
    saved = {k: os.environ.get(k) for k in WORKER_THREAD_ENV}
    os.environ.update(WORKER_THREAD_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def read_cluster_config(path: str | Path) -> dict:
    """The SLURM cluster config (TOML) as keyword arguments, validated: unknown keys are refused."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ClusterConfigError(f"cluster config {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClusterConfigError(f"cluster config {path} is not valid TOML: {exc}") from None
    unknown = set(config) - SLURM_KEYS
    if unknown:
        raise ClusterConfigError(f"cluster config {path}: unknown keys {sorted(unknown)} "
                                 f"(known: {', '.join(sorted(SLURM_KEYS))})")
    for key in ("cores", "memory"):
        if key not in config:
            raise ClusterConfigError(f"cluster config {path}: '{key}' is required")
    return config


def slurm_cluster(config: dict):
    """A ``dask_jobqueue.SLURMCluster`` for ``config`` (:func:`read_cluster_config`), not yet scaled.

    Each job runs ``processes`` single-threaded workers; the job script exports the thread limits
    before the worker starts, then the user's ``job_script_prologue``.
    """
    from dask_jobqueue import SLURMCluster

    kwargs = {k: v for k, v in config.items() if k != "jobs"}
    kwargs.setdefault("processes", kwargs["cores"])
    exports = [f"export {k}={v}" for k, v in WORKER_THREAD_ENV.items()]
    kwargs["job_script_prologue"] = exports + list(kwargs.get("job_script_prologue", []))
    kwargs.setdefault("scheduler_options", {"dashboard_address": ":0"})
    return SLURMCluster(**kwargs)


@contextmanager
def one_thread_here() -> Iterator[None]:
    """While open, this process computes as one local worker process does: :data:`WORKER_THREAD_ENV` in the
    environment (read by torch/TensorFlow if they are imported meanwhile) and torch's pool at one thread.

    The in-process cluster of ``--workers 1`` needs it: float32 convolutions and reductions (MS-SSIM,
    learned analysis) may sum in another order on another thread count, and a killed run resumed with a
    different count then stored values that differ in the 7th digit from a clean run (seen in CI)."""
    torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    with _thread_environment():
        _limit_torch_threads()
        try:
            yield
        finally:
            if torch_threads is not None:
                sys.modules["torch"].set_num_threads(torch_threads)


@contextmanager
def connect(scheduler: str = "local", workers: int = 1, cluster_config: str | Path | None = None) -> Iterator:
    """A ``distributed.Client`` for ``scheduler``; the cluster it started (if any) is closed on exit,
    which ends its worker processes."""
    from distributed import Client, LocalCluster

    if scheduler == "local":
        if workers < 1:
            raise ClusterConfigError("--workers must be at least 1")
        # dashboard_address ":0": distributed always serves HTTP (health, metrics); a random port, not 8787
        if workers == 1:  # in this process: one worker thread, nothing to start or ship
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                                   memory_limit=0, silence_logs=logging.ERROR)
            with one_thread_here(), cluster, Client(cluster) as client:
                yield client
            return
        with worker_environment():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", silence_logs=logging.ERROR)
            with cluster, Client(cluster) as client:
                client.register_plugin(_LocalWorkerSetup(os.getpid()))
                yield client
        return
    if scheduler == "slurm":
        if cluster_config is None:
            raise ClusterConfigError("--scheduler slurm needs --cluster-config FILE.toml")
        config = read_cluster_config(cluster_config)
        cluster = slurm_cluster(config)
        with cluster:
            cluster.scale(jobs=int(config.get("jobs", 1)))
            with Client(cluster) as client:
                client.register_plugin(_WorkerThreads())
                yield client
        return
    if scheduler.startswith(("tcp://", "tls://", "ws://", "wss://")):
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ClusterConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            client.register_plugin(_WorkerThreads())
            yield client
        return
    raise ClusterConfigError(f"unknown scheduler {scheduler!r}: use local, slurm or tcp://HOST:PORT")
