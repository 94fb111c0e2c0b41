"""Throughput and overhead of the whole pipeline, every ratio measured in this one run.

    .venv/bin/python -m bench.throughput [--repeat 3] [--out bench/throughput.md]

1. **Codec speed**: each classical codec's encode and decode megapixels per second (median of ``--repeat``)
   on a fixed set of four embedded images — gray 8-bit (camera), RGB 8-bit (astronaut), gray 16-bit
   (synth_em16), RGB 16-bit (synth_rgb16) — at the middle setting of its stage sweep, as a ratio to PNG
   on the same image.
2. **Harness overhead**: the runner's wall time (``--workers 1``: in this process, Dask's in-process
   cluster) over the sum of the raw encode + decode + metric times of the same work done directly.
3. **Scaling**: the runner's wall time with 1 and with 2 local Dask workers on the same work (process
   start-up included: that is what a user waits for).
4. **Learned codec on a 1000×1000 RGB tile** (an H&E tile from MoNuSeg when ``--data-root`` has it, else
   the astronaut photo tiled to 1000²): model load, encode and decode seconds, load excluded from the
   coding times.
5. **Peak memory of a worker** with the PyTorch codec and the TensorFlow StarDist model loaded, coding
   and segmenting that tile (``ru_maxrss`` of a fresh process).

Numbers depend on the machine (printed first); the ratios, measured back to back, are the robust part.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process, as the runner's workers run

import numpy as np  # noqa: E402

from bench.codec_speed import time_codec  # noqa: E402
from core.codecs import get_codec  # noqa: E402
from core.datasets import embedded_refs, load_ref  # noqa: E402
from core.io import BioImage, as_bioimage, write_image  # noqa: E402
from core.metrics import quality_metrics  # noqa: E402
from core.paths import REPO_ROOT, data_root  # noqa: E402

IMAGES = ("camera", "astronaut", "synth_em16", "synth_rgb16")
CLASSICAL = ("png", "jpeg", "jpeg2000", "jpegxl", "avif", "webp", "jpegls", "jpegls-near", "jpeg2000-lossless",
             "jpegxl-lossless", "webp-lossless")
LEARNED = "learned-msssim"
LEARNED_SETTING = 8


def _images() -> dict[str, BioImage]:
    refs = {r.image_id: r for r in embedded_refs()}
    return {name: load_ref(refs[name]) for name in IMAGES}


def _setting(codec):
    sweep = list(codec.default_settings)
    return sweep[len(sweep) // 2] if sweep else None


def codec_speed(images: dict[str, BioImage], repeat: int) -> list[dict]:
    rows = []
    for image_name, image in images.items():
        baseline = None
        for name in ("png",) + tuple(c for c in CLASSICAL if c != "png"):
            try:
                codec = get_codec(name)
            except Exception:
                continue
            if not codec.supports(image.bit_depth, image.channels):
                continue
            t = time_codec(codec, image, _setting(codec), repeat)
            mp = image.height * image.width / 1e6
            row = {"image": image_name, "codec": name, "encode_mp_s": mp / t["encode_s"],
                   "decode_mp_s": mp / t["decode_s"], "bpp": t["bpp"]}
            if name == "png":
                baseline = row
            row["encode_vs_png"] = row["encode_mp_s"] / baseline["encode_mp_s"]
            row["decode_vs_png"] = row["decode_mp_s"] / baseline["decode_mp_s"]
            rows.append(row)
    return rows


def _work_folder(images: dict[str, BioImage], folder: Path, copies: int) -> Path:
    for name, image in images.items():
        for i in range(copies):
            write_image(folder / f"{name}_{i}.png", image)
    return folder


HARNESS_CODECS = ("jpeg", "jpeg2000", "jpegxl", "png")


def raw_work_seconds(folder: Path) -> float:
    """Encode + decode + metrics of every (image, codec, sweep setting) the runner would compute, done directly."""
    from core.datasets import folder_refs
    from core.runner import plan_tasks

    total = 0.0
    for ref in folder_refs(folder):
        image = load_ref(ref)
        tasks, _ = plan_tasks(image.bit_depth, image.channels, list(HARNESS_CODECS), {}, ("joint",))
        for task in tasks:
            codec = get_codec(task.codec)
            start = time.perf_counter()
            data = codec.encode(image.pixels, task.setting, image.bit_depth)
            out = codec.decode(data)
            quality_metrics(image.pixels, out, image.bit_depth)
            total += time.perf_counter() - start
    return total


def runner_seconds(folder: Path, workers: int) -> float:
    from core import runner

    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as quiet, redirect_stdout(quiet):
        start = time.perf_counter()
        code = runner.main(["--data-root", str(folder), "--db", str(Path(tmp) / "b.duckdb"), "--codecs",
                            ",".join(HARNESS_CODECS), "--colour-modes", "joint", "--workers", str(workers), "--quiet"])
        elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"runner failed with exit code {code}")
    return elapsed


def learned_tile() -> tuple[np.ndarray, str]:
    """A 1000×1000 RGB 8-bit tile: a MoNuSeg test tile when the data is here, else the astronaut tiled."""
    root = data_root()
    candidates = sorted((root / "monuseg").rglob("*.tif")) if (root / "monuseg").is_dir() else []
    for path in candidates:
        if "test" in path.parts:
            from core.io import read_image

            image = read_image(path)
            if image.channels == 3 and image.height >= 1000 and image.width >= 1000 and image.bit_depth == 8:
                return np.ascontiguousarray(image.pixels[:1000, :1000]), f"MoNuSeg {path.stem}"
    astronaut = load_ref({r.image_id: r for r in embedded_refs()}["astronaut"]).pixels
    return np.ascontiguousarray(np.tile(astronaut, (2, 2, 1))[:1000, :1000]), "astronaut tiled to 1000²"


def learned_speed(tile: np.ndarray, repeat: int) -> dict:
    codec = get_codec(LEARNED)
    start = time.perf_counter()
    codec.model_for(3, LEARNED_SETTING).model  # noqa: B018  (loads the checkpoint)
    load_s = time.perf_counter() - start
    t = time_codec(codec, as_bioimage(tile), LEARNED_SETTING, repeat)
    return {"load_s": load_s, **t}


WORKER_SCRIPT = """
import resource, sys, time
from core.catalog import ImageRef
from core import runner
ref = ImageRef(3, "monuseg", "bench-tile", sys.argv[1], split="test")
rows = runner.run_job(runner.Job(ref, [runner.Task("{codec}", {setting}), runner.Task("jpeg", 80)]), "bench")
errors = [r["error"] for r in rows if r.get("error")]
seg = [r.get("seg_dice") for r in rows]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, errors, seg)
"""


def worker_peak_memory(tile: np.ndarray) -> tuple[float, str]:
    """Peak resident memory (MB) of a fresh process that codes and segments the tile like a worker."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tile.png"
        write_image(path, as_bioimage(tile))
        proc = subprocess.run([sys.executable, "-c", WORKER_SCRIPT.format(codec=LEARNED, setting=LEARNED_SETTING),
                               str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    if proc.returncode != 0:
        raise SystemExit(f"worker probe failed: {proc.stderr[-2000:]}")
    line = proc.stdout.strip().splitlines()[-1]
    rss_kb, rest = line.split(" ", 1)
    return int(rss_kb) / 1024, rest


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="timing repeats (median), default 3")
    p.add_argument("--copies", type=int, default=2, help="copies of each image in the runner workload (default 2)")
    p.add_argument("--out", type=Path, help="also write the tables (markdown) to this file")
    args = p.parse_args(argv)
    lines = [f"Machine: {machine()}", ""]

    def emit(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    print(lines[0])
    images = _images()
    emit("### 1. Codec speed, megapixels per second (median of %d), ratio to PNG on the same image" % args.repeat)
    emit("| image | codec | encode MP/s | decode MP/s | encode ×PNG | decode ×PNG | bpp |")
    emit("|---|---|---:|---:|---:|---:|---:|")
    for r in codec_speed(images, args.repeat):
        emit(f"| {r['image']} | {r['codec']} | {r['encode_mp_s']:.1f} | {r['decode_mp_s']:.1f} | "
             f"{r['encode_vs_png']:.2f} | {r['decode_vs_png']:.2f} | {r['bpp']:.2f} |")

    with tempfile.TemporaryDirectory() as tmp:
        folder = _work_folder(images, Path(tmp), args.copies)
        n_images = len(images) * args.copies
        raw = raw_work_seconds(folder)
        one = runner_seconds(folder, 1)
        two = runner_seconds(folder, 2)
    emit()
    emit(f"### 2–3. Runner on {n_images} images × {', '.join(HARNESS_CODECS)} (their stage sweeps)")
    emit("| measure | seconds | ratio |")
    emit("|---|---:|---:|")
    emit(f"| raw encode + decode + metrics, called directly | {raw:.2f} | 1.00 |")
    emit(f"| runner, 1 worker (in process) | {one:.2f} | {one / raw:.2f} × raw (harness overhead) |")
    emit(f"| runner, 2 local workers (start-up included) | {two:.2f} | {one / two:.2f} × faster than 1 worker |")

    tile, source = learned_tile()
    speed = learned_speed(tile, args.repeat)
    emit()
    emit(f"### 4. {LEARNED} (setting {LEARNED_SETTING}) on a 1000×1000 RGB tile ({source})")
    emit("| model load s | encode s | decode s | bpp |")
    emit("|---:|---:|---:|---:|")
    emit(f"| {speed['load_s']:.2f} | {speed['encode_s']:.2f} | {speed['decode_s']:.2f} | {speed['bpp']:.3f} |")
    peak_mb, detail = worker_peak_memory(tile)
    emit()
    emit("### 5. Peak memory of a worker (fresh process: PyTorch codec + TensorFlow StarDist loaded, "
         "tile coded and segmented)")
    emit(f"| peak RSS MB |\n|---:|\n| {peak_mb:.0f} |")
    emit(f"(the probe's errors, then seg_dice of its rows: {detail})")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
