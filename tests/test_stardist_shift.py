"""core.segmentation.stardist_models.shift_averaged_maps: stride-1 maps from a grid model's shifted predictions,
and the ``shift_average`` option that puts them on the runner's path."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from core.segmentation.stardist_models import (model_shift_average, predict_labels, shift_averaged_maps,
                                               stride1_labels)


class GridModel:
    """A stand-in for StarDist2D.predict on a stride-2 grid: prob = channel 0 at the grid points (plus
    ``artefact`` on every other lattice row and column, as a deeper pooling level would add), dist = the
    row and column index in the view it was given (to show each value lands at the right pixel)."""

    config = SimpleNamespace(grid=(2, 2), n_rays=2)

    def __init__(self, artefact: float = 0.0):
        self.artefact = artefact

    def predict(self, x):
        h, w = x.shape[:2]
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
        sub = (slice(None, None, 2), slice(None, None, 2))
        lattice_rows, lattice_cols = np.mgrid[0:(h + 1) // 2, 0:(w + 1) // 2]
        odd = ((lattice_rows % 2) + (lattice_cols % 2)).astype(np.float32)
        return x[..., 0][sub] + self.artefact * odd, np.stack([rows[sub], cols[sub]], axis=-1)


def test_period_two_reassembles_the_full_resolution_map():
    x = np.random.default_rng(0).random((7, 10, 3)).astype(np.float32)  # odd height: reflect padding at the edge
    prob, dist = shift_averaged_maps(GridModel(), x, 2)
    assert prob.shape == (7, 10) and dist.shape == (7, 10, 2) and prob.dtype == dist.dtype == np.float32
    np.testing.assert_array_equal(prob, x[..., 0])
    # each phase's view starts at (dy, dx): its own coordinates are the pixel's minus the phase
    rows, cols = np.mgrid[0:7, 0:10]
    np.testing.assert_allclose(dist[..., 0], np.maximum(rows - rows % 2, 1e-3))
    np.testing.assert_allclose(dist[..., 1], np.maximum(cols - cols % 2, 1e-3))


def test_period_four_averages_the_passes_that_sampled_each_pixel():
    x = np.random.default_rng(2).random((9, 12, 1)).astype(np.float32)
    prob, dist = shift_averaged_maps(GridModel(), x, 4)
    np.testing.assert_allclose(prob, x[..., 0], rtol=1e-6)  # every pass samples the same pixel values
    # pixel y is sampled by the passes dy <= y with dy = y (mod 2), dy < 4, at its view's row y - dy
    rows = np.arange(9)
    expected = [np.mean([y - dy for dy in range(4) if dy <= y and dy % 2 == y % 2]) for y in rows]
    np.testing.assert_allclose(dist[:, 0, 0], np.maximum(expected, 1e-3), rtol=1e-6)


def test_a_one_pixel_shift_permutes_the_phases():
    x = np.random.default_rng(1).random((8, 8, 1)).astype(np.float32)
    prob, _ = shift_averaged_maps(GridModel(), x, 2)
    moved, _ = shift_averaged_maps(GridModel(), x[1:, 1:], 2)
    np.testing.assert_array_equal(moved, prob[1:, 1:][:7, :7])


def test_period_four_moves_with_the_image_where_period_two_does_not():
    # a network whose output depends on its lattice position's parity (what a stride-4 pooling leaves): the
    # polyphase interleave carries the artefact into a 1-px shift; averaging over period 4 evens it out
    model = GridModel(artefact=0.1)
    x = np.random.default_rng(3).random((24, 24, 1)).astype(np.float32)
    for period, moves in ((2, False), (4, True)):
        prob, _ = shift_averaged_maps(model, x, period)
        moved, _ = shift_averaged_maps(model, x[1:, 1:], period)
        # pixels whose passes are all inside both images (the first 2 rows / columns get fewer passes)
        same = np.allclose(moved[2:, 2:], prob[3:, 3:], atol=1e-6)
        assert same is moves, period
    prob, _ = shift_averaged_maps(model, x, 4)
    np.testing.assert_allclose(prob[2:, 2:], x[2:, 2:, 0] + 0.1, atol=1e-6)  # the mean artefact, everywhere


def test_period_must_fit_the_grid_and_the_image():
    x = np.zeros((16, 16, 1), np.float32)
    with pytest.raises(ValueError, match="not a multiple of the model's grid"):
        shift_averaged_maps(GridModel(), x, 3)
    with pytest.raises(ValueError, match="needs an image larger than 4 px"):
        shift_averaged_maps(GridModel(), x[:4], 4)
    with pytest.raises(ValueError, match="needs scale 1"):
        predict_labels(object(), np.zeros((8, 8), np.uint8), scale=0.5, shift_average=4)


def test_shift_average_is_read_from_the_model_folder_and_checked(tmp_path):
    folder = tmp_path / "nuclei"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert model_shift_average(str(folder)) == 1  # no biocodec.json: one plain pass
    (folder / "biocodec.json").write_text(json.dumps({"instances": "vote"}))
    assert model_shift_average(str(folder)) == 1
    (folder / "biocodec.json").write_text(json.dumps({"shift_average": 4}))
    assert model_shift_average(str(folder)) == 4
    for bad in (0, 2.5, "4"):
        (folder / "biocodec.json").write_text(json.dumps({"shift_average": bad}))
        with pytest.raises(ValueError, match="shift_average must be a positive integer"):
            model_shift_average(str(folder))
