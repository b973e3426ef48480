"""The pack inside a REAL ComfyUI server: node registration (/object_info) and graphs through the real executor.

The server (devtools/comfyui_server.py) runs ``main.py --cpu`` from COMFYUI_PATH with the repository linked in as
``custom_nodes/ComfyUI-StandIn`` and tiny test-made weights in its model folders. Graphs go in through the API route
``POST /prompt`` on 127.0.0.1; results come back from ``/history``.
"""
import pytest
import torch

from comfyui_standin.devtools.comfyui_server import (OUR_NODES, PACK_FOLDER, STANDIN_CKPT, STANDIN_SAFETENSORS,
                                                     SWAP_PHOTO, SWAP_VIDEO, VAE_FILE, WAN_FILE, WRONG_WIDTH_LORA,
                                                     Server, combo_options)
from comfyui_standin.tests.support.server_graphs import assert_success, execution_error, saved_latent, standin_graph
from comfyui_standin.tests.support.tolerance import assert_matches

pytestmark = pytest.mark.comfyui
LATENT_SHAPE = [1, 16, 2, 6, 8]  # EmptyHunyuanLatentVideo 64 x 48, 5 frames


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info", timeout=60)


def input_names(info: dict, section: str = "required") -> set:
    return set(info["input"].get(section, {}))


# ---------------------------------------------------------------------------------------------------------------------
# (a) registration

def test_pack_loaded_without_import_errors(server, object_info):
    missing = [name for name in OUR_NODES if name not in object_info]
    assert not missing, f"not registered: {missing}\n{server.log_tail()}"
    for name in OUR_NODES:
        info = object_info[name]
        assert info["category"] == "Stand-In", name
        assert info["description"], f"{name} has no description"
        assert PACK_FOLDER in info["python_module"], info["python_module"]


