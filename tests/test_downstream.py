"""The Dice-safe operating point on a small hand-built results table with a known answer."""
import duckdb
import pandas as pd
import math
import pytest

from core.downstream import dice_safe_operating_points


@pytest.fixture()
def con():
    con = duckdb.connect()
    con.execute("""CREATE TABLE results (stage INTEGER, dataset VARCHAR, image_id VARCHAR, codec VARCHAR,
                   setting VARCHAR, colour_mode VARCHAR, factor DOUBLE, bpp DOUBLE, seg_dice DOUBLE,
                   contour_hd95 DOUBLE, error VARCHAR)""")
    rows = [
        # jpeg on two images: q90 factor 5/7 (mean 6), dice .99/.97 (mean .98); q50 factor 12/14 (13),
        # dice .96/.95 (.955); q10 factor 30/40 (35), dice .90/.80 (.85)
        (2, "em", "a", "jpeg", "90", "joint", 5, 1.6, 0.99, 1.0, None),
        (2, "em", "b", "jpeg", "90", "joint", 7, 1.2, 0.97, 1.0, None),
        (2, "em", "a", "jpeg", "50", "joint", 12, 0.7, 0.96, 2.0, None),
        (2, "em", "b", "jpeg", "50", "joint", 14, 0.5, 0.95, 4.0, None),
        (2, "em", "a", "jpeg", "10", "joint", 30, 0.3, 0.90, 8.0, None),
        (2, "em", "b", "jpeg", "10", "joint", 40, 0.2, 0.80, 9.0, None),
        # a failed row must be ignored (it would pull q10's mean up)
        (2, "em", "c", "jpeg", "10", "joint", 50, 0.1, 1.00, 0.0, "boom"),
        # webp never reaches 0.95
        (2, "em", "a", "webp", "80", "joint", 10, 0.8, 0.90, 3.0, None),
        (2, "em", "b", "webp", "80", "joint", 10, 0.8, 0.92, 3.0, None),
        # avif dips below 0.95 at 10× and recovers at 20× (by chance): the safe range stops at 5×
        (2, "em2", "a", "avif", "90", "joint", 5, 1.6, 0.97, 1.0, None),
        (2, "em2", "a", "avif", "60", "joint", 10, 0.8, 0.93, 1.0, None),
        (2, "em2", "a", "avif", "30", "joint", 20, 0.4, 0.96, 1.0, None),
        # a dataset without downstream metrics does not appear
        (1, "kodak", "k", "jpeg", "90", "joint", 8, 1.0, None, None, None),
    ]
    con.executemany("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    return con


def test_largest_factor_whose_mean_dice_passes(con):
    df = dice_safe_operating_points(con, threshold=0.95)
    assert list(zip(df.dataset, df.codec)) == [("em", "jpeg"), ("em", "webp"), ("em2", "avif")]
    jpeg = df[df.codec == "jpeg"].iloc[0]
    assert jpeg.setting == "50"
    assert jpeg.factor == pytest.approx(13.0)
    assert jpeg.bpp == pytest.approx(0.6)
    assert jpeg.metric == pytest.approx(0.955)
    assert jpeg.n_images == 2 and jpeg.n_settings == 3
    assert jpeg.best_metric == pytest.approx(0.98)
    webp = df[df.codec == "webp"].iloc[0]
    assert webp.setting is None or (isinstance(webp.setting, float) and math.isnan(webp.setting))
    assert math.isnan(webp.factor) and math.isnan(webp.metric)
    assert webp.best_metric == pytest.approx(0.91)


def test_threshold_is_configurable_and_distances_use_less_or_equal(con):
    strict = dice_safe_operating_points(con, threshold=0.97)
    assert strict[strict.codec == "jpeg"].iloc[0].factor == pytest.approx(6.0)
    loose = dice_safe_operating_points(con, threshold=0.8)
    assert loose[loose.codec == "jpeg"].iloc[0].factor == pytest.approx(35.0)
    hd = dice_safe_operating_points(con, threshold=3.0, metric="contour_hd95")
    assert hd[hd.codec == "jpeg"].iloc[0].factor == pytest.approx(13.0)  # mean hd95 3.0 ≤ 3.0
    assert hd[hd.codec == "webp"].iloc[0].factor == pytest.approx(10.0)
    with pytest.raises(ValueError):
        dice_safe_operating_points(con, metric="psnr; DROP TABLE results")


def test_metric_must_stay_above_threshold_unless_monotone_is_off(con):
    safe = dice_safe_operating_points(con, threshold=0.95)
    avif = safe[safe.codec == "avif"].iloc[0]
    assert (avif.setting, avif.factor, avif.metric) == ("90", 5.0, pytest.approx(0.97))
    plain = dice_safe_operating_points(con, threshold=0.95, monotone=False)
    avif = plain[plain.codec == "avif"].iloc[0]
    assert (avif.setting, avif.factor, avif.metric) == ("30", 20.0, pytest.approx(0.96))
    # jpeg is monotone in this table: both readings agree
    assert plain[plain.codec == "jpeg"].iloc[0].factor == safe[safe.codec == "jpeg"].iloc[0].factor == 13.0


# --------------------------------------------------------------------------- judged two ways

from core.downstream import AGREEMENT_CAP, TWO_WAY_COLUMNS, agreement_threshold, dice_safe_two_way  # noqa: E402

FLOORS = {"em": {"noise": {"dice": {"mean": 0.96, "min": 0.95}}, "shift": {"dice": {"mean": 0.97, "min": 0.9}}},
          "em3": {"noise": {"dice": {"mean": 0.999, "min": 0.99}}}}


@pytest.fixture()
def con2():
    con = duckdb.connect()
    con.execute("""CREATE TABLE results (stage INTEGER, dataset VARCHAR, image_id VARCHAR, codec VARCHAR,
                   setting VARCHAR, colour_mode VARCHAR, factor DOUBLE, seg_dice DOUBLE,
                   seg_dice_gt_original DOUBLE, seg_dice_gt_reconstruction DOUBLE, error VARCHAR,
                   in_codec_training BOOLEAN, in_segmenter_training BOOLEAN)""")
    rows = [
        # em (noise floor 0.96 → agreement threshold 0.94)
        # jpeg q90: factor 6, dice .98, gt delta (0 + .01)/2; q50: factor 13, dice .945 (passes .94, not .95),
        # gt delta (−.015 + 0)/2 = −.0075; q10: factor 35, dice .85, gt delta (−.2 − .01)/2
        (2, "em", "a", "jpeg", "90", "joint", 5, 0.99, 0.80, 0.80, None, False, False),
        (2, "em", "b", "jpeg", "90", "joint", 7, 0.97, 0.70, 0.71, None, False, None),
        (2, "em", "a", "jpeg", "50", "joint", 12, 0.95, 0.80, 0.785, None, False, False),
        (2, "em", "b", "jpeg", "50", "joint", 14, 0.94, 0.70, 0.70, None, False, False),
        (2, "em", "a", "jpeg", "10", "joint", 30, 0.90, 0.80, 0.60, None, False, False),
        (2, "em", "b", "jpeg", "10", "joint", 40, 0.80, 0.70, 0.69, None, False, False),
        (2, "em", "c", "jpeg", "10", "joint", 50, 1.00, 0.70, 0.90, "boom", False, False),  # failed: ignored
        # webp: dice .93 < .94 at 10×, but as accurate as the original; its 20× row is of a seen image
        (2, "em", "a", "webp", "80", "joint", 10, 0.93, 0.80, 0.80, None, False, False),
        (2, "em", "a", "webp", "40", "joint", 20, 1.00, 0.80, 0.80, None, False, True),
        # em2 (no noise floor → 0.95): avif dips at 10× and recovers at 20× in both criteria
        (2, "em2", "a", "avif", "90", "joint", 5, 0.97, 0.80, 0.80, None, False, False),
        (2, "em2", "a", "avif", "60", "joint", 10, 0.93, 0.80, 0.75, None, False, False),
        (2, "em2", "a", "avif", "30", "joint", 20, 0.96, 0.80, 0.80, None, False, False),
        # em3 (noise floor 0.999 → capped at 0.95); no ground truth
        (2, "em3", "a", "jpeg", "90", "joint", 4, 0.96, None, None, None, False, False),
        # no downstream metrics: not listed
        (1, "kodak", "k", "jpeg", "90", "joint", 8, None, None, None, None, False, False),
    ]
    con.executemany("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    return con


def test_agreement_threshold_is_capped_noise_floor_minus_margin():
    assert agreement_threshold("em", FLOORS) == pytest.approx(0.94)
    assert agreement_threshold("em3", FLOORS) == AGREEMENT_CAP == 0.95
    assert agreement_threshold("unmeasured", FLOORS) == 0.95 and agreement_threshold("em", {}) == 0.95


def test_two_way_safe_points(con2):
    df = dice_safe_two_way(con2, FLOORS)
    assert list(df.columns) == TWO_WAY_COLUMNS
    assert list(zip(df.dataset, df.codec)) == [("em", "jpeg"), ("em", "webp"), ("em2", "avif"), ("em3", "jpeg")]
    got = df.set_index(["dataset", "codec"])
    jpeg = got.loc[("em", "jpeg")]
    assert (jpeg.safe_factor_agreement, jpeg.setting_agreement) == (13.0, "50")  # .945 ≥ .94 (floor .96 − .02)
    assert (jpeg.safe_factor_ground_truth, jpeg.setting_ground_truth) == (13.0, "50")  # −.0075 ≥ −.01
    assert jpeg.threshold_agreement == pytest.approx(0.94) and jpeg.noise_floor == pytest.approx(0.96)
    assert jpeg.images == 2 and jpeg.n_settings == 3
    webp = got.loc[("em", "webp")]  # the seen image's 20× row is left out
    assert math.isnan(webp.safe_factor_agreement) and pd.isna(webp.setting_agreement)
    assert webp.safe_factor_ground_truth == 10.0 and webp.n_settings == 1
    avif = got.loc[("em2", "avif")]  # monotone: the dip at 10× caps both at 5×
    assert (avif.safe_factor_agreement, avif.safe_factor_ground_truth) == (5.0, 5.0)
    assert avif.threshold_agreement == 0.95 and math.isnan(avif.noise_floor)
    capped = got.loc[("em3", "jpeg")]
    assert capped.threshold_agreement == 0.95 and capped.safe_factor_agreement == 4.0
    assert math.isnan(capped.safe_factor_ground_truth)  # no ground-truth columns filled


def test_two_way_monotone_off_and_all_rows(con2):
    plain = dice_safe_two_way(con2, FLOORS, monotone=False).set_index(["dataset", "codec"])
    assert plain.loc[("em2", "avif")].safe_factor_agreement == 20.0
    assert plain.loc[("em2", "avif")].safe_factor_ground_truth == 20.0
    everything = dice_safe_two_way(con2, FLOORS, held_out_only=False).set_index(["dataset", "codec"])
    webp = everything.loc[("em", "webp")]  # 10× fails agreement, so 20× cannot count (monotone)
    assert math.isnan(webp.safe_factor_agreement) and webp.safe_factor_ground_truth == 20.0


def test_two_way_without_ground_truth_columns(con):
    df = dice_safe_two_way(con, {})  # the older fixture table: no seg_dice_gt_* columns, no training flags
    jpeg = df[df.codec == "jpeg"].iloc[0]
    assert jpeg.safe_factor_agreement == pytest.approx(13.0) and math.isnan(jpeg.safe_factor_ground_truth)
    # the same agreement factor as the one-way query at the same threshold
    one_way = dice_safe_operating_points(con, threshold=0.95)
    assert jpeg.safe_factor_agreement == one_way[one_way.codec == "jpeg"].iloc[0].factor


def test_dashboard_two_way_and_noise_floor_lines(con2):
    import plotly.graph_objects as go

    from core.dashboard import rd
    from core.segmentation.noise_floor import LABEL

    rows = con2.execute("SELECT * FROM results").df()
    table, notice = rd.dice_safe_two_way_points(rows, FLOORS)
    assert notice is None
    # the dashboard gets its rows already selected: the seen image's row counts here
    assert table.set_index(["dataset", "codec"]).loc[("em", "webp")].safe_factor_ground_truth == 20.0
    assert "min(0.95, segmenter noise floor − 0.02)" in rd.two_way_rule()
    lines = rd.noise_floor_lines(FLOORS, "seg_dice", ["em", "em2"])
    assert list(lines["dataset"]) == ["em"] and lines["y"].iloc[0] == 0.96
    assert (lines["low"].iloc[0], lines["high"].iloc[0]) == (0.96, 0.97) and LABEL in lines["label"].iloc[0]
    assert rd.noise_floor_lines(FLOORS, "seg_iou", ["em"]).empty
    fig = rd.add_noise_floor(go.Figure(), lines)
    assert [s.y0 for s in fig.layout.shapes if s.type == "line"] == [0.96]
    assert "segmenter noise floor (σ=0.5 noise / 1-px shift)" in fig.layout.annotations[0].text


def test_downstream_page_shows_noise_floor_and_two_way_table(monkeypatch, results_db, tmp_path):
    """The Downstream page (Streamlit AppTest) draws the noise floor of the fixture's isbi2012_em rows and
    shows the two-way table with its rule."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.segmentation import noise_floor as nf

    floor_file = tmp_path / "noise_floor.json"
    nf.write_noise_floor({"isbi2012_em": {"images": 10, "noise": {"dice": {"mean": 0.985, "min": 0.97}},
                                          "shift": {"dice": {"mean": 0.96, "min": 0.95}}}}, floor_file, "test")
    monkeypatch.setattr(nf, "NOISE_FLOOR_JSON", floor_file)
    monkeypatch.setenv("BIOCODEC_DB", str(results_db))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/downstream.py").run()
    assert not at.exception, [e.value for e in at.exception]
    import json

    layout = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    assert [a["text"] for a in layout["annotations"]] == [
        "segmenter noise floor (σ=0.5 noise / 1-px shift) · isbi2012_em: 0.985"]
    assert [(s["y0"], s["y1"]) for s in layout["shapes"] if s["type"] == "rect"] == [(0.96, 0.985)]
    two_way = next(d.value for d in at.dataframe if "safe_factor_agreement" in d.value.columns)
    row = two_way.iloc[0]
    # fixture rows: Dice .80 / .93 / .98 at factors 32 / 16 / 8; threshold min(.95, .985 − .02) = .95
    assert (row.codec, row.safe_factor_agreement, row.setting_agreement) == ("jpeg", 8.0, "90")
    assert row.threshold_agreement == 0.95 and row.noise_floor == 0.985
    assert any("min(0.95, segmenter noise floor − 0.02)" in c.value for c in at.caption)
    assert at.dataframe[-1].value["setting"].tolist()  # "Plotted points" stays the last table
