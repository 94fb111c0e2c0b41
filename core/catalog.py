"""The image catalog: every benchmark image, where it lives, how to read it, its ground truth
and its **split** — read from the one declarative definition ``data/stages.toml``.

Splits
------
Every image of every dataset is in exactly one of :data:`SPLITS`:

* ``train`` / ``val`` — what learned codecs and segmenters may train and validate on;
* ``test`` — never used by any training; benchmark numbers are measured here.

A dataset entry gives its default split (``split``; ``"test"`` when absent: standard test
images and unseen types train nothing) and lists the exceptions by image id (``train = [...]``,
``val = [...]``, ``test = [...]``); a group may set its own ``split`` (MoNuSeg's ``test/``
folder).  Training code asks :func:`split_refs` for ``train``/``val`` images and nothing else;
checkpoints record the :func:`catalog_id` of every image they saw (``training_images``), and the
runner marks each result row with ``in_codec_training`` / ``in_segmenter_training`` from those
lists (:mod:`core.provenance`).

    python -m core.stages        # every stage, dataset and split count
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core import paths
from core.paths import CATALOG_TOML

SPLITS = ("train", "val", "test")
LABEL_KINDS = ("instances", "binary_mask", "membrane_label")


class CatalogError(ValueError):
    """The catalog definition, a dataset name, a split or the data root is wrong."""


@dataclass(frozen=True)
class ImageRef:
    """One benchmark image: where it is, how to read it and which split it belongs to.

    ``crop`` is ``(y0, x0, y1, x1)`` applied after reading (e.g. the 1-px shift that
    removes the MoNuSeg tiles' earlier JPEG 2000 grid); ``ground_truth`` is a label file
    of kind ``label_kind`` (see :data:`LABEL_KINDS`), ``membranes`` an optional membrane
    mask; both get the same crop as the image.
    """

    stage: int
    dataset: str
    image_id: str
    source: str
    page: int | None = None
    bit_depth: int | None = None
    crop: tuple[int, int, int, int] | None = None
    ground_truth: str | None = None
    label_kind: str | None = None
    membranes: str | None = None
    split: str = "test"


def catalog_id(ref_or_dataset, image_id: str | None = None) -> str:
    """The catalog-wide image id ``"dataset/image_id"`` (what checkpoints list as ``training_images``)."""
    if image_id is None:
        return f"{ref_or_dataset.dataset}/{ref_or_dataset.image_id}"
    return f"{ref_or_dataset}/{image_id}"


# --------------------------------------------------------------------------- the definition


@lru_cache(maxsize=4)
def load_definition(path: str | Path = CATALOG_TOML) -> dict:
    """The parsed definition (checked for the fields this module needs)."""
    path = Path(path)
    with path.open("rb") as fh:
        spec = tomllib.load(fh)
    ids = [str(s.get("id")) for s in spec.get("stages", [])]
    if sorted(ids) != sorted(set(ids)) or not ids:
        raise CatalogError(f"{path}: stages need unique ids, got {ids}")
    names = []
    for stage in spec["stages"]:
        for ds in stage.get("datasets", []):
            if not ds.get("name") or not ds.get("groups"):
                raise CatalogError(f"{path}: stage {stage['id']}: every dataset needs a name and >= 1 group")
            names.append(ds["name"])
            for where in [ds, *ds["groups"]]:
                if where.get("split", "test") not in SPLITS:
                    raise CatalogError(f"{path}: dataset {ds['name']}: split must be one of {SPLITS}")
                if where.get("label_kind") not in (None, *LABEL_KINDS):
                    raise CatalogError(f"{path}: dataset {ds['name']}: label_kind must be one of {LABEL_KINDS}")
            listed = [i for s in SPLITS for i in ds.get(s, [])]
            if len(listed) != len(set(listed)):
                raise CatalogError(f"{path}: dataset {ds['name']}: an image id is listed in two splits")
    if len(names) != len(set(names)):
        raise CatalogError(f"{path}: dataset names must be unique, got {names}")
    return spec


def dataset_spec(name: str) -> tuple[int, dict]:
    """(stage id, dataset entry) of the dataset called ``name``."""
    for stage in load_definition()["stages"]:
        for ds in stage.get("datasets", []):
            if ds["name"] == name:
                return int(stage["id"]), ds
    known = [ds["name"] for st in load_definition()["stages"] for ds in st.get("datasets", [])]
    raise CatalogError(f"unknown dataset {name!r}; the catalog has {', '.join(known)}")


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def evenly_spaced(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the list (first and last kept)."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise CatalogError(f"max_images must be >= 1, got {limit}")
    if limit == 1:
        return items[:1]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[0].shape
        return int(shape[0]), int(shape[1])
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def _page_count(path: Path) -> int:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return len(tif.pages)


def _check_splits(splits) -> tuple[str, ...] | None:
    if splits is None:
        return None
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise CatalogError(f"unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
    return splits


def dataset_refs(stage_id: int, ds: dict, root: Path, splits=None) -> list[ImageRef]:
    """The ImageRefs of one dataset entry found under ``root``, restricted to ``splits`` (None = all).

    Every image the requested splits' lists name must exist (:class:`CatalogError` otherwise).

    ``max_images`` (evenly spaced) applies after the split filter, so a test-split run
    keeps every test image the limit allows.
    """
    splits = _check_splits(splits)
    folder = root / ds.get("folder", ds["name"])
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: dataset {ds['name']!r} is not under the data root "
                                f"(fetch it: python -m core.datasets fetch {ds['name']})")
    refs: list[ImageRef] = []
    for group in ds["groups"]:
        files = sorted(folder.glob(group["glob"]), key=_natural_key)
        if not files:
            if splits is not None and group.get("split", ds.get("split", "test")) not in splits:
                continue  # a copy holding only some splits (scripts/gpu_train.sh pack); lists are checked below
            raise FileNotFoundError(f"{folder}: no files match {group['glob']!r} (dataset {ds['name']})")
        for path in files:
            pages = range(_page_count(path)) if group.get("pages") else [None]
            for page in pages:
                refs.append(_make_ref(stage_id, ds, group, folder, path, page))
    ids = [r.image_id for r in refs]
    if len(ids) != len(set(ids)):
        raise CatalogError(f"dataset {ds['name']}: image ids are not unique; fix the id templates")
    # every image a requested split lists must exist; a copy holding only some splits (a training machine's
    # train/val, scripts/gpu_train.sh pack) serves those splits
    unknown = sorted({i for s in (splits or SPLITS) for i in ds.get(s, [])} - set(ids))
    if unknown:
        raise CatalogError(f"dataset {ds['name']}: split lists name images that do not exist: {unknown[:5]}")
    if splits is not None:
        refs = [r for r in refs if r.split in splits]
    return evenly_spaced(refs, ds.get("max_images"))


def _split_of(ds: dict, group: dict, image_id: str) -> str:
    for split in SPLITS:
        if image_id in ds.get(split, []):
            return split
    return group.get("split", ds.get("split", "test"))


def _make_ref(stage_id: int, ds: dict, group: dict, folder: Path, path: Path, page: int | None) -> ImageRef:
    rel_group = Path(group["glob"]).parent.as_posix()
    image_id = group.get("id", "{stem}").format(stem=path.stem, group=rel_group.replace("/", "_"),
                                                page=page if page is not None else 0)
    crop = None
    offset = group.get("crop_offset", ds.get("crop_offset"))
    center = group.get("center_crop", ds.get("center_crop"))
    if offset or center:
        height, width = _image_size(path)
        y0, x0 = (int(offset[0]), int(offset[1])) if offset else (0, 0)
        y1, x1 = height, width
        if center:
            ch, cw = int(center[0]), int(center[1])
            if y1 - y0 > ch:
                y0 += (y1 - y0 - ch) // 2
                y1 = y0 + ch
            if x1 - x0 > cw:
                x0 += (x1 - x0 - cw) // 2
                x1 = x0 + cw
        crop = (y0, x0, y1, x1)

    def label_file(key: str) -> str | None:
        template = group.get(key, ds.get(key))
        if not template:
            return None
        file = folder / template.format(stem=path.stem)
        if not file.is_file():
            raise FileNotFoundError(f"{file}: {key} of {path.name} is missing (dataset {ds['name']})")
        return str(file)

    ground_truth = label_file("ground_truth")
    return ImageRef(stage=int(stage_id), dataset=ds["name"], image_id=image_id, source=str(path), page=page,
                    bit_depth=group.get("bit_depth", ds.get("bit_depth")), crop=crop, ground_truth=ground_truth,
                    label_kind=group.get("label_kind", ds.get("label_kind")) if ground_truth else None,
                    membranes=label_file("membranes"), split=_split_of(ds, group, image_id))


def split_refs(dataset: str, splits, data_root: str | Path | None = None) -> list[ImageRef]:
    """The images of ``dataset`` in ``splits`` (e.g. ``("train", "val")``), all of them (no max_images).

    The one way training code finds its images.
    """
    stage_id, ds = dataset_spec(dataset)
    root = Path(data_root).expanduser().resolve() if data_root else paths.data_root()
    ds = {k: v for k, v in ds.items() if k != "max_images"}
    return dataset_refs(stage_id, ds, root, splits)


def split_table(data_root: str | Path | None = None) -> list[tuple[int, str, dict[str, int], str]]:
    """[(stage, dataset, {split: image count}, status)] for every dataset of the catalog."""
    root = Path(data_root).expanduser().resolve() if data_root else paths.data_root()
    out = []
    for stage in load_definition()["stages"]:
        for ds in stage.get("datasets", []):
            try:
                refs = dataset_refs(stage["id"], {k: v for k, v in ds.items() if k != "max_images"}, root)
                counts = {s: sum(r.split == s for r in refs) for s in SPLITS}
                status = "ok"
            except (FileNotFoundError, CatalogError) as exc:
                counts, status = dict.fromkeys(SPLITS, 0), f"unavailable ({exc})"
            out.append((int(stage["id"]), ds["name"], counts, status))
    return out


# --------------------------------------------------------------------------- sweeps and tiling


def sweeps() -> dict[str, tuple]:
    """{codec name: settings} of the ``[sweeps]`` table, ordered fewest → most bytes: the one place
    a lossy codec's default sweep is defined (lossless codecs sweep ``(None,)``)."""
    from core.setting_text import parse_setting

    return {name: tuple(parse_setting(v) for v in values)
            for name, values in load_definition().get("sweeps", {}).items()}


def tiling_options() -> dict:
    """The ``[tiling]`` table: tile, learned_overlap, learned_max_side, classical_max_side (pixels)."""
    options = {"tile": 1024, "learned_overlap": 32, "learned_max_side": 2048, "classical_max_side": 16384}
    options.update(load_definition().get("tiling", {}))
    return options
