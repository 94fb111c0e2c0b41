"""Learned codecs vs JPEG 2000 / JPEG XL / AVIF at matched bpp, on the catalog's test images.

    python -m bench.compare_learned [--codecs learned-msssim,learned-mse] [--datasets epfl,monuseg,kodak]
                                    [--classical jpeg2000,jpegxl,avif] [--settings "jpeg2000=400,100,20;..."]
                                    [--limit N] [--per-channel] [--include-training] [--data-root DIR]
                                    [--out data/weights/compare_learned]

Images: the ``test`` split of each catalog dataset (:func:`core.catalog.split_refs`, read by
:func:`core.datasets.load_ref` with the catalog's crops), never an image a model trained on:

* ``epfl_hippocampus_fibsem`` (alias ``epfl``) — the held-out EPFL FIB-SEM slices, gray 8-bit 1024×768;
* ``monuseg`` — the MoNuSeg test tiles with the catalog's 1-px crop (999×999 RGB: the tiles' earlier
  JPEG 2000 grid would flatter JPEG 2000);
* ``kodak`` — Kodak kodim01–24, RGB 8-bit (out of domain for both models).

``--limit N`` keeps N images evenly spaced over the split.  A test image listed in a learned codec's
``training_images`` (:func:`core.provenance.codec_training_images`) is skipped for that codec unless
``--include-training`` (the JSON lists such images).

Codecs are built by :func:`core.pipeline.build_encoder` (colour mode → tiling → codec) and measured by
:func:`core.evaluate.evaluate`: bpp (8 · bytes of the complete stream / (H · W)), PSNR (dB, MAX =
2^bit_depth − 1) and MS-SSIM.

Settings
--------
``--settings`` (``codec=v1,v2,...;codec=...``) sets any codec's sweep exactly.  Otherwise a learned codec
sweeps its ``default_settings`` (fixed-rate checkpoints: 1..6; variable-rate: the knob 1..16,
``core.codecs.learned.VR_POINTS``), and a classical codec sweeps the catalog sweep
(:func:`core.catalog.sweeps`) **plus** the extra settings of :data:`EXTRA_SETTINGS`:

=========  ==============================  ==========================================
codec      catalog sweep                   extra settings (measured, not interpolated)
=========  ==============================  ==========================================
jpeg2000   160 80 40 20 10 5  (ratio N:1)  400 240 120 60 30 14 7
jpegxl     8 4 2 1 0.5  (distance)         20 14 11 6 3 1.5 0.75
avif       25 45 60 75 90  (quality)       5 15 35 52 68 82
=========  ==============================  ==========================================

The extras extend the classical curves below the catalog's lowest rate (the learned codecs reach
≈ 0.07 bpp) and put a measured point between each pair of catalog points, so the matched-bpp values
below interpolate over short spans only.  Every point of every curve is an actual encode.

Results
-------
* **Matched bpp**: per image, each classical codec's PSNR and MS-SSIM(dB) are interpolated (linearly in
  log bpp, between its two measured neighbours) at the learned codec's bpp on that image, then averaged
  over the images (NaN where the learned bpp is outside the classical sweep on any image).
* **BD-rate** (%, negative = the learned codec needs fewer bits) of the learned codec against each
  classical codec, with MS-SSIM in dB and with PSNR: :func:`core.bdrate.bd_rate_frame` — the project's one
  BD-rate (mean curve per setting, monotone points, >= 4 points per curve, overlap >= 20 %, Akima).

Writes ``OUT.json`` (every point) and ``OUT.md`` (tables).  Single-threaded torch.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from core.bdrate import bd_rate_frame, mean_per_setting
from core.catalog import catalog_id, dataset_spec, evenly_spaced, split_refs, sweeps
from core.codecs import get_codec
from core.datasets import load_ref
from core.evaluate import evaluate
from core.metrics import ms_ssim_db
from core.paths import WEIGHTS_DIR, data_root
from core.pipeline import build_encoder
from core.setting_text import format_setting, parse_sweep_spec

#: Short names accepted by ``--datasets``.
ALIASES = {"epfl": "epfl_hippocampus_fibsem", "monuseg": "monuseg", "kodak": "kodak"}
DEFAULT_DATASETS = ("epfl_hippocampus_fibsem", "monuseg", "kodak")
DEFAULT_LEARNED = ("learned-msssim", "learned-mse")
DEFAULT_CLASSICAL = ("jpeg2000", "jpegxl", "avif")
#: Settings measured in addition to the catalog sweep (see the module docstring).
EXTRA_SETTINGS = {
    "jpeg2000": (400, 240, 120, 60, 30, 14, 7),
    "jpegxl": (20, 14, 11, 6, 3, 1.5, 0.75),
    "avif": (5, 15, 35, 52, 68, 82),
}
BD_METRICS = {"ms_ssim": "ms_ssim_db", "psnr": "psnr"}  # JSON key → core.bdrate metric


def dataset_name(text: str) -> str:
    """Catalog dataset name of ``text`` (a catalog name or an alias of :data:`ALIASES`)."""
    name = ALIASES.get(text.strip(), text.strip())
    dataset_spec(name)  # raises CatalogError naming the known datasets
    return name


def dataset_test_refs(dataset: str, limit: int | None = None, root: str | Path | None = None) -> list:
    """The test-split ImageRefs of ``dataset`` (at most ``limit``, evenly spaced)."""
    refs = split_refs(dataset, ("test",), root)
    if not refs:
        raise ValueError(f"dataset {dataset} has no test-split image under {root or data_root()}")
    return evenly_spaced(refs, limit)


def classical_sweep(name: str) -> tuple:
    """The catalog sweep of ``name`` merged with :data:`EXTRA_SETTINGS`, ordered fewest → most bytes."""
    catalog = tuple(sweeps().get(name) or get_codec(name).default_settings)
    extra = EXTRA_SETTINGS.get(name, ())
    if len(catalog) < 2 or not extra:
        return catalog
    decreasing = catalog[0] > catalog[-1]  # ratio / distance knobs: larger = fewer bytes
    return tuple(sorted(set(catalog) | set(extra), reverse=decreasing))


def codec_settings(name: str, overrides: dict[str, tuple]) -> tuple:
    """``--settings`` for ``name`` if given; else the classical sweep or the codec's own default_settings."""
    if name in overrides:
        return tuple(overrides[name])
    codec = get_codec(name)
    if codec.family == "classical" and not codec.lossless:
        return classical_sweep(name)
    return tuple(codec.default_settings)


