"""U-Nets (core.segmentation.unet / train_unet / segmenters): shapes, determinism, a few training steps on
a synthetic membrane image, model folders, foreground (object) models, the segmenter table and its
BIOCODEC_MEMBRANES / BIOCODEC_SEGMENTERS overrides, and the shipped ISBI model."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.segmentation import unet as U  # noqa: E402
from core.segmentation.train_unet import boundary_scores, loss_fn, random_batch  # noqa: E402

ISBI = "isbi2012_em"
EPFL = "epfl_hippocampus_fibsem"


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(seed=0):
    torch.manual_seed(seed)
    return U.build_unet(base=4, max_channels=8).eval()


def synthetic(shape=(96, 96), seed=0):
    """Bright noisy cells separated by dark 3-px membranes on an irregular grid: (uint8 image, bool membranes)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    mem = np.zeros(shape, bool)
    for y in np.cumsum(rng.integers(14, 26, size=12)):
        mem[max(0, y - 1):y + 2, :] = y < h
    for x in np.cumsum(rng.integers(14, 26, size=12)):
        mem[:, max(0, x - 1):x + 2] |= x < w
    img = np.where(mem, 60.0, 190.0) + rng.normal(0, 12, shape)
    return np.clip(img, 0, 255).astype(np.uint8), mem


def write_model(folder, model, datasets=(ISBI,), threshold=0.5, min_size=1, arch=None, target=None):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / U.WEIGHTS_FILE)
    meta = {"architecture": arch or {"base": 4, "depth": 4, "max_channels": 8}, "datasets": list(datasets),
            "threshold": threshold, "min_size": min_size, "training_images": [f"{datasets[0]}/0"]}
    if target is not None:
        meta["target"] = target
    (folder / U.META_FILE).write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("shape", [(37, 53), (16, 16), (5, 200), (129, 64)])
def test_any_size_gives_same_shape_probabilities(shape):
    img = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    prob = U.predict_probability(tiny(), img)
    assert prob.shape == shape and prob.dtype == np.float32
    assert np.isfinite(prob).all() and (prob >= 0).all() and (prob <= 1).all()
    assert U.detect_mask(img, U.TrainedUNet(tiny(), 0.5, 1)).shape == shape


def test_tiled_inference_matches_one_pass_inside_tiles():
    img = np.random.default_rng(2).integers(0, 256, (150, 170)).astype(np.uint8)
    model = tiny()
    full = U.predict_probability(model, img, tile=1024)
    tiled = U.predict_probability(model, img, tile=96, overlap=24)
    assert tiled.shape == full.shape
    # each output pixel comes from a tile that extends >= 24 px around it (or to the image border)
    assert np.abs(tiled - full).mean() < 0.02


def test_inference_is_deterministic_and_leaves_train_mode():
    img, _ = synthetic((64, 80))
    model = tiny()
    model.train()
    a = U.predict_probability(model, img)
    b = U.predict_probability(model, img)
    assert np.array_equal(a, b)
    assert model.training  # restored


def test_phase_average_is_the_mean_of_the_lattice_placements_and_one_phase_is_one_pass():
    img = np.random.default_rng(6).integers(0, 256, (40, 56)).astype(np.uint8)
    model = tiny(2)
    x = U.prepare_input(img)
    assert np.array_equal(U.predict_probability(model, img, phases=1), U.predict_probability(model, img))
    by_hand = np.mean([U._predict_full(model, np.pad(x, ((dy, 1 - dy), (dx, 1 - dx)), mode="reflect"))[dy:dy + 40, dx:dx + 56]
                       for dy in (0, 1) for dx in (0, 1)], axis=0)
    averaged = U.predict_probability(model, img, phases=2)
    assert averaged.shape == img.shape and np.allclose(averaged, by_hand, atol=1e-6)
    lattice = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Upsample(scale_factor=2, mode="nearest"))
    assert np.abs(U.predict_probability(lattice, img, phases=2) - U.predict_probability(lattice, img)).max() > 0.01
    tiled = U.predict_probability(model, img, phases=2, tile=32, overlap=8)  # tiles average their placements too
    assert tiled.shape == img.shape and np.abs(tiled - averaged).mean() < 0.02


