#!/usr/bin/env bash
# Create .venv with everything the pack, its tests and its demo need, on a CPU machine, and install this
# repository into it (editable) as the package `comfyui_standin`.
# torch/torchvision are pinned HERE (never in requirements.txt): 2.14.1 + 0.29.1 is the pair whose torchvision
# imports on CPU (facexlib needs torchvision.ops.nms).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PINS='torch==2.14.1
torchvision==0.29.1'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q $PINS
.venv/bin/python -m pip install -q -c <(echo "$PINS") -r requirements.txt -r requirements-test.txt
.venv/bin/python -m pip install -q --no-deps --require-hashes -r requirements-test-nodeps.txt
.venv/bin/python -m pip install -q --no-deps -e .
.venv/bin/python -c "import torch, torchvision, facexlib, cv2, comfyui_standin; print('setup ok: torch', torch.__version__, 'torchvision', torchvision.__version__, 'opencv', cv2.__version__)"