def measure(codec, image, setting) -> dict:
    """bytes, bpp, PSNR, MS-SSIM (and dB) and times of one setting, through core.evaluate."""
    m = evaluate(image, codec, setting).metrics
    out = {k: m[k] for k in ("bytes", "bpp", "psnr", "ms_ssim", "encode_s", "decode_s")}
    return {"setting": format_setting(setting), **out, "ms_ssim_db": float(ms_ssim_db(m["ms_ssim"]))}


def interp_at(points: pd.DataFrame, bpp: float, key: str) -> float:
    """``key`` of one image's classical points, interpolated linearly in log bpp at ``bpp`` (NaN outside)."""
    pts = points.sort_values("bpp")
    x = np.log(pts["bpp"].to_numpy(dtype=float))
    y = pts[key].to_numpy(dtype=float)
    if len(x) == 0 or not x[0] <= math.log(bpp) <= x[-1]:
        return float("nan")
    return float(np.interp(math.log(bpp), x, y))


def variants(name: str, bit_depth: int, channels: int, per_channel: bool) -> list[str]:
    """Colour modes of learned codec ``name`` on an image of ``bit_depth`` and ``channels`` planes."""
    codec = get_codec(name)
    modes = ["joint"] if codec.supports(bit_depth, channels) else []
    if channels == 3 and per_channel and codec.supports(bit_depth, 1):
        modes.append("per_channel")
    return modes


