"""The example workflows in workflows/ (ComfyUI UI format 0.4): well formed, with the official settings, runnable.

CI tier (no ComfyUI): every file parses; node types exist in the RECORDED node list of each supported ComfyUI
version (devtools/comfyui_nodes/<version>.json, from that version's /object_info) or in this pack; every link
agrees with both node entries and joins an output and an input of the same type, as the recorded specs declare them;
widget values fit the inputs (count, combo choices, numeric ranges, value kinds); required sockets are connected;
each loader's file is in ``properties.models`` when every frontend downloads it, else in the note; each graph
carries the official settings (or says where and why it departs) and a note; build_workflows.py regenerates the
files byte for byte; the gallery pictures are current with the JSONs.
ComfyUI tier: the recorded lists regenerate byte for byte from the live server; the Wan2.2 split and the 4-step
schedule are computed with ComfyUI's own scheduler code. tests/test_workflows_run.py runs every graph through the
executor and loads it in the real frontend.
"""
import ast
import hashlib
import json
import re
from pathlib import Path

import pytest

from comfyui_standin.devtools import node_lists, workflow_graph as wg

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # the real files the server harness needs
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
EXPECTED_WORKFLOWS = {"standin_wan21_t2v.json", "standin_wan21_vace_pose.json", "standin_wan21_style_lora.json",
                      "standin_wan21_face_swap.json", "standin_wan21_face_swap_two_people.json",
                      "standin_wan22_a14b.json", "standin_wan21_subject.json",
                      "standin_wan21_fast_lightx2v.json", "standin_wan21_two_clips.json",
                      "standin_wan21_two_people.json", "standin_wan21_vace_two_people.json"}
SPECS = {version: wg.recorded(version) for version in wg.VERSIONS}
LOADERS = {"UNETLoader": "unet_name", "CLIPLoader": "clip_name", "VAELoader": "vae_name",
           "LoadStandInLoRA": "weights", "LoraLoaderModelOnly": "lora_name"}
# File-list combos: the names are what users download; the recorded lists (a test server's) hold other files.
FILE_INPUTS = {*LOADERS.items(), ("LoadImage", "image"), ("LoadVideo", "file")}
OFFICIAL_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，"
                     "整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
                     "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
                     "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
                     "三条腿，背景人很多，倒着走")  # WeChatCV/Stand-In infer*.py --negative_prompt


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(params=WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def workflow(request) -> dict:
    return load(request.param)


# ---------------------------------------------------------------------------------------------------------------------
# Our node schemas, read from nodes/*.py without importing ComfyUI (keeps devtools/comfyui_nodes/pack.json honest)

def _is_io_input(call: ast.Call):
    """'Int', 'Combo', ... for ``io.<Kind>.Input(...)``; 'socket' for ``<CustomType>.Input(...)``; else None."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "Input"):
        return None
    owner = func.value
    if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) and owner.value.id == "io":
        return owner.attr if owner.attr in {"Int", "Float", "Boolean", "Combo", "String"} else "socket"
    return "socket"


def _describe_input(expr: ast.expr, helpers: dict) -> dict:
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in helpers:
        returns = [node.value for node in ast.walk(helpers[expr.func.id]) if isinstance(node, ast.Return)]
        assert len(returns) == 1, f"cannot read the input made by {expr.func.id}()"
        return _describe_input(returns[0], helpers)
    assert isinstance(expr, ast.Call) and _is_io_input(expr), f"cannot read schema input {ast.unparse(expr)}"
    keywords = {keyword.arg: keyword.value for keyword in expr.keywords}
    forced = "force_input" in keywords and ast.literal_eval(keywords["force_input"])  # a socket, no widget
    return {"name": ast.literal_eval(expr.args[0]), "widget": _is_io_input(expr) != "socket" and not forced,
            "optional": "optional" in keywords and ast.literal_eval(keywords["optional"])}


def _schema_inputs(items: list, helpers: dict) -> list:
    """The input descriptions of a Schema's inputs list; ``*helper(...)`` takes the list that helper returns."""
    described = []
    for item in items:
        if isinstance(item, ast.Starred):
            call = item.value
            assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in helpers, (
                f"cannot read schema inputs {ast.unparse(item)}")
            returns = [node.value for node in ast.walk(helpers[call.func.id]) if isinstance(node, ast.Return)]
            assert len(returns) == 1 and isinstance(returns[0], ast.List), f"{call.func.id}() must return a list"
            described += _schema_inputs(returns[0].elts, helpers)
        else:
            described.append(_describe_input(item, helpers))
    return described


def our_schemas() -> dict:
    """node_id -> list of input descriptions, from the io.Schema(...) calls in nodes/*.py."""
    schemas = {}
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in sorted((REPO / "nodes").glob("*.py"))]
    helpers = {node.name: node for tree in trees for node in tree.body if isinstance(node, ast.FunctionDef)}
    for tree in trees:  # (input helpers may be shared between node modules)
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "Schema"):
                continue
            keywords = {keyword.arg: keyword.value for keyword in call.keywords}
            node_id = ast.literal_eval(keywords["node_id"])
            schemas[node_id] = _schema_inputs(keywords["inputs"].elts, helpers)
    return schemas


