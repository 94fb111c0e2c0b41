#!/usr/bin/env bash
# Reproduce the shipped learned-codec checkpoints in data/weights/ (CPU; resumable; one thread per job).
#
#   bash scripts/train_weights.sh em       # gray  learned-msssim: EPFL + ISBI catalog train split
#   bash scripts/train_weights.sh he       # colour learned-msssim: MoNuSeg catalog train split, from he-msssim-q4
#                                          # (the retired fixed-rate ladder; taken from git history, commit 0b81796)
#   bash scripts/train_weights.sh em-mix   # gray  learned-mix: fine-tune of the em model with the Zhao mix
#   bash scripts/train_weights.sh em-mse-wide  # gray learned-mse (PSNR-oriented): M = 224, MSE, warm start from em
#   bash scripts/train_weights.sh he-mse   # colour learned-mse (PSNR-oriented): MSE, fine-tune of he
#   bash scripts/train_weights.sh he-mse-wide  # colour learned-mse at M = 192 (warm start from he, latent layers fresh)
#   bash scripts/train_weights.sh he-mse-hi  # colour learned-mse with the ladder's top λ ×4 (0.8): fine-tune of he-mse
#   bash scripts/train_weights.sh he-more  # colour: continue he-msssim-vr (data/weights/ or git 0ef8e13; fresh
#                                          # optimiser; a new checkout has no .train/ resume snapshots)
#   STEPS=20000 bash scripts/train_weights.sh em   # longer (the shipped step counts are in each JSON)
#   LR=5e-5 bash scripts/train_weights.sh em       # resume with a lower learning rate (anneal the end)
#   MINUTES=90 bash scripts/train_weights.sh em    # also stop after 90 min of wall time (resumable as after kill -TERM)
#   THREADS=2 bash scripts/train_weights.sh em     # torch threads (default 1: two jobs side by side on 2 cores)
#   BF16=1 CROP=256 bash scripts/train_weights.sh em  # bf16 autocast, larger crops (see the bf16 note below)
#   bash scripts/train_weights.sh em-mse-more  # gray learned-mse: continue the shipped em-mse-wide (fresh optimiser)
#   bash scripts/train_weights.sh em-mse-n128  # gray learned-mse: em-mse-wide widened to N = 128 image transforms
#   bash scripts/train_weights.sh em-ctx   # gray learned-msssim + checkerboard context (only the context trains)
#   bash scripts/train_weights.sh he-ctx   # colour learned-msssim + checkerboard context, |u| bounded at 3
#   bash scripts/train_weights.sh he-mse-ctx  # colour learned-mse + checkerboard context, |u| bounded at 3
#   bash scripts/train_weights.sh he-ctx-joint  # colour learned-msssim: he-msssim-ctx fine-tuned whole (RD loss)
#   bash scripts/train_weights.sh em-ctx-joint  # gray learned-msssim: em-msssim-ctx fine-tuned whole (RD loss)
#   bash scripts/train_weights.sh em-ctx-512  # the same on 512² crops (batch 2; measured, not shipped)
#   bash scripts/train_weights.sh he-ctx-512  # he-ctx-joint on 512² crops (batch 2; shipped colour learned-msssim)
#   bash scripts/train_weights.sh he-mse-ctx-512  # the same for the colour learned-mse, from he-mse-ctx (measured, not shipped)
#   bash scripts/train_weights.sh em-more  # gray learned-msssim: continue the shipped em-msssim-vr (fresh optimiser)
#   bash scripts/train_weights.sh he-mse-n128  # colour learned-mse: he-mse widened to N = 128 image transforms
#   bash scripts/train_weights.sh he-mse-more  # colour learned-mse: continue the shipped he-mse (fresh optimiser)
#
# Every job reads its images from the catalog (data/stages.toml): it trains on the datasets' `train` split,
# validates on `val`, never sees `test`, and records the catalog ids it saw in NAME.json (`training_images`).
# Jobs write .train/NAME.{pt,json,resume.pt,log}; stop one early with `kill -TERM PID` (it finishes the step,
# snapshots, then writes the checkpoint and its validation); run the same command again to resume.  A snapshot
# resumes only from the --init it began from: once a result is shipped over its start (the *-more jobs), the
# next run stops with a message; move .train/NAME.* away to start afresh from the shipped file.
# Ship a result by copying .train/NAME.pt and .train/NAME.json to data/weights/ after measuring it
# (python -m bench.compare_checkpoints) against the checkpoint it replaces.
#
# Architecture: gained mean-scale hyperprior (core/models/variable_rate.py), N = 64 (TN: the image transforms'
# width, default 64), M = 96, 8 gain levels
# with a geometric λ ladder, batch 8 × 128² random crops (BATCH, CROP) with flips, Adam lr 2e-4, first 300 steps MSE
# (MS-SSIM of a random-start model has zero gradient).  bf16 autocast (BF16=1 → --bf16) depends on the host CPU:
# measure it first with `python -m bench.torch_bf16`.  On 2026-12-01 this machine's CPU (AMD EPYC without
# AMX/AVX-512-BF16) ran a bf16 step 25× slower than float32; on 2026-12-03 the VM had AVX-512-BF16 and bf16 ran
# 1.4× (128² crops) to 3× (256² crops) faster.  Each checkpoint's JSON records bf16_history.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
T=.train
mkdir -p "$T"
export OMP_NUM_THREADS=${THREADS:-1}
STEPS=${STEPS:-14000}

