"""Encode/decode time of every learned architecture through the real codec path, as ratios to the shipped one.

    .venv/bin/python -m bench.arch_speed [--size 512] [--repeat 3] [--channels 1] [--threads 1]

What a stronger entropy model would cost in time (issue #11 asks for the context model's encode/decode time
beside the hyperprior's).  Each architecture of :data:`core.models.ARCHS` is built at the shipped width
(N = 64, M = 96; the checkerboard model's latent is N wide; an untrained ``gained-checkerboard`` computes its
context like a trained one, its corrections are zero), saved as ``core.train`` saves a checkpoint and
wrapped in a :class:`core.codecs.learned.LearnedCodec`, so the timing covers everything a user waits for:
padding, transforms, probability tables (the exact integer hyper-decoder where the architecture has one),
rANS coding of every string and the stream container.  The weights are **untrained** (seeded): the bpp
column says nothing about compression, and the entropy coder's share of the time is that of an untrained
model's latents.  The shipped gray checkpoint of ``learned-msssim`` is timed in the same process as a trained
reference.  Input: a smooth pattern plus noise, ``--size``² pixels, 8-bit.  Times are medians of
``--repeat`` runs after one warm-up; ratios are to the untrained ``gained-mean-scale`` (the shipped
architecture) measured back to back in this process, the robust part on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def test_image(size: int, channels: int) -> np.ndarray:
    """A deterministic 8-bit image: sinusoidal structure plus Gaussian noise (σ 12 grey levels)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    planes = [120 + 50 * np.sin(xx / (9.0 + c)) * np.cos(yy / 13.0) + rng.normal(0, 12, (size, size))
              for c in range(channels)]
    arr = np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8)
    return arr[..., 0] if channels == 1 else arr


def untrained_codec(arch: str, channels: int, folder: Path):
    """A LearnedCodec over one seeded, untrained checkpoint of ``arch`` at the shipped width."""
    import torch

    from core.codecs.learned import LearnedCodec, LearnedModel
    from core.models import build_model, is_variable_rate
    from core.train import save_checkpoint

    torch.manual_seed(0)
    variable = is_variable_rate(arch)
    N, M = (64, None) if arch == "checkerboard" else (64, 96)
    model = build_model(arch, channels, N, M, levels=8 if variable else None)
    stem = folder / f"speed-{arch}-{channels}"
    save_checkpoint(model, stem)
    meta = {"model_id": stem.name, "codec": "speed", "arch": arch, "channels": channels, "N": N, "M": M,
            **({"levels": 8} if variable else {"quality": 1})}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return LearnedCodec(f"speed-{arch}", [LearnedModel(stem.with_suffix(".pt"), meta)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.arch_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch
    from rich.console import Console
    from rich.table import Table

    from bench.codec_speed import _median_time
    from core.codecs import available_codecs, get_codec
    from core.metrics import bits_per_pixel
    from core.models import ARCHS, is_variable_rate

    torch.set_num_threads(a.threads)
    image = test_image(a.size, a.channels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        codecs = [(arch, "untrained", untrained_codec(arch, a.channels, Path(tmp)), 8 if is_variable_rate(arch)
                   else 1) for arch in ARCHS]
        for name in ("learned-msssim", "learned-mse"):  # the shipped checkpoints, trained
            if name in available_codecs():
                codec = get_codec(name)
                try:
                    arch = codec.model_for(a.channels, 8).arch
                except Exception:  # no checkpoint for this channel count
                    continue
                codecs.append((arch, f"shipped {name}", codec, 8))
        for arch, weights, codec, setting in codecs:
            data = codec.encode(image, setting, 8)  # warm-up: loads the model, builds the tables
            codec.decode(data)
            enc_s, data = _median_time(lambda: codec.encode(image, setting, 8), a.repeat)
            dec_s, _ = _median_time(lambda: codec.decode(data), a.repeat)
            rows.append((arch, weights, setting, enc_s, dec_s, bits_per_pixel(len(data), a.size, a.size)))
    base = next(r for r in rows if r[0] == "gained-mean-scale" and r[1] == "untrained")
    table = Table(title=f"learned architectures, {a.size}² × {a.channels} 8-bit, {a.threads} torch thread(s), "
                        f"median of {a.repeat}")
    for col in ("arch", "weights", "setting", "encode ms", "× shipped arch", "decode ms", "× shipped arch", "bpp"):
        table.add_column(col, justify="left" if col in ("arch", "weights") else "right")
    for arch, weights, setting, enc_s, dec_s, bpp in rows:
        table.add_row(arch, weights, str(setting), f"{enc_s * 1e3:.0f}", f"{enc_s / base[3]:.2f}",
                      f"{dec_s * 1e3:.0f}", f"{dec_s / base[4]:.2f}", f"{bpp:.3f}")
    Console(width=140).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
