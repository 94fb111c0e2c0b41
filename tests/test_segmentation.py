"""Shipped StarDist models vs ground truth, ground truth read through the catalog, the downstream evaluator,
the images each segmenter saw, and the runner storing the downstream columns.

Real images come from the catalog (core.catalog, data/stages.toml) under the shared data root; tests that need
them are skipped (with the reason) when that folder is absent.
"""
import dataclasses
import json
import math

import numpy as np
import pytest

from core import catalog
from core.catalog import ImageRef
from core.paths import data_root
from core.segmentation import DOWNSTREAM_COLUMNS, downstream_for, load_ground_truth, segmenter_training_images
from core.segmentation.segmenters import load_object_segmenter
from core.segmentation.stardist_models import MODELS_DIR, load_stardist, model_scale

DATA = data_root()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark data not found at {DATA}")

EPFL, ISBI = "epfl_hippocampus_fibsem", "isbi2012_em"
MONUSEG_TILE = "TCGA-2Z-A9J9-01A-01-TS1"  # MoNuSeg *test* split (not seen in training)
EPFL_TILE = "training0164"  # EPFL test split; not in the shipped model's training either


def catalog_ref(dataset: str, image_id: str, **changes) -> ImageRef:
    """The catalog's ImageRef of ``dataset/image_id`` (any split), with ``changes`` (e.g. crop=...) applied."""
    (ref,) = [r for r in catalog.split_refs(dataset, catalog.SPLITS) if r.image_id == image_id]
    return dataclasses.replace(ref, **changes)


def monuseg_ref(**changes):
    return catalog_ref("monuseg", MONUSEG_TILE, **changes)


def epfl_ref(**changes):
    return catalog_ref(EPFL, EPFL_TILE, **changes)


def isbi_ref(stem="29", **changes):
    return catalog_ref(ISBI, stem, **changes)


@pytest.mark.parametrize("name", ["monuseg_he", "monuseg_he_121ep", "monuseg_he_blurmax", "epfl_mito"])
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
    (lambda: monuseg_ref(crop=(1, 1, 501, 501)), "monuseg_he_121ep", 0.75),  # measured 0.827
    (lambda: monuseg_ref(crop=(1, 1, 501, 501)), "monuseg_he_blurmax", 0.75),  # measured 0.821
    (epfl_ref, "epfl_mito", 0.50),  # measured 0.609
], ids=["monuseg_he", "monuseg_he_121ep", "monuseg_he_blurmax", "epfl_mito"])
def test_shipped_model_f1_vs_ground_truth(ref_factory, model, floor):
    from core.datasets import load_ref
    from core.segmentation.metrics import object_f1

    ref = ref_factory()
    image, gt = load_ref(ref), load_ground_truth(ref)
    labels = load_object_segmenter(model).labels(image.pixels)  # the runner's path: scale and instance rule
    assert labels.shape == image.pixels.shape[:2] and labels.dtype == np.int32
    assert object_f1(gt.instances, labels) >= floor


# Ground truth of one catalog ref per label kind; counts measured on these files (data/MANIFEST.sha256 pins them).
@needs_data
def test_load_ground_truth_of_catalog_refs_by_label_kind():
    from core.io import read_label

    epfl = epfl_ref()
    assert (epfl.label_kind, epfl.split, epfl.crop) == ("binary_mask", "test", None) and epfl.membranes
    em = load_ground_truth(epfl)
    assert em.instances.shape == em.membranes.shape == (768, 1024)
    assert em.instances.dtype == np.int32 and em.membranes.dtype == bool
    # 0/255 anti-aliased mask (151 grey levels): >= 128, 8-connected → 15 mitochondria covering 40,357 px
    assert len(np.unique(read_label(epfl.ground_truth))) == 151
    assert em.instances.max() == 15 and np.array_equal(np.unique(em.instances), np.arange(16))
    assert int((em.instances > 0).sum()) == 40357 and int(em.membranes.sum()) == 139924

    isbi_r = isbi_ref()
    assert isbi_r.label_kind == "membrane_label" and isbi_r.membranes is None
    isbi = load_ground_truth(isbi_r)
    assert isbi.instances.shape == isbi.membranes.shape == (512, 512)
    assert np.array_equal(isbi.membranes, read_label(isbi_r.ground_truth) == 0)  # 0 = membrane, 255 = cell
    assert int(isbi.membranes.sum()) == 43922 and isbi.instances.max() == 117
    assert not np.any(isbi.instances[isbi.membranes])  # cells are what the membranes enclose

    mon_r = monuseg_ref()
    assert mon_r.label_kind == "instances" and mon_r.crop == (1, 1, 1000, 1000)
    mon = load_ground_truth(mon_r)
    assert mon.membranes is None and mon.instances.shape == (999, 999) and mon.instances.dtype == np.int32
    raw = read_label(mon_r.ground_truth)
    assert raw.dtype == np.uint16 and raw.shape == (1000, 1000)
    assert np.array_equal(mon.instances, raw[1:, 1:]) and mon.instances.max() == 575
    assert int((mon.instances > 0).sum()) == 226240


