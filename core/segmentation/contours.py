"""Membrane detection and contour extraction for EM images (classical; no trained weights).

Detector (:func:`detect_membranes`): membranes are thin dark ridges, so the image is
normalised (1–99.8 percentiles), filtered with the Sato tubeness filter for dark
ridges at scales ``sigmas`` (px), and thresholded at a fixed response level that
was tuned on training images (see :data:`PARAMS` and
``python -m core.segmentation.contours --tune``); components smaller than
``min_size`` px are dropped.  Contours (:func:`contours_of`) are the 1-px skeleton
of a membrane mask, so detector output and the (thick) labels compare fairly.

Ground truth comes from the catalog (:func:`core.segmentation.data.membrane_pairs`,
:func:`core.segmentation.load_ground_truth`): ISBI 2012's ``membrane_label`` ground truth
(0 = membrane, 255 = cell), EPFL FIB-SEM's ``membranes`` mask (255 = membrane, threshold 128).

    python -m core.segmentation.contours          # accuracy on the catalog's test split
    python -m core.segmentation.contours --tune   # re-tune on the TUNED_ON images, then report
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np

from core.segmentation.data import membrane_pairs, normalize


@dataclass(frozen=True)
class MembraneParams:
    """Sato scales (px), threshold on the normalised ridge response, smallest kept component (px)."""

    sigmas: tuple[float, ...]
    threshold: float
    min_size: int = 64


# Tuned by boundary F1 at 2 px on the TUNED_ON images (see --tune); accuracy on the catalog test split:
# data/models/README.md.
PARAMS = {
    "isbi2012_em": MembraneParams(sigmas=(3.0, 5.0), threshold=0.10, min_size=64),
    "epfl_hippocampus_fibsem": MembraneParams(sigmas=(3.0, 5.0), threshold=0.09, min_size=128),
}

#: Catalog ids of the images :data:`PARAMS` were tuned on (ISBI 0–5; the first 6 EPFL training slices), all
#: in the catalog's train split; :func:`core.segmentation.segmenter_training_images` reports them.
TUNED_ON = (
    "isbi2012_em/0", "isbi2012_em/1", "isbi2012_em/2", "isbi2012_em/3", "isbi2012_em/4", "isbi2012_em/5",
    "epfl_hippocampus_fibsem/training0000", "epfl_hippocampus_fibsem/training0001",
    "epfl_hippocampus_fibsem/training0002", "epfl_hippocampus_fibsem/training0003",
    "epfl_hippocampus_fibsem/training0013", "epfl_hippocampus_fibsem/training0017",
)


def ridge_response(image: np.ndarray, sigmas) -> np.ndarray:
    """Sato dark-ridge response (float32, ≥ 0) of a grayscale image after percentile normalisation."""
    from skimage.filters import sato

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"membrane detection needs a grayscale image, got shape {image.shape}")
    x = np.clip(normalize(image), 0, 1)
    return sato(x, sigmas=tuple(sigmas), black_ridges=True, mode="reflect").astype(np.float32)


def detect_membranes(image: np.ndarray, params: MembraneParams) -> np.ndarray:
    """Boolean membrane mask of a grayscale EM image."""
    from skimage.morphology import remove_small_objects

    mask = ridge_response(image, params.sigmas) > params.threshold
    return remove_small_objects(mask, max_size=params.min_size - 1)


def contours_of(membrane_mask: np.ndarray) -> np.ndarray:
    """1-px contour lines (boolean skeleton) of a membrane mask."""
    from skimage.morphology import skeletonize

    return skeletonize(np.asarray(membrane_mask, dtype=bool))


def cells_from_membranes(membrane_mask: np.ndarray, min_area: int = 0, seed_px: float = 0.0) -> np.ndarray:
    """int32 labels of the regions the membranes enclose (4-connected non-membrane components).

    The defaults give the plain components (how the ground truth's cells are defined).  A detector's mask
    has gaps and 1–30 px pockets between membrane pixels, so a detector may ask for more
    (:class:`CellRule`, chosen on ``val`` by ``python -m core.segmentation.train_unet --tune-objects``):

    * ``seed_px`` > 0: regions joined through a membrane gap are split again by a seeded watershed of the
      distance to the nearest membrane pixel, seeds = the 4-connected parts at least ``seed_px`` px from
      any membrane; a region without a seed stays whole;
    * ``min_area`` > 0: cells smaller than ``min_area`` px are dropped (label 0, like membrane).
    """
    from scipy import ndimage as ndi
    from skimage.measure import label
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import relabel_sequential, watershed

    inside = ~np.asarray(membrane_mask, dtype=bool)
    if seed_px > 0:
        distance = ndi.distance_transform_edt(inside)
        cells = watershed(-distance, label(distance >= seed_px, connectivity=1), mask=inside)
        unseeded = label(inside & (cells == 0), connectivity=1)
        cells = np.where(unseeded > 0, unseeded + cells.max(), cells)
    else:
        cells = label(inside, connectivity=1)
    if min_area > 1:
        cells = relabel_sequential(remove_small_objects(cells, max_size=min_area - 1))[0]
    return cells.astype(np.int32)


@dataclass(frozen=True)
class CellRule:
    """How a membrane detector's mask becomes cells (:func:`cells_from_membranes`): ``min_area`` px,
    ``seed_px`` px; stored in a U-Net's ``biocodec.json`` as ``cells``; the default is the plain rule."""

    min_area: int = 0
    seed_px: float = 0.0

    def cells(self, membrane_mask: np.ndarray) -> np.ndarray:
        return cells_from_membranes(membrane_mask, self.min_area, self.seed_px)


# --------------------------------------------------------------------------- tuning / accuracy


def accuracy(pairs, params: MembraneParams, tolerance: float = 2.0) -> dict:
    """Mean boundary F1 (at ``tolerance`` px), HD95 and MSD (px) of detected vs labelled contours."""
    from core.segmentation.metrics import boundary_f1, surface_distances

    f1s, hd, msd = [], [], []
    for _s, image, gt in pairs:
        pred_c, gt_c = contours_of(detect_membranes(image, params)), contours_of(gt)
        f1s.append(boundary_f1(gt_c, pred_c, tolerance))
        h, m = surface_distances(gt_c, pred_c)
        hd.append(h)
        msd.append(m)
    return {"boundary_f1": float(np.mean(f1s)), "hd95_px": float(np.mean(hd)), "msd_px": float(np.mean(msd)),
            "n_images": len(pairs)}


SIGMA_GRID = ((1.0, 2.0), (2.0, 3.0), (2.0, 4.0), (3.0, 5.0))
THRESHOLD_GRID = (0.02, 0.03, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.11, 0.12, 0.13, 0.14, 0.16)


def tune(dataset: str, data_root=None, images=None, sigma_grid=SIGMA_GRID,
         threshold_grid=THRESHOLD_GRID) -> tuple[MembraneParams, dict]:
    """Grid search of sigmas × threshold by mean boundary F1 at 2 px on ``images`` (catalog ids; default:
    the dataset's :data:`TUNED_ON` images), which must all be in the train/val splits."""
    from core.catalog import catalog_id

    wanted = [i for i in (TUNED_ON if images is None else images) if i.startswith(f"{dataset}/")]
    pairs = [p for p in membrane_pairs(dataset, ("train", "val"), data_root) if catalog_id(p[0]) in wanted]
    missing = sorted(set(wanted) - {catalog_id(p[0]) for p in pairs})
    if missing or not pairs:
        raise ValueError(f"tuning images must be {dataset} train/val images; not found there: {missing or wanted}")
    best, best_score = None, -1.0
    for sigmas in sigma_grid:
        responses = [(ridge_response(img, sigmas), gt) for _s, img, gt in pairs]
        for thr in threshold_grid:
            params = MembraneParams(sigmas, thr, PARAMS[dataset].min_size)
            from skimage.morphology import remove_small_objects

            from core.segmentation.metrics import boundary_f1

            score = float(np.mean([
                boundary_f1(contours_of(gt), contours_of(remove_small_objects(r > thr, max_size=params.min_size - 1)))
                for r, gt in responses]))
            print(f"{dataset} sigmas={sigmas} thr={thr}: BF1 {score:.4f}", flush=True)
            if score > best_score:
                best, best_score = params, score
    return best, {"train_boundary_f1": best_score}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.segmentation.contours",
                                description="Tune / report the classical membrane detector vs labels.")
    p.add_argument("--tune", action="store_true", help="grid-search parameters on the TUNED_ON training images")
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    report = {}
    for dataset in PARAMS:
        params = PARAMS[dataset]
        if args.tune:
            params, info = tune(dataset, args.data_root)
            report[dataset + "_tuned"] = {**asdict(params), **info}
        test = membrane_pairs(dataset, ("test",), args.data_root)
        report[dataset] = {"params": asdict(params), "test": accuracy(test, params),
                           "test_images": [pair[0].image_id for pair in test]}
        print(json.dumps(report, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