def run_dataset(dataset: str, learned: list[str], classical: list[str], overrides: dict, limit: int | None,
                per_channel: bool, include_training: bool, root) -> tuple[list[dict], list[str]]:
    """Every measured point of ``dataset`` (one dict per image × codec × colour mode × setting) and the
    learned-codec images skipped because the codec saw them in training."""
    from core.provenance import codec_training_images

    rows: list[dict] = []
    skipped: list[str] = []
    for ref in dataset_test_refs(dataset, limit, root):
        image = load_ref(ref)
        base = {"dataset": dataset, "image_id": ref.image_id}
        for name in learned:
            if not include_training and catalog_id(ref) in codec_training_images(name):
                skipped.append(f"{name}: {catalog_id(ref)}")
                continue
            for mode in variants(name, image.bit_depth, image.channels, per_channel):
                settings = codec_settings(name, overrides)
                warm = build_encoder(name, mode, image.channels)  # model loading is not timed
                crop = np.ascontiguousarray(image.pixels[:64, :64])
                for s in settings:
                    warm.decode(warm.encode(crop, s, image.bit_depth))
                codec = build_encoder(name, mode, image.channels, image.height, image.width)
                rows += [{**base, "codec": name, "colour_mode": mode, **measure(codec, image, s)} for s in settings]
        for name in classical:
            if not get_codec(name).supports(image.bit_depth, image.channels):
                continue
            codec = build_encoder(name, "joint", image.channels, image.height, image.width)
            rows += [{**base, "codec": name, "colour_mode": "joint", **measure(codec, image, s)}
                     for s in codec_settings(name, overrides)]
        print(f"{dataset}/{ref.image_id} done", flush=True)
    return rows, skipped


def summarise(points: pd.DataFrame, learned: list[str], classical: list[str]) -> dict:
    """Per learned codec (and colour mode): the mean curve (core.bdrate.mean_per_setting), the classical
    values at matched bpp, and BD-rate (core.bdrate) against each classical codec."""
    out: dict = {}
    if points.empty:
        return out
    frame = points.assign(stage=0)
    for (name, mode), rows in frame[frame["codec"].isin(learned)].groupby(["codec", "colour_mode"], sort=True):
        label = name if mode == "joint" else f"{name}/{mode}"
        images = sorted(rows["image_id"].unique())
        curve = mean_per_setting(rows, ["bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"])
        curve_points = []
        for p in curve.itertuples(index=False):
            pt = {"setting": p.setting, "bpp": p.bpp, "psnr": p.psnr, "ms_ssim": p.ms_ssim,
                  "ms_ssim_db": p.ms_ssim_db, "encode_s": p.encode_s, "decode_s": p.decode_s, "images": p.images}
            at_setting = rows[rows["setting"] == p.setting]
            for anchor in classical:
                for key in ("psnr", "ms_ssim_db"):
                    vals = [interp_at(frame[(frame["codec"] == anchor) & (frame["image_id"] == r.image_id)],
                                      r.bpp, key) for r in at_setting.itertuples(index=False)]
                    pt[f"{anchor}_{key}_at_bpp"] = float(np.mean(vals))  # NaN if any image is outside the sweep
            curve_points.append(pt)
        bd, reasons = {}, {}
        for anchor in classical:
            pair = frame[((frame["codec"] == name) & (frame["colour_mode"] == mode)) | (frame["codec"] == anchor)]
            bd[anchor], reasons[anchor] = {}, {}
            for key, metric in BD_METRICS.items():
                table = bd_rate_frame(pair, metric, anchor=anchor)
                row = table[(table["codec"] == name) & (table["colour_mode"] == mode)]
                bd[anchor][key] = float(row["bd_rate"].iloc[0]) if len(row) else float("nan")
                reasons[anchor][key] = row["reason"].iloc[0] if len(row) else "no common images"
        out[label] = {"points": curve_points, "bd_rate_percent": bd, "bd_rate_reason": reasons,
                      "n_images": len(images)}
    return out


