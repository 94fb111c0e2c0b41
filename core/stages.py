"""Benchmark stages 1–4, read from the declarative definition ``data/stages.toml``.

The runner calls two hooks:

* :func:`stage_refs` — the :class:`~core.datasets.ImageRef` of every image of a stage
  (``"1"``..``"4"`` or ``"all"``) under a data root;
* :func:`stage_codec_settings` — the codecs a stage sweeps and their settings.

Everything else (which files, bit depths, ground truth, crops, image limits, sweeps,
tiling thresholds) lives in the TOML file, so a stage changes in one place.

    python -m core.stages            # print the stages, datasets and image counts
"""
from __future__ import annotations

import re
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

from core.datasets import ImageRef, embedded_refs

REPO_ROOT = Path(__file__).resolve().parent.parent
STAGES_TOML = REPO_ROOT / "data" / "stages.toml"
STAGE_IDS = ("1", "2", "3", "4")


class StageError(ValueError):
    """A stage name, the stage definition or the data root is wrong."""


@lru_cache(maxsize=4)
def load_definition(path: str | Path = STAGES_TOML) -> dict:
    """The parsed stage definition (checked for the fields this module needs)."""
    path = Path(path)
    with path.open("rb") as fh:
        spec = tomllib.load(fh)
    ids = [str(s.get("id")) for s in spec.get("stages", [])]
    if sorted(ids) != sorted(set(ids)) or not ids:
        raise StageError(f"{path}: stages need unique ids, got {ids}")
    for stage in spec["stages"]:
        for ds in stage.get("datasets", []):
            if not ds.get("name") or not ds.get("groups"):
                raise StageError(f"{path}: stage {stage['id']}: every dataset needs a name and >= 1 group")
    return spec


def _stage_specs(stage: str | int, spec: dict) -> list[dict]:
    stage = str(stage).strip().lower()
    if stage == "all":
        return list(spec["stages"])
    found = [s for s in spec["stages"] if str(s["id"]) == stage]
    if not found:
        raise StageError(f"unknown stage {stage!r}; choose one of "
                         f"{', '.join(str(s['id']) for s in spec['stages'])} or 'all'")
    return found


# --------------------------------------------------------------------------- data root