start() {  # start NAME: checkpoint NAME.pt to start from — data/weights/ while it is shipped, else its last shipped
  # version from git (the last commit that held it, with its JSON: the new run's 'base' records what it saw) under
  # $T/start/
  local name=$1 rev
  if [ -f "data/weights/$name.pt" ]; then echo "data/weights/$name.pt"; return; fi
  rev=$(git rev-list -1 HEAD -- "data/weights/$name.pt")  # the commit that removed it, or last changed it
  [ -n "$rev" ] || { echo "data/weights/$name.pt was never shipped" >&2; return 1; }
  git cat-file -e "$rev:data/weights/$name.pt" 2>/dev/null || rev="$rev^"
  mkdir -p "$T/start"
  for f in "$name.json" "$name.pt"; do
    [ -f "$T/start/$f" ] || { git show "$rev:data/weights/$f" > "$T/start/$f.part" && mv "$T/start/$f.part" "$T/start/$f"; }
  done
  echo "$T/start/$name.pt"
}

vr() {  # vr NAME CHANNELS LOSS LOW HIGH DATASETS CODEC [extra args]   (ARCH: another variable-rate architecture)
  local name=$1 ch=$2 loss=$3 low=$4 high=$5 datasets=$6 codec=$7; shift 7
  "$PY" -m core.train --arch "${ARCH:-gained-mean-scale}" --levels 8 --lmbda-range "$low" "$high" --channels "$ch" \
    --N 64 --transform-N "${TN:-64}" --M "${M:-96}" --loss "$loss" --datasets "$datasets" --steps "$STEPS" --batch "${BATCH:-8}" --crop "${CROP:-128}" \
    --lr "${LR:-2e-4}" \
    --seed 21 --threads "${THREADS:-1}" --save-every 500 --save-minutes 5 --resume --codec "$codec" --out "$T/$name" \
    --no-progress ${BF16:+--bf16} ${MINUTES:+--minutes "$MINUTES"} "$@" >> "$T/$name.log" 2>&1
  tail -n 16 "$T/$name.log"
}

