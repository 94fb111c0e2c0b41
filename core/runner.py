"""Batch runner: every image × codec × setting (× colour mode) into the DuckDB store.

    python -m core.runner                               # embedded default data → results.duckdb
    python -m core.runner --data-root DIR --db out.duckdb --codecs jpeg,jpeg2000,png
    python -m core.runner --stage 2 --data-root ../shared/data
    python -m core.runner --settings "jpeg=20,80;jpeg2000=50,10"

Stages run the catalog's ``test`` split by default (``--split all`` adds train/val images);
every row records its ``split`` and whether the codec's checkpoints (``in_codec_training``)
or the segmenter behind its downstream columns (``in_segmenter_training``) saw the image.

Execution is Dask (:mod:`core.cluster`): ``--workers N`` starts a local cluster, ``--scheduler
tcp://HOST:PORT`` uses an existing one, ``--scheduler slurm --cluster-config FILE.toml`` submits SLURM
jobs.  Each image is one task (load + the downstream evaluator's preparation) and each of its codecs one
more; learned models load once per worker, before timing (``runs.load_s``); ``--repeat K`` stores the
median of K encodes/decodes.  The runner process is the only writer: it holds ``DB.lock`` for the run and
opens the database only to write a batch of finished rows (every 2 s), so the dashboard can read it and
show the run's progress (``runs.planned_rows`` / ``rows_written``) while it goes.

Resumable: rows already stored without error by the same codec version (``Codec.version_for`` the
image's channel count: library, version and parameters, or the hash of the learned checkpoint that
codes it) and the same metric code
(``metrics_version``) are skipped, so a killed run picks up where it stopped (rows are
written in batches, each in one transaction), a re-run adds nothing, and new weights, a codec
upgrade or a metric change recompute their rows.  A
failing (image, codec, setting) is stored with its ``error`` and the run carries on.  Combinations a codec does not support (e.g. JPEG on 16-bit) are
skipped and counted, not stored.  The runner is the store's only writer.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

from core import store
from core.catalog import ImageRef
from core.codecs import available_codecs, get_codec, parse_codec_list
from core.datasets import embedded_refs, folder_refs, load_ref
from core.evaluate import evaluate
from core.io import SUPPORTED_SUFFIXES
from core.paths import REPO_ROOT, default_db
from core.pipeline import build_encoder
from core.provenance import metrics_version, row_flags
from core.setting_text import format_setting, parse_sweep_spec

_MISSING = object()  # not stored: differs from every version
VERSIONED_PACKAGES = ("numpy", "torch", "compressai", "imagecodecs", "glymur", "pillow", "scikit-image",
                      "pytorch-msssim", "duckdb", "tensorflow-cpu", "stardist")


@dataclass(frozen=True)
class Task:
    """One row to compute: a codec at a setting in a colour mode."""

    codec: str
    setting: object
    colour_mode: str = "joint"


@dataclass
class Job:
    """All pending tasks of one image (the image is loaded and segmented once per job; each codec's
    tasks are one unit of work)."""

    ref: ImageRef
    tasks: list[Task] = field(default_factory=list)

    def by_codec(self) -> list[list[Task]]:
        """The tasks grouped by codec, in order: the work units of one image."""
        groups: dict[str, list[Task]] = {}
        for task in self.tasks:
            groups.setdefault(task.codec, []).append(task)
        return list(groups.values())


# --------------------------------------------------------------------------- planning


def parse_settings(text: str | None, codecs: list[str]) -> dict[str, tuple]:
    """``"jpeg=10,90;jpeg2000=50"`` or ``"10,50,90"`` (for every listed codec) → {codec: settings}."""
    result = parse_sweep_spec(text, codecs)
    for name in result:
        get_codec(name)  # raises with the list of known names
    return result


@lru_cache(maxsize=None)
def _codec(name: str):
    return get_codec(name)


def plan_tasks(image_bit_depth: int, channels: int, codecs: list[str], settings: dict[str, tuple],
               colour_modes: tuple[str, ...] | None) -> tuple[list[Task], int]:
    """Tasks for an image of this depth/channel count, and how many were unsupported (skipped).

    ``colour_modes`` None means: 'joint' for every codec, plus 'per_channel' for learned codecs with both a
    gray and a colour model on RGB images (the colour switch the product compares: the 3-channel model vs the
    1-channel one per plane).  A gray-only learned family codes gray images only; ask for
    ``colour_modes=('per_channel',)`` (``--colour-modes``) to run it on RGB planes.
    """
    tasks, unsupported = [], 0
    for name in codecs:
        codec = _codec(name)
        if colour_modes is None:
            switch = codec.family == "learned" and channels == 3 and {1, 3} <= set(codec.channels)
            modes = ("joint", "per_channel") if switch else ("joint",)
        else:
            modes = tuple(m for m in colour_modes if m == "joint" or channels == 3)
        for mode in modes:
            effective_channels = 1 if mode == "per_channel" else channels
            for setting in settings.get(name, codec.default_settings):
                if codec.supports(image_bit_depth, effective_channels):
                    tasks.append(Task(name, setting, mode))
                else:
                    unsupported += 1
    return tasks, unsupported


# --------------------------------------------------------------------------- work units (run on Dask workers)


@dataclass(frozen=True)
class ImageInfo:
    """What planning needs to know about an image: its bit depth, channels and size (None: unreadable)."""

    bit_depth: int | None
    channels: int | None
    height: int | None
    width: int | None


@dataclass
class PreparedImage:
    """An image loaded once for all its codec tasks, with its downstream evaluator's preparation
    (e.g. the segmentation of the original); ``error`` says why it could not be loaded."""

    ref: ImageRef
    image: object = None
    downstream: object = None
    prepared: object = None
    error: str | None = None

    def __getstate__(self) -> dict:
        """Pickled (Dask moving it to another worker) without the evaluator: the receiving process takes its
        own (:func:`_downstream`, whose models each process loads once), so no task carries a network — a
        Keras model with custom layers (anti-aliased StarDist) cannot be pickled at all."""
        return {**self.__dict__, "downstream": None, "has_downstream": self.downstream is not None}

    def __setstate__(self, state: dict) -> None:
        has_downstream = state.pop("has_downstream", False)
        self.__dict__.update(state)
        if has_downstream:
            self.downstream = _downstream(self.ref)


def peek_image(ref: ImageRef) -> ImageInfo:
    """Bit depth, channels and size of an image (Nones when it cannot be read)."""
    try:
        image = load_ref(ref)
    except Exception:
        return ImageInfo(None, None, None, None)
    return ImageInfo(image.bit_depth, image.channels, image.height, image.width)


def _downstream(ref: ImageRef):
    """The downstream-fidelity evaluator of this image's stage/dataset, or None."""
    try:
        from core.segmentation import downstream_for
    except ImportError:
        return None
    return downstream_for(ref)


