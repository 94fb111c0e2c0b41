"""bench/grain_shape.py: the oracle grain shapes it compares with the shipped white grain."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

from bench.grain_shape import intensity_sigma, residual_spectrum, shape_noise, variants


def test_the_spectrum_of_white_noise_is_flat_and_of_smoothed_noise_low_pass():
    rng = np.random.default_rng(0)
    white = rng.standard_normal((256, 256)) * 3.0
    flat = residual_spectrum(white)
    assert flat.shape == (16, 16)
    assert abs(np.mean(flat) - 9.0) < 0.5  # σ² = 9 per frequency
    assert flat.max() / flat.min() < 2.0
    smooth = uniform_filter1d(white, 4, axis=1)  # correlated along x only
    power = residual_spectrum(smooth)
    assert power[3, 0] > 5 * power[3, 8]          # low x-frequencies carry the power
    assert abs(power[0, 3] / power[8, 3] - 1) < 0.5  # y stays white


def test_shaped_noise_has_unit_variance_and_the_target_correlation():
    rng = np.random.default_rng(1)
    target = uniform_filter1d(rng.standard_normal((256, 256)), 4, axis=1)
    shaped = shape_noise(np.random.RandomState(2).standard_normal((256, 256)), residual_spectrum(target))
    assert abs(shaped.std() - 1.0) < 1e-9

    def lag1(a, axis):
        return np.corrcoef(a.ravel(), np.roll(a, 1, axis=axis).ravel())[0, 1]

    assert abs(lag1(shaped, 1) - lag1(target, 1)) < 0.1 and lag1(shaped, 1) > 0.6
    assert abs(lag1(shaped, 0)) < 0.1


def test_intensity_sigma_follows_the_grey_level():
    rng = np.random.default_rng(3)
    recon = np.repeat(np.linspace(20, 220, 256)[None, :], 256, axis=0)
    residual = rng.standard_normal(recon.shape) * (1 + recon / 20)   # σ from 2 to 12 grey levels
    sigma = intensity_sigma(recon, residual)
    assert abs(sigma[0, 128] - (1 + recon[0, 128] / 20)) < 0.5
    assert sigma[0, -1] > 3 * sigma[0, 0]


def test_every_variant_restores_the_residuals_energy_from_one_white_draw():
    rng = np.random.default_rng(4)
    original = rng.integers(0, 256, (128, 128)).astype(np.uint8)
    recon = np.full_like(original, 128)
    out = variants(original, recon)
    assert list(out) == ["none", "white", "shaped", "white+intensity", "shaped+intensity"]
    rms = np.sqrt(np.mean((original.astype(float) - 128) ** 2))
    assert np.array_equal(out["none"], recon.astype(float))
    for name in ("white", "shaped"):
        assert abs(np.std(out[name] - 128) - rms) < 0.02 * rms
    assert np.array_equal(out["white"], variants(original, recon)["white"])  # seeded

