"""core.bdrate — the one BD-rate and mean-curve implementation — on synthetic curves with known answers,
from a results store (held-out rows by default), and as used by bench/compare_learned.py."""
import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from core import store
from core.provenance import held_out_clause, held_out_mask
from core.bdrate import (
    MIN_OVERLAP,
    MIN_POINTS,
    bd_rate,
    bd_rate_frame,
    bd_rate_table,
    mean_per_setting,
    monotone_points,
    overlap_fraction,
    print_bd_tables,
    rd_curve,
)

ANCHOR_BPP = np.array([0.1, 0.2, 0.4, 0.8, 1.6])


def _psnr_of(bpp):
    """A log-linear rate-quality model (dB): 6 dB per doubling of the rate, 25 dB at 0.1 bpp."""
    return 25.0 + 6.0 * np.log2(np.asarray(bpp) / 0.1)


def test_rate_scaled_curve_gives_factor_minus_one():
    quality = _psnr_of(ANCHOR_BPP)
    for factor in (0.8, 1.25, 2.0):
        value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP * factor, quality)
        assert reason is None
        assert value == pytest.approx((factor - 1) * 100, abs=1e-6)


def test_quality_shift_gives_the_equivalent_rate_factor():
    # +12 dB at every rate = the anchor's quality at 2^(12/6) = 4× fewer bits: BD-rate −75 %
    quality = _psnr_of(ANCHOR_BPP)
    assert overlap_fraction(quality, quality + 12) == pytest.approx(12 / 36)
    value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP, quality + 12)
    assert reason is None and value == pytest.approx(-75.0, abs=1e-6)


def test_too_few_points_and_too_little_overlap_give_nan_with_reason():
    quality = _psnr_of(ANCHOR_BPP)
    value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP[:3], quality[:3])
    assert math.isnan(value) and f"< {MIN_POINTS} points" in reason
    value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP, quality + 100)
    assert math.isnan(value) and "do not overlap" in reason
    # a 20 dB shift leaves (24 − 20) / (24 + 20) = 9 % of the union: below MIN_OVERLAP (20 %)
    assert overlap_fraction(quality, quality + 20) < MIN_OVERLAP == 0.2
    value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP, quality + 20)
    assert math.isnan(value) and "overlap 9% < 20%" in reason


def test_non_monotone_points_are_dropped_before_counting():
    quality = _psnr_of(ANCHOR_BPP)
    # an extra test point with more bits but less quality is not on the frontier: same answer as without it
    rate = np.append(ANCHOR_BPP * 1.25, 3.0)
    q = np.append(quality, 40.0)
    assert monotone_points(rate, q)[0].tolist() == pytest.approx((ANCHOR_BPP * 1.25).tolist())
    value, reason = bd_rate(ANCHOR_BPP, quality, rate, q)
    assert reason is None and value == pytest.approx(25.0, abs=1e-6)
    # 4 points of which one is not increasing: 3 remain, not enough
    value, reason = bd_rate(ANCHOR_BPP, quality, [0.1, 0.2, 0.4, 0.8], [25.0, 31.0, 30.0, 43.0])
    assert math.isnan(value) and "codec 3" in reason


def test_rd_curve_means_over_images_and_drops_non_increasing_points():
    rows = pd.DataFrame({"setting": ["a", "a", "b", "b", "c"], "bpp": [1.0, 3.0, 4.0, 4.0, 5.0],
                         "psnr": [30.0, 32.0, 35.0, 35.0, 34.0], "image_id": ["i1", "i2", "i1", "i2", "i1"]})
    rate, quality = rd_curve(rows, "psnr")
    assert rate.tolist() == [2.0, 4.0] and quality.tolist() == [31.0, 35.0]  # 'c' is lower quality: dropped


def test_mean_per_setting_is_the_mean_curve():
    rows = pd.DataFrame({
        "stage": 1, "dataset": "ds", "codec": "jpeg", "colour_mode": "joint",
        "setting": ["90", "90", "10", "10", "10"], "image_id": ["a", "b", "a", "b", "c"],
        "bpp": [2.0, 4.0, 0.5, 0.7, 0.9], "psnr": [40.0, 42.0, 30.0, 32.0, float("inf")]})
    curve = mean_per_setting(rows, ["bpp", "psnr"])
    assert curve["setting"].tolist() == ["10", "90"]  # sorted by rate
    assert curve["bpp"].tolist() == pytest.approx([0.6, 3.0])  # image c's +inf PSNR row is left out
    assert curve["psnr"].tolist() == pytest.approx([31.0, 41.0]) and curve["images"].tolist() == [2, 2]
    assert mean_per_setting(rows, ["bpp"])["images"].tolist() == [3, 2]


