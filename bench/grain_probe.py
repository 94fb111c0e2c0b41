"""Is the EM segmenter's disagreement on learned reconstructions lost fine texture?  A diagnostic, not a codec.

    python -m bench.grain_probe [--dataset epfl_hippocampus_fibsem] [--sigmas 0 3 5 7] [--limit N]

For every test-split image of the dataset, each (codec, setting) in ``--cases`` codes it (the runner's pipeline,
joint mode), seeded Gaussian noise of σ grey levels (8-bit scale) is added to the reconstruction (rounded, clipped),
and the dataset's object segmenter (``data/segmenters.toml``) is run on it.  Printed per (codec, setting, σ): the
mean Dice of the foreground against the segmentation of the original (the runner's ``seg_dice`` at σ = 0), the
mean PSNR (dB) of the noisy reconstruction against the original and the mean compression factor (raw bytes /
coded bytes); as the control, the original itself with the same noise.  If noise lifts a smooth reconstruction's Dice, the
segmenter keys on texture that the codec removed, and decoder-side grain synthesis (as AV1's film grain) would be
the codec tool to try; PSNR falls by the noise's MSE (σ²).
"""
from __future__ import annotations

import argparse

import numpy as np

DEFAULT_CASES = ("learned-mse:16", "learned-mse:11", "avif:45", "jpeg2000:10", "jpeg2000:5")


def probe(refs, cases, sigmas, segmenter, seed: int = 0) -> dict[tuple, dict[str, list[float]]]:
    """``{(codec name, setting, σ): {"dice": [...], "psnr": [...], "factor": [...]}}``, one value per image (PSNR
    in dB against the original; factor = raw / coded bytes, NaN for the original); ``("original", None, σ)`` is
    the control (σ > 0 only).

    ``refs``: catalog refs of 8-bit gray images; ``cases``: ``[(codec name, setting)]``; ``segmenter``: an object
    segmenter (``labels(pixels)`` → instance labels)."""
    from core.codecs import get_codec
    from core.datasets import load_ref
    from core.metrics import psnr, size_metrics
    from core.pipeline import build_encoder
    from core.segmentation.metrics import dice

    rng = np.random.default_rng(seed)
    results: dict[tuple, dict[str, list[float]]] = {}
    for ref in refs:
        image = load_ref(ref)
        if image.pixels.dtype != np.uint8 or image.channels != 1:
            raise ValueError(f"{ref.image_id}: the probe is for 8-bit gray images")
        reference = segmenter.labels(image.pixels) > 0
        for name, setting in [("original", None), *cases]:
            if name == "original":
                recon, factor = image.pixels, float("nan")
            else:
                codec = build_encoder(get_codec(name), "joint", image.channels, image.height, image.width)
                encoded = codec.encode(image.pixels, setting, image.bit_depth)
                recon = codec.decode(encoded)
                factor = size_metrics(len(encoded), image.pixels.shape, image.pixels.dtype)["factor"]
            for sigma in sigmas:
                if name == "original" and sigma == 0:
                    continue
                noisy = recon if sigma == 0 else np.clip(
                    np.rint(recon + rng.normal(0.0, sigma, recon.shape)), 0, 255).astype(np.uint8)
                row = results.setdefault((name, setting, sigma), {"dice": [], "psnr": [], "factor": []})
                row["dice"].append(dice(reference, segmenter.labels(noisy) > 0))
                row["psnr"].append(psnr(image.pixels, noisy, image.bit_depth))
                row["factor"].append(factor)
    return results


def parse_cases(texts) -> list[tuple]:
    """``["CODEC:SETTING", ...]`` → ``[(codec name, setting), ...]`` (the setting through the one parser)."""
    from core.setting_text import parse_setting

    return [(text.split(":")[0], parse_setting(text.split(":", 1)[1])) for text in texts]


def main(argv=None) -> int:
    from core.segmentation.segmenters import object_segmenter_for
    from core.stages import stage_refs

    p = argparse.ArgumentParser(prog="python -m bench.grain_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="epfl_hippocampus_fibsem")
    p.add_argument("--stage", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="CODEC:SETTING")
    p.add_argument("--sigmas", nargs="+", type=float, default=[0.0, 3.0, 5.0, 7.0], help="noise σ, grey levels")
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    segmenter = object_segmenter_for(args.dataset)
    if segmenter is None:
        raise SystemExit(f"no object segmenter for {args.dataset}")
    refs = [r for r in stage_refs(args.stage, splits=("test",)) if r.dataset == args.dataset][: args.limit]
    if not refs:
        raise SystemExit(f"no test images of {args.dataset} in stage {args.stage}")
    cases = parse_cases(args.cases)
    try:
        results = probe(refs, cases, args.sigmas, segmenter, args.seed)
    except ValueError as error:
        raise SystemExit(str(error))
    print(f"{args.dataset}: {len(refs)} test images; Dice of the foreground vs the original's segmentation")
    for (name, setting, sigma), row in results.items():
        factor = "" if name == "original" else f", {np.mean(row['factor']):.1f}×"
        print(f"{name:14s} setting {'-' if setting is None else setting!s:>4}  σ {sigma:3.0f}: "
              f"mean Dice {np.mean(row['dice']):.3f} (min {np.min(row['dice']):.3f}), "
              f"{np.mean(row['psnr']):.2f} dB{factor}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
