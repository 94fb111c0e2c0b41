"""The DuckDB store: schema version, upsert without duplicates, read-only readers."""
import math
import subprocess
import sys

import pytest

from core import store


def _row(**kw):
    base = {"stage": 0, "dataset": "d", "image_id": "i", "codec": "png", "setting": "-", "colour_mode": "joint",
            "bytes": 10, "psnr": math.inf, "ms_ssim": float("nan")}
    base.update(kw)
    return base


def test_schema_version_upsert_and_inf_nan(tmp_path):
    db = tmp_path / "s.duckdb"
    con = store.open_writer(db)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(store.SCHEMA_VERSION)
    store.upsert_results(con, [_row(), _row(setting="x", bytes=11)])
    store.upsert_results(con, [_row(bytes=12)])  # same key: replaced, not duplicated
    assert store.count_results(con) == 2
    got = con.execute("SELECT bytes, psnr, ms_ssim FROM results WHERE setting='-'").fetchone()
    assert got[0] == 12 and got[1] == math.inf and got[2] is None  # +inf stays inf; NaN stored as NULL
    assert store.stored_keys(con) == {(0, "d", "i", "png", "-", "joint"), (0, "d", "i", "png", "x", "joint")}
    with pytest.raises(KeyError, match="unknown result columns"):
        store.upsert_results(con, [_row(not_a_column=1)])
    con.close()


def test_reader_is_read_only_and_reports_a_held_lock(tmp_path):
    db = tmp_path / "l.duckdb"
    store.open_writer(db).close()
    with store.reader(db) as con:
        with pytest.raises(Exception, match="read-only"):
            con.execute("CREATE TABLE x (a INT)")
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); "
                               "print('held', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(store.StoreLockedError, match="locked by a writer"):
            store.open_reader(db, retries=2, wait_s=0.1)
    finally:
        holder.kill()
    with pytest.raises(FileNotFoundError, match="run `python -m core.runner`"):
        store.open_reader(tmp_path / "absent.duckdb")


def test_format_setting():
    assert [store.format_setting(s) for s in (None, 20.0, 0.75, 7)] == ["-", "20", "0.75", "7"]


def test_compact_keeps_every_row_and_constraint_and_drops_free_space(tmp_path):
    db = tmp_path / "c.duckdb"
    con = store.open_writer(db)
    store.upsert_results(con, [_row(image_id=f"i{k}", bytes=k, psnr=30.0 + k) for k in range(30)])
    # a large batch rewritten away leaves free blocks behind (DuckDB never shrinks the file in place)
    con.execute("INSERT INTO results (stage, dataset, image_id, codec, setting, colour_mode, bytes, psnr) "
                "SELECT 0, 'bulk', 'b' || i, 'png', '-', 'joint', i, random() FROM range(300000) t(i)")
    con.execute("DELETE FROM results WHERE dataset = 'bulk'")
    con.execute("CHECKPOINT")
    con.close()
    with store.reader(db) as con:
        rows = con.execute("SELECT * FROM results ORDER BY image_id").fetchall()
        constraints = con.execute("SELECT table_name, constraint_text FROM duckdb_constraints() ORDER BY ALL").fetchall()
    before, after = store.compact(db)
    assert after < before / 2 and after == db.stat().st_size and not (tmp_path / "c.duckdb.compact").exists()
    with store.reader(db) as con:
        assert con.execute("SELECT * FROM results ORDER BY image_id").fetchall() == rows
        assert con.execute("SELECT table_name, constraint_text FROM duckdb_constraints() ORDER BY ALL").fetchall() \
            == constraints
    con = store.open_writer(db)  # still the schema the runner writes: upserts replace, never duplicate
    store.upsert_results(con, [_row(image_id="i0", bytes=1)])
    assert store.count_results(con) == 30
    con.close()
    with store.run_lock(db):  # a runner holds the database: compacting waits for no one, it refuses
        with pytest.raises(store.StoreLockedError):
            store.compact(db)
    with pytest.raises(FileNotFoundError):
        store.compact(tmp_path / "absent.duckdb")


def test_the_shipped_results_are_current_with_the_code_and_weights_that_ship_beside_them():
    """Every stored row of results.duckdb was made by the codec version and metric code this checkout would use
    (what the runner compares to skip a row): new weights, a codec upgrade or a metric change without a re-run
    would leave the dashboard showing numbers the code no longer produces."""
    from pathlib import Path

    from core.pipeline import build_encoder
    from core.provenance import metrics_version

    path = Path(__file__).resolve().parents[1] / "results.duckdb"
    con = store.open_reader(path)
    try:
        groups = con.execute("SELECT codec, colour_mode, channels, bit_depth, height, width, codec_version, count(*) "
                             "FROM results "
                             "WHERE error IS NULL GROUP BY ALL").fetchall()
        datasets = con.execute("SELECT dataset, list(DISTINCT metrics_version) FROM results GROUP BY 1").fetchall()
    finally:
        con.close()
    assert sum(g[-1] for g in groups) > 3000
    stale = [(codec, mode, ch, depth, h, w, n) for codec, mode, ch, depth, h, w, stored, n in groups
             if build_encoder(codec, mode, ch, h, w).version_for(ch, depth) != stored]
    assert not stale
    assert {d: v for d, v in datasets if v != [metrics_version(d)]} == {}