def test_recorded_pack_nodes_match_the_source():
    schemas, recorded = our_schemas(), wg.pack_nodes()
    assert set(recorded) == set(schemas)
    for node_type, inputs in schemas.items():
        spec = recorded[node_type]
        assert [name for name, _ in wg.widget_inputs(spec)] == [item["name"] for item in inputs if item["widget"]]
        assert wg.required_sockets(spec) == {item["name"] for item in inputs
                                             if not item["widget"] and not item["optional"]}, node_type


# ---------------------------------------------------------------------------------------------------------------------
# CI tier: structure, links and widgets against each recorded ComfyUI version

def test_the_promised_workflows_exist():
    assert EXPECTED_WORKFLOWS == {path.name for path in WORKFLOWS}


def test_top_level_format(workflow):
    for key in ("id", "last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in workflow, f"missing '{key}'"
    assert workflow["version"] == 0.4
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", workflow["id"])
    ids = [node["id"] for node in workflow["nodes"]]
    assert len(ids) == len(set(ids)), "duplicate node ids"
    assert workflow["last_node_id"] >= max(ids)
    link_ids = [link[0] for link in workflow["links"]]
    assert len(link_ids) == len(set(link_ids)), "duplicate link ids"
    assert workflow["last_link_id"] >= max(link_ids)
    for node in workflow["nodes"]:
        for key in ("id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode", "order"):
            assert key in node, f"node {node.get('id')} misses '{key}'"
        assert len(node["pos"]) == 2 and len(node["size"]) == 2
    orders = sorted(node["order"] for node in workflow["nodes"])
    assert orders == list(range(len(orders)))


def test_links_agree_with_both_ends(workflow):
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {}
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        links[link_id] = link_type
        assert origin in nodes and target in nodes, f"link {link_id} joins missing nodes"
        outputs, inputs = nodes[origin]["outputs"], nodes[target]["inputs"]
        assert origin_slot < len(outputs) and target_slot < len(inputs), f"link {link_id} uses a missing slot"
        output, input_ = outputs[origin_slot], inputs[target_slot]
        assert link_id in (output["links"] or []), f"link {link_id} not listed on {nodes[origin]['type']}"
        assert input_["link"] == link_id, f"link {link_id} not on {nodes[target]['type']}.{input_['name']}"
        assert output["type"] == input_["type"] == link_type, (
            f"link {link_id}: {nodes[origin]['type']}.{output['name']} ({output['type']}) -> "
            f"{nodes[target]['type']}.{input_['name']} ({input_['type']}) typed {link_type}")
    for node in workflow["nodes"]:  # and nothing on a node points at a link that does not exist
        for input_ in node["inputs"]:
            assert input_["link"] is None or input_["link"] in links
        for output in node["outputs"]:
            assert all(link in links for link in output["links"] or [])


@pytest.mark.parametrize("version", wg.VERSIONS)
def test_node_types_exist_in_the_recorded_version(workflow, version):
    unknown = {node["type"] for node in workflow["nodes"]} - set(SPECS[version]) - wg.FRONTEND_ONLY
    assert not unknown, f"not core nodes of ComfyUI {version} nor this pack's: {unknown}"


@pytest.mark.parametrize("version", wg.VERSIONS)
def test_sockets_and_links_match_the_recorded_specs(workflow, version):
    """Each node's outputs are the spec's (names, types, order); each input exists with the link's type."""
    specs = SPECS[version]
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in workflow["nodes"]:
        if node["type"] in wg.FRONTEND_ONLY:
            continue
        spec = specs[node["type"]]
        outputs = list(zip(spec["output_name"], spec["output"]))
        if wg.newer_than_target(version):  # outputs a node gained later (v0.28.0: PreviewImage's images) come last
            outputs = outputs[:len(node["outputs"])]
        assert [(output["name"], output["type"]) for output in node["outputs"]] == outputs, (
            f"{node['type']} (node {node['id']}) outputs on ComfyUI {version}")
        for input_ in node["inputs"]:
            declared = wg.declared_type(spec, input_["name"])
            assert declared is not None, f"{node['type']} has no input {input_['name']}"
            if "widget" not in input_:
                assert input_["name"] in wg.socket_inputs(spec) and declared == input_["type"], (
                    f"{node['type']}.{input_['name']}: {input_['type']} in the file, {declared} in ComfyUI {version}")
    for _, origin, slot, target, target_slot, kind in workflow["links"]:
        out_type = specs[nodes[origin]["type"]]["output"][slot]
        input_ = nodes[target]["inputs"][target_slot]
        in_type = wg.declared_type(specs[nodes[target]["type"]], input_["name"])
        assert out_type == kind and (in_type == kind or in_type == "*" or (in_type in wg.WIDGET_TYPES and
                                                                           kind == in_type)), (
            f"{nodes[origin]['type']} output {slot} ({out_type}) -> {nodes[target]['type']}.{input_['name']} "
            f"({in_type})")


@pytest.mark.parametrize("version", wg.VERSIONS)
def test_widget_values_fit_the_inputs(workflow, version):
    kinds = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}
    for node in workflow["nodes"]:
        if node["type"] in wg.FRONTEND_ONLY:
            assert len(node["widgets_values"]) == 1 and isinstance(node["widgets_values"][0], str)
            continue
        spec = SPECS[version][node["type"]]
        where = f"{node['type']} (node {node['id']}) on ComfyUI {version}"
        listed, gained = wg.listed_widgets(node, spec)  # raises when the values do not fit the widgets
        assert not gained or wg.newer_than_target(version), f"{where}: no value for {gained}"
        values = iter(node["widgets_values"])
        for name, item in listed:
            value, options = next(values), wg.options_of(item)
            choices = wg.combo_choices(item)
            if choices is not None:
                if (node["type"], name) in FILE_INPUTS:
                    assert isinstance(value, str) and value, f"{where}.{name} = {value!r}"
                else:
                    assert value in choices, f"{where}.{name} = {value!r} is not one of {choices}"
            else:
                assert isinstance(value, kinds[item[0]]) and not (item[0] != "BOOLEAN" and isinstance(value, bool)), (
                    f"{where}.{name} = {value!r} is not {item[0]}")
                if item[0] in ("INT", "FLOAT"):
                    assert options.get("min", value) <= value <= options.get("max", value), f"{where}.{name} = {value}"
            if options.get("control_after_generate"):
                assert next(values) in wg.SEED_CONTROLS
            for _ in range(wg.extra_widgets(item) - int(bool(options.get("control_after_generate")))):
                next(values)  # the upload button's value


