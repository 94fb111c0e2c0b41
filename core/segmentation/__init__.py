"""Downstream fidelity: does the analysis of a compressed image give the same answer?

The runner asks :func:`downstream_for` for an evaluator per image, calls
``state = evaluator.prepare(image, ref)`` once (segments the original, loads the
ground truth) and ``evaluator.compare(state, reconstruction) -> dict`` per codec
setting.  The dict holds the downstream columns of ``core.store.RESULT_COLUMNS``
(:data:`DOWNSTREAM_COLUMNS`; None where a column does not apply).

Tasks per dataset (the models are chosen in :mod:`core.segmentation.segmenters`, one table):

========================  ===========================================  =====================================
dataset                   segmentation (seg_* columns)                 contours (contour_* columns)
========================  ===========================================  =====================================
monuseg                   H&E nuclei (object segmenter)                —
epfl_hippocampus_fibsem   mitochondria (object segmenter)              membrane detector
isbi2012_em               membrane mask (Dice/IoU), enclosed cells     membrane detector
                          (object F1; the detector's cell rule)
========================  ===========================================  =====================================

* seg_dice / seg_iou: pixel overlap of the foregrounds (nuclei, mitochondria, or
  membranes) of the reconstruction's vs the original's segmentation;
  seg_f1: object F1 at IoU 0.5 between their instances.
* seg_dice_gt_* / seg_f1_gt_*: the same against the ground truth, for the original
  and for the reconstruction.
* contour_bf1: boundary F1 at 2 px; contour_hd95 / contour_msd: 95th-percentile
  Hausdorff and mean symmetric surface distance (px) between the 1-px contours of
  the original's and the reconstruction's membrane masks.

``BIOCODEC_DOWNSTREAM=off`` turns the downstream columns off (they stay NULL).  Models can be replaced
per dataset with ``BIOCODEC_SEGMENTERS`` / ``BIOCODEC_MEMBRANES`` (:mod:`core.segmentation.segmenters`),
e.g. ``BIOCODEC_SEGMENTERS=monuseg=2D_versatile_he`` (a registered pretrained StarDist, needs internet).
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


def _gray(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        return pixels[..., 0]
    if pixels.ndim != 2:
        raise ValueError(f"EM analysis needs a grayscale image, got shape {pixels.shape}")
    return pixels


class DownstreamEvaluator:
    """Segments original and reconstruction of one dataset's images and compares them (see module doc)."""

    def __init__(self, dataset: str, objects=None, membranes=None):
        """``objects``: a :class:`~core.segmentation.segmenters.ObjectSegmenter` (or None); ``membranes``: a
        membrane detector, Sato ``MembraneParams`` or a :class:`~core.segmentation.unet.TrainedUNet` (or None)."""
        self.dataset = dataset
        self.objects = objects
        self.membranes = membranes

    @property
    def name(self) -> str:
        """What segments: the object segmenter's and the membrane detector's names."""
        from core.segmentation.contours import MembraneParams

        parts = [self.objects.name] if self.objects is not None else []
        if self.membranes is not None:
            parts.append("Sato membrane detector" if isinstance(self.membranes, MembraneParams)
                         else f"U-Net membrane detector {self.membranes.name}")
        return " + ".join(parts) or "none"

    @property
    def cell_rule(self):
        """How the membrane detector's mask becomes cells (its ``cell_rule``; plain components for Sato)."""
        from core.segmentation.contours import CellRule

        return getattr(self.membranes, "cell_rule", CellRule())

    # -- analysis of one image
    def segment(self, pixels: np.ndarray) -> dict:
        """{'labels': instance labels (int32) or None, 'foreground': bool mask or None, 'contours': bool or None}."""
        from core.segmentation.contours import contours_of
        from core.segmentation.unet import detect

        out = {"labels": None, "foreground": None, "contours": None}
        membranes = None
        if self.membranes is not None:
            membranes = detect(_gray(pixels), self.membranes)
            out["contours"] = contours_of(membranes)
        if self.objects is not None:
            pix = _gray(pixels) if self.dataset != "monuseg" else np.asarray(pixels)
            labels = self.objects.labels(pix)
            out["labels"], out["foreground"] = labels, labels > 0
        elif membranes is not None:  # ISBI: the segmentation is the membrane map and the cells it encloses
            out["labels"], out["foreground"] = self.cell_rule.cells(membranes), membranes
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


def evaluator_for(dataset: str, contours: bool = True, membranes: str | None = None,
                  strict: bool = True) -> DownstreamEvaluator | None:
    """The evaluator of ``dataset`` with the segmenters of :mod:`core.segmentation.segmenters` (``membranes``
    names another membrane detector; ``contours=False`` leaves it out); None without a downstream task.
    ``strict=False`` keeps going without an object segmenter that cannot be loaded (a warning; its
    ``seg_*`` columns stay empty)."""
    from core.segmentation import segmenters as S

    try:
        objects = S.object_segmenter_for(dataset)
    except Exception as exc:
        if strict:
            raise
        warnings.warn(f"segmenter {S.segmenters_in_use().get(dataset)!r} for {dataset} unavailable, "
                      f"its seg_* columns stay empty: {exc}")
        objects = None
    detector = S.membrane_detector_for(dataset, membranes) if contours else None
    if objects is None and detector is None:
        return None
    return DownstreamEvaluator(dataset, objects=objects, membranes=detector)


@lru_cache(maxsize=None)
def _evaluator(dataset: str) -> DownstreamEvaluator | None:
    return evaluator_for(dataset, strict=False)


def segmenter_training_images(dataset: str) -> set[str]:
    """Catalog ids (``"dataset/image_id"``) the downstream segmenter(s) of ``dataset`` trained, validated or
    were tuned on (:func:`core.segmentation.segmenters.training_images`).  Their ``seg_*_gt_*`` /
    ``contour_*`` columns are optimistic on these images; report accuracy on the others."""
    from core.provenance import downstream_datasets
    from core.segmentation.segmenters import training_images

    return training_images(dataset) if dataset in downstream_datasets() else set()


def downstream_for(ref) -> DownstreamEvaluator | None:
    """The evaluator for ``ref``'s dataset (cached per process), or None when it has no downstream task."""
    from core.provenance import downstream_datasets

    if ref.dataset not in downstream_datasets():
        return None
    if os.environ.get("BIOCODEC_DOWNSTREAM", "").lower() in ("0", "off", "no", "false"):
        return None
    return _evaluator(ref.dataset)
