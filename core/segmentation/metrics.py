"""Segmentation and contour agreement metrics (pure NumPy / SciPy; all distances in pixels).

* :func:`dice`, :func:`iou` — pixel overlap of two foregrounds (label > 0 or True).
* :func:`object_f1` — instance-level F1 at an IoU threshold (``stardist.matching``).
* :func:`boundary_f1` — precision/recall of contour pixels matched within a tolerance
  (BSDS-style boundary F-measure, via Euclidean distance transforms).
* :func:`surface_distances` — 95th-percentile Hausdorff distance and mean symmetric
  surface distance between two contour maps.

Conventions for degenerate input: two empty masks/contours agree perfectly (1.0 and
0 px); one empty and one not gives 0.0 and an infinite distance.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _fg(a) -> np.ndarray:
    return np.asarray(a) > 0


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")


def dice(a, b) -> float:
    """Dice = 2|A∩B| / (|A|+|B|) of the foregrounds (1.0 when both are empty)."""
    a, b = _fg(a), _fg(b)
    _check(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a, b) -> float:
    """IoU (Jaccard) = |A∩B| / |A∪B| of the foregrounds (1.0 when both are empty)."""
    a, b = _fg(a), _fg(b)
    _check(a, b)
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def object_f1(reference_labels, labels, thresh: float = 0.5) -> float:
    """Instance F1 at IoU ≥ ``thresh`` between two label images (1.0 when both have no objects)."""
    from stardist.matching import matching

    ref, lab = np.asarray(reference_labels), np.asarray(labels)
    _check(ref, lab)
    if ref.max() == 0 and lab.max() == 0:
        return 1.0
    return float(matching(ref.astype(np.int32), lab.astype(np.int32), thresh=thresh).f1)


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of every pixel to the nearest True pixel of ``mask`` (mask non-empty)."""
    return ndimage.distance_transform_edt(~mask)


def boundary_f1(reference, contour, tolerance: float = 2.0) -> float:
    """Boundary F1: contour pixels within ``tolerance`` px of the other contour count as matched.

    precision = share of ``contour`` pixels within tolerance of ``reference``;
    recall = share of ``reference`` pixels within tolerance of ``contour``.
    """
    r, c = _fg(reference), _fg(contour)
    _check(r, c)
    if not r.any() and not c.any():
        return 1.0
    if not r.any() or not c.any():
        return 0.0
    precision = float((_distance_to(r)[c] <= tolerance).mean())
    recall = float((_distance_to(c)[r] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def surface_distances(reference, contour) -> tuple[float, float]:
    """(HD95, MSD) in px between two contour maps.

    Both directed distance sets (each ``contour`` pixel to the nearest ``reference``
    pixel and vice versa) are pooled; HD95 is their 95th percentile, MSD their mean
    (the average symmetric surface distance).
    """
    r, c = _fg(reference), _fg(contour)
    _check(r, c)
    if not r.any() and not c.any():
        return 0.0, 0.0
    if not r.any() or not c.any():
        return float("inf"), float("inf")
    d = np.concatenate([_distance_to(r)[c], _distance_to(c)[r]])
    return float(np.percentile(d, 95)), float(d.mean())
