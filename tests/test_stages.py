"""Stage definitions (data/stages.toml → core.stages): counts, bit depths, ground truth, crops, sweeps."""
from pathlib import Path

import numpy as np
import pytest

from core import stages
from core.codecs import available_codecs
from core.datasets import load_ref
from core.stages import StageError, _evenly_spaced, stage_codec_settings, stage_refs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared benchmark data not present at {SHARED}")

EXPECTED_COUNTS = {"imagecompression_info": 13, "kodak": 8, "epfl_hippocampus_fibsem": 27, "isbi2012_em": 10,
                   "monuseg": 10, "mri_grayscale": 18, "brightfield_rgb": 3}
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
    assert codecs == available_codecs("classical") + available_codecs("learned")
    assert sweeps["jpeg2000"] == (160, 80, 40, 20, 10, 5)
    assert all(4 <= len(v) <= 6 for v in sweeps.values())
    assert stage_codec_settings("all")[0] == codecs
    with pytest.raises(StageError):
        stage_codec_settings("7")


def test_evenly_spaced():
    assert _evenly_spaced(list(range(24)), 8) == [0, 3, 7, 10, 13, 16, 20, 23]
    assert _evenly_spaced([1, 2], 5) == [1, 2]
    assert _evenly_spaced([1, 2, 3], None) == [1, 2, 3]


@needs_shared
def test_all_stages_resolve_on_shared_data():
    refs = stage_refs("all", SHARED)
    counts = {}
    for ref in refs:
        counts[ref.dataset] = counts.get(ref.dataset, 0) + 1
        assert ref.stage == EXPECTED_STAGE[ref.dataset]
        assert Path(ref.source).is_file()
    assert counts == EXPECTED_COUNTS
    assert len({(r.dataset, r.image_id) for r in refs}) == len(refs)
    assert [r.dataset for r in stage_refs("2", SHARED)].count("epfl_hippocampus_fibsem") == 27


@needs_shared
def test_ground_truth_crops_and_bit_depths():
    by_id = {(r.dataset, r.image_id): r for r in stage_refs("all", SHARED)}
    epfl = by_id[("epfl_hippocampus_fibsem", "training0164")]
    assert epfl.ground_truth.endswith("epfl_hippocampus_fibsem/train/mitochondrion/training0164.png")
    isbi = [r for r in by_id.values() if r.dataset == "isbi2012_em"]
    assert all(Path(r.ground_truth).parent.name == "label" and Path(r.ground_truth).stem == r.image_id for r in isbi)
    assert [r.image_id for r in isbi][:3] == ["0", "3", "6"]  # natural order, evenly spaced
    monuseg = [r for r in by_id.values() if r.dataset == "monuseg"]
    assert all(r.crop == (1, 1, 1000, 1000) and "instance_masks" in r.ground_truth for r in monuseg)
    assert {Path(r.source).parts[-3] for r in monuseg} == {"train", "test"}
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
    monkeypatch.setattr(stages, "default_data_root", lambda spec=None: tmp_path / "absent")
    refs = stage_refs("all", None)
    assert refs and all(r.stage == 0 and r.dataset == "embedded" for r in refs)
    assert "embedded" in capsys.readouterr().err
