"""Train the project's U-Nets (:mod:`core.segmentation.unet`) on CPU: membrane detectors and foreground segmenters.

    python -m core.segmentation.train_unet isbi2012_em --minutes 60
    python -m core.segmentation.train_unet isbi2012_em --minutes 5 --out /tmp/unet   # quick check
    python -m core.segmentation.train_unet isbi2012_em --rethreshold   # threshold again on val (finer grid)
    python -m core.segmentation.train_unet isbi2012_em --tune-objects  # mask → objects rule, on val
    python -m core.segmentation.train_unet epfl_hippocampus_fibsem --target foreground --min-size 100 \
        --out data/models/unet-mito-epfl --minutes 60                  # EPFL mitochondria

``--target membranes`` (default) learns the datasets' membrane masks
(:func:`core.segmentation.data.membrane_pairs`) and is validated by boundary F1; ``--target foreground``
learns the foreground of their instance labels (:func:`core.segmentation.data.instance_pairs`; objects are
its connected components at inference) and is validated by pixel Dice.  Images and splits come from the
catalog: the network trains on the ``train`` images of the named dataset(s) and is validated on their ``val``
images; ``test`` images are never read here.  Training: random 256² crops, random 90° rotations /
flips, intensity scale/shift/gamma jitter, batch 4, Adam (``--lr``, default 1e-3, and 0.3× that for the last
30 % of the time budget), loss BCE + soft Dice, float32, one torch thread (``--threads``).  ``--pooling blurmax``
builds the anti-aliased U-Net (:data:`core.segmentation.unet.POOLINGS`); ``--init FOLDER`` starts from a trained
model's weights, e.g. to fine-tune a max-pooling model into a blurmax one::

    python -m core.segmentation.train_unet epfl_hippocampus_fibsem --target foreground --min-size 100 \
        --pooling blurmax --init data/models/unet-mito-epfl --lr 3e-4 --minutes 25 --out .train/mito-aa

Every ``--val-minutes`` the validation images are predicted and the boundary F1 at 2 px (of the
skeletonised masks, as :func:`core.segmentation.contours.accuracy`) or the pixel Dice (foreground) is computed
over a threshold grid;
the best (weights, threshold) so far is kept.  A checkpoint (model, optimiser, step, elapsed time, best)
is written every ``--snapshot-minutes`` and on SIGTERM/SIGINT; starting the same command again resumes
from it (``--fresh`` ignores it).  On exit the best weights go to ``<out>/weights.pt`` (state dict) and
``<out>/biocodec.json`` (architecture, threshold, min_size, ``training_images`` = catalog ids of every
train and val image, steps, loss, val boundary F1); the log is ``<out>/train.log``.
"""
from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

import numpy as np

from core.segmentation import unet as U

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
CHECKPOINT = "checkpoint.pt"
#: target → the validation metric that picks weights and threshold
TARGETS = {"membranes": "boundary F1 at 2 px", "foreground": "pixel Dice"}


def training_pairs(datasets, split: str, target: str, data_root=None):
    """[(ImageRef, grayscale pixels, boolean mask)] of ``split`` for ``target`` (membranes / instance foreground)."""
    from core.segmentation.data import instance_pairs, membrane_pairs

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} ({', '.join(TARGETS)})")
    if target == "membranes":
        return [p for d in datasets for p in membrane_pairs(d, (split,), data_root)]
    pairs = [(r, px, np.asarray(lab) > 0) for d in datasets for r, px, lab in instance_pairs(d, (split,), data_root)]
    for ref, px, _ in pairs:
        if np.asarray(px).ndim != 2:
            raise ValueError(f"{ref.dataset}/{ref.image_id}: the U-Net needs grayscale, got {np.shape(px)}")
    return pairs


class Log:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} {msg}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def random_batch(images, masks, rng: np.random.Generator, batch: int, crop: int):
    """(x, y) float32 arrays (batch, 1, crop, crop) of augmented random crops."""
    xs, ys = [], []
    for _ in range(batch):
        i = int(rng.integers(len(images)))
        img, m = images[i], masks[i]
        h, w = img.shape
        c = min(crop, h, w)
        y0, x0 = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        x, y = img[y0:y0 + c, x0:x0 + c], m[y0:y0 + c, x0:x0 + c]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        x = np.clip(x, 0, 1) ** rng.uniform(0.8, 1.25)
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
        xs.append(np.ascontiguousarray(x, np.float32))
        ys.append(np.ascontiguousarray(y, np.float32))
    return np.stack(xs)[:, None], np.stack(ys)[:, None]


