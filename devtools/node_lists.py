"""The recorded node lists (devtools/comfyui_nodes/): one ComfyUI version's core nodes, and this pack's, in the compact
/object_info form the workflow checks and scripts/build_workflows.py read.

``compact`` is what a live /object_info entry is recorded as: tooltips and descriptions dropped, the options of
file-list and folder-list combos emptied (they list the test server's files and folders), input order and outputs
kept. ``render`` turns a live /object_info into the files' text; ``record`` starts a ComfyUI server through the
harness and writes them; scripts/record_core_nodes.py is its command line, and tests/test_workflows.py renders the
live server's lists and compares them with the recorded files byte for byte.
"""
import json
from pathlib import Path

NODE_LISTS = Path(__file__).resolve().parent / "comfyui_nodes"
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


def lists_input_folders(node_type: str, input_name: str) -> bool:
    """The dataset loaders' ``folder`` combo lists the server's input subfolders, which depend on what ran before
    (ComfyUI creates input/3d on some first calls, so one server lists it and another not yet)."""
    return "FromFolder" in node_type and input_name == "folder"


def compact(info: dict, node_type: str = "") -> dict:
    inputs = {}
    for section in ("required", "optional"):
        specs = {}
        for name, spec in info["input"].get(section, {}).items():
            spec = strip(spec)
            if is_file_list(spec) or lists_input_folders(node_type, name):
                spec = [[], *spec[1:]] if isinstance(spec[0], list) else ["COMBO", {**spec[1], "options": []}]
            specs[name] = spec
        if specs:
            inputs[section] = specs
    return {"input": inputs, "input_order": {key: value for key, value in info.get("input_order", {}).items()
                                             if key in ("required", "optional")},
            "output": info["output"], "output_name": info["output_name"],
            "output_is_list": info.get("output_is_list", [])}


def record(comfyui_root: Path, data: Path, out: Path = NODE_LISTS) -> tuple:
    """Start the ComfyUI tree ``comfyui_root`` (already imported, see comfy_boot) through the harness, with the real
    files in ``data``; write its core nodes to ``out/<version>.json`` and ours to ``out/pack.json``. Returns the
    version and the number of core nodes."""
    from comfyui_standin.devtools import comfyui_server
    from comfyui_standin.devtools.comfy_boot import comfyui_version
    server, process = comfyui_server._start(comfyui_server.TempDirs(), data)
    try:
        info = server.get("/object_info", timeout=120)
    finally:
        comfyui_server._stop(process)
    version = comfyui_version(comfyui_root)
    texts = render(info, version)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    return version, len(json.loads(texts[f"{version}.json"])["nodes"])


def render(info: dict, version: str) -> dict:
    """A live /object_info as the recorded files: {"<version>.json": text, "pack.json": text}."""
    from comfyui_standin.devtools import comfyui_server, server_test_nodes
    ours, helpers = set(comfyui_server.OUR_NODES), set(server_test_nodes.NODE_CLASS_MAPPINGS)
    core = {name: compact(spec, name) for name, spec in sorted(info.items()) if name not in ours | helpers
            and not name.startswith("StandInTest")}
    return {f"{version}.json": text_of({"comfyui_version": version, "nodes": core}),
            "pack.json": text_of({"nodes": {name: compact(info[name], name) for name in sorted(ours)}})}


def text_of(data: dict) -> str:
    """One node per line, so a regenerated list diffs node by node."""
    nodes = data["nodes"]
    lines = [f"  {json.dumps(name)}: {json.dumps(nodes[name], ensure_ascii=False, sort_keys=True)}" for name in nodes]
    head = {key: value for key, value in data.items() if key != "nodes"}
    text = "{\n" + "".join(f"{json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
    text += '"nodes": {\n' + ",\n".join(lines) + "\n}}\n"
    json.loads(text)
    return text
