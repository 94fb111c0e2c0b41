"""core.segmentation.stardist_models.vote_instances: nuclei redrawn as the vote of their candidate polygons.

Synthetic StarDist maps on a stride-2 lattice: candidates inside a disc, whose rays measure the distance to the
disc's edge (StarDist's ray angles: ``stardist.geometry.dist_to_coord``), exact or with seeded noise."""
import json

import numpy as np
import pytest

from core.segmentation.metrics import dice
from core.segmentation.stardist_models import (INSTANCE_RULES, model_instances, predict_labels,
                                               star_polygon_votes, vote_instances)

GRID = (2, 2)
N_RAYS = 32
THRESH = 0.5


def ray_lengths(point, centre, radius, n_rays=N_RAYS):
    """Distances from ``point`` along StarDist's rays (y = sin φ, x = cos φ) to the circle (centre, radius)."""
    phis = np.linspace(0, 2 * np.pi, n_rays, endpoint=False)
    u = np.stack([np.sin(phis), np.cos(phis)], axis=1)
    rel = np.asarray(point, float) - np.asarray(centre, float)
    b = u @ rel
    return -b + np.sqrt(b ** 2 - (rel @ rel - radius ** 2))


def disc(shape, centre, radius):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def maps(shape, discs, noise=0.0, seed=0):
    """prob (peak 0.95 at each disc's centre, falling linearly to 0 at its edge) and ray distances on the lattice."""
    rng = np.random.default_rng(seed)
    h, w = shape[0] // GRID[0], shape[1] // GRID[1]
    prob = np.zeros((h, w), np.float32)
    dist = np.ones((h, w, N_RAYS), np.float32)
    for i in range(h):
        for j in range(w):
            point = (i * GRID[0], j * GRID[1])
            for centre, radius in discs:
                r = np.hypot(point[0] - centre[0], point[1] - centre[1])
                if r < radius - 1:
                    prob[i, j] = 0.95 * (1 - r / radius)
                    dist[i, j] = ray_lengths(point, centre, radius) * (1 + noise * rng.standard_normal(N_RAYS))
    return prob, dist


def winners(prob, dist, shape):
    """StarDist's NMS polygons of the maps (the labels vote_instances starts from)."""
    from stardist.geometry import polygons_to_label
    from stardist.nms import non_maximum_suppression

    points, probi, disti = non_maximum_suppression(np.maximum(dist, 1e-3), prob, grid=GRID, prob_thresh=THRESH,
                                                   nms_thresh=0.4)
    return np.asarray(polygons_to_label(disti, points, prob=probi, shape=shape), np.int32)


def test_exact_rays_vote_for_the_disc_itself():
    shape, centre, radius = (64, 64), (31.0, 33.0), 14.0
    prob, dist = maps(shape, [(centre, radius)])
    labels = winners(prob, dist, shape)
    assert np.unique(labels).tolist() == [0, 1]
    voted = vote_instances(labels, prob, dist, GRID, THRESH)
    assert voted.dtype == np.int32 and voted.shape == shape
    assert np.unique(voted).tolist() == [0, 1]
    truth = disc(shape, centre, radius)
    # a 32-gon inscribed in the circle: both drawings miss only a few boundary pixels (measured 0.997 / 0.995)
    assert dice(truth, voted > 0) > 0.99 and dice(truth, labels > 0) > 0.99
    assert dice(labels > 0, voted > 0) > 0.99


def test_the_vote_averages_out_noisy_rays():
    shape, centre, radius = (64, 64), (32.0, 32.0), 14.0
    truth = disc(shape, centre, radius)
    gains = []
    for seed in range(5):
        prob, dist = maps(shape, [(centre, radius)], noise=0.15, seed=seed)
        labels = winners(prob, dist, shape)
        voted = vote_instances(labels, prob, dist, GRID, THRESH)
        gains.append(dice(truth, voted > 0) - dice(truth, labels > 0))
        assert dice(truth, voted > 0) > 0.97  # measured 0.974-0.981; the winner's polygon alone 0.906-0.915
    # one polygon with 15 % ray noise vs the weighted majority of the 37 such polygons inside the disc
    assert min(gains) > 0.05


