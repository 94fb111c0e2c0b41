"""Does ``torch.autocast("cpu", bfloat16)`` speed up learned-codec training on this CPU, with the same loss?

    .venv/bin/python -m bench.torch_bf16 [--steps 8] [--threads 2] [--crop 256] [--channels 1] [--M 96]
                                         [--batch 8] [--loss mse] [--init data/weights/em-msssim-vr.pt]

Builds the variable-rate model the training script uses (:class:`core.models.variable_rate.
GainedMeanScaleHyperprior`, N = 64, 8 gain levels) twice in this process from the same seed, once training in
float32 and once with its transforms under bfloat16 autocast (``model.train_bf16``, what ``core.train --bf16``
sets), and runs ``--steps`` optimisation steps of each (after one warm-up step) with
:func:`core.train.train_steps` on the *same* batches (the same random crops of random images, drawn once),
alternating the two so a change in machine load hits both.  Prints the seconds per step of each (median), the
ratio bf16 / float32 (< 1 = bf16 faster), each run's loss per step and the largest relative gap between the
two loss curves, and the CPU flags that decide it (AVX-512 BF16 / AMX).  The images are random noise with a
smooth component (no data needed): the timing does not depend on content, and the loss comparison only asks
whether the two precisions follow the same path from the same start.  ``--init`` starts both from a
trained checkpoint (its width and channels must match ``--M`` / ``--channels``); from a random start use the
``mse`` loss, because the MS-SSIM of a random model is exactly 0 (zero gradient, a constant loss term).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.tf_bf16 import cpu_flags  # the same flag list as TensorFlow's bf16 bench


class FixedBatches:
    """Replays pre-drawn batches (the sampler interface of :func:`core.train.train_steps`)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def batch(self, size: int):
        out = self.batches[self.i]
        self.i += 1
        if out.shape[0] != size:
            raise ValueError(f"batch of {out.shape[0]} drawn, {size} asked")
        return out


def synthetic_batches(n: int, batch: int, channels: int, crop: int, seed: int):
    """``n`` batches (batch, channels, crop, crop) in [0, 1]: a smooth field plus noise, deterministic."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        coarse = torch.rand(batch, channels, crop // 16, crop // 16, generator=g)
        smooth = F.interpolate(coarse, size=(crop, crop), mode="bicubic", align_corners=False)
        out.append((0.8 * smooth + 0.2 * torch.rand(batch, channels, crop, crop, generator=g)).clamp(0, 1))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.torch_bf16", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--M", type=int, default=96)
    p.add_argument("--loss", default="mse", choices=("mse", "msssim"))
    p.add_argument("--init", help="a checkpoint .pt of the same width and channels to start both runs from")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error("--steps must be >= 1")
    import torch

    from core.models.variable_rate import GainedMeanScaleHyperprior, lambda_ladder
    from core.train import load_state, make_optimizers, train_steps

    torch.set_num_threads(a.threads)
    ladder = lambda_ladder(0.4, 4000, 8) if a.loss == "msssim" else lambda_ladder(0.0005, 0.2, 8)
    batches = synthetic_batches(a.steps + 1, a.batch, a.channels, a.crop, seed=0)
    runs = {}
    for name, bf16 in (("float32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = GainedMeanScaleHyperprior(N=64, M=a.M, channels=a.channels, levels=8)
        if a.init:
            load_state(model, Path(a.init))
        model.train_bf16 = bf16
        runs[name] = {"model": model, "opt": make_optimizers(model, 1e-4), "data": FixedBatches(batches),
                      "times": [], "losses": []}
    for step in range(a.steps + 1):  # step 0 is the warm-up, not timed
        for name, r in runs.items():
            torch.manual_seed(1000 + step)  # the same gain levels for both precisions
            t0 = time.perf_counter()
            loss = train_steps(r["model"], r["data"], *r["opt"], 1, kind=a.loss, lmbda=ladder, batch=a.batch,
                               progress=False)[0]
            if step:
                r["times"].append(time.perf_counter() - t0)
            r["losses"].append(loss)
    print(f"CPU flags: {', '.join(cpu_flags()) or 'unknown'}; torch {torch.__version__}, {a.threads} threads; "
          f"{a.steps} steps each, batch {a.batch} x {a.crop}^2 x {a.channels}, N 64 / M {a.M}, loss {a.loss}, "
          f"start {a.init or 'random'}")
    for name, r in runs.items():
        print(f"{name:8s} {np.median(r['times']):.3f} s/step (median); loss per step "
              + " ".join(f"{x:.4f}" for x in r["losses"]))
    f32, bf = np.array(runs["float32"]["losses"]), np.array(runs["bf16"]["losses"])
    print(f"largest relative loss gap bf16 vs float32: {np.max(np.abs(bf - f32) / np.abs(f32)):.2%}")
    print(f"ratio bf16 / float32: {np.median(runs['bf16']['times']) / np.median(runs['float32']['times']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
