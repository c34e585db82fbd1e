#!/usr/bin/env bash
# Corpus-selection proof at CPU scale (issue 18 section 3; protocol and results in benchmarks/corpus/README.md).
# Usage: benchmarks/corpus/run_corpus_bench.sh [a|kd|report|pilot|all]      (default: a)
#   a:  pool -> per seed and method `pocus corpus select --budget 25%` -> `pocus distill --data-list LIST
#       --held-out-data heldout/...` (same steps for every list); plus masked-consistency vs token MSE on the
#       random lists. Judged by the held-out token R² on one fixed held-out set (make_pool.py).
#   kd: (b) `pocus kd seg` with each list as transfer set (HC18 labels, teacher hc18-teacher-r50-s0, the KD
#       settings of benchmarks/kd/run_kd_bench.sh); judged by the HC18 test Dice (156 frames, --split-seed 0).
# Resumable: a list or run whose result file exists is skipped; an interrupted run continues (--resume auto).
# Finished lists and result files are also copied to benchmarks/corpus/record/ (committed, a few MB), and restored
# from there into a fresh work folder, so a new machine continues the grid instead of starting it again.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${POCUS_SHARED_DATA:-../shared/data}
W=${CORPUS_WORK:-benchmarks/corpus/work}
SEEDS=${SEEDS:-"0 1 2"}
METHODS=${METHODS:-"random kcenter dual-rank"}
BUDGET=${BUDGET:-25%}
STEPS=${STEPS:-200}
RUNS=$W/runs/distill
THREADS=${THREADS:-2}
SIZE=128
P=.venv/bin/pocus
POOL=(--data "$W/pool/busi" --data "$W/pool/hc18" --data "$W/pool/lung")
HELD=(--held-out-data "$W/heldout/busi" --held-out-data "$W/heldout/hc18" --held-out-data "$W/heldout/lung")
# teacher: random-weight DINOv3 ViT-S/16 at full depth (the architecture of the public ViT-S/16 checkpoint, so the
# protocol is unchanged when real weights are at hand; 64 tokens at 128 px cost less than the student's step)
TEACHER=(--teacher vit_small_patch16_dinov3 --teacher-weights random --image-size $SIZE)
DISTILL=(--student resnet18 --batch-size 32 --lr 5e-4 --warmup-steps 20 --save-every 100
         --num-workers 1 --threads "$THREADS" --config benchmarks/corpus/distill.yaml --resume auto --quiet)
KD_TEACHER=benchmarks/kd/runs/hc18-teacher-r50-s0/model.safetensors   # read only
KD=(--kd-epochs 50 --max-steps 300 --finetune-epochs 6 --max-steps-per-epoch 40 --batch-size 8 --image-size $SIZE
    --num-workers 1 --threads "$THREADS" --quiet)                         # as run_kd_bench.sh's KD array
RECORD=benchmarks/corpus/record
log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$W/progress.log"; }
keep() { local f; for f in "$@"; do mkdir -p "$RECORD/$(dirname "${f#"$W"/}")"; cp -p "$f" "$RECORD/${f#"$W"/}"; done; }
restore() { [ -d "$RECORD" ] && mkdir -p "$W" && cp -rpn "$RECORD/." "$W/"; return 0; }

pool() {
  [ -f "$W/pool.json" ] || .venv/bin/python benchmarks/corpus/make_pool.py --data-root "$DATA" --out "$W"
  restore
}

select_list() {  # select_list METHOD SEED -> path of the list (selected once; embeddings shared per seed)
  local dir=$W/lists/s$2 list=$W/lists/s$2/$1.txt
  if [ ! -f "$list" ]; then
    mkdir -p "$dir/cache"; [ -e "$list.cache" ] || ln -s cache "$list.cache"
    log "select $1 seed $2" >&2
    /usr/bin/time -f "%e s wall, %U s user, %S s sys" -o "$list.time" \
      $P corpus select "${POOL[@]}" --budget "$BUDGET" --method "$1" "${TEACHER[@]}" --seed "$2" \
      --threads "$THREADS" --quiet --json "$list.json" --out "$list" >&2
    keep "$list" "$list.json" "$list.time"
  fi
  echo "$list"
}

distill_run() {  # distill_run NAME SEED LIST [extra args]
  local run=$RUNS/$1-s$2 seed=$2 list=$3; shift 3
  [ -f "$run.summary.json" ] && return 0
  log "distill $(basename "$run")"
  mkdir -p "$RUNS"
  /usr/bin/time -f "%e s wall, %U s user, %S s sys" -o "$run.time" \
    $P distill "${POOL[@]}" --data-list "$list" "${HELD[@]}" "${TEACHER[@]}" "${DISTILL[@]}" --seed "$seed" \
    --max-steps "$STEPS" --out "$run" --json "$run.summary.json" "$@"   # written only when the run has finished
  keep "$run.summary.json" "$run.time" "$run/metrics.jsonl"
}

stage_a() {
  pool
  local list
  for seed in $SEEDS; do
    for method in $METHODS; do
      list=$(select_list "$method" "$seed")   # an assignment, so set -e stops on a failed selection
      distill_run "$method" "$seed" "$list"
    done
    list=$(select_list random "$seed")
    distill_run random-masked "$seed" "$list" --objective masked-consistency
  done
}

stage_kd() {  # (b); each run ~ the kd rows of benchmarks/kd (300 KD + 240 fine-tune steps)
  pool
  for seed in $SEEDS; do
    for method in $METHODS; do
      local list run=$W/runs/kd/$method-s$seed
      list=$(select_list "$method" "$seed")
      [ -f "$run/metrics.json" ] && continue
      log "kd $method seed $seed"
      $P kd seg --teacher "$KD_TEACHER" --student mobilenetv3_large_100 --transfer "$W/pool/busi" \
        --transfer "$W/pool/hc18" --transfer "$W/pool/lung" --transfer-list "$list" --data "$DATA/hc18" \
        --out "$run" --seed "$seed" --split-seed 0 --resume auto "${KD[@]}"
      keep "$run/metrics.json"
    done
  done
}

report() { .venv/bin/python benchmarks/corpus/report_corpus.py --work "$W" --out benchmarks/corpus; }

case ${1:-a} in
  a) stage_a; report ;;
  kd) stage_kd; report ;;
  report) report ;;
  pilot)  # times one selection + a PILOT_STEPS-step distillation at the grid's settings, apart from the grid's runs
    STEPS=${PILOT_STEPS:-40}; RUNS=$W/runs/pilot-$STEPS; pool; list=$(select_list dual-rank 0)
    distill_run dual-rank 0 "$list"; .venv/bin/python benchmarks/corpus/report_corpus.py --runs "$RUNS" --out "$RUNS" ;;
  all) stage_a; stage_kd; report ;;
  *) echo "usage: $0 [a|kd|report|pilot|all]" >&2; exit 2 ;;
esac
