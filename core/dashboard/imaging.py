"""Showing images faithfully: 8-bit windowing of deeper data, zoomed crops, difference heat maps,
segmentation overlays and lossless PNG bytes."""
from __future__ import annotations

import numpy as np


def window_bounds(reference: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> tuple[float, float]:
    """The ``low_pct``–``high_pct`` percentiles of ``reference`` (high > low), the display window of deep data."""
    lo, hi = (float(v) for v in np.percentile(reference, [low_pct, high_pct]))
    return lo, (hi if hi > lo else lo + 1.0)


def apply_window(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``pixels`` mapped linearly from [lo, hi] to [0, 255] (uint8), values outside clipped."""
    scaled = (pixels.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def window_note(bit_depth: int, lo: float, hi: float, low_pct: float = 0.5, high_pct: float = 99.5) -> str:
    return (f"{bit_depth}-bit data shown 8-bit: linear window {low_pct:g}–{high_pct:g} percentile of the original "
            f"= [{lo:.0f}, {hi:.0f}] → [0, 255], values outside clipped.")


def window_to_8bit(pixels: np.ndarray, bit_depth: int, low_pct: float = 0.5, high_pct: float = 99.5,
                   reference: np.ndarray | None = None, bounds: tuple[float, float] | None = None,
                   ) -> tuple[np.ndarray, str]:
    """An 8-bit view of ``pixels`` and the sentence that states how it was made.

    8-bit data is returned unchanged.  Deeper data is windowed linearly: the ``low_pct``–``high_pct``
    percentiles of ``reference`` (default: ``pixels``; pass the original so a reconstruction uses the
    same window) map to 0–255; ``bounds`` gives that window directly (computed once per original).
    """
    if pixels.dtype == np.uint8:
        return pixels, "8-bit, shown as stored (no windowing)."
    lo, hi = bounds if bounds is not None else window_bounds(pixels if reference is None else reference,
                                                              low_pct, high_pct)
    return apply_window(pixels, lo, hi), window_note(bit_depth, lo, hi, low_pct, high_pct)


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

    ``segmentation`` is what ``DownstreamEvaluator.segment`` returns: the boundaries of ``labels``
    (instances) are drawn when present, else the ``contours`` mask.
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
    """Lossless PNG of a uint8/uint16 array (16-bit stays 16-bit); incompressible noise too (core.io.encode_png)."""
    from core.io import encode_png

    return encode_png(np.ascontiguousarray(pixels))
