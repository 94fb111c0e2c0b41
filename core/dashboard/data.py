"""Where the dashboard's data comes from, and which rows a view uses.

* locating the results database (``--db``, ``$BIOCODEC_DB``, :func:`core.paths.default_db`) and the
  data root (``--data-root``, :func:`core.paths.data_root`);
* loading a read-only :class:`Snapshot` (the file is closed again at once, so the runner can keep
  writing between page loads);
* the row selection: sidebar :class:`Filters`, **held-out rows by default** (rows of images no model
  involved has seen: :func:`core.provenance.held_out_mask`, the pandas form of
  ``core.provenance.HELD_OUT_SQL``) and the sentence each view shows about it (:func:`rows_note`);
* the overview tables, and the :class:`~core.catalog.ImageRef` of a stored row (:func:`find_ref`).

Units: sizes in bytes, rates in bits per pixel (bpp = 8·bytes/(H·W)), PSNR and MS-SSIM(dB) in dB,
times in seconds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd

from core import store
from core.bdrate import held_out_label
from core.provenance import TRAINING_FLAGS, held_out_mask
from core.metrics import ms_ssim_db
from core.paths import data_root, default_db

COLOUR_LABELS = {1: "gray", 3: "colour (RGB)"}
#: Label of the checkbox that switches rows of images seen in training into a view.
INCLUDE_TRAINING_LABEL = "include images seen in training"


# --------------------------------------------------------------------------- locating things


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def resolve_db_path(argv: list[str] | None = None, environ: dict | None = None) -> Path:
    """``--db PATH`` (after ``streamlit run app.py --``), else :func:`core.paths.default_db`
    (``$BIOCODEC_DB``, else results.duckdb in the repository); always absolute."""
    value = _flag_value(list(argv or []), "--db")
    if value:
        return Path(value).expanduser().resolve()
    return default_db(os.environ if environ is None else environ)


def resolve_data_root(argv: list[str] | None = None, environ: dict | None = None) -> Path:
    """``--data-root DIR``, else :func:`core.paths.data_root` (``$BIOCODEC_DATA_ROOT``, else ../shared/data)."""
    value = _flag_value(list(argv or []), "--data-root")
    if value:
        return Path(value).expanduser().resolve()
    return data_root(os.environ if environ is None else environ)


def missing_db_message(path: Path) -> str:
    """What to tell the user when the results database does not exist."""
    return (f"No results database at `{path}`. Make one with `python -m core.runner --db {path}` "
            "(embedded sample images; add `--stage 1` … `--stage 4 --data-root DIR` for the benchmark stages), "
            "or point the dashboard at another file with `streamlit run app.py -- --db PATH` "
            "or the environment variable `BIOCODEC_DB`.")


# --------------------------------------------------------------------------- loading


@dataclass
class Snapshot:
    """The database's tables, copied into memory (the file is closed again)."""

    results: pd.DataFrame
    runs: pd.DataFrame
    path: str = ""


def load_snapshot(path: str | Path, retries: int = 5, wait_s: float = 1.0) -> Snapshot:
    """Read ``results`` and ``runs`` read-only.

    Raises ``FileNotFoundError`` when the file is missing and :class:`core.store.StoreLockedError`
    when the runner holds the write lock after ``retries`` tries ``wait_s`` seconds apart.
    """
    con = store.open_reader(path, retries=retries, wait_s=wait_s)
    try:
        results = con.execute("SELECT * FROM results").df()
        runs = con.execute("SELECT * FROM runs ORDER BY started_at").df()
    finally:
        con.close()
    return Snapshot(add_derived_columns(results), runs, str(path))


