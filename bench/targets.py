"""The learned codecs against issue #11's targets, from the held-out rows of a results database.

    python -m bench.targets [DB]            # default: the shipped results.duckdb

One row per stage-2/3 dataset × learned codec (joint colour mode: the 1-channel model on EM, the 3-channel
model on H&E), every value from rows of images no model involved saw (``core.provenance``):

* ``msssim_bd_jpeg2000`` / ``msssim_bd_avif``: BD-rate in % at equal MS-SSIM (dB) against JPEG 2000 / AVIF
  (:func:`core.bdrate.bd_rate_table`, the project's one BD-rate; NaN when not computable, ``note`` says why).
  Targets ≤ −30 % and ≤ −15 %.
* ``psnr_bd_jpeg2000`` / ``psnr_bd_avif``: the same at equal PSNR (dB).  Target ≤ 0 vs AVIF for the
  PSNR-oriented family (checkpoints trained with an MSE or MS-SSIM+L1 loss).
* ``top_psnr_db`` at ``top_psnr_bpp``: the highest mean PSNR over the codec's settings
  (:func:`core.bdrate.mean_per_setting`).  Target ≥ 36 dB on EM (stage 2), ≥ 38 dB on H&E (stage 3).
* ``dice_safe`` / ``dice_safe_jpeg2000``: the Dice-safe compression factor judged by agreement with the
  original's segmentation (:func:`core.downstream.dice_safe_two_way`; NaN = no setting qualifies).
  Target: the codec's factor ≥ 1.5 × JPEG 2000's.
* ``dice_safe_grain`` / ``dice_safe_jpeg2000_grain``: the same with decoder-side grain synthesis
  (:mod:`core.codecs.grain`): the codec's ``+grain`` variant against the better of JPEG 2000 and
  ``jpeg2000+grain`` (grain is judged like for like: it lifts JPEG 2000's agreement too).  NaN where the
  database has no ``+grain`` rows (only stage 2 selects them).
* ``monotone``: quality rises with rate — over the codec's settings in knob order, the mean bpp, PSNR and
  MS-SSIM each strictly increase (``note`` names the first step that does not).

``met_*`` columns say whether each target is met (False where the value is not computable).

Below it, :func:`weights_sizes`: every shipped checkpoint of the learned codecs against the ≤ 10 MB per
checkpoint that the issue asks for (file bytes; MB = 10**6 bytes).

Then :func:`dice_safe_markdown`: every codec's Dice-safe factor on the stage-2/3 datasets, judged both ways
(agreement with the original's segmentation, and accuracy against ground truth; ``core.downstream``), so the
``+grain`` rows stand beside the plain ones.

``--bpp-check N`` adds :func:`bpp_landing`: ``python -m core.codecs compress … --bpp T`` (the command-line path,
:func:`core.codecs.__main__.compress_file`; the dashboard's target bpp is the same :mod:`core.rate_search`
rule) on N test images of every stage-2/3 dataset per learned codec and target T in :data:`BPP_TARGETS`; the
file's bpp must land within 3 % of every target inside the codec's range on that image.
"""
from __future__ import annotations

import argparse
import math

import pandas as pd

TARGET_STAGES = (2, 3)
MSSSIM_VS_JPEG2000 = -30.0
MSSSIM_VS_AVIF = -15.0
PSNR_VS_AVIF = 0.0
TOP_PSNR_DB = {2: 36.0, 3: 38.0}
DICE_SAFE_OVER_JPEG2000 = 1.5
MAX_CHECKPOINT_BYTES = 10_000_000
PSNR_LOSSES = {"mse", "mix"}
BPP_TOLERANCE = 0.03  # relative: |achieved / target − 1|
BPP_TARGETS = (0.15, 0.3, 0.6, 1.0)  # bits per pixel

