"""Rate–distortion curves and Bjøntegaard-delta rate (BD-rate): the one implementation.

Every BD-rate and every "mean per setting" rate–distortion curve of the project comes from here:
the runner's tables (:func:`print_bd_tables`), the dashboard (:mod:`core.dashboard.rd`) and
``bench/compare_learned.py``.

Mean curve (:func:`mean_per_setting`)
-------------------------------------
One point per (stage, dataset, codec, colour mode, setting): the mean over images of the rate
(bits per pixel, bpp = 8·bytes/(H·W)) and of each quality column.  Rows whose values are not
finite (NULL, or +inf: PSNR of an exact reconstruction) are left out of the mean; ``images`` says
how many images a point averages.

BD-rate rule (:func:`bd_rate`)
------------------------------
* **Curves**: the mean curve of each codec over the *same* images (those both the codec and the
  anchor coded, so a codec that skips some images — JPEG on 16-bit data — is compared on its subset),
  lossy rows without errors only (lossless codecs have one point and no curve).
* **Monotone**: in rate order, a curve keeps only points of strictly increasing quality (a point
  that adds bits but loses quality is not on the rate–quality frontier, and the interpolation needs
  quality strictly monotone).
* **At least** :data:`MIN_POINTS` (4) **points per curve** after that filter.
* **Overlap**: integration runs over the quality interval both curves cover; it must be at least
  :data:`MIN_OVERLAP` (20 %) of the union of the two quality ranges (the overlap measure of the
  ``bjontegaard`` package).  Below that the average is taken over a sliver of the curves and says
  nothing about the codecs (+1,668 % from a 2 % overlap was seen on real data).
* **Interpolation**: ``bjontegaard.bd_rate(..., method="akima")`` — Akima interpolation of
  log10(rate) over quality, integrated over the overlap; the result is the mean rate difference in
  percent.  −10 means the codec needs 10 % fewer bits than the anchor for the same quality.
* Otherwise the value is NaN with the reason (too few points, no / too little overlap).

Quality metrics (:data:`METRICS`): ``psnr`` (dB, MAX = 2^bit_depth − 1) and ``ms_ssim_db``
(−10·log10(1 − MS-SSIM), dB).

Held-out rows
-------------
:func:`bd_rate_table` and :func:`print_bd_tables` use only rows of images no model involved has
seen (``core.provenance.HELD_OUT_SQL``: ``in_codec_training`` and ``in_segmenter_training`` both
false, NULL counted as false) unless ``held_out_only=False``.

    python -m core.bdrate [DB] [--anchor jpeg2000] [--include-training]
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from core.metrics import ms_ssim_db
from core.provenance import held_out_clause

METHOD = "akima"
MIN_POINTS = 4
#: Minimum overlap of the two quality ranges, as a fraction of their union.
MIN_OVERLAP = 0.2
METRICS = {"psnr": "PSNR (dB)", "ms_ssim_db": "MS-SSIM (dB)"}
#: Keys of one point of a mean curve.
CURVE_KEYS = ("stage", "dataset", "codec", "colour_mode", "setting")

_ROWS_SQL = """
    SELECT stage, dataset, image_id, codec, colour_mode, setting, bpp, psnr, ms_ssim
    FROM results
    WHERE error IS NULL AND setting <> '-' AND bpp IS NOT NULL AND {held_out} {filters}
"""


# --------------------------------------------------------------------------- held-out rows


def held_out_label(held_out_only: bool) -> str:
    """How a table or plot states its row selection."""
    return "held-out only" if held_out_only else "including images seen in training"


# --------------------------------------------------------------------------- curves


def finite_mask(frame: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """True where every one of ``columns`` is a finite number (absent columns count as not finite)."""
    mask = pd.Series(True, index=frame.index)
    for column in columns:
        if column not in frame:
            return pd.Series(False, index=frame.index)
        mask &= np.isfinite(pd.to_numeric(frame[column], errors="coerce").astype(float))
    return mask


def mean_per_setting(rows: pd.DataFrame, columns: Sequence[str] = ("bpp",),
                     keys: Sequence[str] = CURVE_KEYS) -> pd.DataFrame:
    """The mean curve: one row per ``keys`` (default stage, dataset, codec, colour mode, setting) with the
    mean of each of ``columns`` over the rows where all of them are finite, and ``images`` (distinct
    image ids averaged).  Sorted by the keys other than ``setting``, then by ``bpp`` (or the first column).
    """
    keys = [k for k in keys if k in rows]
    columns = list(dict.fromkeys(columns))
    d = rows[finite_mask(rows, columns)]
    if d.empty:
        return pd.DataFrame(columns=[*keys, *columns, "images"])
    d = d.assign(**{c: pd.to_numeric(d[c]).astype(float) for c in columns})
    agg = {c: (c, "mean") for c in columns}
    agg["images"] = ("image_id", "nunique") if "image_id" in d else (columns[0], "size")
    out = d.groupby(keys, sort=False).agg(**agg).reset_index()
    order = [k for k in keys if k != "setting"] + ["bpp" if "bpp" in columns else columns[0]]
    return out.sort_values(order).reset_index(drop=True)


def monotone_points(rate, quality) -> tuple[np.ndarray, np.ndarray]:
    """Points of positive rate, in rate order, whose quality strictly exceeds every earlier kept point."""
    order = np.argsort(np.asarray(rate, dtype=float), kind="stable")
    kept_rate, kept_quality = [], []
    for r, q in zip(np.asarray(rate, dtype=float)[order], np.asarray(quality, dtype=float)[order]):
        if r > 0 and math.isfinite(q) and (not kept_quality or q > kept_quality[-1]):
            kept_rate.append(float(r))
            kept_quality.append(float(q))
    return np.array(kept_rate), np.array(kept_quality)


def rd_curve(rows: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(rate bpp, quality) of one codec's rows: :func:`mean_per_setting` over images, then
    :func:`monotone_points` (sorted by rate, quality strictly increasing)."""
    means = mean_per_setting(rows, ["bpp", metric], keys=["setting"])
    return monotone_points(means["bpp"], means[metric])