def test_phase_average_makes_a_stride_two_network_move_with_a_one_pixel_shift():
    """A network that sees the image only through a stride-2 lattice (2×2 mean, nearest upsampling) answers a
    1-px shift with a different picture; averaged over the 2×2 placements its output moves with the image."""
    from core.segmentation import noise_floor as nf

    lattice = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Upsample(scale_factor=2, mode="nearest"))
    img = np.random.default_rng(7).integers(0, 256, (48, 64)).astype(np.uint8)
    for phases, equal in ((1, False), (2, True)):
        a = U.predict_probability(lattice, img, phases=phases)
        b = nf.unshift(U.predict_probability(lattice, nf.shift(img), phases=phases))
        # 2 px border: edge padding of the shift, reflect padding of the placements
        assert np.allclose(a[2:-2, 2:-2], b[2:-2, 2:-2], atol=1e-6) is equal


def test_model_folder_phase_average_reaches_the_mask(tmp_path):
    model = tiny(3)
    img, _ = synthetic((64, 64), seed=8)
    threshold = float(np.median(U.predict_probability(model, img, phases=2)))  # a threshold where the two differ
    plain = U.load_unet(write_model(tmp_path / "plain", model, threshold=threshold))
    folder = write_model(tmp_path / "pa", model, threshold=threshold)
    meta = json.loads((folder / U.META_FILE).read_text())
    (folder / U.META_FILE).write_text(json.dumps({**meta, "phase_average": 2}))
    averaged = U.load_unet(folder)
    assert (plain.phases, averaged.phases) == (1, 2)
    expected = U.mask_from_probability(U.predict_probability(model, img, phases=2), threshold, 1)
    one_pass = U.mask_from_probability(U.predict_probability(model, img), threshold, 1)
    assert np.array_equal(U.detect_mask(img, averaged), expected)
    assert np.array_equal(U.detect_mask(img, plain), one_pass)
    assert (expected != one_pass).sum() > 20


def test_rejects_colour_images():
    with pytest.raises(ValueError, match="grayscale"):
        U.prepare_input(np.zeros((8, 8, 3), np.uint8))


