#!/usr/bin/env bash
# int8 TFLite bundles of the seed-0 teacher and students of run_kd_bench.sh compression, timed in ONE interleaved
# run at 1 thread (pocus bench latency), then the tables and the Pareto plot. Bundles are reused when present.
# Run it on a quiet machine: latency under contention measures the contention.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${POCUS_SHARED_DATA:-../shared/data}
RUNS=benchmarks/kd/runs
B=benchmarks/kd/bundles
ROWS=(hc18-teacher-r50 hc18-mobilenetv3_large_100-labels hc18-mobilenetv3_large_100-kd hc18-efficientnet_b0-labels
      hc18-efficientnet_b0-kd hc18-mobilenetv4_conv_small-half-labels hc18-mobilenetv4_conv_small-half-kd)
# int8 ranges from the runs' train split and parity on their val split (every run uses --split-seed 0, so one split
# serves all): no test image reaches calibration, and the bundles' HC on the test split below stays honest
SPLITS=benchmarks/kd/bundles/data
[ -f "$SPLITS/hc18-val/manifest.csv" ] || .venv/bin/python benchmarks/export/int8_proof/int8_proof.py splits \
    "$RUNS/hc18-teacher-r50-s0/splits.csv" "$DATA/hc18" "$SPLITS"
bundles=()
for row in "${ROWS[@]}"; do
  ckpt=$RUNS/$row-s0/model.safetensors
  [ -f "$ckpt" ] || { echo "skip $row: no $ckpt yet"; continue; }
  [ -f "$B/$row/manifest.json" ] || .venv/bin/pocus-export "$ckpt" --target tflite --precision int8 \
      --calib-data "$SPLITS/hc18-train" \
      --parity-data "$SPLITS/hc18-val" --num-parity 153 --out "$B/$row" --quiet
  bundles+=("$B/$row")
done
.venv/bin/pocus bench latency "${bundles[@]}" --threads 1 --warmup 10 --runs 100 \
  --json benchmarks/kd/latency.json --md benchmarks/kd/latency.md
# issue 17's measurement proof: head circumference (mm) of each int8 bundle's masks on the HC18 test split
for b in "${bundles[@]}"; do
  [ -f "benchmarks/kd/eval/$(basename "$b")/eval.json" ] || .venv/bin/pocus eval "$b" --data "$DATA/hc18" --split test --seed 0 --measure ellipse \
      --threads 2 --out "benchmarks/kd/eval/$(basename "$b")" > /dev/null
done
.venv/bin/python benchmarks/kd/report_kd.py --latency benchmarks/kd/latency.json
