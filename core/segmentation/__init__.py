"""Downstream fidelity: does the analysis of a compressed image give the same answer?

The runner asks :func:`downstream_for` for an evaluator per image, calls
``state = evaluator.prepare(image, ref)`` once (segments the original, loads the
ground truth) and ``evaluator.compare(state, reconstruction) -> dict`` per codec
setting.  The dict holds the downstream columns of ``core.store.RESULT_COLUMNS``
(:data:`DOWNSTREAM_COLUMNS`; None where a column does not apply).

Tasks per dataset:

========================  ===========================================  =====================================
dataset                   segmentation (seg_* columns)                 contours (contour_* columns)
========================  ===========================================  =====================================
monuseg                   StarDist H&E nuclei (``monuseg_he``)         —
epfl_hippocampus_fibsem   StarDist mitochondria (``epfl_mito``)        classical membrane detector
isbi2012_em               membrane mask (Dice/IoU), enclosed cells     classical membrane detector
                          (object F1)
========================  ===========================================  =====================================

* seg_dice / seg_iou: pixel overlap of the foregrounds (nuclei, mitochondria, or
  membranes) of the reconstruction's vs the original's segmentation;
  seg_f1: object F1 at IoU 0.5 between their instances.
* seg_dice_gt_* / seg_f1_gt_*: the same against the ground truth, for the original
  and for the reconstruction.
* contour_bf1: boundary F1 at 2 px; contour_hd95 / contour_msd: 95th-percentile
  Hausdorff and mean symmetric surface distance (px) between the 1-px contours of
  the original's and the reconstruction's membrane masks.

Cost per codec setting (CPU, 1 TF thread, measured on a loaded 2-core machine): EPFL
1024×768 ≈ 1.5 s, ISBI 512² ≈ 0.25 s, MoNuSeg 999² ≈ 3.6 s; ``BIOCODEC_DOWNSTREAM=off``
turns the downstream columns off (they stay NULL).

StarDist models can be replaced per dataset with ``BIOCODEC_STARDIST_MODELS``, e.g.
``monuseg=2D_versatile_he`` (a registered pretrained name, needs internet) or
``epfl_hippocampus_fibsem=/path/to/model_folder``.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from core.segmentation.metrics import boundary_f1, dice, iou, object_f1, surface_distances

DOWNSTREAM_COLUMNS = ("seg_dice", "seg_iou", "seg_f1", "seg_dice_gt_original", "seg_dice_gt_reconstruction",
                      "seg_f1_gt_original", "seg_f1_gt_reconstruction", "contour_bf1", "contour_hd95", "contour_msd")
DEFAULT_MODELS = {"monuseg": "monuseg_he", "epfl_hippocampus_fibsem": "epfl_mito"}
CONTOUR_TOLERANCE_PX = 2.0
OBJECT_IOU = 0.5
EPFL = "epfl_hippocampus_fibsem"
ISBI = "isbi2012_em"


# --------------------------------------------------------------------------- ground truth


@dataclass
class GroundTruth:
    """Ground truth of one (cropped) image: instance labels and/or a membrane mask (None if absent)."""

    instances: np.ndarray | None = None
    membranes: np.ndarray | None = None


def _crop(array: np.ndarray, crop) -> np.ndarray:
    if crop is None:
        return array
    y0, x0, y1, x1 = crop
    return np.ascontiguousarray(array[y0:y1, x0:x1])


def load_ground_truth(ref) -> GroundTruth | None:
    """Ground truth of a catalog :class:`~core.catalog.ImageRef`, cropped like the image; None if it has none.

    The files are ``ref.ground_truth`` (interpreted by ``ref.label_kind``) and the optional
    membrane mask ``ref.membranes`` (255 = membrane, thresholded at 128); both get ``ref.crop``.

    * ``instances``: the stored integer labels (0 = background) → ``instances`` (int32);
    * ``binary_mask``: 0/255 anti-aliased mask, thresholded at 128, 8-connected components
      → ``instances``;
    * ``membrane_label``: 0 = membrane, 255 = cell (threshold 128) → ``membranes``, and the
      cells the membranes enclose (4-connected) → ``instances``.
    """
    from core.io import read_label
    from core.segmentation.contours import cells_from_membranes
    from core.segmentation.data import MASK_THRESHOLD, mask_to_instances

    if ref.ground_truth is None and ref.membranes is None:
        return None
    gt = GroundTruth()
    if ref.ground_truth is not None:
        label = _crop(read_label(ref.ground_truth), ref.crop)
        if ref.label_kind == "instances":
            gt.instances = label.astype(np.int32)
        elif ref.label_kind == "binary_mask":
            gt.instances = mask_to_instances(label)
        elif ref.label_kind == "membrane_label":
            gt.membranes = label < MASK_THRESHOLD
            gt.instances = cells_from_membranes(gt.membranes)
        else:
            raise ValueError(f"{ref.dataset}/{ref.image_id}: unknown label_kind {ref.label_kind!r} "
                             f"of {ref.ground_truth}")
    if ref.membranes is not None:
        gt.membranes = _crop(read_label(ref.membranes), ref.crop) >= MASK_THRESHOLD
    return gt


# --------------------------------------------------------------------------- evaluator


def stardist_models_in_use() -> dict[str, str]:
    """dataset → StarDist model name: :data:`DEFAULT_MODELS`, overridden per dataset by
    ``BIOCODEC_STARDIST_MODELS="monuseg=NAME,epfl_hippocampus_fibsem=NAME"``."""
    out = dict(DEFAULT_MODELS)
    for part in os.environ.get("BIOCODEC_STARDIST_MODELS", "").split(","):
        if "=" in part:
            dataset, _, model = part.partition("=")
            out[dataset.strip()] = model.strip()
    return out


def _gray(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        return pixels[..., 0]
    if pixels.ndim != 2:
        raise ValueError(f"EM analysis needs a grayscale image, got shape {pixels.shape}")
    return pixels


class DownstreamEvaluator:
    """Segments original and reconstruction of one dataset's images and compares them (see module doc)."""

    def __init__(self, dataset: str, stardist_model: str | None = None, membrane_params=None):
        self.dataset = dataset
        self.stardist_model = stardist_model
        self.membrane_params = membrane_params

    # -- analysis of one image
    def segment(self, pixels: np.ndarray) -> dict:
        """{'labels': instance labels (int32) or None, 'foreground': bool mask or None, 'contours': bool or None}."""
        from core.segmentation.contours import cells_from_membranes, contours_of, detect_membranes

        out = {"labels": None, "foreground": None, "contours": None}
        membranes = None
        if self.membrane_params is not None:
            membranes = detect_membranes(_gray(pixels), self.membrane_params)
            out["contours"] = contours_of(membranes)
        if self.stardist_model is not None:
            from core.segmentation.stardist_models import load_stardist, model_scale, predict_labels

            pix = _gray(pixels) if self.dataset != "monuseg" else np.asarray(pixels)
            labels = predict_labels(load_stardist(self.stardist_model), pix, model_scale(self.stardist_model))
            out["labels"], out["foreground"] = labels, labels > 0
        elif membranes is not None:  # ISBI: the segmentation is the membrane map and the cells it encloses
            out["labels"], out["foreground"] = cells_from_membranes(membranes), membranes
        return out

    def prepare(self, image, ref) -> dict:
        """Segment the original (a BioImage or array) once; load its ground truth; score the original vs GT."""
        pixels = image.pixels if hasattr(image, "pixels") else np.asarray(image)
        original = self.segment(pixels)
        gt = load_ground_truth(ref) if ref is not None else None
        gt_fg = gt_labels = None
        if gt is not None:
            gt_labels = gt.instances
            gt_fg = gt.membranes if self.dataset == ISBI else (gt.instances > 0 if gt.instances is not None else None)
            for name, arr in (("ground truth", gt_labels), ("ground-truth mask", gt_fg)):
                if arr is not None and arr.shape != pixels.shape[:2]:
                    raise ValueError(f"{name} of {ref.image_id} has shape {arr.shape}, image {pixels.shape[:2]}")
        state = {"original": original, "gt_labels": gt_labels, "gt_foreground": gt_fg}
        state["dice_gt_original"] = dice(gt_fg, original["foreground"]) if _both(gt_fg, original["foreground"]) else None
        state["f1_gt_original"] = (object_f1(gt_labels, original["labels"], OBJECT_IOU)
                                   if _both(gt_labels, original["labels"]) else None)
        return state

    def compare(self, state: dict, reconstruction: np.ndarray) -> dict:
        """Downstream columns for one reconstruction (array shaped like the original)."""
        rec = self.segment(np.asarray(reconstruction))
        org = state["original"]
        row = dict.fromkeys(DOWNSTREAM_COLUMNS)
        if org["foreground"] is not None:
            row["seg_dice"] = dice(org["foreground"], rec["foreground"])
            row["seg_iou"] = iou(org["foreground"], rec["foreground"])
            row["seg_f1"] = object_f1(org["labels"], rec["labels"], OBJECT_IOU)
            row["seg_dice_gt_original"] = state["dice_gt_original"]
            row["seg_f1_gt_original"] = state["f1_gt_original"]
            if state["gt_foreground"] is not None:
                row["seg_dice_gt_reconstruction"] = dice(state["gt_foreground"], rec["foreground"])
            if state["gt_labels"] is not None:
                row["seg_f1_gt_reconstruction"] = object_f1(state["gt_labels"], rec["labels"], OBJECT_IOU)
        if org["contours"] is not None:
            row["contour_bf1"] = boundary_f1(org["contours"], rec["contours"], CONTOUR_TOLERANCE_PX)
            row["contour_hd95"], row["contour_msd"] = surface_distances(org["contours"], rec["contours"])
        return row


