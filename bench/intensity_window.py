"""The learned codecs' intensity window (images deeper than 8 bits) against the plain ÷ (2**bit_depth − 1).

    python -m bench.intensity_window [--codec learned-msssim] [--dataset mri_grayscale]
                                     [--settings 1,3,5,7,9,11,13,16] [--window-above-bits 8] [--data-root DIR]

Images: the catalog's ``test`` split of ``--dataset`` (default the stage-4 MRI slices: 12-bit MSD and
16-bit brain slices that fill 28–78 % of their containers; no learned model trained on MRI).  Every point
is a real encode and decode: bpp = 8 · bytes of the complete stream / pixels (the window's 4 header bytes
counted), PSNR with MAX from the bit depth and MS-SSIM (:mod:`core.metrics`).  ``plain`` is the same codec
with the window switched off (:data:`core.codecs.learned.WINDOW_ABOVE_BITS` raised to 16: every image
divided by 2**bit_depth − 1, the streams of before); ``window`` codes with the shipped rule, or with
``--window-above-bits 7`` windows 8-bit images too (how the 8-bit case was judged: ``--dataset
epfl_hippocampus_fibsem``).  BD-rates of ``window`` against ``plain`` come from
:func:`core.bdrate.bd_rate_frame` (negative = the window needs fewer bits for the same quality).
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager

import pandas as pd

#: WINDOW_ABOVE_BITS that switches the window off: no image is deeper than 16 bits.
OFF = 16


@contextmanager
def window_above(bits: int):
    """Code images deeper than ``bits`` bits through their window (:data:`OFF`: none), restored on exit."""
    from core.codecs import learned

    saved = learned.WINDOW_ABOVE_BITS
    learned.WINDOW_ABOVE_BITS = bits
    try:
        yield
    finally:
        learned.WINDOW_ABOVE_BITS = saved


def measure(codec, images, settings, window_above_bits: int = 8) -> pd.DataFrame:
    """One row per (image, setting, variant ``window`` | ``plain``): bytes, bpp, PSNR, MS-SSIM of the decoded
    stream.  ``images`` is a list of (image_id, pixels, bit_depth); ``window`` codes with
    ``WINDOW_ABOVE_BITS = window_above_bits`` (8, the shipped rule), ``plain`` with :data:`OFF`."""
    from core.metrics import ms_ssim, psnr

    rows = []
    for variant, bits in (("plain", OFF), ("window", window_above_bits)):
        for image_id, pixels, depth in images:
            for s in settings:
                with window_above(bits):
                    data = codec.encode(pixels, s, depth)
                out = codec.decode(data)
                rows.append({"stage": 0, "dataset": "-", "image_id": image_id, "codec": variant,
                             "colour_mode": "joint", "setting": s, "bytes": len(data),
                             "bpp": 8 * len(data) / (pixels.shape[0] * pixels.shape[1]),
                             "psnr": psnr(pixels, out, depth), "ms_ssim": ms_ssim(pixels, out, depth),
                             "error": None})
    return pd.DataFrame(rows)


def bd_rates(frame: pd.DataFrame) -> dict[str, float]:
    """{metric: BD-rate (%) of ``window`` against ``plain``} for PSNR and MS-SSIM (dB)."""
    from core.bdrate import bd_rate_frame

    return {metric: float(bd_rate_frame(frame, metric, anchor="plain")["bd_rate"].iloc[0])
            for metric in ("psnr", "ms_ssim_db")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.intensity_window", description=__doc__.split("\n")[0])
    p.add_argument("--codec", default="learned-msssim")
    p.add_argument("--dataset", default="mri_grayscale")
    p.add_argument("--settings", default="1,3,5,7,9,11,13,16")
    p.add_argument("--window-above-bits", type=int, default=8,
                   help="the window variant windows images deeper than this (7: 8-bit images too)")
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from core.catalog import split_refs
    from core.codecs import get_codec
    from core.codecs.learned import intensity_window
    from core.datasets import load_ref

    codec = get_codec(args.codec)
    images = []
    for ref in split_refs(args.dataset, ("test",), args.data_root):
        image = load_ref(ref)
        images.append((ref.image_id, image.pixels, image.bit_depth))
        with window_above(args.window_above_bits):
            window = intensity_window(image.pixels, image.bit_depth)
        print(f"{ref.image_id:20s} {image.bit_depth:2d}-bit  window {window or 'none (full range or 8-bit)'}")
    if not images:
        raise SystemExit(f"no test images of {args.dataset} (is the data root there?)")
    frame = measure(codec, images, [float(s) for s in args.settings.split(",")], args.window_above_bits)
    curves = frame.groupby(["codec", "setting"]).agg(bpp=("bpp", "mean"), psnr=("psnr", "mean"),
                                                     ms_ssim=("ms_ssim", "mean")).reset_index()
    print(curves.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    rates = bd_rates(frame)
    print(f"{args.codec} on {len(images)} {args.dataset} test images, window (above {args.window_above_bits} bits) "
          f"vs plain BD-rate: "
          f"PSNR {rates['psnr']:+.1f} %, MS-SSIM {rates['ms_ssim_db']:+.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