def test_few_training_steps_learn_drawn_membranes():
    img, mem = synthetic((128, 128), seed=3)
    x = U.prepare_input(img)
    torch.manual_seed(0)
    model = U.build_unet(base=8, max_channels=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    losses = []
    model.train()
    for _ in range(40):
        xb, yb = random_batch([x], [mem], rng, batch=4, crop=64)
        loss = loss_fn(model(torch.from_numpy(xb)), torch.from_numpy(yb))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    test_img, test_mem = synthetic((96, 112), seed=4)  # a new image
    prob = U.predict_probability(model, test_img)
    scores = boundary_scores([prob], [test_mem], thresholds=(0.5,), min_size=1)
    trivial = boundary_scores([np.ones_like(prob)], [test_mem], thresholds=(0.5,), min_size=1)
    assert scores[0.5] > 0.8 > trivial[0.5]


def test_model_folder_round_trip_weights_only(tmp_path):
    model = tiny(5)
    folder = write_model(tmp_path / "m", model, threshold=0.4, min_size=3)
    loaded = U.load_unet(folder)
    assert (loaded.threshold, loaded.min_size, loaded.name) == (0.4, 3, "m")
    img, _ = synthetic((48, 48))
    assert np.array_equal(U.predict_probability(loaded.model, img), U.predict_probability(model, img))
    with pytest.raises(FileNotFoundError):
        U.load_unet(tmp_path / "missing")


def test_segmenter_table_and_its_overrides(tmp_path, monkeypatch):
    from core.segmentation import segmenters as S
    from core.segmentation.contours import PARAMS

    monkeypatch.delenv("BIOCODEC_MEMBRANES", raising=False)
    monkeypatch.delenv("BIOCODEC_SEGMENTERS", raising=False)
    assert S.membranes_in_use() == S.DEFAULT_MEMBRANES
    assert S.segmenters_in_use() == S.DEFAULT_SEGMENTERS
    monkeypatch.setenv("BIOCODEC_MEMBRANES", "sato")  # the classical detector everywhere
    assert S.membrane_detector_for(ISBI) is PARAMS[ISBI]
    assert S.membrane_detector_for(EPFL) is PARAMS[EPFL]
    assert S.membrane_detector_for("monuseg") is None
    folder = write_model(tmp_path / "m", tiny())
    monkeypatch.setenv("BIOCODEC_MEMBRANES", f"{ISBI}={folder}")
    detector = S.membrane_detector_for(ISBI)
    assert isinstance(detector, U.TrainedUNet) and detector.name == "m"
    (folder / "train.log").write_text("step 1")
    (folder / "accuracy.json").write_text("{}")
    files = S.segmenter_files(ISBI)  # hashed into metrics_version: what the model computes, not reports about it
    assert {p.name for p in files} == {U.WEIGHTS_FILE, U.META_FILE}
    assert f"{ISBI}/0" in S.training_images(ISBI)
    for bogus, message in (("monuseg=x", "no membrane task"), ("isbi2012_em", "DATASET=MODEL")):
        monkeypatch.setenv("BIOCODEC_MEMBRANES", bogus)
        with pytest.raises(ValueError, match=message):
            S.membranes_in_use()
    fg = write_model(tmp_path / "fg", tiny(), datasets=(EPFL,), target="foreground")
    monkeypatch.setenv("BIOCODEC_MEMBRANES", f"{EPFL}={fg}")
    with pytest.raises(ValueError, match="not a U-Net membrane model"):
        S.membrane_detector_for(EPFL)


def test_foreground_unet_is_an_object_segmenter_whose_objects_are_components(tmp_path, monkeypatch):
    from skimage.measure import label

    from core.segmentation import evaluator_for
    from core.segmentation import segmenters as S

    fg = write_model(tmp_path / "fg", tiny(3), datasets=(EPFL,), threshold=0.5, min_size=1, target="foreground")
    monkeypatch.setenv("BIOCODEC_SEGMENTERS", f"{EPFL}={fg}")
    monkeypatch.setenv("BIOCODEC_MEMBRANES", "sato")
    seg = S.object_segmenter_for(EPFL)
    assert seg.kind == "unet"
    img, _ = synthetic((64, 80), seed=2)
    labels = seg.labels(img)
    mask = U.detect_mask(img, seg.model)
    assert labels.dtype == np.int32 and labels.shape == img.shape
    assert np.array_equal(labels > 0, mask) and labels.max() == label(mask, connectivity=2).max()
    ev = evaluator_for(EPFL)
    out = ev.segment(img)
    assert np.array_equal(out["labels"], labels) and out["contours"] is not None
    assert ev.name == f"{fg} + Sato membrane detector"
    membranes = write_model(tmp_path / "mem", tiny(), datasets=(EPFL,))
    monkeypatch.setenv("BIOCODEC_SEGMENTERS", f"{EPFL}={membranes}")
    with pytest.raises(ValueError, match="not an object segmenter"):
        S.object_segmenter_for(EPFL)


def test_foreground_training_pairs_and_dice_validation():
    from core.segmentation.train_unet import dice_scores, training_pairs

    gt = np.zeros((32, 32), bool)
    gt[8:20, 8:20] = True
    prob = np.where(gt, 0.7, 0.1).astype(np.float32)
    scores = dice_scores([prob], [gt], thresholds=(0.5, 0.8), min_size=1)
    assert scores == {0.5: 1.0, 0.8: 0.0}
    with pytest.raises(ValueError, match="unknown target"):
        training_pairs([EPFL], "train", "nuclei")


def test_evaluator_and_cli_use_the_chosen_detector(tmp_path, monkeypatch):
    from PIL import Image

    import core.segmentation as segmentation
    from core.segmentation import DownstreamEvaluator
    from core.segmentation.__main__ import evaluate_folder
    from core.segmentation.contours import cells_from_membranes, contours_of

    img, mem = synthetic((64, 64), seed=6)
    detector = U.load_unet(write_model(tmp_path / "m", tiny(), threshold=0.5, min_size=1))
    ev = DownstreamEvaluator(ISBI, membranes=detector)
    seg = ev.segment(img)
    assert np.array_equal(seg["foreground"], U.detect_mask(img, detector))
    assert np.array_equal(seg["contours"], contours_of(seg["foreground"]))
    assert np.array_equal(seg["labels"], cells_from_membranes(seg["foreground"]))  # the cells they enclose
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(img).save(tmp_path / "img" / "a.png")
    Image.fromarray(np.where(mem, 0, 255).astype(np.uint8)).save(tmp_path / "lab" / "a.png")
    monkeypatch.setattr(segmentation, "object_f1", lambda a, b, t: 0.5)  # the cells' F1 (numba JIT, slow) is not tested here
    res = evaluate_folder("isbi_membranes", tmp_path / "img", tmp_path / "lab", membranes=str(tmp_path / "m"))
    assert res["segmenter"] == "U-Net membrane detector m" and res["images"] == 1
    assert res["boundary_f1"] is not None and res["hd95_px"] is not None
    sato = evaluate_folder("isbi_membranes", tmp_path / "img", tmp_path / "lab", membranes="sato")
    assert sato["segmenter"] == "Sato membrane detector"


SHIPPED = U.resolve_model_folder(U.DEFAULT_MODEL_NAME)
#: shipped U-Net → (its dataset, its target, catalog ids of that dataset's test split, which it must never have seen)
SHIPPED_UNETS = {"unet-membranes-isbi": (ISBI, "membranes", {f"{ISBI}/{k}" for k in range(20, 30)}),
                 **{name: (EPFL, target, {f"{EPFL}/training{k:04d}" for k in (24, 28, 61, 62, 63, 105, 161, 162, 163, 164)})
                    for name, target in (("unet-mito-epfl", "foreground"), ("unet-membranes-epfl", "membranes"))}}


@pytest.mark.parametrize("name", sorted(SHIPPED_UNETS))
def test_shipped_unets_are_small_load_weights_only_and_never_saw_a_test_image(name):
    dataset, target, test_ids = SHIPPED_UNETS[name]
    folder = U.resolve_model_folder(name)
    assert (folder / U.WEIGHTS_FILE).stat().st_size <= 2.5e6
    torch.load(folder / U.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    det = U.load_unet(name)
    assert 0 < det.threshold < 1 and det.meta["datasets"] == [dataset]
    assert det.meta.get("target", "membranes") == target
    assert det.meta["training_images"] and not set(det.meta["training_images"]) & test_ids


def _isbi_test_pair():
    try:
        from core.segmentation.data import membrane_pairs

        pairs = membrane_pairs(ISBI, ("test",))
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"ISBI test split unavailable: {exc}")
    return pairs[0]


@pytest.mark.skipif(not (SHIPPED / U.WEIGHTS_FILE).is_file(), reason="no shipped U-Net membrane model")
def test_shipped_model_beats_trivial_baseline_on_isbi_test_crop():
    from core.segmentation.contours import contours_of
    from core.segmentation.metrics import boundary_f1

    _ref, pixels, gt = _isbi_test_pair()
    pixels, gt = pixels[:256, :256], gt[:256, :256]
    det = U.load_unet(U.DEFAULT_MODEL_NAME)
    gt_c = contours_of(gt)
    unet = boundary_f1(gt_c, contours_of(U.detect_mask(pixels, det)), 2.0)
    dark = pixels < np.percentile(pixels, 100 * gt.mean())  # as many darkest pixels as there are membrane pixels
    trivial = boundary_f1(gt_c, contours_of(dark), 2.0)
    assert unet > max(0.75, trivial + 0.1)


@pytest.mark.skipif(not (U.resolve_model_folder("unet-mito-epfl") / U.WEIGHTS_FILE).is_file(), reason="no shipped model")
def test_shipped_mitochondria_unet_on_a_held_out_epfl_slice():
    """The runner's EPFL object segmenter on test slice training0164 (measured: object F1 0.759, Dice 0.789 by
    ``python -m core.segmentation accuracy epfl_mito``; the StarDist model it replaced: 0.61 / 0.75)."""
    from core.segmentation.data import instance_pairs
    from core.segmentation.metrics import dice, object_f1
    from core.segmentation.segmenters import load_object_segmenter

    try:
        pairs = [p for p in instance_pairs(EPFL, ("test",)) if p[0].image_id == "training0164"]
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"EPFL test split unavailable: {exc}")
    (_ref, pixels, gt), = pairs
    labels = load_object_segmenter("unet-mito-epfl").labels(pixels)
    assert labels.shape == pixels.shape and labels.dtype == np.int32
    assert object_f1(gt, labels, 0.5) >= 0.70 and dice(gt > 0, labels > 0) >= 0.75


