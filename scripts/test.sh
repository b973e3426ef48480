#!/usr/bin/env bash
# Lint, then run the test suite (arguments go to pytest; -m "not slow" is the fast loop). With COMFYUI_PATH set,
# the comfyui tier runs too, against that ComfyUI tree: the tree goes on
# PYTHONPATH (ahead of this repository, so ComfyUI's own top-level `nodes` module is the one imported) and a path
# that is not a ComfyUI tree is an error. pytest exits 5 when it collected no test: a failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
[ -x "$BIN/pytest" ] || { echo "error: no .venv: run scripts/setup.sh first" >&2; exit 1; }
if [ -n "${COMFYUI_PATH:-}" ]; then
  if [ ! -d "$COMFYUI_PATH/comfy" ] || [ ! -f "$COMFYUI_PATH/nodes.py" ]; then
    echo "error: COMFYUI_PATH=$COMFYUI_PATH is not a ComfyUI tree (no comfy/ or nodes.py there)" >&2
    exit 1
  fi
  COMFYUI_PATH=$(cd "$COMFYUI_PATH" && pwd)
  export COMFYUI_PATH PYTHONPATH="$COMFYUI_PATH${PYTHONPATH:+:$PYTHONPATH}"
fi
# the linter first (a second or two; configured in pyproject.toml): a lint error fails the run like a failed test
if ! "$BIN/ruff" check --quiet .; then
  echo "error: ruff found the problems above (to fix what it can: $BIN/ruff check --fix .)" >&2
  exit 1
fi
"$BIN/pytest" "$@"   # the pytest script, not `python -m pytest`: that would put this folder first on sys.path
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); the suite must run" >&2
  exit 1
fi
exit "$rc"
