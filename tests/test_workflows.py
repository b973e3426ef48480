"""The example workflows in workflows/ (ComfyUI UI format 0.4): structure, links, widgets, and the graphs they promise.

CI tier (no ComfyUI): every file parses; every link agrees with both node entries (ids, slots, types); every node
type is one of ours, a core node listed in CORE_NODES, or a frontend-only note; widget counts match our node schemas
(read from nodes/*.py) and CORE_NODES; required sockets are connected; the graphs carry the official settings.
ComfyUI tier: CORE_NODES and every workflow's node types, widget counts and combo values are checked against a live
server's /object_info (both ComfyUI versions).
"""
import ast
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
EXPECTED_WORKFLOWS = {"standin_wan21_t2v.json", "standin_wan21_vace_pose.json", "standin_wan22_a14b.json",
                      "standin_wan21_face_swap.json"}

# Core ComfyUI nodes the workflows use: widget values in a UI workflow (control_after_generate and upload buttons
# count), and the socket inputs that must be connected. Checked against a live server in the comfyui tier.
CORE_NODES = {
    "UNETLoader": (2, ()),
    "VAELoader": (1, ()),
    "CLIPLoader": (3, ()),
    "CLIPTextEncode": (1, ("clip",)),
    "LoadImage": (2, ()),
    "LoadVideo": (2, ()),
    "GetVideoComponents": (0, ("video",)),
    "PreviewImage": (0, ("images",)),
    "ModelSamplingSD3": (1, ("model",)),
    "EmptyHunyuanLatentVideo": (4, ()),
    "KSampler": (7, ("model", "positive", "negative", "latent_image")),
    "KSamplerAdvanced": (10, ("model", "positive", "negative", "latent_image")),
    "WanVaceToVideo": (5, ("positive", "negative", "vae")),
    "TrimVideoLatent": (1, ("samples",)),
    "VAEDecode": (0, ("samples", "vae")),
    "CreateVideo": (1, ("images",)),
    "SaveVideo": (3, ("video",)),
    "VAEEncode": (0, ("pixels", "vae")),
    "ThresholdMask": (1, ("mask",)),
    "SetLatentNoiseMask": (0, ("samples", "mask")),
}
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # drawn by the frontend, never sent to the server
SEED_CONTROLS = {"fixed", "increment", "decrement", "randomize"}
WIDGET_KINDS = {"Int", "Float", "Boolean", "Combo", "String"}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(params=WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def workflow(request) -> dict:
    return load(request.param)


# ---------------------------------------------------------------------------------------------------------------------
# Our node schemas, read from nodes/*.py without importing ComfyUI

def _is_io_input(call: ast.Call):
    """'Int', 'Combo', ... for ``io.<Kind>.Input(...)``; 'socket' for ``<CustomType>.Input(...)``; else None."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "Input"):
        return None
    owner = func.value
    if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) and owner.value.id == "io":
        return owner.attr if owner.attr in WIDGET_KINDS else "socket"
    return "socket"


def _describe_input(expr: ast.expr, helpers: dict) -> dict:
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in helpers:
        returns = [node.value for node in ast.walk(helpers[expr.func.id]) if isinstance(node, ast.Return)]
        assert len(returns) == 1, f"cannot read the input made by {expr.func.id}()"
        return _describe_input(returns[0], helpers)
    assert isinstance(expr, ast.Call) and _is_io_input(expr), f"cannot read schema input {ast.unparse(expr)}"
    keywords = {keyword.arg: keyword.value for keyword in expr.keywords}
    kind = _is_io_input(expr)
    options = None
    if kind == "Combo" and "options" in keywords:
        try:
            options = ast.literal_eval(keywords["options"])
        except ValueError:
            options = None  # computed at load time (file lists): checked against the live server only
    optional = "optional" in keywords and ast.literal_eval(keywords["optional"])
    control = "control_after_generate" in keywords and bool(ast.literal_eval(keywords["control_after_generate"]))
    return {"name": ast.literal_eval(expr.args[0]), "widget": kind != "socket", "options": options,
            "optional": optional, "control": control}


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
            schemas[node_id] = [_describe_input(item, helpers) for item in keywords["inputs"].elts]
    return schemas


SCHEMAS = our_schemas()


def node_widget_count(inputs: list) -> int:
    return sum(1 + item["control"] for item in inputs if item["widget"])


def test_schemas_are_readable():
    assert {"LoadStandInLoRA", "EncodeReferenceFace", "ApplyStandInToWanModel", "StandInKVCache",
            "StandInFaceMask"} <= set(SCHEMAS)
    apply = [item["name"] for item in SCHEMAS["ApplyStandInToWanModel"]]
    assert apply == ["model", "standin", "reference_latent", "strength", "start_percent", "end_percent"]
    assert node_widget_count(SCHEMAS["ApplyStandInToWanModel"]) == 3


# ---------------------------------------------------------------------------------------------------------------------
# CI tier: structure and links

def test_the_promised_workflows_exist():
    assert EXPECTED_WORKFLOWS <= {path.name for path in WORKFLOWS}


def test_top_level_format(workflow):
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        assert key in workflow, f"missing '{key}'"
    assert workflow["version"] == 0.4
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


def test_node_types_are_known(workflow):
    unknown = {node["type"] for node in workflow["nodes"]} - set(SCHEMAS) - set(CORE_NODES) - FRONTEND_ONLY
    assert not unknown, f"node types that are neither ours nor listed core nodes: {unknown}"


def test_widget_values_match_the_schemas(workflow):
    for node in workflow["nodes"]:
        values = node["widgets_values"]
        if node["type"] in SCHEMAS:
            inputs = SCHEMAS[node["type"]]
            assert len(values) == node_widget_count(inputs), f"{node['type']}: {values}"
            widgets = iter(values)
            for item in (item for item in inputs if item["widget"]):
                value = next(widgets)
                if item["options"] is not None:
                    assert value in item["options"], f"{node['type']}.{item['name']} = {value!r}"
                if item["control"]:
                    assert next(widgets) in SEED_CONTROLS
        elif node["type"] in CORE_NODES:
            assert len(values) == CORE_NODES[node["type"]][0], f"{node['type']}: {values}"


def test_required_sockets_are_connected(workflow):
    for node in workflow["nodes"]:
        if node["type"] in SCHEMAS:
            required = [item["name"] for item in SCHEMAS[node["type"]] if not item["widget"] and not item["optional"]]
        else:
            required = CORE_NODES.get(node["type"], (0, ()))[1]
        connected = {input_["name"] for input_ in node["inputs"] if input_["link"] is not None}
        missing = set(required) - connected
        assert not missing, f"{node['type']} (node {node['id']}) has unconnected inputs {missing}"


# ---------------------------------------------------------------------------------------------------------------------
# CI tier: the graphs do what their names promise

class Graph:
    def __init__(self, workflow: dict):
        self.nodes = {node["id"]: node for node in workflow["nodes"]}
        self.links = {link[0]: link for link in workflow["links"]}

    def of_type(self, node_type: str) -> list:
        return [node for node in self.nodes.values() if node["type"] == node_type]

    def source(self, node: dict, input_name: str) -> dict:
        """The node feeding ``input_name`` of ``node``."""
        link = next(input_["link"] for input_ in node["inputs"] if input_["name"] == input_name)
        assert link is not None, f"{node['type']}.{input_name} is not connected"
        return self.nodes[self.links[link][1]]

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
        """Node types along the MODEL input of a sampler, sampler side first."""
        chain, node = [], sampler
        while "model" in {input_["name"] for input_ in node["inputs"]}:
            node = self.source(node, "model")
            chain.append(node)
        return chain


def graph(name: str) -> Graph:
    return Graph(load(REPO / "workflows" / name))


def assert_standin_model(g: Graph, sampler: dict, unet_file: str, standin_file: str) -> float:
    """Checks the MODEL path of a sampler: UNETLoader -> Stand-In (+cache) -> ...; returns its ModelSamplingSD3 shift."""
    chain = g.model_chain(sampler)
    types = [node["type"] for node in chain]
    assert types[-1] == "UNETLoader" and chain[-1]["widgets_values"][0] == unet_file, types
    assert "ApplyStandInToWanModel" in types and "StandInKVCache" in types, types
    apply = chain[types.index("ApplyStandInToWanModel")]
    assert g.source(apply, "standin")["widgets_values"] == [standin_file]
    assert g.source(apply, "reference_latent")["type"] == "EncodeReferenceFace"
    assert apply["widgets_values"] == [1.0, 0.0, 1.0]
    shift = chain[types.index("ModelSamplingSD3")]["widgets_values"][0]
    return shift


def test_wan21_t2v_uses_the_official_settings():
    g = graph("standin_wan21_t2v.json")
    (sampler,) = g.of_type("KSampler")
    assert assert_standin_model(g, sampler, "wan2.1_t2v_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt") == 5.0
    seed, control, steps, cfg, _, _, denoise = sampler["widgets_values"]
    assert (seed, control, steps, cfg, denoise) == (0, "fixed", 20, 5.0, 1.0)
    assert g.source(sampler, "latent_image")["widgets_values"] == [832, 480, 81, 1]
    (encode,) = g.of_type("EncodeReferenceFace")
    assert g.source(encode, "image")["type"] == "LoadImage"
    assert g.source(encode, "vae")["widgets_values"] == ["wan_2.1_vae.safetensors"]
    (video,) = g.of_type("CreateVideo")
    assert video["widgets_values"] == [25.0]
    assert "KSampler" in g.upstream_types(g.of_type("SaveVideo")[0])


def test_vace_pose_keeps_comfyui_vace_conditioning():
    g = graph("standin_wan21_vace_pose.json")
    (sampler,) = g.of_type("KSampler")
    assert_standin_model(g, sampler, "wan2.1_vace_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt")
    (vace,) = g.of_type("WanVaceToVideo")
    assert vace["widgets_values"][:4] == [832, 480, 81, 1] and vace["widgets_values"][4] == 0.8
    for input_name in ("positive", "negative", "latent_image"):
        assert g.source(sampler, input_name)["type"] == "WanVaceToVideo"
    assert "LoadVideo" in g.upstream_types(vace)  # the control (pose) video
    (trim,) = g.of_type("TrimVideoLatent")
    assert g.source(trim, "trim_amount")["type"] == "WanVaceToVideo"
    assert g.source(trim, "samples") is sampler


def test_wan22_a14b_gives_each_expert_its_own_standin_file():
    g = graph("standin_wan22_a14b.json")
    high, low = sorted(g.of_type("KSamplerAdvanced"), key=lambda node: node["widgets_values"][7])
    assert assert_standin_model(g, high, "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
                                "Stand-In_wan2.2_T2V_A14B_high.ckpt") == 8.0
    assert assert_standin_model(g, low, "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
                                "Stand-In_wan2.2_T2V_A14B_low.ckpt") == 8.0
    add_noise, _, _, steps, cfg, _, _, start, split, leftover = high["widgets_values"]
    assert (add_noise, start, leftover) == ("enable", 0, "enable")
    assert low["widgets_values"][0] == "disable" and low["widgets_values"][9] == "disable"
    assert low["widgets_values"][7] == split and low["widgets_values"][8] >= steps and 0 < split < steps
    assert low["widgets_values"][3:5] == [steps, cfg], "both experts sample one schedule"
    assert g.source(low, "latent_image") is high
    assert len(g.of_type("EncodeReferenceFace")) == 1, "one reference latent serves both experts"
    (video,) = g.of_type("CreateVideo")
    assert video["widgets_values"] == [16.0]


def test_face_swap_pastes_then_resamples_at_the_official_denoise():
    g = graph("standin_wan21_face_swap.json")
    (sampler,) = g.of_type("KSampler")
    assert assert_standin_model(g, sampler, "wan2.1_t2v_14B_fp16.safetensors", "Stand-In_wan2.1_T2V_14B.ckpt") == 5.0
    seed, control, steps, cfg, sampler_name, scheduler, denoise = sampler["widgets_values"]
    assert (steps, cfg, sampler_name, scheduler, denoise) == (20, 5.0, "euler", "simple", 0.85)
    (paste,) = g.of_type("StandInFaceSwapPaste")
    assert paste["widgets_values"][:6] == [True, 0.5, 1.5, 10, 21, True], "official defaults"
    (encode,) = g.of_type("EncodeReferenceFace")
    assert g.source(paste, "reference_cutout") is encode and g.source(paste, "reference_alpha") is encode
    assert g.links[next(i["link"] for i in paste["inputs"] if i["name"] == "reference_cutout")][2] == 3  # cutout
    assert g.links[next(i["link"] for i in paste["inputs"] if i["name"] == "reference_alpha")][2] == 4  # alpha
    assert g.source(paste, "images")["type"] == "GetVideoComponents"
    # the latent comes from the pasted frames, through the noise mask: bypassed (mode 4) = official default (off)
    (noise_mask,) = g.of_type("SetLatentNoiseMask")
    assert g.source(sampler, "latent_image") is noise_mask and noise_mask["mode"] == 4
    assert g.source(noise_mask, "samples")["type"] == "VAEEncode"
    assert g.source(g.source(noise_mask, "samples"), "pixels") is paste
    threshold = g.source(noise_mask, "mask")
    assert threshold["type"] == "ThresholdMask" and threshold["mode"] == 4 and g.source(threshold, "mask") is paste
    assert "KSampler" in g.upstream_types(g.of_type("SaveVideo")[0])


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI tier: against a live server

@pytest.fixture(scope="session")
def live_object_info(comfy, tmp_path_factory):
    from comfyui_standin.tests.support.comfyui_server import serving
    with serving(tmp_path_factory) as server:
        yield server.get("/object_info", timeout=60)


def widget_inputs(info: dict) -> list:
    """(name, spec) of every widget input of a node, in the order the frontend lays out widgets_values."""
    order = info.get("input_order") or {section: list(info["input"].get(section, {})) for section in info["input"]}
    widgets = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            if isinstance(spec[0], list) or spec[0] in {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}:
                widgets.append((name, spec))
    return widgets


def extra_widgets(spec) -> int:
    """Values a widget input adds after its own: the seed control, an upload button."""
    options = spec[1] if len(spec) > 1 else {}
    return int(bool(options.get("control_after_generate"))) + int(
        any(options.get(key) for key in ("image_upload", "video_upload", "audio_upload", "file_upload")))


def frontend_widget_count(info: dict) -> int:
    return sum(1 + extra_widgets(spec) for _, spec in widget_inputs(info))


def required_sockets(info: dict) -> set:
    widgets = {name for name, _ in widget_inputs(info)}
    return set(info["input"].get("required", {})) - widgets


# File-list combos: the example names are what users download; a test server has other files.
FILE_COMBOS = {("UNETLoader", "unet_name"), ("VAELoader", "vae_name"), ("CLIPLoader", "clip_name"),
               ("LoadStandInLoRA", "weights"), ("LoadImage", "image"), ("LoadVideo", "file")}


@pytest.mark.comfyui
def test_core_node_table_matches_the_server(live_object_info):
    for node_type, (widgets, sockets) in CORE_NODES.items():
        assert node_type in live_object_info, f"{node_type} is not a core node of this ComfyUI"
        info = live_object_info[node_type]
        assert frontend_widget_count(info) == widgets, node_type
        assert required_sockets(info) == set(sockets), node_type


@pytest.mark.comfyui
def test_our_schemas_as_read_match_the_server(live_object_info):
    for node_type, inputs in SCHEMAS.items():
        info = live_object_info[node_type]
        assert [name for name, _ in widget_inputs(info)] == [item["name"] for item in inputs if item["widget"]]
        assert frontend_widget_count(info) == node_widget_count(inputs), node_type


@pytest.mark.comfyui
@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_workflow_against_the_live_server(live_object_info, path):
    from comfyui_standin.tests.support.comfyui_server import combo_options
    for node in load(path)["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in live_object_info, f"{path.name}: unknown node type {node['type']}"
        info = live_object_info[node["type"]]
        assert len(node["widgets_values"]) == frontend_widget_count(info), f"{path.name}: {node['type']}"
        values = iter(node["widgets_values"])
        for name, spec in widget_inputs(info):
            value = next(values)
            if (isinstance(spec[0], list) or spec[0] == "COMBO") and (node["type"], name) not in FILE_COMBOS:
                assert value in combo_options(spec), f"{path.name}: {node['type']}.{name} = {value!r}"
            elif spec[0] in ("INT", "FLOAT"):
                options = spec[1]
                assert options.get("min", value) <= value <= options.get("max", value), f"{node['type']}.{name}"
            for _ in range(extra_widgets(spec)):
                next(values)
        slots = {output["type"] for output in node["outputs"]}
        assert slots <= set(info["output"]), f"{path.name}: {node['type']} outputs {slots}"
        for input_ in node["inputs"]:
            declared = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
            assert input_["name"] in declared, f"{path.name}: {node['type']} has no input {input_['name']}"


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI tier, optional: the real frontend (headless Chromium) loads each workflow with its own zod validator

LOAD_IN_FRONTEND = """async (workflow) => {
    document.querySelectorAll('.p-toast-message').forEach(toast => toast.remove());
    await window.app.loadGraphData(workflow);
    await new Promise(resolve => setTimeout(resolve, 500));
    return {
        alerts: Array.from(document.querySelectorAll('.p-toast-message')).map(toast => toast.innerText),
        nodes: window.app.graph._nodes.map(node => ({id: node.id, type: node.type, errors: !!node.has_errors,
                                                      widgets: (node.widgets || []).map(widget => widget.value)})),
    };
}"""


@pytest.fixture(scope="session")
def frontend_page(comfy, tmp_path_factory):
    import shutil
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("the frontend checks need playwright: scripts/setup_comfyui.sh installs it", pytrace=False)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the frontend checks need Chromium: apt-get install chromium (scripts/setup_comfyui.sh)",
                    pytrace=False)
    from comfyui_standin.tests.support.comfyui_server import serving
    with serving(tmp_path_factory) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(server.url, wait_until="load", timeout=90_000)
        page.wait_for_function("() => !!(window.app && window.app.graph && window.LiteGraph && "
                               "window.LiteGraph.registered_node_types['ApplyStandInToWanModel'])", timeout=90_000)
        yield page
        browser.close()


@pytest.mark.comfyui
def test_frontend_validator_is_watching(frontend_page):
    """The check below is only as good as its detector: an invalid workflow must raise the frontend's alert."""
    broken = load(WORKFLOWS[0])
    broken["id"] = None
    alerts = frontend_page.evaluate(LOAD_IN_FRONTEND, broken)["alerts"]
    assert any("zod" in alert for alert in alerts), alerts


@pytest.mark.comfyui
@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_frontend_loads_the_workflow(frontend_page, path):
    workflow = load(path)
    loaded = frontend_page.evaluate(LOAD_IN_FRONTEND, workflow)
    assert not loaded["alerts"], loaded["alerts"]
    assert len(loaded["nodes"]) == len(workflow["nodes"])
    by_id = {node["id"]: node for node in loaded["nodes"]}
    for node in workflow["nodes"]:
        shown = by_id[node["id"]]
        assert shown["type"] == node["type"] and not shown["errors"], shown
        assert shown["widgets"] == node["widgets_values"], f"{node['type']}: the frontend shows {shown['widgets']}"
