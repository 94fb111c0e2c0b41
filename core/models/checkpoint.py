"""Checkpoint files: how a learned codec's ``state_dict`` is stored on disk, and read back.

A checkpoint is a ``torch.save``'d ``state_dict`` (read with ``torch.load(..., weights_only=True)``).  The
learnable parameters are float16 (:func:`core.train.save_checkpoint`).  For a wide model that is still too
large to commit (the M = 224 gray ``learned-mse``: its hyper-synthesis ``h_s`` alone is 7.2 MB in float16),
the 4-D convolution weights of chosen modules are stored in **8 bits**: symmetric int8 per slice along the
weight's first dimension (a Conv2d's output channel, a ConvTranspose2d's input channel), with one float32
scale per slice (``max |w| / 127``), under the keys ``NAME.int8`` and ``NAME.int8_scale`` instead of
``NAME``.  :func:`read_state_dict` turns them back into ``q · scale`` in float32 — one IEEE multiply per
weight, the same on every machine — so encoder and decoder run the same network.  The hyper-synthesis
only predicts the latents' means and scales (its output is rounded to a fixed-point grid and a 64-entry
scale table by :mod:`core.models.exact`), which is why it is the module that tolerates 8-bit weights; the
image transforms ``g_a``/``g_s`` stay float16.  The file's digest (the codec's version) changes with the
storage, so results made with the float16 file are regenerated, not relabelled.
"""
from __future__ import annotations

from pathlib import Path

import torch

INT8 = ".int8"
INT8_SCALE = ".int8_scale"


def int8_slices(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: ``weight`` as int8 per slice along dim 0 and the float32 scale of each slice.

    ``q · scale`` (see :func:`dequantize`) is the stored weight; an all-zero slice gets scale 1.
    """
    w = weight.detach().float()
    peak = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    q = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 weight an int8 slice pair stands for (``q · scale``, exact in float32 arithmetic)."""
    return q.to(torch.float32) * scale.to(torch.float32)


def int8_names(state: dict, modules: tuple[str, ...]) -> list[str]:
    """The keys of ``state`` that :func:`pack_int8` stores in 8 bits: 4-D ``*.weight`` tensors under ``modules``."""
    return [k for k, v in state.items()
            if k.endswith(".weight") and v.ndim == 4 and any(k.startswith(m + ".") for m in modules)]


def pack_int8(state: dict, modules: tuple[str, ...]) -> dict:
    """A copy of ``state`` with the convolution weights under ``modules`` (e.g. ``("h_s",)``) in 8 bits."""
    names = set(int8_names(state, modules))
    if modules and not names:
        raise ValueError(f"no convolution weight under {', '.join(modules)} to store in 8 bits")
    packed = {}
    for k, v in state.items():
        if k in names:
            packed[k + INT8], packed[k + INT8_SCALE] = int8_slices(v)
        else:
            packed[k] = v
    return packed


def unpack_int8(state: dict) -> dict:
    """``state`` with every ``NAME.int8`` / ``NAME.int8_scale`` pair replaced by the float32 ``NAME``."""
    out = {}
    for k, v in state.items():
        if k.endswith(INT8_SCALE):
            continue
        if k.endswith(INT8):
            name = k[: -len(INT8)]
            if name + INT8_SCALE not in state:
                raise ValueError(f"checkpoint has {k} but no {name + INT8_SCALE}")
            out[name] = dequantize(v, state[name + INT8_SCALE])
        else:
            out[k] = v
    return out


def int8_modules(state: dict) -> list[str]:
    """The modules whose weights a (packed) checkpoint stores in 8 bits, e.g. ``['h_s']``."""
    return sorted({k.split(".")[0] for k in state if k.endswith(INT8)})


def read_state_dict(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`core.train.save_checkpoint` (``weights_only=True``), 8-bit weights
    expanded: the result loads into the model with ``model.load_state_dict``."""
    return unpack_int8(torch.load(path, map_location=map_location, weights_only=True))


def repack(src: str | Path, out: str | Path, int8: tuple[str, ...]) -> dict:
    """Store the checkpoint ``src`` (with its ``.json``) again as ``out.pt`` / ``out.json`` with ``int8`` modules
    in 8 bits, through the same writer as training (:func:`core.train.save_checkpoint`: entropy tables rebuilt).

    The JSON keeps every field of the source, with the new digest, ``weights_storage`` and ``repacked_from``;
    its ``validation`` was measured on the source weights, so it is marked for re-measurement
    (``python -m core.train --validate-only``).  Returns the new metadata.
    """
    import hashlib
    import json

    from core.models import build_from_meta
    from core.train import save_checkpoint, stem_path, storage_note

    src, out = Path(src), Path(out)
    meta = json.loads(src.with_suffix(".json").read_text())
    model = build_from_meta(meta)
    model.load_state_dict(read_state_dict(src))
    weights = save_checkpoint(model, out, int8=tuple(int8))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta.update(weights_sha256=digest, weights_storage=storage_note(tuple(int8)),
                repacked_from={"checkpoint": src.name, "sha256": meta.get("weights_sha256"),
                               "bytes": src.stat().st_size, "int8": list(int8)})
    meta["validation"] = {**meta.get("validation", {}), "stale": "measured on the source weights; re-measure"}
    stem_path(out, ".json").write_text(json.dumps(meta, indent=1))
    return meta


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m core.models.checkpoint",
                                description="re-store a checkpoint with some modules' weights in 8 bits")
    p.add_argument("src", type=Path, help="checkpoint .pt (its .json beside it)")
    p.add_argument("out", type=Path, help="output stem (writes OUT.pt and OUT.json)")
    p.add_argument("--int8", nargs="+", required=True, metavar="MODULE", help="e.g. h_s")
    args = p.parse_args(argv)
    meta = repack(args.src, args.out, tuple(args.int8))
    size = Path(str(args.out) + ".pt").stat().st_size
    print(f"{args.out}.pt: {size} bytes (was {meta['repacked_from']['bytes']}), sha256 {meta['weights_sha256']}")


if __name__ == "__main__":
    main()
