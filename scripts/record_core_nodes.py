"""Record the core nodes of one ComfyUI tree (its live /object_info) for the CI-tier workflow checks.

    PYTHONPATH=/path/to/ComfyUI COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python scripts/record_core_nodes.py
        [--data tests/data] [--out devtools/comfyui_nodes]

Starts that tree's server through the harness (devtools/comfyui_server.py: the pack linked in, tiny test files in
its model folders, the real files it needs from --data), reads /object_info and writes ``<out>/<version>.json``:
every node that is neither this pack's nor the harness's test-only nodes, with its inputs (tooltips dropped; the
options of file-list combos emptied, as they list the test's files), input order and outputs. Also writes this pack's
own nodes to ``<out>/pack.json`` (the same shape) for ``scripts/build_workflows.py``. The logic is
devtools/node_lists.py.
"""
import argparse
import os
import sys
from pathlib import Path

from comfyui_standin.devtools import node_lists

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--data", type=Path, default=REPO / "tests" / "data",
                     help="folder with the real files the server harness needs (default: the tests' tests/data)")
    cli.add_argument("--out", type=Path, default=node_lists.NODE_LISTS, help="where the lists go")
    args = cli.parse_args(argv)
    from comfyui_standin.devtools.comfy_boot import import_comfyui
    root = import_comfyui(os.environ["COMFYUI_PATH"])
    version, count = node_lists.record(root, args.data, args.out)
    print(f"{count} core nodes of ComfyUI {version} -> {args.out / (version + '.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
