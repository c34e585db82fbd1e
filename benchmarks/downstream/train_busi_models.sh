#!/usr/bin/env bash
# Short CPU fine-tunes on BUSI (R50-Rand) that give the trained models benchmarks/export uses.
# 256 px, batch 8, 3 epochs x 40 steps: a recorded short run, far from the paper's schedule.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${POCUS_SHARED_DATA:-../shared/data}
OUT=${OUT:-benchmarks/downstream/runs}
.venv/bin/pocus finetune seg --data "$DATA/busi" --out "$OUT/busi-seg-rand" --encoder random \
  --epochs 3 --max-steps-per-epoch 40 --batch-size 8 --image-size 256 --threads 2 --quiet
.venv/bin/pocus finetune cls --data "$DATA/busi" --out "$OUT/busi-cls-rand" --encoder random \
  --epochs 3 --max-steps-per-epoch 40 --batch-size 8 --image-size 256 --threads 2 --quiet
