"""Which segmenter each downstream dataset uses: one table (``data/segmenters.toml``), overridable.

Two roles per dataset (:data:`DEFAULT_SEGMENTERS`, :data:`DEFAULT_MEMBRANES`, read from the table):

* the **object segmenter** (``seg_*`` columns of MoNuSeg and EPFL): a StarDist 2D model folder (or a
  registered pretrained name) or a U-Net foreground model folder (``biocodec.json`` ``target``
  ``foreground``; objects = :func:`~core.segmentation.unet.foreground_objects` of its mask);
* the **membrane detector** (``contour_*`` columns of EPFL and ISBI, and ISBI's ``seg_*``): ``sato`` (the
  classical detector with ``contours.PARAMS[dataset]``) or a U-Net membrane model folder.

Names are folders under ``data/models`` or paths.  Overrides, per dataset, comma-separated:
``BIOCODEC_SEGMENTERS="monuseg=2D_versatile_he,epfl_hippocampus_fibsem=epfl_mito"`` and
``BIOCODEC_MEMBRANES="isbi2012_em=sato"`` (``BIOCODEC_MEMBRANES=sato`` alone: Sato everywhere).

:func:`segmenter_files` lists the model files a dataset's downstream columns depend on and :func:`describe`
names its segmenters (both hashed into :func:`core.provenance.metrics_version` for that dataset only), and
:func:`training_images` gives the catalog ids those models saw.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

EPFL = "epfl_hippocampus_fibsem"
ISBI = "isbi2012_em"
SATO = "sato"
#: files in a model folder that describe it without changing what it computes
REPORT_FILES = ("accuracy.json", "checkpoint.pt")

ROLES = ("objects", "membranes")


def read_table(path: Path | None = None) -> dict[str, dict[str, str]]:
    """dataset → {role: model name} of ``data/segmenters.toml`` (roles :data:`ROLES`); a clear error for
    anything else in it."""
    from core.paths import SEGMENTERS_TOML

    path = Path(path or SEGMENTERS_TOML)
    table = tomllib.loads(path.read_text())
    for dataset, entry in table.items():
        if not isinstance(entry, dict) or not entry or set(entry) - set(ROLES) or \
                not all(isinstance(v, str) and v.strip() for v in entry.values()):
            raise ValueError(f"{path}: [{dataset}] must set {' and/or '.join(ROLES)} to model names, got {entry!r}")
    return table


_TABLE = read_table()
#: dataset → object segmenter (StarDist or U-Net foreground model), from ``data/segmenters.toml``
DEFAULT_SEGMENTERS = {d: e["objects"] for d, e in _TABLE.items() if "objects" in e}
#: dataset → membrane detector ("sato" or a U-Net membrane model), from ``data/segmenters.toml``
DEFAULT_MEMBRANES = {d: e["membranes"] for d, e in _TABLE.items() if "membranes" in e}


def _overrides(variable: str) -> dict[str, str]:
    out = {}
    for part in os.environ.get(variable, "").split(","):
        part = part.strip()
        if not part:
            continue
        dataset, sep, name = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{variable}={os.environ[variable]!r}: use DATASET=MODEL[,DATASET=MODEL]")
        out[dataset.strip()] = name.strip()
    return out


def segmenters_in_use() -> dict[str, str]:
    """dataset → object segmenter name: :data:`DEFAULT_SEGMENTERS` overridden by ``BIOCODEC_SEGMENTERS``."""
    return {**DEFAULT_SEGMENTERS, **_overrides("BIOCODEC_SEGMENTERS")}


def membranes_in_use() -> dict[str, str]:
    """dataset → membrane detector name: :data:`DEFAULT_MEMBRANES` overridden by ``BIOCODEC_MEMBRANES``
    (``sato`` alone switches every dataset to the classical detector)."""
    value = os.environ.get("BIOCODEC_MEMBRANES", "").strip()
    if value.lower() == SATO:
        return dict.fromkeys(DEFAULT_MEMBRANES, SATO)
    chosen = {**DEFAULT_MEMBRANES, **_overrides("BIOCODEC_MEMBRANES")}
    unknown = sorted(set(chosen) - set(DEFAULT_MEMBRANES))
    if unknown:
        raise ValueError(f"BIOCODEC_MEMBRANES: {', '.join(unknown)} has no membrane task "
                         f"(datasets: {', '.join(DEFAULT_MEMBRANES)})")
    return chosen


def model_folder(name: str) -> Path | None:
    """The local folder ``name`` refers to (a path, or a folder under ``data/models``), or None."""
    from core.paths import SEG_MODELS_DIR

    for candidate in (Path(name), SEG_MODELS_DIR / name):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _unet_target(folder: Path | None) -> str | None:
    meta = folder / "biocodec.json" if folder else None
    if meta is None or not meta.is_file() or not (folder / "weights.pt").is_file():
        return None
    return json.loads(meta.read_text()).get("target", "membranes")


@dataclass
class ObjectSegmenter:
    """A loaded object segmenter: ``labels(pixels)`` → int32 instance labels shaped like the image."""

    name: str
    kind: str  # "stardist" | "unet"
    model: object
    scale: float = 1.0
    instances: str = "polygons"  # StarDist only: how nuclei are drawn (stardist_models.INSTANCE_RULES)

    def labels(self, pixels: np.ndarray) -> np.ndarray:
        if self.kind == "unet":
            from core.segmentation.unet import detect_mask, foreground_objects

            return foreground_objects(detect_mask(pixels, self.model))
        from core.segmentation.stardist_models import predict_labels

        return predict_labels(self.model, pixels, self.scale, self.instances)


@lru_cache(maxsize=None)
def load_object_segmenter(name: str) -> ObjectSegmenter:
    """The object segmenter ``name`` (a U-Net foreground folder, or anything :func:`load_stardist` takes)."""
    folder = model_folder(name)
    target = _unet_target(folder)
    if target == "foreground":
        from core.segmentation.unet import load_unet

        return ObjectSegmenter(name, "unet", load_unet(folder))
    if target is not None:
        raise ValueError(f"{folder} is a U-Net for {target!r}, not an object segmenter")
    from core.segmentation.stardist_models import load_stardist, model_instances, model_scale

    return ObjectSegmenter(name, "stardist", load_stardist(name), model_scale(name), model_instances(name))


@lru_cache(maxsize=None)
def load_membrane_detector(dataset: str, name: str):
    """Sato ``contours.PARAMS[dataset]`` for ``sato``, else the U-Net membrane model folder ``name``."""
    from core.segmentation.contours import PARAMS

    if name == SATO:
        return PARAMS[dataset]
    folder = model_folder(name)
    target = _unet_target(folder)
    if target != "membranes":
        raise ValueError(f"membrane detector {name!r} of {dataset} is not a U-Net membrane model folder "
                         f"(weights.pt + biocodec.json with target membranes) nor 'sato'")
    from core.segmentation.unet import load_unet

    return load_unet(folder)


def object_segmenter_for(dataset: str) -> ObjectSegmenter | None:
    name = segmenters_in_use().get(dataset)
    return load_object_segmenter(name) if name else None


def membrane_detector_for(dataset: str, name: str | None = None):
    """The membrane detector of ``dataset`` (``name`` overrides the table), or None without a membrane task."""
    name = name or membranes_in_use().get(dataset)
    return load_membrane_detector(dataset, name) if name else None


def segmenter_files(dataset: str) -> list[Path]:
    """The files of the project models ``dataset``'s downstream columns use (registered pretrained names
    and the Sato detector, whose parameters live in ``contours.py``, add none; reports about a model —
    :data:`REPORT_FILES`, logs, notes — are not part of it)."""
    files: list[Path] = []
    for name in (segmenters_in_use().get(dataset), membranes_in_use().get(dataset)):
        folder = model_folder(name) if name and name != SATO else None
        if folder is not None:
            files.extend(sorted(p for p in folder.iterdir() if p.is_file() and p.name not in REPORT_FILES
                                and p.suffix not in (".log", ".md")))
    return files


def training_images(dataset: str) -> set[str]:
    """Catalog ids (``dataset/image_id``) the segmenters of ``dataset`` trained, validated or were tuned on.

    A model folder's ``biocodec.json`` lists ``training_images`` (older StarDist files: file stems under
    ``train_images`` + ``validation_images``, read as images of ``dataset``); the Sato detector adds the
    images its parameters were tuned on (``contours.TUNED_ON``); a registered pretrained model adds nothing.
    """
    from core.catalog import catalog_id
    from core.segmentation.contours import TUNED_ON

    seen: set[str] = set()
    for name in (segmenters_in_use().get(dataset), membranes_in_use().get(dataset)):
        if name == SATO:
            seen.update(i for i in TUNED_ON if i.startswith(f"{dataset}/"))
            continue
        folder = model_folder(name) if name else None
        meta = folder / "biocodec.json" if folder else None
        if meta is None or not meta.is_file():
            continue
        info = json.loads(meta.read_text())
        if "training_images" in info:
            seen.update(info["training_images"])
        else:
            seen.update(catalog_id(dataset, stem)
                        for stem in [*info.get("train_images", []), *info.get("validation_images", [])])
    return seen


def backends(dataset: str) -> set[str]:
    """The segmenter backends ``dataset``'s downstream columns use — ``stardist``, ``unet``, ``sato`` (keys of
    :data:`core.provenance.BACKEND_SOURCES`) — read from the table and the model folders, loading no model."""
    kinds = set()
    objects, membranes = segmenters_in_use().get(dataset), membranes_in_use().get(dataset)
    if objects:
        kinds.add("unet" if _unet_target(model_folder(objects)) == "foreground" else "stardist")
    if membranes:
        kinds.add("sato" if membranes == SATO else "unet")
    return kinds


def describe(dataset: str) -> dict:
    """{'objects': name or None, 'membranes': name or None} of ``dataset`` (for reports)."""
    return {"objects": segmenters_in_use().get(dataset), "membranes": membranes_in_use().get(dataset)}