COLUMNS = ["stage", "dataset", "codec", "psnr_family", "msssim_bd_jpeg2000", "msssim_bd_avif",
           "psnr_bd_jpeg2000", "psnr_bd_avif", "top_psnr_db", "top_psnr_bpp", "dice_safe", "dice_safe_jpeg2000",
           "dice_safe_grain", "dice_safe_jpeg2000_grain", "monotone", "met_msssim_jpeg2000", "met_msssim_avif", "met_psnr_avif", "met_top_psnr", "met_dice_safe", "met_dice_safe_grain",
           "note"]


def psnr_family(codec_name: str) -> bool:
    """True when every checkpoint of the learned codec was trained with a PSNR-oriented loss (MSE or the mix)."""
    from core.codecs import get_codec

    losses = {m.meta.get("loss") for m in get_codec(codec_name).models()}
    return bool(losses) and losses <= PSNR_LOSSES


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def monotone_note(curve: pd.DataFrame) -> str:
    """'' when, over the settings in knob order, mean bpp, psnr and ms_ssim all strictly increase; else the
    first step where one does not (e.g. ``'psnr 31.24 → 31.20 dB from setting 13 to 16'``)."""
    ordered = curve.assign(_knob=pd.to_numeric(curve["setting"], errors="coerce")).sort_values(["_knob", "bpp"])
    units = {"bpp": ("bpp", ".3f"), "psnr": ("dB", ".2f"), "ms_ssim": ("", ".4f")}
    for column, (unit, fmt) in units.items():
        values, settings = ordered[column].to_numpy(float), ordered["setting"].tolist()
        for i in range(1, len(values)):
            if not values[i] > values[i - 1]:
                return (f"{column} {values[i - 1]:{fmt}} → {values[i]:{fmt}}{' ' + unit if unit else ''} "
                        f"from setting {settings[i - 1]} to {settings[i]}")
    return ""


def _safe_over_anchor(own, anchor) -> bool:
    """The Dice-safe target: ``own`` ≥ 1.5 × ``anchor``, or the anchor never safe while ``own`` is."""
    if _finite(own) and not _finite(anchor):
        return True
    return _finite(own) and own >= DICE_SAFE_OVER_JPEG2000 * anchor


