"""What the nodes accept and refuse inside a real ComfyUI: photo files through ComfyUI's own Load Image, bad pixels,
latents and weights that do not fit, strength/NaN and '../' names sent straight to the real server's /prompt, and
the node's checked download.
"""
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from comfyui_standin.devtools.comfyui_server import STANDIN_CKPT
from comfyui_standin.devtools.tiny_models import standin_state_dict_for
from comfyui_standin.tests.support.downloads import MOBILENET, MOBILENET_BYTES, serve
from comfyui_standin.tests.support.faces import RecordingVAE, comfy_image, exif_rotated_jpeg, iou
from comfyui_standin.tests.support.server_graphs import execution_error, standin_graph

pytestmark = pytest.mark.comfyui
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def input_folder(comfy, tmp_path):
    """ComfyUI's input directory pointed at a temporary folder for one test."""
    import folder_paths
    before = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_input_directory(before)


def load_image(name: str) -> torch.Tensor:
    import nodes
    return nodes.LoadImage().load_image(name)[0]


@pytest.mark.parametrize("kind", ["gray", "rgba", "sixteen_bit_rgb", "exif_rotated"])
def test_photo_files_through_load_image_give_the_same_face(kind, comfy, nodes_faces, facexlib_folder,
                                                         real_detector_folder, input_folder):
    """ComfyUI's real Load Image reads the file; Encode Reference Face (real RetinaFace) on that IMAGE equals the core
    pipeline on it, and finds the face where it is on the plain photo (the JPEG-recompressed EXIF file: nearly)."""
    from comfyui_standin.standin_core.faces import models as face_models, prepare as faces
    facexlib_folder(real_detector_folder)
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "obama.jpg")), cv2.COLOR_BGR2RGB)
    name = f"{kind}.png"
    if kind == "gray":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(input_folder / name), gray)
        plain = np.dstack([gray] * 3)
    elif kind == "rgba":  # the real RGBA file: Load Image gives its colours as IMAGE (the alpha goes to its MASK)
        (input_folder / name).write_bytes((DATA / "32bit.png").read_bytes())
        plain = cv2.cvtColor(cv2.imread(str(DATA / "32bit.png")), cv2.COLOR_BGR2RGB)
    elif kind == "sixteen_bit_rgb":
        cv2.imwrite(str(input_folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
        plain = rgb
    else:
        name = "rotated.jpg"
        exif_rotated_jpeg(input_folder / name, rgb)
        plain = rgb
    image = load_image(name)
    assert image.shape == (1, *plain.shape)
    latent, prepared, *_ = nodes_faces.EncodeReferenceFace.execute(image, RecordingVAE(),
                                                                   detector="retinaface_mobile0.25").result
    detector_model, parser_model = nodes_faces._facexlib_models(["retinaface_mobile0.25", "bisenet"], False)
    detect = face_models.retinaface_detector(detector_model)
    parse = face_models.bisenet_parser(parser_model, face_models.REFERENCE_NORMALIZATION)
    from_file = faces.prepare_reference(image, detect, parse)
    assert torch.equal(prepared, torch.from_numpy(from_file.image).float().div(255)[None])
    plain_box = tuple(int(v) for v in faces.select_face(faces.detect_faces(plain, detect)))
    assert from_file.path == "face_crop"
    if kind == "exif_rotated":
        assert iou(from_file.face_box, plain_box) > 0.9
    else:
        assert from_file.face_box == plain_box


# What ComfyUI's Load Image makes of a 16-bit grayscale PNG, measured on the pinned trees: white up to v0.8.0 (PIL's
# mode "I;16" clipped to 255 before the /255), the real gray from v0.28.0 on.
SIXTEEN_BIT_GRAY_READ_WHITE = {"0.3.64": True, "0.8.0": True, "0.28.0": False}


def test_a_sixteen_bit_gray_png_through_load_image(comfy, nodes_faces, facexlib_folder, real_detector_folder,
                                                   input_folder):
    """Where Load Image reads the file as white, the node refuses it and names the likely cause; where it reads the
    real gray, the node prepares exactly what it prepares from the 8-bit gray photo itself."""
    from comfyui_standin.devtools.comfy_boot import comfyui_version
    facexlib_folder(real_detector_folder)
    gray = cv2.cvtColor(cv2.imread(str(DATA / "obama_small.jpg")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(input_folder / "gray16.png"), gray.astype(np.uint16) * 257)
    image = load_image("gray16.png")
    read_white = bool((image == 1).float().mean() > 0.99)
    version = comfyui_version(Path(os.environ["COMFYUI_PATH"]))
    if version in SIXTEEN_BIT_GRAY_READ_WHITE:
        assert read_white == SIXTEEN_BIT_GRAY_READ_WHITE[version], f"Load Image of ComfyUI {version} changed"
    if read_white:
        with pytest.raises(ValueError, match="blank .* 16-bit grayscale PNG, ComfyUI's Load Image turns those white"):
            nodes_faces.EncodeReferenceFace.execute(image, RecordingVAE(), detector="retinaface_mobile0.25")
        return
    torch.testing.assert_close(image, torch.from_numpy(np.dstack([gray] * 3)).float().div(255)[None], rtol=0,
                               atol=0.5 / 255)  # 16-bit v*257 / 65535 is v / 255
    prepared16 = nodes_faces.EncodeReferenceFace.execute(image, RecordingVAE(), detector="retinaface_mobile0.25")
    prepared8 = nodes_faces.EncodeReferenceFace.execute(comfy_image(np.dstack([gray] * 3)), RecordingVAE(),
                                                        detector="retinaface_mobile0.25")
    assert torch.equal(prepared16.result[1], prepared8.result[1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_pixels_are_refused_by_the_node(bad, comfy, nodes_faces, facexlib_folder, real_detector_folder):
    facexlib_folder(real_detector_folder)
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "obama_small.jpg")), cv2.COLOR_BGR2RGB)
    image = comfy_image(rgb)
    image[0, 100, 100, 1] = bad
    vae = RecordingVAE()
    for subject_mode in (False, True):
        with pytest.raises(ValueError, match="NaN or infinite values: check the node that produced it"):
            nodes_faces.EncodeReferenceFace.execute(image, vae, subject_mode=subject_mode,
                                                    detector="retinaface_mobile0.25")
    assert vae.seen == [], "nothing reached the VAE"


# ------------------------------------------------------------------------------------------------ latents, models

def test_reference_latents_that_do_not_fit_are_refused(env):
    apply = env.apply.ApplyStandInToWanModel.execute
    with pytest.raises(ValueError, match="reference_latent has 48 channels but this Wan model expects 16: encode the "
                                         "reference with this model's own VAE"):
        apply(env.base, env.weights, {"samples": torch.zeros(1, 48, 1, 6, 10)}, 1.0, 0.0, 1.0)  # Wan2.2 VAE latent
    with pytest.raises(ValueError, match="ONE image .* got batch 2 with 1 frames.*Latent From Batch"):
        apply(env.base, env.weights, {"samples": torch.zeros(2, 16, 1, 6, 10)}, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="ONE image .* got batch 1 with 3 frames"):
        apply(env.base, env.weights, {"samples": torch.zeros(1, 16, 3, 6, 10)}, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="ONE image .* got batch 2"):  # an image latent batch [B, C, H, W]
        apply(env.base, env.weights, {"samples": torch.zeros(2, 16, 6, 10)}, 1.0, 0.0, 1.0)
    assert apply(env.base, env.weights, {"samples": torch.zeros(1, 16, 6, 10)}, 1.0, 0.0, 1.0).args[0] is not env.base


def test_standin_weights_of_another_depth_are_refused(env):
    from comfyui_standin.standin_core import StandInWeightsError, standin_weights_from_state_dict
    for depth in (2, 4):
        weights = standin_weights_from_state_dict(standin_state_dict_for(256, depth), source=f"depth{depth}.ckpt")
        with pytest.raises(StandInWeightsError, match=f"depth{depth}.ckpt do not fit this WanModel: they have {depth} "
                                                      "blocks but this WanModel has 3"):
            env.apply.ApplyStandInToWanModel.execute(env.base, weights, env.ref, 1.0, 0.0, 1.0)


def test_strength_out_of_range_is_refused(server, env):
    """Through /prompt, ComfyUI's validation refuses what is outside the widget's 0..3; called directly (another
    node or a script), the node refuses it too."""
    import requests
    for strength, kind in ((-0.5, "value_smaller_than_min"), (30.0, "value_bigger_than_max")):
        graph = standin_only_graph(prefix="strength_range")
        graph["apply"]["inputs"]["strength"] = strength
        response = requests.post(server.url + "/prompt", json={"prompt": graph}, timeout=30)
        assert response.status_code == 400, response.text
        errors = response.json()["node_errors"]["apply"]["errors"]
        assert [error["type"] for error in errors] == [kind] and "strength" in errors[0]["details"], errors
    for strength in (-0.5, 30.0, float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="strength must be a number from 0 to 3"):
            env.apply.ApplyStandInToWanModel.execute(env.base, env.weights, env.ref, strength, 0.0, 1.0)


def test_nan_strength_and_start_after_end_through_the_server(server):
    """NaN passes ComfyUI's min/max validation (every comparison with NaN is false): the node itself refuses it."""
    import requests
    graph = standin_only_graph(prefix="nan_strength")
    graph["apply"]["inputs"]["strength"] = float("nan")
    body = json.dumps({"prompt": graph})
    assert '"strength": NaN' in body
    response = requests.post(server.url + "/prompt", data=body, timeout=30)
    assert response.status_code == 200, f"validation let NaN through in earlier versions: {response.text}"
    prompt_id = response.json()["prompt_id"]
    error = wait_for_error(server, prompt_id)
    assert error["node_type"] == "ApplyStandInToWanModel"
    message = error["exception_message"]
    assert "strength must be a number from 0 to 3" in message and "got nan" in message

    graph = standin_only_graph(prefix="start_after_end")
    graph["apply"]["inputs"].update(start_percent=0.8, end_percent=0.2)
    error = execution_error(server, graph)
    assert error["node_type"] == "ApplyStandInToWanModel"
    assert "start_percent (0.8) must be <= end_percent (0.2)" in error["exception_message"]


def standin_only_graph(**options) -> dict:
    """The server tests' Stand-In graph without its second branch (the plain model's sampler), so that a refused
    input leaves no valid output: ComfyUI then refuses the whole prompt (400) instead of running the other branch."""
    graph = standin_graph(**options)
    del graph["sample_base"], graph["save_base"]
    return graph


def wait_for_error(server, prompt_id: str) -> dict:
    import time
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("status_str") == "error":
            (message,) = [m for kind, m in entry["status"]["messages"] if kind == "execution_error"]
            return message
        assert not (entry and entry.get("status", {}).get("completed")), "the graph ran with strength NaN"
        time.sleep(0.25)
    pytest.fail("the prompt did not finish")


# ------------------------------------------------------------------------------------------------ files

def test_weight_name_with_dotdot_is_refused_by_validation(server, comfy, monkeypatch, tmp_path):
    """A valid Stand-In file sits just outside the model folders; names that climb to it (relative, absolute, via the
    loras/ prefix) never load it: the loader's own validation (which replaces ComfyUI's combo check, so a saved
    workflow may name the same weights under another name) refuses them in /prompt (400, nothing queued), on every
    ComfyUI version; and the node refuses them itself if called anyway (were the outside file read, the graph would
    run to the end: it is valid weights)."""
    import requests
    from safetensors.torch import save_file
    outside = server.base / "outside_standin.safetensors"
    save_file(standin_state_dict_for(256, 3), str(outside))
    for name in ("../../outside_standin.safetensors", str(outside), "loras/../../../outside_standin.safetensors",
                 f"../standin/{STANDIN_CKPT}"):
        graph = standin_only_graph(weights=name, prefix="dotdot")
        history_before = server.get("/history")
        response = requests.post(server.url + "/prompt", json={"prompt": graph}, timeout=30)
        assert response.status_code == 400, (name, response.text)
        (error,) = response.json()["node_errors"]["weights"]["errors"]
        assert error["type"] == "custom_validation_failed", error
        assert f"Stand-In weight file '{name}' not found" in error["details"], error
        assert server.get("/history") == history_before and server.get("/queue")["queue_pending"] == []

    import folder_paths
    from comfyui_standin.nodes import loaders
    models = tmp_path / "models"
    (models / "standin").mkdir(parents=True)
    (models / "loras").mkdir()
    save_file(standin_state_dict_for(256, 3), str(tmp_path / "outside.safetensors"))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "standin", ([str(models / "standin")], {".safetensors"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(models / "loras")], {".safetensors"}))
    for name in ("../../outside.safetensors", "loras/../../outside.safetensors", str(tmp_path / "outside.safetensors"),
                 "../outside.safetensors"):
        with pytest.raises(ValueError, match="not found. Put it in one of.*'..' and absolute paths are not accepted"):
            loaders.LoadStandInLoRA.execute(name)
    save_file(standin_state_dict_for(256, 3), str(models / "standin" / "inside.safetensors"))
    assert loaders.LoadStandInLoRA.execute("inside.safetensors").args[0].depth == 3  # a listed file loads


def test_the_loader_lists_stand_in_files_first_and_finds_them_under_their_other_names(comfy, monkeypatch, tmp_path):
    """models/standin is listed whole; from models/loras only the files whose tensor names are Stand-In's (a
    safetensors repack with the diffusion_model. prefix, an official zip .ckpt), not a style LoRA or a file that is
    not a checkpoint. A workflow naming the official file's other name, or the other folder, loads the file that is
    there; ComfyUI's prompt validation accepts it through the node's own check."""
    import folder_paths
    import torch
    from safetensors.torch import save_file
    from comfyui_standin.devtools.tiny_models import style_lora, tiny_wan_state_dict
    from comfyui_standin.nodes import loaders
    models = tmp_path / "models"
    (models / "standin").mkdir(parents=True)
    (models / "loras").mkdir()
    exts = {".safetensors", ".ckpt"}
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "standin", ([str(models / "standin")], exts))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(models / "loras")], exts))
    official = standin_state_dict_for(256, 3)
    torch.save({"state_dict": official}, str(models / "standin" / "Stand-In_wan2.1_T2V_14B.ckpt"))
    save_file({f"diffusion_model.{k}": v for k, v in standin_state_dict_for(256, 3, seed=7).items()},
              str(models / "loras" / "repack_fp32.safetensors"))
    torch.save(standin_state_dict_for(256, 3, seed=8), str(models / "loras" / "another_standin.ckpt"))
    save_file(style_lora(tiny_wan_state_dict()), str(models / "loras" / "a_style_lora.safetensors"))
    (models / "loras" / "not_a_checkpoint.ckpt").write_bytes(b"self_attn.q_loras.down.weight")  # no zip index
    # (ComfyUI's file-list cache is this test's own: conftest's fresh_file_lists)
    options = loaders.LoadStandInLoRA.define_schema().inputs[0].options
    assert options == ["Stand-In_wan2.1_T2V_14B.ckpt", "loras/another_standin.ckpt", "loras/repack_fp32.safetensors"]

    def depth_and_first(name):
        loaded = loaders.LoadStandInLoRA.execute(name).args[0]
        return loaded.depth, loaded.blocks[0].q.down.flatten()[:4]
    _, first = depth_and_first("Stand-In_wan2.1_T2V_14B_ver1.0.ckpt")  # the official file's first name
    assert torch.equal(first, official["blocks.0.self_attn.q_loras.down.weight"].flatten()[:4])
    assert loaders.LoadStandInLoRA.validate_inputs("Stand-In_wan2.1_T2V_14B_ver1.0.ckpt") is True
    assert loaders.LoadStandInLoRA.validate_inputs("repack_fp32.safetensors") is True  # saved without 'loras/'
    assert "not found" in loaders.LoadStandInLoRA.validate_inputs("loras/a_style_lora.safetensors")
    with pytest.raises(ValueError, match="'Stand-In_wan2.2_T2V_A14B_high.ckpt' not found"):
        loaders.LoadStandInLoRA.execute("Stand-In_wan2.2_T2V_A14B_high.ckpt")


