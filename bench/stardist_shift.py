"""Can StarDist's *inference* make its nuclei segmentation agree with itself under a 1-px shift? (issue #12)

    OMP_NUM_THREADS=2 python -m bench.stardist_shift --split val      # the shipped MoNuSeg model, catalog val tiles

The 1-px shift noise floor of the MoNuSeg segmenter (``python -m core.segmentation noise-floor``) is pixel Dice
≈ 0.95–0.96 against ≥ 0.998 under σ = 0.5 grey-level noise.  StarDist predicts on a stride-2 grid
(``config.grid = (2, 2)``) and draws each nucleus as the star-convex polygon of the pixel that wins non-maximum
suppression, so a 1-px shift moves the input by half a grid cell and can change which pixel wins.  This script
measures inference-only variants of the same network, each on the original tile and on the tile shifted by 1 px
along y and x (:func:`core.segmentation.noise_floor.shift`, compared on the interior exactly as the noise floor
is), and against the ground truth:

* ``grid``: StarDist's own prediction (``predict_instances``: stride-2 maps, NMS on the grid) — the runner's path
  until 2026-12-02;
* ``grid + smooth σ``: the stride-2 maps with smoothed NMS scores (below);
* ``polyphase``: the network run on the 4 inputs shifted by (dy, dx) ∈ {0, 1}², their stride-2 maps interleaved
  into stride-1 maps (:func:`~core.segmentation.stardist_models.shift_averaged_maps` with period 2; a 1-px shift
  of the input then permutes the phases), NMS at stride 1 — 4× the network time;
* ``shift avg 4``: the same over (dy, dx) ∈ {0, …, 3}², each stride-1 pixel the mean of the 4 passes that sampled
  it (period 4) — 16× the network time; it also evens out the network's next pooling level;
* ``+ smooth σ``: NMS scores (and the probability threshold) on the probability map smoothed by a Gaussian of
  σ px, for a steadier winner;
* ``+ vote``: each NMS winner redrawn as the probability-weighted majority of the polygons of all candidate
  pixels inside it (:func:`~core.segmentation.stardist_models.vote_instances`); ``grid + vote`` is
  ``predict_labels(..., instances="vote", shift_average=1)`` (the runner's path on 2026-12-02), and
  ``shift avg 4 + vote`` is ``predict_labels(..., instances="vote", shift_average=4)``, the runner's path for a
  model whose ``biocodec.json`` says so (``monuseg_he_blurmax`` since 2026-12-03).

Printed per variant: mean over the split's tiles of shift Dice / object F1 (IoU 0.5) and Dice / F1 against the
ground truth.  Use ``--split val`` to choose; the test split is for reporting only.
"""
from __future__ import annotations

import argparse

import numpy as np

#: (label, shift-average period (1: StarDist's own stride-2 maps), σ of the NMS score smoothing)
VARIANTS = (("grid", 1, 0.0), ("grid + smooth 1", 1, 1.0), ("polyphase", 2, 0.0), ("polyphase + smooth 1", 2, 1.0),
            ("polyphase + smooth 2", 2, 2.0), ("shift avg 4", 4, 0.0), ("shift avg 4 + smooth 1", 4, 1.0))
VOTED = ("grid + vote", "polyphase + vote", "shift avg 4 + vote")


def nms_labels(model, prob: np.ndarray, dist: np.ndarray, grid, shape, sigma: float) -> np.ndarray:
    """int32 instance labels from probability / distance maps on ``grid``: StarDist's NMS and polygon drawing,
    with NMS scores on the probability map smoothed by a Gaussian of ``sigma`` px (0: none)."""
    from scipy.ndimage import gaussian_filter
    from stardist.geometry import polygons_to_label
    from stardist.nms import non_maximum_suppression

    score = gaussian_filter(prob, sigma / grid[0]) if sigma else prob
    points, probi, disti = non_maximum_suppression(dist, score, grid=grid, prob_thresh=model.thresholds.prob,
                                                   nms_thresh=model.thresholds.nms)
    return np.asarray(polygons_to_label(disti, points, prob=probi, shape=shape), np.int32)


def variant_labels(model, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """{variant: labels} of one image.  The shift-averaged passes run once per period and image (the σ and vote
    variants share them); ``grid`` and ``grid + vote`` each call
    :func:`~core.segmentation.stardist_models.predict_labels` with one pass, so each runs its own network
    pass — two passes more than strictly needed, the price of measuring exactly what that path does."""
    from core.segmentation.data import normalize
    from core.segmentation.stardist_models import predict_labels, shift_averaged_maps, stride1_labels

    x = normalize(pixels)
    shape = pixels.shape[:2]
    grid_prob, grid_dist = model.predict(x)
    averaged = {period: shift_averaged_maps(model, x, period) for period in (2, 4)}
    out = {"grid": predict_labels(model, pixels, shift_average=1)}
    for label, period, sigma in VARIANTS[1:]:
        prob, dist, grid = (averaged[period] + ((1, 1),) if period > 1
                            else (grid_prob, np.maximum(grid_dist, 1e-3), tuple(model.config.grid)))
        out[label] = nms_labels(model, prob, dist, grid, shape, sigma)
    out["grid + vote"] = predict_labels(model, pixels, instances="vote", shift_average=1)
    out["polyphase + vote"] = stride1_labels(model, *averaged[2], instances="vote")
    out["shift avg 4 + vote"] = stride1_labels(model, *averaged[4], instances="vote")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", help="catalog split of the monuseg tiles (default val)")
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)

    from core.catalog import split_refs
    from core.datasets import load_ref
    from core.segmentation import load_ground_truth
    from core.segmentation.metrics import dice, object_f1
    from core.segmentation.noise_floor import interior, shift, unshift
    from core.segmentation.segmenters import segmenters_in_use
    from core.segmentation.stardist_models import load_stardist

    name = segmenters_in_use()["monuseg"]
    model = load_stardist(name)
    refs = split_refs("monuseg", (args.split,), args.data_root)
    if not refs:
        raise SystemExit(f"no monuseg tiles in split {args.split!r} (data root missing?)")
    scores: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in [*(v[0] for v in VARIANTS), *VOTED]}
    for ref in refs:
        pixels = np.asarray(load_ref(ref).pixels)
        truth = load_ground_truth(ref).instances
        originals, moved = variant_labels(model, pixels), variant_labels(model, shift(pixels))
        for label, original in originals.items():
            a, b = interior(original), interior(unshift(moved[label]))
            scores[label].append((dice(a, b), object_f1(a, b, 0.5),
                                  dice(truth, original), object_f1(truth, original, 0.5)))
    print(f"StarDist {name}, monuseg {args.split} ({len(refs)} tiles): means")
    print(f"{'variant':24s} {'shift Dice':>10s} {'shift F1':>9s} {'GT Dice':>8s} {'GT F1':>7s}")
    for label, values in scores.items():
        m = np.mean(values, axis=0)
        print(f"{label:24s} {m[0]:10.4f} {m[1]:9.4f} {m[2]:8.4f} {m[3]:7.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
