"""Would grain shaped like the coding residual serve the EM segmenters better than the white grain that ships?

    python -m bench.grain_shape [--split val] [--cases learned-mse:3 learned-mse:5 ...] [--datasets ...]

:mod:`core.codecs.grain` restores white Gaussian noise of the residual's RMS.  AV1's film grain models the grain
more closely: its spectrum (an autoregressive filter) and its strength as a function of intensity (a piecewise
linear scaling).  Before building either into the stream, this bench asks whether they would change the verdicts
it exists for.  For every stage-2 image of the split, each (codec, setting) of ``--cases`` is coded once; the
residual ``original − reconstruction`` gives, as an encoder would send them,

* ``white``: σ = the residual's RMS (the shipped model);
* ``shaped``: the same σ with the residual's power spectrum (the mean periodogram of its 16 × 16 blocks, i.e.
  every correlation up to 8 px; noise coloured by filtering white noise in the Fourier domain);
* ``white+intensity`` / ``shaped+intensity``: σ as a piecewise-linear function of the reconstruction's grey level
  (8 quantile bins), as AV1's scaling function.

The same white draw (one seed) underlies every variant, so only the shape differs.  Printed per (dataset, codec,
setting, variant): mean Dice of the reconstruction's segmentation against the original's (the runner's
``seg_dice``, :func:`core.segmentation.evaluator_for`), its minimum, the mean PSNR (dB) and the compression factor of
the inner stream (raw / coded bytes; the shaped models would add a few dozen bytes).  These are oracle shapes
measured on the very residual they restore: if they do not beat white noise, no transmitted approximation will.
"""
from __future__ import annotations

import argparse

import numpy as np

DEFAULT_CASES = ("learned-mse:3", "learned-mse:5", "learned-mse:7", "jpeg2000:40", "avif:25")
VARIANTS = ("none", "white", "shaped", "white+intensity", "shaped+intensity")
BLOCK = 16   # px: the periodogram's block, so the spectrum holds correlations up to BLOCK / 2 px
BINS = 8     # grey-level bins of the intensity-dependent σ
SEED = 1234


def residual_spectrum(residual: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """(block, block) mean periodogram of the residual's ``block``² tiles, each tile's mean removed (its DC taken
    from the four nearest frequencies); power per frequency, grey levels²."""
    h, w = (residual.shape[0] // block) * block, (residual.shape[1] // block) * block
    tiles = residual[:h, :w].reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(-1, block, block)
    tiles = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    power = np.mean(np.abs(np.fft.fft2(tiles)) ** 2, axis=0) / (block * block)
    power[0, 0] = np.mean(power[[0, 0, 1, -1], [1, -1, 0, 0]])
    return power


def shape_noise(white: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
    """``white`` filtered to ``spectrum``'s shape (nearest spectrum bin per image frequency), unit variance."""
    fy = np.round(np.fft.fftfreq(white.shape[0]) * spectrum.shape[0]).astype(int) % spectrum.shape[0]
    fx = np.round(np.fft.fftfreq(white.shape[1]) * spectrum.shape[1]).astype(int) % spectrum.shape[1]
    shaped = np.real(np.fft.ifft2(np.fft.fft2(white) * np.sqrt(spectrum[fy[:, None], fx[None, :]])))
    return shaped / shaped.std()


def intensity_sigma(reconstruction: np.ndarray, residual: np.ndarray, bins: int = BINS) -> np.ndarray:
    """σ per pixel: the residual's RMS in each of ``bins`` grey-level quantile bins of the reconstruction,
    interpolated linearly between the bins' mean grey levels."""
    edges = np.quantile(reconstruction, np.linspace(0, 1, bins + 1))
    index = np.clip(np.searchsorted(edges, reconstruction, side="right") - 1, 0, bins - 1)
    used = [k for k in range(bins) if np.any(index == k)]
    centres = np.array([reconstruction[index == k].mean() for k in used])
    sigmas = np.array([np.sqrt(np.mean(residual[index == k] ** 2)) for k in used])
    return np.interp(reconstruction, centres, sigmas)


def variants(original: np.ndarray, reconstruction: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """{variant: reconstruction + grain}, float64 (before rounding); one white draw underlies every variant."""
    from core.codecs.grain import grain_sigma

    recon = reconstruction.astype(np.float64)
    residual = original.astype(np.float64) - recon
    rms = float(grain_sigma(original, reconstruction)[0])  # the shipped codec's σ (one channel: stage 2 is gray)
    white = np.random.RandomState(seed).standard_normal(recon.shape)
    shaped = shape_noise(white, residual_spectrum(residual))
    by_level = intensity_sigma(recon, residual)
    return {"none": recon, "white": recon + rms * white, "shaped": recon + rms * shaped,
            "white+intensity": recon + by_level * white, "shaped+intensity": recon + by_level * shaped}


def main(argv=None) -> int:
    from functools import lru_cache

    from bench.grain_probe import parse_cases
    from core.codecs import get_codec
    from core.datasets import load_ref
    from core.metrics import psnr, size_metrics
    from core.segmentation import evaluator_for
    from core.stages import stage_refs

    p = argparse.ArgumentParser(prog="python -m bench.grain_shape", description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="val")
    p.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), help="CODEC:SETTING")
    p.add_argument("--datasets", nargs="+", default=None, help="only these stage-2 datasets")
    args = p.parse_args(argv)

    refs = [r for r in stage_refs(2, splits=(args.split,)) if args.datasets is None or r.dataset in args.datasets]
    evaluator = lru_cache(maxsize=None)(lambda d: evaluator_for(d, contours=False) or evaluator_for(d))
    results: dict[tuple, dict[str, list[float]]] = {}
    for ref in refs:
        image = load_ref(ref)
        if image.channels != 1:
            raise ValueError(f"{ref.image_id}: stage 2 is gray")
        judge = evaluator(ref.dataset)
        state = judge.prepare(image, ref)
        top = (1 << image.bit_depth) - 1
        for name, setting in parse_cases(args.cases):
            payload, recon = get_codec(name).encode_with_reconstruction(image.pixels, setting, image.bit_depth)
            factor = size_metrics(len(payload), image.pixels.shape, image.pixels.dtype)["factor"]
            for variant, pixels in variants(image.pixels, recon).items():
                out = np.clip(np.rint(pixels), 0, top).astype(image.pixels.dtype)
                row = results.setdefault((ref.dataset, name, setting, variant), {"dice": [], "psnr": [], "factor": []})
                row["dice"].append(judge.compare(state, out)["seg_dice"])
                row["psnr"].append(psnr(image.pixels, out, image.bit_depth))
                row["factor"].append(factor)
    print(f"stage 2, {args.split} split: {len(refs)} images; grain of the residual's RMS, shaped as named (seed {SEED})")
    for (dataset, name, setting, variant), row in results.items():
        print(f"{dataset:24s} {name:12s} {setting!s:>4}  {variant:16s} Dice vs original {np.mean(row['dice']):.3f} "
              f"(min {np.min(row['dice']):.3f}), {np.mean(row['psnr']):.2f} dB, {np.mean(row['factor']):.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
