#!/usr/bin/env bash
# One prepared training command for a lent GPU (issue #11): the wide variable-rate codecs that the CPU cannot train.
#
# Why wide: `python -m bench.latent_ceiling` showed the shipped gray model (N 64, M 96) cannot pass ~29.5 dB on EM
# even unquantised; a linear code needs M ≈ 224 values per 16×16 block for 36 dB (data/weights/README.md).
#
#   bash scripts/gpu_train.sh pack     # HERE: the catalog's train/val images of EPFL and ISBI into .gpu/data (same
#                                      # relative paths, so the catalog's split lists still apply; no test image is
#                                      # copied) and the wheels the GPU machine lacks into .whl (both ignored)
#   device run, carry [".gpu", ".whl"], timeout_s 600:
#       bash scripts/gpu_train.sh run
#   bash scripts/gpu_train.sh unpack DIR   # HERE: the files that came back (DIR = the run's files_at) into .train/gpu/
#
# `run` trains four gray jobs on the one GPU, side by side, each for MINUTES (default 6.5) at Adam lr 1e-4 and then
# ANNEAL_MINUTES (default 1.5) at 2e-5 (the same run resumed: `core.train --resume`), batch 16 × 256² crops, float32,
# no MSE warm-up. `--minutes` stops after the step in flight and writes the checkpoint; validation is left to
# `unpack`, here (entropy coding 8 rate points of the 4 val slices with M = 224 took over 30 min on this loaded 2-core
# machine, more than a device call allows).
#
# The jobs (for the next lease). On 2026-12-04 the gray learned-mse widened to N = 128 image transforms lifted the EM
# top by 2.2–2.9 dB but spent more bits on unseen gray images (MRI, stage-1 gray), so it was not shipped
# (data/weights/README.md, em-mse-n128). These jobs repeat that widening with N = 96 beside it and widen the MS-SSIM
# family (the not-shipped file is not in the tree; carry it from .train/ to continue it instead):
#
#   name             transform N  M    loss    λ ladder (8 levels)  start (data/weights/; em-msssim-vr: .gpu/start/, from git)  size
#   em-mse-n128      128          224  mse     0.0005 – 0.2         em-mse-wide.pt, widened             10.0 MB (h_s, g_a in 8 bits)
#   em-mse-n96       96           224  mse     0.0005 – 0.2         em-mse-wide.pt, widened             9.3 MB (h_s in 8 bits)
#   em-msssim-n128   128          96   msssim  0.4 – 4000           em-msssim-vr.pt, widened            5.7 MB (h_s, g_a in 8 bits)
#   em-msssim-vr     64           96   msssim  0.4 – 4000           em-msssim-vr.pt, whole (the control) 4.4 MB
#
# `--init-widen` (core.models.widen) embeds a narrow checkpoint in wider image transforms, the same function at step
# 0, so a wider model keeps the narrow one's steps instead of training from scratch.
#
# Leases so far (one H200 each; results and what was shipped: data/weights/README.md):
# - 2026-12-04 14:10, `MINUTES=5.5 ANNEAL_MINUTES=1.5` (the command ran 465 s, the call held the machine 556 s):
#   continued the N = 64 checkpoints (em-mse-wide, em-mse-wide-hi, em-msssim-vr, em-msssim-wide); 0.05 s/step for the
#   M = 224 MSE jobs (8,937 / 8,883 steps), 0.065 s/step for the MS-SSIM ones (6,292 / 6,548), four at once.
# - 2026-12-04 16:51, `MINUTES=6.5 ANNEAL_MINUTES=1.5` (the command ran 507 s), then 3.4 more minutes at 2e-5 for
#   the three wide jobs in a second call on the still-warm machine (213 s; 777 s of the 900 held in all): em-mse-n96,
#   em-mse-n128 (widened from the N = 64 em-mse-wide; 15,391 / 15,394 steps), em-msssim-n96 (10,218) and the N = 64
#   control em-mse-n64 (10,716, first call only); 0.05 s/step for every MSE job whatever its width, 0.07 for the
#   MS-SSIM one, four at once — so the GPU was not what limited the step rate (utilisation was not recorded).
#
# What travels (the tracked tree plus the carried folders) must stay under 64 MiB. The tracked tree was 63.9 MiB until
# the fixed-rate colour ladder (data/weights/he-msssim-q1..q6.pt, 26 MB) was retired with its rows on 2026-12-03; it
# is 38.9 MiB since (`git ls-files -z | xargs -0 du -cb`), which leaves room for EPFL + ISBI train/val with their
# label files (14 MB) and the wheels: `pack` reports "travels: 52 MiB of 64" (2026-12-03). MoNuSeg's are 31 MB
# (25 MB as deflated TIFF, because H&E noise does not compress): a colour run would not fit beside them.
# Measured again 2026-12-04 night: tracked tree 35.5 MiB, MoNuSeg train + val (13 tiles, already LZW with the
# horizontal predictor, 2.5 MB each, plus their masks) 29.8 MiB, so tree + tiles + wheels is about 66 MiB: a colour
# job needs the tree slimmed or fewer tiles first. The colour widening tried on the CPU instead (he-mse-n128, 2,250
# steps) did not move (data/weights/README.md).
#
# FAMILY=colour (2026-12-05) packs and trains the colour models instead, the route the CPU could not take: the shipped
# context models fine-tuned whole on the RD loss (on the CPU 5,353 steps of it were level on MoNuSeg,
# data/weights/README.md, he-msssim-ctx-joint). To fit the 64 MiB it packs the MoNuSeg *train* split alone (11
# tiles; `core.train --skip-validation` needs no val image, `unpack` validates here) and re-encodes each tile as TIFF
# with LZMA and the horizontal predictor (pixels checked equal), which tifffile decodes without imagecodecs:
# 17.8 MiB with the masks instead of 24.7 MiB as LZW TIFF, which the GPU image could not even read. `pack` printed
# "travels: 61 MiB of 64" on 2026-12-05, and the check below ran all three jobs here (2 CPU steps each, 2 min 15 s).
#
# Batch 4 × 512² crops (the pixels of 16 × 256²): on the CPU, the same fine-tune of the gray model moved on 512² crops
# (−1.7 % / −1.2 % on the EM test slices, em-msssim-ctx-512) where on 256² it had been level; it also spent 5–10 %
# more on unseen gray types and was not shipped, so measure the colour results on brightfield and Kodak too.  The
# colour twin on the CPU (he-msssim-ctx-512, 5,550 steps of batch 2 × 512²) was better on all three and is shipped
# since 2026-12-05, so the colour MS-SSIM jobs start from it.
#
#   name                       arch                 loss    λ ladder     lr (then anneal)  start (data/weights/)
#   he-msssim-ctx-joint        gained-checkerboard  msssim  0.4 – 4000   5e-5 (1e-5)       he-msssim-ctx-512.pt, whole
#   he-msssim-ctx-joint-hi     gained-checkerboard  msssim  0.4 – 4000   1e-4 (2e-5)       he-msssim-ctx-512.pt, whole
#   he-mse-ctx-joint           gained-checkerboard  mse     0.0005 – 0.2 5e-5 (1e-5)       he-mse-ctx.pt, whole
#
#   FAMILY=colour bash scripts/gpu_train.sh pack; device run with carry [".gpu", ".whl"]:
#       FAMILY=colour bash scripts/gpu_train.sh run;  then FAMILY=colour bash scripts/gpu_train.sh unpack DIR
#   (check it here first: FAMILY=colour PY=.venv/bin/python DEVICE=cpu MINUTES=0.3 ANNEAL_MINUTES=0.1 bash
#   scripts/gpu_train.sh run — the imagecodecs stand-in below is on the path here too)
#
# Only the checkpoints (.pt) come back, with their metadata (.json) and the logs in one tar ($OUT holds at most 8
# files); a checkpoint is shipped to data/weights/ only after `python -m bench.compare_checkpoints` on test slices
# shows it better.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-6.5}  # at lr 1e-4, then ANNEAL_MINUTES at lr 2e-5 (a resumed second run)
ANNEAL_MINUTES=${ANNEAL_MINUTES:-1.5}
DATASETS_EM=epfl_hippocampus_fibsem,isbi2012_em
FAMILY=${FAMILY:-em}
case "$FAMILY" in
  em) DATASETS=$DATASETS_EM CHANNELS=1 JOBS="em-mse-n128 em-mse-n96 em-msssim-n128 em-msssim-vr" CROP=${CROP:-256}
      BATCH=${BATCH:-16} ;;
  colour) DATASETS=monuseg CHANNELS=3 JOBS="he-msssim-ctx-joint he-msssim-ctx-joint-hi he-mse-ctx-joint"
      CROP=${CROP:-512} BATCH=${BATCH:-4} ;;  # 512² crops: what moved the gray context model on EM, 2026-12-05
  *) echo "FAMILY must be em or colour, not $FAMILY" >&2; exit 2 ;;
