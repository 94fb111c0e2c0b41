"""StarDist 2D models: the project's own (folders under ``data/models``) or registered pretrained ones.

A model is named either by a **local folder** holding ``config.json``,
``thresholds.json`` and ``weights_best.h5`` (optionally ``biocodec.json`` with the
input ``scale``), by a **project model name** (a folder name under ``data/models``,
e.g. ``monuseg_he``), or by a **registered pretrained name** such as
``2D_versatile_he`` (downloaded by StarDist; needs internet).  Models are loaded once
per process and cached.
"""
from __future__ import annotations

import json
import threading
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


def model_scale(name_or_folder: str) -> float:
    """Input scale the model was trained at (``biocodec.json``; 1.0 for pretrained models)."""
    folder = resolve_model_folder(str(name_or_folder))
    meta = folder / "biocodec.json" if folder else None
    if meta is not None and meta.is_file():
        return float(json.loads(meta.read_text()).get("scale", 1.0))
    return 1.0


def predict_labels(model, image: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """int32 instance labels of ``image`` (uint8/uint16, (H,W) or (H,W,3)), same shape as the image.

    The image is percentile-normalised (1–99.8 %, channels jointly), as in training;
    ``scale`` ≠ 1 runs the network on a resized copy and maps labels back.
    """
    image = np.asarray(image)
    n_in = model.config.n_channel_in
    if image.ndim == 3 and n_in == 1:
        raise ValueError(f"model expects grayscale input, got an image of shape {image.shape}")
    if image.ndim == 2 and n_in == 3:
        image = np.repeat(image[..., None], 3, axis=-1)
    x = normalize(image)
    labels, _ = model.predict_instances(x, scale=None if scale == 1.0 else scale, show_tile_progress=False,
                                        verbose=False)
    labels = np.asarray(labels, dtype=np.int32)
    if labels.shape != image.shape[:2]:
        raise RuntimeError(f"StarDist returned labels of shape {labels.shape} for an image of {image.shape}")
    return labels
