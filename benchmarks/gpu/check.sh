#!/usr/bin/env bash
# GPU check of `pocus distill` (issue 18 section 5): bf16 distillation throughput (ViT-B/16 -> ResNet-50, 256 px,
# global batch 512 = micro-batch 128 x 4), TFLOP/s against the bf16 peak (790 on an H200), peak GPU memory,
# torch.compile off/on, and 2 DDP processes on one GPU if NCCL allows it. Writes benchmarks/gpu/check.json and
# check.md (or --out DIR). Finishes within POCUS_GPU_CHECK_LIMIT_S seconds (default 480 = 8 minutes, set-up
# included): `timeout` holds that limit and check.py stops starting new work before it.
#
#   bash benchmarks/gpu/check.sh                      # on a machine with a CUDA GPU
#   bash benchmarks/gpu/check.sh --dry-run --out DIR  # CPU, CI size, < 1 minute (tests/test_gpu_check.py)
#   bash benchmarks/gpu/check.sh --help               # check.py's options (objective, batch sizes, steps, ...)
#
# Python, first that works: $POCUS_PYTHON; the checkout's .venv (or $POCUS_GPU_CHECK_VENV); python3 with this
# checkout on PYTHONPATH when it already has torch, timm (with DINOv3 models), safetensors and pyyaml; else a new
# venv with `pip install torch==2.14.1 torchvision==0.29.1` and `pip install -e '.[train]'`.
# The GPU machine of this workplace (/work/.library/device/README.md, KINDS.md) reaches no network: its python3
# holds torch, timm, safetensors and pyyaml, so the third choice is the one taken there and pip is never needed.
# A package it lacks travels as wheels: put them in .whl/ at the repo root (carried with the tool's `carry`) and
# this script installs them with --no-index into a private folder first. When pip cannot install, set-up stops
# at once (no retries) with exit code 3 and says what to do.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LIMIT_S="${POCUS_GPU_CHECK_LIMIT_S:-480}"
VENV="${POCUS_GPU_CHECK_VENV:-$REPO/.venv}"
BASE_PYTHON="${POCUS_GPU_CHECK_BASE_PYTHON:-python3}"
START=$SECONDS
PROBE_ERR="$(mktemp)"
trap 'rm -f "$PROBE_ERR"' EXIT

remaining() { echo $((LIMIT_S - (SECONDS - START))); }
die() { echo "check.sh: $*" >&2; exit 3; }

PROBE='import torch, timm, safetensors, yaml, pocus_edge.distill.setup
assert timm.is_model("vit_base_patch16_dinov3"), "timm " + timm.__version__ + " has no vit_base_patch16_dinov3 (needs >= 1.0.20)"'

works() {  # works PYTHON: can it run check.py? (the reason goes to stderr when it cannot)
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" timeout 120 "$1" -c "$PROBE" >/dev/null 2>"$PROBE_ERR"
}

if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    SITE="${TMPDIR:-/tmp}/pocus-gpu-check-site"
    echo "check.sh: installing the carried wheels in $REPO/.whl into $SITE (no index)"
    timeout 300 "$BASE_PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
        "$REPO"/.whl/*.whl || die "pip could not install the wheels in $REPO/.whl (see above); fix or remove them"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

PY=""
if [[ -n "${POCUS_PYTHON:-}" ]]; then
    works "$POCUS_PYTHON" || die "POCUS_PYTHON=$POCUS_PYTHON cannot import what check.py needs: $(tail -1 "$PROBE_ERR")"
    PY="$POCUS_PYTHON"
elif [[ -x "$VENV/bin/python" ]] && works "$VENV/bin/python"; then
    PY="$VENV/bin/python"
elif command -v "$BASE_PYTHON" >/dev/null && works "$BASE_PYTHON"; then
    PY="$BASE_PYTHON"
else
    echo "check.sh: no Python with torch + timm found; creating $VENV (this needs pip to reach an index)"
    "$BASE_PYTHON" -m venv "$VENV" || die "python3 -m venv $VENV failed"
    PIP=("$VENV/bin/python" -m pip install --retries 0 --timeout 15 --disable-pip-version-check -q)
    timeout "$(remaining)" "${PIP[@]}" torch==2.14.1 torchvision==0.29.1 \
        || die "pip cannot install torch==2.14.1 torchvision==0.29.1 (no network or no index here). On a machine \
without internet, run with a python3 that already has torch and timm (POCUS_PYTHON=...), or carry wheels in .whl/"
    timeout "$(remaining)" "${PIP[@]}" -e "$REPO[train]" || die "pip cannot install -e '$REPO[train]' (see above)"
    works "$VENV/bin/python" || die "the new venv still cannot import what check.py needs: $(tail -1 "$PROBE_ERR")"
    PY="$VENV/bin/python"
fi

LEFT=$(remaining)
(( LEFT > 60 )) || die "set-up took $((SECONDS - START)) s of the ${LIMIT_S} s limit; nothing left to measure"
echo "check.sh: $PY ($("$PY" -c 'import torch; print("torch", torch.__version__)')), ${LEFT} s left"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" timeout --kill-after=10 "$((LEFT - 5))" \
    "$PY" "$HERE/check.py" --deadline-s "$((LEFT - 50))" "$@"
rc=$?
if (( rc == 124 || rc == 137 )); then
    echo "check.sh: stopped at the ${LIMIT_S} s limit; the JSON/Markdown hold the phases that finished" >&2
fi
exit $rc
