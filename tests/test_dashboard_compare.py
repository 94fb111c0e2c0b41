"""Unit tests of the pixel-exact comparison helpers (core.dashboard.compare), the live page's cache and
progress (core.dashboard.live), the views' opening selection (core.dashboard.data) and the BD-rate
overlap note (core.dashboard.rd).  No Streamlit, no browser."""
from __future__ import annotations

import base64
import math
import re

import numpy as np
import pandas as pd
import pytest

from core.dashboard import compare, data, live, rd


def _decode_uri(uri: str) -> np.ndarray:
    import imagecodecs

    assert uri.startswith("data:image/png;base64,")
    return imagecodecs.png_decode(base64.b64decode(uri.split(",", 1)[1]))


# --------------------------------------------------------------------------- regions and data URIs


def test_region_whole_crop_and_clipping():
    shape = (300, 500)
    assert compare.default_region_side(shape) is None
    whole = compare.region(shape, None)
    assert (whole.y0, whole.x0, whole.y1, whole.x1) == (0, 0, 300, 500) and whole.is_whole(shape)
    assert whole.describe(shape) == "the whole image (500×300 px)"
    r = compare.region(shape, 128, left=450, top=-5)  # moved inside the image
    assert (r.y0, r.x0, r.y1, r.x1) == (0, 372, 128, 500)
    assert r.describe(shape) == ("region columns 372–499, rows 0–127 (128×128 px) of the 500×300 px image, "
                                 "cropped, not resampled")
    assert compare.region(shape, 1024) == compare.Region(0, 0, 300, 500)  # a side larger than the image: all of it
    big = (2048, 3000)
    assert compare.default_region_side(big) == compare.LARGE_IMAGE_REGION == 512
    with pytest.raises(ValueError):
        compare.region(big, None)  # too large to show whole at 1:1
    left, top = compare.centred_corner(big, 1024)
    assert (left, top) == (988, 512)
    assert compare.region_sides(big) == [32, 64, 128, 256, 512, 1024]  # up to MAX_REGION
    assert compare.region_sides((200, 200)) == [32, 64, 128]


def test_region_uri_is_lossless_and_exact_crop():
    rng = np.random.default_rng(3)
    view = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    reg = compare.region(view.shape, 32, left=10, top=20)
    assert np.array_equal(_decode_uri(compare.region_uri(view, reg)), view[20:52, 10:42])
    gray = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    assert np.array_equal(_decode_uri(compare.png_data_uri(gray)), gray)
    with pytest.raises(ValueError):
        compare.png_data_uri(gray.astype(np.uint16))


def test_scale_note_and_panel_limit():
    assert "1:1" in compare.scale_note(1) and "never resampled" in compare.scale_note(1)
    assert "4×4 block" in compare.scale_note(4) and "nearest-neighbour" in compare.scale_note(4)
    reg = compare.Region(0, 0, 1024, 1024)
    assert compare.panel_fits(reg, 1) and not compare.panel_fits(reg, 2)
    assert compare.panel_fits(compare.Region(0, 0, 64, 64), 16) and not compare.panel_fits(compare.Region(0, 0, 128, 128), 16)


# --------------------------------------------------------------------------- HTML


def test_split_view_html_is_self_contained_with_divider():
    uri = compare.png_data_uri(np.zeros((4, 6), np.uint8))
    page = compare.split_view_html(uri, uri, 60, 40, "original", "jpeg </script>", start=0.25, element_id="sv")
    assert 'id="sv"' in page and 'data-split="15"' in page  # 0.25 × 60 px
    assert "clip-path:inset(0 0 0 15px)" in page and 'id="sv-divider"' in page
    assert "pointerdown" in page and "ArrowLeft" in page  # drag and keyboard
    assert "image-rendering:pixelated" in page and "width:60px;height:40px" in page
    assert not re.search(r"(src|href)=\"https?:", page)  # nothing loaded from the network
    assert "jpeg <\\/script>" in page and page.count("</script>") == 1  # a label cannot end the script
    assert compare.split_view_height(40) == 40 + 60 and compare.split_view_height(5000, 640) == 700


def test_panels_html_native_size_and_escaping():
    uri = compare.png_data_uri(np.zeros((3, 5), np.uint8))
    page = compare.panels_html([("a <b>", uri, 50, 30), ("c", uri, 10, 6)], test_id="p")
    assert page.count('class="bc-native"') == 2
    assert 'width="50" height="30"' in page and "width:50px;height:30px;max-width:none" in page
    assert "a &lt;b&gt;" in page and "<b>" not in page
    assert "overflow:auto" in page and "flex-wrap:wrap" in page


