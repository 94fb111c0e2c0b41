"""bench.stardist_shift: the stride-1 maps interleaved from a grid model's phase-shifted predictions."""
from types import SimpleNamespace

import numpy as np

from bench.stardist_shift import polyphase_maps


class GridModel:
    """A stand-in for StarDist2D.predict on a stride-2 grid: prob = channel 0 at the grid points, dist = its
    row and column index (to show each value lands at the right pixel)."""

    config = SimpleNamespace(grid=(2, 2), n_rays=2)

    def predict(self, x):
        h, w = x.shape[:2]
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
        sub = (slice(None, None, 2), slice(None, None, 2))
        return x[..., 0][sub], np.stack([rows[sub], cols[sub]], axis=-1)


def test_polyphase_maps_reassemble_the_full_resolution_map():
    x = np.random.default_rng(0).random((7, 10, 3)).astype(np.float32)  # odd height: reflect padding at the edge
    prob, dist = polyphase_maps(GridModel(), x)
    assert prob.shape == (7, 10) and dist.shape == (7, 10, 2)
    np.testing.assert_array_equal(prob, x[..., 0])
    # each phase's view starts at (dy, dx): its own coordinates are the pixel's minus the phase
    rows, cols = np.mgrid[0:7, 0:10]
    np.testing.assert_allclose(dist[..., 0], np.maximum(rows - rows % 2, 1e-3))
    np.testing.assert_allclose(dist[..., 1], np.maximum(cols - cols % 2, 1e-3))


def test_a_one_pixel_shift_permutes_the_phases():
    x = np.random.default_rng(1).random((8, 8, 1)).astype(np.float32)
    prob, _ = polyphase_maps(GridModel(), x)
    moved, _ = polyphase_maps(GridModel(), x[1:, 1:])
    np.testing.assert_array_equal(moved, prob[1:, 1:][:7, :7])
