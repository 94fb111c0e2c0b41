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
  the weights every loader gets), buffers keep their dtype; ``--int8 h_s`` stores a module's
  convolution weights in 8 bits (:mod:`core.models.checkpoint`; read with its ``read_state_dict``)
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
from core.io import SUPPORTED_SUFFIXES, read_image
from core.metrics import ms_ssim_window

import_compressai()
from pytorch_msssim import ms_ssim as _torch_ms_ssim  # noqa: E402

from core.models import ARCHS, build_model, is_variable_rate  # noqa: E402
from core.models.checkpoint import INT8, INT8_SCALE, int8_names, pack_int8, read_state_dict, unpack_int8  # noqa: E402
from core.models.variable_rate import lambda_ladder  # noqa: E402
from core.models.widen import load_widened  # noqa: E402

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


def gaussian_l1(x: torch.Tensor, y: torch.Tensor, sigma: float = max(ZHAO_SIGMAS), per_image: bool = False) -> torch.Tensor:
    """Mean of |x − y| filtered by the Gaussian of ``sigma`` (valid convolution, per channel); (B,) if ``per_image``."""
    diff = (x - y).abs()
    c = diff.shape[1]
    k = gaussian_kernel(sigma).to(diff)[None, None].repeat(c, 1, 1, 1)
    if diff.shape[-1] < k.shape[-1] or diff.shape[-2] < k.shape[-2]:
        raise ValueError(f"G·L1 needs sides ≥ {k.shape[-1]} px, got {tuple(diff.shape[-2:])}")
    filtered = F.conv2d(diff, k, groups=c)
    return filtered.flatten(1).mean(1) if per_image else filtered.mean()


