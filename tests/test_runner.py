"""The batch runner end to end into a temporary DuckDB: rows, resume, failures, no duplicates."""
import math

import duckdb
import numpy as np
import pytest

from core import runner, store
from core.datasets import embedded_refs, load_ref
from core.io import as_bioimage, write_image


def _rows(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT image_id, codec, setting, colour_mode, bytes, bpp, psnr, error, width, height, "
                           "channels, bit_depth, raw_bytes, ratio, factor FROM results ORDER BY ALL").fetchall()
    finally:
        con.close()


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(5)
    write_image(folder / "a_gray8.png", as_bioimage(rng.integers(0, 256, (96, 128), dtype=np.uint8)))
    write_image(folder / "b_rgb16.png", as_bioimage(rng.integers(0, 65536, (80, 64, 3), dtype=np.uint16)))
    (folder / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def test_runner_fills_db_from_a_folder_and_rerun_adds_nothing(tmp_path, image_folder):
    db = tmp_path / "r.duckdb"
    argv = ["--data-root", str(image_folder), "--db", str(db), "--codecs", "jpeg,png,jpeg2000",
            "--settings", "jpeg=50,90;jpeg2000=20,10", "--quiet"]
    assert runner.main(argv) == 0
    rows = _rows(db)
    ok = [r for r in rows if r[7] is None]
    failed = [r for r in rows if r[7] is not None]
    # gray8: jpeg x2 + png + jpeg2000 x2; rgb16: png + jpeg2000 x2 (jpeg refuses 16-bit: skipped, not stored)
    assert sorted((r[0], r[1], r[2]) for r in ok) == sorted([
        ("a_gray8", "jpeg", "50"), ("a_gray8", "jpeg", "90"), ("a_gray8", "png", "-"),
        ("a_gray8", "jpeg2000", "20"), ("a_gray8", "jpeg2000", "10"),
        ("b_rgb16", "png", "-"), ("b_rgb16", "jpeg2000", "20"), ("b_rgb16", "jpeg2000", "10")])
    # the unreadable file is recorded as failures, one per task, and the run carried on
    assert failed and all(r[0] == "c_broken" and "cannot read image" in r[7] for r in failed)
    for image_id, codec, setting, mode, nbytes, bpp, psnr, error, w, h, c, depth, raw, ratio, factor in ok:
        assert bpp == pytest.approx(8 * nbytes / (w * h))
        assert raw == w * h * c * (1 if depth == 8 else 2)
        assert ratio == pytest.approx(nbytes / raw) and factor == pytest.approx(raw / nbytes)
        assert (psnr == math.inf) == (codec == "png")
    before = len(rows)
    assert runner.main(argv) == 0
    assert len(_rows(db)) == before  # resumable: successful rows skipped, failures retried in place


def test_killed_run_resumes_without_gaps_or_duplicates(tmp_path, image_folder):
    db = tmp_path / "k.duckdb"
    argv = ["--data-root", str(image_folder), "--db", str(db), "--codecs", "png,jpegls", "--quiet"]
    # simulate a run killed after the first image: store only that image's rows
    con = store.open_writer(db)
    refs = runner.resolve_refs(str(image_folder), None)
    tasks, _ = runner.plan_tasks(8, 1, ["png", "jpegls"], {}, None)
    store.upsert_results(con, runner.run_job(runner.Job(refs[0], tasks), "killed"))
    con.close()
    assert len(_rows(db)) == 2
    runner.main(argv)
    rows = _rows(db)
    keys = [(r[0], r[1], r[2], r[3]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {(r[0], r[1]) for r in rows if r[7] is None} == {("a_gray8", "png"), ("a_gray8", "jpegls"),
                                                             ("b_rgb16", "png"), ("b_rgb16", "jpegls")}


def test_default_embedded_data_covers_depths_and_channels():
    kinds = set()
    for ref in embedded_refs():
        image = load_ref(ref)
        kinds.add((image.bit_depth, image.channels))
    assert {(8, 1), (8, 3), (16, 1), (16, 3), (12, 1)} <= kinds


def test_embedded_default_run_records_provenance_and_summary(tmp_path, capsys):
    db = tmp_path / "e.duckdb"
    assert runner.main(["--db", str(db), "--codecs", "png,jpeg", "--settings", "jpeg=75", "--limit", "3",
                        "--quiet"]) == 0
    con = duckdb.connect(str(db), read_only=True)
    (n_runs, commit, versions, finished), = con.execute(
        "SELECT count(*), any_value(git_commit), any_value(versions), count(finished_at) FROM runs").fetchall()
    n_rows = con.execute("SELECT count(*) FROM results WHERE error IS NULL AND stage = 0").fetchone()[0]
    con.close()
    assert n_runs == 1 and finished == 1 and '"numpy"' in versions
    assert n_rows == 3 + 3  # png on 3 images + jpeg on 3 8-bit images
    out = capsys.readouterr().out
    assert "Summary" in out and "png" in out


def test_git_commit_ignores_only_the_database_it_writes(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results.duckdb").write_bytes(b"rows v1")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    db = tmp_path / "results.duckdb"
    db.write_bytes(b"rows v2: a first run wrote here")
    assert runner.git_commit(tmp_path, output=db) == head
    assert runner.git_commit(tmp_path) == head + "-dirty"  # without naming it, the database counts
    assert runner.git_commit(tmp_path, output=tmp_path.parent / "elsewhere.duckdb") == head + "-dirty"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert runner.git_commit(tmp_path, output=db) == head + "-dirty"


def test_settings_parser():
    assert runner.parse_settings("jpeg=10,90;jpeg2000=50", ["jpeg"]) == {"jpeg": (10, 90), "jpeg2000": (50,)}
    assert runner.parse_settings("0.5,2", ["jpegxl", "avif"]) == {"jpegxl": (0.5, 2), "avif": (0.5, 2)}
    assert runner.parse_settings(None, ["jpeg"]) == {}


def test_worker_processes_store_the_same_rows(tmp_path, image_folder):
    argv = ["--data-root", str(image_folder), "--codecs", "png,jpeg", "--settings", "jpeg=60", "--quiet"]
    runner.main(argv + ["--db", str(tmp_path / "one.duckdb")])
    runner.main(argv + ["--db", str(tmp_path / "two.duckdb"), "--workers", "2"])
    strip = lambda rows: [r[:6] + r[7:] for r in rows]  # noqa: E731  (psnr may be inf: compare the rest)
    assert strip(_rows(tmp_path / "one.duckdb")) == strip(_rows(tmp_path / "two.duckdb"))


def test_subsample_per_dataset_is_even_and_per_dataset():
    from core.catalog import ImageRef

    refs = [ImageRef(2, "a", f"a{i}", "x") for i in range(10)] + [ImageRef(3, "b", f"b{i}", "x") for i in range(2)]
    kept = [r.image_id for r in runner.subsample_per_dataset(refs, 4)]
    assert kept == ["a0", "a3", "a6", "a9", "b0", "b1"]
    assert [r.image_id for r in runner.subsample_per_dataset(refs, 1)] == ["a0", "b0"]


def test_a_changed_codec_version_recomputes_only_that_codecs_rows(tmp_path, image_folder, monkeypatch):
    """New weights or a library upgrade must not leave stale rows that a resume would skip."""
    db = tmp_path / "v.duckdb"
    argv = ["--data-root", str(image_folder), "--db", str(db), "--codecs", "png,jpegls", "--quiet"]
    assert runner.main(argv) == 0

    def stamps():
        con = duckdb.connect(str(db), read_only=True)
        try:
            return dict(((c, i), (v, r)) for c, i, v, r in con.execute(
                "SELECT codec, image_id, codec_version, run_id FROM results WHERE error IS NULL").fetchall())
        finally:
            con.close()

    first = stamps()
    assert first and all(v.startswith("imagecodecs ") for v, _ in first.values())
    from core.codecs.classical import PNG

    monkeypatch.setattr(PNG, "version", "imagecodecs 9999.1.1")
    assert runner.main(argv) == 0
    second = stamps()
    assert second.keys() == first.keys()  # replaced in place: no duplicates
    for (codec, image), (version, run) in second.items():
        if codec == "png":
            assert version == "imagecodecs 9999.1.1" and run != first[codec, image][1]
        else:
            assert (version, run) == first[codec, image]


def test_rows_say_whether_a_model_saw_the_image_and_summaries_use_held_out_rows(tmp_path, image_folder,
                                                                                  monkeypatch, capsys):
    """Issue 10: every row carries split / in_codec_training / in_segmenter_training / metrics_version."""
    from core import provenance

    db = tmp_path / "p.duckdb"
    seen = frozenset({"images/a_gray8"})  # folder_refs name the dataset after the folder
    monkeypatch.setattr(provenance, "codec_training_images", lambda name: seen if name == "png" else frozenset())
    argv = ["--data-root", str(image_folder), "--db", str(db), "--codecs", "png,jpegls", "--quiet"]
    assert runner.main(argv) == 0
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT image_id, codec, split, in_codec_training, in_segmenter_training, metrics_version "
                       "FROM results WHERE error IS NULL ORDER BY image_id, codec").fetchall()
    held_out = con.execute(f"SELECT count(*) FROM results WHERE error IS NULL AND {provenance.HELD_OUT_SQL}").fetchone()
    summary = runner.summary_rows(con)
    con.close()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("a_gray8", "jpegls", "test", False, False), ("a_gray8", "png", "test", True, False),
        ("b_rgb16", "jpegls", "test", False, False), ("b_rgb16", "png", "test", False, False)]
    assert {r[5] for r in rows} == {provenance.metrics_version("images")}
    assert held_out == (3,)
    assert {(codec, n) for codec, _mode, n, *_ in summary} == {("jpegls", 2), ("png", 1)}  # the seen row is left out


def test_a_changed_metric_code_recomputes_every_row(tmp_path, image_folder, monkeypatch):
    db = tmp_path / "m.duckdb"
    argv = ["--data-root", str(image_folder), "--db", str(db), "--codecs", "png", "--quiet"]
    assert runner.main(argv) == 0
    first = dict(duckdb.connect(str(db), read_only=True).execute(
        "SELECT image_id, run_id FROM results WHERE error IS NULL").fetchall())
    monkeypatch.setattr(runner, "metrics_version", lambda dataset=None: "metrics sha256 changed")
    assert runner.main(argv) == 0
    con = duckdb.connect(str(db), read_only=True)
    second = dict(con.execute("SELECT image_id, run_id FROM results WHERE error IS NULL").fetchall())
    versions = {v for (v,) in con.execute("SELECT metrics_version FROM results WHERE error IS NULL").fetchall()}
    con.close()
    assert second.keys() == first.keys() and all(second[k] != first[k] for k in first)
    assert versions == {"metrics sha256 changed"}


def test_codec_version_includes_its_parameters():
    from core.codecs import get_codec

    assert get_codec("avif").version.endswith("; speed=6")
    assert get_codec("jpegxl").version.endswith("; effort=7")
    codec = get_codec("jpegxl")
    before = codec.version
    codec.params = {**codec.params, "effort": 9}  # a parameter change must change the stored version
    assert codec.version != before and codec.version.endswith("; effort=9")


def test_second_runner_on_a_held_database_says_so_in_one_line(tmp_path, image_folder, capsys):
    db = tmp_path / "l.duckdb"
    holder = store.open_writer(db)
    try:
        import subprocess
        import sys
        from pathlib import Path

        root = Path(__file__).resolve().parents[1]
        proc = subprocess.run([sys.executable, "-m", "core.runner", "--data-root", str(image_folder), "--db", str(db),
                               "--codecs", "png", "--quiet"], cwd=root, capture_output=True, text=True, timeout=300)
    finally:
        holder.close()
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr and "in use by another process" in proc.stderr


def _sigterm_during_the_first_write(monkeypatch):
    """Make the first database write receive SIGTERM while it is under way."""
    import os
    import signal

    real_write = store.write_batch
    calls = []

    def write_batch(path, rows, *args, **kwargs):
        calls.append(len(rows))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler at the next bytecode: mid-write
        return real_write(path, rows, *args, **kwargs)

    monkeypatch.setattr(store, "write_batch", write_batch)
    return calls


def test_sigterm_during_a_write_lets_the_write_finish_then_exits_143(tmp_path, image_folder, monkeypatch):
    calls = _sigterm_during_the_first_write(monkeypatch)
    db = tmp_path / "t.duckdb"
    assert runner.main(["--data-root", str(image_folder), "--db", str(db), "--codecs", "png,jpegls,jpeg2000",
                        "--quiet"]) == 143
    assert len(calls) == 1 and calls[0] > 0  # stopped after the first write, not inside it
    assert len(_rows(db)) == calls[0]  # every row of that write is stored
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT rows_written, finished_at FROM runs").fetchall() == [(calls[0], None)]
    finally:
        con.close()


def test_an_error_while_closing_after_sigterm_still_exits_143(tmp_path, image_folder, monkeypatch, capsys):
    from contextlib import contextmanager

    from core import cluster

    real_connect = cluster.connect

    @contextmanager
    def connect(*args, **kwargs):
        try:
            with real_connect(*args, **kwargs) as client:
                yield client
        finally:
            raise RuntimeError("the scheduler went away while closing")  # replaces the SystemExit in flight

    monkeypatch.setattr(cluster, "connect", connect)
    _sigterm_during_the_first_write(monkeypatch)
    assert runner.main(["--data-root", str(image_folder), "--db", str(tmp_path / "c.duckdb"), "--codecs", "png",
                        "--quiet"]) == 143
    assert "stopped by signal 15; while closing: RuntimeError: the scheduler went away" in capsys.readouterr().err
