"""Shipped StarDist models vs ground truth, the downstream evaluator, and the runner storing its columns.

Reads real tiles from ../shared/data by path; skipped (with the reason) when that folder is absent.
"""
import math
from pathlib import Path

import numpy as np
import pytest

from core.datasets import ImageRef
from core.segmentation import DOWNSTREAM_COLUMNS, downstream_for, load_ground_truth
from core.segmentation.stardist_models import MODELS_DIR, load_stardist, model_scale, predict_labels

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark data not found at {DATA}")

MONUSEG_TILE = "TCGA-2Z-A9J9-01A-01-TS1"  # MoNuSeg *test* split (not seen in training)
EPFL_TILE = "training0164"  # last EPFL slice: in the 4 held out from training


def monuseg_ref(crop=(1, 1, 1000, 1000)):
    return ImageRef(3, "monuseg", MONUSEG_TILE, str(DATA / f"monuseg/test/images/{MONUSEG_TILE}.tif"), crop=crop,
                    ground_truth=str(DATA / f"monuseg/test/instance_masks/{MONUSEG_TILE}.png"))


def epfl_ref(crop=None):
    return ImageRef(2, "epfl_hippocampus_fibsem", EPFL_TILE,
                    str(DATA / f"epfl_hippocampus_fibsem/train/slices/{EPFL_TILE}.png"), crop=crop,
                    ground_truth=str(DATA / f"epfl_hippocampus_fibsem/train/mitochondrion/{EPFL_TILE}.png"))


def isbi_ref(stem="29", crop=None):
    return ImageRef(2, "isbi2012_em", stem, str(DATA / f"isbi2012_em/train/image/{stem}.png"), crop=crop,
                    ground_truth=str(DATA / f"isbi2012_em/train/label/{stem}.png"))


@pytest.mark.parametrize("name", ["monuseg_he", "epfl_mito"])
def test_shipped_model_folders_are_complete(name):
    folder = MODELS_DIR / name
    for f in ("config.json", "thresholds.json", "weights_best.h5", "biocodec.json"):
        assert (folder / f).is_file(), f"{folder / f} missing"
    assert (folder / "weights_best.h5").stat().st_size < 8 * 2**20


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="neither a StarDist model folder"):
        load_stardist("no_such_model_here")


# Floors: F1 (IoU 0.5, stardist.matching) measured on these exact tiles with the shipped models, minus a margin
# (held-out means: MoNuSeg test 0.612 over 7 tiles, EPFL last 4 slices 0.596; data/models/*/accuracy.json).
@needs_data
@pytest.mark.parametrize("ref_factory,model,floor", [
    (lambda: monuseg_ref(crop=(1, 1, 501, 501)), "monuseg_he", 0.50),  # measured 0.578
    (epfl_ref, "epfl_mito", 0.50),  # measured 0.609
], ids=["monuseg_he", "epfl_mito"])
def test_shipped_model_f1_vs_ground_truth(ref_factory, model, floor):
    from core.datasets import load_ref
    from core.segmentation.metrics import object_f1

    ref = ref_factory()
    image, gt = load_ref(ref), load_ground_truth(ref)
    labels = predict_labels(load_stardist(model), image.pixels, model_scale(model))
    assert labels.shape == image.pixels.shape[:2]
    assert object_f1(gt.instances, labels) >= floor


@needs_data
def test_load_ground_truth_applies_the_crop():
    full = load_ground_truth(monuseg_ref(crop=None))
    cropped = load_ground_truth(monuseg_ref())
    assert full.instances.shape == (1000, 1000) and cropped.instances.shape == (999, 999)
    assert np.array_equal(cropped.instances, full.instances[1:, 1:])
    em = load_ground_truth(epfl_ref(crop=(0, 0, 200, 300)))
    assert em.instances.shape == em.membranes.shape == (200, 300)
    isbi = load_ground_truth(isbi_ref())
    assert 0.1 < isbi.membranes.mean() < 0.4 and isbi.instances.max() > 20


def test_no_downstream_task_for_photographs_or_when_switched_off(monkeypatch):
    assert downstream_for(ImageRef(1, "kodak", "kodim01", "x.png")) is None
    monkeypatch.setenv("BIOCODEC_DOWNSTREAM", "off")
    assert downstream_for(isbi_ref()) is None


def test_downstream_columns_are_result_columns():
    from core.store import COLUMN_NAMES

    assert set(DOWNSTREAM_COLUMNS) <= set(COLUMN_NAMES)
    assert [c for c in COLUMN_NAMES if c.startswith(("seg_", "contour_"))] == list(DOWNSTREAM_COLUMNS)