def ms_ssim_torch(x: torch.Tensor, y: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """5-scale MS-SSIM of images in [0, 1] (window shrunk for short sides ≤ 160 px); (B,) if ``per_image``."""
    win = ms_ssim_window(min(x.shape[-2:]))
    if win is None:
        raise ValueError(f"MS-SSIM needs a short side ≥ 33 px, got {tuple(x.shape[-2:])}")
    return _torch_ms_ssim(x, y, data_range=1.0, size_average=not per_image, win_size=win,
                          win_sigma=1.5 * win / 11)


def distortion(kind: str, x: torch.Tensor, x_hat: torch.Tensor, alpha: float = 0.84,
               per_image: bool = False) -> torch.Tensor:
    """The λ-weighted distortion term of loss ``kind`` (see the module docstring): a scalar, or (B,)."""
    def mean(t):
        return t.flatten(1).mean(1) if per_image else t.mean()

    if kind == "mse":
        return 255.0 ** 2 * mean((x_hat - x) ** 2)
    if kind == "msssim":
        return 1.0 - ms_ssim_torch(x_hat, x, per_image)
    if kind == "mix":
        return alpha * (1.0 - ms_ssim_torch(x_hat, x, per_image)) + (1.0 - alpha) * gaussian_l1(x_hat, x, per_image=per_image)
    raise ValueError(f"unknown loss {kind!r} (mse, msssim, mix)")


def rate_bpp(likelihoods: dict, num_pixels: int) -> torch.Tensor:
    """Estimated rate in bits per pixel: −Σ log2 p over all latents / (B · H · W)."""
    return sum(torch.log(l).sum() for l in likelihoods.values()) / (-math.log(2) * num_pixels)


def rate_bpp_per_image(likelihoods: dict, pixels_per_image: int) -> torch.Tensor:
    """Estimated rate of each image of the batch, bits per pixel, shape (B,)."""
    return sum(torch.log(l).flatten(1).sum(1) for l in likelihoods.values()) / (-math.log(2) * pixels_per_image)


def rd_loss(model, x: torch.Tensor, kind: str, lmbda, alpha: float = 0.84) -> dict:
    """Forward pass; returns ``loss`` = bpp + λ · distortion, ``bpp`` and ``dist`` (tensors).

    For a variable-rate model ``lmbda`` is its λ ladder: every image of the batch gets a random
    gain level i and the loss Σ_b w_i·(bpp_b + λ_i·D_b) / B with w_i = sqrt(λ_0 / λ_i), which keeps
    the high-λ images from swamping the shared transforms' gradients (each level's optimum is
    unchanged by its constant weight).
    """
    n, _, h, w = x.shape
    if getattr(model, "levels", None):
        lambdas = torch.as_tensor(lmbda, dtype=torch.float32, device=x.device)
        if lambdas.ndim == 0:  # one λ for every level (the MSE warm-up)
            lambdas = lambdas.repeat(model.levels)
        level = torch.randint(0, model.levels, (n,))  # the CPU generator: the same draws on any device
        out = model(x, level.float())
        bpp = rate_bpp_per_image(out["likelihoods"], h * w)
        dist = distortion(kind, x, out["x_hat"], alpha, per_image=True)
        lam = lambdas[level.to(x.device)]
        weight = torch.sqrt(lambdas[0] / lam)
        return {"loss": (weight * (bpp + lam * dist)).mean(), "bpp": bpp.mean(), "dist": dist.mean()}
    out = model(x)
    x_hat = out["x_hat"]  # not clamped: a clamp would zero the gradient of out-of-range pixels
    bpp = rate_bpp(out["likelihoods"], n * h * w)
    dist = distortion(kind, x, x_hat, alpha)
    return {"loss": bpp + lmbda * dist, "bpp": bpp, "dist": dist}


# ----------------------------------------------------------------------------- data
def list_images(paths: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such training image or folder: {p}")
    if not files:
        raise FileNotFoundError(f"no images in {paths}")
    return files


def read_source(source):
    """A :class:`~core.io.BioImage` from a file path or a catalog :class:`~core.catalog.ImageRef`."""
    if hasattr(source, "image_id"):
        from core.datasets import load_ref

        return load_ref(source)
    return read_image(source)


def source_name(source) -> str:
    """The catalog id of an ImageRef (``dataset/image_id``), or the path of a file."""
    if hasattr(source, "image_id"):
        from core.catalog import catalog_id

        return catalog_id(source)
    return str(source)


def load_planes(files: list, channels: int) -> list[torch.Tensor]:
    """Read images (paths or ImageRefs) as float32 tensors (channels, H, W) in [0, 1] (÷ 2**bit_depth − 1)."""
    out = []
    for f in files:
        img = read_source(f)
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
def rate_ratio_loss(model, x: torch.Tensor) -> dict:
    """``--entropy-only``: the mean over the batch of bits(context model) / bits(hyperprior alone).

    Every image gets a random gain level; the model's transforms, hyperprior and gains are frozen, so only
    the context model's parameters move and the reconstruction never changes.  Dividing by each image's
    hyperprior bits makes every level count by its *relative* saving (what a BD-rate measures), where plain
    bits would let the top levels' many bits drown the low ones.  At the start (a context model is its
    hyperprior at construction) the loss is 1; ``bpp`` is the context model's estimate, ``dist`` here the
    hyperprior's.
    """
    n, _, h, w = x.shape
    level = torch.randint(0, model.levels, (n,))
    out = model(x, level.float(), synthesis=False)
    bpp = rate_bpp_per_image(out["likelihoods"], h * w)
    hyper_bpp = rate_bpp_per_image(out["hyper_likelihoods"], h * w)
    return {"loss": (bpp / hyper_bpp).mean(), "bpp": bpp.mean(), "dist": hyper_bpp.mean()}


def freeze_all_but_context(model) -> list[str]:
    """Freeze every parameter of a ``gained-checkerboard`` model except its context model's; returns the
    names left trainable."""
    names = set(model.context_parameter_names())
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    return sorted(names)


def make_optimizers(model, lr: float, aux_lr: float = 1e-3):
    """Main Adam over every trainable parameter except the entropy bottleneck quantiles; aux Adam over those
    (None when they are frozen, ``--entropy-only``)."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return torch.optim.Adam(main, lr=lr), (torch.optim.Adam(aux, lr=aux_lr) if aux else None)


def train_steps(model, sampler: CropSampler, optimizer, aux_optimizer, steps: int, *, kind: str, lmbda: float,
                alpha: float = 0.84, batch: int = 8, device: str = "cpu", clip: float = 1.0,
                progress: bool = True, start: int = 0, on_step=None, warmup: int = 0,
                should_stop=None, entropy_only: bool = False) -> list[float]:
    """Run ``steps`` optimisation steps (fewer when ``should_stop()`` turns true); returns each step's loss.

    ``entropy_only``: the loss is :func:`rate_ratio_loss` (a context model trained on the rate alone).

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
        if entropy_only:
            out = rate_ratio_loss(model, x)
        elif step >= warmup:
            out = rd_loss(model, x, kind, lmbda, alpha)
        else:
            out = rd_loss(model, x, "mse", WARMUP_MSE_LMBDA)
        out["loss"].backward()
        if clip:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        optimizer.step()
        aux = torch.zeros(())
        if aux_optimizer is not None:
            aux_optimizer.zero_grad()
            aux = model.aux_loss()
            aux.backward()
            aux_optimizer.step()
        losses.append(out["loss"].item())
        bar.set_postfix(loss=f"{out['loss'].item():.4f}", bpp=f"{out['bpp'].item():.3f}",
                        dist=f"{out['dist'].item():.4f}", aux=f"{aux.item():.1f}")
        if on_step is not None:
            on_step(step + 1)
        if should_stop is not None and should_stop():
            break
    return losses


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def validate(weights: Path, meta: dict, sources: list) -> dict:
    """bpp / PSNR (dB) / MS-SSIM with the real entropy coder on ``sources`` (paths or ImageRefs).

    A fixed-rate checkpoint is measured once; a variable-rate one at every integer rate point of
    its codec setting (:data:`core.codecs.learned.VR_SETTINGS`), so the JSON holds its whole curve.
    """
    from core.codecs.learned import LearnedModel, vr_settings
    from core.metrics import bits_per_pixel, ms_ssim, psnr

    lm = LearnedModel(weights, meta)
    images = [(source_name(f), read_source(f)) for f in sources]

    def measure(setting) -> dict:
        rows = []
        for name, img in images:
            t0 = time.perf_counter()
            data = lm.encode(img.pixels, img.bit_depth, setting)
            t1 = time.perf_counter()
            rec = lm.decode(data)
            t2 = time.perf_counter()
            rows.append({"image": name, "bytes": len(data), "bpp": bits_per_pixel(len(data), *img.pixels.shape[:2]),
                         "psnr": psnr(img.pixels, rec, img.bit_depth),
                         "ms_ssim": ms_ssim(img.pixels, rec, img.bit_depth), "encode_s": t1 - t0, "decode_s": t2 - t1})
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("bpp", "psnr", "ms_ssim", "encode_s", "decode_s")}
        return {**mean, "images": rows}

    coder = "real rANS bitstream (core.codecs.bitstream), header included"
    if lm.variable_rate:
        return {"coder": coder, "settings": [{"setting": q, **measure(q)} for q in vr_settings(lm.levels)]}
    return {"coder": coder, **measure(None)}


def stem_path(out: Path, suffix: str) -> Path:
    """``out`` + ``suffix``, keeping dots in the stem (``em-l2.4`` → ``em-l2.4.pt``, not ``em-l2.pt``)."""
    return out.with_name(out.name + suffix)


def storage_note(int8: tuple[str, ...] = ()) -> str:
    """What a checkpoint's JSON says about how its weights are stored (``weights_storage``)."""
    note = "learnable parameters float16, buffers (entropy tables) as trained"
    if int8:
        note += (f"; convolution weights of {', '.join(int8)} int8 per slice along dim 0 with float32 scales "
                 "(core.models.checkpoint)")
    return note


def save_checkpoint(model, out: Path, half: bool = True, int8: tuple[str, ...] = ()) -> Path:
    """Write ``out.pt``: the state_dict after ``update(force=True)``; returns its path.

    With ``half`` the learnable parameters are first rounded to float16 in place and stored as
    float16 (loading copies them back into the float32 model exactly); the entropy models'
    CDF tables are rebuilt after the rounding, so encoder and decoder agree with the file.
    ``int8`` names modules (e.g. ``("h_s",)``) whose convolution weights are stored in 8 bits
    (:mod:`core.models.checkpoint`); they too are set in place to what a loader reads back.
    """
    model.eval()
    params = dict(model.named_parameters())
    packed = {}
    with torch.no_grad():
        if half:
            for p in params.values():
                p.copy_(p.half().float())
        if int8:
            packed = pack_int8({k: p.detach() for k, p in params.items()}, tuple(int8))
            for k, v in unpack_int8(packed).items():
                params[k].copy_(v)
    model.update(force=True)
    state = {k: (v.half() if half and k in params else v) for k, v in model.state_dict().items()}
    for k in int8_names(state, tuple(int8)):
        del state[k]
        state[k + INT8], state[k + INT8_SCALE] = packed[k + INT8], packed[k + INT8_SCALE]
    path = stem_path(out, ".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


GAIN_PARAMETERS = frozenset({"log_gain", "log_inv_gain", "log_hyper_gain", "log_hyper_inv_gain"})


def load_matching(model, path: Path) -> dict:
    """Warm-start ``model`` from a checkpoint of another width: every tensor whose name and shape match is
    copied (e.g. a wider latent M keeps the N-wide transform layers, GDNs and the hyper-latent's entropy
    bottleneck); the rest keeps its fresh initialisation.  Returns {'loaded': n, 'kept_fresh': [names]}."""
    state = read_state_dict(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ValueError(f"{path}: no tensor fits this model")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in matching.items()}})
    return {"loaded": len(matching), "kept_fresh": sorted(k for k in own if k not in matching)}


