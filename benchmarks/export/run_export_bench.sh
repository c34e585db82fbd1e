#!/usr/bin/env bash
# Export benchmark: trained BUSI U-Net-R50 and classifier (benchmarks/downstream/train_busi_models.sh) and the
# embedding model, at 256 px, every target x precision that runs here; parity on held-out BUSI frames (never
# the calibration frames); then CPU latency at 1 and 2 threads on a quiet machine. hc18-unet: the HC18 fetal-head
# U-Net (test Dice 0.91), calibrated and checked on HC18 frames.
#   benchmarks/export/run_export_bench.sh export unet classifier embedding
#   benchmarks/export/run_export_bench.sh latency
#   benchmarks/export/run_export_bench.sh report
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${POCUS_SHARED_DATA:-../shared/data}
RUNS=benchmarks/downstream/runs
OUT=benchmarks/export/bundles
RES=benchmarks/export/results
mkdir -p "$OUT" "$RES"
declare -A MODELS=([unet]="$RUNS/busi-seg-rand/model.safetensors" [classifier]="$RUNS/busi-cls-rand/model.safetensors"
                   [embedding]="encoder-resnet50" [hc18-unet]="$RUNS/hc18-seg-rand/model.safetensors")
declare -A CALIB=([hc18-unet]="$DATA/hc18")  # calibration + held-out parity frames; default: BUSI
stage=$1; shift
case $stage in
  export)
    for name in "$@"; do
      for tp in ${PAIRS:-onnx:fp32 onnx:fp16 onnx:int8 tflite:fp32 tflite:fp16 tflite:int8 coreml:fp16 coreml:int8 \
                tensorrt:fp16 tensorrt:int8}; do
        t=${tp%%:*}; p=${tp##*:}
        # int8 that calibrates reads --calib-data (parity on its held-out part); the others take it as --parity-data
        frames=$(.venv/bin/python -c "from pocus_edge.export.targets import TARGETS as T; \
print('--calib-data' if T['$t'].calibrates('$p') else '--parity-data')")
        calib_extra=$([ "$frames" = --calib-data ] && echo "${CALIB_EXTRA:-}" || true)  # e.g. --num-calib 100
        /usr/bin/time -f "%e s" -o "$RES/$name-$t-$p.time" \
          .venv/bin/pocus-export "${MODELS[$name]}" --target "$t" --precision "$p" --image-size 256 ${EXTRA:-} $calib_extra \
          "$frames" "${CALIB[$name]:-$DATA/busi}" --num-parity 64 --out "$OUT/$name-$t-$p" --overwrite --quiet --json \
          > "$RES/$name-$t-$p.json" 2> "$RES/$name-$t-$p.err" || echo '{"failed": true}' > "$RES/$name-$t-$p.json"
      done
    done ;;
  latency)
    .venv/bin/pocus bench latency "$OUT"/*-onnx-* "$OUT"/*-tflite-* --threads 1,2 --warmup 5 --runs 30 \
      --json "$RES/latency.json" --md "$RES/latency.md" ;;
  report)
    .venv/bin/python benchmarks/export/report_export.py "$RES" ;;
esac