def test_each_candidate_votes_only_for_the_nucleus_that_contains_it():
    shape = (64, 96)
    discs = [((30.0, 24.0), 12.0), ((32.0, 70.0), 16.0)]
    prob, dist = maps(shape, discs)
    labels = winners(prob, dist, shape)
    voted = vote_instances(labels, prob, dist, GRID, THRESH)
    assert sorted(np.unique(voted)) == sorted(np.unique(labels)) and len(np.unique(voted)) == 3
    for centre, radius in discs:
        region = disc(shape, centre, radius)
        ids = np.unique(voted[region & (voted > 0)])
        assert len(ids) == 1  # one nucleus per disc, none spilling into the other
        assert dice(region, voted == ids[0]) > 0.97


def test_a_nucleus_without_candidates_keeps_its_polygon():
    shape, centre, radius = (64, 64), (32.0, 32.0), 14.0
    prob, dist = maps(shape, [(centre, radius)])
    labels = winners(prob, dist, shape)
    extra = np.zeros(shape, bool)
    extra[2:8, 50:60] = True  # a nucleus whose lattice points are all below the threshold
    labels[extra] = 7
    voted = vote_instances(labels, prob, dist, GRID, THRESH)
    assert np.array_equal(voted == 7, extra)


def test_lattice_coordinates_are_rescaled_to_the_image():
    # the network ran on the image zoomed by 0.5: lattice and rays are in half-size pixels
    small, centre, radius = (32, 32), (16.0, 16.0), 7.0
    prob, dist = maps(small, [(centre, radius)])
    big = disc((64, 64), (32.0, 32.0), 14.0)
    labels = big.astype(np.int32)
    voted = vote_instances(labels, prob, dist, GRID, THRESH, rescale=(2.0, 2.0))
    assert dice(big, voted > 0) > 0.95


def test_instance_rule_is_read_from_the_model_folder_and_checked(tmp_path):
    folder = tmp_path / "nuclei"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert model_instances(str(folder)) == "polygons"  # no biocodec.json: StarDist's own polygons
    (folder / "biocodec.json").write_text(json.dumps({"scale": 1.0}))
    assert model_instances(str(folder)) == "polygons"
    (folder / "biocodec.json").write_text(json.dumps({"instances": "vote"}))
    assert model_instances(str(folder)) == "vote"
    (folder / "biocodec.json").write_text(json.dumps({"instances": "mean"}))
    with pytest.raises(ValueError, match="instances must be one of polygons, vote"):
        model_instances(str(folder))
    assert INSTANCE_RULES == ("polygons", "vote")
    with pytest.raises(ValueError, match="instances must be one of"):
        predict_labels(object(), np.zeros((8, 8), np.uint8), instances="mean")


def test_star_polygon_votes_match_the_drawn_polygons():
    from skimage.draw import polygon as draw_polygon
    from stardist.geometry import dist_to_coord

    rng = np.random.default_rng(3)
    centres = rng.uniform(20, 40, size=(6, 2))
    rays = rng.uniform(4, 18, size=(6, N_RAYS))
    weights = rng.uniform(0.5, 1.0, size=6)
    box = (0, 64, 0, 60)
    votes = star_polygon_votes(centres, rays, weights, box)
    drawn = np.zeros((64, 60))
    for coord, w in zip(dist_to_coord(rays, centres), weights):
        rr, cc = draw_polygon(coord[0], coord[1], drawn.shape)
        drawn[rr, cc] += w
    assert votes.shape == (64, 60)
    # pixel centres inside each polygon, as skimage draws them (at most a pixel differs on an edge it grazes)
    assert np.mean(np.isclose(votes, drawn)) > 0.999
    assert np.isclose(votes.max(), weights.sum()) and votes[0, 0] == 0
