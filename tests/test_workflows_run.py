"""Every shipped workflow through the real executor, and in the real frontend (comfyui tier).

Executor: each JSON becomes the API prompt the frontend would queue (devtools/workflow_graph.to_api: the
file's widget values by name, its links, bypassed nodes passed through) and runs on the session's server to a saved
video. Only this is replaced, to keep it small and offline:
- files: tiny REAL Wan models (T2V, VACE, a second T2V for the Wan2.2 low-noise expert), the tiny Wan VAE, Stand-In
  weights in the official .ckpt layout, tiny LoRAs, a real face photo, a real cat photo and 5 real video frames
  (for the two-people face swap: the first 5 frames of its example clip, both faces found at 128x80);
- the text encoder: ComfyUI cannot load a tiny umt5 (its loader builds the full 4096-wide, 24-layer encoder), so each
  CLIPTextEncode becomes the harness's seeded CONDITIONING node and CLIPLoader goes;
- sizes: 48x32 and 5 frames instead of 832x480 and 81 (the two-clip graph's overlap 16 -> 1 with it), and the
  harness's 5 real video frames at 128x80 (ComfyUI's Wan VAE is full width whatever the file holds: pixels cost);
- steps: 2 (the Wan2.2 expert split moves with them: steps 0-1 high-noise, 1-2 low-noise);
- the face detector: RetinaFace mobile0.25 (real weights) instead of resnet50 (no weights offline).
Cfg, sampler, scheduler, denoise, shift, strengths, the bypassed nodes and every link are the file's (the
CI tier and the live-server check validate the file's own values). The
saved video's frame count and size are checked against what the graph must produce.

Frontend: a server per frontend (the version the ComfyUI tree pins, and the newest release; .venv/frontends, put
there by scripts/setup_comfyui.sh) serves the pack; each workflow is loaded in headless Chromium as a drag-and-drop
does, with files under the names it uses (so a red node means something else than a file this machine lacks). No
toast (the frontend's zod schema check reports there), no missing-node dialog, no node the frontend does not know
or marks red, no console error, and the widgets show the file's values. A screenshot of each goes to a tmp folder.
"""
import copy
import json
import os
from pathlib import Path

import pytest

from comfyui_standin.devtools import frontend, workflow_graph as wg
from comfyui_standin.devtools.comfy_boot import comfyui_version
from comfyui_standin.devtools.comfyui_server import (PACK_FOLDER, STANDIN_CKPT, STANDIN_SAFETENSORS, SWAP_PHOTO,
                                                     SWAP_VIDEO, VAE_FILE, WAN_FILE, serving)

pytestmark = pytest.mark.comfyui
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # the real files the server harness needs, and the clip for the frontend
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
VACE_FILE = "tiny_wan_vace.safetensors"
LOW_NOISE_FILE = "tiny_wan_t2v_low.safetensors"
LORA_FILE = "tiny_wan_lora.safetensors"
SUBJECT_PHOTO = "standin_subject_cat.png"
FRAMES = {81: 5, 65: 4, 16: 1}  # frame counts in the graphs -> in the test (length, length - overlap, overlap)
SIZE = {832: 48, 480: 32}
SMALL_VIDEO = "standin_swap_input_128x80.mp4"  # the harness's 5 real frames at half size
TWO_FIGURES = "standin_pose_two_5.mp4"  # frames 8..12 of the example two-figure pose clip (832x480, arms down)
TWO_FACES = "standin_two_faces_128x80.mp4"  # the first 5 frames of the example two-people clip (both faces found)
STEPS = 2  # the graphs' 20 (4 for the fast one); the Wan2.2 split 9 of 20 becomes 1 of 2


