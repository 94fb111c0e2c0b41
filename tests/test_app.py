"""Every dashboard page under streamlit.testing.v1.AppTest: renders without exception, and the
numbers it shows equal those in the small test database (tests/conftest.py: results_db)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from core import store
from core.dashboard import live
from core.codecs import get_codec
from core.evaluate import evaluate
from core.io import read_image_bytes

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _app(monkeypatch, db) -> AppTest:
    monkeypatch.setenv("BIOCODEC_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    return at


def _page(monkeypatch, db, page: str) -> AppTest:
    at = _app(monkeypatch, db)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _sql(db, query: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def _captions(at) -> list[str]:
    return [c for element in at.image for c in element.captions]


def _values(array) -> list:
    """A Plotly JSON array: a list, or a typed array ``{"dtype", "bdata"}`` (base64)."""
    if isinstance(array, dict):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _html(at) -> str:
    """Every st.html body of the page, joined (the 1:1 panels and the colour scale)."""
    return "\n".join(e.proto.body for e in at.get("html"))


def _iframes(at) -> list[str]:
    """The srcdoc of every st.iframe (the split view)."""
    return [e.proto.srcdoc for e in at.get("iframe")]


def test_overview_numbers_match_database(monkeypatch, results_db):
    at = _app(monkeypatch, results_db)
    assert not at.exception, [e.value for e in at.exception]
    shown = {m.label: m.value for m in at.metric}
    rows, errors, codecs = _sql(results_db, "SELECT count(*), count(error), count(DISTINCT codec) FROM results")[0]
    images = _sql(results_db, "SELECT count(*) FROM (SELECT DISTINCT stage, dataset, image_id FROM results)")[0][0]
    stages = _sql(results_db, "SELECT count(DISTINCT stage) FROM results")[0][0]
    embedded = _sql(results_db, "SELECT count(*) FROM results WHERE dataset = 'embedded'")[0][0]
    assert embedded == 2 * (len(get_codec("jpeg").default_settings) + len(get_codec("jpeg2000").default_settings) + 1)
    assert shown["Rows"] == str(rows) == str(embedded + 4)
    assert shown["Errors"] == str(errors) == "1"
    assert shown["Codecs"] == str(codecs) and shown["Images"] == str(images) and shown["Stages"] == str(stages)
    assert at.checkbox(key="ov_training").label == "include images seen in training"
    assert not at.checkbox(key="ov_training").value
    assert any(c.value == f"{rows} rows (held-out only)" for c in at.caption)
    tables = [d.value for d in at.dataframe]
    by_dataset = tables[0].set_index("dataset")
    assert by_dataset.loc["embedded", "images"] == 2 and by_dataset.loc["embedded", "rows"] == embedded
    errors_table = tables[2]
    assert list(errors_table["error"]) == ["load: ImageReadError: fixture failure"]
    runs = tables[3]
    commit, machine = _sql(results_db, "SELECT git_commit, machine FROM runs")[0]
    assert list(runs["machine"]) == [machine] and list(runs["commit"]) == [commit]


def _with_runs(results_db, tmp_path, *runs):
    """A copy of the test database plus ``runs`` rows (dicts of runs columns)."""
    db = tmp_path / "live.duckdb"
    shutil.copy(results_db, db)
    con = store.open_writer(db)
    try:
        for run in runs:
            store.record_run(con, run["run_id"], run["started_at"], "abc", {}, "test machine", [],
                             **{k: v for k, v in run.items() if k not in ("run_id", "started_at")})
    finally:
        con.close()
    return db


def test_overview_shows_a_live_run_and_a_killed_one(monkeypatch, results_db, tmp_path):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    db = _with_runs(results_db, tmp_path,
                    {"run_id": "live-run", "started_at": now - timedelta(minutes=3), "scheduler": "local",
                     "workers": 2, "repeat": 1, "planned_rows": 400, "rows_written": 100, "heartbeat_at": now},
                    {"run_id": "killed-run", "started_at": now - timedelta(days=1), "planned_rows": 50,
                     "rows_written": 20, "heartbeat_at": now - timedelta(hours=23)})
    at = _app(monkeypatch, db)
    assert not at.exception, [e.value for e in at.exception]
    import re

    bars = [(p.value, p.text) for p in at.get("progress")]
    assert len(bars) == 1 and bars[0][0] == 25, bars
    # "N s ago" counts from the heartbeat written above to the page render: a few seconds on a loaded machine
    seconds = re.fullmatch(r"Run `live-run` is writing: 100 of 400 rows, 300 left \(last batch (\d+) s ago\)", bars[0][1])
    assert seconds and int(seconds.group(1)) <= 60, bars
    assert any("`killed-run` stopped at 20 of 50 rows" in w.value and "30 rows left" in w.value for w in at.warning)
    runs = at.dataframe[-1].value.set_index("run_id")
    assert runs.loc["live-run", "execution"] == "local, 2 workers, repeat 1"


@pytest.fixture(scope="module")
def flagged_db(results_db, tmp_path_factory):
    """The test database with the jpeg rows of image 'coins' flagged in_codec_training and the stage-2 row at
    setting 90 (the only Dice-safe one) flagged in_segmenter_training."""
    path = tmp_path_factory.mktemp("flagged") / "results.duckdb"
    shutil.copy(results_db, path)
    con = store.open_writer(path)
    try:
        con.execute("UPDATE results SET in_codec_training = TRUE WHERE image_id = 'coins' AND codec = 'jpeg'")
        con.execute("UPDATE results SET in_segmenter_training = TRUE WHERE stage = 2 AND setting = '90'")
    finally:
        con.close()
    return path


def test_views_use_held_out_rows_unless_the_checkbox_is_ticked(monkeypatch, flagged_db):
    total, flagged = _sql(flagged_db, "SELECT count(*), count(*) FILTER (in_codec_training OR "
                                      "in_segmenter_training) FROM results")[0]
    jpeg = len(get_codec("jpeg").default_settings)
    assert flagged == jpeg + 1
    at = _app(monkeypatch, flagged_db)
    assert {m.label: m.value for m in at.metric}["Rows"] == str(total - flagged)
    assert any(c.value == f"{total - flagged} rows (held-out only); {flagged} rows of images seen in training "
               "left out" for c in at.caption)
    at.checkbox(key="ov_training").check().run()
    assert {m.label: m.value for m in at.metric}["Rows"] == str(total)
    assert any(c.value == f"{total} rows (including images seen in training)" for c in at.caption)

    at.switch_page("views/rate_distortion.py").run()
    assert not at.exception
    at.sidebar.multiselect(key="rd_dataset").set_value([]).run()
    at.sidebar.multiselect(key="rd_codecs").set_value([]).run()
    at.sidebar.multiselect(key="rd_stage").set_value([0]).run()
    assert at.sidebar.checkbox(key="rd_training").label == "include images seen in training"
    points = at.dataframe[-1].value
    assert set(points.loc[points["codec"] == "jpeg", "images"]) == {1}  # camera only
    assert set(points.loc[points["codec"] == "jpeg2000", "images"]) == {2}
    ok0 = _sql(flagged_db, "SELECT count(*) FROM results WHERE stage = 0 AND error IS NULL")[0][0]
    assert any(f"from {ok0 - jpeg} rows (held-out only); {jpeg} rows of images seen in training left out" in c.value
               for c in at.caption)
    at.sidebar.checkbox(key="rd_training").check().run()
    points = at.dataframe[-1].value
    assert set(points.loc[points["codec"] == "jpeg", "images"]) == {2}
    assert any(f"from {ok0} rows (including images seen in training)" in c.value for c in at.caption)

    at.switch_page("views/downstream.py").run()
    assert not at.exception
    safe = at.dataframe[0].value  # setting 90 is flagged: no held-out setting reaches Dice 0.95
    assert safe["setting"].isna().all() and safe["best_metric"].iloc[0] == pytest.approx(0.93)
    at.sidebar.checkbox(key="ds_training").check().run()
    assert [str(s) for s in at.dataframe[0].value["setting"]] == ["90"]


def test_missing_database_says_how_to_make_it(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "nothing.duckdb")
    assert not at.exception
    assert any("python -m core.runner" in i.value for i in at.info)


def test_locked_database_shows_retry(monkeypatch, tmp_path):
    db = tmp_path / "locked.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from core import store
        con = store.open_writer({str(db)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)], cwd=Path(APP).parent, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        at = _app(monkeypatch, db)
        assert not at.exception
        assert any("busy" in e.value and "runner" in e.value for e in at.error)
        assert at.button(key="retry_locked").label == "Retry"
    finally:
        holder.kill()
        holder.wait()


def test_rate_distortion_page(monkeypatch, results_db):
    at = _page(monkeypatch, results_db, "views/rate_distortion.py")
    # opens on one dataset of stage 2 (the fixture's isbi2012_em rows: jpeg only)
    assert at.sidebar.multiselect(key="rd_stage").value == [2]
    assert at.sidebar.multiselect(key="rd_dataset").value == ["isbi2012_em"]
    assert at.sidebar.multiselect(key="rd_codecs").value == ["jpeg"]
    assert len(at.get("plotly_chart")) == 2  # quality vs bpp beside Dice vs bpp
    dice = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert dice["layout"]["yaxis"]["title"]["text"].startswith("Dice")
    assert sorted(_values(dice["data"][0]["y"])) == pytest.approx([0.80, 0.93, 0.98])  # tests/conftest.py rows
    at.sidebar.multiselect(key="rd_dataset").set_value([]).run()
    at.sidebar.multiselect(key="rd_stage").set_value([0]).run()
    at.sidebar.multiselect(key="rd_codecs").set_value(["jpeg", "jpeg2000"]).run()
    assert not at.exception
    assert at.get("plotly_chart"), "no Plotly chart"
    points = at.dataframe[-1].value
    want = dict(_sql(results_db, "SELECT codec || ' ' || setting, avg(psnr) FROM results WHERE stage = 0 "
                                 "AND codec IN ('jpeg', 'jpeg2000') GROUP BY codec, setting"))
    sweeps = len(get_codec("jpeg").default_settings) + len(get_codec("jpeg2000").default_settings)
    assert len(points) == len(want) == sweeps
    for codec, setting, y in zip(points["codec"], points["setting"], points["y"]):
        assert y == pytest.approx(want[f"{codec} {setting}"])
    # the page shows core.bdrate's table for stage 0, anchor jpeg2000, unchanged
    from core.bdrate import bd_rate_table

    con = duckdb.connect(str(results_db), read_only=True)
    try:
        want_bd = bd_rate_table(con, metric="psnr", anchor="jpeg2000", stage=0, dataset=None)
    finally:
        con.close()
    shown_bd = at.dataframe[0].value
    assert list(shown_bd["codec"]) == list(want_bd["codec"]) == ["jpeg"]
    assert shown_bd["BD-rate %"].tolist() == pytest.approx(want_bd["bd_rate"].tolist(), nan_ok=True, abs=0.051)
    assert shown_bd["points in overlap"].iloc[0] >= 1
    assert math.isfinite(shown_bd["BD-rate %"].iloc[0])  # jpeg vs jpeg2000: >= 4 points each, computable
    assert any("held-out only" in c.value for c in at.caption)
    at.selectbox(key="rd_metric").set_value("ssim").run()
    assert any("BD-rate is computed for" in w.value for w in at.warning)
    at.selectbox(key="rd_metric").set_value("psnr").run()
    at.radio(key="rd_view").set_value("per_image").run()
    rows = _sql(results_db, "SELECT count(*) FROM results WHERE stage = 0 AND codec IN ('jpeg', 'jpeg2000')")[0][0]
    assert not at.exception and len(at.dataframe[-1].value) == rows


def _embedded(at):
    at.selectbox(key="sbs_stage").set_value(0).run()
    at.selectbox(key="sbs_dataset").set_value("embedded").run()
    at.selectbox(key="sbs_image").set_value("camera").run()
    at.selectbox(key="sbs_codec_a").set_value("jpeg").run()
    at.selectbox(key="sbs_codec_b").set_value("jpeg2000").run()


def test_side_by_side_reencodes_stored_rows(monkeypatch, results_db):
    at = _page(monkeypatch, results_db, "views/side_by_side.py")
    assert at.selectbox(key="sbs_stage").value == 2  # opens on held-out EM (stage 2)
    _embedded(at)
    at.radio(key="sbs_match").set_value("setting").run()
    at.selectbox(key="sbs_setting_jpeg").set_value("50").run()
    at.selectbox(key="sbs_setting_jpeg2000").set_value("20").run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value.set_index("codec")
    for codec, setting in (("jpeg", "50"), ("jpeg2000", "20")):
        stored_bytes, stored_psnr = _sql(results_db, f"SELECT bytes, psnr FROM results WHERE image_id = 'camera' "
                                                     f"AND codec = '{codec}' AND setting = '{setting}'")[0]
        assert table.loc[codec, "bytes"] == table.loc[codec, "stored bytes"] == stored_bytes
        assert table.loc[codec, "PSNR (dB)"] == round(stored_psnr, 2)
        assert bool(table.loc[codec, "same bytes as stored"])
    # pixel-exact comparison: split view (self-contained, no network) and 1:1 panels of all three images
    split = _iframes(at)
    assert len(split) == 1 and 'class="divider"' in split[0] and "http" not in split[0].replace("data:image", "")
    html = _html(at)
    assert html.count('class="bc-native"') == 3 + 2  # original, 2 reconstructions, 2 difference maps
    assert 'width="512" height="512"' in html  # the embedded camera at its pixel size
    assert "bc-colour-scale" in html
    assert any("8-bit, shown as stored" in c.value for c in at.caption)
    import re

    def top_tick():
        scale = [e.proto.body for e in at.get("html") if "bc-colour-scale" in e.proto.body][0]
        return float(re.findall(r"values ≥ ([0-9.e+]+) are drawn", scale)[0])

    maximum = top_tick()
    at.radio(key="sbs_diffscale").set_value("99th percentile").run()
    assert 1 <= top_tick() < maximum  # a percentile of the same maps: smaller errors get the colours


def test_side_by_side_matched_bpp_flags_unmatched_pairs(monkeypatch, results_db):
    from core.dashboard import compare, data

    at = _page(monkeypatch, results_db, "views/side_by_side.py")
    _embedded(at)
    assert at.radio(key="sbs_match").value == "bpp"
    rates = {c: [b for (b,) in _sql(results_db, f"SELECT bpp FROM results WHERE image_id = 'camera' AND "
                                                f"codec = '{c}' AND stage = 0")] for c in ("jpeg", "jpeg2000")}
    opening = data.best_matched_target(rates["jpeg"], rates["jpeg2000"])
    key = [w for w in at.number_input if w.key.startswith("sbs_bpp_")][0].key
    assert at.number_input(key=key).value == pytest.approx(round(opening, 3))
    for target in (opening, 0.3):
        at.number_input(key=key).set_value(round(target, 3)).run()
        chosen = {c: min(r, key=lambda b: abs(b - round(target, 3))) for c, r in rates.items()}
        table = at.dataframe[0].value.set_index("codec")
        for c, b in chosen.items():
            assert table.loc[c, "bpp (bits/pixel)"] == round(b, 4)
            assert table.loc[c, "deviation %"] == round(100 * (b / round(target, 3) - 1), 1)
        warned = any("Not at matched bpp" in w.value for w in at.warning)
        assert warned == bool(compare.unmatched_pairs(chosen))
        assert any(compare.deviation_text(chosen["jpeg"], round(target, 3)) in c.value for c in at.caption)


def test_side_by_side_search_for_the_target(monkeypatch, results_db):
    from core.dashboard import data

    at = _page(monkeypatch, results_db, "views/side_by_side.py")
    _embedded(at)
    key = [w for w in at.number_input if w.key.startswith("sbs_bpp_")][0].key
    at.number_input(key=key).set_value(0.8).run()
    at.button(key="sbs_search").click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value.set_index("codec")
    assert "stored bytes" not in table  # searched now, not the stored rows
    image = data.find_ref(0, "embedded", "camera")
    from core.datasets import load_ref

    original = load_ref(image)
    for name in ("jpeg", "jpeg2000"):
        found = live.search_setting(original, get_codec(name), 0.8)
        assert table.loc[name, "setting"] == found.evaluation.metrics["setting"]
        assert table.loc[name, "bytes"] == found.evaluation.metrics["bytes"]
    assert any(c.value.startswith("Done: 2 codec(s) in") for c in at.caption)  # the progress line's end


def test_side_by_side_missing_stage_images(monkeypatch, results_db, tmp_path):
    monkeypatch.setenv("BIOCODEC_DATA_ROOT", str(tmp_path / "no_data"))
    at = _page(monkeypatch, results_db, "views/side_by_side.py")
    at.selectbox(key="sbs_stage").set_value(2).run()
    assert not at.exception
    assert any("Cannot reload the original" in e.value for e in at.error)


def test_downstream_page(monkeypatch, results_db):
    at = _page(monkeypatch, results_db, "views/downstream.py")
    assert at.get("plotly_chart")
    points = at.dataframe[-1].value
    want = dict(_sql(results_db, "SELECT setting, seg_dice FROM results WHERE stage = 2 AND error IS NULL"))
    assert dict(zip(points["setting"], points["y"])) == pytest.approx(want)
    # threshold 0.95: only setting 90 (Dice 0.98, factor 8) of the fixture rows is Dice-safe
    safe = at.dataframe[0].value
    assert [str(s) for s in safe["setting"]] == ["90"] and list(safe["codec"]) == ["jpeg"]
    assert "Dice-safe point" in at.get("plotly_chart")[0].proto.spec
    assert any("3 rows (held-out only) with seg_dice" in c.value for c in at.caption)


def test_downstream_page_without_downstream_rows(monkeypatch, results_db):
    at = _page(monkeypatch, results_db, "views/downstream.py")
    at.sidebar.multiselect(key="ds_stage").set_value([0]).run()
    assert not at.exception
    assert any("No downstream metrics" in i.value for i in at.info)


def test_live_comparison_setting(monkeypatch, results_db, gray_png_bytes):
    at = _page(monkeypatch, results_db, "views/live.py")
    assert any("≤ 50 MB and ≤ 4096×4096" in c.value for c in at.caption)
    at.file_uploader(key="live_upload").set_value(("crop.png", gray_png_bytes, "image/png")).run()
    assert at.multiselect(key="live_codecs").value == ["learned-msssim", "jpeg2000", "avif"]  # preselected
    at.radio(key="live_target").set_value("setting").run()
    at.multiselect(key="live_codecs").set_value(["jpeg", "png"]).run()
    at.select_slider(key="live_set_jpeg").set_value(50).run()
    at.button(key="live_run").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value.set_index("codec")
    image = read_image_bytes(gray_png_bytes, "crop.png")
    jpeg = evaluate(image, get_codec("jpeg"), 50).metrics
    png = evaluate(image, get_codec("png"), None).metrics
    assert table.loc["jpeg", "bytes"] == jpeg["bytes"] and table.loc["png", "bytes"] == png["bytes"]
    assert table.loc["jpeg", "PSNR (dB)"] == round(jpeg["psnr"], 2)
    assert table.loc["jpeg", "bpp (bits/pixel)"] == round(8 * jpeg["bytes"] / (192 * 192), 4)
    assert table.loc["png", "PSNR (dB)"] == float("inf")
    assert "deviation %" not in table  # no target: no deviation
    html = _html(at)
    assert f"jpeg @ 50 ({jpeg['bpp']:.3f} bpp)" in html and 'width="192" height="192"' in html
    assert any("Settings chosen per codec: the rates differ" in c.value for c in at.caption)
    labels = [b.label for b in at.get("download_button")]
    assert f"Download jpeg file ({jpeg['bytes']:,} bytes)" in labels and "Download png reconstruction (PNG)" in labels


def test_live_comparison_target_bpp(monkeypatch, results_db, gray_png_bytes):
    at = _page(monkeypatch, results_db, "views/live.py")
    at.file_uploader(key="live_upload").set_value(("crop.png", gray_png_bytes, "image/png")).run()
    at.multiselect(key="live_codecs").set_value(["jpeg2000", "jpeg"]).run()
    assert at.radio(key="live_target").value == "bpp"  # matched rate by default
    at.number_input(key="live_bpp").set_value(0.5).run()
    at.button(key="live_run").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value.set_index("codec")
    image = read_image_bytes(gray_png_bytes, "crop.png")
    bpps = {}
    for name in ("jpeg2000", "jpeg"):
        found = live.search_setting(image, get_codec(name), 0.5)
        m = found.evaluation.metrics
        bpps[name] = m["bpp"]
        assert table.loc[name, "bytes"] == m["bytes"] and table.loc[name, "setting"] == str(found.setting)
        assert table.loc[name, "deviation %"] == round(100 * (m["bpp"] / 0.5 - 1), 1)
        assert any(f"achieved {m['bpp']:.3f} bpp ({100 * (m['bpp'] / 0.5 - 1):+.1f} % vs target 0.500 bpp)" in c.value
                   for c in at.caption)
    from core.dashboard import compare

    assert any("Not at matched bpp" in w.value for w in at.warning) == bool(compare.unmatched_pairs(bpps))


def test_live_comparison_16bit_windowed(monkeypatch, results_db, rgb16_pixels):
    import imagecodecs

    data = bytes(imagecodecs.png_encode(rgb16_pixels))
    at = _page(monkeypatch, results_db, "views/live.py")
    at.file_uploader(key="live_upload").set_value(("rgb16.png", data, "image/png")).run()
    assert "jpeg" not in at.multiselect(key="live_codecs").options  # 8-bit only codec not offered
    at.radio(key="live_target").set_value("setting").run()
    at.multiselect(key="live_codecs").set_value(["jpegxl"]).run()
    distance = get_codec("jpegxl").default_settings[1]  # a setting of the slider (the catalog sweep)
    at.select_slider(key="live_set_jpegxl").set_value(distance).run()
    at.button(key="live_run").click().run()
    assert not at.exception and not at.error
    row = at.dataframe[0].value.iloc[0]
    want = evaluate(read_image_bytes(data, "rgb16.png"), get_codec("jpegxl"), distance).metrics
    assert row["bytes"] == want["bytes"] and row["PSNR (dB)"] == round(want["psnr"], 2)
    assert any("16-bit data shown 8-bit: linear window 0.5–99.5 percentile" in c.value for c in at.caption)


def test_live_comparison_rgb_per_channel_override(monkeypatch, results_db):
    import imagecodecs
    from skimage import data as skdata

    from core.codecs.per_channel import PerChannelCodec

    rgb = bytes(imagecodecs.png_encode(skdata.astronaut()[:180, :200]))
    at = _page(monkeypatch, results_db, "views/live.py")
    at.file_uploader(key="live_upload").set_value(("astronaut.png", rgb, "image/png")).run()
    assert at.radio(key="live_mode").value == "joint"  # RGB: 3-channel (joint) by default
    at.radio(key="live_mode").set_value("per_channel").run()
    at.radio(key="live_target").set_value("setting").run()
    at.multiselect(key="live_codecs").set_value(["jpeg"]).run()
    at.select_slider(key="live_set_jpeg").set_value(30).run()
    at.button(key="live_run").click().run()
    assert not at.exception and not at.error
    row = at.dataframe[0].value.iloc[0]
    want = evaluate(read_image_bytes(rgb, "astronaut.png"), PerChannelCodec(get_codec("jpeg")), 30).metrics
    assert row["colour mode"] == "per_channel" and row["bytes"] == want["bytes"]


def test_live_comparison_tiff_stack_page(monkeypatch, results_db, tmp_path):
    import numpy as np
    import tifffile

    stack = np.stack([np.full((40, 50), 1000 * (i + 1), np.uint16) for i in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")  # 3 pages, not one planar RGB image
    at = _page(monkeypatch, results_db, "views/live.py")
    at.number_input(key="live_page").set_value(2).run()
    at.file_uploader(key="live_upload").set_value(("stack.tif", (tmp_path / "stack.tif").read_bytes(),
                                                    "image/tiff")).run()
    assert not at.exception and not at.error
    assert any("**stack.tif**: 50×40 px, 1 channel(s), 16-bit" in m.value for m in at.markdown)
    assert any("= [3000, 3001]" in c.value for c in at.caption)  # plane 2 holds 3000 everywhere


def test_live_comparison_rejects_bad_upload(monkeypatch, results_db):
    at = _page(monkeypatch, results_db, "views/live.py")
    at.file_uploader(key="live_upload").set_value(("broken.png", b"definitely not a PNG", "image/png")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(e.startswith("Cannot use this file: broken.png") for e in errors), errors
    assert not any("/tmp" in e or "upload.png" in e for e in errors), errors  # the user's name, not the server's


def test_export_page(monkeypatch, results_db):
    at = _page(monkeypatch, results_db, "views/export.py")
    ok_rows = _sql(results_db, "SELECT count(*) FROM results WHERE error IS NULL")[0][0]
    total = _sql(results_db, "SELECT count(*) FROM results")[0][0]
    assert at.metric[0].value == str(ok_rows) == str(total - 1)
    at.sidebar.checkbox(key="ex_errors").check().run()
    assert at.metric[0].value == str(total)
    at.sidebar.multiselect(key="ex_codecs").set_value(["png"]).run()
    assert at.metric[0].value == "2" and len(at.dataframe[0].value) == 2
    assert {b.label for b in at.get("download_button")} == {"Download CSV", "Download Parquet"}
