#!/usr/bin/env bash
# Reproduce the shipped learned-codec checkpoints in data/weights/ (CPU, 2 cores, ≈ 35 min after the bases).
#
#   bash scripts/train_weights.sh bases     # continue the two base models  (→ .train/{em,he}-base2.pt)
#   bash scripts/train_weights.sh ladder    # fine-tune every rate point from them (→ data/weights/*.pt/.json)
#
# The chain behind the bases (all with `python -m core.train`, numbers in data/weights/base/*.json):
#   em-base / he-base   3000 steps from scratch, λ 16.64 rate+MS-SSIM, first 300 steps MSE (λ 0.013), lr 2e-4
#   em-init / he-init   the former em-msssim-q3 / he-msssim-q3 (λ 40, +350 / +600 steps, lr 1e-4; git dc0157f)
#   em-base2 / he-base2 +5500 steps from the init, λ 40, lr 2e-4, seed 11          (this script: `bases`)
# Then each rate point is a 600-step fine-tune (lr 1e-4, batch 4 × 128² crops) of the base, except the ends
# of the ladder, which move the rate further in a chain: q1 from q2, q5 from q4, q6 from q5 (800 steps).
# Training/validation splits are those recorded in data/weights/base/*.json (held out: EPFL slices
# training0161–0164, MoNuSeg train tiles TCGA-G9-6362 and TCGA-NH-A8F7).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
W=data/weights
T=.train
mkdir -p "$T"
export OMP_NUM_THREADS=1

files() {  # files FAMILY training_data|validation_data  (from the base metadata)
  "$PY" -c "import json,sys; print(' '.join(json.load(open('$W/base/$1-base.json'))['$2']))"
}

train() {  # train FAMILY CHANNELS LOSS LAMBDA INIT OUT CODEC QUALITY STEPS LR SEED
  local fam=$1 ch=$2 loss=$3 lmbda=$4 init=$5 out=$6 codec=$7 q=$8 steps=$9 lr=${10} seed=${11}
  local rate_point=(); [ -n "$q" ] && rate_point=(--quality "$q")
  # shellcheck disable=SC2046
  "$PY" -m core.train --arch mean-scale --channels "$ch" --N 64 --M 96 --loss "$loss" --lmbda "$lmbda" \
    --train $(files "$fam" training_data) --val $(files "$fam" validation_data) \
    --steps "$steps" --batch 4 --crop 128 --lr "$lr" --seed "$seed" --init "$init" --out "$out" \
    --codec "$codec" "${rate_point[@]}" --save-every 200 --resume --no-progress > "$T/$(basename "$out").log" 2>&1
  echo "$(basename "$out"): $(tail -n 1 "$T/$(basename "$out").log")"
}

rung() {  # rung FAMILY CHANNELS LOSS NAME Q LAMBDA INIT [STEPS]
  train "$1" "$2" "$3" "$6" "$7" "$W/$4-q$5" "$(codec_of "$3")" "$5" "${8:-600}" 1e-4 "$5"
}
codec_of() { [ "$1" = mix ] && echo learned-mix || echo learned-msssim; }

# λ per rate point. rate + MS-SSIM: R + λ(1 − MS-SSIM); the Zhao mix at α = 0.84 is re-swept as λ/0.84,
# which puts its rates within a few % of the MS-SSIM ladder (measured: data/weights/README.md).
MSSSIM_LAMBDAS=(0 0.6 2.4 10 60 600 20000)
MIX_LAMBDAS=(0 0.71 2.86 11.9 71.4 714 23800)

ladder() {  # ladder low|high FAMILY CHANNELS LOSS NAME LAMBDAS...
  # low: q2 and q3 from the base, q1 ← q2;  high: q4 from the base, q5 ← q4, q6 ← q5
  local half=$1 fam=$2 ch=$3 loss=$4 name=$5; shift 5
  local l=("$@") base="$T/$fam-base2.pt"
  if [ "$half" = low ]; then
    rung "$fam" "$ch" "$loss" "$name" 2 "${l[2]}" "$base"
    rung "$fam" "$ch" "$loss" "$name" 1 "${l[1]}" "$W/$name-q2.pt"
    rung "$fam" "$ch" "$loss" "$name" 3 "${l[3]}" "$base"
  else
    rung "$fam" "$ch" "$loss" "$name" 4 "${l[4]}" "$base"
    rung "$fam" "$ch" "$loss" "$name" 5 "${l[5]}" "$W/$name-q4.pt"
    rung "$fam" "$ch" "$loss" "$name" 6 "${l[6]}" "$W/$name-q5.pt" 800
  fi
}

case "${1:-}" in
  bases)
    for fam in em he; do
      ch=1; [ "$fam" = he ] && ch=3
      [ -f "$T/$fam-init.pt" ] || { echo "put the former $fam-msssim-q3.pt (git dc0157f) at $T/$fam-init.pt" >&2; exit 1; }
      cp "$W/base/$fam-init.json" "$T/$fam-init.json"
      train "$fam" "$ch" msssim 40 "$T/$fam-init.pt" "$T/$fam-base2" base "" 5500 2e-4 11 &
    done
    wait ;;
  ladder)
    # two lanes, one core each, no dependency between them
    ( ladder low em 1 msssim em-msssim "${MSSSIM_LAMBDAS[@]}"; ladder high em 1 msssim em-msssim "${MSSSIM_LAMBDAS[@]}"
      ladder high he 3 msssim he-msssim "${MSSSIM_LAMBDAS[@]}" ) &
    ( ladder low em 1 mix em-mix "${MIX_LAMBDAS[@]}"; ladder high em 1 mix em-mix "${MIX_LAMBDAS[@]}"
      ladder low he 3 msssim he-msssim "${MSSSIM_LAMBDAS[@]}" ) &
    wait ;;
  *) echo "usage: $0 bases|ladder" >&2; exit 2 ;;
esac
