"""Batch runner: every image × codec × setting (× colour mode) into the DuckDB store.

    python -m core.runner                               # embedded default data → results.duckdb
    python -m core.runner --data-root DIR --db out.duckdb --codecs jpeg,jpeg2000,png
    python -m core.runner --stage 2 --data-root ../shared/data
    python -m core.runner --settings "jpeg=20,80;jpeg2000=50,10"

Resumable: rows already stored without error by the same codec version
(``Codec.version``: library version or learned checkpoints' hash) are skipped, so a
killed run picks up where it stopped (rows are written per image, in one transaction),
a re-run adds nothing, and new weights or a codec upgrade recompute their rows.  A
failing (image, codec, setting) is stored with its ``error`` and the run carries on.  Combinations a codec does not support (e.g. JPEG on 16-bit) are
skipped and counted, not stored.  The runner is the store's only writer.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
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
from core.codecs import available_codecs, get_codec, parse_codec_list
from core.datasets import ImageRef, embedded_refs, folder_refs, load_ref
from core.evaluate import codec_for_mode, evaluate
from core.io import SUPPORTED_SUFFIXES

DEFAULT_DB = "results.duckdb"
_MISSING = object()  # not stored: differs from every codec version
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
    if not text:
        return {}

    def values(part: str) -> tuple:
        out = []
        for v in part.split(","):
            v = v.strip()
            if v in ("", "-", "none", "None"):
                out.append(None)
            else:
                number = float(v)
                out.append(int(number) if number.is_integer() else number)
        return tuple(out)

    if "=" not in text:
        return {name: values(text) for name in codecs}
    result = {}
    for part in text.split(";"):
        if part.strip():
            name, _, vals = part.partition("=")
            get_codec(name.strip())
            result[name.strip()] = values(vals)
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
        return [{**key, "codec": t.codec, "setting": store.format_setting(t.setting), "colour_mode": t.colour_mode,
                 "run_id": run_id, "error": message, "created_at": now} for t in job.tasks]
    base = {**key, "run_id": run_id, "width": image.width, "height": image.height,
            "channels": image.channels, "bit_depth": image.bit_depth, "created_at": now}
    rows = []
    for task in job.tasks:
        row = {**base, "codec": task.codec, "setting": store.format_setting(task.setting),
               "colour_mode": task.colour_mode}
        try:
            codec = _codec(task.codec)
            row["codec_version"] = codec.version
            codec = codec_for_mode(codec, task.colour_mode, image.channels)
            from core.tiling import tile_if_large  # large images: tiles per data/stages.toml [tiling]

            codec = tile_if_large(codec, image.height, image.width)
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


def _init_worker() -> None:
    """Worker processes: one thread each for the numeric libraries (the pool gives the parallelism)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


# --------------------------------------------------------------------------- provenance


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent.parent
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


def machine_description() -> str:
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpu {platform.system()} {platform.release()}"


# --------------------------------------------------------------------------- image selection


def resolve_refs(data_root: str | None, stage: str | None) -> list[ImageRef]:
    """Images to run: a stage's datasets, a folder of images, or the embedded default set."""
    if stage is not None:
        from core.stages import stage_refs

        return stage_refs(stage, data_root)
    if data_root is None:
        return embedded_refs()
    root = Path(data_root)
    if root.is_dir() and any(p.suffix.lower() in SUPPORTED_SUFFIXES for p in root.iterdir() if p.is_file()):
        return folder_refs(root)
    from core.stages import stage_refs

    return stage_refs("all", data_root)


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
    p.add_argument("--db", default=DEFAULT_DB, help=f"DuckDB file (default {DEFAULT_DB})")
    p.add_argument("--codecs", help=f"comma-separated codec names (default: all). Known: "
                   f"{', '.join(available_codecs())}")
    p.add_argument("--settings", help='override sweeps: "jpeg=10,90;jpeg2000=50" or "10,50" for all codecs')
    p.add_argument("--stage", help="benchmark stage: 1, 2, 3, 4 or all (see core/stages.py)")
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
    refs = resolve_refs(args.data_root, args.stage)
    if args.max_images_per_dataset:
        refs = subsample_per_dataset(refs, args.max_images_per_dataset)
    if args.limit:
        refs = refs[: args.limit]
    stage_codecs, stage_sweeps = stage_settings(args.stage)
    codecs = parse_codec_list(args.codecs) if args.codecs else (stage_codecs or available_codecs())
    settings = {**stage_sweeps, **parse_settings(args.settings, codecs)}
    colour_modes = tuple(m.strip() for m in args.colour_modes.split(",")) if args.colour_modes else None

    con = store.open_writer(args.db)
    done = store.stored_versions(con)  # a row is done when stored without error by the same codec version
    versions = {name: get_codec(name).version for name in codecs}
    jobs, unsupported = [], 0
    for ref in refs:
        depth, channels = _peek(ref)
        if depth is None:  # unreadable: one error row per codec so the failure is visible
            tasks, _ = plan_tasks(8, 1, codecs, settings, colour_modes)
        else:
            tasks, skipped = plan_tasks(depth, channels, codecs, settings, colour_modes)
            unsupported += skipped
        pending = [t for t in tasks if done.get(
            (ref.stage, ref.dataset, ref.image_id, t.codec, store.format_setting(t.setting), t.colour_mode),
            _MISSING) != versions[t.codec]]
        if pending:
            jobs.append(Job(ref, pending))

    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    store.record_run(con, run_id, datetime.now(timezone.utc).replace(tzinfo=None), git_commit(),
                     package_versions(), machine_description(), list(argv if argv is not None else sys.argv[1:]))
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
    print(f"wrote {written} rows ({failed} with errors) to {args.db}")
    print_summary(con, refs)
    from core.bdrate import print_bd_tables  # BD-rate vs JPEG 2000 per dataset (stays quiet without anchor rows)

    print_bd_tables(con, refs)
    con.close()
    return 0


def _peek(ref: ImageRef) -> tuple[int | None, int | None]:
    try:
        image = load_ref(ref)
    except Exception:
        return None, None
    return image.bit_depth, image.channels


def _execute(jobs: list[Job], run_id: str, workers: int):
    if workers <= 1:
        for job in jobs:
            yield run_job(job, run_id)
        return
    import multiprocessing

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker) as pool:
        futures = [pool.submit(run_job, job, run_id) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def summary_rows(con, refs: list[ImageRef] | None = None) -> list[tuple]:
    """Per codec and colour mode: rows, mean bpp, mean finite PSNR (dB), mean SSIM, mean MS-SSIM, mean s."""
    where = "error IS NULL"
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

    table = Table(title="Summary (means over stored rows; PSNR over lossy rows)")
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
