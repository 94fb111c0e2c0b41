"""Command line of the project's segmenters.

    python -m core.segmentation evaluate KIND IMAGES_DIR MASKS_DIR [--json] [--membranes sato|unet|PATH]
    python -m core.segmentation accuracy KIND [--split test] [--json] [--membranes sato|MODEL]
    python -m core.segmentation noise-floor [--datasets D ...] [--out data/models/noise_floor.json]

``evaluate`` runs the segmenter the runner uses for KIND on every image of IMAGES_DIR and scores it
against the mask of the same file stem in MASKS_DIR:

==================  ======================  =================================================  ==================
KIND                runner's dataset        masks                                              segmenter
==================  ======================  =================================================  ==================
``monuseg``         monuseg                 instance labels (uint16 PNG, 0 = background)       object segmenter
``epfl_mito``       epfl_hippocampus_fibsem binary 0/255 PNG (threshold 128; 8-connected       object segmenter
                                            components are the objects)
``isbi_membranes``  isbi2012_em             ISBI label PNG (0 = membrane, 255 = cell;          membrane detector
                                            objects = the enclosed cells)
==================  ======================  =================================================  ==================

It prints object F1 at IoU 0.5 (``f1``), pixel Dice of the foregrounds (``dice``; membranes for
``isbi_membranes``) and, for membranes, boundary F1 at 2 px of the 1-px contours (``boundary_f1``; null
otherwise; with it ``hd95_px`` and ``msd_px`` of the same contours), each the mean over images.
The segmenters are the runner's (:mod:`core.segmentation.segmenters`); ``--membranes`` picks another
membrane detector for ``isbi_membranes``: ``sato`` or a U-Net membrane model folder / name under ``data/models``.  ``--json`` prints one JSON object with those keys, ``images``
(count) and ``per_image``; without it, one line.  Errors (missing folder, no images, unpaired files,
unknown KIND) are one line on stderr and exit status 2.

``accuracy`` gives the same numbers on the catalog images of KIND's dataset in ``--split`` (default ``test``,
the held-out images; ground truth and crops as the runner uses them).

``noise-floor``: :mod:`core.segmentation.noise_floor`.  Run it with ``OMP_NUM_THREADS=1`` on a shared machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from pathlib import Path

#: KIND → (the runner's dataset, catalog label_kind of its masks, contours scored).
KINDS = {
    "monuseg": ("monuseg", "instances", False),
    "epfl_mito": ("epfl_hippocampus_fibsem", "binary_mask", False),
    "isbi_membranes": ("isbi2012_em", "membrane_label", True),
}
PROG = "python -m core.segmentation"


class UsageError(Exception):
    """A problem with the command's input, reported as one line and exit status 2."""


