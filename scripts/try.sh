#!/usr/bin/env bash
# One command for a fresh machine: set everything up, then run the main job on an embedded default, no downloads.
#  1. prepare scikit-image's bundled astronaut portrait into the 512x512 Stand-In reference (steps saved as PNGs);
#  2. with COMFYUI_PATH set: a tiny-model identity run through the real nodes inside that ComfyUI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/prepare_reference.py --demo --out out/reference_demo
if [ -n "${COMFYUI_PATH:-}" ]; then
  bash scripts/setup_comfyui.sh --no-browser "$COMFYUI_PATH"
  COMFYUI_PATH=$(cd "$COMFYUI_PATH" && pwd)
  COMFYUI_PATH=$COMFYUI_PATH PYTHONPATH=$COMFYUI_PATH .venv/bin/python scripts/tiny_identity_run.py --out out/tiny_run
else
  echo "COMFYUI_PATH is not set: skipped the tiny identity run through the real nodes (see README)."
fi
