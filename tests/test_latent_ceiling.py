"""bench.latent_ceiling: the block view and the linear (PCA) ceiling it compares the learned transforms with."""
from __future__ import annotations

import numpy as np

from bench.latent_ceiling import blocks, linear_ceiling, psnr


def test_blocks_cover_whole_16px_blocks_in_raster_order():
    img = np.arange(40 * 36, dtype=np.float64).reshape(40, 36)
    b = blocks(img)
    assert b.shape == (2 * 2, 256)  # 40×36 → 2×2 whole blocks; the rest is dropped
    assert np.array_equal(b[1].reshape(16, 16), img[:16, 16:32])
    rgb = np.stack([img, img + 1, img + 2], axis=-1)
    assert blocks(rgb).shape == (4, 768) and np.array_equal(blocks(rgb)[0][:3], [0, 1, 2])


def test_linear_ceiling_is_exact_with_a_full_basis_and_rises_with_k():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(8, 256))
    train = rng.normal(size=(500, 8)) @ basis * 0.01 + 0.5 + rng.normal(scale=1e-3, size=(500, 256))
    test = rng.normal(size=(50, 8)) @ basis * 0.01 + 0.5 + rng.normal(scale=1e-3, size=(50, 256))
    got = linear_ceiling(train, test, [2, 8, 255])
    assert got[2] < got[8] < got[255]
    assert got[8] > psnr(test, np.full_like(test, 0.5)) + 15  # 8 components hold the 8-dimensional signal
    assert abs(got[8] - psnr(test, test + rng.normal(scale=1e-3, size=test.shape))) < 1.0  # only the noise is lost
