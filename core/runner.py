"""Batch runner: every image × codec × setting (× colour mode) into the DuckDB store.

    python -m core.runner                               # embedded default data → results.duckdb
    python -m core.runner --data-root DIR --db out.duckdb --codecs jpeg,jpeg2000,png
    python -m core.runner --stage 2 --data-root ../shared/data
    python -m core.runner --settings "jpeg=20,80;jpeg2000=50,10"

Stages run the catalog's ``test`` split by default (``--split all`` adds train/val images);
every row records its ``split`` and whether the codec's checkpoints (``in_codec_training``)
or the segmenter behind its downstream columns (``in_segmenter_training``) saw the image.

Resumable: rows already stored without error by the same codec version (``Codec.version``:
library, version and parameters, or learned checkpoints' hash) and the same metric code
(``metrics_version``) are skipped, so a killed run picks up where it stopped (rows are
written per image, in one transaction), a re-run adds nothing, and new weights, a codec
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
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
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
    """All pending tasks of one image (the image is loaded and segmented once per job)."""

    ref: ImageRef
    tasks: list[Task] = field(default_factory=list)


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

    ``colour_modes`` None means: 'joint' for every codec, plus 'per_channel' for
    learned codecs on RGB images (the colour switch the product compares).
    """
    tasks, unsupported = [], 0
    for name in codecs:
        codec = _codec(name)
        if colour_modes is None:
            modes = ("joint", "per_channel") if codec.family == "learned" and channels == 3 else ("joint",)
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


# --------------------------------------------------------------------------- execution


def _downstream(ref: ImageRef):
    """The downstream-fidelity evaluator of this image's stage/dataset, or None."""
    try:
        from core.segmentation import downstream_for
    except ImportError:
        return None
    return downstream_for(ref)


def run_job(job: Job, run_id: str) -> list[dict]:
    """Compute every task of ``job``; failures become rows with ``error`` set."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    key = {"stage": job.ref.stage, "dataset": job.ref.dataset, "image_id": job.ref.image_id}
    try:
        image = load_ref(job.ref)
        downstream = _downstream(job.ref)
        prepared = downstream.prepare(image, job.ref) if downstream else None
    except Exception as exc:
        message = f"load: {type(exc).__name__}: {exc}"
        return [{**key, "codec": t.codec, "setting": format_setting(t.setting), "colour_mode": t.colour_mode,
                 "split": job.ref.split, "run_id": run_id, "error": message, "created_at": now} for t in job.tasks]
    base = {**key, "run_id": run_id, "width": image.width, "height": image.height, "split": job.ref.split,
            "channels": image.channels, "bit_depth": image.bit_depth, "created_at": now,
            "metrics_version": metrics_version(job.ref.dataset)}
    rows = []
    for task in job.tasks:
        row = {**base, "codec": task.codec, "setting": format_setting(task.setting),
               "colour_mode": task.colour_mode,
               **row_flags(task.codec, job.ref.dataset, job.ref.image_id, downstream is not None)}
        try:
            codec = build_encoder(_codec(task.codec), task.colour_mode, image.channels, image.height, image.width)
            row["codec_version"] = codec.version
            _warm_up(_codec(task.codec), task, image.channels)
            result = evaluate(image, codec, task.setting)
            row.update(result.metrics)
            if downstream:
                row.update(downstream.compare(prepared, result.reconstruction))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            if os.environ.get("BIOCODEC_DEBUG"):
                traceback.print_exc()
        rows.append(row)
    return rows


def _die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (even by ``kill -9``), and exit
    now if the parent is already gone (it died before this ran).  Elsewhere: nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the parent's signal handlers still stop the workers
        return
    if os.getppid() != parent_pid:
        os._exit(1)


#: One thread per worker process for every numeric library (the pool gives the parallelism).
WORKER_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                     "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _warm_up(codec, task: Task, channels: int) -> None:
    """Load a learned codec's model before timing, so ``encode_s`` measures coding, not the first load."""
    if hasattr(codec, "model_for"):
        planes = 1 if task.colour_mode == "per_channel" else channels
        try:
            codec.model_for(planes, task.setting).model  # noqa: B018  (the property loads and caches it)
        except Exception:  # an unsupported combination fails in evaluate with its own message
            pass


def _init_worker(parent_pid: int | None = None) -> None:
    """Worker processes: one thread each for the numeric libraries (the pool gives the parallelism);
    they end with the runner (``parent_pid``) and leave Ctrl-C to it (it stops them)."""
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group
    except ValueError:  # not the main thread
        pass
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


# --------------------------------------------------------------------------- provenance


def git_commit() -> str | None:
    here = REPO_ROOT
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
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


