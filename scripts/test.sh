#!/usr/bin/env bash
# Run the test suite. Tests marked `comfyui` run only when COMFYUI_PATH points to a ComfyUI tree.
# pytest exits 5 when it collected no test: that is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5); the suite must run" >&2
  exit 1
fi
exit "$rc"