def test_node_inputs_and_outputs(object_info):
    apply = object_info["ApplyStandInToWanModel"]
    assert input_names(apply) == {"model", "standin", "reference_latent", "strength", "start_percent", "end_percent"}
    required = apply["input"]["required"]
    assert required["model"][0] == "MODEL" and required["reference_latent"][0] == "LATENT"
    assert required["standin"][0] == "STANDIN_WEIGHTS"
    assert required["strength"][0] == "FLOAT" and required["strength"][1]["default"] == 1.0
    assert apply["output"] == ["MODEL"]

    loader = object_info["LoadStandInLoRA"]
    weights = combo_options(loader["input"]["required"]["weights"])
    assert {STANDIN_SAFETENSORS, STANDIN_CKPT, WRONG_WIDTH_LORA} <= set(weights), weights
    assert weights.index(STANDIN_CKPT) < weights.index(WRONG_WIDTH_LORA), "models/standin files come first"
    assert loader["output"] == ["STANDIN_WEIGHTS"]

    cache = object_info["StandInKVCache"]
    assert combo_options(cache["input"]["required"]["mode"]) == ["on", "offload", "off"]
    assert cache["output"] == ["MODEL", "STRING"]

    encode = object_info["EncodeReferenceFace"]
    encode_inputs = input_names(encode) | input_names(encode, "optional")
    assert {"image", "vae"} <= encode_inputs, encode_inputs
    assert "IMAGE" in encode["output"] and "LATENT" in encode["output"] and "MASK" in encode["output"]
    assert "MASK" in object_info["StandInFaceMask"]["output"]

    for name in OUR_NODES:  # a tooltip on every input
        for section in ("required", "optional"):
            for input_name, spec in object_info[name]["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_example_workflows_are_served(server):
    templates = server.get("/workflow_templates")
    assert PACK_FOLDER in templates, templates
    names = set(templates[PACK_FOLDER])
    assert {"standin_wan21_t2v", "standin_wan21_vace_pose", "standin_wan22_a14b"} <= names, names
    workflow = server.get(f"/api/workflow_templates/{PACK_FOLDER}/standin_wan21_t2v.json")
    assert any(node["type"] == "ApplyStandInToWanModel" for node in workflow["nodes"])


# ---------------------------------------------------------------------------------------------------------------------
# (b) a graph through the real executor

@pytest.fixture(scope="module")
def standin_run(server):
    entry = server.run(standin_graph())
    assert_success(server, entry)
    return entry


def test_graph_runs_to_a_saved_latent(server, standin_run):
    latent = saved_latent(server, standin_run, "save")
    assert list(latent.shape) == LATENT_SHAPE
    assert latent.dtype == torch.float32
    assert torch.isfinite(latent).all()
    assert latent.abs().max() > 0
    base = saved_latent(server, standin_run, "save_base")
    assert list(base.shape) == LATENT_SHAPE and torch.isfinite(base).all()
    assert not torch.equal(latent, base), "Stand-In had no effect on the sampled latent"


def test_safetensors_and_official_ckpt_give_the_same_video(server, standin_run):
    """Same tensors in both files: the .safetensors run must reproduce the .ckpt run bit for bit."""
    entry = server.run(standin_graph(weights=STANDIN_SAFETENSORS, prefix="standin_st"))
    assert_success(server, entry)
    assert torch.equal(saved_latent(server, entry, "save"), saved_latent(server, standin_run, "save"))


def base_graph(prefix, through_neutral_node=False):
    """The plain model's half of ``standin_graph``. With ``through_neutral_node`` the sampler takes the loader's
    MODEL through a node that changes nothing for a model without Stand-In (a cache setting), so ComfyUI's execution
    cache can reuse the loader but must run the sampler again."""
    graph = standin_graph(prefix=prefix)
    for name in ("weights", "reference", "apply", "cache", "sample", "save"):
        del graph[name]
    if through_neutral_node:
        graph["neutral"] = {"class_type": "StandInKVCache", "inputs": {"model": ["unet", 0], "mode": "on"}}
        graph["sample_base"]["inputs"]["model"] = ["neutral", 0]
    return graph


def test_the_loaded_model_samples_as_before_after_standin_ran_on_it(server):
    """Load, sample; apply Stand-In to that same loaded MODEL (from ComfyUI's cache) and sample; then sample the
    loaded MODEL again, really re-run: the same latent as before Stand-In was applied."""
    before = server.run(base_graph("plain_before"))
    assert_success(server, before)
    assert_success(server, server.run(standin_graph(prefix="plain_standin")))
    after = server.run(base_graph("plain_after", through_neutral_node=True))
    assert_success(server, after)
    cached = [node for kind, message in after["status"]["messages"] if kind == "execution_cached"
              for node in message["nodes"]]
    assert "unet" in cached and "sample_base" not in cached, cached
    assert torch.equal(saved_latent(server, after, "save_base"), saved_latent(server, before, "save_base"))


# ---------------------------------------------------------------------------------------------------------------------
# (c) wrong inputs fail with the pack's own message

def test_wrong_width_weights_are_refused_with_a_clear_error(server):
    error = execution_error(server, standin_graph(weights=WRONG_WIDTH_LORA))
    assert error["node_type"] == "ApplyStandInToWanModel"
    message = error["exception_message"]
    assert "do not fit" in message and "width 128" in message and "width 256" in message, message
    assert "tiny_standin_dim128.safetensors" in message, "the error names the file"


def test_two_frame_reference_is_refused_with_a_clear_error(server):
    error = execution_error(server, standin_graph(reference_frames=2))
    assert error["node_type"] == "ApplyStandInToWanModel"
    message = error["exception_message"]
    assert "reference_latent must be ONE image" in message and "2 frames" in message, message


# ---------------------------------------------------------------------------------------------------------------------
# (d) the face-swap workflow's graph through the real executor

def face_swap_graph(prefix: str, background_consistency: bool) -> dict:
    """The nodes of workflows/standin_wan21_face_swap.json with test files: tiny Wan model and VAE, test
    conditioning instead of the text encoder, the REAL RetinaFace weights, a real reference photo and 5 real frames."""
    latent_source = ["hold", 0] if background_consistency else ["encode_video", 0]
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN_FILE, "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "photo": {"class_type": "LoadImage", "inputs": {"image": SWAP_PHOTO}},
        "encode_face": {"class_type": "EncodeReferenceFace", "inputs": {
            "image": ["photo", 0], "vae": ["vae", 0], "face_index": -1, "subject_mode": False,
            "remove_neck_cloth_hat": False, "detector": "retinaface_mobile0.25", "allow_download": False}},
        "weights": {"class_type": "LoadStandInLoRA", "inputs": {"weights": STANDIN_SAFETENSORS}},
        "apply": {"class_type": "ApplyStandInToWanModel", "inputs": {
            "model": ["unet", 0], "standin": ["weights", 0], "reference_latent": ["encode_face", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "cache": {"class_type": "StandInKVCache", "inputs": {"model": ["apply", 0], "mode": "on"}},
        "shift": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["cache", 0], "shift": 5.0}},
        "cond": {"class_type": "StandInTestConditioning", "inputs": {"seed": 1, "tokens": 7}},
        "uncond": {"class_type": "StandInTestConditioning", "inputs": {"seed": 2, "tokens": 7}},
        "video": {"class_type": "LoadVideo", "inputs": {"file": SWAP_VIDEO}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "paste": {"class_type": "StandInFaceSwapPaste", "inputs": {
            "images": ["parts", 0], "reference_cutout": ["encode_face", 3], "reference_alpha": ["encode_face", 4],
            "match_angle_and_size": True, "confidence": 0.5, "crop_scale": 1.5, "dilation": 10, "feather": 21,
            "crop_and_trim": True, "detector": "retinaface_mobile0.25", "allow_download": False}},
        "encode_video": {"class_type": "VAEEncode", "inputs": {"pixels": ["paste", 0], "vae": ["vae", 0]}},
        "hard": {"class_type": "ThresholdMask", "inputs": {"mask": ["paste", 1], "value": 0.5}},
        "hold": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["encode_video", 0], "mask": ["hard", 0]}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["shift", 0], "seed": 0, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["cond", 0], "negative": ["uncond", 0], "latent_image": latent_source, "denoise": 0.85}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0],
                                                        "filename_prefix": f"latents/{prefix}"}},
        "save_encoded": {"class_type": "SaveLatent", "inputs": {"samples": ["encode_video", 0],
                                                                "filename_prefix": f"latents/{prefix}_encoded"}},
        "save_mask": {"class_type": "StandInTestSaveMask", "inputs": {"mask": ["hard", 0], "prefix": prefix}},
    }


