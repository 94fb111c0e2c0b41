"""StarDist 2D models: the project's own (folders under ``data/models``) or registered pretrained ones.

A model is named either by a **local folder** holding ``config.json``,
``thresholds.json`` and ``weights_best.h5`` (optionally ``biocodec.json`` with the
input ``scale``), by a **project model name** (a folder name under ``data/models``,
e.g. ``monuseg_he``), or by a **registered pretrained name** such as
``2D_versatile_he`` (downloaded by StarDist; needs internet).  Models are loaded once
per process and cached.  ``biocodec.json`` also says how nuclei are drawn
(``"instances"``): StarDist's NMS polygons, or their vote (:func:`vote_instances`), and whether its maps
are averaged over input shifts (``"shift_average"``, :func:`shift_averaged_maps`).
"""
from __future__ import annotations

import json
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.paths import SEG_MODELS_DIR
from core.segmentation.data import normalize

MODELS_DIR = SEG_MODELS_DIR
_CACHE: dict[str, object] = {}
_LOCK = threading.Lock()


def resolve_model_folder(name_or_folder: str) -> Path | None:
    """The local model folder ``name_or_folder`` refers to, or None (then it must be a registered name)."""
    for candidate in (Path(name_or_folder), MODELS_DIR / name_or_folder):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    return None


def registered_names() -> list[str]:
    """Pretrained StarDist 2D model names (and aliases) known to StarDist's registry."""
    from stardist.models import StarDist2D

    from csbdeep.models.pretrained import get_registered_models

    models, aliases = get_registered_models(StarDist2D, return_aliases=True, verbose=False)
    return sorted(set(models) | set(aliases))


def load_stardist(name_or_folder: str):
    """A cached ``StarDist2D`` for a local folder, a project model name or a registered pretrained name."""
    key = str(name_or_folder)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        from core.segmentation.tfsetup import configure_tensorflow

        configure_tensorflow()
        from stardist.models import StarDist2D

        folder = resolve_model_folder(key)
        if folder is not None:
            if not (folder / "weights_best.h5").is_file():
                raise FileNotFoundError(f"{folder} has no weights_best.h5")
            from core.segmentation.stardist_pooling import stardist_pooling

            with stardist_pooling(model_pooling(folder)):
                model = StarDist2D(None, name=folder.name, basedir=str(folder.parent))
        elif key in registered_names():
            model = StarDist2D.from_pretrained(key)
        else:
            raise ValueError(f"{key!r} is neither a StarDist model folder (config.json + weights_best.h5), "
                             f"a model under {MODELS_DIR}, nor a registered pretrained name "
                             f"({', '.join(registered_names())})")
        _CACHE[key] = model
        return model


def model_pooling(folder: Path) -> str:
    """The network's pooling (``biocodec.json``'s ``"pooling"``; StarDist's own ``"max"`` when absent)."""
    meta = Path(folder) / "biocodec.json"
    return str(json.loads(meta.read_text()).get("pooling", "max")) if meta.is_file() else "max"


def _biocodec(name_or_folder: str) -> tuple[Path | None, dict]:
    """(path, contents) of a local model's ``biocodec.json``; (None, {}) for pretrained models and folders
    without one."""
    folder = resolve_model_folder(str(name_or_folder))
    meta = folder / "biocodec.json" if folder else None
    return (meta, json.loads(meta.read_text())) if meta is not None and meta.is_file() else (None, {})


def model_scale(name_or_folder: str) -> float:
    """Input scale the model was trained at (``biocodec.json``; 1.0 for pretrained models)."""
    return float(_biocodec(name_or_folder)[1].get("scale", 1.0))


def model_instances(name_or_folder: str) -> str:
    """How the model's nuclei are drawn (``biocodec.json``'s ``"instances"``, one of :data:`INSTANCE_RULES`;
    StarDist's own ``"polygons"`` for pretrained models and folders that do not say)."""
    meta, options = _biocodec(name_or_folder)
    rule = options.get("instances", "polygons")
    if rule not in INSTANCE_RULES:
        raise ValueError(f"{meta}: instances must be one of {', '.join(INSTANCE_RULES)}, got {rule!r}")
    return rule


