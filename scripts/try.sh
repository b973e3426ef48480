#!/usr/bin/env bash
# One command for a fresh machine: set everything up, then run the main job on an embedded default, no downloads.
#  1. prepare scikit-image's bundled astronaut portrait into the 512x512 Stand-In reference (steps saved as PNGs);
#  2. with COMFYUI_PATH set: a tiny-model identity run through the real nodes inside that ComfyUI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m standin_core.prepare_reference --demo --out out/reference_demo
if [ -n "${COMFYUI_PATH:-}" ]; then
  # ComfyUI's own Python requirements (from its requirements.txt), torch/torchvision held at the pair set up above.
  [ -f "$COMFYUI_PATH/requirements.txt" ] || { echo "COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI checkout" >&2; exit 1; }
  .venv/bin/python -m pip install -q -c <(printf 'torch==2.14.1\ntorchvision==0.29.1\n') \
    -r <(grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=~!;])' "$COMFYUI_PATH/requirements.txt") requests
  .venv/bin/python scripts/tiny_identity_run.py --out out/tiny_run
else
  echo "COMFYUI_PATH is not set: skipped the tiny identity run through the real nodes (see README)."
fi
