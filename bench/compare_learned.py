"""Shipped learned codecs vs JPEG 2000 / JPEG XL / AVIF at matched bpp.

    python -m bench.compare_learned [--codecs learned-msssim,learned-mix] [--datasets epfl,monuseg,kodak]
                                    [--limit N] [--out data/weights/compare_learned]

Datasets (paths under ``../shared/data``):

* ``epfl``     the last 4 EPFL hippocampus FIB-SEM slices (held out of training), gray 8-bit 1024×768
* ``monuseg``  MoNuSeg test tiles, cropped ``[1:, 1:]`` (the tiles carry an earlier JPEG 2000
  compression on their original grid that flatters JPEG 2000), RGB 8-bit 999×999
* ``kodak``    Kodak kodim01–24, RGB 8-bit (out of domain for both models)

For every image and codec setting: bpp (8 · bytes of the complete stream / (H · W)), PSNR (dB,
MAX = 255) and MS-SSIM (:mod:`core.metrics`).  Matched comparison: per image, each classical
codec's PSNR and MS-SSIM are interpolated (linearly in log bpp) at the learned codec's bpp on that
image, then averaged over the images (NaN where the learned bpp is outside the classical sweep).
Also BD-rate (%, bjontegaard ``akima``, negative = learned needs fewer bits) of the learned codec
against each classical codec on the mean curves, with MS-SSIM in dB and with PSNR.

Writes ``OUT.json`` (every point) and ``OUT.md`` (tables).  Single-threaded torch.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from core.codecs import get_codec
from core.codecs.per_channel import PerChannelCodec
from core.evaluate import evaluate
from core.io import BioImage, read_image
from core.metrics import ms_ssim_db

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSICAL = {  # denser sweeps than the runner's defaults, so the curves cover 0.05–2 bpp (gray) / 0.1–4 (RGB)
    "jpeg2000": (400, 200, 120, 80, 50, 35, 25, 16, 12, 8, 5),
    "jpegxl": (20.0, 14.0, 10.0, 7.0, 5.0, 3.5, 2.5, 1.75, 1.25, 0.9, 0.6),
    "avif": (5, 15, 25, 35, 45, 55, 65, 75, 85, 92),
}


def dataset_images(name: str, limit: int | None):
    if name == "epfl":
        files = sorted((DATA / "epfl_hippocampus_fibsem" / "train" / "slices").glob("*.png"))[-4:]
        crop = None
    elif name == "monuseg":
        files = sorted((DATA / "monuseg" / "test" / "images").glob("*.tif"))
        crop = (slice(1, None), slice(1, None))
    elif name == "kodak":
        files = sorted((DATA / "kodak").glob("*.png"))
        crop = None
    else:
        raise ValueError(f"unknown dataset {name!r}")
    for f in files[:limit]:
        img = read_image(f)
        px = img.pixels if crop is None else np.ascontiguousarray(img.pixels[crop])
        yield f.stem, px, img.bit_depth


def measure(codec, pixels, bit_depth, setting) -> dict:
    """bytes, bpp, PSNR, MS-SSIM and times of one setting, through the product's own core.evaluate."""
    m = evaluate(BioImage(pixels, bit_depth), codec, setting).metrics
    return {"setting": setting, **{k: m[k] for k in ("bytes", "bpp", "psnr", "ms_ssim", "encode_s", "decode_s")}}


def interp_at(points: list[dict], bpp: float, key: str) -> float:
    pts = sorted(points, key=lambda p: p["bpp"])
    x = np.log([p["bpp"] for p in pts])
    y = np.array([p[key] if key != "ms_ssim_db" else ms_ssim_db(p["ms_ssim"]) for p in pts])
    if not x[0] <= math.log(bpp) <= x[-1]:
        return float("nan")
    return float(np.interp(math.log(bpp), x, y))


