"""Compact trained U-Nets for EM images: membrane detectors (beside the classical Sato detector) and
foreground segmenters (EPFL mitochondria).

The network (:class:`UNet`) maps a grayscale image, normalised like the Sato path
(:func:`core.segmentation.data.normalize`, 1–99.8 percentiles, clipped to [0, 1]), to a
probability per pixel of its target (``biocodec.json`` ``target``: ``membranes`` or ``foreground``).  Four resolution levels (3×3 conv–BN–ReLU pairs, 2×2 max
pooling, plain or anti-aliased (:data:`POOLINGS`), bilinear upsampling + skip concatenation); any image size is accepted: the input is
reflect-padded to a multiple of 16 and large images are predicted in overlapping tiles.  A model whose
``biocodec.json`` says ``"phase_average": 2`` averages the 2×2 placements of the input on the pooling lattice
(:func:`_predict_phase_averaged`), so its answer moves with a 1-px shift of the image.

:func:`detect_mask` thresholds the probability at the
threshold chosen on the validation split (stored with the weights) and drops components smaller than
``min_size`` px, exactly like :func:`core.segmentation.contours.detect_membranes`, so
:func:`~core.segmentation.contours.contours_of` skeletonises a membrane mask the same way.  Which model a
dataset uses is decided in :mod:`core.segmentation.segmenters`.

Trained by :mod:`core.segmentation.train_unet`; a model folder holds ``weights.pt`` (a plain
state dict, loadable with ``torch.load(..., weights_only=True)``) and ``biocodec.json``
(architecture, threshold, min_size, for membrane models the ``cells`` rule, training images, validation score).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD_MULTIPLE = 16  # 4 poolings
DEFAULT_MODEL_NAME = "unet-membranes-isbi"
WEIGHTS_FILE = "weights.pt"
META_FILE = "biocodec.json"


def _torch():
    import torch

    return torch


#: pooling of the down path: "max" (2×2 max-pooling) or "blurmax" (anti-aliased max-pooling of Zhang, "Making
#: convolutional networks shift-invariant again", ICML 2019: max over 2×2 at stride 1, then a [1 2 1]² binomial
#: blur at stride 2).  Both have no parameters, so weights trained with one load into the other.
POOLINGS = ("max", "blurmax")


def blur_max_pool(x):
    """Anti-aliased 2× down-sampling of (N, C, H, W), H and W even: 2×2 max at stride 1 (edge-replicated to
    keep H × W), then a normalised [1 2 1]ᵀ[1 2 1] blur (reflect-padded) at stride 2 → (N, C, H/2, W/2)."""
    torch = _torch()
    F = torch.nn.functional
    x = F.pad(F.max_pool2d(x, 2, stride=1), (0, 1, 0, 1), mode="replicate")
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (taps[:, None] * taps[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, stride=2, groups=x.shape[1])


def build_unet(base: int = 16, depth: int = 4, max_channels: int = 64, pooling: str = "max"):
    """The U-Net module (``depth`` poolings of kind ``pooling`` (:data:`POOLINGS`), channels base·2^k capped at
    ``max_channels``)."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r} ({', '.join(POOLINGS)})")
    pool = blur_max_pool if pooling == "blurmax" else (lambda x: F.max_pool2d(x, 2))

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [min(base * 2 ** k, max_channels) for k in range(depth + 1)]
            self.down = nn.ModuleList([block(1 if k == 0 else chans[k - 1], chans[k]) for k in range(depth)])
            self.bottom = block(chans[depth - 1], chans[depth])
            self.up = nn.ModuleList([block(chans[k + 1] + chans[k], chans[k]) for k in reversed(range(depth))])
            self.head = nn.Conv2d(chans[0], 1, 1)

        def forward(self, x):  # (N, 1, H, W), H and W multiples of 2**depth → logits (N, 1, H, W)
            skips = []
            for blk in self.down:
                x = blk(x)
                skips.append(x)
                x = pool(x)
            x = self.bottom(x)
            for blk in self.up:
                skip = skips.pop()
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = blk(torch.cat([x, skip], dim=1))
            return self.head(x)

    return UNet()


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def prepare_input(pixels: np.ndarray) -> np.ndarray:
    """float32 network input of a grayscale image: percentile-normalised and clipped to [0, 1] (as the Sato path)."""
    from core.segmentation.data import normalize

    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != 2:
        raise ValueError(f"membrane detection needs a grayscale image, got shape {pixels.shape}")
    return np.clip(normalize(pixels), 0, 1).astype(np.float32)


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = x.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = np.pad(x, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    return x, (h, w)


def _predict_full(model, x: np.ndarray) -> np.ndarray:
    torch = _torch()
    xp, (h, w) = _pad_to(x, PAD_MULTIPLE)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(xp))[None, None])
    return torch.sigmoid(logits)[0, 0, :h, :w].numpy().astype(np.float32)


