#!/usr/bin/env bash
# `pocus distill` vs LightlyTrain's distillation, same frames/teacher/student/size/batch/threads, alternated twice.
# Teacher: a random DINOv3 ViT-B/16 on both sides (ours: timm vit_base_patch16_dinov3 --teacher-weights random;
# theirs: dinov3/vitb16 from a random-init local weights file). Student: timm resnet50. Fixed step count; the first
# WARMUP steps of each run are not timed. Needs /work/lightly-venv (see README.md), never this repo's venv.
# Usage (from the repo root): benchmarks/distill/lightly/run_side_by_side.sh   [env: STEPS BATCH SIZE FRAMES ...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=benchmarks/distill/lightly
STEPS=${STEPS:-5}; WARMUP=${WARMUP:-2}; BATCH=${BATCH:-8}; SIZE=${SIZE:-224}; THREADS=${THREADS:-2}
FRAMES=${FRAMES:-200}; WORKERS=${WORKERS:-1}; ROUNDS=${ROUNDS:-2}
LUNG=${LUNG:-/work/shared/data/lung/images}; LIGHTLY_PY=${LIGHTLY_PY:-/work/lightly-venv/bin/python}
WORK=${WORK:-/tmp/pocus-lightly-side-by-side}; RESULTS=${RESULTS:-$HERE/results.jsonl}
export OMP_NUM_THREADS=$THREADS LIGHTLY_TRAIN_EVENTS_DISABLED=1 HF_HUB_OFFLINE=1

rm -rf "$WORK"; mkdir -p "$WORK/data"
ls "$LUNG" | grep -i '\.png$' | sort | awk -v n="$FRAMES" 'NR <= n' | while read -r f; do ln -s "$LUNG/$f" "$WORK/data/$f"; done
cat > "$WORK/pocus.yaml" <<YAML
data: ["$WORK/data"]
teacher: vit_base_patch16_dinov3
teacher_weights: random
student: resnet50
image_size: $SIZE
batch_size: $BATCH
max_steps: $STEPS
held_out_fraction: 0.0
save_every: "$STEPS"
log_every: 1
num_workers: $WORKERS
threads: $THREADS
quiet: true
YAML
: > "$RESULTS.tmp"
for round in $(seq 1 "$ROUNDS"); do
  out="$WORK/pocus-$round"
  t0=$(date +%s.%N)
  .venv/bin/pocus distill --config "$WORK/pocus.yaml" --out "$out" > "$WORK/pocus-$round.log" 2>&1
  t1=$(date +%s.%N)
  .venv/bin/python "$HERE/summarize.py" pocus-row "$out/metrics.jsonl" --batch "$BATCH" --size "$SIZE" --round "$round" \
    --start "$t0" --end "$t1" >> "$RESULTS.tmp"
  "$LIGHTLY_PY" "$HERE/lightly_run.py" --data "$WORK/data" --out "$WORK/lightly-$round" --image-size "$SIZE" \
    --batch-size "$BATCH" --steps "$STEPS" --threads "$THREADS" --num-workers "$WORKERS" > "$WORK/lightly-$round.log" 2>&1
  tail -n 1 "$WORK/lightly-$round.log" | .venv/bin/python "$HERE/summarize.py" lightly-row --round "$round" >> "$RESULTS.tmp"
done
mv "$RESULTS.tmp" "$RESULTS"
.venv/bin/python "$HERE/summarize.py" table "$RESULTS" --warmup "$WARMUP" --frames "$FRAMES" --lightly-py "$LIGHTLY_PY"