@pytest.mark.parametrize("version", wg.VERSIONS)
def test_required_sockets_are_connected(workflow, version):
    for node in workflow["nodes"]:
        if node["type"] in wg.FRONTEND_ONLY:
            continue
        connected = {input_["name"] for input_ in node["inputs"] if input_["link"] is not None}
        missing = wg.required_sockets(SPECS[version][node["type"]]) - connected
        assert not missing, f"{node['type']} (node {node['id']}) has unconnected inputs {missing}"


FACE_FILES = ("detection_Resnet50_Final.pth", "parsing_bisenet.pth")


def offered_for_download(item: dict, node: dict) -> bool:
    """The rule of the missing-models dialog in every frontend the tests serve, restated from their source
    (comfyui-frontend-package 1.27.10 and 1.35.9: MissingModelsWarning.vue, allowedSources / allowedSuffixes;
    1.45.21 and 1.58.1: missingModelDownload.ts, ALLOWED_SOURCES / ALLOWED_SUFFIXES; all: only an entry whose name
    is a widget value of its node): a Hugging Face or civitai url, a .safetensors or .sft name, the name among the
    node's widget values. Plus: the url is the file (a Hugging Face /resolve/ link ending in the name), not a page."""
    return (item["url"].startswith(("https://huggingface.co/", "https://civitai.com/"))
            and item["name"].endswith((".safetensors", ".sft")) and item["name"] in node["widgets_values"]
            and item["url"].startswith("https://huggingface.co/") and "/resolve/" in item["url"]
            and item["url"].endswith("/" + item["name"]))