def test_difference_heat_and_shared_scale():
    a = np.zeros((4, 4, 3), np.uint16)
    b = a.copy()
    b[1, 2] = (0, 300, 7)
    d = compare.difference(a, b)
    assert d.shape == (4, 4) and d[1, 2] == 300 and d.sum() == 300
    d2 = np.zeros((4, 4), np.int32)
    d2[0, 0] = 150
    vmax = compare.shared_scale([d, d2])
    assert vmax == 300.0 and compare.shared_scale([np.zeros((2, 2), np.int32)]) == 1.0
    ramp = np.arange(1000).reshape(10, 100)
    assert compare.scale_value(ramp) == 999.0
    assert compare.scale_value(ramp, "99th percentile") == pytest.approx(np.percentile(ramp, 99))
    assert compare.shared_scale([compare.scale_value(ramp, "99.9th percentile"), 12.0]) == pytest.approx(998.001)
    with pytest.raises(ValueError):
        compare.scale_value(ramp, "median")
    h = compare.heat(d2, vmax)
    from matplotlib import colormaps

    lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    assert h.dtype == np.uint8 and h.shape == (4, 4, 3)
    assert tuple(h[0, 0]) == tuple(lut[128]) and tuple(h[3, 3]) == tuple(lut[0])  # 150/300 → middle; 0 → black
    assert tuple(compare.heat(d, vmax)[1, 2]) == tuple(lut[255])
    scale = compare.colour_scale_html(300)
    assert ">0</span>" in scale and ">300</span>" in scale and ">150</span>" in scale and "linear-gradient" in scale


# --------------------------------------------------------------------------- rates


def test_deviation_and_matched_pairs():
    assert compare.deviation_pct(0.51, 0.5) == pytest.approx(2.0)
    assert compare.deviation_text(0.4876, 0.5) == "0.488 bpp (-2.5 % vs target 0.500 bpp)"
    assert compare.rate_gap(1.0, 1.05) == pytest.approx(0.05) and compare.rate_gap(1.06, 1.0) == pytest.approx(0.06)
    bpps = {"a": 0.50, "b": 0.52, "c": 0.651}
    pairs = compare.unmatched_pairs(bpps)
    assert [(x, y) for x, y, _ in pairs] == [("a", "c"), ("b", "c")]
    assert pairs[0][2] == pytest.approx(0.302)
    text = compare.unmatched_warning(bpps)
    assert "a 0.500 vs c 0.651 bpp (30.2 % apart)" in text and "more than 5 %" in text
    assert compare.unmatched_warning({"a": 0.50, "b": 0.52}) is None  # 4 % apart: matched


def test_best_matched_target_and_closest_stored():
    assert data.best_matched_target([0.2, 0.5, 1.0], [0.3, 0.49, 2.0]) == pytest.approx(math.sqrt(0.5 * 0.49))
    rows = pd.DataFrame({"setting": ["10", "20", "40"], "bpp": [0.2, 0.45, 0.7]})
    assert data.closest_stored(rows, 0.5)["setting"] == "20"
    assert data.closest_stored(rows, 0.575)["setting"] == "20"  # tie → lower rate
    assert "_gap" not in data.closest_stored(rows, 0.6).index
    with pytest.raises(ValueError):
        data.closest_stored(rows.iloc[:0], 0.5)


# --------------------------------------------------------------------------- opening selection


def test_default_codecs_and_selection():
    assert live.default_codecs(["avif", "jpeg", "jpeg2000", "learned-msssim", "png"]) == \
        ["learned-msssim", "jpeg2000", "avif"]
    assert live.default_codecs(["avif", "jpeg2000", "learned-mse"]) == ["learned-mse", "jpeg2000", "avif"]
    assert live.default_codecs(["jpeg", "png"]) == ["jpeg"]
    rows = pd.DataFrame({"stage": [1, 2, 2, 2, 2], "dataset": ["kodak", "isbi2012_em", "epfl_hippocampus_fibsem",
                                                                 "epfl_hippocampus_fibsem", "epfl_hippocampus_fibsem"],
                         "codec": ["jpeg", "jpeg", "avif", "jpeg2000", "learned-msssim"]})
    # stage 2; the catalog lists EPFL before ISBI
    assert data.default_selection(rows) == {"stage": 2, "dataset": "epfl_hippocampus_fibsem",
                                            "codecs": ["learned-msssim", "jpeg2000", "avif"]}
    assert data.default_selection(rows[rows["stage"] == 1]) == {"stage": 1, "dataset": "kodak", "codecs": ["jpeg"]}
    assert data.default_selection(rows.iloc[:0])["stage"] is None


