#!/usr/bin/env bash
# Proof section of issue 15 on the HC18 models that exist here (no BUSI models on this machine): fp32 ONNX vs
# full int8 / mixed int8 ONNX, full int8 TFLite, and QAT -> int8 ONNX/TFLite, for the U-Net-ResNet50 teacher and
# the U-Net-MobileNetV3-Large kd student (128 px). Calibration: the runs' train split; parity: their val split
# (held out); test Dice: `pocus eval --split test --seed 0`. Nothing is chosen on the test split.
# Finished steps (a bundle with manifest.json, an eval/QAT json) and failed ones ($P/results/NAME.failed, the
# error line) are skipped; delete them to redo.
#   benchmarks/export/int8_proof/run_int8_proof.sh            # everything, then the table
#   benchmarks/export/int8_proof/run_int8_proof.sh table      # only the table (results.json/.md here)
set -uo pipefail
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HERE=benchmarks/export/int8_proof
P=${PROOF_DIR:-/tmp/int8_proof}            # bundles, QAT checkpoints, logs (not committed)
DATA=${HC18:-/work/shared/data/hc18}
RUNS=benchmarks/kd/runs                    # read only
declare -A CKPT=([r50]=$RUNS/hc18-teacher-r50-s0/model.safetensors
                 [mnv3]=$RUNS/hc18-mobilenetv3_large_100-kd-s0/model.safetensors)
QAT_ARGS=${QAT_ARGS:---epochs 2 --max-steps-per-epoch 40 --batch-size 8 --threads 1}   # 80 steps x 8 images
STRICT=${STRICT:-0.997}                    # a stricter target than the goal, to make mixed precision act
declare -A MID=([mnv3]=0.988)              # a target between full int8 and the strict run's best (on the search part)
PX=.venv/bin/pocus-export
mkdir -p "$P"/{bundles,results,eval,qat}

log() { echo "[$(date +%H:%M:%S)] $*"; }
failed() { grep -v '^\s*$' "$P/results/$1.err" | tail -1 > "$P/results/$1.failed"; log "  FAILED: $(cat "$P/results/$1.failed")"; }

export_bundle() {  # NAME MODEL ARGS...: one bundle, its manifest JSON, stderr and wall time in $P/results
  local name=$1 model=$2; shift 2
  if [ -f "$P/bundles/$name/manifest.json" ]; then log "skip $name (built)"; return; fi
  if [ -f "$P/results/$name.failed" ]; then log "skip $name (failed: $P/results/$name.failed)"; return; fi
  log "export $name"
  /usr/bin/time -f "%e s" -o "$P/results/$name.time" $PX "$model" "$@" --num-parity 153 \
    --out "$P/bundles/$name" --overwrite --quiet --json "$P/results/$name.json" 2> "$P/results/$name.err" \
    || failed "$name"
}

proof_model() {  # M: every row of one model
  local m=$1 ck=${CKPT[$1]}
  local calib=(--calib-data "$P/data/hc18-train" --parity-data "$P/data/hc18-val")
  local explain=(); [ "$m" = r50 ] && explain=(--explain)
  export_bundle "$m-onnx-fp32" "$ck" --target onnx --precision fp32 --parity-data "$P/data/hc18-val"
  export_bundle "$m-onnx-int8" "$ck" --target onnx --precision int8 "${calib[@]}" --no-mixed-precision
  export_bundle "$m-onnx-int8-mixed" "$ck" --target onnx --precision int8 "${calib[@]}" --accuracy-target 0.98 \
    "${explain[@]}"
  export_bundle "$m-onnx-int8-mixed-strict" "$ck" --target onnx --precision int8 "${calib[@]}" \
    --accuracy-target "$STRICT" --max-float-layers 10
  [ -n "${MID[$m]:-}" ] && export_bundle "$m-onnx-int8-mixed-mid" "$ck" --target onnx --precision int8 "${calib[@]}" \
    --accuracy-target "${MID[$m]}" --max-float-layers 10
  export_bundle "$m-tflite-int8" "$ck" --target tflite --precision int8 "${calib[@]}"
  # mixed TFLite: the exporter refuses --float-layers / --accuracy-target for tflite; the refusal is recorded
  export_bundle "$m-tflite-int8-mixed" "$ck" --target tflite --precision int8 "${calib[@]}" --accuracy-target 0.98
  if [ ! -f "$P/qat/$m/metrics.json" ] && [ ! -f "$P/results/$m-qat.failed" ]; then
    log "qat $m ($QAT_ARGS)"
    /usr/bin/time -f "%e s" -o "$P/results/$m-qat.time" .venv/bin/pocus qat "$ck" --data "$DATA" --out "$P/qat/$m" \
      $QAT_ARGS --quiet --json "$P/results/$m-qat.json" 2> "$P/results/$m-qat.err" \
      || failed "$m-qat"
  fi
  export_bundle "$m-qat-onnx-int8" "$P/qat/$m/model.safetensors" --target onnx --precision int8 "${calib[@]}" \
    --no-mixed-precision
  export_bundle "$m-qat-tflite-int8" "$P/qat/$m/model.safetensors" --target tflite --precision int8 "${calib[@]}"
}

evaluate() {  # test Dice vs ground truth for every bundle (split seed 0, the runs' split)
  for b in "$P"/bundles/*/; do
    b=${b%/}; n=$(basename "$b")
    [ -f "$b/manifest.json" ] && [ ! -f "$P/eval/$n.json" ] || continue
    log "eval $n"
    .venv/bin/pocus eval "$b" --data "$DATA" --split test --seed 0 --threads 1 --quiet --json "$P/eval/$n.json" \
      2> "$P/eval/$n.err" || log "  FAILED: $(tail -1 "$P/eval/$n.err")"
  done
}

latency() {  # one interleaved call: every bundle of both models, 1 thread
  [ -f "$P/latency.json" ] && { log "skip latency (done)"; return; }
  log "latency"
  .venv/bin/pocus bench latency "$P"/bundles/*/ --threads 1 --warmup 10 --runs 60 --no-cold-start \
    --json "$P/latency.json" --md "$P/latency.md" 2> "$P/results/latency.err"
}

if [ "${1:-all}" = all ]; then
  [ -d "$P/data/hc18-val" ] || .venv/bin/python $HERE/int8_proof.py splits $RUNS/hc18-teacher-r50-s0/splits.csv "$DATA" "$P/data"
  for m in r50 mnv3; do proof_model $m; done
  evaluate
  latency
fi
.venv/bin/python $HERE/int8_proof.py table "$P" $HERE
cp -f "$P/bundles/r50-onnx-int8-mixed/quant_report.png" $HERE/r50_quant_report.png 2>/dev/null
cp -f "$P/bundles/r50-onnx-int8-mixed/quant_report.md" $HERE/r50_quant_report.md 2>/dev/null
true
