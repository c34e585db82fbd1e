#!/usr/bin/env bash
# Install footprint: a fresh venv with only `pocus-edge[runtime]` (numpy, pillow, typer, jsonschema, onnxruntime)
# against the full development venv. Prints MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
TMP=$(mktemp -d)
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install --quiet --upgrade pip
"$TMP/venv/bin/pip" install --quiet '.[runtime]'
"$TMP/venv/bin/python" -c "import pocus_edge.runtime, sys; assert 'torch' not in sys.modules; print('runtime imports without torch')"
echo "runtime-only venv: $(du -sm "$TMP/venv" | cut -f1) MB"
echo "full dev venv (.venv): $(du -sm .venv | cut -f1) MB"
rm -rf "$TMP"