def overlap_fraction(quality_anchor, quality_test) -> float:
    """Length of the common quality interval / length of the union of both ranges (0 when disjoint)."""
    qa, qt = np.asarray(quality_anchor, dtype=float), np.asarray(quality_test, dtype=float)
    low, high = max(qa.min(), qt.min()), min(qa.max(), qt.max())
    total = max(qa.max(), qt.max()) - min(qa.min(), qt.min())
    return max(high - low, 0.0) / total if total > 0 else 0.0


def bd_rate(rate_anchor, quality_anchor, rate_test, quality_test) -> tuple[float, str | None]:
    """BD-rate in percent of the test curve against the anchor curve, or (NaN, reason).

    The points are made monotone first (:func:`monotone_points`); then the rule of the module
    docstring applies (≥ :data:`MIN_POINTS` points each, overlap ≥ :data:`MIN_OVERLAP`, Akima).
    """
    import bjontegaard

    ra, qa = monotone_points(rate_anchor, quality_anchor)
    rt, qt = monotone_points(rate_test, quality_test)
    if len(ra) < MIN_POINTS or len(rt) < MIN_POINTS:
        return math.nan, f"< {MIN_POINTS} points (anchor {len(ra)}, codec {len(rt)})"
    overlap = overlap_fraction(qa, qt)
    if overlap <= 0:
        return math.nan, (f"quality ranges do not overlap (anchor {qa.min():.2f}–{qa.max():.2f}, "
                          f"codec {qt.min():.2f}–{qt.max():.2f})")
    if overlap < MIN_OVERLAP:
        return math.nan, (f"quality ranges overlap {overlap:.0%} < {MIN_OVERLAP:.0%} (anchor {qa.min():.2f}–"
                          f"{qa.max():.2f}, codec {qt.min():.2f}–{qt.max():.2f})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(ra, qa, rt, qt, method=METHOD, require_matching_points=False, min_overlap=0)
    value = float(value)
    return (value, None) if math.isfinite(value) else (math.nan, "interpolation failed")


# --------------------------------------------------------------------------- tables

TABLE_COLUMNS = ["stage", "dataset", "codec", "colour_mode", "metric", "bd_rate", "points", "anchor_points",
                 "images", "reason"]


def bd_rate_frame(frame: pd.DataFrame, metric: str = "psnr", anchor: str = "jpeg2000",
                  anchor_mode: str = "joint") -> pd.DataFrame:
    """BD-rate (%) of every (codec, colour mode) of ``frame`` against ``anchor`` in ``anchor_mode``, per stage
    and dataset.  ``frame`` holds result rows (stage, dataset, image_id, codec, colour_mode, setting, bpp and
    ``metric`` — or ``ms_ssim`` for ``ms_ssim_db``); rows with errors and lossless rows (setting '-') are
    ignored.  Columns: :data:`TABLE_COLUMNS` (``bd_rate`` NaN with ``reason`` when not computable).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    frame = frame.copy()
    if "error" in frame:
        frame = frame[frame["error"].isna()]
    frame = frame[frame["setting"].astype(str) != "-"]
    if metric == "ms_ssim_db" and "ms_ssim_db" not in frame:
        frame["ms_ssim_db"] = ms_ssim_db(frame["ms_ssim"].astype(float))
    out = []
    for (st, ds), rows in frame.groupby(["stage", "dataset"], sort=True):
        anchor_rows = rows[(rows["codec"] == anchor) & (rows["colour_mode"] == anchor_mode)]
        if anchor_rows.empty:
            continue
        for (codec, mode), test_rows in rows.groupby(["codec", "colour_mode"], sort=True):
            if codec == anchor and mode == anchor_mode:
                continue
            images = set(test_rows["image_id"]) & set(anchor_rows["image_id"])
            ra, qa = rd_curve(anchor_rows[anchor_rows["image_id"].isin(images)], metric)
            rt, qt = rd_curve(test_rows[test_rows["image_id"].isin(images)], metric)
            value, reason = bd_rate(ra, qa, rt, qt)
            out.append([st, ds, codec, mode, metric, value, len(rt), len(ra), len(images), reason])
    table = pd.DataFrame(out, columns=TABLE_COLUMNS)
    table.attrs["rows"] = int(len(frame))
    return table


def load_points(con, stage: int | None = None, dataset: str | None = None,
                held_out_only: bool = True) -> pd.DataFrame:
    """Lossy, successful result rows (one per image × codec × setting × colour mode), held-out rows only
    unless ``held_out_only`` is false, with ``ms_ssim_db`` added."""
    filters, params = "", []
    if stage is not None:
        filters += " AND stage = ?"
        params.append(int(stage))
    if dataset is not None:
        filters += " AND dataset = ?"
        params.append(dataset)
    sql = _ROWS_SQL.format(held_out=held_out_clause(con, held_out_only), filters=filters)
    frame = con.execute(sql, params).df()
    frame["ms_ssim_db"] = ms_ssim_db(frame["ms_ssim"].astype(float))
    return frame


def bd_rate_table(con, metric: str = "psnr", anchor: str = "jpeg2000", stage: int | None = None,
                  dataset: str | None = None, held_out_only: bool = True) -> pd.DataFrame:
    """:func:`bd_rate_frame` of the stored rows (held-out rows only unless ``held_out_only`` is false).

    ``table.attrs["rows"]`` is the number of result rows the table was computed from.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    frame = load_points(con, stage, dataset, held_out_only)
    table = bd_rate_frame(frame, metric, anchor)
    table["stage"] = table["stage"].astype(int)
    return table


def print_bd_tables(con, refs=None, anchor: str = "jpeg2000", held_out_only: bool = True) -> None:
    """Print BD-rate tables (PSNR and MS-SSIM dB) for the stages/datasets of ``refs`` (all when None),
    from held-out rows only unless ``held_out_only`` is false; the title says which and how many rows.

    Prints one line and returns when no anchor rows exist; never raises (the run's rows are stored already).
    """
    from rich.console import Console
    from rich.table import Table

    from core.codecs import get_codec

    console = Console(width=140)
    keys = sorted({(r.stage, r.dataset) for r in refs}) if refs else None
    try:
        anchor_label = get_codec(anchor).label or anchor
    except Exception:
        anchor_label = anchor
    which = "held-out test images only" if held_out_only else "all images, including those seen in training"
    try:
        for metric, label in METRICS.items():
            table = bd_rate_table(con, metric=metric, anchor=anchor, held_out_only=held_out_only)
            rows = table.attrs.get("rows", 0)
            if keys is not None and not table.empty:
                frame = load_points(con, held_out_only=held_out_only)
                rows = int(sum((s, d) in keys for s, d in zip(frame["stage"], frame["dataset"])))
                table = table[[(s, d) in keys for s, d in zip(table["stage"], table["dataset"])]]
            if table.empty:
                console.print(f"BD-rate ({label}): no {anchor} rows with a comparable codec in these results "
                              f"({which}); skipped")
                continue
            table = table.assign(
                column=[f"{s}:{d}" for s, d in zip(table["stage"], table["dataset"])],
                row=[c if m == "joint" else f"{c} ({m})" for c, m in zip(table["codec"], table["colour_mode"])])
            datasets = sorted(table["column"].unique())
            title = f"BD-rate vs {anchor_label}, {which} ({rows:,} rows)"
            console.print(f"\n{title}: quality = {label}, Akima interpolation of the mean bpp per setting over "
                          f"the overlapping quality range (>= {MIN_POINTS} points per curve, overlap >= "
                          f"{MIN_OVERLAP:.0%}); negative = fewer bits than the anchor; — = not computable")
            grid = Table(title=label)
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

    from core.paths import default_db
    from core.store import open_reader

    parser = argparse.ArgumentParser(prog="python -m core.bdrate", description="BD-rate tables from a results DB")
    parser.add_argument("db", nargs="?", default=str(default_db()))
    parser.add_argument("--anchor", default="jpeg2000")
    parser.add_argument("--include-training", action="store_true",
                        help="also use rows of images a model involved was trained / validated on")
    args = parser.parse_args()
    connection = open_reader(args.db)
    print_bd_tables(connection, anchor=args.anchor, held_out_only=not args.include_training)
    connection.close()
