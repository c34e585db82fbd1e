#!/usr/bin/env bash
# Phone-class U-Net speed study (issue 14): random-weight checkpoints -> pocus-export int8 -> ONE interleaved
# `pocus bench latency --threads 1` per image size (teacher included) -> ratio tables, op census, ORT profile.
# mnv3s-slim's int8 TFLite export fails (README, finding 1): logged to $WORK/failed.log, the rest goes on.
# Bundles and checkpoints go to $WORK (default /tmp/speed), never into git; existing bundles are reused.
# Usage: benchmarks/kd/speed/run_speed.sh [all|export|bench|analyse]   (default all)
set -euo pipefail
cd "$(dirname "$0")/../../.."
WORK=${WORK:-/tmp/speed}
DATA=${POCUS_SHARED_DATA:-/work/shared/data}
OUT=benchmarks/kd/speed
PY=".venv/bin/python $OUT/speed.py"
RUNS=${RUNS:-60}
export OMP_NUM_THREADS=1
STAGE=${1:-all}
C128=(teacher-r50 mnv3l-slim mnv3s-slim effb0-slim r18-slim mnv3l-narrow r18-narrow)
C256=(teacher-r50 mnv3l-slim r18-slim)
ENC=(encoder-resnet50 encoder-mobilenetv3_large_100)
VAR=(mnv3l-relu mnv3l-minimal mnv4s mnv3l-half mnv4s-half r18-half)
ONNX=(teacher-r50 mnv3l-slim r18-slim)

tflite() {  # tflite int8 bundle of MODEL (checkpoint or built-in) at SIZE -> DEST
  [ -f "$3/manifest.json" ] || .venv/bin/pocus-export "$1" --target tflite --precision int8 \
    --calib-data "$DATA/hc18" --num-calib 32 --no-parity --image-size "$2" --out "$3" --quiet \
    || echo "EXPORT FAILED: $1 at $2 px" | tee -a "$WORK/failed.log"
}

if [[ $STAGE == all || $STAGE == export ]]; then
  [ -f "$WORK/ckpt/r18-narrow/model.safetensors" ] || $PY checkpoints "$WORK/ckpt"
  for c in "${C128[@]}"; do tflite "$WORK/ckpt/$c/model.safetensors" 128 "$WORK/b128/$c"; done
  for c in "${ONNX[@]}"; do
    [ -f "$WORK/onnx128/$c/manifest.json" ] || .venv/bin/pocus-export "$WORK/ckpt/$c/model.safetensors" \
      --target onnx --precision int8 --calib-data "$DATA/hc18" --num-calib 32 --no-parity --no-mixed-precision \
      --image-size 128 --out "$WORK/onnx128/$c" --quiet
  done
  .venv/bin/python $OUT/variants.py "$WORK" "${VAR[@]}"  # designs the registry cannot build (variants.py)
  for e in "${ENC[@]}"; do tflite "$e" 128 "$WORK/b128/$e"; done
  for c in "${C256[@]}"; do tflite "$WORK/ckpt/$c/model.safetensors" 256 "$WORK/b256/$c"; done
fi

if [[ $STAGE == all || $STAGE == bench ]]; then
  # one interleaved run per image size; the teacher is in every run, ratios only within a run
  exists() { for b in "$@"; do [ -f "$b/manifest.json" ] && echo "$b"; done; }
  mapfile -t b128 < <(exists "${C128[@]/#/$WORK/b128/}" "${VAR[@]/#/$WORK/b128/}" "${ENC[@]/#/$WORK/b128/}")
  [ -f benchmarks/kd/bundles/hc18-teacher-r50/manifest.json ] && b128+=(benchmarks/kd/bundles/hc18-teacher-r50)
  .venv/bin/pocus bench latency "${b128[@]}" --threads 1 --warmup 10 --runs "$RUNS" --no-cold-start \
    --json "$OUT/latency128.json" --md "$OUT/latency128.md"
  mapfile -t b256 < <(exists "${C256[@]/#/$WORK/b256/}")
  .venv/bin/pocus bench latency "${b256[@]}" --threads 1 --warmup 10 --runs "$RUNS" --no-cold-start \
    --json "$OUT/latency256.json" --md "$OUT/latency256.md"
  # teacher and each candidate alternated pairwise; thread CPU time as well as wall time (the machine is shared)
  $PY paired "$WORK/b128/teacher-r50" "${b128[@]:1}" --runs 100 --json "$OUT/paired128.json" > "$OUT/paired128.md"
  $PY paired "$WORK/b256/teacher-r50" "${b256[@]:1}" --runs 50 --json "$OUT/paired256.json" > "$OUT/paired256.md"
fi

if [[ $STAGE == all || $STAGE == analyse ]]; then
  $PY table "$OUT/latency128.json" --teacher teacher-r50 > "$OUT/ratios128.md"
  $PY table "$OUT/latency256.json" --teacher teacher-r50 > "$OUT/ratios256.md"
  $PY ops "$WORK"/b128/{teacher-r50,mnv3l-slim,mnv3l-relu,mnv3l-minimal,mnv4s,mnv4s-half,effb0-slim,r18-slim} > "$OUT/ops128.md"
  $PY profile "${ONNX[@]/#/$WORK/onnx128/}" --json "$OUT/ort_profile128.json" > "$OUT/ort_profile128.md"
fi