def loss_fn(logits, target):
    torch = U._torch()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def boundary_scores(probs, gts, thresholds=THRESHOLDS, min_size: int = 64) -> dict[float, float]:
    """threshold → mean boundary F1 at 2 px of the skeletonised masks vs the skeletonised labels."""
    from core.segmentation.contours import contours_of
    from core.segmentation.metrics import boundary_f1

    gt_c = [contours_of(g) for g in gts]
    return {t: float(np.mean([boundary_f1(g, contours_of(U.mask_from_probability(p, t, min_size)), 2.0)
                              for p, g in zip(probs, gt_c)])) for t in thresholds}


def dice_scores(probs, gts, thresholds=THRESHOLDS, min_size: int = 64) -> dict[float, float]:
    """threshold → mean pixel Dice of the thresholded probability (small components removed) vs the masks."""
    from core.segmentation.metrics import dice

    return {t: float(np.mean([dice(g, U.mask_from_probability(p, t, min_size)) for p, g in zip(probs, gts)]))
            for t in thresholds}


def validation_scores(target: str, probs, gts, thresholds=THRESHOLDS, min_size: int = 64) -> dict[float, float]:
    return (boundary_scores if target == "membranes" else dice_scores)(probs, gts, thresholds, min_size)


def train(datasets, out: Path, minutes: float, *, target: str = "membranes", data_root=None, threads: int = 1, batch: int = 4,
          crop: int = 256, base: int = 16, max_channels: int = 64, seed: int = 0, val_minutes: float = 4.0,
          snapshot_minutes: float = 3.0, min_size: int = 64, fresh: bool = False, max_steps: int | None = None,
          pooling: str = "max", init: str | Path | None = None, lr: float = 1e-3, log=None) -> dict:
    torch = U._torch()
    from core.catalog import catalog_id

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    log = log or Log(out / "train.log")
    trn = training_pairs(datasets, "train", target, data_root)
    val = training_pairs(datasets, "val", target, data_root)
    images = [U.prepare_input(px) for _r, px, _m in trn]
    masks = [np.asarray(m, bool) for _r, _p, m in trn]
    val_x = [U.prepare_input(px) for _r, px, _m in val]
    val_y = [np.asarray(m, bool) for _r, _p, m in val]
    arch = {"base": base, "depth": 4, "max_channels": max_channels, "pooling": pooling}
    model = U.build_unet(**arch)
    base_model = None
    if init is not None:  # continue from a trained model's weights (same convolutions; pooling may differ)
        base_model = U.load_unet(init)
        if {k: v for k, v in base_model.meta["architecture"].items() if k != "pooling"} != \
                {k: v for k, v in arch.items() if k != "pooling"}:
            raise ValueError(f"--init {init}: architecture {base_model.meta['architecture']} does not fit {arch}")
        if base_model.meta.get("target", "membranes") != target:
            raise ValueError(f"--init {init} was trained for {base_model.meta.get('target', 'membranes')!r}, not {target!r}")
        model.load_state_dict(base_model.model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    state = {"step": 0, "elapsed_s": 0.0, "best_score": -1.0, "best_threshold": 0.5, "best_step": 0,
             "best_weights": None, "losses": []}
    rng = np.random.default_rng(seed)
    ckpt = out / CHECKPOINT
    if ckpt.is_file() and not fresh:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        if "best_bf1" in state:  # checkpoints written before --target existed
            state["best_score"] = state.pop("best_bf1")
        rng = np.random.default_rng()
        rng.bit_generator.state = saved["rng"]
        log(f"resumed from {ckpt} at step {state['step']} ({state['elapsed_s'] / 60:.1f} min trained)")
    log(f"target {target} (validated by {TARGETS[target]}); datasets {datasets}: {len(trn)} train, {len(val)} val images; {U.n_parameters(model)} parameters; "
        f"budget {minutes} min; threads {threads}")

    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True
        log(f"signal {signum}: saving and stopping")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def save_checkpoint():
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                    "rng": rng.bit_generator.state}, tmp)
        tmp.replace(ckpt)

    def validate():
        probs = [U.predict_probability(model, normalized=x) for x in val_x]
        scores = validation_scores(target, probs, val_y, min_size=min_size)
        t, s = max(scores.items(), key=lambda kv: kv[1])
        if s > state["best_score"]:
            state.update(best_score=s, best_threshold=t, best_step=state["step"],
                         best_weights={k: v.detach().clone() for k, v in model.state_dict().items()})
        log(f"val step {state['step']}: {TARGETS[target]} {s:.4f} at threshold {t} (best {state['best_score']:.4f} "
            f"at step {state['best_step']})")

    budget_s = minutes * 60
    t_start, t0 = time.time(), state["elapsed_s"]
    last_val = last_snap = time.time()
    recent = []
    if base_model is not None and state["step"] == 0:
        validate()  # the starting point: the initial weights under this architecture
    model.train()
    try:
        while not stop["flag"]:
            elapsed = t0 + time.time() - t_start
            if elapsed >= budget_s or (max_steps is not None and state["step"] >= max_steps):
                break
            step_lr = lr if elapsed < 0.7 * budget_s else 0.3 * lr
            for g in opt.param_groups:
                g["lr"] = step_lr
            x, y = random_batch(images, masks, rng, batch, crop)
            loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            state["step"] += 1
            recent.append(float(loss.detach()))
            state["elapsed_s"] = t0 + time.time() - t_start
            if state["step"] % 25 == 0:
                state["losses"].append([state["step"], float(np.mean(recent))])
                log(f"step {state['step']} loss {np.mean(recent):.4f} lr {step_lr:g} "
                    f"{state['elapsed_s'] / 60:.1f} min")
                recent = []
            if time.time() - last_val >= val_minutes * 60:
                validate()
                last_val = time.time()
            if time.time() - last_snap >= snapshot_minutes * 60:
                save_checkpoint()
                last_snap = time.time()
        validate()
        save_checkpoint()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    weights = state["best_weights"] or model.state_dict()
    torch.save(weights, out / U.WEIGHTS_FILE)
    meta = {
        "kind": f"unet-{target}", "target": target, "datasets": list(datasets), "architecture": arch,
        "parameters": U.n_parameters(model), "input": "grayscale, core.segmentation.data.normalize (1-99.8 %), "
        "clipped to [0, 1]", "threshold": state["best_threshold"], "min_size": min_size,
        "training_images": [catalog_id(r) for r, _x, _y in [*trn, *val]],
        "train_images": [catalog_id(r) for r, _x, _y in trn], "validation_images": [catalog_id(r) for r, _x, _y in val],
        "steps": state["step"], "best_step": state["best_step"], "train_minutes": round(state["elapsed_s"] / 60, 2),
        "batch": batch, "crop": crop, "final_loss": state["losses"][-1][1] if state["losses"] else None,
        f"val_{'boundary_f1' if target == 'membranes' else 'dice'}": state["best_score"], "stopped_by_signal": stop["flag"],
        "threads": threads, "seed": seed, "lr": [lr, 0.3 * lr],
    }
    if base_model is not None:
        meta["init"] = {"model": base_model.name, "architecture": base_model.meta["architecture"],
                        "steps": base_model.meta.get("steps"), "training_images": base_model.meta.get("training_images")}
        meta["training_images"] = sorted(set(meta["training_images"]) | set(base_model.meta.get("training_images", [])))
    (out / U.META_FILE).write_text(json.dumps(meta, indent=2))
    log(f"wrote {out / U.WEIGHTS_FILE} (step {state['best_step']}, val {TARGETS[target]} {state['best_score']:.4f}, "
        f"threshold {state['best_threshold']})")
    return meta