def saved_mask(server: Server, entry: dict) -> torch.Tensor:
    from safetensors.torch import load_file
    (item,) = entry["outputs"]["save_mask"]["masks"]
    return load_file(str(server.base / "output" / item["subfolder"] / item["filename"]))["mask"]


def test_face_swap_graph_holds_the_background_only_where_the_noise_mask_says(server):
    """The face-swap graph with background consistency on: the pasted frames are encoded, the noise mask and
    denoise 0.85 reach the sampler, and the sampled latent equals the encoded input wherever ComfyUI's latent-size
    mask is 0 (and differs where it is 1). Off (the official default), the background is re-sampled too."""
    import comfy.utils
    held = server.run(face_swap_graph("swap_held", background_consistency=True))
    assert_success(server, held)
    mask = saved_mask(server, held)
    assert tuple(mask.shape) == (5, 160, 256)  # 5 frames (4n+1), sides already multiples of 16
    assert 0.05 < float(mask.mean()) < 0.9, "the face was pasted on part of every frame"
    # the face in these frames spans columns ~86..169 of 256: the mask covers it and leaves the right side
    for frame_mask in mask:
        assert frame_mask[:, 96:160].mean() > 0.85 and frame_mask[:, -24:].mean() < 0.05
    sampled, encoded = saved_latent(server, held, "save"), saved_latent(server, held, "save_encoded")
    assert sampled.shape == encoded.shape == (1, 16, 2, 20, 32)
    latent_mask = comfy.utils.reshape_mask(mask, sampled.shape)  # what ComfyUI's sampler applies
    background, face = latent_mask == 0, latent_mask == 1
    assert background.sum() > 0 and face.sum() > 0
    assert_matches(sampled[background], encoded[background], "the held background")
    assert (sampled - encoded)[face].abs().max() > 1e-2
    free = server.run(face_swap_graph("swap_free", background_consistency=False))
    assert_success(server, free)
    resampled = saved_latent(server, free, "save")
    assert (resampled - encoded)[background].abs().max() > 1e-2
    assert torch.equal(saved_latent(server, free, "save_encoded"), encoded)