def _files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    from core.io import SUPPORTED_SUFFIXES

    if not folder.is_dir():
        raise UsageError(f"{what} {folder}: no such folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES:
            if path.stem in files:
                raise UsageError(f"{what} {folder}: two files with stem {path.stem!r} "
                                 f"({files[path.stem].name}, {path.name})")
            files[path.stem] = path
    return files


def pair_files(images_dir, masks_dir) -> list[tuple[str, Path, Path]]:
    """[(stem, image, mask)] paired by file stem; :class:`UsageError` for a missing folder, no images or
    files without a partner."""
    images = _files_by_stem(Path(images_dir), "IMAGES_DIR")
    masks = _files_by_stem(Path(masks_dir), "MASKS_DIR")
    if not images:
        raise UsageError(f"IMAGES_DIR {images_dir}: no images (.png, .tif, ...)")
    no_mask, no_image = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if no_mask or no_image:
        parts = ([f"images without a mask: {', '.join(no_mask)}"] if no_mask else []) + \
                ([f"masks without an image: {', '.join(no_image)}"] if no_image else [])
        raise UsageError("unpaired files (paired by file stem): " + "; ".join(parts))
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def _check_kind(kind: str) -> tuple[str, str, bool]:
    if kind not in KINDS:
        raise UsageError(f"unknown KIND {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind]


def evaluate_folder(kind: str, images_dir, masks_dir, evaluator=None, membranes: str | None = None) -> dict:
    """Scores of the runner's segmenter for ``kind`` on the paired images/masks (see the module docstring).

    Each pair becomes an :class:`~core.catalog.ImageRef` read by :func:`core.datasets.load_ref` and
    :func:`core.segmentation.load_ground_truth`; :meth:`~core.segmentation.DownstreamEvaluator.prepare`
    gives the Dice and object F1 vs ground truth the runner stores as ``seg_*_gt_original``.
    """
    from core.catalog import ImageRef
    from core.segmentation.noise_floor import evaluator_for

    dataset, label_kind, with_contours = _check_kind(kind)
    refs = [ImageRef(stage=0, dataset=dataset, image_id=stem, source=str(image_path), ground_truth=str(mask_path),
                     label_kind=label_kind) for stem, image_path, mask_path in pair_files(images_dir, masks_dir)]
    return score_refs(kind, refs, evaluator or evaluator_for(dataset, with_contours, membranes))


def evaluate_split(kind: str, split: str = "test", data_root=None, membranes: str | None = None) -> dict:
    """:func:`evaluate_folder` on the catalog images of ``kind``'s dataset in ``split`` (their ground truth and
    crops as the runner uses them); ``split`` ``test`` gives the held-out accuracy."""
    from core.catalog import split_refs
    from core.segmentation.noise_floor import evaluator_for

    dataset, _label_kind, with_contours = _check_kind(kind)
    refs = split_refs(dataset, (split,), data_root)
    if not refs:
        raise UsageError(f"the catalog has no {dataset} images in split {split!r} (data root missing?)")
    return {**score_refs(kind, refs, evaluator_for(dataset, with_contours, membranes)), "split": split}


def score_refs(kind: str, refs, evaluator) -> dict:
    """Mean and per-image object F1 @ IoU 0.5, pixel Dice and (membranes) boundary F1 / HD95 / MSD of
    ``evaluator``'s segmentation of each ref's image vs its ground truth."""
    from core.datasets import load_ref
    from core.segmentation import CONTOUR_TOLERANCE_PX, load_ground_truth
    from core.segmentation.contours import contours_of
    from core.segmentation.metrics import boundary_f1, surface_distances

    dataset, _label_kind, with_contours = _check_kind(kind)
    per_image = []
    for ref in refs:
        try:
            image = load_ref(ref)
            state = evaluator.prepare(image, ref)
        except ValueError as exc:  # shape mismatch, wrong channels, unreadable label
            raise UsageError(f"{ref.image_id}: {exc}") from exc
        bf1 = hd95 = msd = None
        if with_contours:
            gt_c = contours_of(load_ground_truth(ref).membranes)
            bf1 = boundary_f1(gt_c, state["original"]["contours"], CONTOUR_TOLERANCE_PX)
            hd95, msd = surface_distances(gt_c, state["original"]["contours"])
        per_image.append({"image": ref.image_id, "f1": state["f1_gt_original"], "dice": state["dice_gt_original"],
                          "boundary_f1": bf1, "hd95_px": hd95, "msd_px": msd})

    def mean(key):
        values = [row[key] for row in per_image if row[key] is not None]
        return float(sum(values) / len(values)) if values else None

    return {"kind": kind, "dataset": dataset, "segmenter": evaluator.name,
            "f1": mean("f1"), "dice": mean("dice"), "boundary_f1": mean("boundary_f1"),
            "hd95_px": mean("hd95_px"), "msd_px": mean("msd_px"),
            "images": len(per_image), "per_image": per_image}


def summary_line(result: dict) -> str:
    """One human-readable line of an :func:`evaluate_folder` result."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    return (f"{result['kind']} ({result['segmenter']}): {result['images']} image(s); "
            f"object F1 @ IoU 0.5 {fmt(result['f1'])}, Dice {fmt(result['dice'])}, "
            f"boundary F1 @ 2 px {fmt(result['boundary_f1'])}")


def _parser() -> argparse.ArgumentParser:
    from core.segmentation.noise_floor import DATASETS, NOISE_FLOOR_JSON, SEED

    p = argparse.ArgumentParser(prog=PROG, description="Evaluate the project's segmenters.")
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="score the segmenter of KIND on IMAGES_DIR vs MASKS_DIR")
    ev.add_argument("kind", metavar="KIND", help=", ".join(KINDS))
    ev.add_argument("images_dir", metavar="IMAGES_DIR")
    ev.add_argument("masks_dir", metavar="MASKS_DIR")
    ev.add_argument("--json", action="store_true", help="print one JSON object with per-image values")
    ev.add_argument("--membranes", default=None, metavar="sato|MODEL",
                    help="membrane detector for isbi_membranes (default: the runner's)")
    ac = sub.add_parser("accuracy", help="score the segmenter of KIND on a catalog split (default: test)")
    ac.add_argument("kind", metavar="KIND", help=", ".join(KINDS))
    ac.add_argument("--split", default="test", help="catalog split (default test: held-out images)")
    ac.add_argument("--data-root", default=None)
    ac.add_argument("--json", action="store_true", help="print one JSON object with per-image values")
    ac.add_argument("--membranes", default=None, metavar="sato|MODEL",
                    help="membrane detector for isbi_membranes (default: the runner's)")
    nf = sub.add_parser("noise-floor", help="measure the segmenter's noise floor on the catalog test split")
    nf.add_argument("--datasets", nargs="+", default=list(DATASETS), metavar="DATASET")
    nf.add_argument("--out", default=str(NOISE_FLOOR_JSON))
    nf.add_argument("--split", default="test",
                    help="catalog split (default test, the one the dashboard's ceiling is; another split, e.g. val "
                         "to choose between segmenters, needs its own --out)")
    nf.add_argument("--data-root", default=None)
    nf.add_argument("--max-images", type=int, default=None, help="evenly spaced subset (for quick checks)")
    nf.add_argument("--seed", type=int, default=SEED)
    return p


def _noise_floor(args, argv) -> int:
    from core.segmentation.noise_floor import DATASETS, NOISE_FLOOR_JSON, measure, write_noise_floor

    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        raise UsageError(f"no downstream segmenter for {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    if args.split != "test" and Path(args.out).resolve() == NOISE_FLOOR_JSON.resolve():
        raise UsageError(f"{NOISE_FLOOR_JSON} holds the test split's noise floor (the ceiling of the held-out rows); "
                         f"write the {args.split!r} split's elsewhere with --out")
    results = {}
    for dataset in args.datasets:
        with contextlib.redirect_stdout(sys.stderr):
            results[dataset] = measure(dataset, args.data_root, split=args.split, seed=args.seed,
                                       max_images=args.max_images,
                                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    doc = write_noise_floor(results, args.out, command=f"{PROG} {shlex.join(argv)}", seed=args.seed)
    for dataset in args.datasets:
        entry = doc["datasets"][dataset]
        print(f"{dataset} ({entry['images']} {entry['split']} images): " + "; ".join(
            f"{pert} " + ", ".join(f"{m} mean {s['mean']:.4f} min {s['min']:.4f}" for m, s in entry[pert].items())
            for pert in ("noise", "shift")))
    print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "evaluate":
            _check_kind(args.kind)
            pair_files(args.images_dir, args.masks_dir)  # input errors before any model loads
            with contextlib.redirect_stdout(sys.stderr):  # StarDist prints while loading: keep stdout JSON
                result = evaluate_folder(args.kind, args.images_dir, args.masks_dir, membranes=args.membranes)
            if args.json:
                print(json.dumps(result, indent=1))
            else:
                print(summary_line(result))
            return 0
        if args.command == "accuracy":
            _check_kind(args.kind)
            with contextlib.redirect_stdout(sys.stderr):
                result = evaluate_split(args.kind, args.split, args.data_root, membranes=args.membranes)
            print(json.dumps(result, indent=1) if args.json else summary_line(result) + f" ({args.split} split)")
            return 0
        return _noise_floor(args, argv)
    except (UsageError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