def _rows(codec, factor, images=("i1", "i2"), dataset="ds", ms=True, **extra):
    out = []
    for image_offset, image in enumerate(images):
        for k, bpp in enumerate(ANCHOR_BPP):
            quality = float(_psnr_of(bpp)) + image_offset  # image-dependent offset: same on both codecs
            out.append({"stage": 1, "dataset": dataset, "image_id": image, "codec": codec, "setting": str(k),
                        "colour_mode": "joint", "bpp": float(bpp * factor), "psnr": quality,
                        "ms_ssim": 1 - 10 ** (-quality / 20) if ms else None, **extra})
    return out


def test_table_from_store(tmp_path):
    con = store.open_writer(tmp_path / "r.duckdb")
    rows = _rows("jpeg2000", 1.0) + _rows("jpegxl", 0.75) + _rows("jpeg", 1.5)
    rows += [{**r, "codec": "webp"} for r in _rows("x", 1.0)[:3]]  # only 3 settings
    rows += _rows("jpeg2000", 1.0, dataset="no_partner")
    lossless = {"stage": 1, "dataset": "ds", "image_id": "i1", "codec": "png", "setting": "-",
                "colour_mode": "joint", "bpp": 4.0, "psnr": float("inf"), "ms_ssim": 1.0}
    store.upsert_results(con, rows + [lossless])
    table = bd_rate_table(con, metric="psnr").set_index("codec")
    assert set(table.index) == {"jpegxl", "jpeg", "webp"}  # lossless png and the anchor itself excluded
    assert table.loc["jpegxl", "bd_rate"] == pytest.approx(-25.0, abs=1e-6)
    assert table.loc["jpeg", "bd_rate"] == pytest.approx(50.0, abs=1e-6)
    assert math.isnan(table.loc["webp", "bd_rate"]) and "points" in table.loc["webp", "reason"]
    ms = bd_rate_table(con, metric="ms_ssim_db", dataset="ds").set_index("codec")
    # MS-SSIM dB = −10·log10(1 − MS-SSIM) = quality/2 here: a monotone map, so the same BD-rate
    assert ms.loc["jpegxl", "bd_rate"] == pytest.approx(-25.0, abs=1e-6)
    assert bd_rate_table(con, anchor="avif").empty
    with pytest.raises(ValueError):
        bd_rate_table(con, metric="ssim")
    con.close()


def _flagged_store(path):
    """jpeg2000 / jpegxl (0.75× the bits) on images i1, i2, plus image 'seen' where jpegxl needs 2× the bits of
    jpeg2000 — its jpegxl rows are flagged in_codec_training, its jpeg2000 rows in_segmenter_training."""
    con = store.open_writer(path)
    rows = _rows("jpeg2000", 1.0, in_codec_training=False) + _rows("jpegxl", 0.75, in_codec_training=None)
    rows += _rows("jpeg2000", 1.0, images=("seen",), in_segmenter_training=True)
    rows += _rows("jpegxl", 2.0, images=("seen",), in_codec_training=True)
    store.upsert_results(con, rows)
    return con


def test_table_uses_held_out_rows_by_default(tmp_path):
    con = _flagged_store(tmp_path / "flags.duckdb")
    try:
        held = bd_rate_table(con).set_index("codec")
        assert held.loc["jpegxl", "bd_rate"] == pytest.approx(-25.0, abs=1e-6)
        assert held.loc["jpegxl", "images"] == 2 and held.attrs["rows"] == 20
        everything = bd_rate_table(con, held_out_only=False).set_index("codec")
        assert everything.loc["jpegxl", "images"] == 3 and everything.attrs["rows"] == 30
        assert everything.loc["jpegxl", "bd_rate"] > -25.0  # the 'seen' image's 2× rows pull it up
        frame = con.execute("SELECT * FROM results").df()
        assert held_out_mask(frame).sum() == 20
        assert set(frame.loc[~held_out_mask(frame), "image_id"]) == {"seen"}
        assert held_out_clause(con, held_out_only=False) == "TRUE"
    finally:
        con.close()
    bare = duckdb.connect()
    bare.execute("CREATE TABLE results (stage INTEGER, codec VARCHAR)")  # a table without the flag columns
    assert held_out_clause(bare) == "TRUE"
    assert held_out_mask(pd.DataFrame({"codec": ["a", "b"]})).tolist() == [True, True]


def test_printer_title_says_held_out_and_row_count(tmp_path, capsys):
    con = _flagged_store(tmp_path / "flags.duckdb")
    try:
        print_bd_tables(con)
        out = capsys.readouterr().out
        assert "BD-rate vs JPEG 2000, held-out test images only (20 rows)" in out and "-25.0" in out
        print_bd_tables(con, held_out_only=False)
        out = capsys.readouterr().out
        assert "BD-rate vs JPEG 2000, all images, including those seen in training (30 rows)" in out
    finally:
        con.close()