def target_table(con, learned: list[str] | None = None, held_out_only: bool = True) -> pd.DataFrame:
    """:data:`COLUMNS`, one row per (stage 2/3 dataset, learned codec) that has held-out joint rows."""
    from core.bdrate import bd_rate_table, load_points, mean_per_setting
    from core.codecs.grain import SUFFIX as GRAIN_SUFFIX
    from core.codecs.registry import available_codecs
    from core.downstream import dice_safe_two_way

    learned = available_codecs("learned") if learned is None else learned
    bd = {}
    for metric in ("ms_ssim_db", "psnr"):
        for anchor in ("jpeg2000", "avif"):
            table = bd_rate_table(con, metric=metric, anchor=anchor, held_out_only=held_out_only)
            for r in table[table["colour_mode"] == "joint"].itertuples(index=False):
                bd[(metric, anchor, r.stage, r.dataset, r.codec)] = (r.bd_rate, r.reason)
    points = load_points(con, held_out_only=held_out_only)
    points = points[points["stage"].isin(TARGET_STAGES) & (points["colour_mode"] == "joint")]
    curves = mean_per_setting(points, ["bpp", "psnr", "ms_ssim"])
    safe = dice_safe_two_way(con, held_out_only=held_out_only)
    safe = safe[safe["colour_mode"] == "joint"].set_index(["stage", "dataset", "codec"])["safe_factor_agreement"]

    families = {codec: psnr_family(codec) for codec in learned}
    rows = []
    for (stage, dataset), part in curves.groupby(["stage", "dataset"], sort=True):
        for codec in learned:
            curve = part[part["codec"] == codec]
            if curve.empty:
                continue
            family = families[codec]
            top = curve.loc[curve["psnr"].idxmax()]
            values, notes = {}, []
            for metric, anchor, column in (("ms_ssim_db", "jpeg2000", "msssim_bd_jpeg2000"),
                                           ("ms_ssim_db", "avif", "msssim_bd_avif"),
                                           ("psnr", "jpeg2000", "psnr_bd_jpeg2000"), ("psnr", "avif", "psnr_bd_avif")):
                value, reason = bd.get((metric, anchor, stage, dataset, codec), (math.nan, f"no {anchor} rows"))
                values[column] = value
                if not _finite(value):
                    notes.append(f"{column}: {reason}")
            not_monotone = monotone_note(curve)
            if not_monotone:
                notes.append(f"not monotone: {not_monotone}")
            own = safe.get((stage, dataset, codec), math.nan)
            anchor_safe = safe.get((stage, dataset, "jpeg2000"), math.nan)
            met_safe = _safe_over_anchor(own, anchor_safe)
            grain = safe.get((stage, dataset, codec + GRAIN_SUFFIX), math.nan)
            anchors = [v for v in (anchor_safe, safe.get((stage, dataset, "jpeg2000" + GRAIN_SUFFIX), math.nan))
                       if _finite(v)]
            anchor_grain = max(anchors) if anchors else math.nan
            has_grain = (stage, dataset, codec + GRAIN_SUFFIX) in safe.index
            rows.append({
                "stage": int(stage), "dataset": dataset, "codec": codec, "psnr_family": family, **values,
                "top_psnr_db": float(top["psnr"]), "top_psnr_bpp": float(top["bpp"]),
                "dice_safe": own, "dice_safe_jpeg2000": anchor_safe, "dice_safe_grain": grain,
                "dice_safe_jpeg2000_grain": anchor_grain, "monotone": not not_monotone,
                "met_msssim_jpeg2000": _finite(values["msssim_bd_jpeg2000"])
                and values["msssim_bd_jpeg2000"] <= MSSSIM_VS_JPEG2000,
                "met_msssim_avif": _finite(values["msssim_bd_avif"]) and values["msssim_bd_avif"] <= MSSSIM_VS_AVIF,
                "met_psnr_avif": (_finite(values["psnr_bd_avif"]) and values["psnr_bd_avif"] <= PSNR_VS_AVIF)
                if family else None,
                "met_top_psnr": float(top["psnr"]) >= TOP_PSNR_DB[int(stage)],
                "met_dice_safe": bool(met_safe),
                "met_dice_safe_grain": _safe_over_anchor(grain, anchor_grain) if has_grain else None,
                "note": "; ".join(notes)})
    return pd.DataFrame(rows, columns=COLUMNS)


def weights_sizes(learned: list[str] | None = None) -> pd.DataFrame:
    """One row per checkpoint of the learned codecs: codec, model_id, channels, file bytes, storage, met (≤ 10 MB)."""
    from core.codecs import get_codec
    from core.codecs.registry import available_codecs

    rows = []
    for codec in available_codecs("learned") if learned is None else learned:
        for m in get_codec(codec).models():
            size = m.weights.stat().st_size
            rows.append({"codec": codec, "model_id": m.model_id, "channels": m.channels, "bytes": size,
                         "storage": m.meta.get("weights_storage", "float16 parameters"),
                         "met": size <= MAX_CHECKPOINT_BYTES})
    return pd.DataFrame(rows, columns=["codec", "model_id", "channels", "bytes", "storage", "met"])


