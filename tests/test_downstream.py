"""The Dice-safe operating point on a small hand-built results table with a known answer."""
import duckdb
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