def prepare_image(ref: ImageRef) -> PreparedImage:
    """Load ``ref`` and prepare its downstream comparison (once per image, shared by its codec tasks)."""
    try:
        image = load_ref(ref)
        downstream = _downstream(ref)
        prepared = downstream.prepare(image, ref) if downstream else None
    except Exception as exc:
        return PreparedImage(ref, error=f"load: {type(exc).__name__}: {exc}")
    return PreparedImage(ref, image, downstream, prepared)


#: seconds each learned codec took to load its models in this process (measured once, before timing)
_LOAD_SECONDS: dict[str, float] = {}


def load_times() -> dict[str, float]:
    """This worker's model load times, codec → seconds (collected by the runner into ``runs.load_s``)."""
    return dict(_LOAD_SECONDS)


def _warm_up(codec, task: Task, channels: int) -> None:
    """Load a learned codec's model before timing, so ``encode_s`` measures coding; the load time is
    recorded separately (:func:`load_times`)."""
    if hasattr(codec, "model_for"):
        planes = 1 if task.colour_mode == "per_channel" else channels
        start = time.perf_counter()
        try:
            codec.model_for(planes, task.setting).model  # noqa: B018  (the property loads and caches it)
        except Exception:  # an unsupported combination fails in evaluate with its own message
            return
        elapsed = time.perf_counter() - start
        if elapsed > 1e-3:  # a first load, not a cache hit
            _LOAD_SECONDS[task.codec] = _LOAD_SECONDS.get(task.codec, 0.0) + elapsed


