"""Rate–distortion and downstream points, BD-rate tables and Dice-safe operating points of the rows a
view selected (:func:`core.dashboard.data.apply_filters`).

The mean curves and BD-rates are :mod:`core.bdrate`'s (:func:`~core.bdrate.mean_per_setting`,
:func:`~core.bdrate.bd_rate_frame`); the Dice-safe points are :mod:`core.downstream`'s query, run on
the selected rows.  Nothing here reads the database again: every number follows the view's filters,
including the held-out selection.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from core.bdrate import METRICS as BD_METRICS
from core.bdrate import MIN_OVERLAP, MIN_POINTS, bd_rate_frame, finite_mask, mean_per_setting
from core.setting_text import format_setting

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
#: How the BD-rate tables are computed (core.bdrate's rule), for captions.
BD_RULE = (f"Mean bpp per setting, Akima interpolation over the overlapping quality range (≥ {MIN_POINTS} points "
           f"per curve, overlap ≥ {MIN_OVERLAP:.0%} of the combined range).")
POINT_COLUMNS = ["stage", "dataset", "codec", "colour_mode", "curve", "family", "setting"]


def curve_label(codec: str, colour_mode: str) -> str:
    return codec if colour_mode == "joint" else f"{codec} ({colour_mode})"


def _label_curves(points: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    families = dict(zip(rows["codec"], rows["family"])) if "family" in rows else {}
    points = points.assign(curve=[curve_label(c, m) for c, m in zip(points["codec"], points["colour_mode"])],
                           family=points["codec"].map(families).fillna("unknown"))
    points["image_id"] = points["images"].map(lambda n: f"mean of {n} image(s)")
    return points


def rd_points(df: pd.DataFrame, metric: str, view: str = "mean") -> tuple[pd.DataFrame, int]:
    """Points of the rate–distortion plot, and how many rows had no finite value of ``metric``.

    ``view='mean'``: the mean curve of :func:`core.bdrate.mean_per_setting` — one point per (stage,
    dataset, codec, colour mode, setting), mean bpp and mean metric over the images (``images`` = how
    many).  ``view='per_image'``: one point per stored row.  Rows whose metric is NULL or infinite (an
    exact, lossless reconstruction has PSNR = +inf) cannot be drawn and are counted instead.
    """
    if view not in ("mean", "per_image"):
        raise ValueError("view must be 'mean' or 'per_image'")
    values = pd.to_numeric(df[metric], errors="coerce") if metric in df else pd.Series(np.nan, index=df.index)
    d = df.assign(y=values.astype(float))
    finite = finite_mask(d, ["bpp", "y"])
    dropped = int((~finite).sum())
    d = d[finite]
    if view == "per_image":
        d = d.assign(curve=[curve_label(c, m) for c, m in zip(d["codec"], d["colour_mode"])])
        out = d[["stage", "dataset", "image_id", "codec", "colour_mode", "curve", "family", "setting", "bpp", "y"]]
        return out.sort_values(["curve", "image_id", "bpp"]).reset_index(drop=True), dropped
    if d.empty:
        return pd.DataFrame(columns=POINT_COLUMNS + ["bpp", "y", "images", "image_id"]), dropped
    points = _label_curves(mean_per_setting(d, ["bpp", "y"]), d)
    return points[POINT_COLUMNS + ["bpp", "y", "images", "image_id"]].sort_values(
        ["curve", "dataset", "bpp"]).reset_index(drop=True), dropped


def downstream_points(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean ``metric`` (y), mean compression factor (raw/encoded bytes) and mean bpp per stage, dataset,
    codec, colour mode and setting (:func:`core.bdrate.mean_per_setting`)."""
    columns = POINT_COLUMNS + ["factor", "bpp", "y", "images", "image_id"]
    if metric not in df:
        return pd.DataFrame(columns=columns)
    d = df.assign(y=pd.to_numeric(df[metric], errors="coerce"))
    means = mean_per_setting(d, ["factor", "bpp", "y"])
    if means.empty:
        return pd.DataFrame(columns=columns)
    points = _label_curves(means, d)
    return points[columns].sort_values(["curve", "dataset", "factor"]).reset_index(drop=True)


# --------------------------------------------------------------------------- BD-rate


def bd_rate(rows: pd.DataFrame, metric: str, anchor: str = "jpeg2000", codecs: Iterable[str] | None = None):
    """BD-rate table (:func:`core.bdrate.bd_rate_frame`) of the selected ``rows``, restricted to ``codecs``
    when given (the anchor's rows must be in ``rows``: select codecs *after* this call).

    Returns ``(table, notice)``: ``table`` is None with a notice when the metric has no BD-rate or
    nothing is comparable.
    """
    if metric not in BD_METRICS:
        return None, f"BD-rate is computed for {', '.join(BD_METRICS)} only; choose one of those metrics."
    table = bd_rate_frame(rows, metric=metric, anchor=anchor)
    if codecs:
        table = table[table["codec"].isin(list(codecs))].reset_index(drop=True)
    if table.empty:
        return None, f"No BD-rate for this selection (anchor {anchor}; lossless codecs have no curve)."
    return table, None