def test_blur_max_pool_halves_keeps_constants_and_is_smoother_under_shifts():
    x = torch.full((1, 3, 16, 12), 0.7)
    assert torch.allclose(U.blur_max_pool(x), torch.full((1, 3, 8, 6), 0.7))
    # a one-pixel line crossing a pooling-cell border: plain 2×2 max-pooling jumps it a whole output row,
    # the blurred pooling moves it by half a row (outputs close under the 1-px shift)
    line = torch.zeros(1, 1, 16, 16)
    line[..., 7, :] = 1.0
    moved = torch.roll(line, 1, dims=2)
    plain = torch.nn.functional.max_pool2d
    assert (plain(line, 2) - plain(moved, 2)).abs().max() == 1.0
    assert (U.blur_max_pool(line) - U.blur_max_pool(moved)).abs().max() <= 0.5
    with pytest.raises(ValueError, match="pooling"):
        U.build_unet(pooling="avg")


def test_blurmax_unet_takes_max_pooling_weights_and_fine_tunes_from_them(tmp_path, monkeypatch):
    from core.segmentation import train_unet as T

    img, mem = synthetic((64, 64))
    base = write_model(tmp_path / "base", tiny(3), threshold=0.5, min_size=1)
    meta = json.loads((base / U.META_FILE).read_text())
    meta.update(architecture={"base": 4, "depth": 4, "max_channels": 8}, target="membranes",
                datasets=[ISBI], training_images=[f"{ISBI}/train-volume-00"], steps=7)
    (base / U.META_FILE).write_text(json.dumps(meta))
    pairs = [(type("Ref", (), {"dataset": ISBI, "image_id": f"s{i}", "crop": None})(), img, mem) for i in range(2)]
    monkeypatch.setattr(T, "training_pairs", lambda datasets, split, target, data_root=None: pairs)
    monkeypatch.setattr("core.catalog.catalog_id", lambda ref, *a: f"{ref.dataset}/{ref.image_id}")
    out = T.train([ISBI], tmp_path / "aa", minutes=5, base=4, max_channels=8, crop=32, batch=2, max_steps=2,
                  pooling="blurmax", init=base, lr=1e-4, val_minutes=100, snapshot_minutes=100, min_size=1)
    assert out["architecture"]["pooling"] == "blurmax" and out["init"]["model"] == "base" and out["steps"] == 2
    assert f"{ISBI}/train-volume-00" in out["training_images"] and out["lr"] == [1e-4, 3e-5]
    loaded = U.load_unet(tmp_path / "aa")
    assert U.predict_probability(loaded.model, img).shape == img.shape
    # a second call resumes from the snapshot (read with weights_only=True: tensors, numbers, the numpy RNG state)
    again = T.train([ISBI], tmp_path / "aa", minutes=5, base=4, max_channels=8, crop=32, batch=2, max_steps=3,
                    pooling="blurmax", init=base, lr=1e-4, val_minutes=100, snapshot_minutes=100, min_size=1)
    assert again["steps"] == 3 and "resumed from" in (tmp_path / "aa" / "train.log").read_text()
    with pytest.raises(ValueError, match="not 'foreground'"):
        T.train([ISBI], tmp_path / "fg", minutes=5, base=4, max_channels=8, target="foreground", init=base,
                max_steps=1)