def machine_description(workers: int = 1) -> str:
    """Host, CPU count, OS, and the parallelism of the run (workers × threads per worker)."""
    threads = WORKER_THREAD_ENV["OMP_NUM_THREADS"] if workers > 1 else os.environ.get("OMP_NUM_THREADS", "default")
    return (f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu {platform.system()} {platform.release()}; "
            f"workers {workers}, threads per worker {threads}")


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
                   "codecs on RGB)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--limit", type=int, help="only the first N images (quick looks)")
    p.add_argument("--max-images-per-dataset", type=int, metavar="N",
                   help="at most N images of each dataset, evenly spaced (a lighter benchmark run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from core.stages import StageError, parse_splits

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
    codecs = parse_codec_list(args.codecs) if args.codecs else (stage_codecs or available_codecs())
    settings = {**stage_sweeps, **parse_settings(args.settings, codecs)}
    colour_modes = tuple(m.strip() for m in args.colour_modes.split(",")) if args.colour_modes else None

    try:
        con = store.open_writer(db_path)
    except store.StoreLockedError as exc:
        print(f"error: {exc}; wait for it to finish or pass --db OTHER.duckdb", file=sys.stderr)
        return 3
    # a row is done when stored without error by the same codec version and the same metric code
    done = store.stored_versions(con)
    jobs, unsupported = [], 0
    for ref in refs:
        metrics = metrics_version(ref.dataset)
        depth, channels, height, width = _peek(ref)
        if depth is None:  # unreadable: one error row per codec so the failure is visible
            tasks, _ = plan_tasks(8, 1, codecs, settings, colour_modes)
        else:
            tasks, skipped = plan_tasks(depth, channels, codecs, settings, colour_modes)
            unsupported += skipped

        def current(task: Task) -> tuple:
            if depth is None:
                return (None, metrics)
            return (build_encoder(_codec(task.codec), task.colour_mode, channels, height, width).version, metrics)

        pending = [t for t in tasks if done.get(
            (ref.stage, ref.dataset, ref.image_id, t.codec, format_setting(t.setting), t.colour_mode),
            _MISSING) != current(t)]
        if pending:
            jobs.append(Job(ref, pending))

    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    store.record_run(con, run_id, datetime.now(timezone.utc).replace(tzinfo=None), git_commit(),
                     package_versions(), machine_description(args.workers), list(argv if argv is not None else sys.argv[1:]))
    total = sum(len(j.tasks) for j in jobs)
    print(f"{len(refs)} images, {len(codecs)} codecs: {total} rows to compute, "
          f"{len(done)} already stored, {unsupported} unsupported combinations skipped")
    written = failed = 0
    from tqdm import tqdm

    with tqdm(total=total, unit="row", disable=args.quiet or total == 0, dynamic_ncols=True) as bar:
        for rows in _execute(jobs, run_id, args.workers):
            store.upsert_results(con, rows)
            written += len(rows)
            failed += sum(1 for r in rows if r.get("error"))
            bar.update(len(rows))
            bar.set_postfix(image=rows[0]["image_id"][:20], errors=failed)
    store.finish_run(con, run_id, datetime.now(timezone.utc).replace(tzinfo=None))
    print(f"wrote {written} rows ({failed} with errors) to {db_path}")
    print_summary(con, refs)
    from core.bdrate import print_bd_tables  # BD-rate vs JPEG 2000 per dataset (stays quiet without anchor rows)

    print_bd_tables(con, refs, held_out_only=True)
    con.close()
    return 0


def _peek(ref: ImageRef) -> tuple[int | None, int | None, int | None, int | None]:
    """(bit depth, channels, height, width) of an image, or Nones when it cannot be read."""
    try:
        image = load_ref(ref)
    except Exception:
        return None, None, None, None
    return image.bit_depth, image.channels, image.height, image.width


def _worker_processes(pool: ProcessPoolExecutor) -> list:
    """The pool's worker processes (``shutdown`` forgets them, so take them first)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _terminate_workers(processes: list, grace_s: float = 3.0) -> None:
    """SIGTERM every process still alive, then SIGKILL those that outlive ``grace_s``."""
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    for process in processes:
        process.join(grace_s)
        if process.exitcode is None:
            process.kill()
            process.join(1.0)


def _execute(jobs: list[Job], run_id: str, workers: int):
    """Rows of every job, as they finish: in this process, or in ``workers`` worker processes.

    The workers never outlive the runner: SIGTERM/SIGINT to the runner terminates them (then the runner
    exits 128 + 15 on SIGTERM, or raises KeyboardInterrupt on SIGINT); if the runner dies without a word
    (``kill -9``) the kernel kills them (``PR_SET_PDEATHSIG``, Linux); any other way out of this generator
    (an exception, the caller stops iterating) cancels the pending jobs and terminates them too.
    """
    if workers <= 1:
        for job in jobs:
            yield run_job(job, run_id)
        return
    import multiprocessing
    import threading

    # thread limits must be in the environment *before* a spawned worker imports numpy/torch/TensorFlow
    # (its initializer runs after the main module's imports): set them here, children inherit them
    saved_env = {k: os.environ.get(k) for k in WORKER_THREAD_ENV}
    os.environ.update(WORKER_THREAD_ENV)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))

    def stop(signum, frame):
        _terminate_workers(_worker_processes(pool))
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    finished = False
    try:
        futures = [pool.submit(run_job, job, run_id) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
        finished = True
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if finished:
            pool.shutdown(wait=True)
        else:
            processes = _worker_processes(pool)
            pool.shutdown(wait=False, cancel_futures=True)
            _terminate_workers(processes)


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
    raise SystemExit(main())
