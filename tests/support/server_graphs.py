"""Graphs sent to the real ComfyUI server (devtools/comfyui_server.py), what comes back, and their in-process oracle.

  * :func:`standin_graph`: loader -> Stand-In -> K/V cache -> KSampler -> SaveLatent, beside the plain model's
    sampler; :func:`server_graph`: the same chain with a style LoRA, a photo reference or a memory probe as options;
  * :func:`saved_latent`, :func:`assert_success`, :func:`executed_nodes`, :func:`execution_error`: reading a
    prompt's history entry;
  * :func:`server_files` and :func:`server_oracle`: the server's files, and ``server_graph`` run alone in this
    process on fresh state.
"""
import json

import torch

from comfyui_standin.devtools.comfyui_server import (STANDIN_CKPT, STANDIN_OTHER, STYLE_LORA, VAE_FILE, WAN_FILE,
                                                     Server)
from comfyui_standin.tests.support.sampling import conds, load_model, standin, with_style_lora


def standin_graph(weights: str = STANDIN_CKPT, reference_frames: int = 1, prefix: str = "standin") -> dict:
    """UNETLoader -> LoadStandInLoRA -> ApplyStandInToWanModel -> StandInKVCache -> KSampler -> SaveLatent, plus the
    same sampler on the plain model (the original MODEL output must be unaffected)."""
    def sampler(model_link, prefix_name, sampler_id, save_id):
        return {
            sampler_id: {"class_type": "KSampler", "inputs": {
                "model": model_link, "seed": 0, "steps": 2, "cfg": 3.0, "sampler_name": "euler",
                "scheduler": "simple", "positive": ["cond", 0], "negative": ["uncond", 0],
                "latent_image": ["video", 0], "denoise": 1.0}},
            save_id: {"class_type": "SaveLatent", "inputs": {"samples": [sampler_id, 0],
                                                             "filename_prefix": f"latents/{prefix_name}"}},
        }

    graph = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN_FILE, "weight_dtype": "default"}},
        "weights": {"class_type": "LoadStandInLoRA", "inputs": {"weights": weights}},
        "reference": {"class_type": "StandInTestLatent",
                      "inputs": {"seed": 42, "frames": reference_frames, "height": 6, "width": 6}},
        "apply": {"class_type": "ApplyStandInToWanModel", "inputs": {
            "model": ["unet", 0], "standin": ["weights", 0], "reference_latent": ["reference", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "cache": {"class_type": "StandInKVCache", "inputs": {"model": ["apply", 0], "mode": "on"}},
        "cond": {"class_type": "StandInTestConditioning", "inputs": {"seed": 1, "tokens": 7}},
        "uncond": {"class_type": "StandInTestConditioning", "inputs": {"seed": 2, "tokens": 7}},
        "video": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": 64, "height": 48, "length": 5, "batch_size": 1}},
    }
    graph.update(sampler(["cache", 0], prefix, "sample", "save"))
    graph.update(sampler(["unet", 0], f"{prefix}_base", "sample_base", "save_base"))
    return graph


def server_graph(cond_seed=1, reference_seed=42, photo=None, strength=1.0, weights=STANDIN_CKPT, lora_strength=0.0,
                 steps=2, mode="on", memory=None, prefix="reliability"):
    """Loader -> Stand-In (file, reference, strength) -> style LoRA -> K/V cache (mode) -> KSampler -> SaveLatent.

    The reference is a seeded latent (StandInTestLatent), or with ``photo`` a real photo from the server's input folder,
    scaled to 48 x 48 (centre crop) and VAE-encoded with the tiny Wan VAE, its latent saved too ("save_reference").
    (EncodeReferenceFace's 512 x 512 face through a full-width Wan VAE takes a minute on a CPU: the face preparation is
    tested on its own.) With ``memory`` (a label), StandInTestMemory measures the server after the sampler ran."""
    graph = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN_FILE, "weight_dtype": "default"}},
        "weights": {"class_type": "LoadStandInLoRA", "inputs": {"weights": weights}},
        "reference": {"class_type": "StandInTestLatent",
                      "inputs": {"seed": reference_seed, "frames": 1, "height": 6, "width": 6}},
        "apply": {"class_type": "ApplyStandInToWanModel", "inputs": {
            "model": ["unet", 0], "standin": ["weights", 0], "reference_latent": ["reference", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
        "lora": {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["apply", 0], "lora_name": STYLE_LORA, "strength_model": lora_strength}},
        "cache": {"class_type": "StandInKVCache", "inputs": {"model": ["lora", 0], "mode": mode}},
        "cond": {"class_type": "StandInTestConditioning", "inputs": {"seed": cond_seed, "tokens": 7}},
        "uncond": {"class_type": "StandInTestConditioning", "inputs": {"seed": 2, "tokens": 7}},
        "video": {"class_type": "EmptyHunyuanLatentVideo",
                  "inputs": {"width": 64, "height": 48, "length": 5, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["cache", 0], "seed": 0, "steps": steps, "cfg": 3.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["cond", 0], "negative": ["uncond", 0],
            "latent_image": ["video", 0], "denoise": 1.0}},
        "save": {"class_type": "SaveLatent",
                 "inputs": {"samples": ["sample", 0], "filename_prefix": f"latents/{prefix}"}},
    }
    if photo is not None:
        graph["photo"] = {"class_type": "LoadImage", "inputs": {"image": photo}}
        graph["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}}
        graph["scaled"] = {"class_type": "ImageScale", "inputs": {
            "image": ["photo", 0], "upscale_method": "area", "width": 48, "height": 48, "crop": "center"}}
        graph["reference"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["scaled", 0], "vae": ["vae", 0]}}
        graph["save_reference"] = {"class_type": "SaveLatent", "inputs": {
            "samples": ["reference", 0], "filename_prefix": f"latents/{prefix}_reference"}}
    if memory is not None:
        graph["memory"] = {"class_type": "StandInTestMemory", "inputs": {"samples": ["sample", 0], "label": memory}}
    return graph


def server_files(server: Server) -> dict:
    """The tensors the server loads, read back from its model folders (the oracle uses exactly these)."""
    from safetensors.torch import load_file
    from comfyui_standin.standin_core.weights import read_state_dict
    models = server.base / "models"
    return {"model": load_file(str(models / "diffusion_models" / WAN_FILE)),
            STANDIN_CKPT: read_state_dict(str(models / "standin" / STANDIN_CKPT)),
            STANDIN_OTHER: load_file(str(models / "standin" / STANDIN_OTHER)),
            "lora": load_file(str(models / "loras" / STYLE_LORA))}


def server_oracle(files: dict, cond_seed=1, reference_seed=42, strength=1.0, weights=STANDIN_CKPT, lora_strength=0.0,
                  steps=2, reference=None, **_):
    """``server_graph`` run alone in this process on fresh state: the same files, the same seeded inputs (or the
    ``reference`` latent the server encoded from a photo), KSampler's own noise (nodes.common_ksampler), a fresh
    model and cache off."""
    import nodes
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    if reference is None:
        reference = torch.randn(1, 16, 1, 6, 6, generator=torch.Generator().manual_seed(reference_seed))
    model = standin(load_model(files["model"]), standin_weights_from_state_dict(dict(files[weights]), source="fresh"),
                    reference, strength, mode="off")
    model = with_style_lora(model, files["lora"], lora_strength)
    positive, negative = [[conds(cond_seed)[0], {}]], [[conds(2)[0], {}]]
    latent = {"samples": torch.zeros(1, 16, 2, 6, 8)}  # EmptyHunyuanLatentVideo 64 x 48, 5 frames
    with torch.inference_mode():
        return nodes.common_ksampler(model, 0, steps, 3.0, "euler", "simple", positive, negative, latent)[0]["samples"]


def saved_latent(server: Server, entry: dict, node: str = "save") -> torch.Tensor:
    """The latent that the SaveLatent ``node`` of a finished prompt wrote."""
    from safetensors.torch import load_file
    files = entry["outputs"][node]["latents"]
    assert len(files) == 1, files
    item = files[0]
    path = server.base / "output" / item["subfolder"] / item["filename"]
    assert path.is_file(), f"{path} was not written"
    return load_file(str(path))["latent_tensor"]


def assert_success(server: Server, entry: dict) -> None:
    status = entry["status"]
    assert status["status_str"] == "success" and status["completed"], (
        f"{json.dumps(status['messages'], indent=1)[-4000:]}\n{server.log_tail()}")


def executed_nodes(server: Server, entry: dict, graph: dict) -> set:
    """The nodes of ``graph`` that the successful prompt ``entry`` ran (not taken from ComfyUI's execution cache)."""
    assert_success(server, entry)
    status = entry["status"]
    cached = {node for kind, message in status["messages"] if kind == "execution_cached" for node in message["nodes"]}
    return set(graph) - cached


def execution_error(server: Server, graph: dict) -> dict:
    """Run ``graph``, which must fail in one node: that node's execution_error message."""
    entry = server.run(graph)
    status = entry["status"]
    assert status["status_str"] == "error", f"expected an execution error, got {status}"
    errors = [message for kind, message in status["messages"] if kind == "execution_error"]
    assert len(errors) == 1, status["messages"]
    return errors[0]