case "${1:-}" in
  em)     vr em-msssim-vr 1 msssim 0.4 4000 epfl_hippocampus_fibsem,isbi2012_em learned-msssim --warmup 300 ;;
  he)     # starts from the fixed-rate colour checkpoint at λ 60 (9,700 steps; gain 1 placed at λ 60 on the ladder),
          # retired from data/weights/ on 2026-12-03 with the rest of that ladder: git keeps it
          mkdir -p "$T"
          for f in he-msssim-q4.json he-msssim-q4.pt; do  # its JSON too: the new run's 'base' records its images
            [ -f "$T/$f" ] || { git show "0b81796:data/weights/$f" > "$T/$f.part" && mv "$T/$f.part" "$T/$f"; }
          done
          vr he-msssim-vr 3 msssim 0.4 4000 monuseg learned-msssim --init "$T/he-msssim-q4.pt" ;;
  em-ctx) # gray learned-msssim with a checkerboard context model (core/models/context.py): the shipped
          # em-msssim-vr as the start (--init-matching; the context is new and, zero at first, is the hyperprior),
          # only the context trained, on the rate (--entropy-only: transforms, hyperprior and gains frozen)
          ARCH=gained-checkerboard LR=${LR:-1e-3} CROP=${CROP:-256} vr em-msssim-ctx 1 msssim 0.4 4000 \
            epfl_hippocampus_fibsem,isbi2012_em learned-msssim --init "$(start em-msssim-vr)" --init-matching \
            --entropy-only ;;
  he-ctx) # colour learned-msssim with a checkerboard context model: as em-ctx, from the shipped he-msssim-vr, with
          # the context's input bounded, |u| ≤ 3 (the 99th percentile on MoNuSeg train tiles; the first, unbounded
          # run spent up to 21 % more bits than its hyperprior on the brightfield test images: data/weights/README.md)
          ARCH=gained-checkerboard LR=${LR:-1e-3} CROP=${CROP:-256} vr he-msssim-ctx 3 msssim 0.4 4000 monuseg \
            learned-msssim --init "$(start he-msssim-vr)" --init-matching --entropy-only --context-bound 3 ;;
  he-mse-ctx) # colour learned-mse with a checkerboard context model: as he-ctx, from the shipped he-mse
          ARCH=gained-checkerboard LR=${LR:-1e-3} CROP=${CROP:-256} vr he-mse-ctx 3 mse 0.0005 0.2 monuseg \
            learned-mse --init "$(start he-mse)" --init-matching --entropy-only --context-bound 3 ;;
  he-ctx-joint) # colour learned-msssim: the shipped he-msssim-ctx whole as the start, *everything* trained on the
          # rate-distortion loss (transforms, hyperprior, gains and context together; no --entropy-only), so the
          # transforms learn latents the context predicts.  ~0.8 s/step with THREADS=2 BF16=1 on this CPU.  Run on
          # 2026-12-05 (5,353 steps, lr 5e-5 then 1e-5): level on the MoNuSeg test tiles, −28 % MS-SSIM BD-rate on brightfield, worse
          # on Kodak; not shipped (data/weights/README.md, he-msssim-ctx-joint); em-ctx-joint (1,553 steps) level too
          ARCH=gained-checkerboard LR=${LR:-5e-5} CROP=${CROP:-256} vr he-msssim-ctx-joint 3 msssim 0.4 4000 monuseg \
            learned-msssim --init "$(start he-msssim-ctx)" --context-bound 3 ;;
  em-ctx-joint) # gray learned-msssim: as he-ctx-joint, from the shipped em-msssim-ctx (unbounded, as it was trained)
          ARCH=gained-checkerboard LR=${LR:-5e-5} CROP=${CROP:-256} vr em-msssim-ctx-joint 1 msssim 0.4 4000 \
            epfl_hippocampus_fibsem,isbi2012_em learned-msssim --init "$(start em-msssim-ctx)" ;;
  em-ctx-512) # as em-ctx-joint on 512² crops (batch 2: the pixels of 8 × 256²).  On 256² crops the hyper-latent
          # grid is 4 × 4, so h_a/h_s's 5 × 5 convolutions see zero padding almost everywhere, while the test slices'
          # grids are 8 × 8 to 16 × 12: the mismatch that made 128² → 256² cut the bits by a tenth (2026-12-03).
          # Run 2026-12-05 (MINUTES=55, stopped at 2,405 steps): −1.7 % / −1.2 % MS-SSIM BD-rate on the EPFL / ISBI
          # test slices, 5–10 % more bits on the unseen gray types: not shipped (data/weights/README.md)
          ARCH=gained-checkerboard LR=${LR:-5e-5} CROP=512 BATCH=2 vr em-msssim-ctx-512 1 msssim 0.4 4000 \
            epfl_hippocampus_fibsem,isbi2012_em learned-msssim --init "$(start em-msssim-ctx)" ;;
  he-ctx-512) # the colour twin of em-ctx-512: he-msssim-ctx whole on 512² crops, batch 2.  Run 2026-12-05
          # (THREADS=2 BF16=1 STEPS=80000 MINUTES=85, 5,550 steps): −1.1 % MS-SSIM BD-rate on the MoNuSeg test tiles,
          # −22.8 % on brightfield, −0.8 % on Kodak: shipped as data/weights/he-msssim-ctx-512 (data/weights/README.md)
          ARCH=gained-checkerboard LR=${LR:-5e-5} CROP=512 BATCH=2 vr he-msssim-ctx-512 3 msssim 0.4 4000 monuseg \
            learned-msssim --init "$(start he-msssim-ctx)" --context-bound 3 ;;
  he-mse-ctx-512) # the PSNR-oriented colour twin of he-ctx-512: the shipped he-mse-ctx fine-tuned whole (RD loss,
          # every parameter) on 512² crops, batch 2, lr 5e-5.  Run 2026-12-05 (THREADS=2 BF16=1 STEPS=80000 MINUTES=82,
          # 6,857 steps): −0.2 % PSNR BD-rate on the MoNuSeg test tiles, +0.8 % on brightfield: not shipped
          # (data/weights/README.md, he-mse-ctx-512)
          ARCH=gained-checkerboard LR=${LR:-5e-5} CROP=512 BATCH=2 vr he-mse-ctx-512 3 mse 0.0005 0.2 monuseg \
            learned-mse --init "$(start he-mse-ctx)" --context-bound 3 ;;
  em-more) # the shipped gray checkpoint as the start (fine-tune, lr 1e-4 by default), e.g. with BF16=1 CROP=256
          LR=${LR:-1e-4} vr em-msssim-vr-more 1 msssim 0.4 4000 epfl_hippocampus_fibsem,isbi2012_em learned-msssim \
            --init "$(start em-msssim-vr)" ;;
  he-more) # the shipped colour checkpoint as the start (its steps count on in the new JSON's 'base')
          # The shipped he-msssim-vr (54,995 steps) is this target's result: THREADS=2 BF16=1 CROP=256 STEPS=60000
          # LR=1e-4 to 12,522 steps from the 41,295-step file (git show 929ae49~1:data/weights/he-msssim-vr.pt), then
          # STEPS=13700 LR=2e-5 (data/weights/README.md); running it again continues from the new one
          vr he-msssim-vr-more 3 msssim 0.4 4000 monuseg learned-msssim --init "$(start he-msssim-vr)" ;;
  em-mse-wide) # the PSNR-oriented gray family at the latent width bench.latent_ceiling asks for (M = 224): the
          # shipped em model's N-wide layers as the start (--init-matching), the M-wide ones fresh
          M=224 vr em-mse-wide 1 mse 0.0005 0.2 epfl_hippocampus_fibsem,isbi2012_em learned-mse --int8 h_s \
            --init "$(start em-msssim-vr)" --init-matching ;;
  em-mse-more) # the shipped em-mse-wide whole as the start (fine-tune: lr 1e-4 by default); its val top still rose
          # at q 16 (data/weights/README.md), so longer training of this width is the next step
          LR=${LR:-1e-4} M=224 vr em-mse-wide-more 1 mse 0.0005 0.2 epfl_hippocampus_fibsem,isbi2012_em learned-mse --int8 h_s \
            --init data/weights/em-mse-wide.pt ;;
  em-mse-n128) # the shipped em-mse-wide with its image transforms widened to N = 128 (--init-widen: the same function
          # at step 0, core.models.widen). Trained so on a lent GPU on 2026-12-04 (scripts/gpu_train.sh) and not shipped:
          # higher EM top, but more bits on unseen gray images (data/weights/README.md, em-mse-n128)
          LR=${LR:-1e-4} M=224 TN=128 vr em-mse-n128 1 mse 0.0005 0.2 epfl_hippocampus_fibsem,isbi2012_em learned-mse \
            --int8 h_s g_a --init data/weights/em-mse-wide.pt --init-widen ;;
  he-mse-n128) # the shipped he-mse with its image transforms widened to N = 128 (--init-widen: the same function at
          # step 0, core.models.widen), as em-mse-n128 did for gray: bench.latent_ceiling puts the colour model's limit
          # in its transforms, not its M = 96 latent.  Run on this CPU on 2026-12-04 (THREADS=2 BF16=1 CROP=256, 2,250 steps):
          # it did not move (+0.3 % PSNR BD-rate on MoNuSeg test tiles) and was not shipped (data/weights/README.md)
          LR=${LR:-1e-4} TN=128 vr he-mse-n128 3 mse 0.0005 0.2 monuseg learned-mse --int8 h_s \
            --init "$(start he-mse)" --init-widen ;;
  he-mse) # the PSNR-oriented colour family: the shipped colour model whole (M = 96) as the start, the loss switched
          # to MSE (on H&E the M = 96 latent is not the limit, bench.latent_ceiling; its transforms are)
          # (lr 1e-4 by default: a fine-tune of a converged model; data/weights/README.md, he-mse)
          # Its start is the 31,500-step he-msssim-vr, replaced in data/weights on 2026-12-03: git keeps it
          for f in he-msssim-vr-31500.json he-msssim-vr-31500.pt; do
            [ -f "$T/$f" ] || { git show "3d2f8ae:data/weights/${f/-31500/}" > "$T/$f.part" && mv "$T/$f.part" "$T/$f"; }
          done
          LR=${LR:-1e-4} vr he-mse 3 mse 0.0005 0.2 monuseg learned-mse --init "$T/he-msssim-vr-31500.pt" ;;
  he-mse-wide) # the colour PSNR-oriented family with a wider latent (M = 192, ≈ 9 MB float16), as em-mse-wide did for
          # gray: he-msssim-vr's N-wide layers as the start (--init-matching), the M-wide ones fresh; lr 2e-4.  The
          # M = 96 model's top flattens near 34 dB on val (he-mse, he-mse-hi); this is the long run meant to pass it
          M=192 vr he-mse-wide 3 mse 0.0005 0.2 monuseg learned-mse --init "$(start he-msssim-vr)" --init-matching ;;
  he-mse-hi) # the shipped he-mse whole as the start, the ladder's top raised from λ 0.2 to 0.8 (its val top
          # flattened: 33.42 → 33.83 dB from q 13 to 16) so the top point reaches further (#11: ≥ 38 dB on H&E)
          LR=${LR:-1e-4} vr he-mse-hi 3 mse 0.0005 0.8 monuseg learned-mse --init "$(start he-mse)" ;;
  he-mse-more) # the shipped he-mse whole as the start (fine-tune, lr 1e-4 by default), e.g. with BF16=1 CROP=256.
          # The shipped he-mse is this target's result (2026-12-03: 6,848 steps at 1e-4, then LR=2e-5 to 8,050;
          # −10.5 % PSNR BD-rate on the MoNuSeg test tiles); it started from the 45,500-step file
          # (git show 9d8cf1a:data/weights/he-mse.pt), so running it again continues from the new one.  On 2026-12-04
          # 9,500 more steps from it (STEPS=60000 to 8,602, then STEPS=9500 LR=2e-5) measured +0.2 % PSNR BD-rate:
          # converged, not shipped (data/weights/README.md)
          LR=${LR:-1e-4} vr he-mse-more 3 mse 0.0005 0.2 monuseg learned-mse --init "$(start he-mse)" ;;
  em-mix) # starts from a snapshot of the em run (it may still be going): copy it so the chain is fixed
          [ -f "$T/em-mix-vr.resume.pt" ] || [ -f "$T/em-mix-init.resume.pt" ] || cp "$T/em-msssim-vr.resume.pt" "$T/em-mix-init.resume.pt"
          vr em-mix-vr 1 mix 0.5 40000 epfl_hippocampus_fibsem,isbi2012_em learned-mix --init "$T/em-mix-init.resume.pt" ;;
  *) echo "usage: $0 em|he|he-ctx|he-mse-ctx|he-ctx-joint|em-ctx|em-ctx-joint|em-ctx-512|he-ctx-512|he-mse|he-mse-wide|he-mse-hi|em-more|he-more|em-mse-wide|em-mse-more|em-mse-n128|he-mse-n128|he-mse-more|em-mix" >&2; exit 2 ;;
esac
