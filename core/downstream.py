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
"""
from __future__ import annotations

import pandas as pd

from core.bdrate import held_out_clause

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
