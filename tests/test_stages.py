"""Stage definitions and the catalog (data/stages.toml → core.catalog, core.stages): splits, counts,
bit depths, ground truth, crops, sweeps."""
from pathlib import Path

import numpy as np
import pytest

from core import catalog, stages
from core.codecs import available_codecs
from core.datasets import load_ref
from core.stages import StageError, parse_splits, stage_codec_settings, stage_refs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared benchmark data not present at {SHARED}")

# images a stage run holds by default: the test split (Kodak: 8 of 24 by max_images)
EXPECTED_COUNTS = {"imagecompression_info": 13, "kodak": 8, "epfl_hippocampus_fibsem": 10, "isbi2012_em": 10,
                   "monuseg": 7, "mri_grayscale": 18, "brightfield_rgb": 3}
EXPECTED_SPLITS = {"imagecompression_info": (0, 0, 13), "kodak": (0, 0, 24), "epfl_hippocampus_fibsem": (15, 2, 10),
                   "isbi2012_em": (18, 2, 10), "monuseg": (11, 2, 7), "mri_grayscale": (0, 0, 18),
                   "brightfield_rgb": (0, 0, 3)}
EXPECTED_STAGE = {"imagecompression_info": 1, "kodak": 1, "epfl_hippocampus_fibsem": 2, "isbi2012_em": 2,
                  "monuseg": 3, "mri_grayscale": 4, "brightfield_rgb": 4}


def test_definition_has_four_stages_with_notes():
    spec = stages.load_definition()
    assert [str(s["id"]) for s in spec["stages"]] == ["1", "2", "3", "4"]
    names = [d["name"] for s in spec["stages"] for d in s["datasets"]]
    assert sorted(names) == sorted(EXPECTED_COUNTS)
    monuseg = next(d for s in spec["stages"] for d in s["datasets"] if d["name"] == "monuseg")
    assert "JPEG 2000" in monuseg["note"] and all(g["crop_offset"] == [1, 1] for g in monuseg["groups"])


def test_codec_settings_expand_family_rules():
    codecs, sweeps = stage_codec_settings("2")
    assert codecs == available_codecs("classical") + available_codecs("learned") + available_codecs("grain")
    assert "jpeg2000+grain" in codecs and "jpeg2000+grain" not in stage_codec_settings("1")[0]
    assert sweeps["jpeg2000"] == (160, 80, 40, 20, 10, 5)
    assert all(4 <= len(v) <= 6 for k, v in sweeps.items() if not k.startswith("learned"))
    assert sweeps["learned-msssim"] == (1, 3, 5, 7, 9, 11, 13, 16)  # 8 points of the variable-rate knob
    assert stage_codec_settings("all")[0] == codecs
    with pytest.raises(StageError):
        stage_codec_settings("7")


def test_evenly_spaced():
    assert catalog.evenly_spaced(list(range(24)), 8) == [0, 3, 7, 10, 13, 16, 20, 23]
    assert catalog.evenly_spaced([1, 2], 5) == [1, 2]
    assert catalog.evenly_spaced([1, 2, 3], None) == [1, 2, 3]


def test_parse_splits():
    assert parse_splits(None) == ("test",)
    assert parse_splits("all") == ("train", "val", "test")
    assert parse_splits("train, val") == ("train", "val")
    with pytest.raises(StageError):
        parse_splits("holdout")


@needs_shared
def test_every_image_has_exactly_one_split():
    table = {name: tuple(counts[s] for s in catalog.SPLITS) for _, name, counts, status in catalog.split_table(SHARED)}
    assert table == EXPECTED_SPLITS
    for name in EXPECTED_SPLITS:
        refs = catalog.split_refs(name, catalog.SPLITS, SHARED)
        parts = [catalog.split_refs(name, (s,), SHARED) for s in catalog.SPLITS]
        assert sorted(r.image_id for r in refs) == sorted(r.image_id for p in parts for r in p)


