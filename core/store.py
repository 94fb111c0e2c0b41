"""The DuckDB results store: one schema, one writer (the runner), many read-only readers.

Tables
------
``meta``     key/value; ``schema_version`` lives here.
``runs``     one row per runner invocation (:data:`RUN_COLUMNS`): when, git commit, package versions,
             machine, argv, the execution (scheduler, workers, threads), the rows planned and written
             so far (a live run's progress) and the learned models' load times.
``results``  one row per stage × dataset × image × codec × setting × colour_mode
             (the primary key).  Writes are upserts (``INSERT OR REPLACE``), so
             re-running never duplicates a row.  Column meanings and units are in
             :data:`RESULT_COLUMNS`.

One writer, short transactions: the runner holds an exclusive lock file (``DB.lock``, :func:`run_lock`)
for the whole run, but opens the database only while it writes a batch of finished rows
(:func:`write_batch`), so the dashboard can open it read-only during a run.

PSNR of an exact reconstruction is stored as +inf (DuckDB ``DOUBLE`` 'inf');
undefined metrics (MS-SSIM below 33 px, a downstream metric a stage does not
compute) are NULL.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import duckdb

from core.setting_text import format_setting  # noqa: F401  (the one formatter; re-exported for store users)

SCHEMA_VERSION = 3

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
    ("codec_version", "VARCHAR", "Codec.version_for(channels, bit_depth): library, version and fixed parameters, or the hash "
     "of the learned checkpoint that codes the image (and tiling); a change recomputes the row"),
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

#: (name, DuckDB type, meaning/unit) of every column of ``runs``.
RUN_COLUMNS: list[tuple[str, str, str]] = [
    ("run_id", "VARCHAR", "UTC start time + random suffix"),
    ("started_at", "TIMESTAMP", "UTC"),
    ("finished_at", "TIMESTAMP", "UTC; NULL while running (or when the run was killed)"),
    ("git_commit", "VARCHAR", "commit of the code, '-dirty' when tracked files other than the database written had changes"),
    ("versions", "VARCHAR", "JSON: python and package versions"),
    ("machine", "VARCHAR", "host, CPU count, OS"),
    ("argv", "VARCHAR", "JSON: the runner's arguments"),
    ("scheduler", "VARCHAR", "local, slurm or the tcp:// address of the Dask scheduler"),
    ("workers", "INTEGER", "Dask workers at the start of the run"),
    ("worker_threads", "VARCHAR", "JSON: per worker, the numeric threads it runs with (OMP_NUM_THREADS, torch)"),
    ("repeat", "INTEGER", "encode_s/decode_s are the median of this many encode/decode runs"),
    ("planned_rows", "BIGINT", "rows this run set out to compute"),
    ("rows_written", "BIGINT", "rows written so far (a live run's progress)"),
    ("heartbeat_at", "TIMESTAMP", "UTC time of the last batch written; a stale one with no finished_at = killed"),
    ("load_s", "VARCHAR", "JSON: codec → seconds to load its learned models on a worker (max over workers), "
     "measured before timing and not part of encode_s"),
]
RUN_COLUMN_NAMES = [c[0] for c in RUN_COLUMNS]


class StoreLockedError(RuntimeError):
    """The database is held by a writer (the runner) and could not be opened."""


def _create_statements() -> list[str]:
    cols = ",\n  ".join(f"{name} {kind}" for name, kind, _ in RESULT_COLUMNS)
    return [
        "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        "CREATE TABLE IF NOT EXISTS runs (\n  " + ",\n  ".join(f"{name} {kind}" for name, kind, _ in RUN_COLUMNS)
        + ",\n  PRIMARY KEY (run_id))",
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
        for table, columns in (("results", RESULT_COLUMNS), ("runs", RUN_COLUMNS)):
            existing = {row[0] for row in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
            for name, kind, _ in columns:  # forward migration: add columns new code knows
                if name not in existing:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
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
               argv: list[str], **fields) -> None:
    """Insert the ``runs`` row of a new run; ``fields`` are further :data:`RUN_COLUMNS` (JSON-encoded
    when they are dicts or lists)."""
    values = {"run_id": run_id, "started_at": started_at, "git_commit": git_commit,
              "versions": json.dumps(versions, sort_keys=True), "machine": machine, "argv": json.dumps(argv),
              **{k: _run_value(v) for k, v in fields.items()}}
    _check_run_fields(values)
    names = list(values)
    con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
                [values[n] for n in names])


def update_run(con, run_id: str, **fields) -> None:
    """Set ``fields`` (columns of :data:`RUN_COLUMNS`) of one ``runs`` row."""
    if not fields:
        return
    _check_run_fields(fields)
    con.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE run_id = ?",
                [_run_value(v) for v in fields.values()] + [run_id])


def finish_run(con, run_id: str, finished_at) -> None:
    update_run(con, run_id, finished_at=finished_at)


def _run_value(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value


def _check_run_fields(fields) -> None:
    unknown = set(fields) - set(RUN_COLUMN_NAMES)
    if unknown:
        raise KeyError(f"unknown runs columns: {sorted(unknown)}")


# --------------------------------------------------------------------------- the runner's short writes


def lock_path(path: str | Path) -> Path:
    return Path(str(path) + ".lock")


@contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold ``DB.lock`` exclusively for a whole run: one runner per database.  The kernel releases it
    when the process ends, however it ends.  Raises :class:`StoreLockedError` when another run holds it."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise StoreLockedError(f"{path} is in use by another process (a run{' with pid ' + holder if holder else ''}"
                                   " holds it)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def short_writer(path: str | Path, patience_s: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write connection for one batch, closed at once.  A dashboard reading the file holds DuckDB's
    shared lock for a moment: wait for it (up to ``patience_s`` seconds), then raise StoreLockedError."""
    deadline = time.monotonic() + patience_s
    wait = 0.05
    while True:
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException as exc:
            if time.monotonic() > deadline:
                raise StoreLockedError(f"{path} stayed locked by a reader for {patience_s:.0f} s: {exc}") from exc
            time.sleep(wait)
            wait = min(wait * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


def write_batch(path: str | Path, rows: list[dict], run_id: str | None = None, **run_fields) -> int:
    """Upsert ``rows`` and update the run's progress fields in one short connection and one transaction
    (the progress column never disagrees with the rows); returns len(rows)."""
    with short_writer(path) as con:
        return upsert_results(con, rows, run_id, **run_fields)


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def upsert_results(con, rows: Iterable[dict], run_id: str | None = None, **run_fields) -> int:
    """Insert or replace result rows (dicts keyed by column name; missing columns are NULL) and, when
    ``run_id`` is given, set that run's ``run_fields`` — all in one transaction."""
    rows = list(rows)
    for row in rows:
        unknown = set(row) - set(COLUMN_NAMES)
        if unknown:
            raise KeyError(f"unknown result columns: {sorted(unknown)}")
    placeholders = ", ".join("?" for _ in COLUMN_NAMES)
    sql = f"INSERT OR REPLACE INTO results ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})"
    con.execute("BEGIN TRANSACTION")
    try:
        if rows:
            con.executemany(sql, [[_clean(row.get(name)) for name in COLUMN_NAMES] for row in rows])
        if run_id is not None:
            update_run(con, run_id, **run_fields)
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


def compact(path: str | Path) -> tuple[int, int]:
    """Rewrite the database file without the free blocks that rewritten rows leave behind (DuckDB does not
    shrink a file in place): copy every table into a fresh file (``COPY FROM DATABASE``), check that each
    table has the same rows, then replace the file atomically.  Holds the run lock, so no runner writes
    meanwhile.  Returns (bytes before, bytes after)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no database at {path}")
    tmp = path.with_name(path.name + ".compact")
    with run_lock(path):
        tmp.unlink(missing_ok=True)
        with short_writer(tmp) as con:
            target = con.execute("SELECT current_database()").fetchone()[0]
            con.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
            con.execute(f'COPY FROM DATABASE src TO "{target}"')
            tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'src'")
                      .fetchall()]
            for table in tables:
                a, b = (con.execute(f'SELECT count(*) FROM {db}."{table}"').fetchone()[0]
                        for db in ("src", f'"{target}"'))
                if a != b:
                    raise RuntimeError(f"compact: {table} has {b} rows in the copy, {a} in {path}; left unchanged")
            con.execute("DETACH src")
        before = path.stat().st_size
        os.replace(tmp, path)
    return before, path.stat().st_size


def main(argv=None) -> int:
    """``python -m core.store compact [DB]``: rewrite the results database without its free space."""
    import argparse

    from core.paths import default_db

    p = argparse.ArgumentParser(prog="python -m core.store", description=main.__doc__.split(":")[0])
    p.add_argument("command", choices=["compact"])
    p.add_argument("db", nargs="?", default=None, help="database file (default: the results database)")
    a = p.parse_args(argv)
    db = a.db or default_db()
    before, after = compact(db)
    print(f"{db}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
