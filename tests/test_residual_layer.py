"""bench/residual_layer.py: the near-lossless residual layer on a learned base."""
from __future__ import annotations

import numpy as np
import pytest


def test_the_residual_layer_keeps_every_pixel_within_near_and_refuses_16_bit():
    """bench/residual_layer.py: the learned base's residual through JPEG-LS near-lossless, offset to unsigned."""
    from bench.residual_layer import residual_stream

    rng = np.random.default_rng(5)
    for depth, dtype in ((8, np.uint8), (12, np.uint16)):
        top = (1 << depth) - 1
        original = rng.integers(0, top + 1, (64, 80)).astype(dtype)
        recon = np.clip(original.astype(np.int64) + rng.integers(-top // 3, top // 3, original.shape), 0, top).astype(dtype)
        for near in (0, 3):
            data, out = residual_stream(original, recon, near, depth)
            assert out.dtype == dtype and len(data) > 0
            assert int(np.abs(original.astype(np.int64) - out).max()) <= near
            if near == 0:
                assert np.array_equal(out, original)
    with pytest.raises(ValueError, match="17 bits"):
        residual_stream(np.zeros((8, 8), np.uint16), np.zeros((8, 8), np.uint16), 1, 16)