def _predict_phase_averaged(model, x: np.ndarray, phases: int) -> np.ndarray:
    """Mean probability over the ``phases``² placements of ``x`` on the network's pooling lattice: ``x`` moved
    by (dy, dx) ∈ {0 … phases − 1}² (reflect-padded), predicted, and moved back.  A 1-px shift of the input
    then permutes the placements of the first pooling level instead of changing them, so the output moves
    with the image (``phases`` = 1: one plain pass)."""
    if phases <= 1:
        return _predict_full(model, x)
    h, w = x.shape
    total = np.zeros((h, w), np.float64)
    for dy in range(phases):
        for dx in range(phases):
            moved = np.pad(x, ((dy, phases - 1 - dy), (dx, phases - 1 - dx)), mode="reflect")
            total += _predict_full(model, moved)[dy:dy + h, dx:dx + w]
    return (total / phases ** 2).astype(np.float32)


def predict_probability(model, pixels: np.ndarray | None = None, *, normalized: np.ndarray | None = None,
                        tile: int = 1024, overlap: int = 64, phases: int = 1) -> np.ndarray:
    """Membrane probability (float32, shape of the image) of a grayscale image.

    Images up to ``tile`` px on each side are predicted in one pass; larger ones in ``tile``² tiles that
    overlap by ``overlap`` px, each tile contributing only its inner part (no seams from the borders).
    Pass ``normalized`` (from :func:`prepare_input`) instead of ``pixels`` to skip the normalisation.
    ``phases`` > 1 averages ``phases``² lattice placements (:func:`_predict_phase_averaged`; ``phases``² × the
    network time; a model's ``biocodec.json`` ``phase_average``, :attr:`TrainedUNet.phases`).
    """
    x = prepare_input(pixels) if normalized is None else np.asarray(normalized, dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        h, w = x.shape
        if h <= tile and w <= tile:
            return _predict_phase_averaged(model, x, phases)
        out = np.zeros((h, w), np.float32)
        step = tile - 2 * overlap
        for y0 in range(0, h, step):
            for x0 in range(0, w, step):
                ty0, tx0 = max(0, y0 - overlap), max(0, x0 - overlap)
                ty1, tx1 = min(h, y0 + step + overlap), min(w, x0 + step + overlap)
                p = _predict_phase_averaged(model, x[ty0:ty1, tx0:tx1], phases)
                oy1, ox1 = min(h, y0 + step), min(w, x0 + step)
                out[y0:oy1, x0:ox1] = p[y0 - ty0:oy1 - ty0, x0 - tx0:ox1 - tx0]
        return out
    finally:
        model.train(was_training)


def mask_from_probability(prob: np.ndarray, threshold: float, min_size: int) -> np.ndarray:
    """Boolean membrane mask: ``prob > threshold`` without components smaller than ``min_size`` px."""
    from skimage.morphology import remove_small_objects

    mask = np.asarray(prob) > threshold
    return remove_small_objects(mask, max_size=min_size - 1) if min_size > 1 else mask


def foreground_objects(mask: np.ndarray) -> np.ndarray:
    """int32 instance labels of a foreground model's mask: its 8-connected components (as the EPFL ground
    truth's objects are defined)."""
    from skimage.measure import label

    return label(np.asarray(mask, dtype=bool), connectivity=2).astype(np.int32)


@dataclass
class TrainedUNet:
    """A loaded model: the network in eval mode plus its post-processing parameters and metadata."""

    model: object
    threshold: float = 0.5
    min_size: int = 64
    name: str = ""
    meta: dict | None = None

    @property
    def phases(self) -> int:
        """Lattice placements averaged per side at inference (``biocodec.json`` ``phase_average``; 1 = none)."""
        return int((self.meta or {}).get("phase_average", 1))

    @property
    def cell_rule(self):
        """How this membrane model's mask becomes cells (``biocodec.json`` ``cells``; the plain rule if absent)."""
        from core.segmentation.contours import CellRule

        return CellRule(**(self.meta or {}).get("cells", {}))


def detect_mask(pixels: np.ndarray, model) -> np.ndarray:
    """Boolean mask of a grayscale image by a :class:`TrainedUNet` (membranes or foreground, whichever it was
    trained for: its threshold and ``min_size``), or by a bare module (threshold 0.5, ``min_size`` 64)."""
    if isinstance(model, TrainedUNet):
        return mask_from_probability(predict_probability(model.model, pixels, phases=model.phases), model.threshold,
                                     model.min_size)
    return mask_from_probability(predict_probability(model, pixels), 0.5, 64)


def resolve_model_folder(name_or_path: str | Path) -> Path:
    """A model folder: an existing path, or a name under ``data/models``."""
    from core.paths import SEG_MODELS_DIR

    p = Path(name_or_path)
    if p.is_dir():
        return p
    return SEG_MODELS_DIR / str(name_or_path)


def load_unet(name_or_path: str | Path = DEFAULT_MODEL_NAME) -> TrainedUNet:
    """Load a model folder written by :mod:`core.segmentation.train_unet` (weights with ``weights_only=True``)."""
    torch = _torch()
    folder = resolve_model_folder(name_or_path)
    meta_path, weights = folder / META_FILE, folder / WEIGHTS_FILE
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"no U-Net model in {folder} (needs {WEIGHTS_FILE} and {META_FILE})")
    meta = json.loads(meta_path.read_text())
    arch = meta.get("architecture", {})
    model = build_unet(**{k: arch[k] for k in ("base", "depth", "max_channels", "pooling") if k in arch})
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    return TrainedUNet(model, float(meta.get("threshold", 0.5)), int(meta.get("min_size", 64)), folder.name, meta)