@pytest.fixture(scope="module")
def server(server):
    """The session's server with this module's files added (a VACE and a low-noise model, a style LoRA, inputs)."""
    from PIL import Image
    from safetensors.torch import save_file
    from skimage import data
    from comfyui_standin.devtools.tiny_models import style_lora, tiny_wan_state_dict
    models = server.base / "models"
    save_file(tiny_wan_state_dict(vace=True), str(models / "diffusion_models" / VACE_FILE))
    low = tiny_wan_state_dict(seed=1)
    save_file(low, str(models / "diffusion_models" / LOW_NOISE_FILE))
    save_file(style_lora(low, seed=9), str(models / "loras" / LORA_FILE))
    Image.fromarray(data.chelsea()).save(server.base / "input" / SUBJECT_PHOTO)
    write_half_size_clip(server.base / "input" / SWAP_VIDEO, server.base / "input" / SMALL_VIDEO)
    write_half_size_clip(REPO / "example_inputs" / "standin_example_pose_two.mp4", server.base / "input" / TWO_FIGURES,
                         size=(832, 480), frames=slice(8, 13))
    write_half_size_clip(REPO / "example_inputs" / "standin_example_two_people.mp4", server.base / "input" / TWO_FACES,
                         frames=slice(0, 5))
    return server


