"""bench/targets.py: issue #11's target table from a results store, on synthetic curves with known answers."""
import math

import numpy as np
import pandas as pd
import pytest

from bench.targets import COLUMNS, markdown, psnr_family, target_table
from core import store

BPP = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
#: mean agreement with the original's segmentation per setting (same for every codec): passes 0.95 from k = 2
DICE = [0.80, 0.90, 0.96, 0.98, 0.99]


def _rows(codec, factor, stage=2, dataset="em", images=("i1", "i2"), dice=DICE, **extra):
    """4 dB per doubling of the rate, 20 dB at 0.1 bpp (image i2 one dB above i1); 8-bit gray, so the
    compression factor is 8 / bpp."""
    out = []
    for offset, image in enumerate(images):
        for k, bpp in enumerate(BPP):
            quality = 20.0 + 4.0 * math.log2(bpp / 0.1) + offset
            out.append({"stage": stage, "dataset": dataset, "image_id": image, "codec": codec, "setting": str(k),
                        "colour_mode": "joint", "bpp": float(bpp * factor), "factor": float(8 / (bpp * factor)),
                        "psnr": quality, "ms_ssim": 1 - 10 ** (-quality / 10), "seg_dice": dice[k], **extra})
    return out


@pytest.fixture()
def con(tmp_path):
    con = store.open_writer(tmp_path / "r.duckdb")
    rows = (_rows("jpeg2000", 1.0) + _rows("avif", 0.8) + _rows("learned-msssim", 0.6)
            + _rows("learned-mse", 1.2))
    # a seen image: the learned codec is terrible on it, but its rows are not held out
    rows += _rows("learned-msssim", 4.0, images=("seen",), in_codec_training=True)
    rows += _rows("jpeg2000", 1.0, images=("seen",))
    # stage 3: no AVIF rows; the learned codec at the anchor's rate
    rows += _rows("jpeg2000", 1.0, stage=3, dataset="he") + _rows("learned-mse", 1.0, stage=3, dataset="he")
    store.upsert_results(con, rows)
    yield con
    con.close()


def test_target_table_values_and_verdicts(con):
    table = target_table(con, learned=["learned-msssim", "learned-mse"])
    assert list(table.columns) == COLUMNS
    got = table.set_index(["dataset", "codec"])
    assert list(got.index) == [("em", "learned-msssim"), ("em", "learned-mse"), ("he", "learned-mse")]
    ms = got.loc[("em", "learned-msssim")]
    # 0.6× the bits of JPEG 2000 and 0.75× those of AVIF at every quality (the seen image is left out)
    assert ms.msssim_bd_jpeg2000 == pytest.approx(-40.0, abs=1e-6)
    assert ms.msssim_bd_avif == pytest.approx(-25.0, abs=1e-6)
    assert ms.psnr_bd_jpeg2000 == pytest.approx(-40.0, abs=1e-6)
    assert ms.met_msssim_jpeg2000 and ms.met_msssim_avif
    assert ms.met_psnr_avif is None and not ms.psnr_family  # the PSNR target is the PSNR family's
    # top point: 1.6 bpp × 0.6, PSNR 20 + 16 + 0.5 (mean of the two images)
    assert ms.top_psnr_db == pytest.approx(36.5) and ms.top_psnr_bpp == pytest.approx(0.96)
    assert ms.met_top_psnr  # ≥ 36 dB on stage 2
    # Dice-safe: the lowest-rate setting that passes 0.95 is k = 2 (0.4 bpp × factor): 8 / 0.24 vs 8 / 0.4
    assert ms.dice_safe == pytest.approx(8 / 0.24) and ms.dice_safe_jpeg2000 == pytest.approx(20.0)
    assert ms.met_dice_safe  # 1.67 × JPEG 2000's
    mse = got.loc[("em", "learned-mse")]
    assert mse.psnr_family and mse.psnr_bd_avif == pytest.approx(50.0, abs=1e-6) and mse.met_psnr_avif is False
    assert mse.msssim_bd_jpeg2000 == pytest.approx(20.0, abs=1e-6) and not mse.met_msssim_jpeg2000
    assert mse.dice_safe == pytest.approx(8 / 0.48) and not mse.met_dice_safe
    he = got.loc[("he", "learned-mse")]
    assert math.isnan(he.msssim_bd_avif) and "no avif rows" in he.note and not he.met_msssim_avif
    assert he.msssim_bd_jpeg2000 == pytest.approx(0.0, abs=1e-6)
    assert he.top_psnr_db == pytest.approx(36.5) and not he.met_top_psnr  # < 38 dB on stage 3