def default_data_root(spec: dict | None = None) -> Path:
    """The data root the definition names (``../shared/data`` relative to the repository)."""
    spec = spec or load_definition()
    return (REPO_ROOT / spec.get("data_root", "../shared/data")).resolve()


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def _evenly_spaced(items: list, limit: int | None) -> list:
    """At most ``limit`` items, evenly spaced over the list (first and last kept)."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise StageError(f"max_images must be >= 1, got {limit}")
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


def dataset_refs(stage_id: int, ds: dict, root: Path) -> list[ImageRef]:
    """The ImageRefs of one dataset entry of the definition, found under ``root``."""
    folder = root / ds.get("folder", ds["name"])
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: dataset {ds['name']!r} is not under the data root "
                                f"(fetch it: python -m core.datasets fetch {ds['name']})")
    refs: list[ImageRef] = []
    for group in ds["groups"]:
        files = sorted(folder.glob(group["glob"]), key=_natural_key)
        if not files:
            raise FileNotFoundError(f"{folder}: no files match {group['glob']!r} (dataset {ds['name']})")
        group_refs = []
        for path in files:
            pages = range(_page_count(path)) if group.get("pages") else [None]
            for page in pages:
                group_refs.append(_make_ref(stage_id, ds, group, folder, path, page))
        refs.extend(_evenly_spaced(group_refs, group.get("max_images")))
    ids = [r.image_id for r in refs]
    if len(ids) != len(set(ids)):
        raise StageError(f"dataset {ds['name']}: image ids are not unique; fix the id templates")
    return _evenly_spaced(refs, ds.get("max_images"))


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
    ground_truth = None
    if group.get("ground_truth"):
        gt = folder / group["ground_truth"].format(stem=path.stem)
        if not gt.is_file():
            raise FileNotFoundError(f"{gt}: ground truth of {path.name} is missing (dataset {ds['name']})")
        ground_truth = str(gt)
    return ImageRef(stage=int(stage_id), dataset=ds["name"], image_id=image_id, source=str(path), page=page,
                    bit_depth=group.get("bit_depth", ds.get("bit_depth")), crop=crop, ground_truth=ground_truth)


def stage_refs(stage: str | int, data_root: str | Path | None = None) -> list[ImageRef]:
    """Every image of ``stage`` ('1'..'4' or 'all') under ``data_root``.

    ``data_root`` None means the definition's default (``../shared/data``); when that
    folder does not exist the embedded sample images (stage 0) are returned and a
    message says so.  An explicitly given root that does not exist is an error.
    Datasets missing under an existing root are skipped with a message; a stage
    with no dataset found is an error.
    """
    spec = load_definition()
    specs = _stage_specs(stage, spec)
    if data_root is None:
        root = default_data_root(spec)
        if not root.is_dir():
            print(f"[stages] data root {root} not found: running the embedded sample images (stage 0) instead. "
                  "Pass --data-root DIR, or fetch data with `python -m core.datasets fetch NAME`.",
                  file=sys.stderr)
            return embedded_refs()
    else:
        root = Path(data_root).expanduser().resolve()
        if not root.is_dir():
            raise StageError(f"data root {root} does not exist")
    refs: list[ImageRef] = []
    missing = []
    for st in specs:
        for ds in st.get("datasets", []):
            try:
                refs.extend(dataset_refs(st["id"], ds, root))
            except FileNotFoundError as exc:
                missing.append(str(exc))
    for message in missing:
        print(f"[stages] skipped: {message}", file=sys.stderr)
    if not refs:
        raise StageError(f"stage {stage}: no dataset found under {root}:\n  " + "\n  ".join(missing))
    return refs


# --------------------------------------------------------------------------- codecs and sweeps


def _expand_codecs(rules: list[str]) -> list[str]:
    from core.codecs import available_codecs, get_codec

    names: list[str] = []
    for rule in rules:
        if rule.startswith("@"):
            family = rule[1:]
            if family not in ("classical", "learned"):
                raise StageError(f"unknown codec family rule {rule!r} (use @classical or @learned)")
            found = available_codecs(family=family)
        else:
            get_codec(rule)  # raises with the list of known names
            found = [rule]
        names.extend(n for n in found if n not in names)
    return names


def stage_codec_settings(stage: str | int) -> tuple[list[str] | None, dict[str, tuple]]:
    """(codec names the stage sweeps, {codec: settings}) — settings from ``[sweeps]``.

    For 'all' the codec list is the union over the stages.  Codecs absent from
    ``[sweeps]`` (lossless and learned codecs) use their own ``default_settings``.
    """
    spec = load_definition()
    rules: list[str] = []
    for st in _stage_specs(stage, spec):
        rules.extend(r for r in st.get("codecs", ["@classical", "@learned"]) if r not in rules)
    codecs = _expand_codecs(rules)
    sweeps = {name: tuple(values) for name, values in spec.get("sweeps", {}).items() if name in codecs}
    return codecs or None, sweeps


def tiling_options(spec: dict | None = None) -> dict:
    """The ``[tiling]`` table: tile, learned_overlap, learned_max_side, classical_max_side (pixels)."""
    spec = spec or load_definition()
    options = {"tile": 1024, "learned_overlap": 32, "learned_max_side": 2048, "classical_max_side": 16384}
    options.update(spec.get("tiling", {}))
    return options


def describe(data_root: str | Path | None = None) -> str:
    """A readable overview of the stages (counts need the data root)."""
    spec = load_definition()
    root = Path(data_root).resolve() if data_root else default_data_root(spec)
    lines = [f"stage definition: {STAGES_TOML}", f"data root: {root}{'' if root.is_dir() else ' (missing)'}"]
    for st in spec["stages"]:
        lines.append(f"\nstage {st['id']}: {st.get('title', '')}  codecs: {', '.join(st.get('codecs', []))}")
        for ds in st.get("datasets", []):
            try:
                count = f"{len(dataset_refs(st['id'], ds, root))} images"
            except (FileNotFoundError, StageError) as exc:
                count = f"unavailable ({exc})"
            lines.append(f"  {ds['name']}: {count}")
            if ds.get("note"):
                lines.append("    " + " ".join(ds["note"].split()))
    sweeps = spec.get("sweeps", {})
    lines.append("\nsweeps: " + "; ".join(f"{k}={list(v)}" for k, v in sweeps.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe(sys.argv[1] if len(sys.argv) > 1 else None))