def bd_rate(anchor: list[tuple], test: list[tuple]) -> float:
    import bjontegaard

    try:
        return float(bjontegaard.bd_rate([a[0] for a in anchor], [a[1] for a in anchor],
                                         [t[0] for t in test], [t[1] for t in test],
                                         method="akima", require_matching_points=False, min_overlap=0.3))
    except Exception:  # too little overlap, non-monotonic curve
        return float("nan")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.compare_learned", description=__doc__.split("\n")[0])
    p.add_argument("--codecs", default="learned-msssim,learned-mix")
    p.add_argument("--datasets", default="epfl,monuseg,kodak")
    p.add_argument("--limit", type=int, default=None, help="at most N images per dataset")
    p.add_argument("--per-channel", action="store_true", help="also the 1-channel models per RGB plane")
    p.add_argument("--out", type=Path, default=Path("data/weights/compare_learned"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    learned = [n for n in args.codecs.split(",") if n]
    results: dict = {"datasets": {}, "classical_sweeps": CLASSICAL}
    for ds in args.datasets.split(","):
        rows: dict[str, dict[str, list[dict]]] = {}
        for image_id, px, bd in dataset_images(ds, args.limit):
            ch = 1 if px.ndim == 2 else 3
            per_image = rows.setdefault(image_id, {})
            for name in learned:
                codec = get_codec(name)
                variants = [(name, codec)] if ch in codec.channels else []
                if ch == 3 and args.per_channel and 1 in codec.channels:
                    variants.append((f"{name}/per_channel", PerChannelCodec(codec)))
                for label, c in variants:
                    for s in c.default_settings:  # warm-up (model loading, first-call set-up) is not timed
                        c.decode(c.encode(np.ascontiguousarray(px[:64, :64]), s, bd))
                    per_image[label] = [measure(c, px, bd, s) for s in c.default_settings]
            for name, sweep in CLASSICAL.items():
                codec = get_codec(name)
                per_image[name] = [measure(codec, px, bd, s) for s in sweep]
            print(f"{ds}/{image_id} done", flush=True)
        results["datasets"][ds] = {"images": rows, "summary": summarise(rows, learned)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    args.out.with_suffix(".md").write_text(to_markdown(results))
    print(to_markdown(results))
    return results


def summarise(rows: dict, learned: list[str]) -> dict:
    """Per learned codec and rate point: mean bpp/PSNR/MS-SSIM, and the classical values at matched bpp."""
    out = {}
    labels = sorted({lab for r in rows.values() for lab in r if lab.split("/")[0] in learned})
    for lab in labels:
        images = [i for i in rows if lab in rows[i]]
        n_points = len(rows[images[0]][lab])
        points = []
        for k in range(n_points):
            pt = {"setting": rows[images[0]][lab][k]["setting"]}
            for key in ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s"):
                pt[key] = float(np.mean([rows[i][lab][k][key] for i in images]))
            pt["ms_ssim_db"] = float(np.mean([ms_ssim_db(rows[i][lab][k]["ms_ssim"]) for i in images]))
            for name in CLASSICAL:
                for key in ("psnr", "ms_ssim_db"):
                    vals = [interp_at(rows[i][name], rows[i][lab][k]["bpp"], key) for i in images]
                    pt[f"{name}_{key}_at_bpp"] = float(np.mean(vals))  # NaN if any image is outside the sweep
            points.append(pt)
        bd = {}
        for name in CLASSICAL:
            n_set = len(CLASSICAL[name])
            anchor = {key: [(float(np.mean([rows[i][name][k]["bpp"] for i in images])),
                             float(np.mean([rows[i][name][k][key] if key == "psnr" else ms_ssim_db(rows[i][name][k]["ms_ssim"])
                                            for i in images]))) for k in range(n_set)] for key in ("psnr", "ms_ssim")}
            test = {"psnr": [(p["bpp"], p["psnr"]) for p in points], "ms_ssim": [(p["bpp"], p["ms_ssim_db"]) for p in points]}
            bd[name] = {key: bd_rate(anchor[key], test[key]) for key in ("psnr", "ms_ssim")}
        out[lab] = {"points": points, "bd_rate_percent": bd, "n_images": len(images)}
    return out


def to_markdown(results: dict) -> str:
    lines = ["# Learned codecs vs classical at matched bpp", "",
             "Means over images; classical PSNR / MS-SSIM(dB) interpolated per image at the learned bpp "
             "(nan = outside the classical sweep). BD-rate: negative = learned saves bits.", ""]
    for ds, block in results["datasets"].items():
        for lab, s in block["summary"].items():
            lines += [f"## {ds}: {lab} ({s['n_images']} images)", "",
                      "| q | bpp | PSNR | MS-SSIM | MS-SSIM dB | J2K PSNR | JXL PSNR | AVIF PSNR | J2K MS-SSIM dB | JXL MS-SSIM dB | AVIF MS-SSIM dB | enc s | dec s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for p in s["points"]:
                lines.append(
                    f"| {p['setting']} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} | {p['ms_ssim_db']:.2f} | "
                    f"{p['jpeg2000_psnr_at_bpp']:.2f} | {p['jpegxl_psnr_at_bpp']:.2f} | {p['avif_psnr_at_bpp']:.2f} | "
                    f"{p['jpeg2000_ms_ssim_db_at_bpp']:.2f} | {p['jpegxl_ms_ssim_db_at_bpp']:.2f} | "
                    f"{p['avif_ms_ssim_db_at_bpp']:.2f} | {p['encode_s']:.2f} | {p['decode_s']:.2f} |")
            bd = s["bd_rate_percent"]
            lines += ["", "BD-rate of the learned codec (%): " + ", ".join(
                f"vs {n}: MS-SSIM {v['ms_ssim']:+.1f}, PSNR {v['psnr']:+.1f}" for n, v in bd.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
