"""The one target-bpp rule, shared by the dashboard and the file CLI (``--bpp``): the setting whose
achieved rate is **closest** to the target, found by bisection on the codec's knob, and always reported
with the achieved bpp (bits per pixel = 8 · bytes of the complete stream / (H · W)) and its deviation.

Variable-rate learned codecs have a continuous knob, so they land within ``rel_tol`` (3 %) of any
target inside their range; integer knobs (JPEG quality, AVIF quality) get the closest integer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class SearchResult:
    """Outcome of :func:`search_setting`: the evaluation closest to the target and every trial."""

    setting: object
    evaluation: object  # core.evaluate.Evaluation
    target_bpp: float
    reached: bool  # within the tolerance
    trials: list[tuple[object, float]]  # (setting, bpp) in evaluation order
    note: str = ""
    in_range: bool = True  # the target lies between the rates of the knob's two ends


def _continuous_knob(codec) -> bool:
    """True when the codec takes any value between its default settings (variable-rate learned codecs)."""
    while codec is not None:
        if getattr(codec, "variable_rate", False):
            return True
        codec = getattr(codec, "inner", None)
    return False


def search_setting(image, codec, target_bpp: float, rel_tol: float = 0.03, max_evals: int = 14,
                   evaluate_fn: Callable | None = None) -> SearchResult:
    """Find the setting whose bpp is closest to ``target_bpp`` by bisection on the codec's knob.

    The knob is searched between the ends of ``codec.default_settings`` (fewest → most bytes; either
    numeric direction).  Integer knobs (every default an int, and not a variable-rate learned codec)
    stay integers.  Stops when the bpp is within ``rel_tol`` of the target, the bracket cannot be split
    further, or after ``max_evals`` evaluations.  A target outside the range gives the nearest end, with
    ``reached = False`` and a note.
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

    def done(note="", in_range=True):
        best = min(cache, key=lambda s: abs(cache[s].metrics["bpp"] - target_bpp))
        bpp = cache[best].metrics["bpp"]
        return SearchResult(best, cache[best], target_bpp, abs(bpp - target_bpp) <= rel_tol * target_bpp,
                            trials, note, in_range)

    settings = list(codec.default_settings)
    if codec.lossless or settings == [None]:
        run(None)
        return done("lossless codec: one rate only")
    integer = all(isinstance(s, (int, np.integer)) for s in settings) and not _continuous_knob(codec)
    low, high = settings[0], settings[-1]  # fewest bytes, most bytes
    bpp_low, bpp_high = run(low).metrics["bpp"], run(high).metrics["bpp"]
    if target_bpp <= bpp_low:
        return done(f"target below the range searched ({bpp_low:.3f}–{bpp_high:.3f} bpp at settings "
                    f"{low}–{high}): nearest end", in_range=False)
    if target_bpp >= bpp_high:
        return done(f"target above the range searched ({bpp_low:.3f}–{bpp_high:.3f} bpp at settings "
                    f"{low}–{high}): nearest end", in_range=False)
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
    return done()




def deviation(result: SearchResult) -> float:
    """Achieved bpp relative to the target: (achieved − target) / target (0.02 = 2 % above)."""
    return result.evaluation.metrics["bpp"] / result.target_bpp - 1.0
