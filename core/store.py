"""The DuckDB results store: one schema, one writer (the runner), many read-only readers.

Tables
------
``meta``     key/value; ``schema_version`` lives here.
``runs``     one row per runner invocation: run_id, started_at, finished_at,
             git commit, package versions (JSON), machine, argv.
``results``  one row per stage × dataset × image × codec × setting × colour_mode
             (the primary key).  Writes are upserts (``INSERT OR REPLACE``), so
             re-running never duplicates a row.  Column meanings and units are in
             :data:`RESULT_COLUMNS`.

PSNR of an exact reconstruction is stored as +inf (DuckDB ``DOUBLE`` 'inf');
undefined metrics (MS-SSIM below 33 px, a downstream metric a stage does not
compute) are NULL.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import duckdb

from core.setting_text import format_setting  # noqa: F401  (the one formatter; re-exported for store users)

SCHEMA_VERSION = 2

KEY_COLUMNS = ("stage", "dataset", "image_id", "codec", "setting", "colour_mode")

#: (name, DuckDB type, meaning/unit) of every column of ``results``.
RESULT_COLUMNS: list[tuple[str, str, str]] = [
    ("stage", "INTEGER", "benchmark stage (0 = embedded default data, 1-4 = stages)"),
    ("dataset", "VARCHAR", "dataset name"),
    ("image_id", "VARCHAR", "image identifier within the dataset"),
    ("codec", "VARCHAR", "codec registry name"),
    ("setting", "VARCHAR", "codec setting as text ('-' for lossless codecs)"),
    ("colour_mode", "VARCHAR", "'joint' (codec sees all channels) or 'per_channel' (each RGB channel coded as gray)"),
    ("run_id", "VARCHAR", "runs.run_id that wrote the row"),
    ("codec_version", "VARCHAR", "Codec.version: library, version and fixed parameters, or the learned "
     "checkpoints' hash (and tiling); a change recomputes the row"),
    ("metrics_version", "VARCHAR", "core.provenance.metrics_version(): hash of the metric code; a change recomputes the row"),
    ("split", "VARCHAR", "catalog split of the image: train, val or test (core/catalog.py)"),
    ("in_codec_training", "BOOLEAN", "the codec's checkpoints trained or validated on this image (always false for classical codecs)"),
    ("in_segmenter_training", "BOOLEAN", "the segmenter behind the seg_*/contour_* columns trained, validated or was tuned on this image"),
    ("width", "INTEGER", "pixels"),
    ("height", "INTEGER", "pixels"),
    ("channels", "INTEGER", "1 = gray, 3 = RGB"),
    ("bit_depth", "INTEGER", "significant bits per sample"),
    ("setting_value", "DOUBLE", "codec setting as a number (NULL for lossless)"),
    ("bytes", "BIGINT", "length of the complete encoded byte string, bytes"),
    ("raw_bytes", "BIGINT", "H·W·C·bytes-per-sample, bytes"),
    ("ratio", "DOUBLE", "bytes / raw_bytes"),
    ("factor", "DOUBLE", "raw_bytes / bytes"),
    ("bpp", "DOUBLE", "8·bytes/(H·W), bits per pixel"),
    ("encode_s", "DOUBLE", "encode wall time, seconds"),
    ("decode_s", "DOUBLE", "decode wall time, seconds"),
    ("mse", "DOUBLE", "mean squared error, intensity units²"),
    ("psnr", "DOUBLE", "dB, MAX = 2^bit_depth − 1; +inf when exact"),
    ("psnr_peak", "DOUBLE", "dB, MAX = the original's peak value"),
    ("ssim", "DOUBLE", "SSIM, data_range = MAX"),
    ("ms_ssim", "DOUBLE", "MS-SSIM, data_range = MAX"),
    # downstream fidelity (stages 2 and 3); NULL where a stage computes none
    ("seg_dice", "DOUBLE", "pixel Dice, segmentation of reconstruction vs of original"),
    ("seg_iou", "DOUBLE", "pixel IoU, segmentation of reconstruction vs of original"),
    ("seg_f1", "DOUBLE", "object F1 at IoU 0.5, reconstruction vs original segmentation"),
    ("seg_dice_gt_original", "DOUBLE", "pixel Dice of the original's segmentation vs ground truth"),
    ("seg_dice_gt_reconstruction", "DOUBLE", "pixel Dice of the reconstruction's segmentation vs ground truth"),
    ("seg_f1_gt_original", "DOUBLE", "object F1 (IoU 0.5) of the original's segmentation vs ground truth"),
    ("seg_f1_gt_reconstruction", "DOUBLE", "object F1 (IoU 0.5) of the reconstruction's segmentation vs ground truth"),
    ("contour_bf1", "DOUBLE", "boundary F1 at 2 px, contours of reconstruction vs original"),
    ("contour_hd95", "DOUBLE", "95th-percentile Hausdorff distance of contours, pixels"),
    ("contour_msd", "DOUBLE", "mean surface distance of contours, pixels"),
    ("error", "VARCHAR", "NULL on success; the failure message otherwise"),
    ("created_at", "TIMESTAMP", "when the row was written (UTC)"),
]
COLUMN_NAMES = [c[0] for c in RESULT_COLUMNS]


class StoreLockedError(RuntimeError):
    """The database is held by a writer (the runner) and could not be opened."""


def _create_statements() -> list[str]:
    cols = ",\n  ".join(f"{name} {kind}" for name, kind, _ in RESULT_COLUMNS)
    return [
        "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        """CREATE TABLE IF NOT EXISTS runs (
  run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, git_commit VARCHAR,
  versions VARCHAR, machine VARCHAR, argv VARCHAR)""",
        f"CREATE TABLE IF NOT EXISTS results (\n  {cols},\n  PRIMARY KEY ({', '.join(KEY_COLUMNS)}))",
    ]


def open_writer(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the database for writing and bring its schema up to date."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        raise StoreLockedError(f"{path} is in use by another process (another run holds it)") from exc
    # one transaction: a kill during schema creation leaves either the old schema or the whole new one
    con.execute("BEGIN TRANSACTION")
    try:
        for statement in _create_statements():
            con.execute(statement)
        existing = {row[0] for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'results'").fetchall()}
        for name, kind, _ in RESULT_COLUMNS:  # forward migration: add columns new code knows
            if name not in existing:
                con.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row and int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(f"{path} has schema version {row[0]}, newer than this code's {SCHEMA_VERSION}")
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        con.close()
        raise
    return con


def open_reader(path: str | Path, retries: int = 5, wait_s: float = 1.0) -> duckdb.DuckDBPyConnection:
    """Open read-only; retry while a writer holds the lock, then raise :class:`StoreLockedError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results database at {path}; run `python -m core.runner` first")
    last: Exception | None = None
    for attempt in range(retries):
        try:
            return duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:  # "Could not set lock on file"
            last = exc
            time.sleep(wait_s)
    raise StoreLockedError(f"{path} is locked by a writer (is the runner still going?): {last}")


@contextmanager
def reader(path: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = open_reader(path)
    try:
        yield con
    finally:
        con.close()


def record_run(con, run_id: str, started_at, git_commit: str | None, versions: dict, machine: str,
               argv: list[str]) -> None:
    con.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, NULL, ?, ?, ?, ?)",
                [run_id, started_at, git_commit, json.dumps(versions, sort_keys=True), machine, json.dumps(argv)])


def finish_run(con, run_id: str, finished_at) -> None:
    con.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", [finished_at, run_id])


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def upsert_results(con, rows: Iterable[dict]) -> int:
    """Insert or replace result rows (dicts keyed by column name; missing columns are NULL)."""
    rows = list(rows)
    if not rows:
        return 0
    for row in rows:
        unknown = set(row) - set(COLUMN_NAMES)
        if unknown:
            raise KeyError(f"unknown result columns: {sorted(unknown)}")
    placeholders = ", ".join("?" for _ in COLUMN_NAMES)
    sql = f"INSERT OR REPLACE INTO results ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})"
    con.execute("BEGIN TRANSACTION")
    try:
        con.executemany(sql, [[_clean(row.get(name)) for name in COLUMN_NAMES] for row in rows])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return len(rows)


def stored_keys(con, include_errors: bool = False) -> set[tuple]:
    """Primary keys already stored (by default only successful rows, so failures are retried)."""
    return set(stored_versions(con, include_errors))


def stored_versions(con, include_errors: bool = False) -> dict[tuple, tuple[str | None, str | None]]:
    """{primary key: (codec_version, metrics_version)} of the stored rows (by default only successful ones)."""
    where = "" if include_errors else "WHERE error IS NULL"
    rows = con.execute(f"SELECT {', '.join(KEY_COLUMNS)}, codec_version, metrics_version FROM results {where}").fetchall()
    return {tuple(r[:-2]): (r[-2], r[-1]) for r in rows}


def count_results(con) -> int:
    return int(con.execute("SELECT count(*) FROM results").fetchone()[0])