# --------------------------------------------------------------------------- cache and progress


class _Ev:
    def __init__(self, n):
        self.reconstruction = np.zeros(n, np.uint8)
        self.encoded = b""


def test_result_cache_lru_and_budget():
    cache = live.ResultCache(max_bytes=250, max_entries=10)
    made = []
    assert cache.get_or_make("a", lambda: made.append("a") or np.zeros(100, np.uint8)).nbytes == 100
    cache.get_or_make("a", lambda: made.append("a2"))
    assert made == ["a"] and cache.hits == 1
    cache.put("b", np.zeros(100, np.uint8))
    cache.get("a")  # a is now the most recent
    cache.put("c", np.zeros(100, np.uint8))  # 300 > 250: the least recent (b) goes
    assert "a" in cache and "c" in cache and "b" not in cache and cache.total_bytes == 200
    cache.put("huge", np.zeros(1000, np.uint8))  # larger than the budget alone: kept as the only entry
    assert len(cache) == 1 and "huge" in cache
    from core.io import as_bioimage

    assert live.ResultCache.size_of(as_bioimage(np.zeros((10, 20), np.uint16), 16)) == 400
    assert live.ResultCache.size_of((np.zeros(3, np.uint8), b"ab")) == 5
    small = live.ResultCache(max_entries=2)
    for k in "xyz":
        small.put(k, k)
    assert list(small._items) == ["y", "z"]


def test_expected_trials():
    from core.codecs import get_codec

    jpeg, png, j2k = get_codec("jpeg"), get_codec("png"), get_codec("jpeg2000")
    assert live.expected_trials(jpeg, None) == 1 and live.expected_trials(png, 0.5) == 1
    span = abs(jpeg.default_settings[-1] - jpeg.default_settings[0])
    assert live.expected_trials(jpeg, 0.5) == 2 + math.ceil(math.log2(span))
    assert live.expected_trials(j2k, 0.5) == min(14, 2 + math.ceil(math.log2(abs(j2k.default_settings[-1]
                                                                             - j2k.default_settings[0]))))


def test_progress_text_eta_and_fraction():
    p = live.Progress([("jpeg2000", 4), ("learned-msssim", 2)], started=100.0)
    clock = lambda text: re.sub(r"started \d\d:\d\d:\d\d", "started HH:MM:SS", text)
    assert clock(p.text(now=100.5)) == ("jpeg2000 (1/2): trial 1 of ~4 · started HH:MM:SS, elapsed 0.5 s · "
                                        "estimating time left…")
    assert p.fraction() == 0.0
    p.trial(40, 0.5123, now=101.0)
    p.trial(20, 0.9, now=104.0)
    # 2 trials in 4 s → 2 s per trial; 2 more for jpeg2000 and 2 for the learned codec → 8 s
    assert p.eta_s(now=104.5) == pytest.approx(8.0)
    assert p.fraction() == pytest.approx(2 / 6)
    assert clock(p.text(now=104.5)) == ("jpeg2000 (1/2): trial 3 of ~4 (last: setting 20 → 0.900 bpp) · "
                                        "started HH:MM:SS, elapsed 4.5 s · about 8 s left (estimate)")
    for t, s in ((105.0, 10), (106.0, 15), (107.0, 12)):  # more trials than expected: never negative
        p.trial(s, 0.5, now=t)
    assert p.expected_now() == 6 and p.eta_s(now=107.0) > 0
    p.next_job(now=107.0)
    assert p.text(now=110.0).startswith("learned-msssim (2/2): trial 1 of ~2 · started ")
    p.trial(5.5, 0.5, now=127.0)  # the learned codec's own pace: 20 s per trial → 20 s for the one left
    assert p.eta_s(now=127.0) == pytest.approx(20.0)
    p.trial(6.0, 0.6, now=147.0)
    p.next_job(now=147.0)
    assert p.fraction() == 1.0 and p.text(now=147.0) == "Done: 2 codec(s) in 47.0 s"
    assert live.run_order(["learned-msssim", "jpeg2000", "learned-x", "avif"]) == \
        ["jpeg2000", "avif", "learned-msssim", "learned-x"]


