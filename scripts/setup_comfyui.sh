#!/usr/bin/env bash
# Add what the comfyui test tier needs for one ComfyUI tree to .venv (after scripts/setup.sh):
# the tree's own Python requirements (torch/torchvision held at the pair setup.sh installed; torchaudio where the
# tree needs it, see below), requests
# (the server tests and ComfyUI v0.8.0's startup), playwright (drives the real frontend) and Debian's chromium
# (installed with apt-get when it is missing; needs root), and two frontend packages for the workflow checks in
# .venv/frontends/ (the one the tree pins, and the newest release).
#   usage: scripts/setup_comfyui.sh [--no-browser] /path/to/ComfyUI     (--no-browser: skip playwright/chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
browser=1
[ "${1:-}" = "--no-browser" ] && { browser=0; shift; }
tree=${1:?usage: scripts/setup_comfyui.sh [--no-browser] /path/to/ComfyUI}
[ -f "$tree/requirements.txt" ] && [ -d "$tree/comfy" ] || { echo "error: $tree is not a ComfyUI tree" >&2; exit 1; }
.venv/bin/python -m pip install -q -c <(printf 'torch==2.14.1\ntorchvision==0.29.1\n') \
  -r <(grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=~!;])' "$tree/requirements.txt") requests
# ComfyUI lists torchaudio (v0.3.64, v0.8.0, v0.28.0): its audio nodes load only with it, and v0.28 and newer import
# it at start-up (comfy/sd.py -> comfy/ldm/lightricks/vae/audio_vae.py). The package registry has no torchaudio built
# for torch 2.14; 2.11.1 (the newest) imports and runs beside it (checked: torchaudio.functional.resample), so it goes
# in without its torch pin. A tree that does not list torchaudio does without.
if grep -qE '^\s*torchaudio\s*($|[<>=~!;])' "$tree/requirements.txt"; then
  .venv/bin/python -m pip install -q --no-deps torchaudio==2.11.1
  .venv/bin/python -c "import torch, torchaudio, torchaudio.functional as F; F.resample(torch.zeros(1, 8), 2, 1); print('torchaudio', torchaudio.__version__, 'beside torch', torch.__version__)"
fi
[ "$browser" -eq 1 ] || { echo "ComfyUI requirements installed for $tree (no browser)"; exit 0; }
.venv/bin/python -m pip install -q playwright
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null
  else
    echo "error: the frontend checks need Chromium: install Debian's chromium (apt-get install chromium)" >&2
    exit 1
  fi
fi
# The frontends the workflow checks serve with --front-end-root (outside site-packages, so the tree's own pin is
# untouched): the one this tree pins, and the newest release on the package registry (what a new user gets).
pinned=$(sed -n 's/^comfyui-frontend-package==\([^ ;]*\).*/\1/p' "$tree/requirements.txt")
if [ -n "$pinned" ] && [ ! -f ".venv/frontends/$pinned/comfyui_frontend_package/static/index.html" ]; then
  .venv/bin/python -m pip install -q --no-deps --target ".venv/frontends/$pinned" "comfyui-frontend-package==$pinned"
fi
rm -rf .venv/frontends/newest.tmp
.venv/bin/python -m pip install -q --no-deps --target .venv/frontends/newest.tmp comfyui-frontend-package
rm -rf .venv/frontends/newest && mv .venv/frontends/newest.tmp .venv/frontends/newest
echo "frontends: pinned ${pinned:-none}, newest $(ls .venv/frontends/newest | sed -n 's/^comfyui_frontend_package-\(.*\)\.dist-info$/\1/p')"
echo "comfyui tier ready for $tree"
