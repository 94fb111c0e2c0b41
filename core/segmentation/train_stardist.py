"""Train the project's StarDist 2D models on CPU (no pretrained weights needed).

    python -m core.segmentation.train_stardist monuseg          # → data/models/monuseg_he
    python -m core.segmentation.train_stardist epfl             # → data/models/epfl_mito
    python -m core.segmentation.train_stardist epfl --minutes 5 --out /tmp/models

Images and splits come from the catalog (:func:`core.catalog.split_refs`): the model
trains on the dataset's ``train`` images and validates on its ``val`` images; the
``test`` images are used only for the final accuracy.  Training stops after
``--minutes`` of wall time or ``--epochs`` epochs of 25 steps, whichever comes first
(the best-validation-loss weights are kept), then the probability / NMS thresholds are
optimised on the validation images and accuracy on the test split is printed and
written to ``<model>/accuracy.json`` (object F1 at IoU 0.5 via ``stardist.matching``,
pixel Dice).  ``<model>/biocodec.json`` records the scale and ``training_images``: the
catalog ids (``dataset/image_id``) of every train and val image.
TensorFlow runs with ``--threads`` intra/inter-op threads (default 1).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from core.catalog import catalog_id
from core.paths import SEG_MODELS_DIR
from core.segmentation import data as sdata
from core.segmentation.stardist_pooling import POOLINGS, stardist_pooling

MODELS_DIR = SEG_MODELS_DIR
STEPS_PER_EPOCH = 25

RECIPES = {
    # H&E nuclei (median ≈ 24 px long at 40x): full resolution, RGB.
    "monuseg": dict(name="monuseg_he", catalog="monuseg", scale=1.0, n_channel_in=3, colour_jitter=0.1,
                    config=dict(n_rays=32, grid=(2, 2), unet_n_depth=3, unet_n_filter_base=16,
                                net_conv_after_unet=64, train_patch_size=(256, 256), train_batch_size=4,
                                train_n_val_patches=8, train_learning_rate=1e-3)),
    # FIB-SEM mitochondria (40–220 px long): trained and run at half resolution.
    "epfl": dict(name="epfl_mito", catalog="epfl_hippocampus_fibsem", scale=0.5, n_channel_in=1,
                 config=dict(n_rays=32, grid=(2, 2), unet_n_depth=3, unet_n_filter_base=16,
                             net_conv_after_unet=64, train_patch_size=(192, 192), train_batch_size=4,
                             train_n_val_patches=8, train_learning_rate=1e-3)),
}


def load_split(dataset: str, split: str, data_root=None):
    """[(ImageRef, image, int32 labels)] of recipe ``dataset`` ('monuseg' / 'epfl') in catalog split ``split``."""
    if dataset not in RECIPES:
        raise ValueError(f"unknown dataset {dataset!r} ({', '.join(sorted(RECIPES))})")
    return sdata.instance_pairs(RECIPES[dataset]["catalog"], (split,), data_root)


def rescale_pair(image: np.ndarray, labels: np.ndarray, scale: float):
    """Image (float, bilinear) and labels (nearest) resized by ``scale``."""
    if scale == 1.0:
        return image, labels
    from skimage.transform import rescale

    img = rescale(image, scale, order=1, channel_axis=-1 if image.ndim == 3 else None,
                  preserve_range=True, anti_aliasing=True).astype(np.float32)
    lab = rescale(labels, scale, order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)
    return img, lab


def augmenter(rng: np.random.Generator, colour_jitter: float = 0.0):
    """Random 90° rotations / flips, and mild intensity scale + shift (per patch).

    ``colour_jitter`` > 0 (RGB only) also scales and shifts each channel on its own by up to that
    fraction (stain / scanner colour variation, as StarDist's H&E examples do), after the joint jitter."""
    def augment(x, y):
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(0, 1)), np.rot90(y, k, axes=(0, 1))
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
        if colour_jitter > 0 and x.ndim == 3 and x.shape[-1] == 3:
            j = colour_jitter
            x = x * rng.uniform(1 - j, 1 + j, size=3) + rng.uniform(-j / 2, j / 2, size=3)
        return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y)
    return augment