def model_shift_average(name_or_folder: str) -> int:
    """The shift-average period of the model's inference (``biocodec.json``'s ``"shift_average"``; 1, one plain
    pass, for pretrained models and folders that do not say).  See :func:`shift_averaged_maps`."""
    meta, options = _biocodec(name_or_folder)
    period = options.get("shift_average", 1)
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"{meta}: shift_average must be a positive integer, got {period!r}")
    return period


#: ``polygons``: each nucleus is the star-convex polygon of the pixel that wins non-maximum suppression
#: (StarDist's ``predict_instances``); ``vote``: the probability-weighted majority of the polygons of every
#: candidate pixel inside that polygon (:func:`vote_instances`)
INSTANCE_RULES = ("polygons", "vote")
#: a pixel belongs to a voted nucleus when the candidates covering it carry at least this share of the weight
VOTE_QUORUM = 0.5


def vote_instances(labels: np.ndarray, prob: np.ndarray, dist: np.ndarray, grid, prob_thresh: float,
                   rescale=(1.0, 1.0), quorum: float = VOTE_QUORUM) -> np.ndarray:
    """int32 instance labels in which each nucleus of ``labels`` (StarDist's NMS polygons) is redrawn as the
    vote of all candidate polygons that belong to it.

    ``prob`` (h, w) and ``dist`` (h, w, n_rays) are the network's maps on its stride-``grid`` lattice; every
    lattice pixel with ``prob > prob_thresh`` is a candidate, with the polygon its rays describe (the same
    polygons NMS chooses among; ``rescale`` maps lattice coordinates and distances to ``labels``' pixels when
    the network ran on a resized image).  A candidate belongs to the nucleus of ``labels`` that contains its
    centre; a pixel is in that nucleus when the candidates covering it hold at least ``quorum`` of the summed
    probability of the nucleus' candidates.  Overlaps go to the more probable nucleus (StarDist's own drawing
    order), and a nucleus with no candidate left (its centre drawn over) keeps its own polygon's free pixels.

    Why: NMS keeps one candidate, so a 1-px shift of the image, which moves the stride-2 lattice by half a cell,
    changes which pixel's polygon is drawn; the vote averages a nucleus' dozens of candidates and moves less.
    """
    labels = np.asarray(labels, np.int32)
    shape = labels.shape
    if not np.isclose(rescale[0], rescale[1]):
        raise ValueError(f"vote_instances needs the same rescale along y and x, got {rescale}")
    lattice = np.argwhere(np.asarray(prob) > prob_thresh)
    centres = lattice * np.asarray(grid) * np.asarray(rescale)
    rounded = np.round(centres).astype(int)
    inside = (rounded[:, 0] < shape[0]) & (rounded[:, 1] < shape[1])
    lattice, centres, rounded = lattice[inside], centres[inside], rounded[inside]
    weight = np.asarray(prob)[lattice[:, 0], lattice[:, 1]].astype(np.float64)
    rays = np.maximum(np.asarray(dist, np.float64)[lattice[:, 0], lattice[:, 1]], 1e-3) * rescale[0]
    owner = labels[rounded[:, 0], rounded[:, 1]]

    voted = []
    for label in np.unique(owner[owner > 0]):
        mine = np.flatnonzero(owner == label)
        reach = rays[mine].max(axis=1)
        y0, x0 = (max(int(np.floor((centres[mine, a] - reach).min())), 0) for a in (0, 1))
        y1, x1 = (min(int(np.ceil((centres[mine, a] + reach).max())) + 1, shape[a]) for a in (0, 1))
        votes = star_polygon_votes(centres[mine], rays[mine], weight[mine], (y0, y1, x0, x1))
        voted.append((weight[mine].max(), label, (y0, y1, x0, x1), votes >= quorum * weight[mine].sum()))
    out = np.zeros(shape, np.int32)
    for _p, label, (y0, y1, x0, x1), mask in sorted(voted, key=lambda v: v[0]):
        out[y0:y1, x0:x1][mask] = label
    for label in np.setdiff1d(np.unique(labels[labels > 0]), np.unique(out[out > 0])):
        out[(labels == label) & (out == 0)] = label
    return out


