"""Benchmark stages 1–4 over the catalog (``data/stages.toml``, read by :mod:`core.catalog`).

The runner calls two hooks:

* :func:`stage_refs` — the :class:`~core.catalog.ImageRef` of every image of a stage
  (``"1"``..``"4"`` or ``"all"``) under a data root, by default only the ``test`` split;
* :func:`stage_codec_settings` — the codecs a stage sweeps and their settings.

    python -m core.stages            # the stages, datasets and the split of each
"""
from __future__ import annotations

import sys
from pathlib import Path

from core.catalog import (
    SPLITS,
    CatalogError,
    ImageRef,
    dataset_refs,
    load_definition,
    split_table,
    sweeps,
)
from core import paths
from core.paths import CATALOG_TOML

STAGE_IDS = ("1", "2", "3", "4")
DEFAULT_SPLITS = ("test",)
StageError = CatalogError


def parse_splits(text: str | None) -> tuple[str, ...]:
    """``--split`` text → splits: ``test`` (default), ``all``, or a comma list such as ``train,val``."""
    if text is None or text.strip() == "":
        return DEFAULT_SPLITS
    if text.strip() == "all":
        return SPLITS
    splits = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise StageError(f"unknown split {bad[0]!r}; choose test, all, or a list of {', '.join(SPLITS)}")
    return splits


def _stage_specs(stage: str | int, spec: dict) -> list[dict]:
    stage = str(stage).strip().lower()
    if stage == "all":
        return list(spec["stages"])
    found = [s for s in spec["stages"] if str(s["id"]) == stage]
    if not found:
        raise StageError(f"unknown stage {stage!r}; choose one of "
                         f"{', '.join(str(s['id']) for s in spec['stages'])} or 'all'")
    return found


def stage_refs(stage: str | int, data_root: str | Path | None = None,
               splits: tuple[str, ...] = DEFAULT_SPLITS) -> list[ImageRef]:
    """Every image of ``stage`` ('1'..'4' or 'all') in ``splits`` under ``data_root``.

    ``data_root`` None means :func:`core.paths.data_root`; when that folder does not
    exist the embedded sample images (stage 0) are returned and a message says so.  An explicitly
    given root that does not exist is an error.  Datasets missing under an existing root are
    skipped with a message; a stage with no image found is an error.
    """
    spec = load_definition()
    specs = _stage_specs(stage, spec)
    if data_root is None:
        root = paths.data_root()
        if not root.is_dir():
            from core.datasets import embedded_refs

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
                refs.extend(dataset_refs(st["id"], ds, root, splits))
            except FileNotFoundError as exc:
                missing.append(str(exc))
    for message in missing:
        print(f"[stages] skipped: {message}", file=sys.stderr)
    if not refs:
        raise StageError(f"stage {stage} ({'/'.join(splits)} split): no image found under {root}:\n  "
                         + "\n  ".join(missing))
    return refs


def _expand_codecs(rules: list[str]) -> list[str]:
    from core.codecs import available_codecs, get_codec

    names: list[str] = []
    for rule in rules:
        if rule.startswith("@"):
            family = rule[1:]
            if family not in ("classical", "learned", "grain"):
                raise StageError(f"unknown codec family rule {rule!r} (use @classical, @learned or @grain)")
            found = available_codecs(family=family)
        else:
            get_codec(rule)  # raises with the list of known names
            found = [rule]
        names.extend(n for n in found if n not in names)
    return names


def stage_codec_settings(stage: str | int) -> tuple[list[str] | None, dict[str, tuple]]:
    """(codec names the stage sweeps, {codec: settings}) — settings from the catalog's ``[sweeps]``.

    For 'all' the codec list is the union over the stages.
    """
    spec = load_definition()
    rules: list[str] = []
    for st in _stage_specs(stage, spec):
        rules.extend(r for r in st.get("codecs", ["@classical", "@learned"]) if r not in rules)
    codecs = _expand_codecs(rules)
    return codecs or None, {name: values for name, values in sweeps().items() if name in codecs}


def describe(data_root: str | Path | None = None) -> str:
    """A readable overview of the stages: datasets, split counts, notes, sweeps."""
    spec = load_definition()
    root = Path(data_root).resolve() if data_root else paths.data_root()
    lines = [f"catalog: {CATALOG_TOML}", f"data root: {root}{'' if root.is_dir() else ' (missing)'}",
             "stages run the test split by default (python -m core.runner --split all adds train/val)"]
    table = {name: (counts, status) for _, name, counts, status in split_table(root)}
    for st in spec["stages"]:
        lines.append(f"\nstage {st['id']}: {st.get('title', '')}  codecs: {', '.join(st.get('codecs', []))}")
        for ds in st.get("datasets", []):
            counts, status = table[ds["name"]]
            if status == "ok":
                split = ", ".join(f"{s} {counts[s]}" for s in SPLITS)
                limit = f" (stage runs at most {ds['max_images']} of them)" if ds.get("max_images") else ""
                lines.append(f"  {ds['name']}: {sum(counts.values())} images — {split}{limit}")
            else:
                lines.append(f"  {ds['name']}: {status}")
            if ds.get("note"):
                lines.append("    " + " ".join(ds["note"].split()))
    lines.append("\nsweeps: " + "; ".join(f"{k}={list(v)}" for k, v in sweeps().items()))
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe(sys.argv[1] if len(sys.argv) > 1 else None))