def pixel_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of the foregrounds (labels > 0) of two label images (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def evaluate_model(model, pairs, scale: float, instances: str = "polygons",
                   shift_average: int | None = None) -> dict:
    """Mean object F1 at IoU 0.5 (stardist.matching, per image) and mean pixel Dice vs ground truth, with the
    nuclei drawn by ``instances`` (:data:`~core.segmentation.stardist_models.INSTANCE_RULES`) from maps averaged
    over ``shift_average``² input shifts (None: the model folder's setting;
    :func:`~core.segmentation.stardist_models.predict_labels`)."""
    from stardist.matching import matching

    from core.segmentation.stardist_models import predict_labels

    f1s, dices = [], []
    for _ref, image, gt in pairs:
        pred = predict_labels(model, image, scale=scale, instances=instances, shift_average=shift_average)
        f1s.append(float(matching(gt, pred, thresh=0.5).f1))
        dices.append(pixel_dice(gt, pred))
    return {"n_images": len(pairs), "images": [ref.image_id for ref, _x, _y in pairs],
            "object_f1_iou50": float(np.mean(f1s)), "pixel_dice": float(np.mean(dices)),
            "per_image_f1": [round(v, 4) for v in f1s], "per_image_dice": [round(v, 4) for v in dices]}


def _prepare(pairs, scale: float):
    X, Y = [], []
    for _ref, image, labels in pairs:
        x, y = rescale_pair(sdata.normalize(image), labels, scale)
        X.append(x if x.ndim == 3 else x[..., None])
        Y.append(y)
    return X, Y


def training_pooling(pooling: str | None, init: Path | None) -> str:
    """The pooling a training builds: ``pooling`` if given, else the ``init`` model's (a continuation keeps its
    architecture), else StarDist's own max-pooling."""
    from core.segmentation.stardist_models import model_pooling

    if pooling is not None:
        return pooling
    return model_pooling(Path(init)) if init is not None else "max"


def train(dataset: str, out: Path, minutes: float, threads: int, seed: int, data_root=None,
          epochs: int = 1000, init: Path | None = None, pooling: str | None = None,
          learning_rate: float | None = None) -> Path:
    """Train recipe ``dataset`` into ``out/<name>``; ``init`` = a model folder (same recipe) whose
    ``weights_best.h5`` the training starts from (a continuation: its steps are added in the metadata);
    ``pooling`` = the network's down-sampling (:data:`core.segmentation.stardist_pooling.POOLINGS`; default:
    the ``init`` model's, else StarDist's max-pooling);
    ``learning_rate`` overrides the recipe's."""
    from core.segmentation.tfsetup import configure_tensorflow

    tf = configure_tensorflow(threads)
    tf.keras.utils.set_random_seed(seed)
    from stardist.models import Config2D, StarDist2D

    recipe = RECIPES[dataset]
    scale = recipe["scale"]
    pooling = training_pooling(pooling, init)
    trn_pairs, val_pairs = load_split(dataset, "train", data_root), load_split(dataset, "val", data_root)
    X_trn, Y_trn = _prepare(trn_pairs, scale)
    X_val, Y_val = _prepare(val_pairs, scale)
    rng = np.random.default_rng(seed)
    print(f"{dataset}: {len(X_trn)} training, {len(X_val)} validation images "
          f"({[r.image_id for r, _x, _y in val_pairs]}), scale {scale}", flush=True)

    config = dict(recipe["config"])
    if learning_rate is not None:
        config["train_learning_rate"] = float(learning_rate)
    conf = Config2D(n_channel_in=recipe["n_channel_in"], train_tensorboard=False, train_epochs=1000,
                    train_steps_per_epoch=STEPS_PER_EPOCH,
                    train_reduce_lr={"factor": 0.5, "patience": 8, "min_delta": 0},
                    use_gpu=False, **config)
    out.mkdir(parents=True, exist_ok=True)
    with stardist_pooling(pooling):
        model = StarDist2D(conf, name=recipe["name"], basedir=str(out))
    model.prepare_for_training()
    previous = {}
    if init is not None:
        model.keras_model.load_weights(str(Path(init) / "weights_best.h5"))
        meta_init = Path(init) / "biocodec.json"
        previous = json.loads(meta_init.read_text()) if meta_init.is_file() else {}
        print(f"starting from {init} ({previous.get('epochs', '?')} epochs)", flush=True)
    deadline = time.monotonic() + minutes * 60
    epochs_run = [0]

    class TimeLimit(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            epochs_run[0] = epoch + 1
            left = deadline - time.monotonic()
            print(f"epoch {epoch + 1}: loss {logs.get('loss'):.4f} val_loss {logs.get('val_loss'):.4f}; "
                  f"{left / 60:.1f} min left", flush=True)
            if left <= 0 or epoch + 1 >= epochs:
                self.model.stop_training = True

    model.callbacks.append(TimeLimit())
    t0 = time.monotonic()
    model.train(X_trn, Y_trn, validation_data=(X_val, Y_val),
                augmenter=augmenter(rng, recipe.get("colour_jitter", 0.0)), seed=seed)
    train_s = time.monotonic() - t0
    t1 = time.monotonic()
    model.optimize_thresholds(X_val, Y_val, predict_kwargs={"show_tile_progress": False})
    thresh_s = time.monotonic() - t1
    folder = out / recipe["name"]
    meta = {"scale": scale, "normalize_percentiles": [1.0, 99.8], "normalize_axes": "joint",
            "dataset": dataset, "catalog_dataset": recipe["catalog"],
            "training_images": [catalog_id(r) for r, _x, _y in [*trn_pairs, *val_pairs]],
            "train_images": [r.image_id for r, _x, _y in trn_pairs],
            "validation_images": [r.image_id for r, _x, _y in val_pairs],
            "epochs": epochs_run[0] + int(previous.get("epochs", 0)),
            "epochs_this_run": epochs_run[0], "started_from": str(init) if init is not None else None,
            "colour_jitter": recipe.get("colour_jitter", 0.0), "pooling": pooling,
            "instances": previous.get("instances", "polygons"),
            "shift_average": previous.get("shift_average", 1),
            "learning_rate": conf.train_learning_rate,
            "steps_per_epoch": STEPS_PER_EPOCH, "train_seconds": round(train_s, 1),
            "train_seconds_total": round(train_s + float(previous.get("train_seconds_total",
                                                                         previous.get("train_seconds", 0))), 1),
            "threshold_seconds": round(thresh_s, 1), "tf_threads": threads, "seed": seed}
    (folder / "biocodec.json").write_text(json.dumps(meta, indent=2))
    for junk in ("weights_now.h5", "weights_last.h5"):
        (folder / junk).unlink(missing_ok=True)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.segmentation.train_stardist", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=sorted(RECIPES))
    p.add_argument("--out", type=Path, default=MODELS_DIR, help="folder receiving <model name>/")
    p.add_argument("--data-root", default=None, help="shared data root (default ../shared/data)")
    p.add_argument("--minutes", type=float, default=22.0, help="wall-clock training budget (minutes)")
    p.add_argument("--epochs", type=int, default=1000,
                   help=f"most epochs ({STEPS_PER_EPOCH} steps each) to train; the shipped models ran 15 (monuseg) "
                        "and 25 (epfl)")
    p.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None,
                   help="continue from this model folder's weights_best.h5 (e.g. data/models/monuseg_he)")
    p.add_argument("--pooling", choices=POOLINGS, default=None,
                   help="blurmax = anti-aliased max-pooling (shift-stable; Zhang 2019); no parameters, so --init "
                        "may name a max-pooling model (default: the --init model's pooling, else max)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's, 1e-3)")
    p.add_argument("--skip-train", action="store_true", help="only evaluate an existing model folder")
    args = p.parse_args(argv)
    folder = args.out / RECIPES[args.dataset]["name"]
    if not args.skip_train:
        folder = train(args.dataset, args.out, args.minutes, args.threads, args.seed, args.data_root, args.epochs,
                       args.init, args.pooling, args.lr)
    from core.segmentation.stardist_models import load_stardist, model_instances, model_scale, model_shift_average

    model = load_stardist(str(folder))
    result = evaluate_model(model, load_split(args.dataset, "test", args.data_root), model_scale(str(folder)),
                            model_instances(str(folder)), model_shift_average(str(folder)))
    (folder / "accuracy.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