def load_state(model, path: Path, ladder=None) -> float | None:
    """Load a state_dict saved by :func:`save_checkpoint` (entropy tables resized as needed).

    A fixed-rate mean-scale checkpoint also starts a variable-rate model (``ladder``: its λ per level): the
    transforms and entropy models load, and the gains are set so that gain 1 — the fixed model's own
    quantisation — sits where the checkpoint's λ falls on the ladder (log λ), with the default slope around
    it.  Returns the checkpoint's λ in that case, else None."""
    state = read_state_dict(path)
    if ladder is None or GAIN_PARAMETERS <= set(state):
        model.load_state_dict(state)
        return None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != GAIN_PARAMETERS:
        raise ValueError(f"{path} does not fit this model: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    meta_path = path.with_name(path.stem + ".json")
    base_lmbda = json.loads(meta_path.read_text()).get("lmbda") if meta_path.exists() else None
    if not isinstance(base_lmbda, (int, float)):
        raise ValueError(f"{path}: a fixed-rate start needs its λ ({meta_path.name} with a numeric 'lmbda')")
    logs = np.log(np.asarray(ladder, dtype=float))
    position = float(np.interp(math.log(base_lmbda), logs, np.arange(len(logs))))
    with torch.no_grad():
        default = model.log_gain[:, 0].clone()  # the constructor's spread: one slope from coarse to fine
        slope = float(default[-1] - default[0]) / (model.levels - 1)
        spread = (torch.arange(model.levels, dtype=torch.float32) - position) * slope
        model.log_gain.copy_(spread[:, None].expand_as(model.log_gain))
        model.log_inv_gain.copy_(-model.log_gain)
        model.log_hyper_gain.zero_()
        model.log_hyper_inv_gain.zero_()
    return float(base_lmbda)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=ARCHS, default="mean-scale")
    p.add_argument("--channels", type=int, choices=(1, 3), required=True)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--M", type=int, default=96)
    p.add_argument("--context-bound", type=float, default=None,
                   help="gained-checkerboard: clamp the context's normalised residuals u = round(y - mu)/sigma to "
                        "±this (default: unbounded)")
    p.add_argument("--transform-N", type=int, default=None, help="gained-mean-scale: width of the image transforms "
                   "g_a/g_s when it differs from the hyperprior's --N")
    p.add_argument("--loss", choices=("mse", "msssim", "mix"), default="msssim")
    p.add_argument("--lmbda", type=float, help="λ of the rate-distortion loss (fixed-rate architectures)")
    p.add_argument("--lmbda-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="variable-rate architectures: λ of the lowest and highest gain level (geometric ladder)")
    p.add_argument("--levels", type=int, default=8, help="variable-rate architectures: number of gain levels")
    p.add_argument("--alpha", type=float, default=0.84, help="α of the mix loss (Zhao et al.: 0.84)")
    p.add_argument("--datasets", help="catalog datasets (comma-separated): train on their 'train' split, "
                   "validate on their 'val' split (data/stages.toml); the way shipped checkpoints are trained")
    p.add_argument("--data-root", help="data root of the catalog datasets (default: core.paths.data_root())")
    p.add_argument("--train", nargs="+", help="training images or folders of your own (instead of --datasets)")
    p.add_argument("--val", nargs="*", default=[], help="held-out validation images or folders (with --train)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=None, help="also stop after this much wall time (this run; "
                   "finishes the step, snapshots and writes the checkpoint, as after SIGTERM)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--bf16", action="store_true", help="run the transforms under bfloat16 autocast while "
                   "training (variable-rate architecture; entropy models stay float32)")
    p.add_argument("--warmup", type=int, default=0, help="first steps trained with the mse loss (see train_steps)")
    p.add_argument("--init", type=Path, help="start from this checkpoint .pt, or a NAME.resume.pt snapshot "
                   "(fine-tuning)")
    p.add_argument("--init-matching", action="store_true", help="with --init: load only the tensors whose name "
                   "and shape fit (a start for a wider model; the rest is freshly initialised)")
    p.add_argument("--init-widen", action="store_true", help="with --init: a checkpoint with narrower g_a/g_s, "
                   "embedded so the wider model starts as the same function (core.models.widen)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.resume.pt")
    p.add_argument("--save-every", type=int, default=250, help="steps between resume snapshots")
    p.add_argument("--save-minutes", type=float, default=5.0, help="also snapshot after this many minutes")
    p.add_argument("--out", type=Path, required=True, help="output stem (writes .pt, .json, .resume.pt)")
    p.add_argument("--codec", default=None, help="codec name the checkpoint belongs to (registry)")
    p.add_argument("--quality", type=int, default=None, help="rate point index within the codec (1 = fewest bytes)")
    p.add_argument("--validate-only", action="store_true", help="only (re)measure validation for OUT")
    p.add_argument("--skip-validation", action="store_true", help="write the checkpoint without measuring the "
                   "validation images (measure it later, elsewhere, with --validate-only)")
    p.add_argument("--entropy-only", action="store_true", help="gained-checkerboard: train only the context "
                   "model, on the rate (bits / the hyperprior's bits); everything else frozen, so the "
                   "reconstruction stays the start's (use with --init START.pt --init-matching)")
    p.add_argument("--int8", nargs="*", default=[], metavar="MODULE",
                   help="store these modules' convolution weights in 8 bits (e.g. h_s; core.models.checkpoint)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    # --validate-only: the checkpoint's JSON says what it is (λ included); only the images are needed
    if not args.validate_only and is_variable_rate(args.arch) and not args.lmbda_range:
        p.error(f"--arch {args.arch} needs --lmbda-range LOW HIGH")
    if not args.validate_only and not is_variable_rate(args.arch) and args.lmbda is None:
        p.error("--lmbda is required")
    if args.context_bound is not None and args.arch != "gained-checkerboard":
        p.error("--context-bound bounds a context model's input: it needs --arch gained-checkerboard")
    if args.entropy_only and args.arch != "gained-checkerboard":
        p.error("--entropy-only trains a context model: it needs --arch gained-checkerboard")
    if bool(args.datasets) == bool(args.train):
        p.error("give either --datasets (catalog splits) or --train (your own images)")
    return args


def training_sources(args) -> tuple[list, list]:
    """(training, validation) sources: catalog ImageRefs of the datasets' train / val splits, or files."""
    if args.datasets:
        from core.catalog import split_refs

        names = [d.strip() for d in args.datasets.split(",") if d.strip()]
        train = [r for d in names for r in split_refs(d, ("train",), args.data_root)]
        # a run that measures nothing needs no val image: a GPU machine's copy (scripts/gpu_train.sh pack) may
        # hold the train split alone; --validate-only measures it later where the val images are
        measures = args.validate_only or not args.skip_validation
        val = [r for d in names for r in split_refs(d, ("val",), args.data_root)] if measures else []
        if not train:
            raise FileNotFoundError(f"no training images in the catalog's train split of {names}")
        return train, val
    train_files = list_images(args.train)
    val_files = list_images(args.val) if args.val else []
    overlap = {f.resolve() for f in train_files} & {f.resolve() for f in val_files}
    if overlap:
        raise ValueError(f"validation images are also training images: {sorted(map(str, overlap))[:3]}")
    return train_files, val_files


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = args.out
    meta_path = stem_path(out, ".json")
    train_sources, val_sources = training_sources(args)
    if args.validate_only:
        meta = json.loads(meta_path.read_text())
        meta["validation"] = validate(stem_path(out, ".pt"), meta, val_sources)
        # validated on them now (a run with --skip-validation may not have listed them): recorded like a run's own
        meta["validation_data"] = [source_name(f) for f in val_sources]
        seen = meta.setdefault("training_images", [])
        seen += [name for name in meta["validation_data"] if name not in seen]
        meta_path.write_text(json.dumps(meta, indent=1))
        return meta

    variable = is_variable_rate(args.arch)
    lmbda = lambda_ladder(*args.lmbda_range, args.levels) if variable else args.lmbda
    model = build_model(args.arch, args.channels, args.N, args.M, levels=args.levels if variable else None,
                        transform_N=args.transform_N, context_bound=args.context_bound)
    model = model.to(args.device)
    if variable:
        model.train_bf16 = args.bf16
    base = None
    if args.init and args.init.name.endswith(".resume.pt"):  # a snapshot of a run that is still going
        snap = torch.load(args.init, map_location="cpu", weights_only=True)
        model.load_state_dict(snap["model"])
        base = {"checkpoint": args.init.name, "sha256": file_sha256(args.init), "steps": int(snap["step"]),
                "note": "resume snapshot of a run on the same catalog datasets (its training_images are a "
                        "subset of this checkpoint's)"}
    elif args.init:  # a finished checkpoint: whole (fine-tuning), or its matching tensors (a wider model)
        base_meta_path = args.init.with_name(args.init.stem + ".json")
        base_meta = json.loads(base_meta_path.read_text()) if base_meta_path.exists() else {}
        base = {"checkpoint": args.init.name, "sha256": file_sha256(args.init),
                "steps": base_meta.get("steps", {}).get("total"), "loss": base_meta.get("loss"),
                "lmbda": base_meta.get("lmbda"), "N": base_meta.get("N"), "M": base_meta.get("M"),
                "training_images": base_meta.get("training_images")}
        if args.init_widen:
            grown = load_widened(model, args.init)["widened"]
            narrow_n = base_meta.get("transform_N") or base_meta.get("N")
            base["note"] = (f"widened (--init-widen, core.models.widen): g_a/g_s from N = {narrow_n} to "
                            f"{model.transform_N}, the same function at the start; {len(grown)} tensors grew")
        elif args.init_matching:
            transfer = load_matching(model, args.init)
            base["note"] = (f"warm start (--init-matching): {transfer['loaded']} tensors of matching name and shape "
                            f"loaded; fresh: {', '.join(transfer['kept_fresh'])}")
        elif load_state(model, args.init, lmbda if variable else None) is not None:
            base["note"] = ("fixed-rate checkpoint: transforms and entropy models loaded, gain 1 placed at its "
                            "λ on the ladder")
    if args.entropy_only and args.init and not args.init.name.endswith(".resume.pt"):
        start_lmbda, start_loss = (base or {}).get("lmbda"), (base or {}).get("loss")
        if start_lmbda is None or not np.allclose(start_lmbda, lmbda) or start_loss != args.loss:
            raise SystemExit(f"--entropy-only keeps the start's transforms: give its --loss ({start_loss}) and "
                             f"--lmbda-range (its ladder {start_lmbda}), not {args.loss} / {lmbda}")
    trainable = freeze_all_but_context(model) if args.entropy_only else None
    optimizer, aux_optimizer = make_optimizers(model, args.lr)
    resume_path = stem_path(out, ".resume.pt")
    start, seconds_before = 0, 0.0
    lr_history: list[tuple[int, float]] = [(0, args.lr)]
    bf16_history: list[tuple[int, bool]] = [(0, bool(variable and args.bf16))]
    crop_history: list[tuple[int, int | None]] = [(0, args.crop)]
    if args.resume and resume_path.exists():
        state = torch.load(resume_path, map_location=args.device, weights_only=True)
        if "base" in state:  # the start this run began from (snapshots from before 2026-12-04 lack it)
            saved_sha, now_sha = (state["base"] or {}).get("sha256"), (base or {}).get("sha256")
            if saved_sha != now_sha:  # e.g. --init now names the file this very run produced
                raise SystemExit(f"{resume_path} continues a run that started from {saved_sha or 'no --init'}, "
                                 f"but --init is now {now_sha or 'not given'}; move {resume_path.name} away to "
                                 f"start afresh from --init")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:  # a snapshot from before snapshots recorded their start
            raise SystemExit(f"{resume_path} does not fit the model that --init built ({error}); the snapshot "
                             f"probably continues from another start: move it away to start afresh") from error
        optimizer.load_state_dict(state["optimizer"])
        if aux_optimizer is not None:
            aux_optimizer.load_state_dict(state["aux_optimizer"])
        start = int(state["step"])
        seconds_before = float(state.get("seconds", 0.0))
        saved_lr = float(state["optimizer"]["param_groups"][0]["lr"])
        lr_history = [tuple(x) for x in state.get("lr_history", [(0, saved_lr)])]
        bf16_history = [(int(a), bool(b)) for a, b in state.get("bf16_history", [(0, False)])]
        crop_history = [(int(a), b) for a, b in state.get("crop_history", [(0, None)])]  # None: not recorded
        for group in optimizer.param_groups:  # --lr applies from here on (a lower one anneals a resumed run)
            group["lr"] = args.lr
        torch.manual_seed(args.seed + start)
        print(f"resumed {resume_path} at step {start}", file=sys.stderr)
    if lr_history[-1][1] != args.lr:
        lr_history.append((start, args.lr))
    if bf16_history[-1][1] != bool(variable and args.bf16):  # a resumed run may switch autocast on or off
        bf16_history.append((start, bool(variable and args.bf16)))
    if crop_history[-1][1] != args.crop:
        crop_history.append((start, args.crop))
    sampler = CropSampler(load_planes(train_sources, args.channels), args.crop, args.seed + start)

    import signal

    stop = {"requested": False}

    def request_stop(signum, frame):  # SIGTERM / SIGINT: finish the step, snapshot, write the checkpoint
        stop["requested"] = True
        print(f"signal {signum}: stopping after this step", file=sys.stderr)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    t0 = time.time()
    last_save = {"t": time.time(), "step": start}

    def snapshot(step: int, force: bool = False) -> None:
        due = step % args.save_every == 0 or time.time() - last_save["t"] > 60 * args.save_minutes
        if force or due or step == args.steps:
            resume_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = resume_path.with_name(resume_path.name + ".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "aux_optimizer": aux_optimizer.state_dict() if aux_optimizer else None, "step": step,
                        "base": base,
                        "seconds": seconds_before + time.time() - t0, "lr_history": lr_history,
                        "bf16_history": bf16_history, "crop_history": crop_history}, tmp)
            tmp.replace(resume_path)  # atomic: a kill during the save keeps the previous snapshot
            pace = ((time.time() - last_save["t"]) / (step - last_save["step"])) if step > last_save["step"] else 0.0
            last_save.update(t=time.time(), step=step)
            print(f"step {step}: snapshot {resume_path.name} ({pace:.2f} s/step since the last)", file=sys.stderr,
                  flush=True)

    losses = train_steps(model, sampler, optimizer, aux_optimizer, max(0, args.steps - start), kind=args.loss,
                         lmbda=lmbda, alpha=args.alpha, batch=args.batch, device=args.device,
                         progress=not args.no_progress, start=start, on_step=snapshot,
                         warmup=args.warmup, entropy_only=args.entropy_only,
                         should_stop=lambda: stop["requested"] or (
                             args.minutes is not None and time.time() - t0 > 60 * args.minutes))
    done = start + len(losses)
    if last_save["step"] != done:
        snapshot(done, force=True)
    seconds = seconds_before + time.time() - t0
    model = model.cpu()
    weights = save_checkpoint(model, out, int8=tuple(args.int8))
    base_steps = (base or {}).get("steps") or 0
    training_images = [source_name(f) for f in train_sources] + [source_name(f) for f in val_sources]
    training_images += [i for i in (base or {}).get("training_images") or [] if i not in training_images]  # the start's
    formula = {"mse": "bpp + lmbda*255^2*MSE", "msssim": "bpp + lmbda*(1-MS-SSIM)",
               "mix": "bpp + lmbda*(alpha*(1-MS-SSIM) + (1-alpha)*G_sigma8*L1)"}[args.loss]
    meta = {
        "model_id": out.name,
        "codec": args.codec,
        "quality": args.quality,
        "arch": args.arch, "channels": args.channels, "N": args.N, "M": args.M,
        **({"transform_N": args.transform_N} if args.transform_N not in (None, args.N) else {}),
        **({"context_bound": args.context_bound} if args.context_bound is not None else {}),
        "bit_depth": "any (trained on the listed images, each divided by 2**bit_depth - 1)",
        "train_bit_depths": sorted({read_source(f).bit_depth for f in train_sources[:50]}),
        "loss": args.loss, "alpha": args.alpha if args.loss == "mix" else None,
        "lmbda": lmbda,
        "loss_formula": formula + (" per gain level i with lmbda_i (geometric ladder), image loss weighted by "
                                   "sqrt(lmbda_0/lmbda_i)" if variable else ""),
        **({"entropy_only": ("the context model alone trained on mean(bits / the hyperprior's bits) over images "
                             "at random gain levels (core.train.rate_ratio_loss); transforms, hyperprior, gains "
                             "and the loss/lmbda above are the start's, frozen"),
            "trained_parameters": trainable} if args.entropy_only else {}),
        "steps": {"base": base_steps, "this_run": done, "total": base_steps + done},
        "base": base,
        "warmup_mse_steps": args.warmup, "warmup_mse_lmbda": WARMUP_MSE_LMBDA if args.warmup else None,
        "batch": args.batch, "crop": args.crop, "lr": args.lr, "lr_history": [list(x) for x in lr_history],
        "seed": args.seed, "device": args.device,
        "threads": args.threads, "bf16_autocast": bool(variable and args.bf16),
        "bf16_history": [list(x) for x in bf16_history],  # (from step, autocast on) per resumed stretch
        "crop_history": [list(x) for x in crop_history],  # (from step, crop px); None: an older run's, not recorded
        "train_seconds": round(seconds, 1),
        "final_train_loss_mean_last50": float(np.mean(losses[-50:])) if losses else None,
        "training_datasets": args.datasets.split(",") if args.datasets else None,
        "training_images": training_images,
        "training_data": [source_name(f) for f in train_sources],
        "validation_data": [source_name(f) for f in val_sources],
        "weights_sha256": file_sha256(weights),
        "weights_storage": storage_note(tuple(args.int8)),
        "torch": torch.__version__,
    }
    if variable:
        meta["levels"] = args.levels
    meta_path.write_text(json.dumps(meta, indent=1))
    for sig, handler in previous.items():  # checkpoint written: a signal now ends the process (e.g. validating)
        signal.signal(sig, handler)
    if val_sources and not args.skip_validation:
        meta["validation"] = validate(weights, meta, val_sources)
        meta_path.write_text(json.dumps(meta, indent=1))
        v = meta["validation"]
        points = v.get("settings") or [v]
        for pt in points:
            print(f"validation{' q=' + str(pt['setting']) if 'setting' in pt else ''}: {pt['bpp']:.3f} bpp, "
                  f"{pt['psnr']:.2f} dB, MS-SSIM {pt['ms_ssim']:.4f}", file=sys.stderr)
    return meta


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