def star_polygon_votes(centres: np.ndarray, rays: np.ndarray, weights: np.ndarray, box) -> np.ndarray:
    """(y1 − y0, x1 − x0) float64: the summed ``weights`` of the polygons covering each pixel centre of
    ``box`` = (y0, y1, x0, x1).

    Polygon i has its vertices at ``centres[i] + rays[i, k] · (sin φ_k, cos φ_k)``, φ_k = 2πk / n_rays (y, x; as
    ``stardist.geometry.dist_to_coord``).  Each is filled by an even–odd scanline over pixel centres, the
    inclusion rule of ``skimage.draw.polygon`` (which StarDist draws its polygons with), compiled with numba
    because thousands of small polygons per image make per-polygon calls the cost.
    """
    y0, y1, x0, x1 = (int(v) for v in box)
    phis = np.linspace(0, 2 * np.pi, rays.shape[1], endpoint=False)
    vy = np.asarray(centres, np.float64)[:, :1] + rays * np.sin(phis)
    vx = np.asarray(centres, np.float64)[:, 1:] + rays * np.cos(phis)
    return _scanline_kernel()(vy, vx, np.asarray(weights, np.float64), y0, y1, x0, x1)


@lru_cache(maxsize=None)
def _scanline_kernel():
    import numba

    @numba.njit(cache=True, nogil=True)
    def fill(vy, vx, weights, y0, y1, x0, x1):
        out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)))
        n_polys, n_vertices = vy.shape
        crossings = np.empty(n_vertices)
        for i in range(n_polys):
            top = max(int(np.ceil(vy[i].min())), y0)
            bottom = min(int(np.floor(vy[i].max())), y1 - 1)
            for y in range(top, bottom + 1):
                n = 0
                for k in range(n_vertices):
                    ay, ax = vy[i, k], vx[i, k]
                    by, bx = vy[i, (k + 1) % n_vertices], vx[i, (k + 1) % n_vertices]
                    if (ay <= y) != (by <= y):  # the edge crosses this row (half-open: each vertex once)
                        crossings[n] = ax + (y - ay) * (bx - ax) / (by - ay)
                        n += 1
                row = np.sort(crossings[:n])
                for j in range(0, n - 1, 2):
                    left = max(int(np.ceil(row[j])), x0)
                    right = min(int(np.floor(row[j + 1])), x1 - 1)
                    for x in range(left, right + 1):
                        out[y - y0, x - x0] += weights[i]
        return out

    return fill