def write_half_size_clip(source: Path, target: Path, size=(128, 80), frames=slice(None)) -> None:
    """``source``'s frames (those ``frames`` selects) at ``size``."""
    import av
    import cv2
    from comfyui_standin.standin_core.faces.video import read_video
    frames = read_video(source)[frames]
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for frame in frames:
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(small, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def tiny_prompt(workflow: dict, specs: dict) -> dict:
    """The API prompt of ``workflow`` with the test's files, conditioning and sizes (see the module docstring)."""
    prompt = wg.to_api(workflow, specs)
    for node_id, node in list(prompt.items()):
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "UNETLoader":
            name = inputs["unet_name"]
            inputs["unet_name"] = VACE_FILE if "vace" in name else LOW_NOISE_FILE if "low_noise" in name else WAN_FILE
        elif kind == "VAELoader":
            inputs["vae_name"] = VAE_FILE
        elif kind == "LoadStandInLoRA":
            inputs["weights"] = STANDIN_CKPT if inputs["weights"].endswith(".ckpt") else STANDIN_SAFETENSORS
        elif kind == "LoraLoaderModelOnly":
            inputs["lora_name"] = LORA_FILE
        elif kind == "CLIPLoader":
            del prompt[node_id]
        elif kind == "CLIPTextEncode":
            prompt[node_id] = {"class_type": "StandInTestConditioning", "inputs": {"seed": int(node_id), "tokens": 7}}
        elif kind == "LoadImage":
            inputs["image"] = SUBJECT_PHOTO if "subject" in inputs["image"] else SWAP_PHOTO
        elif kind == "LoadVideo":
            inputs["file"] = (TWO_FIGURES if "pose_two" in inputs["file"] else
                              TWO_FACES if "two_people" in inputs["file"] else SMALL_VIDEO)
        if "detector" in inputs:
            inputs["detector"] = "retinaface_mobile0.25"
        for key in ("width", "height"):
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = SIZE[inputs[key]]
        for key in ("length", "batch_index", "batch_size"):
            if kind in ("EmptyHunyuanLatentVideo", "WanVaceToVideo", "ImageFromBatch", "EmptyImage") and \
                    inputs.get(key) in FRAMES:
                inputs[key] = FRAMES[inputs[key]]
        if kind in ("KSampler", "KSamplerAdvanced"):  # fewer steps, the same schedule split in proportion
            steps = inputs["steps"]
            inputs["steps"] = STEPS
            for key in ("start_at_step", "end_at_step"):
                if key in inputs and 0 < inputs[key] < steps:
                    inputs[key] = max(1, round(inputs[key] * STEPS / steps))
        if kind == "SaveVideo":
            inputs["filename_prefix"] = "workflows/" + inputs["filename_prefix"].replace("/", "_")
    return prompt


def saved_video(server, entry: dict):
    from comfyui_standin.standin_core.faces.video import read_video
    saved = [item for output in entry["outputs"].values() for item in output.get("images", [])
             if item["filename"].endswith(".mp4")]
    assert len(saved) == 1, entry["outputs"]
    path = server.base / "output" / saved[0]["subfolder"] / saved[0]["filename"]
    assert path.is_file(), path
    return read_video(path)


# frames and size of the saved video: the graph's 81 frames are 5 here (VACE's reference frame trimmed away);
# the face swaps keep the input's 5 frames at 128x80; the two clips are 5 + (5 - 1 overlap) frames
EXPECTED = {"standin_wan21_face_swap.json": (5, 80, 128), "standin_wan21_face_swap_two_people.json": (5, 80, 128),
            "standin_wan21_two_clips.json": (9, 32, 48)}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_workflow_runs_through_the_executor(server, path):
    specs = server.get("/object_info", timeout=60)
    entry = server.run(tiny_prompt(json.loads(path.read_text(encoding="utf-8")), specs))
    status = entry["status"]
    errors = [{key: data.get(key) for key in ("node_type", "exception_type", "exception_message", "traceback")}
              for kind, data in status["messages"] if kind == "execution_error"]
    assert status["status_str"] == "success" and status["completed"], (
        f"{json.dumps(errors, indent=1)[-6000:]}\n{server.log_tail()}")
    frames = saved_video(server, entry)
    assert frames.shape[:3] == EXPECTED.get(path.name, (5, 32, 48)), frames.shape
    assert frames.std() > 1.0, "a blank video"


def test_a_wrong_link_or_widget_in_a_workflow_fails_the_run(server):
    """The run check is only as good as its detector: a link to the wrong output and a widget value outside the
    input's choices, each made in the UI JSON, stop the run."""
    specs = server.get("/object_info", timeout=60)
    workflow = json.loads((REPO / "workflows" / "standin_wan21_t2v.json").read_text(encoding="utf-8"))
    wrong_link = copy.deepcopy(workflow)
    link = next(link for link in wrong_link["links"] if link[5] == "LATENT" and
                next(node for node in wrong_link["nodes"] if node["id"] == link[3])["type"] == "ApplyStandInToWanModel")
    encoder = next(node for node in wrong_link["nodes"] if node["type"] == "EncodeReferenceFace")
    assert link[1] == encoder["id"]
    link[2] = 2  # the encoder's MASK output instead of its latent
    wrong_widget = copy.deepcopy(workflow)
    sampler = next(node for node in wrong_widget["nodes"] if node["type"] == "KSampler")
    sampler["widgets_values"][4] = "euler_flow"  # no such sampler
    import requests
    for broken, node in ((wrong_link, next(n for n in workflow["nodes"] if n["type"] == "ApplyStandInToWanModel")),
                         (wrong_widget, sampler)):
        response = requests.post(server.url + "/prompt", json={"prompt": tiny_prompt(broken, specs)}, timeout=30)
        # refused (400), or on v0.3.64 queued without the outputs that depend on the broken node (node_errors)
        assert response.status_code in (200, 400), response.text
        errors = response.json().get("node_errors", {})
        assert str(node["id"]) in errors, response.text
        if response.status_code == 200:
            server.wait(response.json()["prompt_id"])  # (what still runs: the reference preview)


def test_template_browser_lists_each_workflow_and_serves_its_thumbnail(server):
    """ComfyUI lists a pack's workflows/ folder at /workflow_templates (names without .json) and serves the folder at
    /api/workflow_templates/<pack>/; the frontend's template browser shows <name>.jpg from there as the thumbnail."""
    import requests
    assert sorted(server.get("/workflow_templates")[PACK_FOLDER]) == sorted(path.stem for path in WORKFLOWS)
    for path in WORKFLOWS:
        for suffix in (".json", ".jpg"):
            url = f"{server.url}/api/workflow_templates/{PACK_FOLDER}/{path.stem}{suffix}"
            response = requests.get(url, timeout=30)
            assert response.status_code == 200 and response.content == path.with_suffix(suffix).read_bytes(), path


# ---------------------------------------------------------------------------------------------------------------------
# the real frontend, pinned and newest

@pytest.fixture(scope="module", params=["pinned", "newest"])
def frontend_page(request, comfy, tmp_path_factory):
    import os
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("the frontend checks need playwright: scripts/setup_comfyui.sh installs it", pytrace=False)
    root = Path(os.environ["COMFYUI_PATH"])
    folder = frontend.frontend_folder(request.param, root)
    chromium = frontend.chromium_path()
    with serving(tmp_path_factory, DATA, "--front-end-root", str(frontend.static_root(folder))) as server, \
            sync_api.sync_playwright() as playwright:
        inputs = frontend.provide_model_files(server.base, [json.loads(path.read_text(encoding="utf-8"))
                                                            for path in WORKFLOWS])
        assert inputs and all(path.is_file() for path in inputs), [p.name for p in inputs if not p.is_file()]
        frontend.quiet_user_settings(server.base)
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = frontend.open_page(browser, server.url, viewport=(1920, 1080))
        served = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || null")
        version = frontend.installed_version(folder)
        assert served in (None, version), (served, version)
        print(f"\nfrontend {request.param}: comfyui-frontend-package {version}")
        page.frontend_version = version
        yield page
        browser.close()


def test_frontend_validator_and_missing_node_check_are_watching(frontend_page):
    """The checks below are only as good as their detectors: a workflow the schema refuses must raise the
    frontend's alert, and an unknown node type its missing-node report and an unknown node."""
    workflow = json.loads(WORKFLOWS[0].read_text(encoding="utf-8"))
    broken = copy.deepcopy(workflow)
    broken["id"] = None  # the schema wants a uuid string
    loaded = frontend.load_workflow(frontend_page, broken)
    assert any("zod" in alert.lower() or "validat" in alert.lower() for alert in loaded["alerts"]), loaded["alerts"]
    unknown = copy.deepcopy(workflow)
    unknown["nodes"][0]["type"] = "NoSuchNodeAnywhere"
    loaded = frontend.load_workflow(frontend_page, unknown)
    assert not next(node for node in loaded["nodes"] if node["type"] == "NoSuchNodeAnywhere")["known"]
    assert frontend.missing_node_dialogs(loaded), loaded["dialogs"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_frontend_loads_the_workflow(frontend_page, path, tmp_path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    loaded = frontend.load_workflow(frontend_page, workflow)
    where = f"{path.name} in comfyui-frontend-package {frontend_page.frontend_version}"
    # the recorded specs of this tree (equal to the live server's: test_workflows.py)
    specs = wg.recorded(comfyui_version(Path(os.environ["COMFYUI_PATH"])))
    assert not loaded["alerts"], f"{where}: {loaded['alerts']}"
    assert not frontend.missing_node_dialogs(loaded), f"{where}: {loaded['dialogs']}"
    assert not loaded["console_errors"], f"{where}: {loaded['console_errors']}"
    assert len(loaded["nodes"]) == len(workflow["nodes"])
    by_id = {str(node["id"]): node for node in loaded["nodes"]}
    for node in workflow["nodes"]:
        shown = by_id[str(node["id"])]
        assert shown["type"] == node["type"] and shown["known"] and not shown["errors"], f"{where}: {shown}"
        # a widget the node gained after the file was written (v0.28.0: CreateVideo's bit_depth) shows its default
        gained = [] if node["type"] in wg.FRONTEND_ONLY else [
            wg.widget_default(item) for _, item in wg.listed_widgets(node, specs[node["type"]])[1]]
        assert shown["widgets"] == node["widgets_values"] + gained, f"{where}, {node['type']}: shows {shown['widgets']}"
    frontend.screenshot(frontend_page, tmp_path / f"{path.stem}.png")
    assert (tmp_path / f"{path.stem}.png").stat().st_size > 20_000