def test_grain_synthesis_is_judged_against_the_better_jpeg2000(con):
    """``+grain`` rows: the learned variant against max(JPEG 2000, jpeg2000+grain); no rows, no verdict."""
    grainy = [0.90, 0.96, 0.97, 0.98, 0.99]  # passes 0.95 one setting earlier (k = 1)
    store.upsert_results(con, _rows("learned-msssim+grain", 0.6, dice=grainy) + _rows("jpeg2000+grain", 1.0, dice=grainy))
    got = target_table(con, learned=["learned-msssim", "learned-mse"]).set_index(["dataset", "codec"])
    ms = got.loc[("em", "learned-msssim")]
    assert ms.dice_safe_grain == pytest.approx(8 / 0.12) and ms.dice_safe_jpeg2000_grain == pytest.approx(40.0)
    assert ms.met_dice_safe_grain  # 1.67 × the grain anchor (not 3.3 × plain JPEG 2000's 20)
    assert ms.dice_safe == pytest.approx(8 / 0.24)  # the plain codec's own verdict is unchanged
    mse = got.loc[("em", "learned-mse")]
    assert math.isnan(mse.dice_safe_grain) and mse.met_dice_safe_grain is None
    text = markdown(got.reset_index())
    assert "66.7 ✓ vs 40.0" in text and "(no +grain rows)" in text
    store.upsert_results(con, _rows("jpeg2000+grain", 1.0, dice=[0.96, 0.97, 0.97, 0.98, 0.99]))
    better_anchor = target_table(con, learned=["learned-msssim"]).set_index("dataset").loc["em"]
    assert better_anchor.dice_safe_jpeg2000_grain == pytest.approx(80.0) and not better_anchor.met_dice_safe_grain


def test_dice_safe_markdown_lists_every_codec_both_ways(con):
    from bench.targets import dice_safe_markdown

    store.upsert_results(con, _rows("jpeg2000+grain", 1.0, dice=[0.90, 0.96, 0.97, 0.98, 0.99]))
    text = dice_safe_markdown(con)
    em = text.split("he (stage 3")[0]
    assert em.startswith("em (stage 2; agreement threshold 0.950):")
    rows = [line for line in em.splitlines() if line.startswith("| ") and not line.startswith("| codec")]
    # best agreement first: jpeg2000+grain passes at k = 1 (8 / 0.2 = 40×), the learned codecs at k = 2
    assert rows[0] == "| jpeg2000+grain | 40.0 (1) | — |"  # no ground-truth columns in these rows
    assert rows[1] == "| learned-msssim | 33.3 (2) | — |" and len(rows) == 5


def test_seen_rows_count_only_when_asked(con):
    everything = target_table(con, learned=["learned-msssim"], held_out_only=False).set_index("dataset")
    assert everything.loc["em", "msssim_bd_jpeg2000"] > 0  # the seen image's bad rows now weigh in


def test_markdown_marks_each_target(con):
    text = markdown(target_table(con, learned=["learned-msssim", "learned-mse"]))
    first = text.splitlines()[2]
    assert first.startswith("| 2 | em | learned-msssim | -40.0 ✓ | -25.0 ✓ | -40.0 |")
    assert "36.50 ✓ @ 0.96" in first and "33.3 ✓ vs 20.0" in first
    assert "- he learned-mse: msssim_bd_avif: no avif rows" in text


def test_psnr_family_from_the_shipped_checkpoints():
    assert psnr_family("learned-mse") and not psnr_family("learned-msssim")


