#!/usr/bin/env bash
# Held-out token R² of a CPU-scale distillation on the real ultrasound corpus (random-weight teacher).
# Usage: benchmarks/distill/r2_real_data.sh [RUN_DIR]   (needs ../shared/data; ~35 min on 2 cores)
# The validation/test images of benchmarks/downstream's BUSI and HC18 fine-tunes (seed 0, seg and cls splits) are
# left out, so the student compared there never saw the images it is judged on.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/r2_real_data}
DATA=${POCUS_SHARED_DATA:-../shared/data}
rm -rf "$RUN"; mkdir -p "$(dirname "$RUN")"
.venv/bin/pocus distill \
  --data "$DATA/busi" --data "$DATA/hc18" --data "$DATA/lung" --out "$RUN" \
  --exclude-eval-splits "$DATA/busi" --exclude-eval-splits "$DATA/hc18" \
  --teacher vit_base_patch16_dinov3 --teacher-weights random --student resnet50 \
  --image-size 128 --batch-size 32 --max-steps 300 --lr 5e-4 --warmup-steps 20 \
  --save-every 100 --held-out-fraction 0.1 --num-workers 1 --threads 2 --seed 0 --quiet --json \
  --config benchmarks/distill/r2_eval.yaml > "$RUN.summary.json"
.venv/bin/python benchmarks/distill/report_r2.py "$RUN" > benchmarks/distill/r2_real_data.md