# --------------------------------------------------------------------------- accuracy vs labels / vs Sato


def accuracy(pairs, detector, tolerance: float = 2.0) -> dict:
    """Mean boundary F1 (at ``tolerance`` px), HD95 and MSD (px) of the detected vs the labelled contours,
    per image as well; ``detector`` is a :class:`TrainedUNet` or Sato :class:`~core.segmentation.contours.MembraneParams`
    (the same computation as :func:`core.segmentation.contours.accuracy`)."""
    from core.catalog import catalog_id
    from core.segmentation.contours import contours_of
    from core.segmentation.metrics import boundary_f1, surface_distances

    rows = []
    for ref, image, gt in pairs:
        pred_c, gt_c = contours_of(detect(image, detector)), contours_of(gt)
        h, m = surface_distances(gt_c, pred_c)
        rows.append({"image": catalog_id(ref), "boundary_f1": float(boundary_f1(gt_c, pred_c, tolerance)),
                     "hd95_px": float(h), "msd_px": float(m)})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("boundary_f1", "hd95_px", "msd_px")}
    return {**mean, "n_images": len(rows), "per_image": rows}


def detect(image: np.ndarray, detector) -> np.ndarray:
    """Boolean membrane mask by either detector: a :class:`TrainedUNet` or Sato ``MembraneParams``."""
    from core.segmentation.contours import MembraneParams, detect_membranes

    if isinstance(detector, MembraneParams):
        return detect_membranes(image, detector)
    return detect_mask(image, detector)


def main(argv=None) -> int:
    """``python -m core.segmentation.unet [--model M] [--dataset D] [--split test]``: U-Net vs Sato table (JSON)."""
    import argparse

    from core.segmentation.contours import PARAMS
    from core.segmentation.data import membrane_pairs

    p = argparse.ArgumentParser(prog="python -m core.segmentation.unet",
                                description="Boundary F1 / HD95 / MSD of the U-Net and the Sato membrane detectors.")
    p.add_argument("--model", default=DEFAULT_MODEL_NAME, help="model folder or name under data/models")
    p.add_argument("--dataset", default="isbi2012_em")
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None)
    a = p.parse_args(argv)
    _torch().set_num_threads(a.threads)
    pairs = membrane_pairs(a.dataset, (a.split,), a.data_root)
    unet = load_unet(a.model)
    report = {"dataset": a.dataset, "split": a.split, "model": str(resolve_model_folder(a.model)),
              "threshold": unet.threshold, "min_size": unet.min_size,
              "unet": accuracy(pairs, unet), "sato": accuracy(pairs, PARAMS[a.dataset])}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
