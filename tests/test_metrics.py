"""Metrics against hand computations and the reference libraries."""
import math

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as reference_ms_ssim
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from core import metrics


def test_sizes_ratio_factor_bpp_by_hand():
    out = metrics.size_metrics(1000, (100, 50, 3), np.uint16)
    assert out["raw_bytes"] == 100 * 50 * 3 * 2 == 30000
    assert out["ratio"] == pytest.approx(1000 / 30000)
    assert out["factor"] == pytest.approx(30.0)
    assert out["bpp"] == pytest.approx(8 * 1000 / (100 * 50)) == 1.6
    with pytest.raises(ValueError):
        metrics.size_metrics(0, (4, 4), np.uint8)


def test_mse_and_psnr_on_a_tiny_array():
    a = np.array([[0, 10], [20, 30]], np.uint8)
    b = np.array([[1, 10], [18, 30]], np.uint8)
    assert metrics.mse(a, b) == pytest.approx((1 + 0 + 4 + 0) / 4)  # 1.25
    expected = 20 * math.log10(255 / math.sqrt(1.25))               # 47.1617 dB
    assert metrics.psnr(a, b, 8) == pytest.approx(expected)
    assert metrics.psnr(a, b, 8) == pytest.approx(47.1617, abs=1e-4)
    assert metrics.psnr(a.astype(np.uint16), b.astype(np.uint16), 12) == pytest.approx(
        20 * math.log10(4095 / math.sqrt(1.25)))
    assert metrics.psnr(a, a, 8) == math.inf


def test_psnr_matches_skimage():
    img = data.camera()
    noisy = np.clip(img.astype(int) + np.random.default_rng(1).integers(-9, 10, img.shape), 0, 255).astype(np.uint8)
    assert metrics.psnr(img, noisy, 8) == pytest.approx(peak_signal_noise_ratio(img, noisy, data_range=255))


def test_ssim_matches_skimage_with_explicit_range_and_channels():
    rgb = data.astronaut()[:200, :200]
    rng = np.random.default_rng(2)
    noisy = np.clip(rgb.astype(int) + rng.integers(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(rgb.astype(float), noisy.astype(float), data_range=255, channel_axis=-1,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(rgb, noisy, 8) == pytest.approx(expected)
    assert 0.3 < expected < 0.95
    assert metrics.ssim(rgb, rgb, 8) == pytest.approx(1.0)


def test_ms_ssim_matches_pytorch_msssim_and_its_small_image_fallback():
    img = data.camera()
    rng = np.random.default_rng(3)
    noisy = np.clip(img.astype(int) + rng.integers(-15, 16, img.shape), 0, 255).astype(np.uint8)
    t = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    expected = float(reference_ms_ssim(t(img), t(noisy), data_range=255))
    assert metrics.ms_ssim(img, noisy, 8) == pytest.approx(expected, abs=1e-6)
    assert metrics.ms_ssim(img, img, 8) == pytest.approx(1.0, abs=1e-6)
    # small images: documented smaller window, still 5 scales
    assert metrics.ms_ssim_window(512) == 11
    assert metrics.ms_ssim_window(160) == 9
    assert metrics.ms_ssim_window(128) == 7
    assert metrics.ms_ssim_window(48) == 3
    assert metrics.ms_ssim_window(32) is None
    small = metrics.ms_ssim(img[:128, :128], noisy[:128, :128], 8)
    expected_small = float(reference_ms_ssim(t(img[:128, :128]), t(noisy[:128, :128]), data_range=255,
                                             win_size=7, win_sigma=1.5 * 7 / 11))
    assert small == pytest.approx(expected_small, abs=1e-6)
    assert math.isnan(metrics.ms_ssim(img[:20, :20], noisy[:20, :20], 8))


def test_16bit_uses_the_16bit_max():
    img = (data.camera().astype(np.uint32) * 257).astype(np.uint16)
    shifted = img.copy()
    shifted[0, :4] += 257
    out = metrics.quality_metrics(img, shifted, 16)
    assert out["mse"] == pytest.approx(4 * 257**2 / img.size)
    assert out["psnr"] == pytest.approx(20 * math.log10(65535 / math.sqrt(out["mse"])))
    assert out["psnr_peak"] == pytest.approx(20 * math.log10(float(img.max()) / math.sqrt(out["mse"])))
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert metrics.ms_ssim_db(1.0) == math.inf


def test_exact_reconstruction_shortcut_equals_the_full_computation():
    img = data.camera()[:200, :240]
    out = metrics.quality_metrics(img, img.copy(), 8)
    assert out["mse"] == 0 and out["psnr"] == math.inf
    assert out["ssim"] == metrics.ssim(img, img, 8) == 1.0
    assert out["ms_ssim"] == pytest.approx(metrics.ms_ssim(img, img, 8), abs=1e-6)
    assert math.isnan(metrics.quality_metrics(img[:20, :20], img[:20, :20].copy(), 8)["ms_ssim"])
