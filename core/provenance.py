"""What each model saw, and what each result row therefore means.

* :func:`codec_training_images` — the catalog ids (``dataset/image_id``) a learned codec's
  checkpoints were trained or validated on (their JSON's ``training_images``); empty for classical
  codecs, which have seen nothing.
* :func:`segmenter_training_images` — the same for the segmenter a dataset's downstream columns use
  (StarDist models: ``biocodec.json``; the classical membrane detector: the images its parameters were
  tuned on).
* :func:`row_flags` — ``in_codec_training`` / ``in_segmenter_training`` for one image, stored with every
  result row; headline numbers use rows where both are false (:data:`HELD_OUT_SQL`).
* :func:`metrics_version` — a hash of the metric code; rows measured by other metric code are recomputed.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from core.paths import REPO_ROOT

#: SQL condition of the rows no model involved has seen (the default of every headline view).
HELD_OUT_SQL = "(NOT coalesce(in_codec_training, FALSE) AND NOT coalesce(in_segmenter_training, FALSE))"

#: Result columns that mark rows of images a model involved was trained / validated / tuned on.
TRAINING_FLAGS = ("in_codec_training", "in_segmenter_training")

#: The code that defines every row's codec metrics (bytes, bpp, PSNR, SSIM, MS-SSIM, timings).
METRIC_SOURCES = ("core/metrics.py", "core/evaluate.py")
#: The code every dataset's downstream (seg_* / contour_*) columns go through; hashed only for the datasets that
#: have them, so a segmentation change recomputes those rows and leaves the others alone.
DOWNSTREAM_SOURCES = ("core/segmentation/__init__.py", "core/segmentation/metrics.py",
                      "core/segmentation/contours.py", "core/segmentation/segmenters.py",
                      "core/segmentation/data.py")
#: The code of each segmenter backend (:func:`core.segmentation.segmenters.backends`), hashed only for the
#: datasets whose segmenters use it: a StarDist change recomputes MoNuSeg's rows, not the EM datasets'.
BACKEND_SOURCES = {"stardist": ("core/segmentation/stardist_models.py", "core/segmentation/stardist_pooling.py"),
                   "unet": ("core/segmentation/unet.py",),
                   "sato": ()}  # its code and parameters are in contours.py


def downstream_sources(dataset: str) -> tuple[str, ...]:
    """The repository files (relative paths) that define ``dataset``'s downstream columns: the common
    :data:`DOWNSTREAM_SOURCES` and the :data:`BACKEND_SOURCES` of the backends its segmenters use."""
    from core.segmentation.segmenters import backends

    return DOWNSTREAM_SOURCES + tuple(f for b in sorted(backends(dataset)) for f in BACKEND_SOURCES[b])


@lru_cache(maxsize=None)
def metrics_version(dataset: str | None = None) -> str:
    """sha256 (16 hex digits) over the codec-metric code (:data:`METRIC_SOURCES`) and, for a dataset with
    downstream columns, the segmentation code it goes through (:func:`downstream_sources`), the names of its segmenters
    (its entry of ``data/segmenters.toml`` after overrides) and the files of the models it uses: a new or
    retrained segmenter for one dataset recomputes that dataset's rows and no others."""
    digest = hashlib.sha256()
    downstream = dataset in downstream_datasets()
    for rel in METRIC_SOURCES + (downstream_sources(dataset) if downstream else ()):
        path = REPO_ROOT / rel
        digest.update(rel.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    if downstream:
        from core.segmentation.segmenters import describe

        digest.update(json.dumps(describe(dataset), sort_keys=True).encode() + b"\0")
        hash_files(digest, segmenter_files(dataset))
    return "metrics sha256 " + digest.hexdigest()[:16]


def hash_files(digest, files):
    """Feed each file's name and bytes into ``digest`` (a hashlib object) and return it: the one way model files
    are hashed (``metrics_version``, the noise floor's ``model_sha256``)."""
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest


def downstream_datasets() -> tuple[str, ...]:
    """The datasets with downstream (seg_* / contour_*) columns: those in the segmenter tables of
    :mod:`core.segmentation.segmenters`."""
    from core.segmentation.segmenters import DEFAULT_MEMBRANES, DEFAULT_SEGMENTERS

    return tuple(sorted({*DEFAULT_SEGMENTERS, *DEFAULT_MEMBRANES}))


def segmenter_files(dataset: str) -> list[Path]:
    """The files of the project models ``dataset``'s downstream columns use (empty if none)."""
    from core.segmentation.segmenters import segmenter_files as files

    return files(dataset)


@lru_cache(maxsize=None)
def codec_training_images(codec_name: str) -> frozenset[str]:
    """Catalog ids every checkpoint of ``codec_name`` trained or validated on (empty for classical codecs)."""
    from core.codecs import get_codec

    codec = get_codec(codec_name)
    seen: set[str] = set()
    for model in getattr(codec, "models", lambda: [])():
        seen.update(model.meta.get("training_images") or [])
    return frozenset(seen)


@lru_cache(maxsize=None)
def segmenter_training_images(dataset: str) -> frozenset[str]:
    """Catalog ids the downstream segmenter(s) of ``dataset`` trained, validated or were tuned on."""
    from core.segmentation import segmenter_training_images as seen

    return frozenset(seen(dataset))


def row_flags(codec_name: str, dataset: str, image_id: str, has_downstream: bool) -> dict[str, bool]:
    """``in_codec_training`` / ``in_segmenter_training`` of one image (catalog id ``dataset/image_id``)."""
    cid = f"{dataset}/{image_id}"
    return {"in_codec_training": cid in codec_training_images(codec_name),
            "in_segmenter_training": bool(has_downstream) and cid in segmenter_training_images(dataset)}


def held_out_clause(con, held_out_only: bool = True, table: str = "results") -> str:
    """SQL condition selecting the rows to use: :data:`~core.provenance.HELD_OUT_SQL`, or ``TRUE`` when
    ``held_out_only`` is false or ``table`` predates the training-flag columns (no row is flagged)."""
    if not held_out_only:
        return "TRUE"
    columns = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
    return HELD_OUT_SQL if set(TRAINING_FLAGS) <= columns else "TRUE"


def held_out_mask(frame: "pd.DataFrame") -> "pd.Series":
    """Pandas equivalent of :data:`~core.provenance.HELD_OUT_SQL`: True where neither training flag is
    true (NULL and absent columns count as false)."""
    import pandas as pd

    mask = pd.Series(True, index=frame.index)
    for column in TRAINING_FLAGS:
        if column in frame:
            mask &= ~frame[column].fillna(False).astype(bool)
    return mask