def rethreshold(folder: Path, thresholds=None, data_root=None, log=print) -> dict:
    """Choose the threshold of a trained model folder again on its datasets' ``val`` images (finer grid than
    during training) and rewrite ``biocodec.json``; the test split is not read."""
    det = U.load_unet(folder)
    meta = det.meta
    target = meta.get("target", "membranes")
    val = training_pairs(meta["datasets"], "val", target, data_root)
    probs = [U.predict_probability(det.model, px, phases=det.phases) for _r, px, _m in val]
    grid = thresholds or tuple(round(t, 3) for t in np.arange(0.3, 0.951, 0.05))
    scores = validation_scores(target, probs, [np.asarray(m, bool) for _r, _p, m in val], grid, det.min_size)
    t, s = max(scores.items(), key=lambda kv: kv[1])
    log(f"val {TARGETS[target]} by threshold: " + ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()))
    key = "val_boundary_f1" if target == "membranes" else "val_dice"
    meta.update({"threshold": float(t), key: s}, threshold_grid=list(grid),
                threshold_chosen_on="val (python -m core.segmentation.train_unet --rethreshold)")
    (Path(folder) / U.META_FILE).write_text(json.dumps(meta, indent=2))
    log(f"threshold {t}: val {TARGETS[target]} {s:.4f}")
    return meta


MIN_SIZE_GRID = (64, 100, 150, 200, 250, 300, 400)
CELL_SEED_GRID = (0.0, 2.0, 3.0, 4.0)
CELL_AREA_GRID = (0, 10, 25, 50, 75, 100, 150, 200)


