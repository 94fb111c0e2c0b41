"""Train a learned codec: ``python -m core.train --arch mean-scale --channels 1 --train DIR ... --out data/weights/NAME``.

Losses (R = estimated rate in bits per pixel, all channels together; images in [0, 1]):

* ``mse``     R + λ · 255² · MSE
* ``msssim``  R + λ · (1 − MS-SSIM)
* ``mix``     R + λ · [α · (1 − MS-SSIM) + (1 − α) · G·L1]  (Zhao et al., arXiv 1511.08861;
  α = 0.84 by default; G·L1 is the absolute error weighted by the normalised Gaussian of the
  largest σ of (0.5, 1, 2, 4, 8), i.e. σ = 8 px, truncated at 4σ and applied as a *valid*
  convolution, then averaged)

MS-SSIM is pytorch_msssim's 5-scale MS-SSIM with data_range 1; for crops with a short side
≤ 160 px the Gaussian window shrinks as in :func:`core.metrics.ms_ssim_window` (same rule as the
benchmark metric).

Training data: folders or files of images (any bit depth, gray or RGB, read with
:func:`core.io.read_image` and divided by MAX = 2**bit_depth − 1); each step draws a batch of
random crops with random horizontal/vertical flips.  The entropy bottleneck's auxiliary loss is
minimised by a separate optimizer (as in CompressAI's example).

Outputs, for ``--out data/weights/NAME``:

* ``NAME.pt``          the model's ``state_dict`` (after ``update(force=True)``), loadable with
  ``torch.load(..., weights_only=True)``; learnable parameters are stored as float16 (half the
  size; they are rounded to float16 *before* the entropy tables are rebuilt, so the tables match
  the weights every loader gets), buffers keep their dtype
* ``NAME.json``        metadata: arch, channels, N, M, bit depth, loss, α, λ, steps (base + this
  run), training data, crop/batch/lr, and validation bpp / PSNR / MS-SSIM measured with the real
  entropy coder (:mod:`core.codecs.bitstream`) on the held-out ``--val`` images
* ``NAME.resume.pt``   optimizer state + step for ``--resume`` (not shipped)

``--init BASE.pt`` starts from another checkpoint (fine-tuning at a new λ); its steps are
recorded as ``base_steps``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core._compat import import_compressai
from core.io import read_image
from core.metrics import ms_ssim_window

import_compressai()
from pytorch_msssim import ms_ssim as _torch_ms_ssim  # noqa: E402

from core.models import ARCHS, build_model  # noqa: E402

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".mrc"}
ZHAO_SIGMAS = (0.5, 1.0, 2.0, 4.0, 8.0)
WARMUP_MSE_LMBDA = 0.0130  # CompressAI's MSE λ of quality 4, for --warmup steps


# ----------------------------------------------------------------------------- losses
def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian of std ``sigma`` px, truncated at 4σ (size 2·ceil(4σ)+1)."""
    radius = int(math.ceil(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g2 = torch.outer(g, g)
    return (g2 / g2.sum()).float()


def gaussian_l1(x: torch.Tensor, y: torch.Tensor, sigma: float = max(ZHAO_SIGMAS)) -> torch.Tensor:
    """Mean of |x − y| filtered by the Gaussian of ``sigma`` (valid convolution, per channel)."""
    diff = (x - y).abs()
    c = diff.shape[1]
    k = gaussian_kernel(sigma).to(diff)[None, None].repeat(c, 1, 1, 1)
    if diff.shape[-1] < k.shape[-1] or diff.shape[-2] < k.shape[-2]:
        raise ValueError(f"G·L1 needs sides ≥ {k.shape[-1]} px, got {tuple(diff.shape[-2:])}")
    return F.conv2d(diff, k, groups=c).mean()


def ms_ssim_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """5-scale MS-SSIM of images in [0, 1] (window shrunk for short sides ≤ 160 px)."""
    win = ms_ssim_window(min(x.shape[-2:]))
    if win is None:
        raise ValueError(f"MS-SSIM needs a short side ≥ 33 px, got {tuple(x.shape[-2:])}")
    return _torch_ms_ssim(x, y, data_range=1.0, size_average=True, win_size=win, win_sigma=1.5 * win / 11)


def distortion(kind: str, x: torch.Tensor, x_hat: torch.Tensor, alpha: float = 0.84) -> torch.Tensor:
    """The λ-weighted distortion term of loss ``kind`` (see the module docstring)."""
    if kind == "mse":
        return 255.0 ** 2 * F.mse_loss(x_hat, x)
    if kind == "msssim":
        return 1.0 - ms_ssim_torch(x_hat, x)
    if kind == "mix":
        return alpha * (1.0 - ms_ssim_torch(x_hat, x)) + (1.0 - alpha) * gaussian_l1(x_hat, x)
    raise ValueError(f"unknown loss {kind!r} (mse, msssim, mix)")


def rate_bpp(likelihoods: dict, num_pixels: int) -> torch.Tensor:
    """Estimated rate in bits per pixel: −Σ log2 p over all latents / (B · H · W)."""
    return sum(torch.log(l).sum() for l in likelihoods.values()) / (-math.log(2) * num_pixels)


def rd_loss(model, x: torch.Tensor, kind: str, lmbda: float, alpha: float = 0.84) -> dict:
    """Forward pass; returns ``loss`` = bpp + λ · distortion, ``bpp`` and ``dist`` (tensors)."""
    out = model(x)
    x_hat = out["x_hat"]  # not clamped: a clamp would zero the gradient of out-of-range pixels
    n, _, h, w = x.shape
    bpp = rate_bpp(out["likelihoods"], n * h * w)
    dist = distortion(kind, x, x_hat, alpha)
    return {"loss": bpp + lmbda * dist, "bpp": bpp, "dist": dist}


# ----------------------------------------------------------------------------- data
def list_images(paths: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such training image or folder: {p}")
    if not files:
        raise FileNotFoundError(f"no images in {paths}")
    return files


def load_planes(files: list[Path], channels: int) -> list[torch.Tensor]:
    """Read images as float32 tensors (channels, H, W) in [0, 1] (divided by 2**bit_depth − 1)."""
    out = []
    for f in files:
        img = read_image(f)
        arr = img.pixels.astype(np.float32) / img.max_value
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if arr.shape[0] != channels:
            raise ValueError(f"{f}: {arr.shape[0]}-channel image for a {channels}-channel model")
        out.append(torch.from_numpy(np.ascontiguousarray(arr)))
    return out


class CropSampler:
    """Random ``crop``×``crop`` patches with random flips from in-memory images (seeded)."""

    def __init__(self, images: list[torch.Tensor], crop: int, seed: int):
        small = [tuple(im.shape[1:]) for im in images if min(im.shape[1:]) < crop]
        if small:
            raise ValueError(f"crop {crop} px is larger than images of size {small[:3]}")
        self.images, self.crop = images, crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        out = []
        for _ in range(size):
            im = self.images[self.rng.integers(len(self.images))]
            _, h, w = im.shape
            y, x = self.rng.integers(h - self.crop + 1), self.rng.integers(w - self.crop + 1)
            patch = im[:, y:y + self.crop, x:x + self.crop]
            if self.rng.random() < 0.5:
                patch = patch.flip(-1)
            if self.rng.random() < 0.5:
                patch = patch.flip(-2)
            out.append(patch)
        return torch.stack(out)


# ----------------------------------------------------------------------------- training
def make_optimizers(model, lr: float, aux_lr: float = 1e-3):
    """Main Adam over every parameter except the entropy bottleneck quantiles; aux Adam over those."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return torch.optim.Adam(main, lr=lr), torch.optim.Adam(aux, lr=aux_lr)


def train_steps(model, sampler: CropSampler, optimizer, aux_optimizer, steps: int, *, kind: str, lmbda: float,
                alpha: float = 0.84, batch: int = 8, device: str = "cpu", clip: float = 1.0,
                progress: bool = True, start: int = 0, on_step=None, warmup: int = 0) -> list[float]:
    """Run ``steps`` optimisation steps; returns the loss of every step.

    The first ``warmup`` steps (counted from step 0, so a resumed run skips them) use the
    ``mse`` loss with λ = :data:`WARMUP_MSE_LMBDA`: from a random start MS-SSIM can be exactly 0
    (pytorch_msssim clips negative contrast terms), which has zero gradient.
    """
    from tqdm import tqdm

    model.train()
    losses = []
    bar = tqdm(range(start, start + steps), initial=0, total=steps, disable=not progress,
               dynamic_ncols=True, mininterval=5.0, file=sys.stderr)
    for step in bar:
        x = sampler.batch(batch).to(device)
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        out = rd_loss(model, x, kind, lmbda, alpha) if step >= warmup else rd_loss(model, x, "mse", WARMUP_MSE_LMBDA)
        out["loss"].backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        aux = model.aux_loss()
        aux.backward()
        aux_optimizer.step()
        losses.append(out["loss"].item())
        bar.set_postfix(loss=f"{out['loss'].item():.4f}", bpp=f"{out['bpp'].item():.3f}",
                        dist=f"{out['dist'].item():.4f}", aux=f"{aux.item():.1f}")
        if on_step is not None:
            on_step(step + 1)
    return losses


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def validate(weights: Path, meta: dict, files: list[Path]) -> dict:
    """bpp / PSNR (dB) / MS-SSIM with the real entropy coder on ``files``: means and per image."""
    from core.codecs.learned import LearnedModel
    from core.io import read_image as _read
    from core.metrics import bits_per_pixel, ms_ssim, psnr

    lm = LearnedModel(weights, meta)
    rows = []
    for f in files:
        img = _read(f)
        t0 = time.perf_counter()
        data = lm.encode(img.pixels, img.bit_depth)
        t1 = time.perf_counter()
        rec = lm.decode(data)
        t2 = time.perf_counter()
        rows.append({"image": f.name, "bytes": len(data), "bpp": bits_per_pixel(len(data), *img.pixels.shape[:2]),
                     "psnr": psnr(img.pixels, rec, img.bit_depth), "ms_ssim": ms_ssim(img.pixels, rec, img.bit_depth),
                     "encode_s": t1 - t0, "decode_s": t2 - t1})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s")}
    return {"coder": "real rANS bitstream (core.codecs.bitstream), header included", **mean, "images": rows}


def stem_path(out: Path, suffix: str) -> Path:
    """``out`` + ``suffix``, keeping dots in the stem (``em-l2.4`` → ``em-l2.4.pt``, not ``em-l2.pt``)."""
    return out.with_name(out.name + suffix)


def save_checkpoint(model, out: Path, half: bool = True) -> Path:
    """Write ``out.pt``: the state_dict after ``update(force=True)``; returns its path.

    With ``half`` the learnable parameters are first rounded to float16 in place and stored as
    float16 (loading copies them back into the float32 model exactly); the entropy models'
    CDF tables are rebuilt after the rounding, so encoder and decoder agree with the file.
    """
    model.eval()
    params = dict(model.named_parameters())
    if half:
        with torch.no_grad():
            for p in params.values():
                p.copy_(p.half().float())
    model.update(force=True)
    state = {k: (v.half() if half and k in params else v) for k, v in model.state_dict().items()}
    path = stem_path(out, ".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def load_state(model, path: Path) -> None:
    """Load a state_dict saved by :func:`save_checkpoint` (entropy tables resized as needed)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=ARCHS, default="mean-scale")
    p.add_argument("--channels", type=int, choices=(1, 3), required=True)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--M", type=int, default=96)
    p.add_argument("--loss", choices=("mse", "msssim", "mix"), default="msssim")
    p.add_argument("--lmbda", type=float, required=True, help="λ of the rate-distortion loss")
    p.add_argument("--alpha", type=float, default=0.84, help="α of the mix loss (Zhao et al.: 0.84)")
    p.add_argument("--train", nargs="+", required=True, help="training images or folders")
    p.add_argument("--val", nargs="*", default=[], help="held-out validation images or folders")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--warmup", type=int, default=0, help="first steps trained with the mse loss (see train_steps)")
    p.add_argument("--init", type=Path, help="start from this checkpoint .pt (fine-tuning)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.resume.pt")
    p.add_argument("--save-every", type=int, default=250, help="steps between resume snapshots")
    p.add_argument("--out", type=Path, required=True, help="output stem (writes .pt, .json, .resume.pt)")
    p.add_argument("--codec", default=None, help="codec name the checkpoint belongs to (registry)")
    p.add_argument("--quality", type=int, default=None, help="rate point index within the codec (1 = fewest bytes)")
    p.add_argument("--validate-only", action="store_true", help="only (re)measure validation for OUT")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = args.out
    meta_path = stem_path(out, ".json")
    if args.validate_only:
        meta = json.loads(meta_path.read_text())
        meta["validation"] = validate(stem_path(out, ".pt"), meta, list_images(args.val))
        meta_path.write_text(json.dumps(meta, indent=1))
        return meta

    train_files = list_images(args.train)
    val_files = list_images(args.val) if args.val else []
    overlap = {f.resolve() for f in train_files} & {f.resolve() for f in val_files}
    if overlap:
        raise ValueError(f"validation images are also training images: {sorted(map(str, overlap))[:3]}")
    model = build_model(args.arch, args.channels, args.N, args.M).to(args.device)
    base = None
    if args.init:
        load_state(model, args.init)
        base_meta_path = args.init.with_name(args.init.stem + ".json")
        base_meta = json.loads(base_meta_path.read_text()) if base_meta_path.exists() else {}
        base = {"checkpoint": args.init.name, "sha256": file_sha256(args.init),
                "steps": base_meta.get("steps", {}).get("total"), "loss": base_meta.get("loss"),
                "lmbda": base_meta.get("lmbda")}
    optimizer, aux_optimizer = make_optimizers(model, args.lr)
    resume_path = stem_path(out, ".resume.pt")
    start = 0
    if args.resume and resume_path.exists():
        state = torch.load(resume_path, map_location=args.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        start = int(state["step"])
        print(f"resumed {resume_path} at step {start}", file=sys.stderr)
    sampler = CropSampler(load_planes(train_files, args.channels), args.crop, args.seed + start)

    def snapshot(step: int) -> None:
        if step % args.save_every == 0 or step == args.steps:
            resume_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "aux_optimizer": aux_optimizer.state_dict(), "step": step}, resume_path)

    t0 = time.time()
    losses = train_steps(model, sampler, optimizer, aux_optimizer, max(0, args.steps - start), kind=args.loss,
                         lmbda=args.lmbda, alpha=args.alpha, batch=args.batch, device=args.device,
                         progress=not args.no_progress, start=start, on_step=snapshot,
                         warmup=args.warmup)
    seconds = time.time() - t0
    model = model.cpu()
    weights = save_checkpoint(model, out)
    base_steps = (base or {}).get("steps") or 0
    meta = {
        "model_id": out.name,
        "codec": args.codec,
        "quality": args.quality,
        "arch": args.arch, "channels": args.channels, "N": args.N, "M": args.M,
        "bit_depth": "any (trained on the listed images, each divided by 2**bit_depth - 1)",
        "train_bit_depths": sorted({read_image(f).bit_depth for f in train_files[:50]}),
        "loss": args.loss, "alpha": args.alpha if args.loss == "mix" else None, "lmbda": args.lmbda,
        "loss_formula": {"mse": "bpp + lmbda*255^2*MSE", "msssim": "bpp + lmbda*(1-MS-SSIM)",
                         "mix": "bpp + lmbda*(alpha*(1-MS-SSIM) + (1-alpha)*G_sigma8*L1)"}[args.loss],
        "steps": {"base": base_steps, "this_run": args.steps, "total": base_steps + args.steps},
        "base": base,
        "warmup_mse_steps": args.warmup, "warmup_mse_lmbda": WARMUP_MSE_LMBDA if args.warmup else None,
        "batch": args.batch, "crop": args.crop, "lr": args.lr, "seed": args.seed, "device": args.device,
        "threads": args.threads, "train_seconds_this_session": round(seconds, 1),
        "final_train_loss_mean_last50": float(np.mean(losses[-50:])) if losses else None,
        "training_data": [str(f) for f in train_files],
        "validation_data": [str(f) for f in val_files],
        "weights_sha256": file_sha256(weights),
        "torch": torch.__version__,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    if val_files:
        meta["validation"] = validate(weights, meta, val_files)
        meta_path.write_text(json.dumps(meta, indent=1))
        v = meta["validation"]
        print(f"validation: {v['bpp']:.3f} bpp, {v['psnr']:.2f} dB, MS-SSIM {v['ms_ssim']:.4f}", file=sys.stderr)
    return meta


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
