#!/usr/bin/env bash
# pocus kd proof at CPU scale (benchmarks/kd/README.md has the results). Resumable: a run whose metrics.json exists
# is skipped, so rerunning this script continues where it stopped. Every row of a table shares one protocol.
#   compression: HC18, all training labels; teacher U-Net-ResNet50; MobileNetV3-L and EfficientNet-B0 U-Nets,
#                (a) labels only, (b) pocus kd with the HC18 frames (labels unused; val/test images removed by
#                content) + lung frames as transfer set. Seeds 0 1 2, each seed its own teacher; one test set for all
#                (--split-seed 0), so rows are compared on the same 156 test frames and std is training noise.
#   label:       TS-KD's protocol at 10 % labels (BUSI and HC18): teacher fine-tuned on the same 10 %; students
#                scratch, task-agnostic KD (hidden loss only), TS-KD (hidden + output).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${POCUS_SHARED_DATA:-../shared/data}
OUT=benchmarks/kd/runs
SEEDS=${SEEDS:-"0 1 2"}
# compression students; ARCH:WIDTHS sets --decoder-channels (four widths: head at 1/2 resolution) and names the row
# ARCH-half (e.g. mobilenetv4_conv_small:48,32,24,16 -> hc18-mobilenetv4_conv_small-half-*)
ARCHS=${ARCHS:-"mobilenetv3_large_100 efficientnet_b0"}
SIZE=128
SPLIT=(--split-seed 0)
FT=(--epochs 6 --max-steps-per-epoch 40 --batch-size 8 --image-size $SIZE --threads 2 --quiet)   # 240 steps
KD=(--kd-epochs 50 --max-steps 300 --finetune-epochs 6 --max-steps-per-epoch 40 --batch-size 8 --image-size $SIZE
    --num-workers 1 --threads 2 --quiet)                                                     # 300 KD + 240 FT steps
P=.venv/bin/pocus
done_() { [ -f "$1/metrics.json" ]; }
log() { echo "$(date -u +%FT%TZ) $*" | tee -a benchmarks/kd/progress.log; }

compression() {
  for seed in $SEEDS; do
    t=$OUT/hc18-teacher-r50-s$seed
    done_ "$t" || { log "teacher seed $seed"; $P finetune seg --data "$DATA/hc18" --out "$t" --architecture resnet50 \
                      --seed "$seed" "${SPLIT[@]}" "${FT[@]}"; }
    for student in $ARCHS; do
      arch=${student%%:*}; row=$arch; dec=()
      if [ "$student" != "$arch" ]; then dec=(--decoder-channels "${student#*:}"); row=$arch-half; fi
      a=$OUT/hc18-$row-labels-s$seed
      done_ "$a" || { log "$row labels-only seed $seed"; $P finetune seg --data "$DATA/hc18" --out "$a" \
                        --architecture "$arch" "${dec[@]}" --seed "$seed" "${SPLIT[@]}" "${FT[@]}"; }
      b=$OUT/hc18-$row-kd-s$seed
      done_ "$b" || { log "$row kd seed $seed"; $P kd seg --teacher "$t/model.safetensors" --student "$arch" \
                        "${dec[@]}" --transfer "$DATA/hc18" --transfer "$DATA/lung" --data "$DATA/hc18" --out "$b" \
                        --seed "$seed" "${SPLIT[@]}" --resume auto "${KD[@]}"; }
    done
  done
}

control() {  # compute-matched control: labels only for as many optimizer steps as kd's two stages (300 + 240)
  for seed in $SEEDS; do
    c=$OUT/hc18-mobilenetv3_large_100-labels540-s$seed
    done_ "$c" || { log "mobilenetv3_large_100 labels-only 540 steps seed $seed"; $P finetune seg --data "$DATA/hc18" \
                      --out "$c" --architecture mobilenetv3_large_100 --seed "$seed" "${SPLIT[@]}" --epochs 9 \
                      --max-steps-per-epoch 60 --batch-size 8 --image-size $SIZE --threads ${THREADS:-2} --quiet; }
  done
}

label() {  # 10 % labels: teacher and every student see the same labelled 10 %
  for ds in hc18 busi; do
    for seed in $SEEDS; do
      t=$OUT/$ds-10pct-teacher-r50-s$seed
      done_ "$t" || { log "$ds 10% teacher seed $seed"; $P finetune seg --data "$DATA/$ds" --out "$t" \
                        --architecture resnet50 --label-fraction 0.1 --seed "$seed" "${SPLIT[@]}" "${FT[@]}"; }
      arch=mobilenetv3_large_100
      s=$OUT/$ds-10pct-$arch-scratch-s$seed
      done_ "$s" || { log "$ds 10% scratch seed $seed"; $P finetune seg --data "$DATA/$ds" --out "$s" \
                        --architecture "$arch" --label-fraction 0.1 --seed "$seed" "${SPLIT[@]}" "${FT[@]}"; }
      for mode in agnostic tskd; do
        w=(--output-weight 0.2 --hidden-weight 0.1); [ $mode = agnostic ] && w=(--output-weight 0 --hidden-weight 0.1)
        k=$OUT/$ds-10pct-$arch-$mode-s$seed
        done_ "$k" || { log "$ds 10% $mode seed $seed"; $P kd seg --teacher "$t/model.safetensors" --student "$arch" \
                          --transfer "$DATA/$ds" --transfer "$DATA/lung" --data "$DATA/$ds" --label-fraction 0.1 \
                          --out "$k" --seed "$seed" "${SPLIT[@]}" --resume auto "${w[@]}" "${KD[@]}"; }
      done
    done
  done
}

case ${1:-all} in
  compression) compression ;;
  control) control ;;
  label) label ;;
  all) compression; label ;;
  *) echo "usage: $0 [compression|control|label|all]" >&2; exit 2 ;;
esac
