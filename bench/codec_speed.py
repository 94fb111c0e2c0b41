"""Encode/decode speed of every classical codec, as ratios to JPEG timed in the same process.

    .venv/bin/python -m bench.codec_speed [--images PATH ...] [--repeat 3] [--codecs jpeg,png,...]

Default images: three embedded samples (camera 512×512 gray 8-bit, astronaut 512×512 RGB,
synth_em16 512×512 gray 16-bit).  Each (codec, image) is encoded and decoded ``--repeat``
times at the middle setting of the stage sweep (data/stages.toml) or the codec's default;
the *median* wall time is reported in milliseconds, plus the ratio to JPEG's median on the
same image (JPEG is 8-bit only, so 16-bit images are compared with PNG instead).  Library
threads are pinned to one (OMP_NUM_THREADS=1) so numbers are comparable on a shared machine;
the ratios, measured back to back in one process, are the robust part.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from core.metrics import bits_per_pixel

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _median_time(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def time_codec(codec, image, setting, repeat: int) -> dict:
    """Median encode/decode seconds and bits per pixel of ``codec`` on ``image`` (a BioImage)."""
    enc_s, data = _median_time(lambda: codec.encode(image.pixels, setting, image.bit_depth), repeat)
    dec_s, _ = _median_time(lambda: codec.decode(data), repeat)
    return {"encode_s": enc_s, "decode_s": dec_s, "bpp": bits_per_pixel(len(data), image.height, image.width)}


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from core.codecs import available_codecs, get_codec
    from core.datasets import embedded_refs, load_ref
    from core.io import read_image
    from core.stages import stage_codec_settings

    parser = argparse.ArgumentParser(prog="python -m bench.codec_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="*", help="image files (default: embedded camera, astronaut, synth_em16)")
    parser.add_argument("--codecs", help="comma-separated (default: every classical codec)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions per step (median)")
    args = parser.parse_args(argv)

    if args.images:
        images = [read_image(p) for p in args.images]
    else:
        wanted = {"camera", "astronaut", "synth_em16"}
        images = [load_ref(r) for r in embedded_refs() if r.image_id in wanted]
    names = args.codecs.split(",") if args.codecs else available_codecs("classical")
    _, sweeps = stage_codec_settings("all")
    console = Console(width=130)
    for image in images:
        baseline_name = "jpeg" if image.bit_depth == 8 else "png"
        rows = {}
        for name in dict.fromkeys([baseline_name] + names):
            codec = get_codec(name)
            if not codec.supports(image.bit_depth, image.channels):
                continue
            settings = sweeps.get(name, codec.default_settings)
            rows[name] = time_codec(codec, image, settings[len(settings) // 2], args.repeat)
        base = rows[baseline_name]
        table = Table(title=f"{image.name}: {image.width}x{image.height}x{image.channels}, {image.bit_depth}-bit "
                            f"(median of {args.repeat}; ratio = time / {baseline_name} time)")
        for column in ("codec", "bpp", "encode ms", f"enc ×{baseline_name}", "decode ms", f"dec ×{baseline_name}"):
            table.add_column(column, justify="left" if column == "codec" else "right")
        for name, r in rows.items():
            table.add_row(name, f"{r['bpp']:.3f}", f"{1e3 * r['encode_s']:.1f}",
                          f"{r['encode_s'] / base['encode_s']:.1f}", f"{1e3 * r['decode_s']:.1f}",
                          f"{r['decode_s'] / base['decode_s']:.1f}")
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