def test_live_compress_reports_every_trial():
    from core.codecs import get_codec
    from core.io import as_bioimage
    from skimage import data as skdata

    image = as_bioimage(np.ascontiguousarray(skdata.camera()[200:328, 200:328]), 8, "cam")
    seen = []
    result = live.live_compress(image, get_codec("jpeg"), target_bpp=1.0,
                                on_trial=lambda s, ev: seen.append((s, ev.metrics["bpp"])))
    assert result.trials == len(seen) >= 3 and result.target_bpp == 1.0
    assert seen[0][1] < 1.0 < seen[1][1]  # the two ends of the knob bracket the target, then bisection
    assert result.evaluation.metrics["bpp"] == min((b for _, b in seen), key=lambda b: abs(b - 1.0))
    row = live.live_row("jpeg", "joint", result.evaluation, 1.0)
    assert row["deviation %"] == round(100 * (result.evaluation.metrics["bpp"] - 1.0), 1)
    assert row["bpp (bits/pixel)"] == round(result.evaluation.metrics["bpp"], 4)
    one = live.live_compress(image, get_codec("jpeg"), setting=50, on_trial=lambda s, ev: seen.append(s))
    assert seen[-1] == 50 and one.trials == 1 and one.target_bpp is None and one.note == ""


def test_large_upload_is_tiled_like_the_runner():
    from core.codecs import get_codec
    from core.catalog import tiling_options
    from core.io import as_bioimage
    from core.tiling import TiledCodec

    limit = int(tiling_options()["learned_max_side"])
    big = as_bioimage(np.zeros((8, limit + 1), np.uint8), 8, "wide")
    coder = live.live_encoder(big, get_codec("learned-msssim"))
    assert isinstance(coder, TiledCodec) and coder.tile == int(tiling_options()["tile"])
    assert live.tiling_note(coder).startswith(f"coded tile by tile ({coder.tile} px tiles, ")
    small = as_bioimage(np.zeros((8, 8), np.uint8), 8, "small")
    assert live.tiling_note(live.live_encoder(small, get_codec("learned-msssim"))) == ""


def test_upload_error_names_the_users_file():
    with pytest.raises(live.UploadError) as info:
        live.read_upload(b"not a png at all", "my scan.png")
    assert "my scan.png" in str(info.value) and "/tmp" not in str(info.value) and "upload.png" not in str(info.value)
    assert live.user_message("/tmp/tmpab_c1/upload.tif: cannot read", "x.tif") == "x.tif: cannot read"


def test_segmentation_row_labels_and_rounding():
    row = live.segmentation_row("jpeg", {"seg_dice": 0.987654, "contour_hd95": 2.25, "seg_iou": None, "new": 1})
    assert row == {"codec": "jpeg", "Dice vs original's segmentation": 0.988, "contour HD95 (px)": 2.25,
                   "IoU vs original's segmentation": None, "new": 1.0}


# --------------------------------------------------------------------------- BD-rate overlap note


def _curve_rows(codec, bpps, quality):
    return [{"stage": 1, "dataset": "ds", "image_id": "a", "codec": codec, "colour_mode": "joint",
             "setting": str(i), "bpp": b, "psnr": q, "error": None} for i, (b, q) in enumerate(zip(bpps, quality))]


def test_overlap_points_and_few_points_note():
    anchor = _curve_rows("jpeg2000", [0.1, 0.2, 0.4, 0.8, 1.6], [25, 30, 35, 40, 45])
    wide = _curve_rows("good", [0.12, 0.25, 0.5, 1.0, 2.0], [26, 31, 36, 41, 46])  # 4 points of each inside 26–45
    narrow = _curve_rows("edge", [0.6, 1.0, 1.5, 2.5, 4.0], [38, 42, 44, 47, 50])  # overlap 38–45
    rows = pd.DataFrame(anchor + wide + narrow)
    table, notice = rd.bd_rate(rows, "psnr", "jpeg2000")
    assert notice is None
    table = rd.overlap_points(rows, table, "psnr", "jpeg2000").set_index("codec")
    assert table.loc["good", "overlap_points"] == 4
    assert table.loc["edge", "overlap_points"] == 2  # anchor 40, 45 inside 38–45 (the codec: 38, 42, 44)
    note = rd.few_points_note(table.reset_index())
    assert note.startswith("Fewer than 4 points") and "edge on ds (2)" in note and "good" not in note
    shown = rd.bd_rate_display(table.reset_index())
    assert "points in overlap" in shown and shown["BD-rate %"].round(1).equals(shown["BD-rate %"])
