"""Evaluate one codec at one setting on one image: the row the runner stores and the
dashboard's live comparison shows.  The only place encode → decode → metrics happens;
the codec comes from :func:`core.pipeline.build_encoder` (colour mode → tiling → codec)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from core.codecs import Codec, CodecError
from core.io import BioImage
from core.metrics import quality_metrics, size_metrics, stopwatch
from core.setting_text import format_setting


@dataclass
class Evaluation:
    """A codec's result on one image: the stored metrics plus the bytes and the reconstruction."""

    metrics: dict
    encoded: bytes
    reconstruction: np.ndarray


def evaluate(image: BioImage, codec: Codec, setting, repeat: int = 1) -> Evaluation:
    """Encode ``image`` with ``codec`` at ``setting``, decode, and measure.

    Returns sizes (bytes, raw_bytes, ratio, factor, bpp), wall times in seconds
    (encode_s, decode_s: the median of ``repeat`` encodes and of ``repeat`` decodes) and
    quality (mse, psnr, psnr_peak, ssim, ms_ssim), all computed against the original at
    its declared bit depth.  Repeated encodes must give the same bytes (else CodecError).
    """
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    encode_times, decode_times = [], []
    encoded = None
    for _ in range(repeat):
        with stopwatch() as encode_time:
            again = codec.encode(image.pixels, setting, image.bit_depth)
        encode_times.append(encode_time())
        if encoded is not None and again != encoded:
            raise CodecError(f"{codec.name} is not deterministic: two encodes of one image at {setting!r} differ")
        encoded = again
    for _ in range(repeat):
        with stopwatch() as decode_time:
            reconstruction = codec.decode(encoded)
        decode_times.append(decode_time())
    if reconstruction.shape != image.pixels.shape or reconstruction.dtype != image.pixels.dtype:
        raise CodecError(f"{codec.name} returned {reconstruction.shape} {reconstruction.dtype} for "
                         f"{image.pixels.shape} {image.pixels.dtype}")
    metrics = {
        "setting": format_setting(setting),
        "setting_value": None if setting is None else float(setting),
        **size_metrics(len(encoded), image.pixels.shape, image.pixels.dtype),
        "encode_s": statistics.median(encode_times),
        "decode_s": statistics.median(decode_times),
        **quality_metrics(image.pixels, reconstruction, image.bit_depth),
    }
    return Evaluation(metrics, encoded, reconstruction)