@needs_data
def test_load_ground_truth_applies_the_crop():
    full = load_ground_truth(monuseg_ref(crop=None))
    cropped = load_ground_truth(monuseg_ref())
    assert full.instances.shape == (1000, 1000) and cropped.instances.shape == (999, 999)
    assert np.array_equal(cropped.instances, full.instances[1:, 1:])
    em_full, em = load_ground_truth(epfl_ref()), load_ground_truth(epfl_ref(crop=(10, 20, 210, 320)))
    assert em.instances.shape == em.membranes.shape == (200, 300)
    assert np.array_equal(em.membranes, em_full.membranes[10:210, 20:320])
    assert np.array_equal(em.instances > 0, em_full.instances[10:210, 20:320] > 0)


def test_ground_truth_follows_label_kind_of_any_ref(tmp_path):
    import imagecodecs

    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 1:3] = 255
    mask[4:6, 5:8] = 200  # anti-aliased value >= 128: foreground
    mask[0, 7] = 100  # < 128: background
    (tmp_path / "m.png").write_bytes(imagecodecs.png_encode(mask))
    ref = ImageRef(2, "any", "x", "unused.png", ground_truth=str(tmp_path / "m.png"), label_kind="binary_mask",
                   membranes=str(tmp_path / "m.png"), crop=(0, 0, 6, 7))
    gt = load_ground_truth(ref)
    assert gt.instances.shape == (6, 7) and gt.instances.max() == 2
    assert int((gt.instances == 1).sum()) == 4 and int((gt.instances == 2).sum()) == 4
    assert int(gt.membranes.sum()) == 8
    as_membranes = load_ground_truth(dataclasses.replace(ref, label_kind="membrane_label", membranes=None))
    assert int(as_membranes.membranes.sum()) == 6 * 7 - 8 and as_membranes.instances.max() == 2
    assert load_ground_truth(ImageRef(1, "kodak", "k", "k.png")) is None
    with pytest.raises(ValueError, match="label_kind"):
        load_ground_truth(dataclasses.replace(ref, label_kind="polygons"))


def test_read_label_keeps_stored_values_and_one_channel(tmp_path):
    import imagecodecs

    from core.io import ImageReadError, read_label

    labels = np.array([[0, 1, 2], [700, 65535, 3]], np.uint16)
    (tmp_path / "l16.png").write_bytes(imagecodecs.png_encode(labels))
    out = read_label(tmp_path / "l16.png")
    assert out.dtype == np.uint16 and np.array_equal(out, labels)
    la = np.stack([np.array([[0, 255], [128, 7]], np.uint8), np.full((2, 2), 255, np.uint8)], axis=-1)
    (tmp_path / "la.png").write_bytes(imagecodecs.png_encode(la))
    assert np.array_equal(read_label(tmp_path / "la.png"), la[..., 0])  # opaque alpha dropped
    la[0, 0, 1] = 0
    (tmp_path / "la_alpha.png").write_bytes(imagecodecs.png_encode(la))
    with pytest.raises(ImageReadError, match="alpha"):
        read_label(tmp_path / "la_alpha.png")
    (tmp_path / "rgb.png").write_bytes(imagecodecs.png_encode(np.zeros((2, 2, 3), np.uint8)))
    with pytest.raises(ImageReadError, match="one channel"):
        read_label(tmp_path / "rgb.png")


