"""The runner on Dask: identical rows on every scheduler, a database readable during a run, one runner per
database, SLURM configs, and timings that measure the codec (median of --repeat, model load kept apart)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pytest

from core import cluster, evaluate, runner, store
from core.io import as_bioimage, write_image

ROOT = Path(__file__).resolve().parents[1]
VALUE_COLUMNS = ("image_id", "codec", "setting", "colour_mode", "bytes", "bpp", "mse", "psnr", "ssim", "ms_ssim",
                 "width", "height", "channels", "bit_depth", "error", "codec_version", "metrics_version")


def _values(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT {', '.join(VALUE_COLUMNS)} FROM results ORDER BY ALL").fetchall()
    finally:
        con.close()


def _run_row(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        df = con.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1").df()
    finally:
        con.close()
    return df.iloc[0].to_dict()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask-images")
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:96, 0:128]
    smooth = (120 + 60 * np.sin(xx / 9.0) * np.cos(yy / 7.0)).astype(np.uint8)
    write_image(folder / "a_gray8.png", as_bioimage(smooth))
    write_image(folder / "b_rgb8.png", as_bioimage(np.stack([smooth, smooth[::-1], 255 - smooth], axis=-1)))
    write_image(folder / "c_gray16.png", as_bioimage(rng.integers(0, 4096, (64, 80), dtype=np.uint16) * 16))
    (folder / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    return folder


ARGV = ["--codecs", "jpeg,jpeg2000,png", "--settings", "jpeg=40,85;jpeg2000=30,8", "--quiet"]


def test_two_local_workers_store_the_same_values_as_one(images, tmp_path):
    one, two = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    assert runner.main(["--data-root", str(images), "--db", str(one), *ARGV]) == 0
    assert runner.main(["--data-root", str(images), "--db", str(two), "--workers", "2", *ARGV]) == 0
    rows = _values(one)
    assert rows == _values(two)  # every value, not just the count (psnr inf == inf compares equal)
    ok = [r for r in rows if r[14] is None]
    assert len(ok) == 13  # gray8 5 + rgb8 5 + gray16 3 (png, jpeg2000 ×2: jpeg refuses 16-bit)
    broken = [r for r in rows if r[14] is not None]
    assert len(broken) == 5 and all(r[0] == "d_broken" and "cannot read image" in r[14] for r in broken)
    run = _run_row(two)
    assert run["scheduler"] == "local" and run["workers"] == 2 and run["repeat"] == 1
    assert run["planned_rows"] == run["rows_written"] == 18
    threads = json.loads(run["worker_threads"])
    assert len(threads) == 2 and all(t["OMP_NUM_THREADS"] == "1" for t in threads.values())
    assert run["finished_at"] is not None and not (isinstance(run["finished_at"], float) and math.isnan(run["finished_at"]))


def test_one_worker_in_this_process_computes_on_one_thread_as_a_worker_process_does(images, tmp_path):
    """--workers 1 runs in the runner's process: it must use a worker's one thread, or a killed run resumed
    there stores float32 metrics summed in another order than the rows computed before (a CI failure)."""
    import torch

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(2)
    try:
        db = tmp_path / "one.duckdb"
        assert runner.main(["--data-root", str(images), "--db", str(db), *ARGV]) == 0
        threads = json.loads(_run_row(db)["worker_threads"])
        assert [t["torch"] for t in threads.values()] == [1] and all(t["OMP_NUM_THREADS"] == "1"
                                                                     for t in threads.values())
        assert torch.get_num_threads() == 2 and os.environ.get("OMP_NUM_THREADS") == env  # restored afterwards
    finally:
        torch.set_num_threads(before)


@contextmanager
def _tcp_cluster():
    from distributed import LocalCluster

    with cluster.worker_environment(), LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                    dashboard_address=":0") as local:
        yield local.scheduler_address


def test_an_existing_cluster_by_address_stores_the_same_values(images, tmp_path):
    ref, remote = tmp_path / "ref.duckdb", tmp_path / "tcp.duckdb"
    assert runner.main(["--data-root", str(images), "--db", str(ref), *ARGV]) == 0
    with _tcp_cluster() as address:
        assert address.startswith("tcp://")
        assert runner.main(["--data-root", str(images), "--db", str(remote), "--scheduler", address, *ARGV]) == 0
    assert _values(ref) == _values(remote)
    assert _run_row(remote)["scheduler"] == address


def test_unreachable_scheduler_and_bad_cluster_config_are_one_line_errors(images, tmp_path, capsys):
    db = tmp_path / "x.duckdb"
    assert runner.main(["--data-root", str(images), "--db", str(db), "--scheduler", "slurm", *ARGV]) == 2
    assert "needs --cluster-config" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('cores = 4\nmemory = "8GiB"\nqueues = "cpu"\n')
    assert runner.main(["--data-root", str(images), "--db", str(db), "--scheduler", "slurm",
                        "--cluster-config", str(bad), *ARGV]) == 2
    assert "unknown keys ['queues']" in capsys.readouterr().err
    assert runner.main(["--data-root", str(images), "--db", str(db), "--scheduler", "mesos", *ARGV]) == 2
    assert "unknown scheduler 'mesos'" in capsys.readouterr().err


def test_the_example_slurm_config_makes_a_job_script_with_one_thread_per_worker():
    config = cluster.read_cluster_config(ROOT / "data" / "cluster-slurm.example.toml")
    assert config["jobs"] == 4
    slurm = cluster.slurm_cluster(config)
    try:
        script = slurm.job_script()
    finally:
        slurm.close()
    assert "#SBATCH -p cpu" in script and "#SBATCH --cpus-per-task=8" in script and "#SBATCH -t 04:00:00" in script
    assert "--nthreads 1" in script and "--nworkers 8" in script
    exports = script.index("export OMP_NUM_THREADS=1")
    assert exports < script.index("source .venv/bin/activate") < script.index("dask_worker")


def test_a_second_runner_on_the_same_database_is_refused_in_one_line(images, tmp_path):
    db = tmp_path / "held.duckdb"
    with store.run_lock(db):
        proc = subprocess.run([sys.executable, "-m", "core.runner", "--data-root", str(images), "--db", str(db),
                               "--codecs", "png", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"a run with pid {os.getpid()} holds it" in proc.stderr
    with store.run_lock(db):  # released by the process that held it
        pass


@pytest.fixture(scope="module")
def slow_images(tmp_path_factory):
    """8 noise images large enough that coding them (56 rows of JPEG XL / AVIF) spans many of the runner's 2-s batch
    writes on a fast machine too: 256² took about 2 s in all on a 2026-12-02 machine, so every row landed in one
    batch and no reader could see a run in progress; 640² takes about 15 s there."""
    folder = tmp_path_factory.mktemp("slow-images")
    rng = np.random.default_rng(3)
    for i in range(8):
        write_image(folder / f"noise{i:02d}.png", as_bioimage(rng.integers(0, 256, (768, 768), dtype=np.uint8)))
    return folder


def test_the_database_is_readable_while_a_run_writes_and_shows_its_progress(slow_images, tmp_path):
    from core.dashboard.data import load_snapshot

    db = tmp_path / "live.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "core.runner", "--data-root", str(slow_images), "--db", str(db),
                             "--codecs", "jpegxl,avif", "--settings", "jpegxl=0.5,1,2,4;avif=20,40,60", "--quiet"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress, failures = [], []
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if db.exists():
                try:
                    snapshot = load_snapshot(db, retries=10, wait_s=0.1)  # dashboard: 5 × 1 s
                except store.StoreLockedError as exc:  # the writer held the file for over a second
                    failures.append(str(exc))
                else:
                    if len(snapshot.runs):
                        run = snapshot.runs.iloc[-1]
                        progress.append((len(snapshot.results), int(run["rows_written"]), int(run["planned_rows"]),
                                         run["finished_at"] is None or str(run["finished_at"]) in ("NaT", "None")))
            time.sleep(0.3)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    during = [p for p in progress if p[3] and 0 < p[0] < p[2]]
    assert during, f"no read saw a run in progress: {progress[:5]} … {progress[-5:]}"
    assert all(rows == written for rows, written, _, _ in during)  # the progress column matches the rows
    assert all(planned == 8 * 7 for _, _, planned, _ in progress)
    assert not failures  # a reader waits at most the length of one batch write
    final = _run_row(db)
    assert final["rows_written"] == final["planned_rows"] == 56


class _ScriptedClock:
    """``core.metrics.stopwatch`` stand-in that reports the given durations in order."""

    def __init__(self, durations):
        self.durations = list(durations)

    @contextmanager
    def __call__(self):
        value = self.durations.pop(0)
        yield lambda: value


def test_repeat_stores_the_median_encode_and_decode_time(monkeypatch):
    from core.codecs import get_codec

    image = as_bioimage(np.tile(np.arange(64, dtype=np.uint8), (48, 1)))
    monkeypatch.setattr(evaluate, "stopwatch", _ScriptedClock([5.0, 1.0, 2.0, 0.3, 0.9, 0.1]))
    result = evaluate.evaluate(image, get_codec("jpeg"), 80, repeat=3)
    assert result.metrics["encode_s"] == 2.0 and result.metrics["decode_s"] == 0.3
    with pytest.raises(ValueError):
        evaluate.evaluate(image, get_codec("jpeg"), 80, repeat=0)


def test_an_encoder_that_changes_its_output_between_repeats_is_an_error():
    from core.codecs import CodecError, get_codec

    class Drifting(type(get_codec("png"))):
        calls = 0

        def encode(self, pixels, setting, bit_depth):
            Drifting.calls += 1
            return super().encode(pixels, setting, bit_depth) + bytes([Drifting.calls])

    codec = Drifting.__new__(Drifting)
    codec.__dict__.update(get_codec("png").__dict__)
    with pytest.raises(CodecError, match="not deterministic"):
        evaluate.evaluate(as_bioimage(np.zeros((16, 16), np.uint8)), codec, None, repeat=2)


def test_model_load_is_timed_once_and_apart_from_encoding(monkeypatch):
    class Model:
        loads = 0

        @property
        def model(self):
            if not Model.loads:
                time.sleep(0.05)
            Model.loads += 1
            return object()

    class Learned:
        def model_for(self, channels, setting):
            return shared

    shared = Model()
    monkeypatch.setattr(runner, "_LOAD_SECONDS", {})
    runner._warm_up(Learned(), runner.Task("learned-x", 3), 1)
    runner._warm_up(Learned(), runner.Task("learned-x", 5), 1)  # cached: not a second load
    loads = runner.load_times()
    assert list(loads) == ["learned-x"] and 0.05 <= loads["learned-x"] < 1.0


def test_jobs_split_into_one_unit_per_codec():
    from core.catalog import ImageRef

    job = runner.Job(ImageRef(0, "d", "i", "x.png"), [runner.Task("jpeg", 10), runner.Task("png", None),
                                                        runner.Task("jpeg", 90)])
    assert [[(t.codec, t.setting) for t in unit] for unit in job.by_codec()] == [
        [("jpeg", 10), ("jpeg", 90)], [("png", None)]]


def test_a_run_killed_mid_way_resumes_to_the_same_rows_without_duplicates(slow_images, tmp_path):
    """kill -9 while batches are being written, then the same command: every row once, values as a clean run."""
    import signal

    argv = ["--data-root", str(slow_images), "--codecs", "jpegxl,avif", "--settings", "jpegxl=0.5,1,2,4;avif=20,40,60",
            "--quiet"]
    db = tmp_path / "killed.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "core.runner", "--db", str(db), *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        written = 0
        while proc.poll() is None and time.monotonic() < deadline and not written:
            time.sleep(0.3)
            if db.exists():
                try:
                    con = store.open_reader(db, retries=10, wait_s=0.1)
                except store.StoreLockedError:
                    continue
                try:
                    written = con.execute("SELECT count(*) FROM results").fetchone()[0]
                finally:
                    con.close()
        assert proc.poll() is None and 0 < written < 56, "the run ended before it could be killed mid-way"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = len(_values(db))
    assert 0 < kept < 56
    assert runner.main(["--db", str(db), *argv]) == 0
    run = _run_row(db)
    assert run["planned_rows"] == 56 - kept  # only what was missing
    clean = tmp_path / "clean.duckdb"
    assert runner.main(["--db", str(clean), *argv]) == 0
    assert _values(db) == _values(clean) and len(_values(db)) == 56  # every row once (the primary key), same values
