"""Bjøntegaard-delta rate (BD-rate) of every codec against an anchor (JPEG 2000), per dataset.

Computed from stored results with the ``bjontegaard`` package, **Akima
interpolation** (``method="akima"``) of log-rate over quality, integrated over the
overlapping quality range.  Rate = mean bits per pixel (bpp) over the dataset's
images at each setting; quality = the mean over the same images of

* ``psnr`` — PSNR in dB (MAX = 2^bit_depth − 1), or
* ``ms_ssim_db`` — MS-SSIM in dB, −10·log10(1 − MS-SSIM).

Both curves are built over the *same* images (those both codecs coded), so a codec
that skips some images (e.g. JPEG on 16-bit data) is compared on its subset only.
Lossless rows and rows with errors are ignored.  A curve keeps only its points of
strictly increasing quality in rate order.  BD-rate is in percent: −10 means the
codec needs 10 % fewer bits than the anchor for the same quality.  It is NaN, with
the reason, when either curve has < 4 points or the quality ranges do not overlap.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from core.metrics import ms_ssim_db

METHOD = "akima"
MIN_POINTS = 4
METRICS = {"psnr": "PSNR (dB)", "ms_ssim_db": "MS-SSIM (dB)"}

_ROWS_SQL = """
    SELECT stage, dataset, image_id, codec, colour_mode, setting, bpp, psnr, ms_ssim
    FROM results
    WHERE error IS NULL AND setting <> '-' AND bpp IS NOT NULL {filters}
"""


def load_points(con, stage: int | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Lossy, successful result rows (one per image × codec × setting × colour mode) as a DataFrame."""
    filters, params = "", []
    if stage is not None:
        filters += " AND stage = ?"
        params.append(int(stage))
    if dataset is not None:
        filters += " AND dataset = ?"
        params.append(dataset)
    frame = con.execute(_ROWS_SQL.format(filters=filters), params).df()
    frame["ms_ssim_db"] = ms_ssim_db(frame["ms_ssim"].astype(float))
    return frame


def rd_curve(rows: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(rate bpp, quality) per setting — means over images — sorted by rate, quality strictly increasing."""
    finite = rows[np.isfinite(rows[metric].astype(float)) & np.isfinite(rows["bpp"].astype(float))]
    means = finite.groupby("setting")[["bpp", metric]].mean().sort_values("bpp")
    rate, quality = [], []
    for bpp, value in zip(means["bpp"], means[metric]):
        if bpp > 0 and (not quality or value > quality[-1]):
            rate.append(float(bpp))
            quality.append(float(value))
    return np.array(rate), np.array(quality)


def bd_rate(rate_anchor, quality_anchor, rate_test, quality_test) -> tuple[float, str | None]:
    """BD-rate in percent (Akima), or (NaN, reason)."""
    import bjontegaard

    if len(rate_anchor) < MIN_POINTS or len(rate_test) < MIN_POINTS:
        return math.nan, f"< {MIN_POINTS} points (anchor {len(rate_anchor)}, codec {len(rate_test)})"
    low = max(quality_anchor.min(), quality_test.min())
    high = min(quality_anchor.max(), quality_test.max())
    if high <= low:
        return math.nan, (f"quality ranges do not overlap (anchor {quality_anchor.min():.2f}–{quality_anchor.max():.2f},"
                          f" codec {quality_test.min():.2f}–{quality_test.max():.2f})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(rate_anchor, quality_anchor, rate_test, quality_test, method=METHOD,
                                    require_matching_points=False, min_overlap=0)
    value = float(value)
    return (value, None) if math.isfinite(value) else (math.nan, "interpolation failed")


def bd_rate_table(con, metric: str = "psnr", anchor: str = "jpeg2000", stage: int | None = None,
                  dataset: str | None = None) -> pd.DataFrame:
    """BD-rate (%) of every (codec, colour mode) vs ``anchor`` (joint colour mode), per stage and dataset.

    Columns: stage, dataset, codec, colour_mode, metric, bd_rate (percent; NaN when not
    computable), points (the codec curve's points), anchor_points, images, reason.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    frame = load_points(con, stage, dataset)
    columns = ["stage", "dataset", "codec", "colour_mode", "metric", "bd_rate", "points", "anchor_points",
               "images", "reason"]
    out = []
    for (st, ds), rows in frame.groupby(["stage", "dataset"], sort=True):
        anchor_rows = rows[(rows["codec"] == anchor) & (rows["colour_mode"] == "joint")]
        if anchor_rows.empty:
            continue
        for (codec, mode), test_rows in rows.groupby(["codec", "colour_mode"], sort=True):
            if codec == anchor and mode == "joint":
                continue
            images = set(test_rows["image_id"]) & set(anchor_rows["image_id"])
            ra, qa = rd_curve(anchor_rows[anchor_rows["image_id"].isin(images)], metric)
            rt, qt = rd_curve(test_rows[test_rows["image_id"].isin(images)], metric)
            value, reason = bd_rate(ra, qa, rt, qt)
            out.append([int(st), ds, codec, mode, metric, value, len(rt), len(ra), len(images), reason])
    return pd.DataFrame(out, columns=columns)


def print_bd_tables(con, refs=None, anchor: str = "jpeg2000") -> None:
    """Print BD-rate tables (PSNR and MS-SSIM dB) for the stages/datasets of ``refs`` (all when None).

    Prints one line and returns when no anchor rows exist; never raises (the run's rows are stored already).
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    keys = sorted({(r.stage, r.dataset) for r in refs}) if refs else None
    try:
        for metric, label in METRICS.items():
            table = bd_rate_table(con, metric=metric, anchor=anchor)
            if keys is not None and not table.empty:
                table = table[[(s, d) in keys for s, d in zip(table["stage"], table["dataset"])]]
            if table.empty:
                console.print(f"BD-rate ({label}): no {anchor} rows with a comparable codec in these results; skipped")
                continue
            table["column"] = [f"{s}:{d}" for s, d in zip(table["stage"], table["dataset"])]
            table["row"] = [c if m == "joint" else f"{c} ({m})" for c, m in zip(table["codec"], table["colour_mode"])]
            datasets = sorted(table["column"].unique())
            console.print(f"\nBD-rate (%) vs {anchor}, quality = {label}, Akima interpolation of mean bpp per "
                          "setting (negative = fewer bits than the anchor; — = not computable)")
            grid = Table(title=f"BD-rate % vs {anchor}, {label}")
            grid.add_column("codec")
            for name in datasets:
                grid.add_column(name, justify="right")
            for row_name, part in table.groupby("row", sort=True):
                values = dict(zip(part["column"], part["bd_rate"]))
                grid.add_row(row_name, *["—" if name not in values or not math.isfinite(values[name])
                                         else f"{values[name]:+.1f}" for name in datasets])
            console.print(grid)
            reasons = table[table["bd_rate"].isna()]
            for _, r in reasons.head(12).iterrows():
                console.print(f"  — {r['row']} on {r['column']}: {r['reason']}")
            if len(reasons) > 12:
                console.print(f"  … and {len(reasons) - 12} more not computable")
    except Exception as exc:  # a broken table must not hide the run's result
        console.print(f"BD-rate tables not printed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    import argparse

    from core.store import open_reader

    parser = argparse.ArgumentParser(prog="python -m core.bdrate", description="BD-rate tables from a results DB")
    parser.add_argument("db", nargs="?", default="results.duckdb")
    parser.add_argument("--anchor", default="jpeg2000")
    args = parser.parse_args()
    connection = open_reader(args.db)
    print_bd_tables(connection, anchor=args.anchor)
    connection.close()
