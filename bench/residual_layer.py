"""Can a learned base layer lift the top of the ladder?  Learned reconstruction + near-lossless residual vs JPEG-LS.

    python -m bench.residual_layer [--dataset epfl_hippocampus_fibsem] [--images 2] [--codec learned-mse]
                                   [--settings 4 8 12 16] [--near 1 2 4 6]

The learned codecs' quality stops rising near 31 dB on EM (README, "Where they stand").  A two-layer stream would
pass any ceiling: the learned stream, then the residual ``original − reconstruction`` coded near-losslessly, so
every pixel is within ±NEAR of the original (Bai et al., CVPR 2021, learn the residual coder; here it is CharLS's
JPEG-LS near-lossless mode, the ``jpegls-near`` codec itself, on the residual offset by 2**bit_depth into an unsigned
image; up to 15-bit images).  The two-layer stream only pays if the learned base removes more bits from the residual than it costs.

For the first ``--images`` test images of the dataset (gray), printed per NEAR: the bpp and PSNR (dB) of
``jpegls-near`` on the image, then per learned setting the base's bpp and PSNR and the two layers' total bpp, PSNR
and maximum absolute error (always ≤ NEAR), and the difference in bpp to ``jpegls-near`` at the same NEAR (the
same guarantee; positive = the two layers cost more).  bpp counts every byte of both streams.
"""
from __future__ import annotations

import argparse

import numpy as np


def residual_stream(original: np.ndarray, reconstruction: np.ndarray, near: int, bit_depth: int) -> tuple[bytes, np.ndarray]:
    """(``jpegls-near`` stream of the residual at ``near``, the decoder's output: reconstruction + decoded residual,
    clipped).  The residual, offset by 2**bit_depth, is a (bit_depth + 1)-bit image."""
    from core.codecs import get_codec

    if bit_depth > 15:  # the residual spans 2**(bit_depth + 1) − 1 values; JPEG-LS codes at most 16 bits
        raise ValueError(f"the residual of a {bit_depth}-bit image needs {bit_depth + 1} bits; JPEG-LS codes ≤ 16")
    codec, offset = get_codec("jpegls-near"), 1 << bit_depth
    residual = (original.astype(np.int32) - reconstruction.astype(np.int32) + offset).astype(np.uint16)
    data = codec.encode(residual, near, bit_depth + 1)
    decoded = codec.decode(data).astype(np.int32) - offset
    out = np.clip(reconstruction.astype(np.int32) + decoded, 0, offset - 1).astype(original.dtype)
    return bytes(data), out


def main(argv=None) -> int:
    from core.catalog import split_refs
    from core.codecs import get_codec
    from core.datasets import load_ref
    from core.metrics import psnr

    p = argparse.ArgumentParser(prog="python -m bench.residual_layer", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="epfl_hippocampus_fibsem")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--codec", default="learned-mse")
    p.add_argument("--settings", nargs="+", type=float, default=[4, 8, 12, 16])
    p.add_argument("--near", nargs="+", type=int, default=[1, 2, 4, 6])
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)

    learned, jls = get_codec(args.codec), get_codec("jpegls-near")
    refs = split_refs(args.dataset, ("test",), args.data_root)[: args.images]
    print(f"{args.dataset}, {len(refs)} test images; {args.codec} base + JPEG-LS near-lossless residual vs jpegls-near")
    for ref in refs:
        image = load_ref(ref)
        if image.channels != 1:
            raise ValueError(f"{ref.image_id}: the bench is for gray images")
        x, depth, n = image.pixels, image.bit_depth, image.pixels.size
        print(f"\n{ref.image_id} ({x.shape[1]}×{x.shape[0]}, {depth}-bit)")
        plain = {}
        for near in args.near:
            data = jls.encode(x, near, depth)
            plain[near] = 8 * len(data) / n
            print(f"  jpegls-near NEAR={near}: {plain[near]:.3f} bpp, {psnr(x, jls.decode(data), depth):.2f} dB")
        for setting in args.settings:
            base = learned.encode(x, setting, depth)
            recon = learned.decode(base)
            print(f"  {args.codec} {setting:g}: base {8 * len(base) / n:.3f} bpp, {psnr(x, recon, depth):.2f} dB")
            for near in args.near:
                data, out = residual_stream(x, recon, near, depth)
                total = 8 * (len(base) + len(data)) / n
                err = int(np.abs(x.astype(np.int64) - out).max())
                print(f"    + residual NEAR={near}: {total:.3f} bpp, {psnr(x, out, depth):.2f} dB, max error {err}; "
                      f"{total - plain[near]:+.3f} bpp vs jpegls-near")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
