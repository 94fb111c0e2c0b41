"""How strong the synthesised grain is: :data:`core.codecs.grain.GRAIN_SCALE`, chosen on the stage-2 *val* images.

    python -m bench.grain_scale [--split val] [--scales 0 0.7 1 1.3] [--cases learned-mse:7 jpeg2000:20 ...]
    python -m bench.grain_scale --split test --scales 1 --seeds 5 --datasets epfl_hippocampus_fibsem --cases ...

For every image of the split in stage 2 (EM), each (codec, setting) of ``--cases`` is coded with
:class:`core.codecs.grain.GrainCodec` at each scale (σ = scale × RMS of the coding residual; scale 0 = the plain
codec's pixels plus an 11-byte header) and the runner's downstream evaluator of the dataset
(:func:`core.segmentation.evaluator_for`) compares the reconstruction's segmentation with the original's.
Printed per (dataset, codec, setting, scale): mean ``seg_dice`` (agreement with the original's segmentation),
mean change of Dice against the ground truth (reconstruction − original; the runner's two-way rule allows
−0.01), mean PSNR (dB) and compression factor (raw / coded bytes).

``--seeds K`` also asks how much the verdicts owe to the one noise draw a stream decodes to: the grain is drawn
again with the seeds s + 1 … s + K − 1 (s = the stream's own seed, :func:`core.codecs.grain.stream_seed`) on the same
inner reconstruction and σ, and the line gives the spread of the mean Dice over the K draws.
"""
from __future__ import annotations

import argparse

import numpy as np

DEFAULT_CASES = ("learned-mse:3", "learned-mse:7", "learned-mse:11", "learned-mse:16", "jpeg2000:40",
                 "jpeg2000:20", "jpeg2000:10", "avif:25", "avif:45")


def measure(refs, cases, scales, evaluator, seeds: int = 1) -> dict[tuple, dict[str, list[float]]]:
    """``{(dataset, codec, setting, scale, draw): {"dice", "gt_delta", "psnr", "factor"}}``, one value per image;
    draw 0 is what the codec decodes, draws 1 … ``seeds`` − 1 the same grain redrawn with the seeds that follow.

    ``evaluator(dataset)`` → an object with ``prepare(image, ref)`` and ``compare(state, pixels)`` (the runner's
    :class:`~core.segmentation.DownstreamEvaluator`)."""
    from core.codecs import get_codec
    from core.codecs.grain import GrainCodec, parse, stream_seed
    from core.datasets import load_ref
    from core.metrics import psnr, size_metrics

    results: dict[tuple, dict[str, list[float]]] = {}
    for ref in refs:
        image = load_ref(ref)
        judge = evaluator(ref.dataset)
        state = judge.prepare(image, ref)
        for name, setting in cases:
            for scale in scales:
                codec = GrainCodec(get_codec(name), scale)
                encoded = codec.encode(image.pixels, setting, image.bit_depth)
                factor = size_metrics(len(encoded), image.pixels.shape, image.pixels.dtype)["factor"]
                bit_depth, sigma, payload = parse(encoded)
                smooth = codec.inner.decode(payload)  # once: every draw adds its grain to it
                for draw in range(seeds):  # draw 0 is exactly GrainCodec.decode: the stream's own seed
                    recon = codec.synthesise(smooth, sigma, bit_depth, (stream_seed(payload) + draw) % 2**32)
                    row = judge.compare(state, recon)
                    gt = (row.get("seg_dice_gt_reconstruction"), row.get("seg_dice_gt_original"))
                    out = results.setdefault((ref.dataset, name, setting, scale, draw),
                                             {"dice": [], "gt_delta": [], "psnr": [], "factor": []})
                    out["dice"].append(row["seg_dice"])
                    out["gt_delta"].append(gt[0] - gt[1] if None not in gt else np.nan)
                    out["psnr"].append(psnr(image.pixels, recon, image.bit_depth))
                    out["factor"].append(factor)
    return results


def main(argv=None) -> int:
    from functools import lru_cache

    from bench.grain_probe import parse_cases
    from core.segmentation import evaluator_for
    from core.stages import stage_refs

    p = argparse.ArgumentParser(prog="python -m bench.grain_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="val")
    p.add_argument("--scales", nargs="+", type=float, default=[0.0, 0.7, 1.0, 1.3])
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="CODEC:SETTING")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--datasets", nargs="+", default=None, help="only these stage-2 datasets")
    p.add_argument("--seeds", type=int, default=1, help="noise draws per stream (1 = the codec's own only)")
    args = p.parse_args(argv)

    refs = [r for r in stage_refs(2, splits=(args.split,)) if args.datasets is None or r.dataset in args.datasets]
    refs = refs[: args.limit]
    cases = parse_cases(args.cases)
    # contour metrics only where the membranes are the segmentation (ISBI): seg_dice is what this bench reads
    evaluator = lru_cache(maxsize=None)(lambda d: evaluator_for(d, contours=False) or evaluator_for(d))
    results = measure(refs, cases, args.scales, evaluator, max(1, args.seeds))
    print(f"stage 2, {args.split} split: {len(refs)} images; σ = scale × RMS of the coding residual"
          + (f"; {args.seeds} noise draws per stream" if args.seeds > 1 else ""))
    for (dataset, name, setting, scale, draw), row in results.items():
        if draw:
            continue
        spread = [np.mean(results[(dataset, name, setting, scale, k)]["dice"]) for k in range(max(1, args.seeds))]
        redrawn = f", over {len(spread)} draws {min(spread):.3f}–{max(spread):.3f}" if len(spread) > 1 else ""
        print(f"{dataset:24s} {name:12s} {setting!s:>4}  scale {scale:3.1f}: Dice vs original "
              f"{np.mean(row['dice']):.3f} (min {np.min(row['dice']):.3f}{redrawn}), "
              f"vs GT Δ {np.nanmean(row['gt_delta']):+.3f}, {np.mean(row['psnr']):.2f} dB, {np.mean(row['factor']):.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