def tune_objects(folder: Path, data_root=None, log=print) -> dict:
    """Choose on the ``val`` images how a model's mask becomes objects, by object F1 at IoU 0.5 against the
    ground truth's instances, and rewrite ``biocodec.json``; the test split is not read.

    * foreground models: ``min_size`` (px) from :data:`MIN_SIZE_GRID` (objects: ``unet.foreground_objects``);
    * membrane models of datasets whose ground truth is a membrane label (ISBI): the ``cells`` rule
      (:class:`~core.segmentation.contours.CellRule`) from :data:`CELL_SEED_GRID` × :data:`CELL_AREA_GRID`.

    Ties go to the first (simplest) grid entry.
    """
    from core.segmentation.contours import CellRule
    from core.segmentation.data import instance_pairs
    from core.segmentation.metrics import object_f1

    det = U.load_unet(folder)
    meta = det.meta
    target = meta.get("target", "membranes")
    val = [p for d in meta["datasets"] for p in instance_pairs(d, ("val",), data_root)]
    if target == "membranes" and any(ref.label_kind != "membrane_label" for ref, _p, _l in val):
        raise ValueError(f"{folder}: cells are defined only for membrane-label ground truth (ISBI); "
                         f"{sorted({r.dataset for r, _p, _l in val if r.label_kind != 'membrane_label'})} have none")
    probs = [U.predict_probability(det.model, px, phases=det.phases) for _r, px, _l in val]
    if target == "foreground":
        candidates = {m: (lambda p, m=m: U.foreground_objects(U.mask_from_probability(p, det.threshold, m)))
                      for m in MIN_SIZE_GRID}
    else:
        candidates = {(seed, area): (lambda p, r=CellRule(area, seed): r.cells(U.mask_from_probability(
            p, det.threshold, det.min_size))) for seed in CELL_SEED_GRID for area in CELL_AREA_GRID}
    scores = {key: float(np.mean([object_f1(gt, objects(p), 0.5) for p, (_r, _px, gt) in zip(probs, val)]))
              for key, objects in candidates.items()}
    best = max(scores, key=scores.get)
    log("val object F1 at IoU 0.5 by " + ("min_size" if target == "foreground" else "(seed_px, min_area)") + ": "
        + ", ".join(f"{k}: {v:.4f}" for k, v in scores.items()))
    chosen_on = "val object F1 at IoU 0.5 (python -m core.segmentation.train_unet --tune-objects)"
    if target == "foreground":
        meta.update(min_size=int(best), min_size_grid=list(MIN_SIZE_GRID), val_object_f1=scores[best],
                    min_size_chosen_on=chosen_on)
    else:
        meta.update(cells={"min_area": int(best[1]), "seed_px": float(best[0])}, val_cells_f1=scores[best],
                    cells_grid={"seed_px": list(CELL_SEED_GRID), "min_area": list(CELL_AREA_GRID)},
                    cells_chosen_on=chosen_on)
    (Path(folder) / U.META_FILE).write_text(json.dumps(meta, indent=2))
    log(f"chose {best}: val object F1 {scores[best]:.4f}")
    return meta


def main(argv=None) -> int:
    from core.paths import SEG_MODELS_DIR

    p = argparse.ArgumentParser(prog="python -m core.segmentation.train_unet", description=__doc__.split("\n")[0])
    p.add_argument("datasets", nargs="+", help="catalog dataset(s) with the target's labels, e.g. isbi2012_em")
    p.add_argument("--target", choices=sorted(TARGETS), default="membranes",
                   help="membranes (membrane masks; boundary F1) or foreground (instance labels' foreground; Dice)")
    p.add_argument("--min-size", type=int, default=64, help="components smaller than this (px) are removed")
    p.add_argument("--minutes", type=float, default=60.0, help="training time budget (wall, summed over resumes)")
    p.add_argument("--out", default=str(SEG_MODELS_DIR / U.DEFAULT_MODEL_NAME))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--max-channels", type=int, default=64)
    p.add_argument("--pooling", choices=U.POOLINGS, default="max",
                   help="blurmax = anti-aliased max-pooling (shift-stable; Zhang 2019)")
    p.add_argument("--init", default=None, help="start from this model folder's weights (fine-tune)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (0.3× for the last 30 %% of the budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-minutes", type=float, default=4.0)
    p.add_argument("--snapshot-minutes", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--rethreshold", action="store_true",
                   help="do not train: choose the threshold of the model in --out again on the val images")
    p.add_argument("--tune-objects", action="store_true",
                   help="do not train: choose how the mask of the model in --out becomes objects (foreground: "
                        "min_size; ISBI membranes: the cell rule) on the val images, by object F1")
    p.add_argument("--data-root", default=None)
    a = p.parse_args(argv)
    U._torch().set_num_threads(a.threads)
    if a.rethreshold:
        rethreshold(Path(a.out), data_root=a.data_root)
        return 0
    if a.tune_objects:
        tune_objects(Path(a.out), data_root=a.data_root)
        return 0
    train(a.datasets, Path(a.out), a.minutes, target=a.target, min_size=a.min_size, data_root=a.data_root, threads=a.threads, batch=a.batch, crop=a.crop,
          base=a.base, max_channels=a.max_channels, seed=a.seed, val_minutes=a.val_minutes, snapshot_minutes=a.snapshot_minutes,
          fresh=a.fresh, max_steps=a.max_steps, pooling=a.pooling, init=a.init, lr=a.lr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