def bd_rate_display(table: pd.DataFrame) -> pd.DataFrame:
    """The BD-rate table arranged for a narrow column: BD-rate (%) first after the codec."""
    first = [c for c in ("codec", "colour_mode", "bd_rate", "dataset", "stage", "points", "anchor_points",
                         "overlap_points", "images", "reason") if c in table]
    rest = [c for c in table.columns if c not in first and c != "metric"]
    shown = table[first + rest].copy()
    shown["bd_rate"] = shown["bd_rate"].astype(float).round(1)
    return shown.rename(columns={"bd_rate": "BD-rate %", "overlap_points": "points in overlap"})


# --------------------------------------------------------------------------- Dice-safe points

_DICE_SAFE_COLUMNS = ["stage", "dataset", "image_id", "codec", "colour_mode", "setting", "factor", "bpp", "error"]


def dice_safe_points(rows: pd.DataFrame, threshold: float, metric: str = "seg_dice"):
    """Dice-safe operating points (:func:`core.downstream.dice_safe_operating_points`) of the selected rows.

    Returns ``(table, notice)``; table is None with a notice when it cannot be computed.
    """
    import duckdb

    from core.downstream import dice_safe_operating_points

    if metric not in rows:
        return None, f"No {metric} column in these results."
    frame = rows[[c for c in _DICE_SAFE_COLUMNS if c in rows] + [metric]].copy()
    frame[metric] = pd.to_numeric(frame[metric], errors="coerce").astype(float)
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    con = duckdb.connect()
    try:
        con.register("results", frame)
        table = dice_safe_operating_points(con, threshold, metric=metric, held_out_only=False)  # rows: selected
    except Exception as exc:
        return None, f"Dice-safe table not computed: {type(exc).__name__}: {exc}"
    finally:
        con.close()
    return table, None


def dice_safe_two_way_points(rows: pd.DataFrame, floors: dict | None = None):
    """The Dice-safe point judged two ways (:func:`core.downstream.dice_safe_two_way`: agreement with the
    original's segmentation vs the noise-floor threshold, and accuracy vs ground truth) of the selected rows.

    Returns ``(table, notice)``; table is None with a notice when it cannot be computed.
    """
    import duckdb

    from core.downstream import dice_safe_two_way

    if "seg_dice" not in rows:
        return None, "No seg_dice column in these results."
    numeric = [c for c in ("factor", "seg_dice", "seg_dice_gt_original", "seg_dice_gt_reconstruction") if c in rows]
    frame = rows[[c for c in _DICE_SAFE_COLUMNS if c in rows and c not in numeric] + numeric].copy()
    for column in numeric:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna(), None)
    con = duckdb.connect()
    try:
        con.register("results", frame)
        table = dice_safe_two_way(con, floors, held_out_only=False)  # rows: the view's selection
    except Exception as exc:
        return None, f"Two-way Dice-safe table not computed: {type(exc).__name__}: {exc}"
    finally:
        con.close()
    return table, None


def two_way_rule() -> str:
    """Caption of the two-way Dice-safe table: the rule it applies."""
    from core.downstream import TWO_WAY_RULE

    return TWO_WAY_RULE


# --------------------------------------------------------------------------- segmenter noise floor


def noise_floor(path=None) -> dict:
    """The segmenter noise floor per dataset (``data/models/noise_floor.json``; {} when not measured)."""
    from core.segmentation.noise_floor import load_noise_floor

    return load_noise_floor(path)


def noise_floor_lines(floors: dict, metric: str, datasets: Iterable[str]) -> pd.DataFrame:
    """Ceiling lines of the downstream chart: per dataset in ``datasets`` with a measured floor for
    ``metric`` (seg_dice, seg_f1, contour_bf1), ``y`` = mean agreement under σ = 0.5 noise and the band
    ``low``–``high`` spanned by the noise and the 1-px-shift means.  Empty for other metrics."""
    from core.segmentation.noise_floor import COLUMN_OF_METRIC, LABEL, floor_value

    columns = ["dataset", "y", "low", "high", "label"]
    name = {column: m for m, column in COLUMN_OF_METRIC.items()}.get(metric)
    rows = []
    for dataset in sorted(set(datasets)) if name else []:
        noise = floor_value(floors, dataset, name, "noise")
        moved = floor_value(floors, dataset, name, "shift")
        if noise is None:
            continue
        both = [v for v in (noise, moved) if v is not None]
        rows.append({"dataset": dataset, "y": noise, "low": min(both), "high": max(both),
                     "label": f"{LABEL} · {dataset}"})
    return pd.DataFrame(rows, columns=columns)