def add_derived_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``ms_ssim_db`` (dB), ``family`` (classical/learned), ``colour`` (gray/colour) and ``held_out``
    (no model involved saw the image); training-flag columns missing from an older file are added as NULL."""
    df = df.copy()
    for column in TRAINING_FLAGS:
        if column not in df:
            df[column] = pd.Series(pd.NA, index=df.index, dtype="boolean")
    df["ms_ssim_db"] = ms_ssim_db(df["ms_ssim"].astype(float))
    df["family"] = df["codec"].map(codec_families(df["codec"].unique()))
    df["colour"] = df["channels"].map(COLOUR_LABELS)
    df["held_out"] = held_out_mask(df)
    return df


def codec_families(names: Iterable[str]) -> dict[str, str]:
    """codec name → ``Codec.family`` ('classical' | 'learned'); 'unknown' for names no longer registered."""
    from core.codecs import get_codec

    out = {}
    for name in names:
        try:
            out[name] = get_codec(name).family
        except Exception:  # a codec stored by another version of the code
            out[name] = "unknown"
    return out


def grain_note(codecs: Iterable[str]) -> str | None:
    """A caption for a selection that holds ``+grain`` codecs (:mod:`core.codecs.grain`), else None."""
    from core.codecs.grain import SUFFIX

    named = sorted(c for c in codecs if str(c).endswith(SUFFIX))
    if not named:
        return None
    return (f"{', '.join(named)}: the decoder adds synthetic grain (seeded white noise with the RMS of the coding "
            "residual, sent in 7 + 4 bytes per channel), so these reconstructions are not the source's pixels: "
            "noise independent of the coding error doubles the squared error, PSNR 10·log10(2) ≈ 3 dB below the "
            "plain codec's, while segmenters that key on texture (the EM mito U-Net) agree "
            "better with the original's segmentation. Compare them with each other, not with plain codecs.")


# --------------------------------------------------------------------------- row selection


def select_rows(results: pd.DataFrame, include_training: bool = False) -> pd.DataFrame:
    """Held-out rows (the default), or every row when ``include_training``."""
    if include_training:
        return results
    return results[held_out_mask(results)].reset_index(drop=True)


def rows_note(used: int, include_training: bool, left_out: int = 0) -> str:
    """The sentence a view shows about its rows, e.g. ``"842 rows (held-out only)"``."""
    note = f"{used:,} rows ({held_out_label(not include_training)})"
    if not include_training and left_out:
        note += f"; {left_out:,} rows of images seen in training left out"
    return note


@dataclass
class Filters:
    """What the user selected; empty lists mean 'all'.  Rows of images seen in training are left out
    unless ``include_training``; failed rows unless ``include_errors``."""

    stages: list[int] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    bit_depths: list[int] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)  # 'gray' / 'colour (RGB)'
    codecs: list[str] = field(default_factory=list)
    colour_modes: list[str] = field(default_factory=list)
    include_errors: bool = False
    include_training: bool = False


def filter_options(results: pd.DataFrame) -> dict[str, list]:
    """Distinct values offered by the filter widgets."""
    return {
        "stages": sorted(int(v) for v in results["stage"].dropna().unique()),
        "datasets": sorted(results["dataset"].dropna().unique()),
        "bit_depths": sorted(int(v) for v in results["bit_depth"].dropna().unique()),
        "colours": [COLOUR_LABELS[c] for c in sorted(int(v) for v in results["channels"].dropna().unique())
                    if c in COLOUR_LABELS],
        "codecs": sorted(results["codec"].dropna().unique()),
        "colour_modes": sorted(results["colour_mode"].dropna().unique()),
    }


def _mask(results: pd.DataFrame, f: Filters, training: bool) -> pd.Series:
    mask = pd.Series(True, index=results.index)
    if not f.include_errors:
        mask &= results["error"].isna()
    for column, values in (("stage", f.stages), ("dataset", f.datasets), ("bit_depth", f.bit_depths),
                           ("colour", f.colours), ("codec", f.codecs), ("colour_mode", f.colour_modes)):
        if values:
            mask &= results[column].isin(values)
    if not training:
        mask &= held_out_mask(results)
    return mask


def apply_filters(results: pd.DataFrame, f: Filters) -> pd.DataFrame:
    """The rows matching every non-empty filter: successful rows only unless ``include_errors``,
    held-out rows only unless ``include_training``."""
    return results[_mask(results, f, f.include_training)].reset_index(drop=True)


def selection_note(results: pd.DataFrame, f: Filters) -> str:
    """:func:`rows_note` of :func:`apply_filters` (how many rows, and how many training rows were left out)."""
    used = int(_mask(results, f, f.include_training).sum())
    left_out = 0 if f.include_training else int(_mask(results, f, True).sum()) - used
    return rows_note(used, f.include_training, left_out)


# --------------------------------------------------------------------------- overview


def overview_counts(results: pd.DataFrame) -> dict[str, int]:
    """Distinct stages, datasets, images, codecs and settings; rows, successful rows, error rows."""
    ok = results[results["error"].isna()]
    return {
        "stages": int(results["stage"].nunique()),
        "datasets": int(results["dataset"].nunique()),
        "images": int(results[["stage", "dataset", "image_id"]].drop_duplicates().shape[0]),
        "codecs": int(results["codec"].nunique()),
        "settings": int(results[["codec", "setting"]].drop_duplicates().shape[0]),
        "rows": int(len(results)),
        "ok_rows": int(len(ok)),
        "errors": int(results["error"].notna().sum()),
    }


def overview_by_dataset(results: pd.DataFrame) -> pd.DataFrame:
    """Per stage and dataset: images, codecs, rows, errors, bit depths and channel counts."""
    if results.empty:
        return pd.DataFrame(columns=["stage", "dataset", "images", "codecs", "rows", "errors", "bit depths",
                                     "channels"])
    g = results.groupby(["stage", "dataset"], sort=True)
    return pd.DataFrame({
        "images": g["image_id"].nunique(),
        "codecs": g["codec"].nunique(),
        "rows": g.size(),
        "errors": g["error"].apply(lambda s: int(s.notna().sum())),
        "bit depths": g["bit_depth"].apply(lambda s: ", ".join(str(int(v)) for v in sorted(s.dropna().unique()))),
        "channels": g["channels"].apply(lambda s: ", ".join(str(int(v)) for v in sorted(s.dropna().unique()))),
    }).reset_index()


def overview_by_codec(results: pd.DataFrame) -> pd.DataFrame:
    """Per codec and colour mode: family, settings, rows, errors, mean bpp."""
    if results.empty:
        return pd.DataFrame(columns=["codec", "colour_mode", "family", "settings", "rows", "errors", "mean bpp"])
    g = results.groupby(["codec", "colour_mode"], sort=True)
    return pd.DataFrame({
        "family": g["family"].first(),
        "settings": g["setting"].apply(lambda s: ", ".join(sorted(s.dropna().unique(), key=setting_sort_key))),
        "rows": g.size(),
        "errors": g["error"].apply(lambda s: int(s.notna().sum())),
        "mean bpp": g["bpp"].mean(),
    }).reset_index()


def error_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Rows that failed, with their message."""
    cols = list(store.KEY_COLUMNS) + ["error", "run_id"]
    return results.loc[results["error"].notna(), cols].reset_index(drop=True)


