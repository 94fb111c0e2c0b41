"""BD-rate on synthetic curves with known answers, and from a results store."""
import math

import duckdb
import numpy as np
import pytest

from core import store
from core.bdrate import bd_rate, bd_rate_table, print_bd_tables, rd_curve

ANCHOR_BPP = np.array([0.1, 0.2, 0.4, 0.8, 1.6])


def _psnr_of(bpp):
    """A smooth concave rate-quality model (dB)."""
    return 25.0 + 6.0 * np.log2(bpp / 0.1)


def test_rate_scaled_curve_gives_factor_minus_one():
    quality = _psnr_of(ANCHOR_BPP)
    for factor in (0.8, 1.25, 2.0):
        value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP * factor, quality)
        assert reason is None
        assert value == pytest.approx((factor - 1) * 100, abs=1e-6)


def test_too_few_points_and_no_overlap_give_nan_with_reason():
    quality = _psnr_of(ANCHOR_BPP)
    value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP[:3], quality[:3])
    assert math.isnan(value) and "< 4 points" in reason
    value, reason = bd_rate(ANCHOR_BPP, quality, ANCHOR_BPP, quality + 100)
    assert math.isnan(value) and "do not overlap" in reason


def test_rd_curve_means_over_images_and_drops_non_increasing_points():
    import pandas as pd

    rows = pd.DataFrame({"setting": ["a", "a", "b", "b", "c"], "bpp": [1.0, 3.0, 4.0, 4.0, 5.0],
                         "psnr": [30.0, 32.0, 35.0, 35.0, 34.0]})
    rate, quality = rd_curve(rows, "psnr")
    assert rate.tolist() == [2.0, 4.0] and quality.tolist() == [31.0, 35.0]  # 'c' is lower quality: dropped


def _rows(codec, factor, images=("i1", "i2"), dataset="ds", ms=True):
    out = []
    for image_offset, image in enumerate(images):
        for k, bpp in enumerate(ANCHOR_BPP):
            quality = float(_psnr_of(bpp)) + image_offset  # image-dependent offset: same on both codecs
            out.append({"stage": 1, "dataset": dataset, "image_id": image, "codec": codec, "setting": str(k),
                        "colour_mode": "joint", "bpp": float(bpp * factor), "psnr": quality,
                        "ms_ssim": 1 - 10 ** (-quality / 20) if ms else None})
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


def test_printer_is_quiet_without_anchor(capsys):
    con = duckdb.connect()
    store_con = con
    for statement in store._create_statements():
        store_con.execute(statement)
    print_bd_tables(con)
    out = capsys.readouterr().out
    assert "no jpeg2000 rows" in out