def test_every_model_entry_is_a_download_every_frontend_offers(workflow):
    """properties.models holds only what every frontend downloads; a loader whose file has no such link carries
    none, and the note gives the link and the folder instead (the .ckpt Stand-In files, a civitai page)."""
    (note,) = [node for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
    text = note["widgets_values"][0]
    for node in workflow["nodes"]:
        for item in node.get("properties", {}).get("models", []):
            assert offered_for_download(item, node), item
        if node["type"] in wg.LOADER_FOLDERS:
            name = node["widgets_values"][0]
            assert f"[{name}](https://" in text and f"models/{wg.LOADER_FOLDERS[node['type']]}" in text, name
            if not node["properties"].get("models"):
                link = re.search(rf"\[{re.escape(name)}\]\((https://[^)]+)\)", text).group(1)
                assert not offered_for_download({"name": name, "url": link, "directory": ""}, node), name
                by_hand = re.search(r"downloads the others; get (.*?) from the links above", text, re.S)
                assert by_hand and name in by_hand.group(1), f"the note says how to get {name}"
    faces = [node for node in workflow["nodes"] if node["type"] in ("EncodeReferenceFace", "StandInFaceSwapPaste")
             and not (node["type"] == "EncodeReferenceFace" and node["widgets_values"][1])]
    for node in faces:  # their file names are never widget values: no frontend would offer them
        assert not node["properties"].get("models"), node["type"]
    if faces:
        assert all(f"[{name}](https://github.com/xinntao/facexlib/releases/download/" in text for name in FACE_FILES)
        assert "models/facexlib" in text


def test_each_graph_has_a_note_naming_its_files_and_folders(workflow):
    (note,) = [node for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
    text = note["widgets_values"][0]
    assert "**Change first:**" in text
    for node in workflow["nodes"]:
        for item in node.get("properties", {}).get("models", []):
            assert item["name"] in text and f"models/{item['directory']}" in text, item["name"]


def test_negative_prompts_are_the_official_one(workflow):
    texts = {node.get("title", ""): node["widgets_values"][0] for node in workflow["nodes"]
             if node["type"] == "CLIPTextEncode"}
    assert texts.get("Negative prompt (official)") == OFFICIAL_NEGATIVE


# ---------------------------------------------------------------------------------------------------------------------
# CI tier: the graphs do what their names promise

class Graph:
    def __init__(self, workflow: dict):
        self.nodes = {node["id"]: node for node in workflow["nodes"]}
        self.links = {link[0]: link for link in workflow["links"]}
        self.specs = SPECS[wg.TARGET]

    def of_type(self, node_type: str) -> list:
        return [node for node in self.nodes.values() if node["type"] == node_type]

    def one(self, node_type: str) -> dict:
        (node,) = self.of_type(node_type)
        return node

    def widgets(self, node: dict) -> dict:
        return wg.named_widgets(node, self.specs[node["type"]])

    def source(self, node: dict, input_name: str, slot: bool = False):
        """The node feeding ``input_name`` of ``node`` (and the output slot, with ``slot``)."""
        link = next(input_["link"] for input_ in node["inputs"] if input_["name"] == input_name)
        assert link is not None, f"{node['type']}.{input_name} is not connected"
        origin = self.nodes[self.links[link][1]]
        return (origin, self.links[link][2]) if slot else origin

    def upstream_types(self, node: dict) -> set:
        seen, todo = set(), [node]
        while todo:
            current = todo.pop()
            for input_ in current["inputs"]:
                if input_["link"] is not None:
                    origin = self.nodes[self.links[input_["link"]][1]]
                    if origin["id"] not in seen:
                        seen.add(origin["id"])
                        todo.append(origin)
        return {self.nodes[node_id]["type"] for node_id in seen}

    def model_chain(self, sampler: dict) -> list:
        """The nodes along the MODEL input of a sampler, sampler side first."""
        chain, node = [], sampler
        while "model" in {input_["name"] for input_ in node["inputs"]}:
            node = self.source(node, "model")
            chain.append(node)
        return chain


def graph(name: str) -> Graph:
    return Graph(load(REPO / "workflows" / name))


def standin_chain(g: Graph, sampler: dict, unet_file: str, standin_file: str) -> list:
    """Checks a sampler's MODEL path: ModelSamplingSD3 (shift 5) <- cache <- Stand-In (official strength) <- ... <-
    UNETLoader; returns the types along it."""
    chain = g.model_chain(sampler)
    types = [node["type"] for node in chain]
    assert types[:3] == ["ModelSamplingSD3", "StandInKVCache", "ApplyStandInToWanModel"], types
    assert types[-1] == "UNETLoader" and chain[-1]["widgets_values"][0] == unet_file, types
    assert g.widgets(chain[0]) == {"shift": 5.0} and g.widgets(chain[1]) == {"mode": "on"}
    apply = chain[2]
    assert g.source(apply, "standin")["widgets_values"] == [standin_file]
    assert g.source(apply, "reference_latent")["type"] == "EncodeReferenceFace"
    assert g.widgets(apply) == {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}
    return types


def assert_official_sampler(g: Graph, sampler: dict, steps=20, cfg=5.0, denoise=1.0):
    settings = g.widgets(sampler)
    assert settings == {"seed": 0, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple",
                        "denoise": denoise}, settings


def assert_saves_video(g: Graph, fps: float):
    save = g.one("SaveVideo")
    video = g.source(save, "video")
    assert video["type"] == "CreateVideo" and g.widgets(video) == {"fps": fps}


def test_wan21_t2v_uses_the_official_settings():
    g = graph("standin_wan21_t2v.json")
    sampler = g.one("KSampler")
    assert standin_chain(g, sampler, "wan2.1_t2v_14B_fp8_scaled.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")[3] \
        == "UNETLoader"
    assert_official_sampler(g, sampler)
    assert g.widgets(g.source(sampler, "latent_image")) == {"width": 832, "height": 480, "length": 81, "batch_size": 1}
    encode = g.one("EncodeReferenceFace")
    assert g.source(encode, "image")["type"] == "LoadImage" and g.widgets(encode)["subject_mode"] is False
    assert g.source(encode, "vae")["widgets_values"] == ["wan_2.1_vae.safetensors"]
    assert_saves_video(g, 25.0)


def test_vace_pose_gives_vace_the_photo_and_the_pose_video():
    g = graph("standin_wan21_vace_pose.json")
    sampler = g.one("KSampler")
    standin_chain(g, sampler, "wan2.1_vace_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    assert_official_sampler(g, sampler)
    vace = g.one("WanVaceToVideo")
    assert g.widgets(vace) == {"width": 832, "height": 480, "length": 81, "batch_size": 1, "strength": 0.5}
    for input_name, slot in (("positive", 0), ("negative", 1), ("latent_image", 2)):
        assert g.source(sampler, input_name, slot=True) == (vace, slot)
    # the official VACE script's vace_reference_image is the same photo Stand-In gets
    assert g.source(vace, "reference_image") is g.source(g.one("EncodeReferenceFace"), "image")
    assert g.source(g.source(vace, "control_video"), "video")["type"] == "LoadVideo"
    trim = g.one("TrimVideoLatent")
    assert g.source(trim, "trim_amount", slot=True) == (vace, 3) and g.source(trim, "samples") is sampler
    assert g.source(g.one("VAEDecode"), "samples") is trim
    assert_saves_video(g, 25.0)


def test_style_lora_goes_on_the_base_model_before_standin():
    g = graph("standin_wan21_style_lora.json")
    sampler = g.one("KSampler")
    types = standin_chain(g, sampler, "wan2.1_t2v_14B_fp8_scaled.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    assert types[3:] == ["LoraLoaderModelOnly", "UNETLoader"], types  # as infer_with_lora.py: LoRA, then Stand-In
    assert g.widgets(g.one("LoraLoaderModelOnly"))["strength_model"] == 1.0  # the official lora_scale
    assert_official_sampler(g, sampler)
    assert_saves_video(g, 25.0)


def test_face_swap_pastes_then_resamples_at_the_official_denoise():
    g = graph("standin_wan21_face_swap.json")
    sampler = g.one("KSampler")
    standin_chain(g, sampler, "wan2.1_t2v_14B_fp8_scaled.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    assert_official_sampler(g, sampler, denoise=0.85)
    paste = g.one("StandInFaceSwapPaste")
    assert g.widgets(paste) == {"match_angle_and_size": True, "confidence": 0.5, "crop_scale": 1.5, "dilation": 10,
                                "feather": 21, "crop_and_trim": True, "detector": "auto",
                                "allow_download": False, "size": "480p", "first_frame": 0,
                                "max_frames": 81}, "official defaults, and the fit for a 24 GB card"
    encode = g.one("EncodeReferenceFace")
    assert g.source(paste, "reference_cutout", slot=True) == (encode, 3)  # cutout
    assert g.source(paste, "reference_alpha", slot=True) == (encode, 4)  # cutout_alpha
    assert g.source(paste, "images")["type"] == "GetVideoComponents"
    # the latent comes from the pasted frames, through the noise mask: bypassed (mode 4) = official default (off)
    noise_mask = g.one("SetLatentNoiseMask")
    assert g.source(sampler, "latent_image") is noise_mask and noise_mask["mode"] == wg.BYPASS
    assert g.source(noise_mask, "samples")["type"] == "VAEEncode"
    assert g.source(g.source(noise_mask, "samples"), "pixels") is paste
    threshold = g.source(noise_mask, "mask")
    assert threshold["type"] == "ThresholdMask" and threshold["mode"] == wg.BYPASS
    assert g.source(threshold, "mask", slot=True) == (paste, 1) and g.widgets(threshold) == {"value": 0.5}
    # the re-sampled frames go back into the ORIGINAL frames through the paste masks, with the source's fps and sound
    parts = g.source(paste, "images")
    composite = g.source(g.source(g.one("SaveVideo"), "video"), "images")
    assert composite["type"] == "StandInFaceSwapComposite"
    assert g.source(composite, "original_images") is parts
    assert g.source(g.source(composite, "generated_images"), "samples") is sampler
    assert g.source(composite, "masks", slot=True) == (paste, 1)
    assert g.source(composite, "swap", slot=True) == (paste, 2)
    assert g.source(composite, "audio", slot=True) == (parts, 1)
    assert g.source(composite, "fps", slot=True) == (parts, 2)
    video = g.source(g.one("SaveVideo"), "video")
    assert g.source(video, "fps", slot=True) == (parts, 2) and g.source(video, "audio", slot=True) == (composite, 1)


def test_two_people_face_swap_binds_each_face_to_its_paste_region():
    """Both people's cut-outs reach the one paste (person 1 = reference_cutout), its region_1 and region_2 reach
    Stand-In References with the same person's reference latent, and References is Apply's reference; the rest is the
    one-person swap: denoise 0.85, the composite into the original frames with the source's fps and sound."""
    g = graph("standin_wan21_face_swap_two_people.json")
    sampler = g.one("KSampler")
    chain = g.model_chain(sampler)
    assert [node["type"] for node in chain] == ["ModelSamplingSD3", "StandInKVCache", "ApplyStandInToWanModel",
                                                "UNETLoader"]
    assert g.widgets(chain[0]) == {"shift": 5.0} and g.widgets(chain[1]) == {"mode": "on"}
    apply = chain[2]
    assert g.widgets(apply) == {"strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}
    assert g.source(apply, "standin")["widgets_values"] == ["Stand-In_wan2.1_T2V_14B.ckpt"]
    assert_official_sampler(g, sampler, denoise=0.85)
    references = g.source(apply, "reference_latent")
    assert references["type"] == "StandInReferences" and g.widgets(references) == {
        "strength_1": 1.0, "strength_2": 1.0, "strength_3": 1.0, "strength_4": 1.0,
        "outside_regions": "all references"}, "the official strengths and the official outside"
    paste = g.one("StandInFaceSwapPaste")
    assert g.widgets(paste)["size"] == "480p" and g.widgets(paste)["first_frame"] == 0
    encodes = g.of_type("EncodeReferenceFace")
    assert len(encodes) == 2
    for index, suffix in ((1, ""), (2, "_2")):
        encode = g.source(references, f"reference_{index}")
        assert encode["type"] == "EncodeReferenceFace"
        assert g.source(paste, f"reference_cutout{suffix}", slot=True) == (encode, 3)  # cutout
        assert g.source(paste, f"reference_alpha{suffix}", slot=True) == (encode, 4)  # cutout_alpha
        assert g.source(references, f"region_{index}", slot=True) == (paste, 2 + index)  # region_1, region_2
        photo = g.source(encode, "image")
        assert photo["type"] == "LoadImage" and f"Person {index}" in photo["title"]
    assert g.source(references, "reference_1") is not g.source(references, "reference_2")
    for name in ("reference_cutout_3", "reference_cutout_4"):
        assert next(input_ for input_ in paste["inputs"] if input_["name"] == name)["link"] is None
    # the pasted frames are re-sampled and composited back as in the one-person swap
    noise_mask = g.one("SetLatentNoiseMask")
    assert g.source(sampler, "latent_image") is noise_mask and noise_mask["mode"] == wg.BYPASS
    assert g.source(g.source(noise_mask, "samples"), "pixels") is paste
    assert g.source(g.source(noise_mask, "mask"), "mask", slot=True) == (paste, 1)
    parts = g.source(paste, "images")
    assert parts["type"] == "GetVideoComponents"
    assert g.widgets(g.source(parts, "video")) == {"file": "standin_example_two_people.mp4"}
    composite = g.source(g.source(g.one("SaveVideo"), "video"), "images")
    assert composite["type"] == "StandInFaceSwapComposite" and g.source(composite, "original_images") is parts
    assert g.source(g.source(composite, "generated_images"), "samples") is sampler
    assert g.source(composite, "masks", slot=True) == (paste, 1)
    assert g.source(composite, "swap", slot=True) == (paste, 2)
    assert g.source(composite, "audio", slot=True) == (parts, 1) and g.source(composite, "fps", slot=True) == (parts, 2)
    video = g.source(g.one("SaveVideo"), "video")
    assert g.source(video, "fps", slot=True) == (parts, 2) and g.source(video, "audio", slot=True) == (composite, 1)
    note = g.one("MarkdownNote")["widgets_values"][0]
    assert "dev/multi" in note and "0.8 GB" in note and "denoise 0.85" in note


WAN22_SPLIT = 9  # the first step whose shifted sigma is below 0.875 at 20 steps, shift 5 (computed in the comfyui tier)


def test_wan22_a14b_gives_each_expert_its_own_standin_file_and_the_official_split():
    g = graph("standin_wan22_a14b.json")
    high, low = sorted(g.of_type("KSamplerAdvanced"), key=lambda node: g.widgets(node)["start_at_step"])
    standin_chain(g, high, "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "Stand-In_wan2.2_T2V_A14B_high.ckpt")
    standin_chain(g, low, "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", "Stand-In_wan2.2_T2V_A14B_low.ckpt")
    first, second = g.widgets(high), g.widgets(low)
    common = {"noise_seed": 0, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple"}
    assert first == {**common, "add_noise": "enable", "start_at_step": 0, "end_at_step": WAN22_SPLIT,
                     "return_with_leftover_noise": "enable"}, first
    assert second == {**common, "add_noise": "disable", "start_at_step": WAN22_SPLIT, "end_at_step": 10000,
                      "return_with_leftover_noise": "disable"}, second
    assert g.source(low, "latent_image") is high
    assert len(g.of_type("EncodeReferenceFace")) == 1, "one reference latent serves both experts"
    note = g.one("MarkdownNote")["widgets_values"][0]
    assert f"**step {WAN22_SPLIT}**" in note and "0.875" in note
    assert_saves_video(g, 16.0)


def test_subject_graph_encodes_the_reference_in_subject_mode():
    g = graph("standin_wan21_subject.json")
    sampler = g.one("KSampler")
    standin_chain(g, sampler, "wan2.1_t2v_14B_fp8_scaled.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    assert g.widgets(g.one("EncodeReferenceFace"))["subject_mode"] is True
    assert_official_sampler(g, sampler)


def test_fast_graph_samples_four_steps_at_cfg_one_with_the_distill_lora():
    g = graph("standin_wan21_fast_lightx2v.json")
    sampler = g.one("KSampler")
    types = standin_chain(g, sampler, "wan2.1_t2v_14B_fp8_scaled.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    assert types[3:] == ["LoraLoaderModelOnly", "UNETLoader"], types
    lora = g.one("LoraLoaderModelOnly")
    assert "lightx2v" in lora["widgets_values"][0] and g.widgets(lora)["strength_model"] == 1.0
    assert_official_sampler(g, sampler, steps=4, cfg=1.0)


def test_two_clips_continue_through_vace_with_one_standin_model():
    g = graph("standin_wan21_two_clips.json")
    first, second = sorted(g.of_type("KSampler"), key=lambda node: node["id"])
    for sampler in (first, second):
        standin_chain(g, sampler, "wan2.1_vace_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
        assert_official_sampler(g, sampler)
    assert g.source(first, "model") is g.source(second, "model"), "one Stand-In model for both clips"
    vace1, vace2 = g.source(first, "positive"), g.source(second, "positive")
    assert vace1["type"] == vace2["type"] == "WanVaceToVideo" and vace1 is not vace2
    length = g.widgets(vace1)["length"]
    assert g.widgets(vace1) == g.widgets(vace2) == {"width": 832, "height": 480, "length": 81, "batch_size": 1,
                                                    "strength": 1.0}
    assert all(input_["link"] is None for input_ in vace1["inputs"]
               if input_["name"] in ("control_video", "control_masks", "reference_image"))
    decode1 = next(node for node in g.of_type("VAEDecode") if g.source(node, "samples") is first)
    decode2 = next(node for node in g.of_type("VAEDecode") if g.source(node, "samples") is second)
    # control video: the last `overlap` frames of clip 1, then frames to generate; the mask says which is which
    control = g.source(vace2, "control_video")
    tail, fill = g.source(control, "image1"), g.source(control, "image2")
    assert tail["type"] == "ImageFromBatch" and g.source(tail, "image") is decode1
    overlap = g.widgets(tail)["length"]
    assert g.widgets(tail)["batch_index"] == length - overlap and 0 < overlap < length
    assert fill["type"] == "EmptyImage" and g.widgets(fill)["batch_size"] == length - overlap
    masks = g.source(vace2, "control_masks")
    assert masks["type"] == "ImageToMask" and g.widgets(masks) == {"channel": "red"}
    keep, make = g.source(g.source(masks, "image"), "image1"), g.source(g.source(masks, "image"), "image2")
    assert g.widgets(keep)["batch_size"] == overlap and g.widgets(keep)["color"] == 0  # keep: mask 0
    assert g.widgets(make)["batch_size"] == length - overlap and g.widgets(make)["color"] == 0xFFFFFF  # generate: 1
    for node in (fill, keep, make):
        assert (g.widgets(node)["width"], g.widgets(node)["height"]) == (832, 480)
    # the video: clip 1, then clip 2 after the overlap
    joined = g.source(g.one("CreateVideo"), "images")
    assert joined["type"] == "ImageBatch" and g.source(joined, "image1") is decode1
    rest = g.source(joined, "image2")
    assert g.source(rest, "image") is decode2
    assert g.widgets(rest) == {"batch_index": overlap, "length": length - overlap}
    assert_saves_video(g, 25.0)


# ---------------------------------------------------------------------------------------------------------------------
# CI tier: the gallery and the template browser's thumbnails are current with the JSONs

def test_the_workflows_regenerate_byte_for_byte(tmp_path):
    """scripts/build_workflows.py, run as a command into an empty folder, writes exactly the committed graphs."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "build_workflows.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode == 0, run.stderr
    written = {path.name: path.read_bytes() for path in tmp_path.glob("*.json")}
    assert set(written) == {path.name for path in WORKFLOWS}
    for path in WORKFLOWS:
        assert written[path.name] == path.read_bytes(), f"{path.name} differs from what build_workflows.py writes"


def test_gallery_pictures_are_current():
    manifest = json.loads((REPO / "docs" / "workflows" / "manifest.json").read_text())
    assert set(manifest["workflows"]) == {path.name for path in WORKFLOWS}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in WORKFLOWS:
        assert manifest["workflows"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest(), (
            f"{path.name} changed after its picture: run scripts/workflow_gallery.py")
        picture, thumbnail = REPO / "docs" / "workflows" / f"{path.stem}.png", path.with_suffix(".jpg")
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and thumbnail.read_bytes()[:3] == b"\xff\xd8\xff"
        assert f"docs/workflows/{path.stem}.png" in readme and f"workflows/{path.name}" in readme


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI tier: the recorded lists against the live server, and the schedules computed with ComfyUI's code

@pytest.fixture(scope="session")
def live_object_info(server):
    return server.get("/object_info", timeout=60)


@pytest.mark.comfyui
def test_recorded_node_lists_regenerate_byte_for_byte(live_object_info):
    """The live server's /object_info, recorded as scripts/record_core_nodes.py records it, is exactly the committed
    <version>.json and pack.json: a node, input, default or output that changed in ComfyUI or in the pack shows."""
    import os

    from comfyui_standin.devtools.comfy_boot import comfyui_version
    version = comfyui_version(Path(os.environ["COMFYUI_PATH"]))
    assert version in wg.VERSIONS, f"ComfyUI {version} has no recorded node list: scripts/record_core_nodes.py"
    for name, text in node_lists.render(live_object_info, version).items():
        committed = (node_lists.NODE_LISTS / name).read_text(encoding="utf-8")
        if text != committed:
            changed = [line for line in set(text.splitlines()) ^ set(committed.splitlines())]
            pytest.fail(f"{name} differs from the live server in {len(changed)} lines (run "
                        f"scripts/record_core_nodes.py), e.g. {sorted(changed)[:2]}")


def flow_sigmas(shift: float, steps: int):
    """ComfyUI's sigmas for a Wan model after ModelSamplingSD3(shift) with the simple scheduler."""
    import comfy.model_sampling
    import comfy.samplers

    class FlowSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass  # what ModelSamplingSD3 builds

    sampling = FlowSampling()
    sampling.set_parameters(shift=shift, multiplier=1000)
    return comfy.samplers.calculate_sigmas(sampling, "simple", steps)


@pytest.mark.comfyui
def test_wan22_split_is_where_the_official_pipeline_switches_experts(comfy):
    """The official pipeline moves to the low-noise expert at the first step whose timestep is below 0.875 x 1000."""
    g = graph("standin_wan22_a14b.json")
    high = min(g.of_type("KSamplerAdvanced"), key=lambda node: g.widgets(node)["start_at_step"])
    settings = g.widgets(high)
    shift = g.widgets(g.model_chain(high)[0])["shift"]
    sigmas = flow_sigmas(shift, settings["steps"])[:-1]
    below = [step for step, sigma in enumerate(sigmas.tolist()) if sigma < 0.875]
    assert below[0] == settings["end_at_step"] == WAN22_SPLIT
    assert float(sigmas[WAN22_SPLIT - 1]) >= 0.875 > float(sigmas[WAN22_SPLIT])


@pytest.mark.comfyui
def test_four_simple_steps_at_shift_five_are_the_distill_timesteps(comfy):
    """lightx2v's step distillation samples timesteps 1000, 750, 500, 250 shifted by 5: ComfyUI's simple scheduler at
    4 steps and the graph's shift gives exactly those."""
    import torch
    g = graph("standin_wan21_fast_lightx2v.json")
    sampler = g.one("KSampler")
    shift = g.widgets(g.model_chain(sampler)[0])["shift"]
    sigmas = flow_sigmas(shift, g.widgets(sampler)["steps"])
    t = torch.tensor([1.0, 0.75, 0.5, 0.25])
    assert torch.allclose(sigmas[:-1], shift * t / (1 + (shift - 1) * t), atol=1e-4) and float(sigmas[-1]) == 0.0