@needs_data
def test_identical_reconstruction_scores_one_and_noise_scores_less():
    from core.datasets import load_ref

    ref = isbi_ref(crop=(0, 0, 256, 256))
    image = load_ref(ref)
    ev = downstream_for(ref)
    state = ev.prepare(image, ref)
    same = ev.compare(state, image.pixels.copy())
    assert same["seg_dice"] == 1.0 and same["seg_iou"] == 1.0 and same["seg_f1"] == 1.0
    assert same["contour_bf1"] == 1.0 and same["contour_hd95"] == 0.0 and same["contour_msd"] == 0.0
    assert same["seg_dice_gt_original"] == same["seg_dice_gt_reconstruction"]
    rng = np.random.default_rng(0)
    noisy = np.clip(image.pixels + rng.normal(0, 40, image.pixels.shape), 0, 255).astype(np.uint8)
    worse = ev.compare(state, noisy)
    assert worse["seg_dice"] < 0.99 and worse["contour_bf1"] < 0.99 and worse["contour_hd95"] > 0


@needs_data
def test_runner_stores_downstream_columns(tmp_path, monkeypatch):
    import core.runner as runner
    from core import store

    refs = [epfl_ref(crop=(0, 0, 256, 256)), isbi_ref(crop=(0, 0, 256, 256))]
    monkeypatch.setattr(runner, "resolve_refs", lambda data_root, stage: refs)
    db = tmp_path / "r.duckdb"
    assert runner.main(["--db", str(db), "--codecs", "png,jpeg", "--settings", "jpeg=30", "--quiet"]) == 0
    con = store.open_reader(db)
    cols = ", ".join(DOWNSTREAM_COLUMNS)
    rows = con.execute(f"SELECT dataset, codec, error, {cols} FROM results ORDER BY dataset, codec").fetchall()
    con.close()
    assert [(r[0], r[1]) for r in rows] == [("epfl_hippocampus_fibsem", "jpeg"), ("epfl_hippocampus_fibsem", "png"),
                                            ("isbi2012_em", "jpeg"), ("isbi2012_em", "png")]
    assert all(r[2] is None for r in rows), [r[2] for r in rows]
    by = {(r[0], r[1]): dict(zip(DOWNSTREAM_COLUMNS, r[3:])) for r in rows}
    for dataset in ("epfl_hippocampus_fibsem", "isbi2012_em"):
        lossless, lossy = by[(dataset, "png")], by[(dataset, "jpeg")]
        assert all(lossless[c] is not None for c in DOWNSTREAM_COLUMNS), lossless
        assert lossless["seg_dice"] == 1.0 and lossless["contour_bf1"] == 1.0 and lossless["contour_hd95"] == 0.0
        assert lossless["seg_dice_gt_reconstruction"] == lossless["seg_dice_gt_original"]
        assert 0.0 <= lossy["seg_dice"] <= 1.0 and 0.0 <= lossy["contour_bf1"] < 1.0
        assert math.isfinite(lossy["contour_msd"]) and lossy["contour_msd"] > 0


def test_models_are_chosen_by_folder_or_registered_name():
    from core.segmentation.stardist_models import registered_names

    by_folder = load_stardist(str(MODELS_DIR / "epfl_mito"))
    assert by_folder.config.n_channel_in == 1 and model_scale(str(MODELS_DIR / "epfl_mito")) == 0.5
    assert load_stardist("monuseg_he").config.n_channel_in == 3 and model_scale("monuseg_he") == 1.0
    # the internet path stays available: StarDist's registry knows the published model
    assert "2D_versatile_he" in registered_names()


# Classical membrane detector vs labels, boundary F1 at 2 px on held-out images (measured: ISBI 29 → 0.782,
# EPFL training0164 → 0.672; the held-out means are 0.788 over ISBI 20–29 and 0.672 over the last 4 EPFL slices).
@needs_data
@pytest.mark.parametrize("dataset,stem,floor", [("isbi2012_em", "29", 0.75),
                                                ("epfl_hippocampus_fibsem", "training0164", 0.64)])
def test_membrane_detector_accuracy_vs_labels(dataset, stem, floor):
    from core.segmentation.contours import PARAMS, contours_of, detect_membranes, membrane_pairs
    from core.segmentation.metrics import boundary_f1

    (_s, image, gt), = [p for p in membrane_pairs(dataset, "test") if p[0] == stem]
    assert boundary_f1(contours_of(gt), contours_of(detect_membranes(image, PARAMS[dataset]))) >= floor


def test_training_image_ids_list_what_each_model_saw():
    from core.segmentation import training_image_ids
    from core.segmentation.data import EPFL_TEST_SLICES

    epfl = training_image_ids("epfl_hippocampus_fibsem")
    assert len(epfl) == 27 - EPFL_TEST_SLICES and EPFL_TILE not in epfl and "training0000" in epfl
    monuseg = training_image_ids("monuseg")
    assert len(monuseg) == 13 and MONUSEG_TILE not in monuseg
    assert training_image_ids("isbi2012_em") == set()