def bpp_landing(images_per_dataset: int = 1, targets=BPP_TARGETS, learned: list[str] | None = None,
                data_root=None, workdir=None) -> pd.DataFrame:
    """Where ``--bpp T`` lands: one row per (dataset, image, learned codec, target bpp) with the achieved file
    bpp (8 · bytes of the whole ``.bcc`` file / (H · W)), ``deviation`` (achieved / target − 1), ``in_range``
    (the target lies inside the rates the codec reaches on that image) and ``met`` (in range and
    |deviation| ≤ :data:`BPP_TOLERANCE`; None out of range).  Images: ``images_per_dataset`` evenly spaced
    test-split images of every stage-2/3 dataset, each as its file holds it (page, bit depth)."""
    import tempfile
    from pathlib import Path

    from core.catalog import evenly_spaced
    from core.codecs.__main__ import compress_file
    from core.codecs.registry import available_codecs
    from core.stages import stage_refs

    learned = available_codecs("learned") if learned is None else learned
    refs = []
    for stage in TARGET_STAGES:
        by_dataset: dict[str, list] = {}
        for ref in stage_refs(stage, data_root, splits=("test",)):
            by_dataset.setdefault(ref.dataset, []).append(ref)
        for dataset in sorted(by_dataset):
            refs += evenly_spaced(by_dataset[dataset], images_per_dataset)
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        out = Path(tmp) / "landing.bcc"
        for ref in refs:
            for codec in learned:
                for target in targets:
                    got = compress_file(Path(ref.source), out, codec, bpp=float(target), bit_depth=ref.bit_depth,
                                        page=ref.page)
                    in_range = got["in_range"]
                    deviation = got["bpp"] / target - 1.0
                    rows.append({"stage": ref.stage, "dataset": ref.dataset, "image_id": ref.image_id, "codec": codec,
                                 "target_bpp": float(target), "bpp": got["bpp"], "deviation": deviation,
                                 "in_range": in_range,
                                 "met": (abs(deviation) <= BPP_TOLERANCE) if in_range else None})
    return pd.DataFrame(rows, columns=["stage", "dataset", "image_id", "codec", "target_bpp", "bpp", "deviation",
                                       "in_range", "met"])


def landing_markdown(landing: pd.DataFrame) -> str:
    """One line per (dataset, codec): worst |deviation| over the in-range targets, ✓ when within 3 %."""
    lines = ["| dataset | codec | images | targets in range | worst deviation (≤ 3 %) | out of range |",
             "|---|---|---|---|---|---|"]
    for (dataset, codec), part in landing.groupby(["dataset", "codec"], sort=True):
        inside = part[part["in_range"]]
        worst = f"{100 * inside['deviation'].abs().max():.1f} %" if len(inside) else "—"
        mark = "✓" if len(inside) and inside["met"].all() else "✗"
        outside = ", ".join(f"{r.target_bpp:g} ({r.image_id})" for r in part[~part["in_range"]].itertuples())
        lines.append(f"| {dataset} | {codec} | {part['image_id'].nunique()} | {len(inside)} | {worst} {mark} | "
                     f"{outside or '—'} |")
    return "\n".join(lines)


def _cell(value, fmt: str, met) -> str:
    text = "—" if not _finite(value) else format(value, fmt)
    return text if met is None else f"{text} {'✓' if met else '✗'}"