def test_printer_is_quiet_without_anchor(capsys):
    con = duckdb.connect()
    for statement in store._create_statements():
        con.execute(statement)
    print_bd_tables(con)
    out = capsys.readouterr().out
    assert "no jpeg2000 rows" in out


def test_bd_rate_frame_anchor_in_another_colour_mode():
    frame = pd.DataFrame(_rows("jpeg2000", 1.0) + _rows("learned", 0.5)
                         + [{**r, "colour_mode": "per_channel"} for r in _rows("learned", 2.0)])
    table = bd_rate_frame(frame, "psnr", "jpeg2000").set_index("colour_mode")
    assert table.loc["joint", "bd_rate"] == pytest.approx(-50.0, abs=1e-6)
    assert table.loc["per_channel", "bd_rate"] == pytest.approx(100.0, abs=1e-6)


# --------------------------------------------------------------------------- bench/compare_learned.py


def test_compare_learned_sweeps_and_datasets():
    from bench import compare_learned as cl
    from core.catalog import sweeps

    assert cl.dataset_name("epfl") == "epfl_hippocampus_fibsem" and cl.dataset_name("kodak") == "kodak"
    with pytest.raises(ValueError):
        cl.dataset_name("no_such_dataset")
    j2k = cl.classical_sweep("jpeg2000")
    assert set(sweeps()["jpeg2000"]) <= set(j2k) and set(cl.EXTRA_SETTINGS["jpeg2000"]) <= set(j2k)
    assert list(j2k) == sorted(j2k, reverse=True)  # compression ratio: fewest bytes first
    avif = cl.classical_sweep("avif")
    assert list(avif) == sorted(avif) and avif[0] == 5
    assert cl.codec_settings("jpeg2000", {"jpeg2000": (50, 10)}) == (50, 10)
    from core.codecs import get_codec

    assert cl.codec_settings("learned-msssim", {}) == tuple(get_codec("learned-msssim").default_settings)


def test_compare_learned_summary_uses_core_bdrate():
    from bench import compare_learned as cl

    points = []
    for codec, factor in (("jpeg2000", 1.0), ("learned-x", 0.8)):
        for r in _rows(codec, factor):
            points.append({**r, "ms_ssim_db": float(-10 * np.log10(1 - r["ms_ssim"])), "bytes": 1,
                           "encode_s": 0.1, "decode_s": 0.2})
    summary = cl.summarise(pd.DataFrame(points), ["learned-x"], ["jpeg2000"])
    s = summary["learned-x"]
    assert s["n_images"] == 2 and len(s["points"]) == 5
    assert s["bd_rate_percent"]["jpeg2000"]["psnr"] == pytest.approx(-20.0, abs=1e-6)
    assert s["bd_rate_percent"]["jpeg2000"]["ms_ssim"] == pytest.approx(-20.0, abs=1e-6)
    # matched bpp: at the learned codec's lowest point (0.08 bpp) JPEG 2000 has no point (it starts at 0.1)
    assert math.isnan(s["points"][0]["jpeg2000_psnr_at_bpp"])
    # at 0.8·0.2 = 0.16 bpp JPEG 2000 reaches 25 + 6·log2(1.6) dB on image i1 (+1 dB on i2)
    assert s["points"][1]["jpeg2000_psnr_at_bpp"] == pytest.approx(25 + 6 * math.log2(1.6) + 0.5)
    assert s["points"][1]["psnr"] == pytest.approx(31.5)


def test_compare_learned_runs_on_catalog_test_images(tmp_path):
    from bench import compare_learned as cl
    from core.catalog import split_refs

    try:
        refs = split_refs("kodak", ("test",))
    except FileNotFoundError:
        pytest.skip("kodak is not under the data root")
    out = tmp_path / "cmp"
    result = cl.main(["--codecs", "webp", "--classical", "jpeg2000", "--datasets", "kodak", "--limit", "1",
                      "--settings", "webp=10,30,50,75,90;jpeg2000=160,80,40,20,10", "--out", str(out)])
    block = result["datasets"]["kodak"]
    assert {p["image_id"] for p in block["points"]} == {refs[0].image_id}
    assert len(block["points"]) == 10
    assert math.isfinite(block["summary"]["webp"]["bd_rate_percent"]["jpeg2000"]["psnr"])
    assert out.with_suffix(".json").is_file() and "## kodak: webp (1 images)" in out.with_suffix(".md").read_text()