def _both(a, b) -> bool:
    return a is not None and b is not None


@lru_cache(maxsize=None)
def _evaluator(dataset: str) -> DownstreamEvaluator | None:
    from core.segmentation.contours import PARAMS

    model = stardist_models_in_use().get(dataset)
    if model is not None:
        try:
            from core.segmentation.stardist_models import load_stardist

            load_stardist(model)
        except Exception as exc:  # keep the codec metrics (and contours) when a model is unavailable
            warnings.warn(f"StarDist model {model!r} for {dataset} unavailable, its seg_* columns stay empty: {exc}")
            model = None
    membranes = PARAMS.get(dataset)
    if model is None and membranes is None:
        return None
    return DownstreamEvaluator(dataset, stardist_model=model, membrane_params=membranes)


def segmenter_training_images(dataset: str) -> set[str]:
    """Catalog ids (``"dataset/image_id"``) the downstream segmenter(s) of ``dataset`` trained,
    validated or were tuned on.

    * The StarDist model in use (``BIOCODEC_STARDIST_MODELS`` or :data:`DEFAULT_MODELS`): its
      ``biocodec.json`` lists ``training_images`` (catalog ids); older files list file stems under
      ``train_images`` + ``validation_images``, read as images of ``dataset``.  A registered
      pretrained model has no such file and adds nothing (it never saw the catalog's images).
    * The classical membrane detector (datasets in ``contours.PARAMS``): the images its parameters
      were tuned on (``contours.TUNED_ON``).

    Their ``seg_*_gt_*`` / ``contour_*`` columns are optimistic on these images; report accuracy
    on the others.  Empty for datasets without a downstream segmenter.
    """
    import json

    from core.catalog import catalog_id
    from core.segmentation.contours import PARAMS, TUNED_ON
    from core.segmentation.stardist_models import resolve_model_folder

    seen: set[str] = set()
    model = stardist_models_in_use().get(dataset)
    folder = resolve_model_folder(model) if model else None
    meta = folder / "biocodec.json" if folder else None
    if meta is not None and meta.is_file():
        info = json.loads(meta.read_text())
        if "training_images" in info:
            seen.update(info["training_images"])
        else:
            seen.update(catalog_id(dataset, stem)
                        for stem in [*info.get("train_images", []), *info.get("validation_images", [])])
    if dataset in PARAMS:
        seen.update(i for i in TUNED_ON if i.startswith(f"{dataset}/"))
    return seen


def downstream_for(ref) -> DownstreamEvaluator | None:
    """The evaluator for ``ref``'s dataset (cached per process), or None when it has no downstream task."""
    if ref.dataset not in ("monuseg", EPFL, ISBI):
        return None
    if os.environ.get("BIOCODEC_DOWNSTREAM", "").lower() in ("0", "off", "no", "false"):
        return None
    return _evaluator(ref.dataset)