esac

pack() {
  local py=.venv/bin/python
  FAMILY=$FAMILY "$py" - <<'EOF'
import os
import shutil
from pathlib import Path
from core.catalog import split_refs
from core.paths import data_root

import numpy as np
import tifffile

root, dest = data_root(), Path(".gpu/data")
colour = os.environ["FAMILY"] == "colour"
if dest.exists():
    shutil.rmtree(dest)  # one family at a time: both would not fit
total = 0
for dataset in (("monuseg",) if colour else ("epfl_hippocampus_fibsem", "isbi2012_em")):
    splits = ("train",) if colour else ("train", "val")
    refs = split_refs(dataset, splits, root)
    for ref in refs:  # the image and the label files the catalog checks for
        for src in (Path(f) for f in (ref.source, ref.ground_truth, ref.membranes) if f):
            out = dest / src.relative_to(root)
            out.parent.mkdir(parents=True, exist_ok=True)
            if colour and src == Path(ref.source):  # LZMA + predictor: smaller, and readable without imagecodecs
                pixels = tifffile.imread(src)
                tifffile.imwrite(out, pixels, photometric="rgb", compression="lzma",
                                 compressionargs={"level": 9}, predictor=True)
                if not np.array_equal(tifffile.imread(out), pixels):
                    raise SystemExit(f"{out}: re-encoded pixels differ from {src}")
            else:
                shutil.copy2(src, out)
            total += out.stat().st_size
    print(f"{dataset}: {len(refs)} {'/'.join(splits)} images")
print(f".gpu/data: {total / 2**20:.1f} MiB")
EOF
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  # the gray MS-SSIM hyperprior the em-msssim-* jobs start from: inside the context models since 2026-12-05, its own file
  # only in git (the device gets no .git)
  rm -rf .gpu/start
  if [ "$FAMILY" = em ]; then
    mkdir -p .gpu/start
    for f in em-msssim-vr.pt em-msssim-vr.json; do git show "0ef8e13:data/weights/$f" > ".gpu/start/$f"; done
  fi
  mkdir -p .whl
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 -d .whl compressai==1.2.8 pytorch-msssim==1.0.0
  du -sh .gpu .whl
  # what `run` carries: tracked + untracked-not-ignored files, plus .gpu and .whl (the device tool's limit: 64 MiB)
  local bytes
  bytes=$( { git ls-files -z --cached --others --exclude-standard; find .gpu .whl -type f -print0; } \
           | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  echo "travels: $((bytes / 1048576)) MiB of 64"
  if [ "$bytes" -gt $((64 * 1048576)) ]; then echo "too large to travel: slim the tree first" >&2; return 1; fi
}

run() {  # PY=.venv/bin/python DEVICE=cpu MINUTES=0.1 ANNEAL_MINUTES=0.05 bash scripts/gpu_train.sh run   checks it here
  local py=${PY:-python3}
  if ! "$py" -c "import core.train, pytorch_msssim" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
  fi
  # The GPU image has no imagecodecs (its wheel is 27 MB, beyond the 64 MiB that travels); core.io reads PNG through
  # imagecodecs.png_decode, so this run puts a stand-in first on the path: Pillow, for the 8/16-bit gray PNGs that
  # the EM train split holds (exact for those modes); any other PNG is refused, not misread.  tifffile imports the
  # stand-in as imagecodecs too: every other name comes from tifffile's own pure-Python codecs (LZMA, zlib, the
  # predictor), which decode the colour family's re-encoded tiles; a codec neither has still raises.
  mkdir -p /tmp/shim
  cat > /tmp/shim/imagecodecs.py <<'PYEOF'
"""gpu_train.sh's stand-in for imagecodecs: png_decode of gray PNGs through Pillow; the rest from tifffile."""
import io

import numpy as np
from PIL import Image


def png_decode(data, **kwargs):
    with Image.open(io.BytesIO(bytes(data))) as im:
        if im.mode not in ("L", "I;16", "I;16B"):
            raise ValueError(f"gpu_train.sh stand-in: PNG mode {im.mode} not supported")
        return np.array(im)


def __getattr__(name):
    from tifffile import _imagecodecs

    return getattr(_imagecodecs, name)
PYEOF
  export PYTHONPATH="/tmp/shim${PYTHONPATH:+:$PYTHONPATH}"
  export BIOCODEC_DATA_ROOT="$PWD/.gpu/data" PYTHONUNBUFFERED=1
  local out=${OUT:-/tmp/out} T=${TRAIN_DIR:-.train/gpu}
  mkdir -p "$T" "$out"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  job() {  # job NAME ARCH TRANSFORM_N M LOSS LOW HIGH CODEC INIT LR ANNEAL_LR [extra]: MINUTES at LR, then
    # ANNEAL_MINUTES at ANNEAL_LR (the same run resumed: --resume)
    local name=$1 arch=$2 width=$3 M=$4 loss=$5 low=$6 high=$7 codec=$8 init=$9 lr1=${10} lr2=${11} minutes lr; shift 11
    for phase in "$MINUTES $lr1" "$ANNEAL_MINUTES $lr2"; do
      read -r minutes lr <<< "$phase"
      "$py" -m core.train --arch "$arch" --levels 8 --channels "$CHANNELS" --N 64 --transform-N "$width" --M "$M" \
        --loss "$loss" --lmbda-range "$low" "$high" --datasets "$DATASETS" --codec "$codec" --init "$init" --resume \
        --steps 1000000 --minutes "$minutes" --lr "$lr" --batch "$BATCH" --crop "$CROP" --seed 21 --device "${DEVICE:-cuda}" \
        --threads 2 --save-minutes 2 --no-progress --skip-validation "$@" --out "$T/$name" >> "$T/$name.log" 2>&1 \
        || { echo "$name: exit $? at lr $lr" >> "$T/$name.log"; return 0; }
    done
  }
  local W=data/weights VR=gained-mean-scale CB=gained-checkerboard
  if [ "$FAMILY" = em ]; then
    job em-mse-n128 $VR 128 224 mse 0.0005 0.2 learned-mse $W/em-mse-wide.pt 1e-4 2e-5 --init-widen --int8 h_s g_a &
    job em-mse-n96 $VR 96 224 mse 0.0005 0.2 learned-mse $W/em-mse-wide.pt 1e-4 2e-5 --init-widen --int8 h_s &
    job em-msssim-n128 $VR 128 96 msssim 0.4 4000 learned-msssim .gpu/start/em-msssim-vr.pt 1e-4 2e-5 --init-widen \
      --int8 h_s g_a &
    job em-msssim-vr $VR 64 96 msssim 0.4 4000 learned-msssim .gpu/start/em-msssim-vr.pt 1e-4 2e-5 &
  else  # the shipped context models whole, every parameter on the RD loss (as train_weights.sh he-ctx-joint)
    job he-msssim-ctx-joint $CB 64 96 msssim 0.4 4000 learned-msssim $W/he-msssim-ctx-512.pt 5e-5 1e-5 --context-bound 3 &
    job he-msssim-ctx-joint-hi $CB 64 96 msssim 0.4 4000 learned-msssim $W/he-msssim-ctx-512.pt 1e-4 2e-5 \
      --context-bound 3 &
    job he-mse-ctx-joint $CB 64 96 mse 0.0005 0.2 learned-mse $W/he-mse-ctx.pt 5e-5 1e-5 --context-bound 3 &
  fi
  wait
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
  for n in $JOBS; do
    grep -E "snapshot|resumed|exit|Error|error" "$T/$n.log" | tail -n 6
    cp "$T/$n.pt" "$out/" 2>/dev/null || echo "$n: no checkpoint"
  done
  # at most 8 files come back: the 4 checkpoints, and their JSONs with the logs as one tar
  tar -C "$T" -cf "$out/meta-and-logs.tar" $(cd "$T" && ls *.json *.log 2>/dev/null)
}

unpack() {  # then validate each checkpoint on the catalog's val split, here (slow: M = 224, 16 settings)
  local from=${1:?give the folder the files came back to}
  mkdir -p .train/gpu
  cp "$from"/*.pt .train/gpu/
  tar -xf "$from/meta-and-logs.tar" -C .train/gpu
  for n in $JOBS; do
    OMP_NUM_THREADS=2 .venv/bin/python -m core.train --channels "$CHANNELS" --datasets "$DATASETS" --out ".train/gpu/$n" \
      --validate-only --threads 2
  done
  ls -la .train/gpu
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  unpack) shift; unpack "$@" ;;
  *) echo "usage: $0 pack | run | unpack DIR" >&2; exit 2 ;;
esac
