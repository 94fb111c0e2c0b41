"""The Dice-safe operating point: how far can each codec compress before the analysis changes?

:func:`dice_safe_operating_points` reads the stored results (``core.store``) and, for
each stage × dataset × codec × colour mode, finds the largest compression factor
(``raw_bytes / bytes``) whose mean downstream agreement with the original's
segmentation still meets the threshold (default: mean ``seg_dice`` ≥ 0.95).

Per setting, factor, bpp and the metric are averaged over the images that have the
metric (error-free rows only).  By default (``monotone=True``) the metric must *stay*
at or above the threshold: the operating point is the largest mean factor F such that
every setting of that codec with mean factor ≤ F passes (a setting that fails at lower
compression caps the safe range, even if a stronger setting passes again by chance).
With ``monotone=False`` it is simply the largest passing factor.  Codecs that never pass are listed with NULL
setting, factor, bpp and metric (``best_metric`` says how close they came).

Only rows of images no model involved has seen are used (``core.provenance.HELD_OUT_SQL``; a table without
the ``in_codec_training`` / ``in_segmenter_training`` columns has no flagged row) unless
``held_out_only=False``.  The dashboard runs the same query on its filtered rows
(:func:`core.dashboard.rd.dice_safe_points`).

Judged two ways
---------------
:func:`dice_safe_two_way` gives, per codec and dataset, two Dice-safe factors from the same held-out rows
(both monotone as above):

* **agreement** (``safe_factor_agreement``): mean ``seg_dice`` (reconstruction's vs original's
  segmentation) ≥ ``min(0.95, noise floor − 0.02)`` (:func:`agreement_threshold`), the noise floor being
  the segmenter's mean Dice between the original and the original + σ = 0.5 noise
  (``data/models/noise_floor.json``, :mod:`core.segmentation.noise_floor`) — asking for more agreement
  than the segmenter has with itself would make every codec fail;
* **ground truth** (``safe_factor_ground_truth``): the reconstruction's segmentation is as accurate as the
  original's, paired per image — mean over images of ``seg_dice_gt_reconstruction − seg_dice_gt_original``
  ≥ −0.01.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.provenance import held_out_clause

#: metrics that can define an operating point: name → True if higher is better.
OPERATING_METRICS = {
    "seg_dice": True, "seg_iou": True, "seg_f1": True,
    "seg_dice_gt_reconstruction": True, "seg_f1_gt_reconstruction": True,
    "contour_bf1": True, "contour_hd95": False, "contour_msd": False,
}

COLUMNS = ["stage", "dataset", "codec", "colour_mode", "setting", "factor", "bpp", "metric", "n_images",
           "best_metric", "n_settings"]


def dice_safe_operating_points(con, threshold: float = 0.95, metric: str = "seg_dice",
                               monotone: bool = True, held_out_only: bool = True) -> pd.DataFrame:
    """One row per (stage, dataset, codec, colour_mode) with a stored ``metric``: the Dice-safe point.

    Columns: stage, dataset, codec, colour_mode; setting (text), factor (mean
    raw/compressed, ×), bpp (mean bits per pixel) and metric (mean ``metric``) at the
    operating point — all NULL when no setting meets ``threshold``; n_images (images
    averaged at that point), best_metric (best mean over settings), n_settings.
    For distances (contour_hd95, contour_msd; px) "meets" means mean ≤ threshold.
    ``monotone``, ``held_out_only``: see the module docstring.
    """
    if metric not in OPERATING_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(OPERATING_METRICS)}")
    higher = OPERATING_METRICS[metric]
    worst = "min" if higher else "max"
    best = "max(m)" if higher else "min(m)"
    # the metric a setting must meet: its own mean, or (monotone) the worst mean up to its factor
    gate = (f"{worst}(m) OVER (PARTITION BY stage, dataset, codec, colour_mode ORDER BY f "
            f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)") if monotone else "m"
    passes = "gate_m >= ?" if higher else "gate_m <= ?"
    sql = f"""
        WITH per_setting AS (
            SELECT stage, dataset, codec, colour_mode, setting,
                   avg(factor) AS f, avg(bpp) AS b, avg({metric}) AS m, count(*) AS n
            FROM results
            WHERE error IS NULL AND {held_out_clause(con, held_out_only)}
              AND {metric} IS NOT NULL AND isfinite({metric}) AND factor IS NOT NULL
            GROUP BY ALL
        ),
        groups AS (
            SELECT stage, dataset, codec, colour_mode, {best} AS best_metric, count(*) AS n_settings
            FROM per_setting GROUP BY ALL
        ),
        safe AS (
            SELECT * FROM (SELECT *, {gate} AS gate_m FROM per_setting) WHERE {passes}
            QUALIFY row_number() OVER (PARTITION BY stage, dataset, codec, colour_mode
                                       ORDER BY f DESC, m {'DESC' if higher else 'ASC'}) = 1
        )
        SELECT g.stage, g.dataset, g.codec, g.colour_mode, s.setting, s.f AS factor, s.b AS bpp, s.m AS metric,
               s.n AS n_images, g.best_metric, g.n_settings
        FROM groups g LEFT JOIN safe s USING (stage, dataset, codec, colour_mode)
        ORDER BY g.stage, g.dataset, s.f DESC NULLS LAST, g.codec, g.colour_mode
    """
    df = con.execute(sql, [threshold]).df()
    return df[COLUMNS]


# --------------------------------------------------------------------------- judged two ways

#: The rule of :func:`dice_safe_two_way`: agreement threshold = min(CAP, noise floor − MARGIN); accuracy
#: vs ground truth may drop by at most GT_TOLERANCE (mean paired Dice difference).
AGREEMENT_CAP = 0.95
FLOOR_MARGIN = 0.02
GT_TOLERANCE = 0.01
TWO_WAY_COLUMNS = ["stage", "dataset", "codec", "colour_mode", "safe_factor_agreement", "setting_agreement",
                   "safe_factor_ground_truth", "setting_ground_truth", "threshold_agreement", "noise_floor",
                   "images", "n_settings"]
TWO_WAY_RULE = (f"Agreement: the largest mean compression factor (raw / compressed bytes) at which the mean Dice "
                f"between the reconstruction's and the original's segmentation, at that setting and every weaker "
                f"one, is ≥ min({AGREEMENT_CAP:g}, segmenter noise floor − {FLOOR_MARGIN:g}) (noise floor: mean "
                f"Dice of the original's segmentation vs that of the original + σ=0.5 noise, "
                f"data/models/noise_floor.json). Ground truth: the largest factor at which the mean over images of "
                f"(Dice vs ground truth of the reconstruction − that of the original) stays ≥ −{GT_TOLERANCE:g} "
                f"at that setting and every weaker one. Empty: no setting qualifies.")


def agreement_threshold(dataset: str, floors: dict | None = None, cap: float = AGREEMENT_CAP,
                        margin: float = FLOOR_MARGIN) -> float:
    """``min(cap, noise floor − margin)`` for ``dataset`` (noise floor: mean Dice under σ = 0.5 noise from
    ``floors`` = :func:`core.segmentation.noise_floor.load_noise_floor`); ``cap`` when not measured."""
    from core.segmentation.noise_floor import floor_value

    floor = floor_value(floors or {}, dataset, "dice", "noise")
    return cap if floor is None else min(cap, floor - margin)


def _safe_point(part: pd.DataFrame, value: str, threshold: float, monotone: bool):
    """(factor, setting) of the largest mean factor whose ``value`` (and, monotone, that of every setting
    with a mean factor ≤ it) is ≥ ``threshold``; (NaN, None) when none is."""
    part = part.dropna(subset=[value, "f"]).sort_values(["f", value], ascending=[True, False])
    if part.empty:
        return np.nan, None
    values = part[value].to_numpy(dtype=float)
    factors = part["f"].to_numpy(dtype=float)
    if monotone:  # the worst value over all settings up to each factor (ties in factor count together)
        gate = np.array([values[factors <= f].min() for f in factors])
    else:
        gate = values
    ok = np.flatnonzero(gate >= threshold)
    if not len(ok):
        return np.nan, None
    best = ok[np.argmax(factors[ok])]
    return float(factors[best]), part["setting"].iloc[best]


def dice_safe_two_way(con, floors: dict | None = None, monotone: bool = True, held_out_only: bool = True,
                      cap: float = AGREEMENT_CAP, margin: float = FLOOR_MARGIN,
                      gt_tolerance: float = GT_TOLERANCE) -> pd.DataFrame:
    """The Dice-safe point judged two ways (module docstring), one row per (stage, dataset, codec,
    colour_mode) with ``seg_dice`` rows.

    ``floors``: a loaded noise floor (default: :func:`core.segmentation.noise_floor.load_noise_floor`).
    Columns (:data:`TWO_WAY_COLUMNS`): safe_factor_agreement / setting_agreement, safe_factor_ground_truth /
    setting_ground_truth (NaN / None when no setting qualifies, or — ground truth — no row has both
    ``seg_dice_gt_*``), threshold_agreement, noise_floor (NaN when not measured), images (distinct images
    with seg_dice), n_settings.
    """
    if floors is None:
        from core.segmentation.noise_floor import load_noise_floor

        floors = load_noise_floor()
    from core.segmentation.noise_floor import floor_value

    columns = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'results'").fetchall()}
    has_gt = {"seg_dice_gt_original", "seg_dice_gt_reconstruction"} <= columns
    gt_delta = ("avg(CASE WHEN isfinite(seg_dice_gt_reconstruction) AND isfinite(seg_dice_gt_original) "
                "THEN seg_dice_gt_reconstruction - seg_dice_gt_original END)") if has_gt else "NULL::DOUBLE"
    per_setting = con.execute(f"""
        SELECT stage, dataset, codec, colour_mode, setting, avg(factor) AS f,
               avg(CASE WHEN isfinite(seg_dice) THEN seg_dice END) AS agreement, {gt_delta} AS gt_delta,
               count(DISTINCT image_id) AS n
        FROM results
        WHERE error IS NULL AND {held_out_clause(con, held_out_only)} AND seg_dice IS NOT NULL
          AND factor IS NOT NULL
        GROUP BY ALL
    """).df()
    images = con.execute(f"""
        SELECT stage, dataset, codec, colour_mode, count(DISTINCT image_id) AS images
        FROM results
        WHERE error IS NULL AND {held_out_clause(con, held_out_only)} AND seg_dice IS NOT NULL
          AND factor IS NOT NULL
        GROUP BY ALL
    """).df()
    keys = ["stage", "dataset", "codec", "colour_mode"]
    counts = {tuple(r[:4]): int(r[4]) for r in images.itertuples(index=False)}
    rows = []
    for key, part in per_setting.groupby(keys, sort=True):
        dataset = key[1]
        threshold = agreement_threshold(dataset, floors, cap, margin)
        f_agree, s_agree = _safe_point(part, "agreement", threshold, monotone)
        f_gt, s_gt = _safe_point(part, "gt_delta", -gt_tolerance, monotone)
        floor = floor_value(floors, dataset, "dice", "noise")
        rows.append(dict(zip(keys, key), safe_factor_agreement=f_agree, setting_agreement=s_agree,
                         safe_factor_ground_truth=f_gt, setting_ground_truth=s_gt,
                         threshold_agreement=threshold, noise_floor=np.nan if floor is None else floor,
                         images=counts.get(tuple(key), 0), n_settings=len(part)))
    out = pd.DataFrame(rows, columns=TWO_WAY_COLUMNS)
    return out.sort_values(["stage", "dataset", "safe_factor_agreement", "codec", "colour_mode"],
                           ascending=[True, True, False, True, True], na_position="last").reset_index(drop=True)
