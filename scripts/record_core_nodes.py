"""Record the core nodes of one ComfyUI tree (its live /object_info) for the CI-tier workflow checks.

    PYTHONPATH=/path/to/ComfyUI COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python scripts/record_core_nodes.py

Starts that tree's server through the test harness (tests/support/comfyui_server.py: the pack linked in, tiny test
files in its model folders), reads /object_info and writes ``tests/data/comfyui_nodes/<version>.json``: every node
that is neither this pack's nor the harness's test-only nodes, with its inputs (tooltips dropped; the options of
file-list combos emptied, as they list the test's files), input order and outputs. Also writes this pack's own nodes to
``tests/data/comfyui_nodes/pack.json`` (the same shape) for ``scripts/build_workflows.py``.
"""
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "comfyui_nodes"
TEST_FILE_MARKERS = ("tiny_", "standin_swap", "standin_performer")


def strip(value):
    if isinstance(value, dict):
        return {key: strip(item) for key, item in value.items() if key not in ("tooltip", "description")}
    if isinstance(value, list):
        return [strip(item) for item in value]
    return value


def is_file_list(spec) -> bool:
    options = spec[0] if isinstance(spec[0], list) else (spec[1].get("options") if spec[0] == "COMBO" else None)
    return isinstance(options, list) and any(isinstance(option, str) and option.startswith(TEST_FILE_MARKERS)
                                              for option in options)


def compact(info: dict) -> dict:
    inputs = {}
    for section in ("required", "optional"):
        specs = {}
        for name, spec in info["input"].get(section, {}).items():
            spec = strip(spec)
            if is_file_list(spec):
                spec = [[], *spec[1:]] if isinstance(spec[0], list) else ["COMBO", {**spec[1], "options": []}]
            specs[name] = spec
        if specs:
            inputs[section] = specs
    return {"input": inputs, "input_order": {key: value for key, value in info.get("input_order", {}).items()
                                             if key in ("required", "optional")},
            "output": info["output"], "output_name": info["output_name"],
            "output_is_list": info.get("output_is_list", [])}


def main() -> None:
    from comfyui_standin.tests.support.comfy_boot import comfyui_version, import_comfyui
    root = import_comfyui(os.environ["COMFYUI_PATH"])
    from comfyui_standin.tests.support import comfyui_server

    server, process = comfyui_server._start(comfyui_server.TempDirs())
    try:
        info = server.get("/object_info", timeout=120)
    finally:
        comfyui_server._stop(process)
    helpers = {"StandInTestConditioning", "StandInTestLatent", "StandInTestSaveMask", "StandInTestMemory"}
    ours = set(comfyui_server.OUR_NODES)
    core = {name: compact(spec) for name, spec in sorted(info.items()) if name not in ours | helpers
            and not name.startswith("StandInTest")}
    OUT.mkdir(parents=True, exist_ok=True)
    version = comfyui_version(root)
    write(OUT / f"{version}.json", {"comfyui_version": version, "nodes": core})
    write(OUT / "pack.json", {"nodes": {name: compact(info[name]) for name in sorted(ours)}})
    print(f"{len(core)} core nodes of ComfyUI {version} -> {OUT / (version + '.json')}", file=sys.stderr)


def write(path: Path, data: dict) -> None:
    """One node per line, so a regenerated list diffs node by node."""
    nodes = data["nodes"]
    lines = [f"  {json.dumps(name)}: {json.dumps(nodes[name], ensure_ascii=False, sort_keys=True)}" for name in nodes]
    head = {key: value for key, value in data.items() if key != "nodes"}
    text = "{\n" + "".join(f"{json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
    text += '"nodes": {\n' + ",\n".join(lines) + "\n}}\n"
    json.loads(text)
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
