"""``python -m core.segmentation evaluate`` on tiny folders cut from real test images, its input errors,
and the noise-floor building blocks (core/segmentation/noise_floor.py) on synthetic arrays."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from core.paths import REPO_ROOT, data_root
from core.segmentation import __main__ as cli
from core.segmentation import noise_floor as nf

CROP = 256
#: KIND → the catalog dataset whose first 2 test images the folders are cut from
CASES = {"monuseg": "monuseg", "epfl_mito": "epfl_hippocampus_fibsem", "isbi_membranes": "isbi2012_em"}


# --------------------------------------------------------------------------- tiny folders from real data


def _window(fg: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of a size² window centred on the foreground's centre of mass (clamped)."""
    h, w = fg.shape
    ys, xs = np.nonzero(fg)
    cy, cx = (int(ys.mean()), int(xs.mean())) if len(ys) else (h // 2, w // 2)
    return min(max(cy - size // 2, 0), h - size), min(max(cx - size // 2, 0), w - size)


def _write_png(path, array):
    import imagecodecs

    path.write_bytes(bytes(imagecodecs.png_encode(np.ascontiguousarray(array))))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{KIND: (images_dir, masks_dir, [(pixels, raw mask)])}: 2 catalog test images of each kind, cropped to
    256² around their ground truth, as PNG (masks as stored: uint16 instances, 0/255 mito, ISBI labels)."""
    from core.catalog import split_refs
    from core.datasets import load_ref
    from core.io import read_label
    from core.segmentation import _crop

    out = {}
    for kind, dataset in CASES.items():
        if not (data_root() / dataset).is_dir():
            pytest.skip(f"shared data {data_root() / dataset} is absent (fetch: python -m core.datasets fetch {dataset})")
        base = tmp_path_factory.mktemp(kind)
        (base / "images").mkdir()
        (base / "masks").mkdir()
        arrays = []
        for ref in split_refs(dataset, ("test",))[:2]:
            pixels = load_ref(ref).pixels
            mask = _crop(read_label(ref.ground_truth), ref.crop)
            fg = mask < 128 if kind == "isbi_membranes" else mask > 0
            y, x = _window(fg, CROP)
            pixels, mask = pixels[y:y + CROP, x:x + CROP], mask[y:y + CROP, x:x + CROP]
            if kind == "monuseg":
                mask = mask.astype(np.uint16)
            _write_png(base / "images" / f"{ref.image_id}.png", pixels)
            _write_png(base / "masks" / f"{ref.image_id}.png", mask)
            arrays.append((pixels, mask))
        out[kind] = (base / "images", base / "masks", arrays)
    return out


def _expected(kind: str, arrays) -> dict:
    """Mean object F1 / Dice / boundary F1 computed directly with the library's segmenter and metrics."""
    from skimage.measure import label

    from core.segmentation.contours import cells_from_membranes, contours_of
    from core.segmentation.metrics import boundary_f1, dice, object_f1

    evaluator = nf.evaluator_for(CASES[kind], contours=kind == "isbi_membranes")
    f1s, dices, bf1s, segments = [], [], [], []
    for pixels, mask in arrays:
        seg = evaluator.segment(pixels)
        segments.append(seg)
        if kind == "monuseg":
            gt_labels, gt_fg = mask.astype(np.int32), mask > 0
        elif kind == "epfl_mito":
            gt_labels = label(mask >= 128, connectivity=2)
            gt_fg = gt_labels > 0
        else:
            gt_fg = mask < 128
            gt_labels = cells_from_membranes(gt_fg)
            bf1s.append(boundary_f1(contours_of(gt_fg), seg["contours"], 2.0))
        f1s.append(object_f1(gt_labels, seg["labels"], 0.5))
        dices.append(dice(gt_fg, seg["foreground"]))
    return {"f1": np.mean(f1s), "dice": np.mean(dices), "boundary_f1": np.mean(bf1s) if bf1s else None,
            "segments": segments}


def _run_json(capsys, *argv) -> dict:
    assert cli.main(["evaluate", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("kind", list(CASES))
def test_evaluate_matches_library_and_perfect_masks_score_one(kind, folders, capsys, tmp_path):
    images, masks, arrays = folders[kind]
    got = _run_json(capsys, kind, images, masks)
    want = _expected(kind, arrays)
    assert got["images"] == 2 and len(got["per_image"]) == 2
    assert got["f1"] == pytest.approx(want["f1"], abs=1e-12)
    assert got["dice"] == pytest.approx(want["dice"], abs=1e-12)
    if kind == "isbi_membranes":
        assert got["boundary_f1"] == pytest.approx(want["boundary_f1"], abs=1e-12)
    else:
        assert got["boundary_f1"] is None
    assert 0 < got["dice"] < 1  # a real segmenter on real labels is not perfect

    # the segmenter's own output written as the masks: perfect scores
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    for path, seg in zip(sorted(images.iterdir()), want["segments"]):
        if kind == "monuseg":
            mask = seg["labels"].astype(np.uint16)
        elif kind == "epfl_mito":
            mask = np.where(seg["foreground"], 255, 0).astype(np.uint8)
        else:
            mask = np.where(seg["foreground"], 0, 255).astype(np.uint8)  # ISBI labels: 0 = membrane
        _write_png(perfect / path.name, mask)
    same = _run_json(capsys, kind, images, perfect)
    assert same["dice"] == 1.0
    if kind == "monuseg":  # a 0/255 mask merges touching instances (EPFL); an instance mask does not
        assert same["f1"] == 1.0
    if kind == "isbi_membranes":  # the truth's cells are the plain components of the mask, the detector's follow
        from core.segmentation.contours import cells_from_membranes  # its cell rule (gaps split, pockets dropped)
        from core.segmentation.metrics import object_f1

        assert same["f1"] == pytest.approx(np.mean([object_f1(cells_from_membranes(seg["foreground"]), seg["labels"], 0.5)
                                                    for seg in want["segments"]]), abs=1e-12)
    if kind == "isbi_membranes":
        assert same["boundary_f1"] == 1.0


def test_evaluate_human_line(folders, capsys):
    images, masks, _ = folders["isbi_membranes"]
    assert cli.main(["evaluate", "isbi_membranes", str(images), str(masks)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line.startswith("isbi_membranes (U-Net membrane detector unet-membranes-isbi): "
                                                 "2 image(s); object F1")
    assert "boundary F1 @ 2 px 0." in line


# --------------------------------------------------------------------------- input errors


def _err(capsys, *argv) -> str:
    assert cli.main(list(map(str, argv))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_input_errors_are_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    assert "no such folder" in _err(capsys, "evaluate", "monuseg", tmp_path / "nope", tmp_path / "msk")
    assert "MASKS_DIR" in _err(capsys, "evaluate", "monuseg", tmp_path / "img", tmp_path / "nope")
    assert "no images" in _err(capsys, "evaluate", "monuseg", tmp_path / "img", tmp_path / "msk")
    assert "unknown KIND 'cells'" in _err(capsys, "evaluate", "cells", tmp_path / "img", tmp_path / "msk")
    tiny = np.zeros((8, 8), np.uint8)
    for name in ("a", "b", "c"):
        _write_png(tmp_path / "img" / f"{name}.png", tiny)
    _write_png(tmp_path / "msk" / "a.png", tiny)
    _write_png(tmp_path / "msk" / "z.png", tiny)
    (tmp_path / "img" / "notes.txt").write_text("not an image")  # ignored
    err = _err(capsys, "evaluate", "epfl_mito", tmp_path / "img", tmp_path / "msk")
    assert "images without a mask: b, c" in err and "masks without an image: z" in err


def test_module_entry_point_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core.segmentation", "evaluate", "nuclei", str(tmp_path), str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown KIND 'nuclei'")


# --------------------------------------------------------------------------- noise floor building blocks


def test_add_noise_rounds_clips_and_is_seeded():
    x = np.full((200, 200), 100, np.uint8)
    x[:, :10], x[:, -10:] = 0, 255
    a = nf.add_noise(x, 0.5, nf.image_rng("ds/img"))
    assert a.dtype == np.uint8 and np.array_equal(a, nf.add_noise(x, 0.5, nf.image_rng("ds/img")))
    assert not np.array_equal(a, nf.add_noise(x, 0.5, nf.image_rng("ds/other")))
    changed = (a != x)[:, 10:-10].mean()
    assert changed == pytest.approx(0.317, abs=0.02)  # P(|N(0, 0.5²)| > 0.5)
    assert np.abs(a.astype(int) - x).max() <= 3 and a[:, :10].min() == 0 and a[:, -10:].max() == 255
    twelve = nf.add_noise(np.full((50, 50), 4095, np.uint16), 0.5, nf.image_rng("x"), bit_depth=12)
    assert twelve.dtype == np.uint16 and twelve.max() == 4095 and twelve.min() >= 4093
    rgb = nf.add_noise(np.full((20, 20, 3), 9, np.uint8), 0.5, nf.image_rng("x"))
    assert rgb.shape == (20, 20, 3)


def test_shift_and_unshift():
    a = np.arange(5 * 6 * 3).reshape(5, 6, 3)
    s = nf.shift(a)
    assert s.shape == a.shape and np.array_equal(s[1:, 1:], a[:-1, :-1]) and np.array_equal(s[0, 1:], a[0, :-1])
    back = nf.unshift(s)
    assert np.array_equal(nf.interior(back), nf.interior(a))
    assert nf.interior(np.zeros((5, 6)), 1).shape == (3, 4) and nf.interior(None) is None


class _Threshold:
    """A translation-equivariant segmenter: foreground = pixels > 128, instances = its components."""

    def segment(self, pixels):
        from skimage.measure import label

        from core.segmentation.contours import contours_of

        fg = np.asarray(pixels) > 128
        return {"labels": label(fg).astype(np.int32), "foreground": fg, "contours": contours_of(fg)}


def test_image_floor_aligns_the_shift_back():
    rng = np.random.default_rng(0)
    image = np.full((120, 140), 60, np.uint8)
    for cy, cx in rng.integers(15, 105, size=(8, 2)):
        yy, xx = np.ogrid[:120, :140]
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 200
    floor = nf.image_floor(_Threshold(), image, nf.image_rng("t"))
    assert floor["shift"] == {"dice": 1.0, "f1": 1.0, "boundary_f1": 1.0}  # exact after shifting back
    assert floor["noise"] == {"dice": 1.0, "f1": 1.0, "boundary_f1": 1.0}  # ±1 grey level cannot cross 128 here
    near = image.copy()
    near[near == 200] = 129  # now noise flips pixels across the threshold
    noisy = nf.image_floor(_Threshold(), near, nf.image_rng("t"))["noise"]
    assert noisy["dice"] < 1.0
    # no unshift: a 1-px misalignment is visible in the interior
    seg = _Threshold()
    moved = seg.segment(nf.shift(image))
    assert nf.agreement(seg.segment(image), moved, border=1)["dice"] < 0.95


def test_summary_write_and_read(tmp_path):
    per_image = [{"image_id": "a", "noise": {"dice": 0.9, "f1": 1.0, "boundary_f1": None},
                  "shift": {"dice": 0.8, "f1": 0.5, "boundary_f1": None}},
                 {"image_id": "b", "noise": {"dice": 1.0, "f1": 0.8, "boundary_f1": None},
                  "shift": {"dice": 0.9, "f1": 0.7, "boundary_f1": None}}]
    summary = nf.summarize(per_image)
    assert summary["noise"]["dice"] == {"mean": pytest.approx(0.95), "min": 0.9}
    assert "boundary_f1" not in summary["shift"]
    out = tmp_path / "floor.json"
    nf.write_noise_floor({"ds": {"images": 2, **summary, "per_image": per_image}}, out, command="cmd A")
    nf.write_noise_floor({"ds2": {"images": 1, **summary}}, out, command="cmd B")
    doc = json.loads(out.read_text())
    assert doc["command"] == "cmd B" and doc["datasets"]["ds"]["command"] == "cmd A"
    floors = nf.load_noise_floor(out)
    assert nf.floor_value(floors, "ds") == pytest.approx(0.95)
    assert nf.floor_value(floors, "ds2", "f1", "shift", "min") == 0.5
    assert nf.floor_value(floors, "none") is None and nf.load_noise_floor(tmp_path / "absent.json") == {}


def test_stored_noise_floor_file():
    """data/models/noise_floor.json (python -m core.segmentation noise-floor) covers the three test splits."""
    floors = nf.load_noise_floor()
    if not floors:
        pytest.skip("data/models/noise_floor.json not generated yet")
    for dataset, images in (("epfl_hippocampus_fibsem", 10), ("isbi2012_em", 10), ("monuseg", 7)):
        entry = floors[dataset]
        assert entry["images"] == images == len(entry["per_image"]) and entry["split"] == "test"
        assert entry["command"].startswith("python -m core.segmentation noise-floor") and entry["date"]
        assert entry["sigma"] == 0.5 and entry["shift_px"] == 1
        for pert in ("noise", "shift"):
            for metric in ("dice", "f1") + (("boundary_f1",) if dataset != "monuseg" else ()):
                stats = entry[pert][metric]
                assert 0 <= stats["min"] <= stats["mean"] <= 1
        # measured with the segmenters in use now (data/segmenters.toml): same names, same model files
        current = nf.segmenter_info(dataset)
        for key in ("object_segmenter", "membrane_detector", "model_sha256"):
            assert entry["segmenter"][key] == current[key], (dataset, key)
    assert floors["monuseg"]["segmenter"]["model_sha256"]


def test_noise_floor_cli_measures_another_split_only_into_another_file(monkeypatch, tmp_path, capsys):
    """``noise-floor --split val`` (choosing between segmenters without the test split) never overwrites the
    shipped test-split file, and passes the split to the measurement."""
    from core.segmentation import __main__ as cli

    seen = []

    def fake_measure(dataset, data_root=None, split="test", seed=nf.SEED, max_images=None, progress=None):
        seen.append((dataset, split))
        return {"split": split, "images": 1, "segmenter": {}, "noise": {"dice": {"mean": 0.99, "min": 0.99}},
                "shift": {"dice": {"mean": 0.97, "min": 0.97}}, "per_image": []}

    monkeypatch.setattr(nf, "measure", fake_measure)
    assert cli.main(["noise-floor", "--datasets", "monuseg", "--split", "val"]) == 2
    assert "holds the test split's noise floor" in capsys.readouterr().err and seen == []
    out = tmp_path / "val_floor.json"
    assert cli.main(["noise-floor", "--datasets", "monuseg", "--split", "val", "--out", str(out)]) == 0
    assert seen == [("monuseg", "val")] and "monuseg (1 val images)" in capsys.readouterr().out
    assert nf.load_noise_floor(out)["monuseg"]["split"] == "val"


def test_noise_floor_table_names_the_segmenters_each_entry_measured():
    floors = {"isbi2012_em": {"images": 2, "segmenter": {"object_segmenter": None,
                                                          "membrane_detector": "unet-membranes-isbi"},
                              "noise": {"dice": {"mean": 0.99, "min": 0.98}}, "shift": {}},
              "epfl_hippocampus_fibsem": {"images": 3, "segmenter": {"object_segmenter": "unet-mito-epfl",
                                                                     "membrane_detector": "sato"},
                                          "noise": {}, "shift": {"f1": {"mean": 0.97, "min": 0.9}}},
              "monuseg": {"images": 1, "segmenter": {"stardist_model": "monuseg_he"},  # a file of the older format
                          "noise": {"dice": {"mean": 0.9, "min": 0.9}}}}
    rows = nf.floor_table(floors)
    assert [(r["dataset"], r["segmenter"], r["perturbation"], r["metric"], r["mean"]) for r in rows] == [
        ("epfl_hippocampus_fibsem", "unet-mito-epfl + Sato membrane detector", "shift", "f1", 0.97),
        ("isbi2012_em", "unet-membranes-isbi", "noise", "dice", 0.99),
        ("monuseg", "monuseg_he", "noise", "dice", 0.9)]


@pytest.mark.parametrize("kind", ["epfl_mito", "isbi_membranes"])
def test_accuracy_on_a_catalog_split_equals_evaluate_on_the_same_pixels(kind, folders, capsys, monkeypatch):
    """``accuracy KIND --split test`` scores catalog refs (their crops, their ground truth) exactly as ``evaluate``
    scores the same pixels written to folders."""
    import dataclasses

    import core.catalog
    from core.io import read_label

    dataset = CASES[kind]
    refs = []
    for ref in core.catalog.split_refs(dataset, ("test",))[:2]:
        mask = read_label(ref.ground_truth)
        y, x = _window(mask < 128 if kind == "isbi_membranes" else mask > 0, CROP)
        refs.append(dataclasses.replace(ref, crop=(y, x, y + CROP, x + CROP)))
    monkeypatch.setattr(core.catalog, "split_refs", lambda *a, **k: refs)
    assert cli.main(["accuracy", kind, "--split", "test", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    images, masks, _ = folders[kind]
    want = _run_json(capsys, kind, images, masks)
    assert got["split"] == "test" and got["images"] == 2 and got["segmenter"] == want["segmenter"]
    for key in ("f1", "dice", "boundary_f1"):
        assert got[key] == want[key]
    assert [r["image"] for r in got["per_image"]] == [r["image"] for r in want["per_image"]]


def test_noise_floor_datasets_are_the_downstream_datasets():
    from core.provenance import downstream_datasets

    assert nf.DATASETS == downstream_datasets() == ("epfl_hippocampus_fibsem", "isbi2012_em", "monuseg")


def test_metrics_version_follows_segmenters_only_for_downstream_datasets(monkeypatch):
    from core.provenance import metrics_version

    def versions():
        metrics_version.cache_clear()  # cached per process (the environment of a run does not change)
        try:
            return {d: metrics_version(d) for d in ("kodak", "isbi2012_em", "monuseg")}
        finally:
            metrics_version.cache_clear()

    monkeypatch.delenv("BIOCODEC_MEMBRANES", raising=False)
    before = versions()
    monkeypatch.setenv("BIOCODEC_MEMBRANES", "sato")  # ISBI's membranes by another detector: its rows change
    after = versions()
    assert after["isbi2012_em"] != before["isbi2012_em"]
    assert after["kodak"] == before["kodak"] and after["monuseg"] == before["monuseg"]


def test_changing_one_dataset_in_the_segmenter_table_restales_only_its_rows(monkeypatch):
    from core.provenance import metrics_version
    from core.segmentation import segmenters as S

    def versions():
        metrics_version.cache_clear()
        try:
            return {d: metrics_version(d) for d in ("kodak", "epfl_hippocampus_fibsem", "isbi2012_em", "monuseg")}
        finally:
            metrics_version.cache_clear()

    for var in ("BIOCODEC_SEGMENTERS", "BIOCODEC_MEMBRANES"):
        monkeypatch.delenv(var, raising=False)
    before = versions()
    other = "monuseg_he" if S.DEFAULT_SEGMENTERS["monuseg"] != "monuseg_he" else "monuseg_he_121ep"
    monkeypatch.setitem(S.DEFAULT_SEGMENTERS, "monuseg", other)  # = editing [monuseg] in data/segmenters.toml
    after = versions()
    assert after["monuseg"] != before["monuseg"]
    assert {d: v for d, v in after.items() if d != "monuseg"} == {d: v for d, v in before.items() if d != "monuseg"}


@pytest.mark.parametrize("backend,changed", [("stardist", {"monuseg"}),
                                              ("unet", {"epfl_hippocampus_fibsem", "isbi2012_em"})])
def test_changing_one_backends_code_restales_only_the_datasets_using_it(monkeypatch, backend, changed):
    from core import provenance
    from core.segmentation import segmenters as S

    def versions():
        provenance.metrics_version.cache_clear()
        try:
            return {d: provenance.metrics_version(d)
                    for d in ("kodak", "epfl_hippocampus_fibsem", "isbi2012_em", "monuseg")}
        finally:
            provenance.metrics_version.cache_clear()

    for var in ("BIOCODEC_SEGMENTERS", "BIOCODEC_MEMBRANES"):
        monkeypatch.delenv(var, raising=False)
    assert {d: S.backends(d) for d in ("monuseg", "epfl_hippocampus_fibsem", "isbi2012_em", "kodak")} == {
        "monuseg": {"stardist"}, "epfl_hippocampus_fibsem": {"unet"}, "isbi2012_em": {"unet"}, "kodak": set()}
    before = versions()
    sources = dict(provenance.BACKEND_SOURCES)
    sources[backend] = sources[backend] + ("core/segmentation/a_new_file_of_this_backend.py",)
    monkeypatch.setattr(provenance, "BACKEND_SOURCES", sources)
    after = versions()
    assert {d for d in before if after[d] != before[d]} == changed
    monkeypatch.setenv("BIOCODEC_MEMBRANES", "sato")  # ISBI and EPFL membranes by Sato: EPFL still has a U-Net
    assert S.backends("isbi2012_em") == {"sato"} and S.backends("epfl_hippocampus_fibsem") == {"unet", "sato"}


def test_segmenter_table_is_read_from_data_and_refuses_bad_entries(tmp_path):
    from core.paths import SEGMENTERS_TOML
    from core.segmentation import segmenters as S

    table = S.read_table(SEGMENTERS_TOML)
    assert {d: e["objects"] for d, e in table.items() if "objects" in e} == S.DEFAULT_SEGMENTERS
    assert {d: e["membranes"] for d, e in table.items() if "membranes" in e} == S.DEFAULT_MEMBRANES
    for bad in ('[monuseg]\nobject = "monuseg_he"\n', '[monuseg]\nobjects = ""\n', '[monuseg]\n', 'monuseg = "x"\n'):
        path = tmp_path / "segmenters.toml"
        path.write_text(bad)
        with pytest.raises(ValueError, match="must set objects"):
            S.read_table(path)