def _grain_cell(r) -> str:
    if pd.isna(r.met_dice_safe_grain):  # None, or NaN once pandas has mixed it with booleans
        return "(no +grain rows)"
    return f"{_cell(r.dice_safe_grain, '.1f', bool(r.met_dice_safe_grain))} vs {_cell(r.dice_safe_jpeg2000_grain, '.1f', None)}"


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown: one line per dataset × codec, ✓/✗ per target (— = not computable)."""
    lines = ["| stage | dataset | codec | MS-SSIM BD vs J2K (≤ −30 %) | vs AVIF (≤ −15 %) | PSNR BD vs J2K | "
             "vs AVIF (≤ 0, PSNR family) | top PSNR dB @ bpp (≥ 36 EM / 38 H&E) | Dice-safe × (≥ 1.5 × J2K) | "
             "with grain synthesis × (≥ 1.5 × J2K's best) | monotone |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(
            f"| {r.stage} | {r.dataset} | {r.codec} | {_cell(r.msssim_bd_jpeg2000, '+.1f', r.met_msssim_jpeg2000)} | "
            f"{_cell(r.msssim_bd_avif, '+.1f', r.met_msssim_avif)} | {_cell(r.psnr_bd_jpeg2000, '+.1f', None)} | "
            f"{_cell(r.psnr_bd_avif, '+.1f', r.met_psnr_avif)} | "
            f"{_cell(r.top_psnr_db, '.2f', r.met_top_psnr)} @ {r.top_psnr_bpp:.2f} | "
            f"{_cell(r.dice_safe, '.1f', r.met_dice_safe)} vs {_cell(r.dice_safe_jpeg2000, '.1f', None)} | "
            f"{_grain_cell(r)} | "
            f"{'✓' if r.monotone else '✗'} |")
    notes = [f"- {r.dataset} {r.codec}: {r.note}" for r in table.itertuples(index=False) if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def dice_safe_markdown(con, held_out_only: bool = True, stages=TARGET_STAGES) -> str:
    """Per stage-2/3 dataset, every codec (joint mode) with its Dice-safe factor by agreement and by ground truth
    (:func:`core.downstream.dice_safe_two_way`), best agreement first; — = no setting qualifies."""
    from core.downstream import dice_safe_two_way

    safe = dice_safe_two_way(con, held_out_only=held_out_only)
    safe = safe[safe["stage"].isin(stages) & (safe["colour_mode"] == "joint")]
    lines = []
    for (stage, dataset), part in safe.groupby(["stage", "dataset"], sort=True):
        part = part.sort_values(["safe_factor_agreement", "codec"], ascending=[False, True], na_position="last")
        lines += [f"\n{dataset} (stage {stage}; agreement threshold {part['threshold_agreement'].iloc[0]:.3f}):\n",
                  "| codec | by agreement × (setting) | by ground truth × (setting) |", "|---|---|---|"]
        for r in part.itertuples(index=False):
            agree = "—" if not _finite(r.safe_factor_agreement) else f"{r.safe_factor_agreement:.1f} ({r.setting_agreement})"
            truth = ("—" if not _finite(r.safe_factor_ground_truth)
                     else f"{r.safe_factor_ground_truth:.1f} ({r.setting_ground_truth})")
            lines.append(f"| {r.codec} | {agree} | {truth} |")
    return "\n".join(lines).lstrip("\n")


def main(argv=None) -> int:
    from core.paths import default_db
    from core.store import open_reader

    p = argparse.ArgumentParser(prog="python -m bench.targets", description=__doc__.split("\n\n")[0])
    p.add_argument("db", nargs="?", default=str(default_db()))
    p.add_argument("--include-training", action="store_true",
                   help="also use rows of images a model involved was trained / validated on")
    p.add_argument("--bpp-check", type=int, default=0, metavar="N",
                   help="also run `--bpp T` on N test images per stage-2/3 dataset (catalog data root) for "
                        f"T in {', '.join(map(str, BPP_TARGETS))} bpp and report the worst deviation")
    args = p.parse_args(argv)
    con = open_reader(args.db)
    try:
        table = target_table(con, held_out_only=not args.include_training)
        safe_text = dice_safe_markdown(con, held_out_only=not args.include_training)
    finally:
        con.close()
    which = "all rows, including images seen in training" if args.include_training else "held-out rows only"
    print(f"Issue #11 targets, {args.db} ({which}); BD-rate in %, negative = fewer bits than the anchor\n")
    print(markdown(table))
    print("\nDice-safe compression factor of every codec, judged two ways (core.downstream; '+grain' = decoder-side "
          "grain synthesis):\n")
    print(safe_text)
    print("\nCheckpoints (≤ 10 MB each):\n")
    for r in weights_sizes().itertuples(index=False):
        print(f"- {r.codec} ({r.channels} ch): {r.model_id}.pt {r.bytes / 1e6:.2f} MB {'✓' if r.met else '✗'}")
    if args.bpp_check > 0:
        print(f"\n`--bpp` landing ({args.bpp_check} test image(s) per dataset; deviation = achieved file bpp / "
              "target − 1):\n")
        print(landing_markdown(bpp_landing(args.bpp_check)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