@needs_shared
def test_epfl_test_slices_are_spread_and_away_from_training_slices():
    def z(ref):
        return int(ref.image_id.removeprefix("training"))

    test = [z(r) for r in catalog.split_refs("epfl_hippocampus_fibsem", ("test",), SHARED)]
    seen = [z(r) for r in catalog.split_refs("epfl_hippocampus_fibsem", ("train", "val"), SHARED)]
    assert len(test) >= 8 and max(test) - min(test) >= 100  # spread over the 165-slice volume
    assert min(abs(t - s) for t in test for s in seen) >= 7  # >= 35 nm from anything a model trained on
    isbi = [r.image_id for r in catalog.split_refs("isbi2012_em", ("test",), SHARED)]
    assert isbi == [str(i) for i in range(20, 30)]
    monuseg_test = catalog.split_refs("monuseg", ("test",), SHARED)
    assert {Path(r.source).parts[-3] for r in monuseg_test} == {"test"}


def test_unknown_dataset_or_split_is_a_clear_error():
    with pytest.raises(catalog.CatalogError, match="unknown dataset"):
        catalog.split_refs("nope", ("train",))
    with pytest.raises(catalog.CatalogError, match="unknown split"):
        catalog.split_refs("kodak", ("holdout",))


@needs_shared
def test_all_stages_resolve_on_shared_data():
    refs = stage_refs("all", SHARED)
    counts = {}
    for ref in refs:
        counts[ref.dataset] = counts.get(ref.dataset, 0) + 1
        assert ref.stage == EXPECTED_STAGE[ref.dataset]
        assert Path(ref.source).is_file()
    assert counts == EXPECTED_COUNTS
    assert all(r.split == "test" for r in refs)
    assert len({(r.dataset, r.image_id) for r in refs}) == len(refs)
    every = stage_refs("2", SHARED, splits=catalog.SPLITS)
    assert [r.dataset for r in every].count("epfl_hippocampus_fibsem") == 27
    assert {r.split for r in every} == {"train", "val", "test"}


@needs_shared
def test_ground_truth_crops_and_bit_depths():
    by_id = {(r.dataset, r.image_id): r for r in stage_refs("all", SHARED, splits=catalog.SPLITS)}
    epfl = by_id[("epfl_hippocampus_fibsem", "training0164")]
    assert epfl.ground_truth.endswith("epfl_hippocampus_fibsem/train/mitochondrion/training0164.png")
    assert epfl.membranes.endswith("epfl_hippocampus_fibsem/train/membranes/training0164.png")
    assert epfl.label_kind == "binary_mask" and epfl.split == "test"
    isbi = [r for r in by_id.values() if r.dataset == "isbi2012_em"]
    assert all(Path(r.ground_truth).parent.name == "label" and Path(r.ground_truth).stem == r.image_id for r in isbi)
    assert [r.image_id for r in isbi][:3] == ["0", "1", "2"]  # natural order
    assert {r.label_kind for r in isbi} == {"membrane_label"}
    monuseg = [r for r in by_id.values() if r.dataset == "monuseg"]
    assert all(r.crop == (1, 1, 1000, 1000) and "instance_masks" in r.ground_truth for r in monuseg)
    assert {Path(r.source).parts[-3] for r in monuseg} == {"train", "test"}
    assert by_id[("monuseg", "TCGA-E2-A1B5-01Z-00-DX1")].split == "val"
    image = load_ref(monuseg[0])
    assert image.pixels.shape == (999, 999, 3) and image.bit_depth == 8

    brain = sorted((r for r in by_id.values() if r.image_id.startswith("brain_p")), key=lambda r: r.page)
    assert [r.page for r in brain] == list(range(10))
    page = load_ref(brain[6])
    assert page.bit_depth == 16 and page.pixels.shape == (256, 256) and int(page.pixels.max()) == 51076
    msd = load_ref(by_id[("mri_grayscale", "msd_brain_04")])
    assert msd.bit_depth == 12 and int(msd.pixels.max()) == 2131

    spider = by_id[("imagecompression_info", "gray8bit_spider_web")]
    assert spider.crop == (912, 1616, 1936, 2640)  # centred 1024² of 2848×4256
    assert load_ref(spider).pixels.shape == (1024, 1024)
    deep = load_ref(by_id[("imagecompression_info", "gray16bit_linear_flower_foveon")])
    assert deep.bit_depth == 16 and deep.pixels.dtype == np.uint16
    rgb = load_ref(by_id[("imagecompression_info", "rgb8bit_artificial")])
    assert rgb.channels == 3


