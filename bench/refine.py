"""Encoder-side latent refinement (``refine_steps``, the file CLI's ``--effort``): BD-rate and encode time.

    python -m bench.refine [--codec learned-msssim] [--settings 2,4,7,10,13] [--steps 0,25]
                           [--images 2] [--crop 512] [--data-root DIR] [--out data/weights/refine]

Images: the catalog's ``test`` split of EPFL FIB-SEM (:func:`core.catalog.split_refs`; no learned model
trained on them), ``--images`` slices evenly spaced over the split, each cut to its central
``--crop`` × ``--crop`` pixels.  Every point is a real encode and decode: bpp = 8 · bytes of the complete
stream / pixels, PSNR and MS-SSIM (:mod:`core.metrics`) of the decoded image, encode seconds
(wall clock, one torch thread, median of one — the machine is shared, see the note in the output).
The refined curves are compared with the plain one (``refine_steps`` 0) by :func:`core.bdrate.bd_rate_frame`
(MS-SSIM in dB and PSNR; negative = the refined encoder needs fewer bits for the same quality).  The
objective column is the model's own: bpp + λ(setting) · D(original, decoded), D the training distortion of
the checkpoint's ``loss`` (:func:`core.train.distortion`: 1 − MS-SSIM, 255²·MSE on [0, 1] pixels, or the Zhao mix).

Writes ``OUT.json`` (every point) and ``OUT.md`` (the tables and the command).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def model_objective(model, original: np.ndarray, decoded: np.ndarray, bit_depth: int, bpp: float,
                    lmbda: float) -> float:
    """The checkpoint's own rate–distortion objective of one real stream: ``bpp`` (bits per pixel of the
    stream) + λ · D, D its training distortion (metadata ``loss``, :func:`core.train.distortion`) of the decoded
    image against the original, both mapped to [0, 1] as the codec maps the original (÷ the bit depth's maximum;
    deeper than 8 bits through its intensity window, :func:`core.codecs.learned.intensity_window`)."""
    import torch

    from core.codecs.learned import intensity_window, to_unit_range
    from core.train import distortion

    window = intensity_window(original, bit_depth)

    def tensor(a: np.ndarray) -> torch.Tensor:
        a = to_unit_range(a, bit_depth, window)
        a = a[None, None] if a.ndim == 2 else a.transpose(2, 0, 1)[None]
        return torch.from_numpy(np.ascontiguousarray(a))

    kind = model.meta.get("loss") or "msssim"
    alpha = float(model.meta.get("alpha") or 0.84)
    with torch.no_grad():
        return bpp + lmbda * float(distortion(kind, tensor(original), tensor(decoded), alpha))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.refine", description=__doc__.split("\n")[0])
    p.add_argument("--codec", default="learned-msssim")
    p.add_argument("--settings", default="2,4,7,10,13")
    p.add_argument("--steps", default="0,25", help="refine_steps values; 0 (the plain encoder) is the anchor")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--dataset", default="epfl_hippocampus_fibsem")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="data/weights/refine")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from core.bdrate import bd_rate_frame
    from core.catalog import evenly_spaced, split_refs
    from core.codecs import get_codec
    from core.datasets import load_ref
    from core.metrics import ms_ssim, ms_ssim_db, psnr

    settings = [float(s) for s in args.settings.split(",")]
    steps_list = sorted({int(s) for s in args.steps.split(",")} | {0})
    base = get_codec(args.codec)
    refs = evenly_spaced(split_refs(args.dataset, ("test",), args.data_root), args.images)
    images = []
    for ref in refs:
        pix = load_ref(ref).pixels
        h, w = pix.shape[:2]
        c = min(args.crop, h, w)
        y0, x0 = (h - c) // 2, (w - c) // 2
        images.append((ref.image_id, np.ascontiguousarray(pix[y0:y0 + c, x0:x0 + c]), load_ref(ref).bit_depth))
    rows = []
    load_at_start = os.getloadavg()[0]  # other work on the machine skews the encode seconds
    base.encode(images[0][1][:64, :64], settings[0], images[0][2])  # load the model before timing
    for steps in steps_list:
        codec = base.with_refinement(steps)
        name = args.codec if steps == 0 else f"{args.codec}+refine{steps}"
        for image_id, pix, depth in images:
            channels = 1 if pix.ndim == 2 else pix.shape[2]
            for s in settings:
                t0 = time.perf_counter()
                data = codec.encode(pix, s, depth)
                encode_s = time.perf_counter() - t0
                out = base.decode(data)  # the plain codec decodes every stream: the decoder is unchanged
                bpp = 8 * len(data) / (pix.shape[0] * pix.shape[1])
                m = ms_ssim(pix, out, depth)
                model = base.model_for(channels, s)
                lam = model.lmbda_at(int(round(s * 1000)))
                rows.append({"stage": 0, "dataset": args.dataset, "image_id": image_id, "codec": name,
                             "refine_steps": steps, "colour_mode": "joint", "setting": s, "bytes": len(data),
                             "bpp": bpp, "psnr": psnr(pix, out, depth), "ms_ssim": m, "encode_s": encode_s,
                             "objective": model_objective(model, pix, out, depth, bpp, lam), "lmbda": lam,
                             "loss": model.meta.get("loss"), "error": None})
                print(f"{name:28s} {image_id:14s} s={s:<5g} {bpp:.4f} bpp  PSNR {rows[-1]['psnr']:.2f}  "
                      f"MS-SSIM {m:.5f}  J {rows[-1]['objective']:.4f}  {encode_s:.2f} s", flush=True)
    frame = pd.DataFrame(rows)
    frame["ms_ssim_db"] = ms_ssim_db(frame["ms_ssim"].astype(float))

    bd = {metric: bd_rate_frame(frame, metric, anchor=args.codec) for metric in ("ms_ssim_db", "psnr")}
    per_setting = (frame.groupby(["refine_steps", "setting"])
                   .agg(bpp=("bpp", "mean"), psnr=("psnr", "mean"), ms_ssim_db=("ms_ssim_db", "mean"),
                        objective=("objective", "mean"), encode_s=("encode_s", "mean")).reset_index())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 .venv/bin/python -m bench.refine " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    # a dict without checkpoint fields: core.codecs.learned.load_codecs skips it beside the weights
    out.with_suffix(".json").write_text(json.dumps({"measurement": "bench.refine", "command": command,
                                                    "points": rows}, indent=1))
    lines = [f"# Encoder-side latent refinement of `{args.codec}`: BD-rate and encode time", "",
             f"Command: `{command}`", "",
             f"Images: {len(images)} held-out `{args.dataset}` test slices ({', '.join(i for i, _, _ in images)}), "
             f"central {images[0][1].shape[0]}×{images[0][1].shape[1]} crop; settings {args.settings}; "
             f"Adam lr {__import__('core.codecs.learned', fromlist=['REFINE_LR']).REFINE_LR}, cosine decay, "
             "straight-through rounding, best iterate kept (`core/codecs/learned.py: refine_latent`).  Every "
             "point is a real stream decoded by the unchanged decoder; bpp counts every byte.", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1-minute load average "
             f"{load_at_start:.1f} when the run started; one torch thread; encode seconds are wall clock of single "
             "encodes (noisy, same conditions for every row).", "",
             "## BD-rate vs the plain encoder (negative = fewer bits at equal quality)", "",
             "| codec | MS-SSIM (dB) BD-rate | PSNR BD-rate | mean encode s | encode time × plain |",
             "|---|---|---|---|---|"]
    plain_s = frame[frame["refine_steps"] == 0]["encode_s"].mean()
    for steps in steps_list:
        name = args.codec if steps == 0 else f"{args.codec}+refine{steps}"
        enc = frame[frame["refine_steps"] == steps]["encode_s"].mean()
        if steps == 0:
            lines.append(f"| {name} (anchor) | 0 | 0 | {enc:.2f} | 1.0 |")
            continue
        vals = []
        for metric in ("ms_ssim_db", "psnr"):
            t = bd[metric]
            r = t[t["codec"] == name]
            v = float(r["bd_rate"].iloc[0]) if len(r) else float("nan")
            reason = r["reason"].iloc[0] if len(r) and isinstance(r["reason"].iloc[0], str) else ""
            vals.append(f"{v:+.1f} %" if np.isfinite(v) else f"n/a ({reason})")
        lines.append(f"| {name} | {vals[0]} | {vals[1]} | {enc:.2f} | {enc / plain_s:.1f} |")
    loss_name = {"msssim": "D = 1 − MS-SSIM", "mse": "D = 255²·MSE", "mix": "D = Zhao mix"}.get(
        frame["loss"].iloc[0], str(frame["loss"].iloc[0]))
    lines += ["", "## Per setting (mean over the images)", "",
              f"| refine_steps | setting | bpp | PSNR (dB) | MS-SSIM (dB) | objective bpp + λ·D ({loss_name}) | encode s |",
              "|---|---|---|---|---|---|---|"]
    for r in per_setting.itertuples():
        lines.append(f"| {r.refine_steps} | {r.setting:g} | {r.bpp:.4f} | {r.psnr:.2f} | {r.ms_ssim_db:.2f} | "
                     f"{r.objective:.4f} | {r.encode_s:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