def add_noise_floor(fig, lines: pd.DataFrame):
    """Draw :func:`noise_floor_lines` on a downstream figure: a dotted line at the noise mean and a light
    band between the noise and shift means, per dataset, labelled."""
    positions = ("top left", "bottom left", "top right", "bottom right")
    for i, line in enumerate(lines.itertuples(index=False)):
        if line.high > line.low:
            fig.add_hrect(y0=line.low, y1=line.high, fillcolor="grey", opacity=0.15, line_width=0)
        fig.add_hline(y=line.y, line_dash="dot", line_color="grey",
                      annotation_text=f"{line.label}: {line.y:.3f}", annotation_position=positions[i % 4],
                      annotation_font_size=11)
    return fig


def safe_point_markers(table: pd.DataFrame | None, points: pd.DataFrame) -> pd.DataFrame:
    """Markers (curve, x = factor, y) for the Dice-safe points that lie on the plotted curves."""
    empty = pd.DataFrame(columns=["curve", "x", "y", "label"])
    if table is None or table.empty or not {"codec", "setting"} <= set(table.columns) or points.empty:
        return empty
    keys = ["codec", "setting"] + [k for k in ("stage", "dataset", "colour_mode") if k in table.columns]
    t = table.dropna(subset=["setting"]).copy()
    t["setting"] = t["setting"].map(lambda s: s if isinstance(s, str) else format_setting(s))
    merged = points.merge(t[keys], on=keys, how="inner")
    if merged.empty:
        return empty
    return pd.DataFrame({"curve": merged["curve"], "x": merged["factor"], "y": merged["y"],
                         "label": [f"Dice-safe: {c} setting {s} ({f:.1f}×)"
                                   for c, s, f in zip(merged["curve"], merged["setting"], merged["factor"])]})



def noise_floor_table(floors: dict) -> pd.DataFrame:
    """The noise floor as a table: dataset, segmenter, perturbation (noise / shift), metric, mean, min, images."""
    from core.segmentation.noise_floor import floor_table

    return pd.DataFrame(floor_table(floors),
                        columns=["dataset", "segmenter", "perturbation", "metric", "mean", "min", "images"])


# --------------------------------------------------------------------------- how much a BD-rate rests on


def overlap_points(rows: pd.DataFrame, table: pd.DataFrame, metric: str, anchor: str = "jpeg2000",
                   anchor_mode: str = "joint") -> pd.DataFrame:
    """``table`` (:func:`bd_rate`) with ``overlap_points``: the fewer, of the anchor's and the codec's curve,
    of points whose quality lies inside the quality interval both curves cover — what a BD-rate is
    integrated over (:func:`core.bdrate.rd_curve`: mean per setting over the images both coded, monotone)."""
    from core.bdrate import rd_curve

    frame = rows[rows["error"].isna()] if "error" in rows else rows
    frame = frame[frame["setting"].astype(str) != "-"]
    if metric == "ms_ssim_db" and "ms_ssim_db" not in frame:
        from core.metrics import ms_ssim_db

        frame = frame.assign(ms_ssim_db=ms_ssim_db(frame["ms_ssim"].astype(float)))
    counts = []
    for t in table.itertuples(index=False):
        part = frame[(frame["stage"] == t.stage) & (frame["dataset"] == t.dataset)]
        a = part[(part["codec"] == anchor) & (part["colour_mode"] == anchor_mode)]
        b = part[(part["codec"] == t.codec) & (part["colour_mode"] == t.colour_mode)]
        images = set(a["image_id"]) & set(b["image_id"])
        _, qa = rd_curve(a[a["image_id"].isin(images)], metric)
        _, qb = rd_curve(b[b["image_id"].isin(images)], metric)
        if len(qa) == 0 or len(qb) == 0:
            counts.append(0)
            continue
        low, high = max(qa.min(), qb.min()), min(qa.max(), qb.max())
        inside = [int(((q >= low) & (q <= high)).sum()) for q in (qa, qb)] if high >= low else [0, 0]
        counts.append(min(inside))
    return table.assign(overlap_points=counts)


def few_points_note(table: pd.DataFrame) -> str | None:
    """A note naming every finite BD-rate that rests on fewer than MIN_POINTS overlapping points."""
    few = table[table["bd_rate"].notna() & (table["overlap_points"] < MIN_POINTS)]
    if few.empty:
        return None
    listed = ", ".join(f"{curve_label(r.codec, r.colour_mode)} on {r.dataset} ({int(r.overlap_points)})"
                       for r in few.itertuples(index=False))
    return (f"Fewer than {MIN_POINTS} points of a curve lie in the quality range both curves cover for: {listed}. "
            "Those BD-rates interpolate between few measurements: read them as indicative only.")
