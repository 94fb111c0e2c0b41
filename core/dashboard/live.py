"""Coding images now: uploads (live comparison) and stored rows (side by side).

Every codec is built by :func:`core.pipeline.build_encoder` (colour mode → tiling → codec) and every
measurement made by :func:`core.evaluate.evaluate`, exactly as the runner does; uploads are read by
:func:`core.io.read_image_bytes` within stated limits.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core.io import SUPPORTED_SUFFIXES
from core.metrics import ms_ssim_db
from core.pipeline import build_encoder, effective_colour_mode
from core.rate_search import SearchResult, search_setting  # noqa: F401  (the one target-bpp rule)

#: Live-comparison limits (stated in the page): file size in bytes and image side in pixels.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
#: File types the uploader takes: core.io's one suffix list.
UPLOAD_TYPES = tuple(s.lstrip(".") for s in SUPPORTED_SUFFIXES)


class UploadError(ValueError):
    """An uploaded file is unsupported or over the stated limits."""


def read_upload(data: bytes, name: str, bit_depth: int | None = None, page: int | None = None):
    """Read an uploaded file into a BioImage, enforcing :data:`MAX_UPLOAD_BYTES` and :data:`MAX_UPLOAD_SIDE`."""
    from core.io import ImageReadError, read_image_bytes

    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise UploadError(f"{name}: unsupported file type '.{suffix}' (use {', '.join(UPLOAD_TYPES)})")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: {len(data) / 2**20:.1f} MB exceeds the live-comparison limit of "
                          f"{MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        image = read_image_bytes(data, name, bit_depth=bit_depth, page=page)
    except ImageReadError as exc:
        raise UploadError(str(exc)) from exc
    if max(image.height, image.width) > MAX_UPLOAD_SIDE:
        raise UploadError(f"{name}: {image.width}×{image.height} exceeds the live-comparison limit of "
                          f"{MAX_UPLOAD_SIDE}×{MAX_UPLOAD_SIDE} pixels")
    return image


def codecs_for_image(bit_depth: int, channels: int, colour_mode: str = "joint",
                     names: Iterable[str] | None = None) -> list[str]:
    """Registered codecs that can code an image of this depth and channel count in ``colour_mode``."""
    from core.codecs import available_codecs, get_codec

    coded_channels = 1 if effective_colour_mode(colour_mode, channels) == "per_channel" else channels
    out = []
    for name in names if names is not None else available_codecs():
        try:
            if get_codec(name).supports(bit_depth, coded_channels):
                out.append(name)
        except Exception:  # a codec whose models cannot load is not offered
            continue
    return out


# --------------------------------------------------------------------------- live compression


@dataclass
class LiveResult:
    """One codec's live result: the evaluation (metrics, encoded bytes, reconstruction) and a note."""

    evaluation: object  # core.evaluate.Evaluation
    note: str = ""


def live_compress(image, codec, colour_mode: str = "joint", setting=None, target_bpp: float | None = None,
                  ) -> LiveResult:
    """Compress an uploaded image with ``codec`` in ``colour_mode`` at ``setting``, or at the setting whose
    rate is closest to ``target_bpp`` (bits per pixel; :func:`search_setting`) when that is given.

    The codec is :func:`core.pipeline.build_encoder`'s for this image (a grayscale image's per-channel
    coding is its joint coding; large images are tiled as in the runner).
    """
    from core.evaluate import evaluate

    runner = build_encoder(codec, colour_mode, image.channels, image.height, image.width)
    if target_bpp is None:
        return LiveResult(evaluate(image, runner, None if runner.lossless else setting))
    found = search_setting(image, runner, target_bpp)
    note = f"searched {len(found.trials)} settings: " + ", ".join(f"{s} → {b:.3f} bpp" for s, b in found.trials)
    return LiveResult(found.evaluation, note + (f". {found.note}" if found.note else ""))


def reencode_stored(ref, codec, colour_mode: str, setting_text: str) -> dict:
    """Load a stored row's original (its :class:`~core.catalog.ImageRef`) and code it again as the runner
    did: ``{"ref", "original", "bit_depth", "reconstruction", "metrics"}``."""
    from core.datasets import load_ref
    from core.evaluate import evaluate
    from core.setting_text import parse_setting

    image = load_ref(ref)
    runner = build_encoder(codec, colour_mode, image.channels, image.height, image.width)
    result = evaluate(image, runner, parse_setting(setting_text))
    return {"ref": ref, "original": image.pixels, "bit_depth": image.bit_depth,
            "reconstruction": result.reconstruction, "metrics": result.metrics}


def segment_pair(ref, original: np.ndarray, bit_depth: int, reconstruction: np.ndarray) -> dict:
    """Downstream comparison of an original and its reconstruction (``{"metrics", "original",
    "reconstruction"}``; the last two are label images / contour masks when the evaluator can segment),
    or ``{"notice"}`` when the dataset has no downstream task."""
    from core.io import BioImage
    from core.segmentation import downstream_for

    evaluator = downstream_for(ref)
    if evaluator is None:
        return {"notice": f"Dataset {ref.dataset} has no downstream segmentation task."}
    image = BioImage(original, bit_depth, ref.image_id)
    state = evaluator.prepare(image, ref)
    out = {"metrics": evaluator.compare(state, reconstruction)}
    if hasattr(evaluator, "segment"):  # label images / contour masks to overlay
        out["original"] = state.get("original") or evaluator.segment(original)
        out["reconstruction"] = evaluator.segment(reconstruction)
    return out


def encoded_suffix(codec_name: str) -> str:
    """File extension for a download of the encoded bytes of ``codec_name``."""
    suffixes = {"jpeg": ".jpg", "jpeg2000": ".jp2", "jpeg2000-lossless": ".jp2", "png": ".png", "jpegxl": ".jxl",
                "jpegxl-lossless": ".jxl", "avif": ".avif", "webp": ".webp", "webp-lossless": ".webp",
                "jpegls": ".jls", "jpegls-near": ".jls"}
    return suffixes.get(codec_name, ".bin")


def live_row(codec_name: str, colour_mode: str, evaluation) -> dict:
    """The table row shown for one live evaluation (sizes in bytes, rate in bpp, dB, seconds)."""
    m = evaluation.metrics
    return {"codec": codec_name, "colour_mode": colour_mode, "setting": m["setting"], "bytes": m["bytes"],
            "bpp": m["bpp"], "ratio": m["ratio"], "factor": m["factor"], "PSNR dB": m["psnr"],
            "SSIM": m["ssim"], "MS-SSIM": m["ms_ssim"], "MS-SSIM dB": ms_ssim_db(m["ms_ssim"]),
            "encode s": m["encode_s"], "decode s": m["decode_s"]}
