"""How much quality can a latent of M channels per 16×16 block carry at all? (issue #11: the learned codecs'
quality stops rising with rate)

    python -m bench.latent_ceiling                               # EPFL + ISBI, the shipped gray checkpoint
    python -m bench.latent_ceiling --datasets monuseg --codec learned-msssim --images 2
    python -m bench.latent_ceiling --codec learned-mse --M 224 --weights DIR   # a candidate checkpoint folder

Two ceilings on catalog **test** images, both independent of the entropy coder:

* **learned**: the shipped variable-rate checkpoint of ``--codec`` for the images' channel count at its top gain
  level, run (a) through the model's forward pass in eval mode (latents rounded around the predicted means; no
  entropy coding) and (b) with the latent not quantised at all, ``g_s(g_a(x) · gain · inverse gain)``: the transforms' own ceiling, which no rate
  can exceed.
* **linear**: the best linear code with k values per 16×16 block (PCA of the blocks of up to 6 ``train``
  images, applied to the test blocks; for 3 channels the 16×16×3 block), for k = the checkpoint's M and the other
  ``--M`` values (k ≥ the block's size is exact: "lossless").  A hyperprior codec with 4 stride-2 stages has M latent values per 16×16 block,
  so PCA with k = M shows what a transform of that width can carry when it must reproduce everything — including
  the sensor noise of EM, which no model can predict.

Printed per dataset: mean PSNR (dB) over ``--images`` test crops of ``--crop`` px (MAX = 1 on [0, 1] images).
"""
from __future__ import annotations

import argparse

import numpy as np

BLOCK = 16


def blocks(pixels: np.ndarray, size: int = BLOCK) -> np.ndarray:
    """(n, size·size·channels) float64 blocks of an (H, W[, C]) image in [0, 1] (edges that do not fill a block
    are dropped)."""
    a = pixels if pixels.ndim == 3 else pixels[..., None]
    h, w, c = (a.shape[0] // size) * size, (a.shape[1] // size) * size, a.shape[2]
    return (a[:h, :w].reshape(h // size, size, w // size, size, c).transpose(0, 2, 1, 3, 4)
            .reshape(-1, size * size * c).astype(np.float64))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two arrays in [0, 1]."""
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def linear_ceiling(train_blocks: np.ndarray, test_blocks: np.ndarray, ks) -> dict[int, float]:
    """k → PSNR (dB) of the test blocks projected on the first k principal components of the train blocks."""
    mean = train_blocks.mean(0)
    _, _, vt = np.linalg.svd(train_blocks - mean, full_matrices=False)
    centred = test_blocks - mean
    return {k: psnr(test_blocks, centred @ vt[:k].T @ vt[:k] + mean) for k in ks}


def learned_ceiling(model, x: np.ndarray) -> dict[str, float]:
    """{'top_rate': PSNR of the eval-mode forward pass (rounded latents) at the top level, 'unquantised': PSNR without
    quantisation} of one (H, W[, C]) image in [0, 1] (H, W multiples of 64)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x if x.ndim == 3 else x[..., None], np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        top = model.levels - 1
        rate = model._rate_tensor(top, 1)
        y = model.g_a(t)
        ceiling = model.g_s(y * model._gain(model.log_gain, rate) * model._gain(model.log_inv_gain, rate))
        coded = model(t, top)["x_hat"]
    to_np = lambda v: v.clamp(0, 1)[0].permute(1, 2, 0).numpy().squeeze()  # noqa: E731
    return {"top_rate": psnr(x, to_np(coded)), "unquantised": psnr(x, to_np(ceiling))}


def main(argv=None) -> int:
    import torch

    from core.catalog import split_refs
    from core.codecs.learned import load_codecs
    from core.datasets import load_ref

    p = argparse.ArgumentParser(prog="python -m bench.latent_ceiling", description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="epfl_hippocampus_fibsem,isbi2012_em")
    p.add_argument("--codec", default="learned-msssim")
    p.add_argument("--weights", default=None, help="checkpoint folder read like data/weights (default: the shipped)")
    p.add_argument("--M", default="96,128,192,224", help="latent channels per 16×16 block for the linear ceiling")
    p.add_argument("--images", type=int, default=3, help="test images per dataset")
    p.add_argument("--crop", type=int, default=512, help="crop side (px, multiple of 64) from each image's corner")
    p.add_argument("--data-root", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    codec = (load_codecs(a.weights) if a.weights else load_codecs())[a.codec]
    print(f"{'dataset':26s} {'model':20s} {'top rate':>9s} {'unquantised':>12s}   linear code, PSNR by M (dB)")
    for dataset in a.datasets.split(","):
        test = [load_ref(r).pixels for r in split_refs(dataset, ("test",), a.data_root)[:a.images]]
        train = [load_ref(r).pixels for r in split_refs(dataset, ("train",), a.data_root)[:6]]
        scale = lambda px: px.astype(np.float64) / np.iinfo(px.dtype).max  # noqa: E731
        crops = [scale(px)[:a.crop, :a.crop] for px in test]
        crops = [c[:c.shape[0] // 64 * 64, :c.shape[1] // 64 * 64] for c in crops]
        channels = 1 if crops[0].ndim == 2 else crops[0].shape[2]
        model = next((m for m in codec.models() if m.channels == channels and getattr(m, "levels", None)), None)
        if model is None:
            raise SystemExit(f"{a.codec} has no variable-rate {channels}-channel checkpoint")
        learned = [learned_ceiling(model.model, c) for c in crops]
        ms = sorted({int(model.meta["M"]), *(int(v) for v in a.M.split(","))})
        dim = BLOCK * BLOCK * channels
        ks = [m for m in ms if m < dim]
        train_blocks = np.concatenate([blocks(scale(px)) for px in train])
        linear = [linear_ceiling(train_blocks, blocks(c), ks) for c in crops]
        lin = "  ".join(f"M={m}: " + (f"{np.mean([r[m] for r in linear]):.2f}" if m < dim else "lossless") for m in ms)
        print(f"{dataset:26s} {model.weights.name + ' M=' + str(model.meta['M']):20s} "
              f"{np.mean([r['top_rate'] for r in learned]):9.2f} {np.mean([r['unquantised'] for r in learned]):12.2f}   {lin}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