def test_shipped_unets_agree_with_themselves_under_a_one_pixel_shift():
    """The anti-aliased (blurmax) U-Nets on held-out slices: segmentation of the image vs of the image shifted by
    1 px and shifted back, as ``python -m core.segmentation noise-floor`` (data/models/noise_floor.json measured
    ISBI slice 20 with the ISBI model's 2×2 phase average: membrane Dice 0.992, cell F1 0.989, boundary F1 0.994
    (one pass: 0.985 / 0.966 / 0.991); EPFL training0164: mitochondria Dice 0.996; the max-pooling models:
    0.971 / 0.980 means)."""
    from core.segmentation import noise_floor as nf
    from core.segmentation.data import instance_pairs
    from core.segmentation.metrics import dice

    _ref, pixels, _gt = _isbi_test_pair()
    evaluator = nf.evaluator_for(ISBI)
    moved = nf.unshift_segmentation(evaluator.segment(nf.shift(pixels)))
    isbi = nf.agreement(evaluator.segment(pixels), moved, border=1)
    assert U.load_unet("unet-membranes-isbi").phases == 2
    assert isbi["dice"] >= 0.99 and isbi["f1"] >= 0.98 and isbi["boundary_f1"] >= 0.99

    try:
        (_ref, pixels, _gt), = [p for p in instance_pairs(EPFL, ("test",)) if p[0].image_id == "training0164"]
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"EPFL test split unavailable: {exc}")
    mito = U.load_unet("unet-mito-epfl")
    assert mito.meta["architecture"]["pooling"] == "blurmax"
    a, b = U.detect_mask(pixels, mito), nf.unshift(U.detect_mask(nf.shift(pixels), mito))
    assert dice(nf.interior(a), nf.interior(b)) >= 0.99


