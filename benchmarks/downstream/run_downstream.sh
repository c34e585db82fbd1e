#!/usr/bin/env bash
# Downstream runs at CPU scale (R50-Rand), beside the paper's R50-Rand rows. See README.md here for results.
#   busi-seg-rand / busi-cls-rand: train_busi_models.sh (full fine-tuning, 256 px, 3 x 40 steps of batch 8)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${POCUS_SHARED_DATA:-../shared/data}
OUT=benchmarks/downstream/runs
STUDENT=${STUDENT:-runs/r2_real_data/student.safetensors}
COMMON=(--epochs 3 --max-steps-per-epoch 40 --batch-size 8 --image-size 256 --threads 2 --quiet)
case ${1:-all} in
  probe)   # Table 1 protocol: frozen encoder, BUSI segmentation
    .venv/bin/pocus finetune seg --data "$DATA/busi" --out "$OUT/busi-seg-rand-probe" --encoder random --linear-probe \
      --epochs 3 --max-steps-per-epoch 40 --batch-size 8 --image-size 256 --threads 2 --quiet ;;
  hc18)
    .venv/bin/pocus finetune seg --data "$DATA/hc18" --out "$OUT/hc18-seg-rand" --encoder random \
      --epochs 3 --max-steps-per-epoch 40 --batch-size 8 --image-size 256 --threads 2 --quiet ;;
  distill) # the student of benchmarks/distill's recorded run (random-weight teacher, 300 steps, ~30 min)
    [ -f "$STUDENT" ] || benchmarks/distill/r2_real_data.sh "$(dirname "$STUDENT")" ;;
  student) # the same rows with the distilled student as the encoder
    for step in student-seg student-cls student-probe student-hc18; do "$0" "$step"; done ;;
  student-*)
    [ -f "$STUDENT" ] || { echo "no $STUDENT: run '$0 distill' first" >&2; exit 1; }
    case $1 in
      student-seg)   .venv/bin/pocus finetune seg --data "$DATA/busi" --out "$OUT/busi-seg-student" --encoder "$STUDENT" \
                       "${COMMON[@]}" ;;
      student-cls)   .venv/bin/pocus finetune cls --data "$DATA/busi" --out "$OUT/busi-cls-student" --encoder "$STUDENT" \
                       "${COMMON[@]}" ;;
      student-probe) .venv/bin/pocus finetune seg --data "$DATA/busi" --out "$OUT/busi-seg-student-probe" \
                       --encoder "$STUDENT" --linear-probe "${COMMON[@]}" ;;
      student-hc18)  .venv/bin/pocus finetune seg --data "$DATA/hc18" --out "$OUT/hc18-seg-student" --encoder "$STUDENT" \
                       "${COMMON[@]}" ;;
      *) echo "unknown step $1" >&2; exit 2 ;;
    esac ;;
  sweep)   # label fractions on BUSI classification, smaller (128 px, 2 x 20 steps) to fit a CPU session
    ENCODERS=(--encoder random); [ -f "$STUDENT" ] && ENCODERS+=(--encoder "student=$STUDENT")
    .venv/bin/pocus sweep cls --data "$DATA/busi" "${ENCODERS[@]}" --fractions 0.05,0.1,0.2,0.5,1 \
      --out "$OUT/busi-cls-sweep" --epochs 2 --max-steps-per-epoch 20 --batch-size 8 --image-size 128 --threads 2 ;;
  embed)   # the paper's Fig. 2: t-SNE of encoder embeddings coloured by dataset, random vs distilled student
    .venv/bin/pocus embed-plot --encoder random --encoder "$STUDENT" --data "$DATA/busi" --data "$DATA/hc18" \
      --data "$DATA/lung" --per-dataset 100 --image-size 128 --out benchmarks/downstream/embed_tsne.png ;;
  all) for step in hc18 distill student-seg student-cls student-probe sweep student-hc18 embed; do "$0" "$step"; done ;;
  *) echo "usage: $0 [probe|hc18|distill|student|student-seg|student-cls|student-probe|student-hc18|sweep|embed|all]" >&2; exit 2 ;;
esac
