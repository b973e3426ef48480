"""The shipped UI workflows (format 0.4) against node specs in /object_info form: the recorded node lists
(devtools/comfyui_nodes/<version>.json and pack.json, written by scripts/record_core_nodes.py) or a live server's.
One library for the writer (scripts/build_workflows.py: widget order, sockets, the values of a new node) and the
readers (the tests).

``to_api`` turns a UI workflow into the API prompt the frontend would queue (widgets by name in the frontend's order,
links followed through bypassed nodes, notes and muted/bypassed nodes left out), so the executor runs what the JSON
says. No ComfyUI import here.
"""
import json
from pathlib import Path

NODE_LISTS = Path(__file__).resolve().parent / "comfyui_nodes"
VERSIONS = ("0.28.0", "0.8.0", "0.3.64")  # the supported ComfyUI versions, one recorded list each
# The shipped JSONs are written for the node layout of v0.8.0 (scripts/build_workflows.py), which v0.3.64 shares. A
# newer ComfyUI may give a node an OPTIONAL widget after the others (v0.28.0: CreateVideo's bit_depth): the file has
# no value for it, the frontend shows its default and the queued prompt leaves it out, so the node runs with it.
TARGET = "0.8.0"

FRONTEND_ONLY = {"Note", "MarkdownNote"}  # drawn by the frontend, never sent to the server
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
BYPASS, MUTED = 4, 2
# the model folder each loader of the shipped workflows reads its file from (under ComfyUI's models/)
LOADER_FOLDERS = {"UNETLoader": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae",
                  "LoadStandInLoRA": "standin", "LoraLoaderModelOnly": "loras"}


def newer_than_target(version: str) -> bool:
    return tuple(map(int, version.split("."))) > tuple(map(int, TARGET.split(".")))


def recorded(version: str) -> dict:
    """Core nodes of one ComfyUI version plus this pack's nodes, by node type."""
    core = json.loads((NODE_LISTS / f"{version}.json").read_text(encoding="utf-8"))
    assert core["comfyui_version"] == version
    return {**core["nodes"], **pack_nodes()}


def pack_nodes() -> dict:
    return json.loads((NODE_LISTS / "pack.json").read_text(encoding="utf-8"))["nodes"]


def input_order(spec: dict) -> dict:
    return spec.get("input_order") or {section: list(spec["input"].get(section, {})) for section in spec["input"]}


def widget_inputs(spec: dict) -> list:
    """(name, spec) of every widget input, in the order the frontend lays out widgets_values."""
    order = input_order(spec)
    widgets = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            item = spec["input"][section][name]
            if (isinstance(item[0], list) or item[0] in WIDGET_TYPES) and not options_of(item).get("forceInput"):
                widgets.append((name, item))  # (forceInput: a socket only, no widget value in the frontend)
    return widgets


def options_of(item) -> dict:
    return item[1] if len(item) > 1 and isinstance(item[1], dict) else {}


def combo_choices(item):
    """The choices of a COMBO input in either form ([choices, opts] or ["COMBO", {"options": ..}]); None if not one."""
    if isinstance(item[0], list):
        return item[0]
    if item[0] == "COMBO":
        return options_of(item).get("options", [])
    return None


def extra_widgets(item) -> int:
    """Values a widget input adds after its own: the seed control, an upload button."""
    options = options_of(item)
    return int(bool(options.get("control_after_generate"))) + int(
        any(options.get(key) for key in ("image_upload", "video_upload", "audio_upload", "file_upload")))


def socket_inputs(spec: dict) -> dict:
    """name -> type of every input that is not a widget (required, then optional), in the node's input order."""
    widgets, order = {name for name, _ in widget_inputs(spec)}, input_order(spec)
    return {name: spec["input"][section][name][0] for section in ("required", "optional")
            for name in order.get(section, []) if name not in widgets}


def required_sockets(spec: dict) -> set:
    widgets = {name for name, _ in widget_inputs(spec)}
    return set(spec["input"].get("required", {})) - widgets


def declared_type(spec: dict, name: str):
    for section in ("required", "optional"):
        if name in spec["input"].get(section, {}):
            item = spec["input"][section][name]
            return "COMBO" if isinstance(item[0], list) else item[0]
    return None


def listed_widgets(node: dict, spec: dict) -> tuple[list, list]:
    """The widget inputs of ``spec`` that ``node`` has values for, in order, and the optional ones after them that
    it has none for (gained by the node in a newer ComfyUI than the file was written for). ValueError when the
    values do not fit: a required widget without a value, or values left over."""
    widgets, count, used = widget_inputs(spec), len(node["widgets_values"]), 0
    index = 0
    while index < len(widgets) and used < count:
        used += 1 + extra_widgets(widgets[index][1])
        index += 1
    listed, gained = widgets[:index], widgets[index:]
    missing = [name for name, _ in gained if name not in spec["input"].get("optional", {})]
    if used != count or missing:
        raise ValueError(f"{node['type']} (node {node.get('id')}): {count} widget values for the widgets "
                         f"{[name for name, _ in widgets]}" + (f"; no value for the required {missing}" if missing
                                                                else ""))
    return listed, gained


def widget_default(item):
    """The value the frontend gives a widget the file has no value for: its default, else the first choice."""
    options = options_of(item)
    if "default" in options:
        return options["default"]
    choices = combo_choices(item)
    return choices[0] if choices else None


def new_widget_value(item):
    """A widget's value in a newly written node: its default, else its first choice, else the empty value of its kind
    ("" for a combo without choices)."""
    if "default" in options_of(item):
        return options_of(item)["default"]
    choices = combo_choices(item)
    if choices is not None:
        return choices[0] if choices else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[item[0]]


def named_widgets(node: dict, spec: dict) -> dict:
    """{widget name: value} of a UI node (extra values such as the seed control dropped; widgets the file has no
    value for left out, so the node gets their defaults)."""
    values = iter(node["widgets_values"])
    named = {}
    for name, item in listed_widgets(node, spec)[0]:
        named[name] = next(values)
        for _ in range(extra_widgets(item)):
            next(values)
    return named


def to_api(workflow: dict, specs: dict) -> dict:
    """The API prompt a UI workflow queues: {node id: {"class_type", "inputs"}}."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}

    def source(link_id):
        _, origin, slot, _, _, kind = links[link_id]
        node = nodes[origin]
        if node["mode"] == BYPASS:  # the frontend passes a bypassed node's input of the same type through
            for input_ in node["inputs"]:
                if input_["type"] == kind and input_["link"] is not None:
                    return source(input_["link"])
            raise ValueError(f"bypassed node {origin} ({node['type']}) has no {kind} input to pass through")
        return [str(origin), slot]

    prompt = {}
    for node in nodes.values():
        if node["type"] in FRONTEND_ONLY or node["mode"] in (BYPASS, MUTED):
            continue
        inputs = named_widgets(node, specs[node["type"]])
        for input_ in node["inputs"]:
            if input_["link"] is not None:
                inputs[input_["name"]] = source(input_["link"])
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