def provenance(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per runner invocation: run id, start/finish (UTC), commit, machine, key versions, argv."""
    rows = []
    for run in runs.itertuples(index=False):
        try:
            versions = json.loads(run.versions or "{}")
        except (TypeError, ValueError):
            versions = {}
        try:
            argv = " ".join(json.loads(run.argv or "[]"))
        except (TypeError, ValueError):
            argv = str(run.argv)
        rows.append({
            "run_id": run.run_id,
            "started (UTC)": run.started_at,
            "finished (UTC)": run.finished_at,
            "commit": run.git_commit,
            "machine": run.machine,
            "execution": _execution(run),
            "model load s": getattr(run, "load_s", None) or "",
            "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
            "argv": argv,
        })
    return pd.DataFrame(rows, columns=["run_id", "started (UTC)", "finished (UTC)", "commit", "machine",
                                       "execution", "model load s", "versions", "argv"])


def _execution(run) -> str:
    """'local, 2 workers, OMP 1 thread, repeat 1' from a run's Dask columns ('' for older databases)."""
    scheduler = getattr(run, "scheduler", None)
    if not isinstance(scheduler, str):
        return ""
    text = f"{scheduler}, {int(run.workers)} worker{'s' if run.workers != 1 else ''}"
    try:
        threads = {str(t.get("OMP_NUM_THREADS")) for t in json.loads(run.worker_threads or "{}").values()}
        text += f", OMP threads {'/'.join(sorted(threads))}" if threads else ""
    except (TypeError, ValueError, AttributeError):
        pass
    return text + f", repeat {int(run.repeat)}" if pd.notna(getattr(run, "repeat", None)) else text


#: a run with no finished_at and no batch written for this long is shown as stopped (killed), not running
STALE_RUN_S = 600.0


def live_runs(runs: pd.DataFrame, now: datetime | None = None, stale_after_s: float = STALE_RUN_S) -> pd.DataFrame:
    """Runs without ``finished_at``: rows written so far, rows planned, rows left, percent done, seconds
    since the last batch, and whether it is still ``running`` or ``stopped`` (no batch for ``stale_after_s``;
    a killed run — re-running the same command computes only what is left).  Empty for databases written
    before runs recorded their progress."""
    columns = ["run_id", "started (UTC)", "rows written", "rows planned", "rows left", "done %",
               "last write (s ago)", "status"]
    if runs.empty or "planned_rows" not in runs:
        return pd.DataFrame(columns=columns)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    out = []
    for run in runs[runs["finished_at"].isna() & runs["planned_rows"].notna()].itertuples(index=False):
        planned, written = int(run.planned_rows), int(run.rows_written or 0)
        last = run.heartbeat_at if pd.notna(run.heartbeat_at) else run.started_at
        ago = (pd.Timestamp(now) - pd.Timestamp(last)).total_seconds()
        out.append({"run_id": run.run_id, "started (UTC)": run.started_at, "rows written": written,
                    "rows planned": planned, "rows left": max(planned - written, 0),
                    "done %": round(100.0 * written / planned, 1) if planned else 100.0,
                    "last write (s ago)": round(ago), "status": "running" if ago <= stale_after_s else "stopped"})
    return pd.DataFrame(out, columns=columns)


def setting_sort_key(text: str):
    """Sort key of setting texts: numbers in numeric order, then other texts ('-')."""
    try:
        return (0, float(text), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(text))


# --------------------------------------------------------------------------- stored rows → images


def find_ref(stage: int, dataset: str, image_id: str, root: str | Path | None = None):
    """Rebuild the :class:`~core.catalog.ImageRef` of a stored row (the store keeps ids, not paths).

    Stage 0 uses the embedded set; other stages look the image up in every split of ``dataset``
    (:func:`core.catalog.split_refs`) under ``root`` (default :func:`core.paths.data_root`).
    Raises ``LookupError`` with the reason when the image cannot be found.
    """
    from core.catalog import SPLITS, split_refs
    from core.datasets import embedded_refs

    if int(stage) == 0:
        refs = embedded_refs()
    else:
        try:
            refs = split_refs(dataset, SPLITS, root)
        except Exception as exc:
            raise LookupError(f"stage {stage} images of {dataset} not found under data root "
                              f"{root or data_root()}: {exc}") from exc
    for ref in refs:
        if ref.dataset == dataset and ref.image_id == image_id:
            return ref
    raise LookupError(f"image {dataset}/{image_id} (stage {stage}) is not among the {len(refs)} images "
                      f"of {dataset} under {root or data_root()}")


# --------------------------------------------------------------------------- what a view opens on

#: The stage the views open on: stage 2, electron microscopy (held-out rows, one dataset).
DEFAULT_STAGE = 2


def catalog_order() -> list[tuple[int, str]]:
    """(stage, dataset) in the order of the catalog (data/stages.toml); [] when it cannot be read."""
    try:
        from core.catalog import load_definition

        return [(int(s["id"]), ds["name"]) for s in load_definition()["stages"] for ds in s.get("datasets", [])]
    except Exception:
        return []


def default_selection(rows: pd.DataFrame) -> dict:
    """What a view opens on, from the rows it may show (held-out, successful): ``{"stage", "dataset",
    "codecs"}`` — stage :data:`DEFAULT_STAGE` when it has rows (else the first stage that has), its first
    dataset in catalog order, and the learned codec, JPEG 2000 and AVIF among that dataset's codecs
    (:func:`core.dashboard.live.default_codecs`).  Values are None / [] when ``rows`` is empty."""
    from core.dashboard.live import default_codecs

    if rows.empty:
        return {"stage": None, "dataset": None, "codecs": []}
    stages = sorted(int(s) for s in rows["stage"].dropna().unique())
    stage = DEFAULT_STAGE if DEFAULT_STAGE in stages else stages[0]
    present = set(rows.loc[rows["stage"] == stage, "dataset"])
    ordered = [d for s, d in catalog_order() if s == stage and d in present] + sorted(present)
    dataset = ordered[0]
    codecs = sorted(rows.loc[(rows["stage"] == stage) & (rows["dataset"] == dataset), "codec"].unique())
    return {"stage": stage, "dataset": dataset, "codecs": default_codecs(codecs)}


def closest_stored(rows: pd.DataFrame, target_bpp: float) -> pd.Series:
    """The stored row whose bpp is closest to ``target_bpp`` (the one target-bpp rule, over the stored
    sweep); ties go to the lower rate."""
    if rows.empty:
        raise ValueError("no rows to choose from")
    d = rows.assign(_gap=(rows["bpp"].astype(float) - float(target_bpp)).abs()).sort_values(["_gap", "bpp"])
    return d.iloc[0].drop(labels="_gap")


def best_matched_target(bpp_a: Iterable[float], bpp_b: Iterable[float]) -> float:
    """A target bpp at which two stored sweeps come closest: the geometric mean of the pair of stored
    rates (one from each) with the smallest relative gap (what a side-by-side view opens on)."""
    import math

    pairs = [(max(a, b) / min(a, b), a, b) for a in map(float, bpp_a) for b in map(float, bpp_b) if a > 0 and b > 0]
    if not pairs:
        raise ValueError("no positive rates to match")
    _, a, b = min(pairs)
    return math.sqrt(a * b)