def _two_cells_with_a_gap():
    """A 40×60 membrane mask: a frame, a wall splitting it into two 36×27-px cells with a 2-px gap in it, and a
    2-px pocket walled in inside the left cell (what a detector's mask looks like; the truth has no gap)."""
    mem = np.zeros((40, 60), bool)
    mem[:2, :] = mem[-2:, :] = mem[:, :2] = mem[:, -2:] = True
    mem[:, 29:31] = True
    mem[19:21, 29:31] = False  # the gap
    mem[8:12, 8:11] = True
    mem[9:11, 9] = False  # the 2-px pocket (4-connected: a cell of its own)
    return mem


def test_cell_rule_splits_cells_joined_by_a_gap_and_drops_pockets():
    from core.segmentation.contours import CellRule, cells_from_membranes

    mem = _two_cells_with_a_gap()
    plain = cells_from_membranes(mem)
    assert plain.max() == 2 and sorted(np.bincount(plain.ravel())[1:]) == [2, 1936]  # merged through the gap
    assert np.array_equal(CellRule().cells(mem), plain)  # the default rule is the plain one (ground truth's)
    ruled = CellRule(min_area=10, seed_px=3).cells(mem)
    sizes = sorted(np.bincount(ruled.ravel())[1:])
    assert ruled.max() == 2 and sizes[0] > 900 and sum(sizes) == 1936  # two cells, the gap split between them
    assert ruled[20, 10] != ruled[20, 50] and ruled[9, 9] == 0 and not ruled[mem].any()
    assert ruled.dtype == np.int32


def test_tune_objects_picks_on_val_what_makes_objects_match(tmp_path, monkeypatch):
    """``--tune-objects``: min_size of a foreground model, the cell rule of an ISBI membrane model; chosen on val
    (the test split is never read), written into biocodec.json and used by the evaluator."""
    import core.segmentation.data as D
    from core.segmentation import DownstreamEvaluator
    from core.segmentation.contours import CellRule, cells_from_membranes
    from core.segmentation.train_unet import tune_objects

    class Ref:
        def __init__(self, dataset, kind):
            self.dataset, self.label_kind, self.image_id = dataset, kind, "v"

    splits = []
    gt_objects = np.zeros((64, 64), np.int32)
    gt_objects[5:25, 5:25] = 1  # 400 px; the prediction adds a 100-px false object
    mem = _two_cells_with_a_gap()
    truth = mem.copy()
    truth[19:21, 29:31] = True
    truth[9:11, 9] = True
    pairs = {EPFL: [(Ref(EPFL, "binary_mask"), np.zeros((64, 64), np.uint8), gt_objects)],
             ISBI: [(Ref(ISBI, "membrane_label"), np.zeros((40, 60), np.uint8), cells_from_membranes(truth))]}

    def fake_pairs(dataset, split, data_root=None):
        splits.append(split)
        return pairs[dataset]

    prob_fg = np.zeros((64, 64), np.float32)
    prob_fg[5:25, 5:25] = prob_fg[40:50, 40:50] = 0.9
    monkeypatch.setattr(D, "instance_pairs", fake_pairs)
    monkeypatch.setattr(U, "predict_probability", lambda model, px, phases=1: prob_fg if px.shape == (64, 64) else mem * 0.9)

    mito = write_model(tmp_path / "mito", tiny(), datasets=(EPFL,), min_size=64, target="foreground")
    meta = tune_objects(mito, log=lambda _m: None)
    assert meta["min_size"] == 150 and meta["val_object_f1"] == 1.0 and U.load_unet(mito).min_size == 150
    membranes = write_model(tmp_path / "isbi", tiny(), datasets=(ISBI,), min_size=1)
    meta = tune_objects(membranes, log=lambda _m: None)
    assert meta["val_cells_f1"] == 1.0 and meta["cells"]["seed_px"] > 0 and meta["cells"]["min_area"] > 2
    detector = U.load_unet(membranes)
    assert detector.cell_rule == CellRule(**meta["cells"])
    seg = DownstreamEvaluator(ISBI, membranes=detector).segment(np.zeros((40, 60), np.uint8))
    assert np.array_equal(seg["labels"], detector.cell_rule.cells(mem)) and seg["labels"].max() == 2
    assert set(splits) == {("val",)}
    with pytest.raises(ValueError, match="membrane-label"):  # EPFL's truth has no cells
        tune_objects(write_model(tmp_path / "epflm", tiny(), datasets=(EPFL,), min_size=1), log=lambda _m: None)