def shift_averaged_maps(model, x: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Stride-1 probability (H, W) and ray distances (H, W, n_rays) of the normalised image ``x`` (H, W, C).

    The network predicts on its stride-``grid`` lattice (``config.grid``, (2, 2) for the project's models), so
    a 1-px shift of the input moves it by half a lattice cell and changes what it sees.  Here ``x`` is moved by
    every (dy, dx) ∈ {0, …, period − 1}² (reflect-padded at the far edge), each prediction is written back at
    the input pixels its lattice samples, and every pixel gets the mean of the (period / grid)² predictions
    that sampled it: period² network passes.  A 1-px shift of the input then keeps most passes (re-ordered) and
    trades the rest for passes ``period`` px further, which differ from those they replace by whole lattice
    cells only, so the maps move with the image up to the network's deeper pooling.  ``period`` must be a
    multiple of the grid; ``period`` = grid is the plain polyphase interleave (one pass per phase)."""
    gy, gx = model.config.grid
    if period % gy or period % gx:
        raise ValueError(f"shift_average {period} is not a multiple of the model's grid {(gy, gx)}")
    height, width = x.shape[:2]
    if min(height, width) <= period:
        raise ValueError(f"shift_average {period} needs an image larger than {period} px, got {height}×{width}")
    prob = np.zeros((height, width), np.float64)
    dist = np.zeros((height, width, model.config.n_rays), np.float64)
    count = np.zeros((height, width), np.float64)
    for dy in range(period):
        for dx in range(period):
            moved = np.pad(x[dy:, dx:], [(0, dy), (0, dx)] + [(0, 0)] * (x.ndim - 2), mode="reflect")
            p, d = model.predict(moved)
            ys, xs = np.arange(dy, height, gy), np.arange(dx, width, gx)
            prob[np.ix_(ys, xs)] += p[:len(ys), :len(xs)]
            dist[np.ix_(ys, xs)] += d[:len(ys), :len(xs)]
            count[np.ix_(ys, xs)] += 1
    return ((prob / count).astype(np.float32),
            np.maximum(dist / count[..., None], 1e-3).astype(np.float32))


def stride1_labels(model, prob: np.ndarray, dist: np.ndarray, instances: str = "polygons") -> np.ndarray:
    """int32 instance labels (H, W) from stride-1 maps (:func:`shift_averaged_maps`): StarDist's NMS at the
    model's thresholds, then its polygons or their vote (``instances``)."""
    from stardist.geometry import polygons_to_label
    from stardist.nms import non_maximum_suppression

    points, point_prob, point_dist = non_maximum_suppression(
        dist, prob, grid=(1, 1), prob_thresh=model.thresholds.prob, nms_thresh=model.thresholds.nms)
    labels = np.asarray(polygons_to_label(point_dist, points, prob=point_prob, shape=prob.shape), np.int32)
    if instances == "vote":
        labels = vote_instances(labels, prob, dist, (1, 1), model.thresholds.prob)
    return labels


def predict_labels(model, image: np.ndarray, scale: float = 1.0, instances: str = "polygons",
                   shift_average: int | None = None) -> np.ndarray:
    """int32 instance labels of ``image`` (uint8/uint16, (H,W) or (H,W,3)), same shape as the image.

    The image is percentile-normalised (1–99.8 %, channels jointly), as in training;
    ``scale`` ≠ 1 runs the network on a resized copy and maps labels back.  ``instances`` (one of
    :data:`INSTANCE_RULES`): StarDist's NMS polygons, or their vote (:func:`vote_instances`).
    ``shift_average`` > 1: NMS and drawing on the stride-1 maps of :func:`shift_averaged_maps` (that many
    squared network passes; scale 1 only), for a segmentation that moves with the image; None: the model
    folder's setting (:func:`model_shift_average` of ``model.logdir``; 1 for models without a folder).
    """
    if shift_average is None:
        folder = getattr(model, "logdir", None)
        shift_average = model_shift_average(str(folder)) if folder is not None else 1
    if instances not in INSTANCE_RULES:
        raise ValueError(f"instances must be one of {', '.join(INSTANCE_RULES)}, got {instances!r}")
    if shift_average > 1 and scale != 1.0:
        raise ValueError(f"shift_average {shift_average} needs scale 1, got {scale}")
    image = np.asarray(image)
    n_in = model.config.n_channel_in
    if image.ndim == 3 and n_in == 1:
        raise ValueError(f"model expects grayscale input, got an image of shape {image.shape}")
    if image.ndim == 2 and n_in == 3:
        image = np.repeat(image[..., None], 3, axis=-1)
    x = normalize(image)
    if shift_average > 1:
        prob, dist = shift_averaged_maps(model, x, shift_average)
        return stride1_labels(model, prob, dist, instances)
    options = dict(scale=None if scale == 1.0 else scale, show_tile_progress=False, verbose=False)
    if instances == "vote":  # the dense maps (StarDist's default sparse prediction keeps only the winners)
        (labels, _details), (prob, dist) = model.predict_instances(x, sparse=False, return_predict=True, **options)
        labels = vote_instances(labels, prob, dist, model.config.grid, model.thresholds.prob,
                                rescale=(1.0 / scale, 1.0 / scale))
    else:
        labels, _details = model.predict_instances(x, **options)
    labels = np.asarray(labels, dtype=np.int32)
    if labels.shape != image.shape[:2]:
        raise RuntimeError(f"StarDist returned labels of shape {labels.shape} for an image of {image.shape}")
    return labels
