"""Rate and distortion metrics: the product's one definition of each.

Sizes (all in bytes; never ``sys.getsizeof``, which measures a Python object,
not the encoded data):

* ``bytes``      length of the complete encoded byte string (headers included)
* ``raw_bytes``  H · W · C · bytes-per-sample of the container (1 for 8-bit, 2 for 9–16-bit)
* ``ratio``      bytes / raw_bytes  (compression ratio; smaller is better)
* ``factor``     raw_bytes / bytes  (compression factor, "N:1"; larger is better)
* ``bpp``        8 · bytes / (H · W)  (bits per pixel, all channels together)

Distortion, always computed on the full-resolution decoded image against the
original at its declared bit depth, with MAX = 2**bit_depth − 1:

* ``mse``   mean squared error over all samples (in squared intensity units)
* ``psnr``  20 · log10(MAX / √MSE) in dB (``math.inf`` when the reconstruction
  is exact; stored as +inf in DuckDB too).  ("20·log20", which appears in the
  seed's notes, is wrong.)
* ``psnr_peak``  the same with MAX replaced by the original's own peak value
  (for data that uses only part of its container, e.g. 12-bit MRI in uint16)
* ``ssim``  ``skimage.metrics.structural_similarity`` with ``data_range=MAX``,
  Gaussian window σ = 1.5, population covariance (Wang et al. 2004), channel
  axis −1 for RGB (mean over channels)
* ``ms_ssim``  ``pytorch_msssim.ms_ssim`` (5 scales, Wang et al. 2003) with
  ``data_range=MAX``.  pytorch_msssim needs a short side > 160 px for its
  11-px window; for smaller images we keep the 5 scales and shrink the
  Gaussian window to the largest odd size w with (w − 1) · 16 < short side
  (σ scaled by w/11).  Below 33 px MS-SSIM is undefined and returned as NaN
  (stored as NULL).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np

MS_SSIM_MIN_SIDE = 33  # smallest short side with a 3-px window at 5 scales


def bytes_per_sample(dtype) -> int:
    """Container bytes per sample: 1 for uint8, 2 for uint16."""
    return int(np.dtype(dtype).itemsize)


def raw_bytes(shape: tuple[int, ...], dtype) -> int:
    """Uncompressed size in bytes, H · W · C · bytes-per-sample."""
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    return int(height * width * channels * bytes_per_sample(dtype))


def bits_per_pixel(n_bytes: int, height: int, width: int) -> float:
    """8 · bytes / (H · W): bits per pixel, all channels together."""
    return 8.0 * n_bytes / (height * width)


def size_metrics(n_bytes: int, shape: tuple[int, ...], dtype) -> dict:
    """``bytes``, ``raw_bytes``, ``ratio``, ``factor`` and ``bpp`` of an encoding of ``n_bytes``."""
    if n_bytes <= 0:
        raise ValueError("an encoding must have at least one byte")
    raw = raw_bytes(shape, dtype)
    return {
        "bytes": int(n_bytes),
        "raw_bytes": raw,
        "ratio": n_bytes / raw,
        "factor": raw / n_bytes,
        "bpp": bits_per_pixel(n_bytes, shape[0], shape[1]),
    }


def _check_pair(original: np.ndarray, reconstruction: np.ndarray) -> None:
    if original.shape != reconstruction.shape:
        raise ValueError(f"shape mismatch: original {original.shape} vs reconstruction {reconstruction.shape}")


def mse(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean squared error over every sample, computed in float64."""
    _check_pair(original, reconstruction)
    diff = original.astype(np.float64) - reconstruction.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr_from_mse(mse_value: float, max_value: float) -> float:
    """20 · log10(MAX / √MSE) in dB; ``math.inf`` for MSE = 0."""
    if mse_value == 0:
        return math.inf
    return 20.0 * math.log10(max_value / math.sqrt(mse_value))


def psnr(original: np.ndarray, reconstruction: np.ndarray, bit_depth: int) -> float:
    """PSNR in dB with MAX = 2**bit_depth − 1."""
    return psnr_from_mse(mse(original, reconstruction), (1 << bit_depth) - 1)


def ssim(original: np.ndarray, reconstruction: np.ndarray, bit_depth: int) -> float:
    """SSIM (Gaussian σ = 1.5 window, data_range = 2**bit_depth − 1); mean over channels for RGB."""
    from skimage.metrics import structural_similarity

    _check_pair(original, reconstruction)
    if min(original.shape[:2]) < 7:
        return math.nan
    return float(structural_similarity(
        original.astype(np.float64), reconstruction.astype(np.float64),
        data_range=float((1 << bit_depth) - 1),
        channel_axis=-1 if original.ndim == 3 else None,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    ))


def ms_ssim_window(short_side: int) -> int | None:
    """Gaussian window size used for MS-SSIM at this short side (11 normally; None if undefined)."""
    if short_side > 160:
        return 11
    if short_side < MS_SSIM_MIN_SIDE:
        return None
    win = (short_side - 1) // 16 + 1  # largest size with (win - 1) * 16 < short_side ...
    return win if win % 2 else win - 1  # ... made odd


def ms_ssim(original: np.ndarray, reconstruction: np.ndarray, bit_depth: int) -> float:
    """MS-SSIM (pytorch_msssim, 5 scales) with data_range = 2**bit_depth − 1; NaN below 33 px."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_pair(original, reconstruction)
    win = ms_ssim_window(min(original.shape[:2]))
    if win is None:
        return math.nan

    def to_tensor(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(a.astype(np.float32))
        return (t[None, None] if a.ndim == 2 else t.permute(2, 0, 1)[None]).contiguous()

    with torch.no_grad():
        value = _ms_ssim(to_tensor(original), to_tensor(reconstruction), data_range=float((1 << bit_depth) - 1),
                         size_average=True, win_size=win, win_sigma=1.5 * win / 11)
    return float(value)


def ms_ssim_db(value):
    """MS-SSIM on a dB scale, −10 · log10(1 − MS-SSIM): inf for 1.0, NaN for None/NaN.

    Takes a number (returns a float) or an array/Series (returns an array).
    """
    v = np.asarray(np.nan if value is None else value, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(v >= 1.0, np.inf, -10.0 * np.log10(1.0 - v))
    return float(out) if out.ndim == 0 else out


def quality_metrics(original: np.ndarray, reconstruction: np.ndarray, bit_depth: int) -> dict:
    """``mse``, ``psnr``, ``psnr_peak``, ``ssim``, ``ms_ssim`` of a reconstruction (see module doc)."""
    if original.dtype != reconstruction.dtype:
        raise ValueError(f"dtype mismatch: {original.dtype} vs {reconstruction.dtype}")
    err = mse(original, reconstruction)
    peak = float(original.max())
    exact = err == 0.0  # SSIM and MS-SSIM of identical images are 1 by definition: skip the filtering
    return {
        "mse": err,
        "psnr": psnr_from_mse(err, (1 << bit_depth) - 1),
        "psnr_peak": psnr_from_mse(err, peak) if peak > 0 else math.nan,
        "ssim": (1.0 if min(original.shape[:2]) >= 7 else math.nan) if exact
        else ssim(original, reconstruction, bit_depth),
        "ms_ssim": (1.0 if ms_ssim_window(min(original.shape[:2])) else math.nan) if exact
        else ms_ssim(original, reconstruction, bit_depth),
    }


@contextmanager
def stopwatch():
    """``with stopwatch() as t: ...`` then ``t()`` gives the elapsed seconds (wall clock, perf_counter)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())
