"""The segmenter's noise floor: how well does a segmentation agree with itself under changes no analyst
would call a change?

For every image of a dataset's catalog **test** split, the segmentation of the original is compared with
that of

* **noise**: the original plus Gaussian noise of σ = :data:`SIGMA` grey levels, rounded to integers and
  clipped to the valid range ``[0, 2^bit_depth − 1]`` (seeded per image: :func:`image_rng`);
* **shift**: the original shifted by :data:`SHIFT_PX` pixel along y and x (edge-padded, then cropped to
  the original size: :func:`shift`), segmented, and the segmentation shifted back (:func:`unshift`); only
  the interior (the 1-px border excluded) is compared.

Agreement is measured with the same functions and the same segmenter (model, thresholds, membrane
detector) as the runner's downstream columns (:mod:`core.segmentation`): pixel Dice of the foregrounds,
object F1 at IoU 0.5 of the instances and, for datasets with membranes, boundary F1 at 2 px of the
contours.  A compressed image whose ``seg_dice`` is within this floor changed the analysis no more than
a ±½ grey-level nudge does; :mod:`core.downstream` uses the noise Dice as the ceiling of its agreement
threshold.

    OMP_NUM_THREADS=1 python -m core.segmentation noise-floor      # writes data/models/noise_floor.json

The JSON file records the command, the date, the segmenter (model name and sha256 of its files, membrane
detector parameters, ``metrics_version``) and, per dataset and perturbation, the mean and min over images
of each agreement metric, plus the per-image values.  This module imports no TensorFlow unless a
measurement runs; :func:`load_noise_floor` / :func:`floor_value` are cheap.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from core.paths import SEG_MODELS_DIR

NOISE_FLOOR_JSON = SEG_MODELS_DIR / "noise_floor.json"
DATASETS = ("epfl_hippocampus_fibsem", "isbi2012_em", "monuseg")  # == core.provenance.downstream_datasets() (tested)
SIGMA = 0.5
SHIFT_PX = 1
SEED = 20261201
PERTURBATIONS = ("noise", "shift")
METRICS = ("dice", "f1", "boundary_f1")
#: The downstream columns each agreement metric corresponds to (what a noise floor is a ceiling for).
COLUMN_OF_METRIC = {"dice": "seg_dice", "f1": "seg_f1", "boundary_f1": "contour_bf1"}
LABEL = f"segmenter noise floor (σ={SIGMA:g} noise / {SHIFT_PX}-px shift)"


# --------------------------------------------------------------------------- perturbations


def max_value(pixels: np.ndarray, bit_depth: int | None = None) -> int:
    """Largest valid grey level: ``2^bit_depth − 1`` (default: the dtype's full range)."""
    if bit_depth is None:
        bit_depth = np.iinfo(np.asarray(pixels).dtype).bits
    return (1 << int(bit_depth)) - 1


def image_rng(image_id: str, seed: int = SEED) -> np.random.Generator:
    """The noise generator of one image: seeded by ``seed`` and the image's catalog id (order-independent)."""
    return np.random.default_rng([int(seed), zlib.crc32(str(image_id).encode())])


def add_noise(pixels: np.ndarray, sigma: float, rng: np.random.Generator, bit_depth: int | None = None) -> np.ndarray:
    """``pixels`` + N(0, σ²) per sample, rounded and clipped to ``[0, 2^bit_depth − 1]``, in the input dtype."""
    pixels = np.asarray(pixels)
    noisy = np.rint(pixels.astype(np.float64) + rng.normal(0.0, sigma, pixels.shape))
    return np.clip(noisy, 0, max_value(pixels, bit_depth)).astype(pixels.dtype)


def _pad_spec(array: np.ndarray, before: int, after: int) -> list[tuple[int, int]]:
    return [(before, after), (before, after)] + [(0, 0)] * (array.ndim - 2)


def shift(array: np.ndarray, px: int = SHIFT_PX) -> np.ndarray:
    """``array`` moved ``px`` pixels down and right (first row/column repeated, last ones dropped);
    ``out[y, x] == array[y − px, x − px]`` for ``y, x ≥ px``."""
    array = np.asarray(array)
    h, w = array.shape[:2]
    return np.pad(array, _pad_spec(array, px, 0), mode="edge")[:h, :w]


def unshift(array: np.ndarray, px: int = SHIFT_PX) -> np.ndarray:
    """The inverse of :func:`shift` on the interior: ``out[y, x] == array[y + px, x + px]`` for
    ``y < H − px, x < W − px`` (the last rows/columns repeat the edge)."""
    array = np.asarray(array)
    return np.pad(array[px:, px:], _pad_spec(array, 0, px), mode="edge")


def interior(array, border: int = SHIFT_PX):
    """``array`` without its ``border``-px frame (None stays None; border 0 = unchanged)."""
    if array is None or border == 0:
        return array
    return np.ascontiguousarray(np.asarray(array)[border:-border, border:-border])


# --------------------------------------------------------------------------- agreement


def agreement(reference: dict, other: dict, border: int = 0) -> dict:
    """Dice, object F1 (IoU 0.5) and boundary F1 (2 px) between two segmentations (dicts of
    :meth:`~core.segmentation.DownstreamEvaluator.segment`), on the interior without a ``border``-px frame;
    None for what the segmenter does not produce.  The same functions and parameters as
    :meth:`~core.segmentation.DownstreamEvaluator.compare`'s ``seg_dice`` / ``seg_f1`` / ``contour_bf1``."""
    from core.segmentation import CONTOUR_TOLERANCE_PX, OBJECT_IOU
    from core.segmentation.metrics import boundary_f1, dice, object_f1

    def both(key):
        a, b = reference.get(key), other.get(key)
        return (interior(a, border), interior(b, border)) if a is not None and b is not None else None

    out = dict.fromkeys(METRICS)
    if (fg := both("foreground")) is not None:
        out["dice"] = dice(*fg)
    if (labels := both("labels")) is not None:
        out["f1"] = object_f1(*labels, OBJECT_IOU)
    if (contours := both("contours")) is not None:
        out["boundary_f1"] = boundary_f1(*contours, CONTOUR_TOLERANCE_PX)
    return out


def unshift_segmentation(segmentation: dict, px: int = SHIFT_PX) -> dict:
    """Every array of a segmentation dict moved back by :func:`unshift`."""
    return {k: (None if v is None else unshift(v, px)) for k, v in segmentation.items()}


def image_floor(evaluator, pixels: np.ndarray, rng: np.random.Generator, bit_depth: int | None = None,
                sigma: float = SIGMA, px: int = SHIFT_PX, original: dict | None = None) -> dict:
    """{'noise': agreement, 'shift': agreement} of one image (``evaluator`` has ``segment(pixels) -> dict``;
    ``original``: its segmentation of ``pixels`` when already computed)."""
    original = evaluator.segment(pixels) if original is None else original
    noisy = evaluator.segment(add_noise(pixels, sigma, rng, bit_depth))
    moved = unshift_segmentation(evaluator.segment(shift(pixels, px)), px)
    return {"noise": agreement(original, noisy), "shift": agreement(original, moved, border=px)}


def summarize(per_image: list[dict]) -> dict:
    """{perturbation: {metric: {'mean', 'min'}}} over the images (metrics that are None everywhere: omitted)."""
    out = {}
    for pert in PERTURBATIONS:
        out[pert] = {}
        for metric in METRICS:
            values = [row[pert][metric] for row in per_image if row[pert][metric] is not None]
            if values:
                out[pert][metric] = {"mean": float(np.mean(values)), "min": float(np.min(values))}
    return out


# --------------------------------------------------------------------------- the segmenter


def evaluator_for(dataset: str, contours: bool = True, membranes: str | None = None):
    """The runner's segmenter of ``dataset`` (:mod:`core.segmentation.segmenters`; ``membranes`` names another
    membrane detector, ``contours=False`` leaves it out), loaded now so that a missing model is an error, not
    empty columns."""
    from core.segmentation import evaluator_for as make

    evaluator = make(dataset, contours=contours, membranes=membranes)
    if evaluator is None:
        raise ValueError(f"dataset {dataset!r} has no downstream segmenter")
    return evaluator


def segmenter_info(dataset: str, contours: bool = True) -> dict:
    """What identifies ``dataset``'s segmenters: the object segmenter's and membrane detector's names, sha256
    over their model files (None when there are none: Sato, a registered pretrained model), the Sato
    parameters where Sato is used, and ``metrics_version``."""
    from dataclasses import asdict

    from core.provenance import hash_files, metrics_version, segmenter_files
    from core.segmentation import segmenters as S
    from core.segmentation.contours import PARAMS

    files = segmenter_files(dataset)
    digest = hash_files(hashlib.sha256(), files)
    membranes = S.membranes_in_use().get(dataset) if contours else None
    return {"object_segmenter": S.segmenters_in_use().get(dataset), "membrane_detector": membranes,
            "model_sha256": digest.hexdigest()[:16] if files else None,
            "sato_parameters": asdict(PARAMS[dataset]) if membranes == S.SATO else None,
            "metrics_version": metrics_version(dataset)}


# --------------------------------------------------------------------------- measurement


def measure(dataset: str, data_root=None, split: str = "test", sigma: float = SIGMA, px: int = SHIFT_PX,
            seed: int = SEED, max_images: int | None = None, progress=None) -> dict:
    """The noise floor of ``dataset`` on its catalog ``split`` (see the module docstring)."""
    from core.catalog import catalog_id, evenly_spaced, split_refs
    from core.datasets import load_ref

    refs = evenly_spaced(split_refs(dataset, (split,), data_root), max_images)
    if not refs:
        raise FileNotFoundError(f"the catalog has no {dataset} images in split {split!r}")
    evaluator = evaluator_for(dataset)
    per_image = []
    for ref in refs:
        image = load_ref(ref)
        result = image_floor(evaluator, image.pixels, image_rng(catalog_id(ref), seed), image.bit_depth, sigma, px)
        per_image.append({"image_id": ref.image_id, **result})
        if progress is not None:
            progress(f"{dataset}/{ref.image_id}: " + "; ".join(
                f"{p} " + " ".join(f"{m} {v:.4f}" for m, v in result[p].items() if v is not None)
                for p in PERTURBATIONS))
    return {"split": split, "images": len(per_image), "segmenter": segmenter_info(dataset),
            **summarize(per_image), "per_image": per_image}


def write_noise_floor(results: dict[str, dict], path=NOISE_FLOOR_JSON, command: str = "",
                      sigma: float = SIGMA, px: int = SHIFT_PX, seed: int = SEED) -> dict:
    """Merge ``results`` ({dataset: :func:`measure` output}) into the JSON file at ``path`` (other
    datasets' entries are kept, each with its own command and date) and write it; returns the document."""
    path = Path(path)
    doc = json.loads(path.read_text()) if path.is_file() else {}
    date = datetime.now(timezone.utc).date().isoformat()
    datasets = doc.get("datasets", {})
    for dataset, entry in results.items():
        datasets[dataset] = {"command": command, "date": date, "sigma": sigma, "shift_px": px, "seed": seed,
                             **entry}
    doc = {"description": ("Agreement of the downstream segmenter with itself: segmentation of each catalog "
                           "image of the entry's split (test for the dashboard's ceiling) vs that of (noise) the image + rounded Gaussian noise of sigma {sigma:g} "
                           "grey levels, clipped to the valid range, and (shift) the image shifted by "
                           f"{px} px along y and x and the segmentation shifted back, compared without the "
                           f"{px}-px border. Dice of the foregrounds, object F1 at IoU 0.5, boundary F1 at 2 px; "
                           "mean and min over images. core/segmentation/noise_floor.py"),
           "command": command, "date": date, "datasets": dict(sorted(datasets.items()))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


# --------------------------------------------------------------------------- reading


def load_noise_floor(path=None) -> dict[str, dict]:
    """{dataset: entry} of the noise-floor file (default :data:`NOISE_FLOOR_JSON`); {} when it is absent."""
    path = Path(path) if path is not None else NOISE_FLOOR_JSON
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("datasets", {}))


def floor_value(floors: dict, dataset: str, metric: str = "dice", perturbation: str = "noise",
                stat: str = "mean") -> float | None:
    """One number of a loaded noise floor (default: mean Dice under noise), or None when not measured."""
    try:
        return float(floors[dataset][perturbation][metric][stat])
    except (KeyError, TypeError):
        return None


def segmenter_label(entry: dict) -> str:
    """Which segmenters a noise-floor entry measured, in words (object segmenter + membrane detector)."""
    info = entry.get("segmenter") or {}
    names = [info.get("object_segmenter") or info.get("stardist_model"), info.get("membrane_detector")]
    names = [n if n != "sato" else "Sato membrane detector" for n in names if isinstance(n, str)]
    return " + ".join(names) or "unknown"


def floor_table(floors: dict) -> list[dict]:
    """Flat rows (dataset, segmenter, perturbation, metric, mean, min, images) of a loaded noise floor."""
    rows = []
    for dataset, entry in sorted(floors.items()):
        for pert in PERTURBATIONS:
            for metric, stats in (entry.get(pert) or {}).items():
                rows.append({"dataset": dataset, "segmenter": segmenter_label(entry), "perturbation": pert,
                             "metric": metric, "mean": stats.get("mean"), "min": stats.get("min"),
                             "images": entry.get("images")})
    return rows
