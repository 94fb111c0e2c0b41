"""Segmentation / contour metrics on hand-made masks whose answers are computed by hand."""
import math

import numpy as np
import pytest

from core.segmentation.metrics import boundary_f1, dice, iou, object_f1, surface_distances


def square(y, x, size=4, shape=(12, 12)):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def test_dice_and_iou_of_shifted_squares():
    a, b = square(2, 2), square(2, 4)  # 16 px each; overlap 4 rows × 2 columns = 8 px
    assert dice(a, b) == pytest.approx(2 * 8 / (16 + 16))  # 0.5
    assert iou(a, b) == pytest.approx(8 / (16 + 16 - 8))  # 1/3


def test_identical_inputs_agree_perfectly():
    a = square(1, 3)
    assert dice(a, a) == 1.0
    assert iou(a, a) == 1.0
    assert boundary_f1(a, a) == 1.0
    assert surface_distances(a, a) == (0.0, 0.0)
    labels = a.astype(np.int32) + 2 * square(7, 7)
    assert object_f1(labels, labels) == 1.0


def test_empty_conventions_and_shape_check():
    empty = np.zeros((12, 12), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, square(0, 0)) == 0.0
    assert boundary_f1(empty, empty) == 1.0 and boundary_f1(empty, square(0, 0)) == 0.0
    assert surface_distances(empty, square(0, 0)) == (math.inf, math.inf)
    with pytest.raises(ValueError):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


def test_boundary_f1_counts_pixels_within_tolerance():
    ref = np.zeros((16, 10), bool)
    ref[5, :] = True  # 10 reference contour pixels
    pred = np.zeros_like(ref)
    pred[6, :] = True  # 10 px at distance 1: matched
    pred[10, :] = True  # 10 px at distance 5: unmatched
    precision, recall = 10 / 20, 10 / 10
    assert boundary_f1(ref, pred, tolerance=2) == pytest.approx(2 * precision * recall / (precision + recall))
    # at 5 px tolerance everything matches
    assert boundary_f1(ref, pred, tolerance=5) == 1.0
    # a parallel line 3 px away: nothing within 2 px, everything within 3 px
    far = np.zeros_like(ref)
    far[8, :] = True
    assert boundary_f1(ref, far, tolerance=2) == 0.0
    assert boundary_f1(ref, far, tolerance=3) == 1.0


def test_surface_distances_hd95_and_mean():
    ref = np.zeros((16, 10), bool)
    ref[5, :] = True
    parallel = np.zeros_like(ref)
    parallel[8, :] = True  # every pixel of either line is 3 px from the other
    assert surface_distances(ref, parallel) == pytest.approx((3.0, 3.0))
    two = np.zeros_like(ref)
    two[6, :] = True
    two[10, :] = True
    # pooled distances: pred→ref 10×1 + 10×5, ref→pred 10×1 → 20 ones, 10 fives
    pooled = np.array([1.0] * 20 + [5.0] * 10)
    hd95, msd = surface_distances(ref, two)
    assert msd == pytest.approx(70 / 30)
    assert hd95 == pytest.approx(np.percentile(pooled, 95)) and hd95 == pytest.approx(5.0)


def test_object_f1_one_match_one_miss_one_extra():
    gt = np.zeros((20, 20), np.int32)
    gt[1:6, 1:6] = 1
    gt[10:15, 10:15] = 2
    pred = np.zeros_like(gt)
    pred[1:6, 2:6] = 7  # IoU 20/25 = 0.8 with object 1: a match
    pred[1:5, 14:18] = 3  # overlaps nothing: false positive; object 2 missed
    # TP = 1, FP = 1, FN = 1 → F1 = 2·1 / (2·1 + 1 + 1)
    assert object_f1(gt, pred) == pytest.approx(0.5)
    # at IoU 0.9 the 0.8 match no longer counts
    assert object_f1(gt, pred, thresh=0.9) == 0.0