def test_weights_sizes_lists_every_shipped_checkpoint_under_10_mb():
    from bench.targets import weights_sizes
    from core.codecs import get_codec

    sizes = weights_sizes(["learned-mse", "learned-msssim"])
    expected = {m.model_id: m.weights.stat().st_size
                for c in ("learned-mse", "learned-msssim") for m in get_codec(c).models()}
    assert dict(zip(sizes["model_id"], sizes["bytes"])) == expected and len(expected) == 4
    assert sizes["met"].all() and (sizes["bytes"] <= 10_000_000).all()
    wide = sizes[sizes["model_id"] == "em-mse-wide"].iloc[0]
    assert "int8" in wide["storage"] and wide["bytes"] < 8_000_000


def test_stored_ladders_are_monotone_and_a_dip_is_named(con):
    from bench.targets import monotone_note

    table = target_table(con, learned=["learned-msssim", "learned-mse"])
    assert table["monotone"].all()  # the synthetic curves rise everywhere
    curve = pd.DataFrame({"setting": ["2", "10", "1", "3"], "bpp": [0.2, 0.9, 0.1, 0.4],
                          "psnr": [30.0, 33.0, 28.0, 32.5], "ms_ssim": [0.95, 0.99, 0.90, 0.98]})
    assert monotone_note(curve) == ""  # knob order, not text order: 1, 2, 3, 10
    dip = curve.assign(psnr=[30.0, 32.0, 28.0, 32.5])
    assert monotone_note(dip) == "psnr 32.50 → 32.00 dB from setting 3 to 10"
    flat_rate = curve.assign(bpp=[0.2, 0.4, 0.1, 0.4])
    assert monotone_note(flat_rate) == "bpp 0.400 → 0.400 bpp from setting 3 to 10"
    # a dip in the stored rows turns the verdict and the note
    con.execute("UPDATE results SET psnr = psnr - 10 WHERE codec = 'learned-mse' AND dataset = 'he' AND setting = '4'")
    he = target_table(con, learned=["learned-mse"]).set_index("dataset").loc["he"]
    assert not he.monotone and "not monotone: psnr" in he.note and "from setting 3 to 4" in he.note


@pytest.mark.skipif(not psnr_family("learned-mse"), reason="no shipped checkpoints")
def test_bpp_landing_runs_the_command_line_search(monkeypatch, tmp_path):
    from skimage import data as skdata

    import core.stages
    from bench.targets import BPP_TOLERANCE, bpp_landing, landing_markdown
    from core.catalog import ImageRef
    from core.io import as_bioimage, write_image

    write_image(tmp_path / "cam.png", as_bioimage(skdata.camera()[96:288, 128:384]))
    ref = ImageRef(stage=2, dataset="em", image_id="cam", source=str(tmp_path / "cam.png"), page=None,
                   bit_depth=None, crop=None, ground_truth=None, label_kind=None, membranes=None, split="test")
    asked = []
    monkeypatch.setattr(core.stages, "stage_refs",
                        lambda stage, root=None, splits=None: asked.append((stage, splits)) or ([ref] if stage == 2 else []))
    landing = bpp_landing(1, targets=(0.5, 1.0, 40.0), learned=["learned-mse"], workdir=tmp_path)
    assert asked == [(2, ("test",)), (3, ("test",))]
    assert list(landing["target_bpp"]) == [0.5, 1.0, 40.0] and set(landing["image_id"]) == {"cam"}
    assert landing["deviation"].tolist() == pytest.approx((landing["bpp"] / landing["target_bpp"] - 1).tolist())
    inside, outside = landing[landing["in_range"]], landing[~landing["in_range"]]
    assert list(inside["target_bpp"]) == [0.5, 1.0] and inside["met"].all()
    assert (inside["deviation"].abs() <= BPP_TOLERANCE).all()
    assert list(outside["target_bpp"]) == [40.0] and outside["met"].isna().all() and outside["bpp"].iloc[0] < 40
    line = landing_markdown(landing).splitlines()[2]
    assert line.startswith("| em | learned-mse | 1 | 2 | ") and " % ✓ |" in line and line.endswith("| 40 (cam) |")