def test_node_download_goes_through_the_checked_download(comfy, nodes_faces, facexlib_folder, weights_dir,
                                                         file_server, monkeypatch, tmp_path):
    """allow_download on, empty models/facexlib: the node fetches both files from a local server (their hashes stand
    in for the published ones), verifies and loads them; served wrong bytes stop the node and leave nothing."""
    from comfyui_standin.standin_core.faces import models as face_models
    bisenet = (weights_dir / "parsing_bisenet.pth").read_bytes()
    for name, data in (("retinaface_mobile0.25", MOBILENET_BYTES), ("bisenet", bisenet)):
        serve(monkeypatch, file_server, name, data)
        monkeypatch.setitem(face_models.KNOWN_SHA256, face_models.FACEXLIB_WEIGHTS[name][0],
                            hashlib.sha256(data).hexdigest())
    folder = facexlib_folder(tmp_path / "facexlib")
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "obama_small.jpg")), cv2.COLOR_BGR2RGB)
    vae = RecordingVAE()
    nodes_faces.EncodeReferenceFace.execute(comfy_image(rgb), vae, detector="retinaface_mobile0.25",
                                            allow_download=True)
    assert sorted(os.listdir(folder)) == sorted([MOBILENET, "parsing_bisenet.pth"]) and len(vae.seen) == 1
    assert (folder / MOBILENET).read_bytes() == MOBILENET_BYTES
    assert (folder / "parsing_bisenet.pth").read_bytes() == bisenet
    assert len(file_server.requests) == 2

    empty = facexlib_folder(tmp_path / "facexlib_wrong")
    monkeypatch.setattr(nodes_faces, "_PATCHERS", {})
    serve(monkeypatch, file_server, "retinaface_mobile0.25", bisenet)  # the wrong file under the detector's URL
    with pytest.raises(face_models.FaceWeightsDownloadError, match="not the published"):
        nodes_faces.EncodeReferenceFace.execute(comfy_image(rgb), vae, detector="retinaface_mobile0.25",
                                                allow_download=True)
    assert not empty.exists() or os.listdir(empty) == []