def run_tasks(image: PreparedImage, tasks: list[Task], run_id: str, repeat: int = 1) -> list[dict]:
    """Compute ``tasks`` (one codec's settings and colour modes) on a prepared image; failures become
    rows with ``error`` set."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    ref = image.ref
    key = {"stage": ref.stage, "dataset": ref.dataset, "image_id": ref.image_id, "split": ref.split,
           "run_id": run_id, "created_at": now}
    if image.error:
        return [{**key, "codec": t.codec, "setting": format_setting(t.setting), "colour_mode": t.colour_mode,
                 "error": image.error} for t in tasks]
    pixels = image.image
    base = {**key, "width": pixels.width, "height": pixels.height, "channels": pixels.channels,
            "bit_depth": pixels.bit_depth, "metrics_version": metrics_version(ref.dataset)}
    rows = []
    for task in tasks:
        row = {**base, "codec": task.codec, "setting": format_setting(task.setting),
               "colour_mode": task.colour_mode,
               **row_flags(task.codec, ref.dataset, ref.image_id, image.downstream is not None)}
        try:
            codec = build_encoder(_codec(task.codec), task.colour_mode, pixels.channels, pixels.height, pixels.width)
            row["codec_version"] = codec.version_for(pixels.channels, pixels.bit_depth)
            _warm_up(_codec(task.codec), task, pixels.channels)
            result = evaluate(pixels, codec, task.setting, repeat)
            row.update(result.metrics)
            if image.downstream:
                row.update(image.downstream.compare(image.prepared, result.reconstruction))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            if os.environ.get("BIOCODEC_DEBUG"):
                traceback.print_exc()
        rows.append(row)
    return rows


def run_job(job: Job, run_id: str, repeat: int = 1) -> list[dict]:
    """Every task of ``job`` in this process (the image loaded once)."""
    image = prepare_image(job.ref)
    return [row for tasks in job.by_codec() for row in run_tasks(image, tasks, run_id, repeat)]


# --------------------------------------------------------------------------- execution


def execute(client, jobs: list[Job], run_id: str, repeat: int = 1, window: int | None = None):
    """Rows of every job on the Dask cluster behind ``client``, yielded as lists as they finish.

    One Dask task loads and prepares an image; one task per codec depends on it (Dask runs it where
    the image is).  At most ``window`` images (default: twice the workers) are in flight, so memory
    stays bounded on any number of images.  Leaving the generator early (an exception, a signal, the
    caller stops) cancels every pending task.
    """
    from distributed import as_completed

    window = window or 2 * max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    queue = list(reversed(jobs))
    open_images: dict[int, list] = {}  # job index → [prepared future, codec futures left]
    owner: dict = {}
    finished = as_completed()
    outstanding: set = set()

    def submit_next() -> None:
        job = queue.pop()
        index = len(jobs) - len(queue) - 1
        prepared = client.submit(prepare_image, job.ref, pure=False, key=f"prepare-{run_id}-{index}")
        groups = job.by_codec()
        open_images[index] = [prepared, len(groups)]
        for n, tasks in enumerate(groups):
            future = client.submit(run_tasks, prepared, tasks, run_id, repeat, pure=False,
                                   key=f"rows-{run_id}-{index}-{n}")
            owner[future.key] = index
            outstanding.add(future)
            finished.add(future)

    try:
        while queue and len(open_images) < window:
            submit_next()
        for future in finished:
            outstanding.discard(future)
            rows = future.result()
            index = owner.pop(future.key)
            open_images[index][1] -= 1
            if open_images[index][1] == 0:
                del open_images[index]  # releases the prepared image on its worker
                if queue:
                    submit_next()
            future.release()
            yield rows
    finally:
        if outstanding and client.status == "running":  # (a closed client took its tasks with it)
            client.cancel(list(outstanding) + [v[0] for v in open_images.values()], force=True)


# --------------------------------------------------------------------------- provenance


def git_commit(repo: Path = REPO_ROOT, output: Path | None = None) -> str | None:
    """The checkout's HEAD commit, with '-dirty' when a tracked file differs from it.

    ``output`` (the results database this run writes) does not count: the shipped ``results.duckdb``
    is tracked, so a regeneration's second run would otherwise call a clean checkout dirty because
    of the rows its first run wrote.
    """
    pathspec = ["--", "."]
    if output is not None:
        try:
            pathspec.append(f":(exclude){Path(output).resolve().relative_to(Path(repo).resolve()).as_posix()}")
        except ValueError:  # the database lies outside the checkout
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *pathspec], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) if commit else None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def machine_description() -> str:
    """Host, CPU count and OS of the runner (the workers' threads are in ``runs.worker_threads``)."""
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu {platform.system()} {platform.release()}"


# --------------------------------------------------------------------------- image selection


def resolve_refs(data_root: str | None, stage: str | None, splits: tuple[str, ...] = ("test",)) -> list[ImageRef]:
    """Images to run: a stage's datasets (in ``splits``), a folder of images, or the embedded default set."""
    from core.stages import stage_refs

    if stage is not None:
        return stage_refs(stage, data_root, splits)
    if data_root is None:
        return embedded_refs()
    root = Path(data_root)
    if root.is_dir() and any(p.suffix.lower() in SUPPORTED_SUFFIXES for p in root.iterdir() if p.is_file()):
        return folder_refs(root)
    return stage_refs("all", data_root, splits)


def subsample_per_dataset(refs: list[ImageRef], n: int) -> list[ImageRef]:
    """At most ``n`` refs of each (stage, dataset), evenly spaced in their listed order."""
    groups: dict[tuple, list[ImageRef]] = {}
    for ref in refs:
        groups.setdefault((ref.stage, ref.dataset), []).append(ref)
    keep = set()
    for members in groups.values():
        if len(members) <= n:
            keep.update(id(r) for r in members)
        else:
            keep.update(id(members[round(i * (len(members) - 1) / max(n - 1, 1))]) for i in range(n))
    return [r for r in refs if id(r) in keep]


def stage_settings(stage: str | None) -> tuple[list[str] | None, dict[str, tuple]]:
    """Codecs and settings a stage definition sweeps (None, {} when there is no stage)."""
    if stage is None:
        return None, {}
    from core.stages import stage_codec_settings

    return stage_codec_settings(stage)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.runner", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="a folder of images, or the data root of the stages "
                   "(default: the embedded sample images)")
    p.add_argument("--db", type=Path, default=None,
                   help=f"DuckDB file (default {default_db()}; $BIOCODEC_DB overrides)")
    p.add_argument("--codecs", help=f"comma-separated codec names (default: all). Known: "
                   f"{', '.join(available_codecs())}")
    p.add_argument("--settings", help='override sweeps: "jpeg=10,90;jpeg2000=50" or "10,50" for all codecs')
    p.add_argument("--stage", help="benchmark stage: 1, 2, 3, 4 or all (see core/stages.py)")
    p.add_argument("--split", default="test", help="catalog split(s) of the stage images: test (default), all, "
                   "or a list such as train,val; rows of images a model saw say so (in_codec_training, "
                   "in_segmenter_training)")
    p.add_argument("--colour-modes", help="joint,per_channel (default: joint; plus per_channel for learned "
                   "codecs with a gray and a colour model, on RGB)")
    p.add_argument("--scheduler", default="local", help="where the work runs (Dask): local (default: a "
                   "LocalCluster of --workers processes; 1 = in this process), tcp://HOST:PORT (an existing "
                   "Dask cluster), or slurm (with --cluster-config)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes, one thread each (default 1)")
    p.add_argument("--cluster-config", type=Path, metavar="FILE.toml",
                   help="SLURM cluster config (cores, memory, walltime, queue, jobs; see core/cluster.py and "
                   "data/cluster-slurm.example.toml)")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="encode/decode each K times and store the median times (default 1)")
    p.add_argument("--limit", type=int, help="only the first N images (quick looks)")
    p.add_argument("--max-images-per-dataset", type=int, metavar="N",
                   help="at most N images of each dataset, evenly spaced (a lighter benchmark run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.cluster import ClusterConfigError
    from core.stages import StageError, parse_splits

    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    try:
        splits = parse_splits(args.split)
        refs = resolve_refs(args.data_root, args.stage, splits)
    except (StageError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    db_path = args.db or default_db()
    if args.max_images_per_dataset:
        refs = subsample_per_dataset(refs, args.max_images_per_dataset)
    if args.limit:
        refs = refs[: args.limit]
    stage_codecs, stage_sweeps = stage_settings(args.stage)
    codecs = parse_codec_list(args.codecs) if args.codecs else (
        stage_codecs or available_codecs("classical") + available_codecs("learned"))  # "+grain" only when named
    settings = {**stage_sweeps, **parse_settings(args.settings, codecs)}
    colour_modes = tuple(m.strip() for m in args.colour_modes.split(",")) if args.colour_modes else None
    argv_list = list(argv if argv is not None else sys.argv[1:])
    termination = _Termination()
    try:
        with store.run_lock(db_path), _stop_on_sigterm(termination):
            return _run(args, refs, codecs, settings, colour_modes, db_path, argv_list, termination)
    except store.StoreLockedError as exc:
        print(f"error: {exc}; wait for it to finish or pass --db OTHER.duckdb", file=sys.stderr)
        return 3
    except ClusterConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if termination.signum is None:
            raise
        # stopped by SIGTERM: an error while closing the cluster afterwards does not change what happened
        if not isinstance(exc, SystemExit):
            print(f"stopped by signal {termination.signum}; while closing: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
        return 128 + termination.signum


def _run(args, refs, codecs, settings, colour_modes, db_path, argv_list, termination: _Termination) -> int:
    from tqdm import tqdm

    from core.cluster import connect, worker_threads

    con = store.open_writer(db_path)
    try:
        # a row is done when stored without error by the same codec version and the same metric code
        done = store.stored_versions(con)
    finally:
        con.close()  # the database stays closed between batches: the dashboard can read it during the run
    with connect(args.scheduler, args.workers, args.cluster_config) as client:
        infos = client.gather(client.map(peek_image, refs, pure=False))  # planning reads images in parallel
        jobs, unsupported = plan_jobs(refs, infos, codecs, settings, colour_modes, done)
        total = sum(len(j.tasks) for j in jobs)
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
        threads = client.run(worker_threads)
        with store.short_writer(db_path) as con:
            store.record_run(con, run_id, _utcnow(), git_commit(output=db_path), package_versions(), machine_description(),
                             argv_list, scheduler=args.scheduler, workers=len(threads), worker_threads=threads,
                             repeat=args.repeat, planned_rows=total, rows_written=0, heartbeat_at=_utcnow())
        print(f"{len(refs)} images, {len(codecs)} codecs: {total} rows to compute, "
              f"{len(done)} already stored, {unsupported} unsupported combinations skipped "
              f"({len(threads)} Dask worker{'s' if len(threads) != 1 else ''}, {args.scheduler})")
        written = failed = 0
        batch: list[dict] = []
        last_flush = time.monotonic()

        def flush() -> None:
            nonlocal written, batch, last_flush
            if batch:
                with termination.deferred():  # a SIGTERM meanwhile stops the run once the rows are stored
                    written += store.write_batch(db_path, batch, run_id, rows_written=written + len(batch),
                                                 heartbeat_at=_utcnow())
                    batch, last_flush = [], time.monotonic()

        with tqdm(total=total, unit="row", disable=args.quiet or total == 0, dynamic_ncols=True) as bar:
            try:
                with closing(execute(client, jobs, run_id, args.repeat)) as finished_rows:
                    for rows in finished_rows:
                        batch.extend(rows)
                        failed += sum(1 for r in rows if r.get("error"))
                        bar.update(len(rows))
                        bar.set_postfix(image=rows[0]["image_id"][:20], errors=failed)
                        if time.monotonic() - last_flush >= FLUSH_EVERY_S or len(batch) >= FLUSH_ROWS:
                            flush()
            finally:
                flush()  # a stopped run keeps every row that finished
        threads = client.run(worker_threads)  # again, after the work: torch's pool if a codec loaded it
        loads: dict[str, float] = {}
        for worker_loads in client.run(load_times).values():
            for codec, seconds in worker_loads.items():
                loads[codec] = max(loads.get(codec, 0.0), round(seconds, 4))
    with store.short_writer(db_path) as con:
        store.update_run(con, run_id, finished_at=_utcnow(), load_s=loads, worker_threads=threads)
    print(f"wrote {written} rows ({failed} with errors) to {db_path}")
    with store.reader(db_path) as con:  # read-only: dashboards reading meanwhile do not block it
        print_summary(con, refs)
        from core.bdrate import print_bd_tables  # BD-rate vs JPEG 2000 per dataset (quiet without anchor rows)

        print_bd_tables(con, refs, held_out_only=True)
    return 0


#: the runner writes finished rows at least this often (seconds) or when this many are waiting
FLUSH_EVERY_S = 2.0
FLUSH_ROWS = 200


def plan_jobs(refs: list[ImageRef], infos: list[ImageInfo], codecs: list[str], settings: dict[str, tuple],
              colour_modes: tuple[str, ...] | None, done: dict) -> tuple[list[Job], int]:
    """The jobs still to compute (rows missing, failed, or stored by another codec/metrics version) and
    the number of unsupported combinations skipped."""
    jobs, unsupported = [], 0
    for ref, info in zip(refs, infos):
        metrics = metrics_version(ref.dataset)
        if info.bit_depth is None:  # unreadable: one error row per codec so the failure is visible
            tasks, _ = plan_tasks(8, 1, codecs, settings, colour_modes)
        else:
            tasks, skipped = plan_tasks(info.bit_depth, info.channels, codecs, settings, colour_modes)
            unsupported += skipped

        def current(task: Task) -> tuple:
            if info.bit_depth is None:
                return (None, metrics)
            codec = build_encoder(_codec(task.codec), task.colour_mode, info.channels, info.height, info.width)
            return (codec.version_for(info.channels, info.bit_depth), metrics)

        pending = [t for t in tasks if done.get(
            (ref.stage, ref.dataset, ref.image_id, t.codec, format_setting(t.setting), t.colour_mode),
            _MISSING) != current(t)]
        if pending:
            jobs.append(Job(ref, pending))
    return jobs, unsupported


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class _Termination:
    """What SIGTERM does to a run: it stops like Ctrl-C (finished rows are written, the cluster and its
    workers are closed, exit status 128 + 15) — at once, except inside a database write, which finishes
    first.  A second SIGTERM does not interrupt the clean-up."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._writing = 0

    def handle(self, signum, frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if not self._writing:
            raise SystemExit(128 + signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
        if self.signum is not None and not self._writing:
            raise SystemExit(128 + self.signum)


@contextmanager
def _stop_on_sigterm(termination: _Termination) -> Iterator[None]:
    """Install ``termination``'s handler for SIGTERM (main thread only) for the run."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, termination.handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def summary_rows(con, refs: list[ImageRef] | None = None, held_out_only: bool = True) -> list[tuple]:
    """Per codec and colour mode: rows, mean bpp, mean finite PSNR (dB), mean SSIM, mean MS-SSIM, mean s.

    ``held_out_only`` keeps the rows no model involved has seen (:data:`core.provenance.HELD_OUT_SQL`).
    """
    from core.provenance import HELD_OUT_SQL

    where = "error IS NULL" + (f" AND {HELD_OUT_SQL}" if held_out_only else "")
    params: list = []
    if refs:
        keys = sorted({(r.stage, r.dataset) for r in refs})
        where += " AND (" + " OR ".join("(stage = ? AND dataset = ?)" for _ in keys) + ")"
        params = [v for k in keys for v in k]
    return con.execute(f"""
        SELECT codec, colour_mode, count(*) AS n, avg(bpp),
               avg(psnr) FILTER (WHERE isfinite(psnr)), avg(ssim), avg(ms_ssim),
               avg(encode_s), avg(decode_s), count(*) FILTER (WHERE NOT isfinite(psnr))
        FROM results WHERE {where} GROUP BY codec, colour_mode ORDER BY codec, colour_mode""", params).fetchall()


def print_summary(con, refs: list[ImageRef] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Summary, held-out images only (means over stored rows no model trained on; "
                        "PSNR over lossy rows)")
    for col in ("codec", "mode", "rows", "bpp", "PSNR dB", "SSIM", "MS-SSIM", "enc s", "dec s", "exact"):
        table.add_column(col, justify="left" if col in ("codec", "mode") else "right")

    def fmt(v, digits):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"

    for codec, mode, n, bpp, psnr, ssim, msssim, enc, dec, exact in summary_rows(con, refs):
        table.add_row(codec, mode, str(n), fmt(bpp, 3), fmt(psnr, 2), fmt(ssim, 4), fmt(msssim, 4),
                      fmt(enc, 3), fmt(dec, 3), str(exact))
    Console(width=120).print(table)


if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: Dask ships functions of __main__ by value
    # (with fresh globals per task: the per-worker model cache would be lost), those of core.runner by name
    from core.runner import main as _main

    raise SystemExit(_main())
