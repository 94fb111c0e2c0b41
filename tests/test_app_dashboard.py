"""Unit tests of core.dashboard (the dashboard's queries and computations, no Streamlit)."""
from __future__ import annotations

import io
import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from core import dashboard as dash
from core.codecs import get_codec
from core.evaluate import evaluate
from core.io import as_bioimage


@pytest.fixture(scope="module")
def snap(results_db):
    return dash.load_snapshot(results_db)


def test_resolve_db_path_order(tmp_path):
    assert dash.resolve_db_path(["--db", "a.duckdb"], {"BIOCODEC_DB": "b.duckdb"}) == dash.Path("a.duckdb")
    assert dash.resolve_db_path(["--db=c.duckdb"], {}) == dash.Path("c.duckdb")
    assert dash.resolve_db_path([], {"BIOCODEC_DB": "b.duckdb"}) == dash.Path("b.duckdb")
    assert dash.resolve_db_path(["-q"], {}) == dash.DEFAULT_DB
    assert "python -m core.runner" in dash.missing_db_message(tmp_path / "none.duckdb")


def test_load_snapshot_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        dash.load_snapshot(tmp_path / "missing.duckdb")


def test_overview_counts_match_sql(results_db, snap):
    con = duckdb.connect(str(results_db), read_only=True)
    try:
        rows, errors, codecs = con.execute(
            "SELECT count(*), count(error), count(DISTINCT codec) FROM results").fetchone()
        images = con.execute("SELECT count(*) FROM (SELECT DISTINCT stage, dataset, image_id FROM results)").fetchone()[0]
    finally:
        con.close()
    counts = dash.overview_counts(snap.results)
    assert (counts["rows"], counts["errors"], counts["codecs"], counts["images"]) == (rows, errors, codecs, images)
    assert counts == {"stages": 2, "datasets": 2, "images": 4, "codecs": 3, "settings": 14, "rows": 30,
                      "ok_rows": 29, "errors": 1}
    by_ds = dash.overview_by_dataset(snap.results).set_index("dataset")
    assert by_ds.loc["embedded", "rows"] == 26 and by_ds.loc["isbi2012_em", "errors"] == 1
    assert list(dash.error_rows(snap.results)["error"]) == ["load: ImageReadError: fixture failure"]
    prov = dash.provenance(snap.runs)
    assert len(prov) == 1 and "--codecs jpeg,jpeg2000,png" in prov.loc[0, "argv"] and "numpy" in prov.loc[0, "versions"]


