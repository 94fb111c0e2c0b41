"""Does TensorFlow's ``mixed_bfloat16`` policy speed up StarDist training on this CPU?

    .venv/bin/python -m bench.tf_bf16 [--steps 8] [--threads 1]

Builds the MoNuSeg StarDist recipe (:data:`core.segmentation.train_stardist.RECIPES`) twice in this process,
once under the ``float32`` and once under the ``mixed_bfloat16`` Keras policy, and times ``--steps`` training
steps of each on the same random batch (batch 4 × 256² × 3, after one warm-up step), alternating the two so a
change in machine load hits both.  Prints seconds per step and the ratio bf16 / float32 (< 1 = bf16 faster),
and the CPU flags that decide it (AVX-512 BF16 / AMX).  A recipe that cannot build or train under the policy
is reported as such.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def cpu_flags() -> list[str]:
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return []
    return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})


def build(policy: str, threads: int, plain_loss: bool = False):
    import tensorflow as tf
    from stardist.models import Config2D, StarDist2D

    from core.segmentation.train_stardist import RECIPES

    tf.keras.mixed_precision.set_global_policy(policy)
    recipe = RECIPES["monuseg"]
    conf = Config2D(n_channel_in=3, train_tensorboard=False, use_gpu=False, **recipe["config"])
    model = StarDist2D(conf, name=None, basedir=None)
    if plain_loss:  # StarDist's own losses mix dtypes under bf16: same network, mean squared error on both outputs
        model.keras_model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss=["mse", "mse"])
    else:
        model.prepare_for_training()
    return model


def batch(model, rng, plain_loss: bool = False):
    """One training batch in StarDist's own input format (image, mask) → (prob, dist) targets."""
    from stardist import star_dist
    from stardist.utils import edt_prob

    n, size = 4, 256
    images = rng.random((n, size, size, 3)).astype(np.float32)
    labels = np.zeros((n, size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for k, (cy, cx) in enumerate(rng.integers(10, size - 10, size=(30, 2)), start=1):
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = k
    g = model.config.grid
    prob = np.stack([edt_prob(lab)[::g[0], ::g[1]] for lab in labels])[..., None]
    dist = np.stack([star_dist(lab, model.config.n_rays, grid=g) for lab in labels])
    if plain_loss:
        return (images,), (prob.astype(np.float32), dist.astype(np.float32))
    return (images,), (prob.astype(np.float32), np.concatenate([dist, prob], -1).astype(np.float32))  # as StarDistData2D


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tf_bf16", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    from core.segmentation.tfsetup import configure_tensorflow

    configure_tensorflow(a.threads)
    rng = np.random.default_rng(0)
    models, data, times, losses = {}, {}, {"float32": [], "mixed_bfloat16": []}, {}
    plain = False
    for policy in times:
        try:
            models[policy] = build(policy, a.threads, plain)
            data[policy] = batch(models[policy], rng)
            models[policy].keras_model.train_on_batch(*data[policy])  # warm-up (graph build)
        except Exception as exc:  # noqa: BLE001 - the report is the point
            print(f"{policy}: StarDist's training loss fails under this policy ({type(exc).__name__}: "
                  f"{str(exc)[:120]}); timing the same network with an MSE loss instead, for both policies")
            plain = True
            models.clear()
            for again in times:
                models[again] = build(again, a.threads, plain)
                data[again] = batch(models[again], rng, plain)
                models[again].keras_model.train_on_batch(*data[again])
            break
    for _ in range(a.steps):
        for policy, model in models.items():
            t0 = time.perf_counter()
            losses[policy] = float(np.ravel(model.keras_model.train_on_batch(*data[policy]))[0])
            times[policy].append(time.perf_counter() - t0)
    print(f"CPU flags: {', '.join(cpu_flags()) or 'unknown'}; TF threads {a.threads}; {a.steps} steps each, "
          f"batch 4 x 256^2 x 3, MoNuSeg StarDist recipe{' (MSE loss)' if plain else ''}")
    for policy, t in times.items():
        if t:
            print(f"{policy:15s} {np.median(t):.3f} s/step (median), last loss {losses[policy]:.4f}")
    if times["float32"] and times["mixed_bfloat16"]:
        print(f"ratio mixed_bfloat16 / float32: {np.median(times['mixed_bfloat16']) / np.median(times['float32']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
