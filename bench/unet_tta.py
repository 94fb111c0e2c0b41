"""Does test-time augmentation make the EM U-Nets agree with themselves under a 1-px shift? (issue #12)

    OMP_NUM_THREADS=1 python -m bench.unet_tta --split val          # choose (catalog val images)
    OMP_NUM_THREADS=1 python -m bench.unet_tta --split test         # report, after choosing

For each EM dataset (ISBI: membrane U-Net and the cells it encloses; EPFL: mitochondria U-Net and membrane
U-Net) the runner's own segmenter (:func:`core.segmentation.noise_floor.evaluator_for`) is scored with every
U-Net run as (:data:`TTAS`) ``one-pass`` (one prediction), ``phase-average`` (the mean over the 2×2 placements of
the input on the pooling lattice, ``phase_average: 2`` in a model's ``biocodec.json``; 4× the network time) and
``d4`` (one pass wrapped in :class:`D4Average`: the probability averaged over the 8 rotations / reflections of
the input, each prediction mapped back; 8× the network time), on the split's images:

* accuracy against the ground truth (:func:`core.segmentation.__main__.score_refs`: object F1 @ IoU 0.5, pixel
  Dice, boundary F1 @ 2 px — what ``python -m core.segmentation accuracy`` prints);
* the noise floor (:func:`core.segmentation.noise_floor.image_floor`: σ = 0.5 noise and 1-px shift agreement,
  what ``python -m core.segmentation noise-floor`` stores), means over the images;
* segmentation seconds per image (wall clock, this process; the ratio d4 / none is the cost).

Measured 2026-12-02 on val (ISBI 18–19, EPFL val slices): d4 lowered ISBI's accuracy (cells F1 0.876 → 0.867) and
its shift F1 (0.991 → 0.984), and EPFL's mitochondria accuracy (F1 0.978 → 0.958) at 6× the time, so the runner
does not use it.  Measured 2026-12-03 on val, ISBI: ``phase-average`` against ``one-pass`` kept the accuracy
(cells F1 0.8775 vs 0.8764, boundary F1 0.8853 vs 0.8856) and raised the shift Dice (0.9926 vs 0.9863; shift F1
0.9880 vs 0.9908), so ``unet-membranes-isbi`` runs with it; on test it lifted the cells' shift F1 from 0.979 to
0.983 (the issue's 0.98).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

DATASETS = {"isbi2012_em": "isbi_membranes", "epfl_hippocampus_fibsem": "epfl_mito"}


def dihedral_views() -> list[tuple[int, bool]]:
    """The 8 symmetries of the square as (quarter turns, transpose first)."""
    return [(turns, transpose) for transpose in (False, True) for turns in range(4)]


def to_view(x, turns: int, transpose: bool):
    """``x`` (…, H, W) seen through one symmetry (a torch tensor or a numpy array)."""
    import torch

    if isinstance(x, torch.Tensor):
        return torch.rot90(x.transpose(-1, -2) if transpose else x, turns, (-2, -1))
    return np.rot90(np.swapaxes(x, -1, -2) if transpose else x, turns, (-2, -1))


def from_view(y, turns: int, transpose: bool):
    """The inverse of :func:`to_view`."""
    import torch

    if isinstance(y, torch.Tensor):
        y = torch.rot90(y, -turns, (-2, -1))
        return y.transpose(-1, -2) if transpose else y
    y = np.rot90(y, -turns, (-2, -1))
    return np.swapaxes(y, -1, -2) if transpose else y


def d4_average(model):
    """A module whose logits are those of the mean probability of ``model`` over the 8 dihedral views of its
    input (the input is already padded to the U-Net's multiple, so every view fits the network)."""
    import torch

    class D4Average(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            probs = [from_view(torch.sigmoid(self.inner(to_view(x, k, t).contiguous())), k, t)
                     for k, t in dihedral_views()]
            return torch.logit(torch.stack(probs).mean(0), eps=1e-7)

    return D4Average(model).eval()


TTAS = ("one-pass", "phase-average", "d4")


def with_tta(evaluator, tta: str):
    """A copy of ``evaluator`` whose U-Nets (membrane detector, U-Net object segmenter) run under ``tta``
    (one of :data:`TTAS`, whatever their ``biocodec.json`` says; ``none``: ``evaluator`` as it is); the loaded
    models are shared, never mutated (they are cached)."""
    from core.segmentation.unet import TrainedUNet

    if tta == "none":
        return evaluator
    if tta not in TTAS:
        raise ValueError(f"tta must be none or one of {', '.join(TTAS)}, got {tta!r}")

    def wrap(unet):
        if not isinstance(unet, TrainedUNet):
            return unet
        meta = {**(unet.meta or {}), "phase_average": 2 if tta == "phase-average" else 1}
        model = d4_average(unet.model) if tta == "d4" else unet.model
        return dataclasses.replace(unet, model=model, meta=meta)

    objects = evaluator.objects
    if objects is not None:
        objects = dataclasses.replace(objects, model=wrap(objects.model))
    return type(evaluator)(evaluator.dataset, objects, wrap(evaluator.membranes))


def measure(dataset: str, split: str, tta: str, data_root=None) -> dict:
    """Accuracy, noise floor and seconds per image of ``dataset``'s segmenter with ``tta`` on ``split``."""
    from core.catalog import catalog_id, split_refs
    from core.datasets import load_ref
    from core.segmentation.__main__ import score_refs
    from core.segmentation.noise_floor import evaluator_for, image_floor, image_rng, summarize

    refs = split_refs(dataset, (split,), data_root)
    if not refs:
        raise SystemExit(f"no {dataset} images in split {split!r} (data root missing?)")
    evaluator = with_tta(evaluator_for(dataset), tta)
    t0 = time.perf_counter()
    accuracy = score_refs(DATASETS[dataset], refs, evaluator)
    seconds = (time.perf_counter() - t0) / len(refs)
    floors = []
    for ref in refs:
        image = load_ref(ref)
        floors.append(image_floor(evaluator, image.pixels, image_rng(catalog_id(ref)), image.bit_depth))
    return {"images": len(refs), "seconds": seconds, "accuracy": accuracy, "floor": summarize(floors)}


def row(label: str, result: dict) -> str:
    def f(v):
        return f"{v:7.4f}" if v is not None else "      —"

    acc, floor = result["accuracy"], result["floor"]
    shift = {m: floor["shift"].get(m, {}).get("mean") for m in ("dice", "f1", "boundary_f1")}
    noise = min(v["mean"] for v in floor["noise"].values())
    return (f"{label:30s} {f(acc['f1'])} {f(acc['dice'])} {f(acc['boundary_f1'])}   "
            f"{f(shift['dice'])} {f(shift['f1'])} {f(shift['boundary_f1'])}   {f(noise)}  {result['seconds']:6.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="val", help="catalog split (default val: choose there, report on test)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--data-root", default=None)
    args = p.parse_args(argv)
    print(f"split {args.split}: accuracy vs ground truth (F1, Dice, BF1) | 1-px shift agreement (Dice, F1, BF1) "
          "| lowest σ=0.5 noise agreement | s/image")
    for dataset in args.datasets:
        for tta in TTAS:
            result = measure(dataset, args.split, tta, args.data_root)
            print(row(f"{dataset} [{result['images']}] {tta}", result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
