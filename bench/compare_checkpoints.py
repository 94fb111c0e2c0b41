"""One learned codec's checkpoints against another's, on the same catalog images: is the new one better?

    python -m bench.compare_checkpoints --old-weights OLD_DIR --new-weights NEW_DIR --codec learned-msssim \\
        --images epfl_hippocampus_fibsem/training0161,epfl_hippocampus_fibsem/training0162 [--old-codec NAME]

Each folder is read like ``data/weights`` (:func:`core.codecs.learned.load_codecs`); both codecs code every
listed image (catalog ids, read with the catalog's crops) at each of their default settings.  Printed: the
mean curve of each (bpp = 8 · bytes of the complete stream / (H · W), PSNR in dB, MS-SSIM in dB =
−10·log10(1 − MS-SSIM)) and the BD-rate of new vs old (:func:`core.bdrate.bd_rate`, the project's one
BD-rate; negative = the new checkpoints need fewer bits for the same quality).  Use images neither set of
checkpoints trained on (``training_images`` in their JSON) — the script refuses others.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def measure(codec, images) -> list[dict]:
    from core.evaluate import evaluate
    from core.metrics import ms_ssim_db
    from core.pipeline import build_encoder

    points = []
    for setting in codec.default_settings:
        rows = []
        for image in images:
            enc = build_encoder(codec, "joint", image.channels, image.height, image.width)
            m = evaluate(image, enc, setting).metrics
            rows.append((m["bpp"], m["psnr"], ms_ssim_db(m["ms_ssim"])))
        bpp, psnr, msdb = np.mean(rows, axis=0)
        points.append({"setting": setting, "bpp": float(bpp), "psnr": float(psnr), "ms_ssim_db": float(msdb)})
    return points


def main(argv=None) -> int:
    import torch

    from core.bdrate import bd_rate
    from core.catalog import split_refs
    from core.codecs.learned import load_codecs
    from core.datasets import load_ref

    p = argparse.ArgumentParser(prog="python -m bench.compare_checkpoints", description=__doc__.split("\n\n")[0])
    p.add_argument("--old-weights", required=True)
    p.add_argument("--new-weights", required=True)
    p.add_argument("--codec", default="learned-msssim")
    p.add_argument("--old-codec", help="the old folder's codec when it differs (e.g. a fixed-rate ladder "
                   "learned-msssim-fixed against a variable-rate learned-msssim); default --codec")
    p.add_argument("--images", required=True, help="comma-separated catalog ids dataset/image_id")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    wanted = [i.strip() for i in args.images.split(",") if i.strip()]
    refs = {}
    for cid in wanted:
        dataset, _, image_id = cid.partition("/")
        found = [r for r in split_refs(dataset, ("train", "val", "test")) if r.image_id == image_id]
        if not found:
            raise SystemExit(f"unknown catalog image {cid!r}")
        refs[cid] = found[0]
    images = [load_ref(refs[c]) for c in wanted]
    curves = {}
    for label, folder, name in (("old", args.old_weights, args.old_codec or args.codec),
                                ("new", args.new_weights, args.codec)):
        codec = load_codecs(folder)[name]
        for model in codec.models():
            seen = set(model.meta.get("training_images") or [])
            # checkpoints from before the catalog list file paths: their training files (their validation
            # files were only measured at the end, never used to select or stop anything)
            seen |= {f"{d}/{p.rsplit('/', 1)[-1].rsplit('.', 1)[0]}" for d in {c.split('/')[0] for c in wanted}
                     for p in model.meta.get("training_data", []) if f"/{d}/" in p}
            if seen & set(wanted):
                raise SystemExit(f"{label} checkpoint {model.model_id} saw {sorted(seen & set(wanted))}")
        curves[label] = measure(codec, images)
        for pt in curves[label]:
            print(f"{label} {name} setting {pt['setting']}: {pt['bpp']:.4f} bpp, {pt['psnr']:.2f} dB, "
                  f"MS-SSIM {pt['ms_ssim_db']:.2f} dB")
    result = {"images": wanted, "curves": curves}
    for metric in ("ms_ssim_db", "psnr"):
        old, new = curves["old"], curves["new"]
        value, reason = bd_rate([o["bpp"] for o in old], [o[metric] for o in old],
                                [n["bpp"] for n in new], [n[metric] for n in new])
        result[f"bd_rate_{metric}"] = value
        print(f"BD-rate new vs old ({metric}): {value:+.1f} %" + (f" ({reason})" if reason else ""))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
