"""Training / evaluation data of the project's segmenters, taken from the image catalog.

Which images exist, where their ground truth lives and which split each belongs to is
known only to :mod:`core.catalog` (``data/stages.toml``); this module asks it for the
:class:`~core.catalog.ImageRef` objects of a dataset's splits, reads the pixels with
:func:`core.datasets.load_ref` and the labels with
:func:`core.segmentation.load_ground_truth` (which interprets ``ref.label_kind``).
"""
from __future__ import annotations

import numpy as np

MASK_THRESHOLD = 128  # anti-aliased 0/255 masks (binary_mask ground truth, membrane masks): >= 128 is foreground


def mask_to_instances(mask: np.ndarray) -> np.ndarray:
    """Binary (0/255, anti-aliased) mask → int32 labels of 8-connected components (threshold 128)."""
    from skimage.measure import label

    return label(np.asarray(mask) >= MASK_THRESHOLD, connectivity=2).astype(np.int32)


def labelled_pairs(dataset: str, splits, field: str, data_root=None) -> list[tuple[object, np.ndarray, np.ndarray]]:
    """[(ImageRef, pixels, ground truth ``field``)] of the catalog images of ``dataset`` in ``splits``.

    ``splits`` is a split name or a tuple of them (``("train",)``, ``("val",)``, ``("test",)``); ``field``
    is a :class:`core.segmentation.GroundTruth` attribute (``"instances"``, ``"membranes"``); pixels and
    labels carry the ref's crop.  Every image must have that ground truth.
    """
    from core.catalog import split_refs
    from core.datasets import load_ref
    from core.segmentation import load_ground_truth

    refs = split_refs(dataset, splits, data_root)
    if not refs:
        raise FileNotFoundError(f"the catalog has no {dataset} images in split(s) {splits}")
    out = []
    for ref in refs:
        gt = load_ground_truth(ref)
        labels = getattr(gt, field) if gt is not None else None
        if labels is None:
            raise ValueError(f"{ref.dataset}/{ref.image_id} has no {field} ground truth")
        out.append((ref, load_ref(ref).pixels, labels))
    return out


def instance_pairs(dataset: str, splits, data_root=None) -> list[tuple[object, np.ndarray, np.ndarray]]:
    """[(ImageRef, pixels, int32 instance labels)] (:func:`labelled_pairs` of ``instances``)."""
    return labelled_pairs(dataset, splits, "instances", data_root)


def membrane_pairs(dataset: str, splits, data_root=None) -> list[tuple[object, np.ndarray, np.ndarray]]:
    """[(ImageRef, grayscale pixels, boolean membrane mask)] (:func:`labelled_pairs` of ``membranes``)."""
    pairs = labelled_pairs(dataset, splits, "membranes", data_root)
    for ref, pixels, _ in pairs:
        if pixels.ndim != 2:
            raise ValueError(f"{ref.dataset}/{ref.image_id}: membrane detection needs grayscale, got {pixels.shape}")
    return pairs


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """float32 image scaled so its ``low``/``high`` percentiles (all channels jointly) map to 0/1."""
    from csbdeep.utils import normalize as csb_normalize

    return csb_normalize(np.asarray(image), low, high, axis=None).astype(np.float32)