def test_derived_columns(snap):
    r = snap.results.dropna(subset=["ms_ssim"]).iloc[0]
    assert r["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - r["ms_ssim"])) or r["ms_ssim"] == 1.0
    assert set(snap.results["family"]) == {"classical"}
    assert set(snap.results.loc[snap.results["channels"] == 1, "colour"]) == {"gray"}


def test_filters_and_rd_points_mean(snap):
    rows = dash.apply_filters(snap.results, dash.Filters(stages=[0], codecs=["jpeg"]))
    assert len(rows) == 12 and set(rows["codec"]) == {"jpeg"}
    points, dropped = dash.rd_points(rows, "psnr", "mean")
    assert dropped == 0 and len(points) == 6 and set(points["images"]) == {2}
    want = rows.groupby("setting")[["bpp", "psnr"]].mean()
    for p in points.itertuples():
        assert p.bpp == pytest.approx(want.loc[p.setting, "bpp"]) and p.y == pytest.approx(want.loc[p.setting, "psnr"])
    per_image, _ = dash.rd_points(rows, "psnr", "per_image")
    assert len(per_image) == 12


def test_rd_points_drop_infinite_psnr_and_figure_styles(snap):
    rows = dash.apply_filters(snap.results, dash.Filters(stages=[0]))
    points, dropped = dash.rd_points(rows, "psnr", "mean")
    assert dropped == 2  # the two exact PNG rows (PSNR = +inf)
    fig = dash.rd_figure(points, "psnr")
    assert [t.line.dash for t in fig.data] == ["dash", "dash"]  # jpeg, jpeg2000: classical = dashed
    learned = points.assign(family="learned")
    assert dash.rd_figure(learned, "psnr").data[0].line.dash == "solid"
    assert "setting" in fig.data[0].hovertemplate and "image" in fig.data[0].hovertemplate


def test_downstream_points_and_markers(snap):
    rows = dash.apply_filters(snap.results, dash.Filters(stages=[2]))
    points = dash.downstream_points(rows, "seg_dice")
    assert dict(zip(points["setting"], points["y"])) == {"10": 0.80, "50": 0.93, "90": 0.98}
    assert dict(zip(points["setting"], points["factor"])) == {"10": 32.0, "50": 16.0, "90": 8.0}
    table = pd.DataFrame({"stage": [2], "dataset": ["isbi2012_em"], "codec": ["jpeg"], "setting": [50]})
    markers = dash.safe_point_markers(table, points)
    assert list(markers["x"]) == [16.0] and list(markers["y"]) == [0.93]


def test_parse_setting_matches_codec_defaults():
    jpeg = get_codec("jpeg")
    assert dash.parse_setting("50", jpeg) == 50 and isinstance(dash.parse_setting("50", jpeg), int)
    assert dash.parse_setting("0.75", get_codec("jpegxl")) == 0.75
    assert dash.parse_setting("-") is None


def test_find_ref_embedded_and_missing():
    ref = dash.find_ref(0, "embedded", "camera", None)
    assert ref.image_id == "camera" and ref.source == "embedded:camera"
    with pytest.raises(LookupError):
        dash.find_ref(0, "embedded", "no_such_image", None)


def test_window_to_8bit_16bit_states_window(rgb16_pixels):
    view, note = dash.window_to_8bit(rgb16_pixels, 16)
    lo, hi = np.percentile(rgb16_pixels, [0.5, 99.5])
    assert view.dtype == np.uint8 and view.shape == rgb16_pixels.shape
    assert f"[{lo:.0f}, {hi:.0f}]" in note and "0.5–99.5 percentile" in note
    assert (view == 0).mean() == pytest.approx(0.005, abs=0.002)
    same, note8 = dash.window_to_8bit(np.arange(256, dtype=np.uint8).reshape(16, 16), 8)
    assert same[15, 15] == 255 and "no windowing" in note8


def test_crop_zoom_difference_heatmap():
    a = np.arange(100 * 120, dtype=np.uint16).reshape(100, 120) % 4096
    window = dash.crop_window(a.shape, 1.0, 0.0, 32)
    assert window == (68, 0, 100, 32)
    z = dash.zoom(a, window, display=128)
    assert z.shape == (128, 128) and z[0, 0] == a[68, 0] and z[3, 3] == a[68, 0] and z[4, 4] == a[69, 1]
    b = a.copy()
    b[5, 7] += 9
    diff = dash.abs_difference(a, b)
    assert diff.max() == 9 and diff.sum() == 9
    heat, vmax = dash.heat_map(diff)
    assert vmax == 9 and heat.shape == (100, 120, 3) and heat[5, 7].sum() > heat[0, 0].sum()


def test_png_bytes_lossless_16bit(rgb16_pixels):
    import imagecodecs

    assert np.array_equal(imagecodecs.png_decode(dash.png_bytes(rgb16_pixels)), rgb16_pixels)


def test_read_upload_limits(gray_png_bytes):
    image = dash.read_upload(gray_png_bytes, "crop.png")
    assert image.pixels.shape == (192, 192) and image.bit_depth == 8
    with pytest.raises(dash.UploadError, match="unsupported file type"):
        dash.read_upload(gray_png_bytes, "crop.gif")
    with pytest.raises(dash.UploadError, match="50 MB"):
        dash.read_upload(b"\0" * (dash.MAX_UPLOAD_BYTES + 1), "big.png")
    import imagecodecs

    wide = bytes(imagecodecs.png_encode(np.zeros((2, dash.MAX_UPLOAD_SIDE + 1), np.uint8)))
    with pytest.raises(dash.UploadError, match="4096"):
        dash.read_upload(wide, "wide.png")
    with pytest.raises(dash.UploadError):
        dash.read_upload(b"not an image", "broken.png")


def test_codecs_for_image():
    names = dash.codecs_for_image(16, 1, names=["jpeg", "png", "jpeg2000", "webp"])
    assert names == ["png", "jpeg2000"]
    assert dash.codecs_for_image(8, 3, "per_channel", names=["jpeg", "png"]) == ["jpeg", "png"]


@pytest.fixture(scope="module")
def camera_image():
    from skimage import data

    return as_bioimage(data.camera()[:256, :256], 8, "camera")


@pytest.mark.parametrize("codec_name", ["jpeg", "jpeg2000", "jpegxl"])
def test_search_setting_reaches_target(camera_image, codec_name):
    codec = get_codec(codec_name)
    found = dash.search_setting(camera_image, codec, target_bpp=1.0)
    bpps = [b for _, b in found.trials]
    best = found.evaluation.metrics["bpp"]
    assert best == min(bpps, key=lambda b: abs(b - 1.0))  # the closest trial is returned
    assert abs(best - 1.0) < 0.15  # within 15 % of the target on this image
    again = evaluate(camera_image, codec, found.setting)  # the reported setting gives the reported rate
    assert again.metrics["bytes"] == found.evaluation.metrics["bytes"]
    assert len(found.trials) <= 14


def test_search_setting_out_of_range_and_lossless(camera_image):
    jpeg = get_codec("jpeg")
    low = dash.search_setting(camera_image, jpeg, target_bpp=0.001)
    assert low.setting == jpeg.default_settings[0] and not low.reached and "below" in low.note
    high = dash.search_setting(camera_image, jpeg, target_bpp=40.0)
    assert high.setting == jpeg.default_settings[-1] and not high.reached and "above" in high.note
    png = dash.search_setting(camera_image, get_codec("png"), target_bpp=1.0)
    assert png.setting is None and len(png.trials) == 1
    with pytest.raises(ValueError):
        dash.search_setting(camera_image, jpeg, target_bpp=0)


def test_export_bytes_round_trip(snap):
    rows = dash.apply_filters(snap.results, dash.Filters(include_errors=True))
    csv = pd.read_csv(io.BytesIO(dash.to_csv_bytes(rows)))
    parquet = pd.read_parquet(io.BytesIO(dash.to_parquet_bytes(rows)))
    assert len(csv) == len(parquet) == 30
    assert parquet["bytes"].sum() == rows["bytes"].sum()


def test_overlay_segmentation_draws_boundaries():
    view = np.full((20, 20), 100, np.uint8)
    labels = np.zeros((20, 20), np.int32)
    labels[5:10, 5:10] = 1
    out = dash.overlay_segmentation(view, {"labels": labels, "contours": None})
    assert out.shape == (20, 20, 3)
    red = np.all(out == (255, 40, 40), axis=-1)
    assert red[5, 5] and red[9, 7] and not red[7, 7] and not red[0, 0]  # boundary only, inside kept
    contours = np.zeros((20, 20), bool)
    contours[3, :] = True
    red2 = np.all(dash.overlay_segmentation(view, {"labels": None, "contours": contours}) == (255, 40, 40), axis=-1)
    assert red2.sum() == 20 and red2[3].all()
    with pytest.raises(ValueError):
        dash.overlay_segmentation(view, {"labels": None, "contours": None})


def test_live_compress_setting_bpp_and_per_channel(camera_image):
    from core.codecs.per_channel import PerChannelCodec

    jpeg = get_codec("jpeg")
    direct = evaluate(camera_image, jpeg, 70).metrics
    assert dash.live_compress(camera_image, jpeg, setting=70).evaluation.metrics["bytes"] == direct["bytes"]
    png = dash.live_compress(camera_image, get_codec("png"), setting=70)  # lossless: the setting is ignored
    assert png.evaluation.metrics["setting"] == "-" and np.array_equal(png.evaluation.reconstruction,
                                                                      camera_image.pixels)
    searched = dash.live_compress(camera_image, jpeg, target_bpp=1.0)
    assert searched.note.startswith("searched ") and abs(searched.evaluation.metrics["bpp"] - 1.0) < 0.15
    rgb = as_bioimage(np.stack([camera_image.pixels, camera_image.pixels[::-1], camera_image.pixels.T], -1), 8)
    per = dash.live_compress(rgb, jpeg, "per_channel", setting=50).evaluation.metrics
    assert per["bytes"] == evaluate(rgb, PerChannelCodec(jpeg), 50).metrics["bytes"]
    with pytest.raises(ValueError):
        dash.live_compress(camera_image, jpeg, "per_channel", setting=50)  # gray image: no per-channel mode


def test_bd_rate_plumbing(results_db):
    pytest.importorskip("core.bdrate", reason="core.bdrate (stages helper) not in this tree")
    table, notice = dash.bd_rate(results_db, "psnr", anchor="jpeg2000", stage=0)
    assert notice is None and list(table["codec"]) == ["jpeg"] and math.isfinite(table["bd_rate"].iloc[0])
    assert dash.bd_rate(results_db, "psnr", anchor="jpeg2000", stage=0, codecs=["png"])[0] is None
    none, why = dash.bd_rate(results_db, "ssim")
    assert none is None and "psnr" in why