def to_markdown(results: dict) -> str:
    classical = results.get("classical", list(DEFAULT_CLASSICAL))
    lines = ["# Learned codecs vs classical at matched bpp", "",
             "Test-split images of the catalog. Means over images; classical PSNR / MS-SSIM(dB) interpolated per "
             "image at the learned bpp (nan = outside the classical sweep). BD-rate (core.bdrate): negative = "
             "learned saves bits; nan = not computable (reason in the JSON).", ""]
    head = ["q", "bpp", "PSNR", "MS-SSIM", "MS-SSIM dB"] + [f"{c} PSNR" for c in classical] \
        + [f"{c} MS-SSIM dB" for c in classical] + ["enc s", "dec s"]
    for ds, block in results["datasets"].items():
        for lab, s in block["summary"].items():
            lines += [f"## {ds}: {lab} ({s['n_images']} images)", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for p in s["points"]:
                cells = [str(p["setting"]), f"{p['bpp']:.3f}", f"{p['psnr']:.2f}", f"{p['ms_ssim']:.4f}",
                         f"{p['ms_ssim_db']:.2f}"]
                cells += [f"{p[f'{c}_psnr_at_bpp']:.2f}" for c in classical]
                cells += [f"{p[f'{c}_ms_ssim_db_at_bpp']:.2f}" for c in classical]
                cells += [f"{p['encode_s']:.2f}", f"{p['decode_s']:.2f}"]
                lines.append("| " + " | ".join(cells) + " |")
            bd = s["bd_rate_percent"]
            lines += ["", "BD-rate of the learned codec (%): " + ", ".join(
                f"vs {n}: MS-SSIM {v['ms_ssim']:+.1f}, PSNR {v['psnr']:+.1f}" for n, v in bd.items()), ""]
        if block.get("skipped_seen_in_training"):
            lines += [f"Skipped (seen in training): {', '.join(block['skipped_seen_in_training'])}", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.compare_learned", description=__doc__.split("\n")[0])
    p.add_argument("--codecs", default=",".join(DEFAULT_LEARNED), help="learned codecs to compare")
    p.add_argument("--classical", default=",".join(DEFAULT_CLASSICAL), help="classical codecs compared against")
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help=f"catalog datasets (aliases: {', '.join(f'{k}={v}' for k, v in ALIASES.items())})")
    p.add_argument("--settings", default=None,
                   help="exact sweeps, 'codec=v1,v2;codec=...' (default: catalog sweep + EXTRA_SETTINGS for "
                        "classical codecs, default_settings for learned ones)")
    p.add_argument("--limit", type=int, default=None, help="at most N test images per dataset (evenly spaced)")
    p.add_argument("--per-channel", action="store_true", help="also the 1-channel models per RGB plane")
    p.add_argument("--include-training", action="store_true",
                   help="also code test images a learned codec lists in its training_images")
    p.add_argument("--data-root", type=Path, default=None, help="default: core.paths.data_root()")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR / "compare_learned")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    learned = [n.strip() for n in args.codecs.split(",") if n.strip()]
    classical = [n.strip() for n in args.classical.split(",") if n.strip()]
    for name in learned + classical:
        get_codec(name)  # raises with the list of known names
    overrides = parse_sweep_spec(args.settings, learned + classical)
    datasets = [dataset_name(d) for d in args.datasets.split(",") if d.strip()]
    results: dict = {"datasets": {}, "classical": classical,
                     "sweeps": {n: [format_setting(s) for s in codec_settings(n, overrides)]
                                for n in learned + classical}}
    for ds in datasets:
        rows, skipped = run_dataset(ds, learned, classical, overrides, args.limit, args.per_channel,
                                    args.include_training, args.data_root)
        results["datasets"][ds] = {"points": rows, "summary": summarise(pd.DataFrame(rows), learned, classical),
                                   "skipped_seen_in_training": skipped}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    args.out.with_suffix(".md").write_text(to_markdown(results))
    print(to_markdown(results))
    return results


if __name__ == "__main__":
    main()