def test_no_downstream_task_for_photographs_or_when_switched_off(monkeypatch):
    assert downstream_for(ImageRef(1, "kodak", "kodim01", "x.png")) is None
    monkeypatch.setenv("BIOCODEC_DOWNSTREAM", "off")
    assert downstream_for(ImageRef(2, ISBI, "29", "x.png")) is None


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
    monkeypatch.setattr(runner, "resolve_refs", lambda *args, **kwargs: refs)
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


# Classical membrane detector vs labels, boundary F1 at 2 px on catalog test images (measured: ISBI 29 → 0.782,
# EPFL training0164 → 0.672; test-split means in data/models/README.md).
@needs_data
@pytest.mark.parametrize("dataset,stem,floor", [(ISBI, "29", 0.75), (EPFL, "training0164", 0.64)])
def test_membrane_detector_accuracy_vs_labels(dataset, stem, floor):
    from core.segmentation.contours import PARAMS, contours_of, detect_membranes
    from core.segmentation.data import membrane_pairs
    from core.segmentation.metrics import boundary_f1

    pairs = membrane_pairs(dataset, "test")
    assert all(ref.split == "test" for ref, _img, _gt in pairs) and len(pairs) == 10
    (ref, image, gt), = [p for p in pairs if p[0].image_id == stem]
    assert image.ndim == 2 and gt.dtype == bool and gt.shape == image.shape
    assert boundary_f1(contours_of(gt), contours_of(detect_membranes(image, PARAMS[dataset]))) >= floor


@needs_data
def test_membrane_detector_was_tuned_on_training_images_only():
    from core.segmentation.contours import TUNED_ON

    assert len(TUNED_ON) == 12
    for dataset in (ISBI, EPFL):
        first6 = [catalog.catalog_id(r) for r in catalog.split_refs(dataset, ("train",))[:6]]
        assert [i for i in TUNED_ON if i.startswith(dataset + "/")] == first6  # what --tune used


@needs_data
@pytest.mark.parametrize("model", ["monuseg_he", "monuseg_he_121ep", "monuseg_he_blurmax"])
def test_monuseg_segmenter_never_saw_a_test_image(model, monkeypatch):
    monkeypatch.setenv("BIOCODEC_SEGMENTERS", f"monuseg={model}")
    seen = segmenter_training_images("monuseg")
    test = {catalog.catalog_id(r) for r in catalog.split_refs("monuseg", ("test",))}
    train_val = {catalog.catalog_id(r) for r in catalog.split_refs("monuseg", ("train", "val"))}
    assert len(test) == 7 and catalog.catalog_id("monuseg", MONUSEG_TILE) in test
    assert seen.isdisjoint(test)
    assert seen == train_val and len(seen) == 13  # the shipped model used exactly the catalog's train + val


