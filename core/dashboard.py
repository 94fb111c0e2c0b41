"""Queries and computations behind the Streamlit dashboard (``app.py`` + ``views/``).

Everything here is plain Python (pandas, numpy, plotly) so it is testable without
a browser; the pages only lay out widgets and call these functions.

The dashboard never holds the results database open: each load opens it
read-only (:func:`core.store.open_reader`, which retries while the runner holds
the write lock), copies the tables into DataFrames and closes it again, so the
runner can keep writing between page loads.

Units: sizes in bytes, rates in bits per pixel (bpp = 8·bytes/(H·W)), PSNR and
MS-SSIM(dB) in dB, times in seconds.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from core import store
from core.metrics import ms_ssim_db

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = REPO_ROOT / "results.duckdb"
DB_ENV = "BIOCODEC_DB"
DATA_ROOT_ENV = "BIOCODEC_DATA_ROOT"

#: Live-comparison limits (stated in the page): file size in bytes and image side in pixels.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
UPLOAD_TYPES = ("png", "tif", "tiff", "jpg", "jpeg", "pgm", "ppm", "pnm")

#: y-axis choices of the rate–distortion page: column → label (with unit).
RD_METRICS = {
    "psnr": "PSNR (dB, MAX = 2^bit_depth − 1)",
    "psnr_peak": "PSNR (dB, MAX = image peak)",
    "ssim": "SSIM",
    "ms_ssim_db": "MS-SSIM (dB, −10·log10(1 − MS-SSIM))",
    "ms_ssim": "MS-SSIM",
    "seg_dice": "Dice (segmentation of reconstruction vs original)",
    "seg_iou": "IoU (segmentation of reconstruction vs original)",
    "contour_bf1": "Boundary F1 at 2 px",
}
#: y-axis choices of the downstream page.
DOWNSTREAM_METRICS = {
    "seg_dice": "Dice (reconstruction vs original segmentation)",
    "seg_iou": "IoU (reconstruction vs original segmentation)",
    "seg_f1": "object F1 at IoU 0.5",
    "contour_bf1": "boundary F1 at 2 px",
    "seg_dice_gt_reconstruction": "Dice vs ground truth (reconstruction)",
}
COLOUR_LABELS = {1: "gray", 3: "colour (RGB)"}


# --------------------------------------------------------------------------- locating things


def resolve_db_path(argv: list[str] | None = None, environ: dict | None = None) -> Path:
    """``--db PATH`` (after ``streamlit run app.py --``), else ``$BIOCODEC_DB``, else results.duckdb in the repo."""
    argv = list(argv or [])
    environ = os.environ if environ is None else environ
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--db="):
            return Path(arg.split("=", 1)[1])
    if environ.get(DB_ENV):
        return Path(environ[DB_ENV])
    return DEFAULT_DB


def resolve_data_root(argv: list[str] | None = None, environ: dict | None = None) -> Path | None:
    """``--data-root DIR``, else ``$BIOCODEC_DATA_ROOT``, else None (core.stages' default, ../shared/data)."""
    argv = list(argv or [])
    environ = os.environ if environ is None else environ
    for i, arg in enumerate(argv):
        if arg == "--data-root" and i + 1 < len(argv):
            return Path(argv[i + 1])
    if environ.get(DATA_ROOT_ENV):
        return Path(environ[DATA_ROOT_ENV])
    return None


def missing_db_message(path: Path) -> str:
    """What to tell the user when the results database does not exist."""
    return (f"No results database at `{path}`. Make one with `python -m core.runner --db {path}` "
            "(embedded sample images; add `--stage 1` … `--stage 4 --data-root DIR` for the benchmark stages), "
            "or point the dashboard at another file with `streamlit run app.py -- --db PATH` "
            f"or the environment variable `{DB_ENV}`.")


# --------------------------------------------------------------------------- loading


@dataclass
class Snapshot:
    """The database's tables, copied into memory (the file is closed again)."""

    results: pd.DataFrame
    runs: pd.DataFrame
    path: str = ""


def load_snapshot(path: str | Path, retries: int = 5, wait_s: float = 1.0) -> Snapshot:
    """Read ``results`` and ``runs`` read-only.

    Raises ``FileNotFoundError`` when the file is missing and
    :class:`core.store.StoreLockedError` when the runner holds the write lock
    after ``retries`` tries ``wait_s`` seconds apart.
    """
    con = store.open_reader(path, retries=retries, wait_s=wait_s)
    try:
        results = con.execute("SELECT * FROM results").df()
        runs = con.execute("SELECT * FROM runs ORDER BY started_at").df()
    finally:
        con.close()
    return Snapshot(add_derived_columns(results), runs, str(path))


def add_derived_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``ms_ssim_db`` (dB), ``family`` (classical/learned) and ``colour`` (gray/colour) columns."""
    df = df.copy()
    df["ms_ssim_db"] = ms_ssim_db(df["ms_ssim"].astype(float))
    families = codec_families(df["codec"].unique())
    df["family"] = df["codec"].map(families)
    df["colour"] = df["channels"].map(COLOUR_LABELS)
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
    out = pd.DataFrame({
        "images": g["image_id"].nunique(),
        "codecs": g["codec"].nunique(),
        "rows": g.size(),
        "errors": g["error"].apply(lambda s: int(s.notna().sum())),
        "bit depths": g["bit_depth"].apply(lambda s: ", ".join(str(int(v)) for v in sorted(s.dropna().unique()))),
        "channels": g["channels"].apply(lambda s: ", ".join(str(int(v)) for v in sorted(s.dropna().unique()))),
    }).reset_index()
    return out


def overview_by_codec(results: pd.DataFrame) -> pd.DataFrame:
    """Per codec and colour mode: family, settings, rows, errors, mean bpp."""
    if results.empty:
        return pd.DataFrame(columns=["codec", "colour_mode", "family", "settings", "rows", "errors", "mean bpp"])
    g = results.groupby(["codec", "colour_mode"], sort=True)
    return pd.DataFrame({
        "family": g["family"].first(),
        "settings": g["setting"].apply(lambda s: ", ".join(sorted(s.unique(), key=_setting_sort_key))),
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
            "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
            "argv": argv,
        })
    return pd.DataFrame(rows, columns=["run_id", "started (UTC)", "finished (UTC)", "commit", "machine",
                                       "versions", "argv"])


def _setting_sort_key(text: str):
    try:
        return (0, float(text), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(text))


# --------------------------------------------------------------------------- filtering


@dataclass
class Filters:
    """What the user selected; None / empty means 'all'."""

    stages: list[int] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    bit_depths: list[int] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)  # 'gray' / 'colour (RGB)'
    codecs: list[str] = field(default_factory=list)
    colour_modes: list[str] = field(default_factory=list)
    include_errors: bool = False


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


def apply_filters(results: pd.DataFrame, f: Filters) -> pd.DataFrame:
    """The rows matching every non-empty filter (successful rows only unless ``include_errors``)."""
    mask = pd.Series(True, index=results.index)
    if not f.include_errors:
        mask &= results["error"].isna()
    for column, values in (("stage", f.stages), ("dataset", f.datasets), ("bit_depth", f.bit_depths),
                           ("colour", f.colours), ("codec", f.codecs), ("colour_mode", f.colour_modes)):
        if values:
            mask &= results[column].isin(values)
    return results[mask].reset_index(drop=True)


# --------------------------------------------------------------------------- rate–distortion


def curve_label(codec: str, colour_mode: str) -> str:
    return codec if colour_mode == "joint" else f"{codec} ({colour_mode})"


def rd_points(df: pd.DataFrame, metric: str, view: str = "mean") -> tuple[pd.DataFrame, int]:
    """Points of the rate–distortion plot, and how many rows had no finite value of ``metric``.

    ``view='mean'``: one point per (stage, dataset, codec, colour mode, setting), the mean bpp
    and mean metric over the images (``images`` = how many).  ``view='per_image'``: one point
    per stored row.  Rows whose metric is NULL or infinite (an exact, lossless
    reconstruction has PSNR = +inf) cannot be drawn and are counted instead.
    """
    if view not in ("mean", "per_image"):
        raise ValueError("view must be 'mean' or 'per_image'")
    values = pd.to_numeric(df[metric], errors="coerce") if metric in df else pd.Series(np.nan, index=df.index)
    finite = np.isfinite(values.to_numpy(dtype=float)) & np.isfinite(df["bpp"].to_numpy(dtype=float))
    dropped = int((~finite).sum())
    d = df[finite].assign(y=values[finite])
    d = d.assign(curve=[curve_label(c, m) for c, m in zip(d["codec"], d["colour_mode"])])
    if view == "per_image":
        out = d[["stage", "dataset", "image_id", "codec", "colour_mode", "curve", "family", "setting", "bpp", "y"]]
        return out.sort_values(["curve", "image_id", "bpp"]).reset_index(drop=True), dropped
    if d.empty:
        return pd.DataFrame(columns=["stage", "dataset", "codec", "colour_mode", "curve", "family", "setting",
                                     "bpp", "y", "images", "image_id"]), dropped
    g = d.groupby(["stage", "dataset", "codec", "colour_mode", "curve", "family", "setting"], sort=False)
    out = g.agg(bpp=("bpp", "mean"), y=("y", "mean"), images=("image_id", "nunique")).reset_index()
    out["image_id"] = out["images"].map(lambda n: f"mean of {n} image(s)")
    return out.sort_values(["curve", "dataset", "bpp"]).reset_index(drop=True), dropped


def rd_figure(points: pd.DataFrame, metric: str, x: str = "bpp", x_label: str = "bits per pixel (bpp)",
              y_label: str | None = None, per_image: bool = False, markers: pd.DataFrame | None = None):
    """Plotly figure: one line per codec (and dataset / image); learned solid, classical dashed.

    Hover shows codec, setting and image.  ``markers`` (columns ``curve``, ``x``, ``y``, ``label``)
    are drawn as large symbols on top (e.g. Dice-safe operating points).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    datasets = points["dataset"].nunique() if "dataset" in points else 1
    group_cols = ["curve", "dataset"] + (["image_id"] if per_image else [])
    colours = _palette(sorted(points["curve"].unique()) if len(points) else [])
    shown: set = set()
    for keys, part in points.groupby(group_cols, sort=True):
        curve, dataset = keys[0], keys[1]
        name = curve if datasets == 1 else f"{curve} · {dataset}"
        learned = (part["family"] == "learned").any()
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(
            x=part[x], y=part["y"], mode="lines+markers", name=name,
            line=dict(dash="solid" if learned else "dash", color=colours[curve], width=1 if per_image else 2),
            marker=dict(size=5 if per_image else 7),
            customdata=np.stack([part["codec"], part["setting"], part["image_id"], part["dataset"]], axis=-1),
            hovertemplate=("codec %{customdata[0]}<br>setting %{customdata[1]}<br>image %{customdata[2]}"
                           "<br>dataset %{customdata[3]}<br>" + x + " %{x:.4g}<br>" + metric
                           + " %{y:.4g}<extra></extra>"),
            legendgroup=curve, showlegend=not per_image or curve not in shown,
        ))
        shown.add(curve)
    if markers is not None and len(markers):
        fig.add_trace(go.Scatter(x=markers["x"], y=markers["y"], mode="markers", name="Dice-safe point",
                                 marker=dict(symbol="star", size=16, color="black"),
                                 text=markers["label"], hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(xaxis_title=x_label, yaxis_title=y_label or RD_METRICS.get(metric, metric),
                      legend_title="codec (solid = learned, dashed = classical)", height=520,
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


def _palette(names: list[str]) -> dict[str, str]:
    import plotly.express as px

    colours = px.colors.qualitative.Plotly + px.colors.qualitative.Dark24
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def bd_rate(db_path: str | Path, metric: str, anchor: str = "jpeg2000", stage: int | None = None,
            dataset: str | None = None, codecs: Iterable[str] | None = None):
    """BD-rate table from :func:`core.bdrate.bd_rate_table` (opened read-only, closed after),
    restricted to the rows of ``codecs`` when given.

    Returns ``(table, notice)``: ``table`` is None with a notice when ``core.bdrate``
    is not available yet or the computation failed.
    """
    try:
        from core import bdrate
    except ImportError as exc:
        return None, f"BD-rate table unavailable: core.bdrate is not installed yet ({exc})."
    supported = list(getattr(bdrate, "METRICS", []))
    if supported and metric not in supported:
        return None, f"BD-rate is computed for {', '.join(supported)} only; choose one of those metrics."
    bd_rate_table = bdrate.bd_rate_table
    con = store.open_reader(db_path)
    try:
        table = bd_rate_table(con, metric=metric, anchor=anchor, stage=stage, dataset=dataset)
    except Exception as exc:  # e.g. anchor missing for this selection
        return None, f"BD-rate table not computed: {type(exc).__name__}: {exc}"
    finally:
        con.close()
    if table is not None and codecs and "codec" in table:
        table = table[table["codec"].isin(list(codecs))].reset_index(drop=True)
    if table is not None and len(table) == 0:
        return None, f"No BD-rate for this selection (anchor {anchor}; lossless codecs have no curve)."
    return table, None


def bd_rate_display(table: pd.DataFrame) -> pd.DataFrame:
    """The BD-rate table arranged for a narrow column: BD-rate (%) first after the codec."""
    first = [c for c in ("codec", "colour_mode", "bd_rate", "dataset", "stage", "points", "anchor_points",
                         "images", "reason") if c in table]
    rest = [c for c in table.columns if c not in first and c != "metric"]
    return table[first + rest].rename(columns={"bd_rate": "BD-rate %"})


# --------------------------------------------------------------------------- downstream


def downstream_points(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean ``metric`` and mean compression factor (raw/encoded bytes) per stage, dataset, codec, mode, setting."""
    values = pd.to_numeric(df[metric], errors="coerce")
    d = df[values.notna() & np.isfinite(df["factor"].astype(float))].assign(y=values)
    if d.empty:
        return pd.DataFrame(columns=["stage", "dataset", "codec", "colour_mode", "curve", "family", "setting",
                                     "factor", "bpp", "y", "images", "image_id"])
    d = d.assign(curve=[curve_label(c, m) for c, m in zip(d["codec"], d["colour_mode"])])
    g = d.groupby(["stage", "dataset", "codec", "colour_mode", "curve", "family", "setting"], sort=False)
    out = g.agg(factor=("factor", "mean"), bpp=("bpp", "mean"), y=("y", "mean"),
                images=("image_id", "nunique")).reset_index()
    out["image_id"] = out["images"].map(lambda n: f"mean of {n} image(s)")
    return out.sort_values(["curve", "dataset", "factor"]).reset_index(drop=True)


def dice_safe_points(db_path: str | Path, threshold: float):
    """Dice-safe operating points from :func:`core.downstream.dice_safe_operating_points`.

    Returns ``(table, notice)``; table is None with a notice when that module is not available.
    """
    try:
        from core.downstream import dice_safe_operating_points
    except ImportError as exc:
        return None, f"Dice-safe table unavailable: core.downstream is not installed yet ({exc})."
    con = store.open_reader(db_path)
    try:
        table = dice_safe_operating_points(con, threshold)
    except Exception as exc:
        return None, f"Dice-safe table not computed: {type(exc).__name__}: {exc}"
    finally:
        con.close()
    if not isinstance(table, pd.DataFrame):
        table = pd.DataFrame(table)
    return table, None


def safe_point_markers(table: pd.DataFrame | None, points: pd.DataFrame) -> pd.DataFrame:
    """Markers (curve, x = factor, y) for the Dice-safe points that lie on the plotted curves."""
    empty = pd.DataFrame(columns=["curve", "x", "y", "label"])
    if table is None or table.empty or not {"codec", "setting"} <= set(table.columns) or points.empty:
        return empty
    keys = ["codec", "setting"] + [k for k in ("stage", "dataset", "colour_mode") if k in table.columns]
    t = table.copy()
    t["setting"] = t["setting"].map(store.format_setting)
    merged = points.merge(t[keys], on=keys, how="inner")
    if merged.empty:
        return empty
    return pd.DataFrame({"curve": merged["curve"], "x": merged["factor"], "y": merged["y"],
                         "label": [f"Dice-safe: {c} setting {s} ({f:.1f}×)"
                                   for c, s, f in zip(merged["curve"], merged["setting"], merged["factor"])]})


# --------------------------------------------------------------------------- images (side by side)


def parse_setting(text: str, codec=None):
    """Stored setting text → the value the codec was run with ('-' → None; '50' → 50; '0.75' → 0.75)."""
    if text in (None, "-", ""):
        return None
    if codec is not None:
        for s in codec.default_settings:
            if store.format_setting(s) == text:
                return s
    number = float(text)
    return int(number) if number.is_integer() else number


def find_ref(stage: int, dataset: str, image_id: str, data_root: str | Path | None):
    """Rebuild the :class:`ImageRef` of a stored row (the store keeps ids, not paths).

    Stage 0 uses the embedded set; other stages ask ``core.stages.stage_refs``.
    Raises ``LookupError`` with the reason when the image cannot be found.
    """
    from core.datasets import embedded_refs

    if int(stage) == 0:
        refs = embedded_refs()
    else:
        try:
            from core.stages import stage_refs
        except ImportError as exc:
            raise LookupError(f"core.stages is not available ({exc}); cannot locate stage {stage} images") from exc
        try:
            refs = stage_refs(str(stage), data_root)
        except Exception as exc:
            raise LookupError(f"stage {stage} images not found under data root "
                              f"{data_root or '(default)'}: {exc}") from exc
    for ref in refs:
        if ref.dataset == dataset and ref.image_id == image_id:
            return ref
    raise LookupError(f"image {dataset}/{image_id} (stage {stage}) is not among the {len(refs)} images "
                      f"of that stage under {data_root or 'the default data root'}")


def window_to_8bit(pixels: np.ndarray, bit_depth: int, low_pct: float = 0.5, high_pct: float = 99.5,
                   reference: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """An 8-bit view of ``pixels`` and the sentence that states how it was made.

    8-bit data is returned unchanged.  Deeper data is windowed linearly: the
    ``low_pct``–``high_pct`` percentiles of ``reference`` (default: ``pixels``;
    pass the original so a reconstruction uses the same window) map to 0–255.
    """
    if pixels.dtype == np.uint8:
        return pixels, "8-bit, shown as stored (no windowing)."
    ref = pixels if reference is None else reference
    lo, hi = (float(v) for v in np.percentile(ref, [low_pct, high_pct]))
    if hi <= lo:
        hi = lo + 1.0
    scaled = (pixels.astype(np.float64) - lo) * (255.0 / (hi - lo))
    view = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    note = (f"{bit_depth}-bit data shown 8-bit: linear window {low_pct:g}–{high_pct:g} percentile of the original "
            f"= [{lo:.0f}, {hi:.0f}] → [0, 255], values outside clipped.")
    return view, note


def crop_window(shape: tuple[int, ...], centre_y: float, centre_x: float, size: int) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of a ``size``×``size`` window centred at the fractions (0–1) given, kept inside."""
    h, w = shape[:2]
    size = max(1, min(size, h, w))
    y0 = int(round(centre_y * (h - size)))
    x0 = int(round(centre_x * (w - size)))
    return y0, x0, y0 + size, x0 + size


def zoom(pixels: np.ndarray, window: tuple[int, int, int, int], display: int = 384) -> np.ndarray:
    """The crop ``window`` enlarged by pixel repetition (nearest neighbour, no interpolation) to ≈ ``display`` px."""
    y0, x0, y1, x1 = window
    part = pixels[y0:y1, x0:x1]
    factor = max(1, display // max(part.shape[:2]))
    return np.repeat(np.repeat(part, factor, axis=0), factor, axis=1)


def abs_difference(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """|original − reconstruction| per pixel (max over channels for RGB), in intensity units."""
    diff = np.abs(original.astype(np.int64) - reconstruction.astype(np.int64))
    return diff.max(axis=2) if diff.ndim == 3 else diff


def heat_map(diff: np.ndarray, vmax: float | None = None) -> tuple[np.ndarray, float]:
    """RGB uint8 'inferno' rendering of an absolute-difference map, and the value mapped to full scale."""
    from matplotlib import colormaps

    vmax = float(diff.max()) if vmax is None else float(vmax)
    scaled = diff / vmax if vmax > 0 else np.zeros(diff.shape)
    rgb = colormaps["inferno"](np.clip(scaled, 0, 1))[..., :3]
    return (rgb * 255).round().astype(np.uint8), vmax


def overlay_segmentation(view8: np.ndarray, segmentation: dict) -> np.ndarray:
    """Draw a segmentation in red on an 8-bit view (RGB uint8 out).

    ``segmentation`` is what ``DownstreamEvaluator.segment`` returns: the boundaries
    of ``labels`` (instances) are drawn when present, else the ``contours`` mask.
    """
    from skimage.segmentation import find_boundaries

    rgb = np.stack([view8] * 3, axis=-1) if view8.ndim == 2 else view8.copy()
    if segmentation.get("labels") is not None:
        edges = find_boundaries(np.asarray(segmentation["labels"]), mode="inner")
    elif segmentation.get("contours") is not None:
        edges = np.asarray(segmentation["contours"], dtype=bool)
    else:
        raise ValueError("segmentation has neither labels nor contours")
    rgb[edges] = (255, 40, 40)
    return rgb


def png_bytes(pixels: np.ndarray) -> bytes:
    """Lossless PNG of a uint8/uint16 array (16-bit stays 16-bit)."""
    import imagecodecs

    return bytes(imagecodecs.png_encode(np.ascontiguousarray(pixels)))


# --------------------------------------------------------------------------- live comparison


class UploadError(ValueError):
    """An uploaded file is unsupported or over the stated limits."""


def read_upload(data: bytes, name: str, bit_depth: int | None = None, page: int | None = None):
    """Read an uploaded file into a BioImage, enforcing :data:`MAX_UPLOAD_BYTES` and :data:`MAX_UPLOAD_SIDE`."""
    from core.io import ImageReadError, read_image_bytes

    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise UploadError(f"{name}: unsupported file type '.{suffix}' (use {', '.join(UPLOAD_TYPES)})")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: {len(data) / 2**20:.1f} MB exceeds the live-comparison limit of "
                          f"{MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        image = read_image_bytes(data, name, bit_depth=bit_depth, page=page)
    except ImageReadError as exc:
        raise UploadError(str(exc)) from exc
    if max(image.height, image.width) > MAX_UPLOAD_SIDE:
        raise UploadError(f"{name}: {image.width}×{image.height} exceeds the live-comparison limit of "
                          f"{MAX_UPLOAD_SIDE}×{MAX_UPLOAD_SIDE} pixels")
    return image


def codecs_for_image(bit_depth: int, channels: int, colour_mode: str = "joint",
                     names: Iterable[str] | None = None) -> list[str]:
    """Registered codecs that can code an image of this depth and channel count in ``colour_mode``."""
    from core.codecs import available_codecs, get_codec

    effective = 1 if colour_mode == "per_channel" else channels
    out = []
    for name in names if names is not None else available_codecs():
        try:
            if get_codec(name).supports(bit_depth, effective):
                out.append(name)
        except Exception:
            continue
    return out


@dataclass
class SearchResult:
    """Outcome of :func:`search_setting`: the evaluation closest to the target and every trial."""

    setting: object
    evaluation: object  # core.evaluate.Evaluation
    target_bpp: float
    reached: bool  # within the tolerance
    trials: list[tuple[object, float]]  # (setting, bpp) in evaluation order
    note: str = ""


def search_setting(image, codec, target_bpp: float, rel_tol: float = 0.03, max_evals: int = 14,
                   evaluate_fn: Callable | None = None) -> SearchResult:
    """Find the setting whose bpp is closest to ``target_bpp`` by bisection on the codec's knob.

    The knob is searched between the ends of ``codec.default_settings`` (fewest →
    most bytes; either numeric direction).  Integer knobs (every default an int)
    stay integers.  Stops when the bpp is within ``rel_tol`` of the target, the
    bracket cannot be split further, or after ``max_evals`` evaluations.  A target
    outside the range gives the nearest end, with ``reached = False`` and a note.
    """
    from core.evaluate import evaluate

    evaluate_fn = evaluate_fn or evaluate
    if target_bpp <= 0:
        raise ValueError("target bpp must be > 0")
    cache: dict = {}
    trials: list[tuple[object, float]] = []

    def run(setting):
        if setting not in cache:
            cache[setting] = evaluate_fn(image, codec, setting)
            trials.append((setting, cache[setting].metrics["bpp"]))
        return cache[setting]

    def done(setting, note=""):
        best = min(cache, key=lambda s: abs(cache[s].metrics["bpp"] - target_bpp))
        bpp = cache[best].metrics["bpp"]
        return SearchResult(best, cache[best], target_bpp, abs(bpp - target_bpp) <= rel_tol * target_bpp,
                            trials, note)

    settings = [s for s in codec.default_settings]
    if codec.lossless or settings == [None]:
        run(None)
        return done(None, "lossless codec: one rate only")
    integer = all(isinstance(s, (int, np.integer)) for s in settings)
    low, high = settings[0], settings[-1]  # fewest bytes, most bytes
    bpp_low, bpp_high = run(low).metrics["bpp"], run(high).metrics["bpp"]
    if target_bpp <= bpp_low:
        return done(low, f"target below the range searched ({bpp_low:.3f}–{bpp_high:.3f} bpp at settings "
                         f"{low}–{high}): nearest end")
    if target_bpp >= bpp_high:
        return done(high, f"target above the range searched ({bpp_low:.3f}–{bpp_high:.3f} bpp at settings "
                          f"{low}–{high}): nearest end")
    while len(cache) < max_evals:
        mid = (low + high) / 2
        if integer:
            mid = int(round(mid))
            if mid in (low, high):
                break
        bpp = run(mid).metrics["bpp"]
        if abs(bpp - target_bpp) <= rel_tol * target_bpp:
            break
        if bpp < target_bpp:
            low = mid
        else:
            high = mid
    return done(None)


@dataclass
class LiveResult:
    """One codec's live result: the evaluation (metrics, encoded bytes, reconstruction) and a note."""

    evaluation: object  # core.evaluate.Evaluation
    note: str = ""


def live_compress(image, codec, colour_mode: str = "joint", setting=None, target_bpp: float | None = None,
                  ) -> LiveResult:
    """Compress an uploaded image with ``codec`` in ``colour_mode`` at ``setting``, or at the setting whose
    rate is closest to ``target_bpp`` (bits per pixel; :func:`search_setting`) when that is given."""
    from core.evaluate import codec_for_mode, evaluate

    runner = codec_for_mode(codec, colour_mode, image.channels)
    if target_bpp is None:
        return LiveResult(evaluate(image, runner, None if runner.lossless else setting))
    found = search_setting(image, runner, target_bpp)
    note = f"searched {len(found.trials)} settings: " + ", ".join(f"{s} → {b:.3f} bpp" for s, b in found.trials)
    return LiveResult(found.evaluation, note + (f". {found.note}" if found.note else ""))


def encoded_suffix(codec_name: str) -> str:
    """File extension for a download of the encoded bytes of ``codec_name``."""
    suffixes = {"jpeg": ".jpg", "jpeg2000": ".jp2", "jpeg2000-lossless": ".jp2", "png": ".png", "jpegxl": ".jxl",
                "jpegxl-lossless": ".jxl", "avif": ".avif", "webp": ".webp", "webp-lossless": ".webp",
                "jpegls": ".jls", "jpegls-near": ".jls"}
    return suffixes.get(codec_name, ".bin")


def live_row(codec_name: str, colour_mode: str, evaluation) -> dict:
    """The table row shown for one live evaluation (sizes in bytes, rate in bpp, dB, seconds)."""
    m = evaluation.metrics
    return {"codec": codec_name, "colour_mode": colour_mode, "setting": m["setting"], "bytes": m["bytes"],
            "bpp": m["bpp"], "ratio": m["ratio"], "factor": m["factor"], "PSNR dB": m["psnr"],
            "SSIM": m["ssim"], "MS-SSIM": m["ms_ssim"], "MS-SSIM dB": ms_ssim_db(m["ms_ssim"]),
            "encode s": m["encode_s"], "decode s": m["decode_s"]}


# --------------------------------------------------------------------------- export


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    return buffer.getvalue()