def _fake_kodak(root: Path, n: int) -> None:
    from PIL import Image

    (root / "kodak").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "kodak" / f"kodim{i:02d}.png")


def test_partial_root_skips_missing_datasets_and_runner_works(tmp_path, capsys):
    _fake_kodak(tmp_path, 3)
    refs = stage_refs("1", tmp_path)
    assert [r.image_id for r in refs] == ["kodim01", "kodim02", "kodim03"]
    assert "imagecompression_info" in capsys.readouterr().err  # said what was skipped
    with pytest.raises(StageError):
        stage_refs("2", tmp_path)  # nothing of stage 2 there

    from core import runner, store

    db = tmp_path / "r.duckdb"
    assert runner.main(["--stage", "1", "--data-root", str(tmp_path), "--codecs", "jpeg,png,jpeg2000",
                        "--db", str(db), "--quiet"]) == 0
    con = store.open_reader(db)
    rows = con.execute("SELECT codec, count(*), count(error) FROM results GROUP BY codec ORDER BY codec").fetchall()
    con.close()
    assert rows == [("jpeg", 15, 0), ("jpeg2000", 18, 0), ("png", 3, 0)]  # 3 images × 5 / 6 / 1 settings
    assert "BD-rate" in capsys.readouterr().out


def test_missing_roots(tmp_path, monkeypatch, capsys):
    with pytest.raises(StageError):
        stage_refs("1", tmp_path / "absent")
    monkeypatch.setenv("BIOCODEC_DATA_ROOT", str(tmp_path / "absent"))
    refs = stage_refs("all", None)
    assert refs and all(r.stage == 0 and r.dataset == "embedded" for r in refs)
    assert "embedded" in capsys.readouterr().err


def test_a_copy_holding_only_train_and_val_serves_those_splits(tmp_path):
    """A training machine's copy of a dataset (scripts/gpu_train.sh pack: no test image travels) serves train/val;
    asking it for the test split is still a clear error naming the missing images."""
    from PIL import Image

    for sub in ("image", "label"):
        (tmp_path / "isbi2012_em" / "train" / sub).mkdir(parents=True)
    for i in range(20):  # slices 0-19: train 0-17, val 18-19; the test slices 20-29 are absent
        for sub in ("image", "label"):
            Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "isbi2012_em" / "train" / sub / f"{i}.png")
    assert [r.image_id for r in catalog.split_refs("isbi2012_em", ("val",), tmp_path)] == ["18", "19"]
    assert len(catalog.split_refs("isbi2012_em", ("train",), tmp_path)) == 18
    with pytest.raises(catalog.CatalogError, match=r"do not exist: \['20', '21'"):
        catalog.split_refs("isbi2012_em", ("test",), tmp_path)
    with pytest.raises(catalog.CatalogError, match="do not exist"):
        catalog.split_refs("isbi2012_em", catalog.SPLITS, tmp_path)


def test_a_copy_holding_only_the_train_folder_of_a_dataset_split_by_folder_serves_the_train_split(tmp_path):
    """MoNuSeg's test tiles live in their own folder (a group whose default split is test): a training machine's
    copy of train/ alone (scripts/gpu_train.sh pack, FAMILY=colour) serves the train split; the val split, whose
    list names tiles the copy lacks, and the test split are still clear errors."""
    from PIL import Image

    for sub in ("images", "instance_masks"):
        (tmp_path / "monuseg" / "train" / sub).mkdir(parents=True)
    for name in ("TCGA-A", "TCGA-B"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "monuseg" / "train" / "images" / f"{name}.tif")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "monuseg" / "train" / "instance_masks" / f"{name}.png")
    refs = catalog.split_refs("monuseg", ("train",), tmp_path)
    assert [r.image_id for r in refs] == ["TCGA-A", "TCGA-B"] and all(r.crop == (1, 1, 8, 8) for r in refs)
    with pytest.raises(catalog.CatalogError, match="do not exist"):
        catalog.split_refs("monuseg", ("val",), tmp_path)
    with pytest.raises(FileNotFoundError, match="no files match 'test/images"):
        catalog.split_refs("monuseg", ("test",), tmp_path)
    with pytest.raises(FileNotFoundError, match="no files match 'test/images"):
        catalog.split_refs("monuseg", catalog.SPLITS, tmp_path)