def test_segmenter_training_images_from_model_json_and_tuned_detector(tmp_path, monkeypatch):
    from core.segmentation.contours import TUNED_ON

    tuned_epfl = {i for i in TUNED_ON if i.startswith(EPFL + "/")}
    assert tuned_epfl == {f"{EPFL}/training{n:04d}" for n in (0, 1, 2, 3, 13, 17)}
    # ISBI: no object segmenter; the Sato membrane detector was tuned on images 0-5, the U-Net trained on 0-19
    monkeypatch.setenv("BIOCODEC_MEMBRANES", "sato")
    assert segmenter_training_images(ISBI) == {f"{ISBI}/{n}" for n in range(6)}
    monkeypatch.setenv("BIOCODEC_MEMBRANES", f"{ISBI}=unet-membranes-isbi")
    assert segmenter_training_images(ISBI) == {f"{ISBI}/{n}" for n in range(20)}
    assert segmenter_training_images("kodak") == set()
    # shipped MoNuSeg model: catalog ids from its biocodec.json, no membrane detector
    seen = segmenter_training_images("monuseg")
    assert len(seen) == 13 and all(i.startswith("monuseg/TCGA-") for i in seen)
    # a model with the old keys (file stems; its own dataset name "epfl") → catalog ids of the catalog dataset
    old = tmp_path / "old_model"
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "biocodec.json").write_text(json.dumps({"dataset": "epfl", "train_images": ["training0046"],
                                                   "validation_images": ["training0090"]}))
    monkeypatch.setenv("BIOCODEC_SEGMENTERS", f"{EPFL}={old}")
    monkeypatch.setenv("BIOCODEC_MEMBRANES", "sato")  # EPFL's membranes by Sato: the images it was tuned on
    assert segmenter_training_images(EPFL) == {f"{EPFL}/training0046", f"{EPFL}/training0090"} | tuned_epfl
    # training_images (catalog ids) wins over the old keys
    (old / "biocodec.json").write_text(json.dumps({"training_images": [f"{EPFL}/training0118"],
                                                   "train_images": ["ignored"]}))
    assert segmenter_training_images(EPFL) == {f"{EPFL}/training0118"} | tuned_epfl
    monkeypatch.delenv("BIOCODEC_MEMBRANES")  # the default EPFL membrane U-Net adds its train + val slices (17)
    unet = json.loads((MODELS_DIR / "unet-membranes-epfl" / "biocodec.json").read_text())["training_images"]
    assert len(unet) == 17 and f"{EPFL}/training0135" in unet
    assert segmenter_training_images(EPFL) == {f"{EPFL}/training0118"} | set(unet)
    # a registered pretrained model (no folder here) adds nothing
    monkeypatch.setenv("BIOCODEC_SEGMENTERS", "monuseg=2D_versatile_he")
    assert segmenter_training_images("monuseg") == set()


@needs_data
def test_a_prepared_image_travels_between_dask_workers_without_its_network():
    """The runner's PreparedImage (the image, its downstream evaluator, the original's segmentation) is pickled
    when Dask moves it between workers: the evaluator stays behind (the anti-aliased StarDist's custom Keras layer
    cannot be pickled; no task should carry a network) and the receiving process uses its own."""
    import pickle

    from core.runner import _downstream, prepare_image
    from core.segmentation.segmenters import load_object_segmenter, segmenters_in_use

    prepared = prepare_image(monuseg_ref(crop=(1, 1, 257, 257)))
    assert prepared.error is None and prepared.downstream is not None
    blob = pickle.dumps(prepared)
    assert len(blob) < 2 * 2**20  # pixels + the original's labels, no weights
    moved = pickle.loads(blob)
    assert moved.downstream is _downstream(moved.ref)  # the receiving process's own (cached) evaluator
    name = segmenters_in_use()["monuseg"]
    assert moved.downstream.objects.model is load_object_segmenter(name).model  # this process's cached model
    same = moved.downstream.compare(moved.prepared, moved.image.pixels)
    assert same["seg_dice"] == pytest.approx(1.0) and same["seg_f1"] == pytest.approx(1.0)
    bare = pickle.loads(pickle.dumps(dataclasses.replace(prepared, downstream=None)))
    assert bare.downstream is None


@needs_data
def test_the_shipped_monuseg_segmenter_averages_over_period_four_on_the_runners_path():
    from core.datasets import load_ref
    from core.segmentation.data import normalize
    from core.segmentation.metrics import dice
    from core.segmentation.segmenters import segmenters_in_use
    from core.segmentation.stardist_models import (model_shift_average, predict_labels, shift_averaged_maps,
                                                   stride1_labels)

    name = segmenters_in_use()["monuseg"]
    assert model_shift_average(name) == 4
    segmenter = load_object_segmenter(name)
    assert segmenter.instances == "vote"
    pixels = load_ref(monuseg_ref(crop=(1, 1, 193, 193))).pixels
    labels = segmenter.labels(pixels)  # predict_labels reads the period from the model's folder
    by_hand = stride1_labels(segmenter.model, *shift_averaged_maps(segmenter.model, normalize(pixels), 4), "vote")
    np.testing.assert_array_equal(labels, by_hand)
    plain = predict_labels(segmenter.model, pixels, instances="vote", shift_average=1)  # as before 2026-12-03
    assert labels.shape == plain.shape == pixels.shape[:2] and labels.max() > 10
    assert dice(labels > 0, plain > 0) > 0.9  # the same nuclei, redrawn
