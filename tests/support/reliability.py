"""Helpers for the reliability tests (issue 10: stale state, cancels, load, batching), ComfyUI tier.

The oracles they compare against:
  * :func:`fresh_standin_run`: the same prompt run alone, on a model freshly loaded from the same state dict, with fresh
    Stand-In weights and the K/V cache "off" (nothing from an earlier run can reach it);
  * :func:`joint_model`: the paper's joint sequence (tests/support/joint_sequence.py) in place of the diffusion model,
    with log(strength) on the reference keys.
And the inspection of what a run leaves behind (:class:`RunLeftovers`): the RunState of every run, weak references
to the reference K/V, the [video; reference] buffers and the LoRA's device copy, so a test can check after a failed
run that they are gone. Last, the graph the server-side reliability tests send (:func:`server_graph`), the files the
server loads (:func:`server_files`) and that graph's in-process oracle (:func:`server_oracle`).
"""
import gc
import math
import weakref

import torch

from comfyui_standin.devtools.comfyui_server import (STANDIN_CKPT, STANDIN_OTHER, STYLE_LORA, VAE_FILE, WAN_FILE,
                                                     Server)
from comfyui_standin.tests.support.joint_sequence import joint_forward


def load_model(state_dict: dict):
    """A fresh ComfyUI MODEL (ModelPatcher) from a copy of ``state_dict`` (the loader may consume the dict)."""
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict({k: v.clone() for k, v in state_dict.items()})


def standin(model, weights, reference: torch.Tensor, strength=1.0, start=0.0, end=1.0, mode="on"):
    """``model`` through the pack's nodes: ApplyStandInToWanModel, then StandInKVCache(mode)."""
    from comfyui_standin.nodes import apply, cache
    patched = apply.ApplyStandInToWanModel.execute(model, weights, {"samples": reference}, strength, start, end).args[0]
    return cache.StandInKVCache.execute(patched, mode).args[0]


def with_style_lora(model, lora: dict, strength=1.0):
    import comfy.sd
    return comfy.sd.load_lora_for_models(model, None, lora, strength, 0)[0]


def conds(*seeds, tokens=7):
    """Seeded text-encoder outputs, exactly as the server's StandInTestConditioning makes them."""
    return [torch.randn(1, tokens, 4096, generator=torch.Generator().manual_seed(seed)) for seed in seeds]


def sample(model, noise, positive, negative, steps=2, cfg=3.0, latent=None, callback=None, **kwargs):
    """comfy.sample.sample with euler/simple; ``positive``/``negative`` are ComfyUI CONDITIONING lists."""
    import comfy.sample
    latent = torch.zeros_like(noise) if latent is None else latent
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                                   denoise=1.0, disable_pbar=True, seed=0, callback=callback, **kwargs)


def fresh_standin_run(model_state: dict, standin_state: dict, reference, noise, positive, negative, strength=1.0,
                      lora=None, lora_strength=1.0, **sample_args):
    """The oracle "the same prompt alone on fresh state": a new model, new Stand-In weights, cache off."""
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    model = load_model(model_state)
    weights = standin_weights_from_state_dict({k: v.clone() for k, v in standin_state.items()}, source="fresh")
    model = standin(model, weights, reference.clone(), strength, mode="off")
    if lora is not None:
        model = with_style_lora(model, lora, lora_strength)
    return sample(model, noise, positive, negative, **sample_args)


def joint_model(model, reference: torch.Tensor, standin_state: dict, strength=1.0):
    """A clone of ``model`` whose diffusion model is the joint-sequence oracle (``reference`` as in the LATENT, before
    the model's latent format), with log(strength) on the video queries' logits over the reference keys."""
    import comfy.patcher_extension
    processed = model.get_model_object("latent_format").process_in(reference)
    bias = math.log(strength) if strength > 0 else float("-inf")

    def wrapper(executor, x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kw):
        return joint_forward(executor.class_obj, x, timestep, context, processed, standin_state,
                             video_to_image_bias=bias)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_joint", wrapper)
    return clone


class RunLeftovers:
    """Records what Stand-In allocates while sampling (weak references only) to check it is gone afterwards.

    Use as a context manager around the runs (it wraps the pack's classes with pytest's ``monkeypatch``):
    ``runs`` are weak references to every RunState; ``tensors`` to every reference K/V entry the cache returned, every
    [video; reference] buffer and every LoRA device copy that is not the weights' own tensor."""

    def __init__(self, monkeypatch):
        from comfyui_standin.nodes.run_state import RunState
        from comfyui_standin.standin_core import JointKVBuffers, ReferenceKVCache
        self.runs, self.tensors = [], []
        tracker = self
        original_init, original_get = RunState.__init__, ReferenceKVCache.get_or_build
        original_prepare, original_loras = JointKVBuffers.prepare, RunState.loras

        def init(run, *args, **kwargs):
            original_init(run, *args, **kwargs)
            tracker.runs.append(weakref.ref(run))

        def get_or_build(cache, *args, **kwargs):
            entry = original_get(cache, *args, **kwargs)
            tracker._track(t for kv in entry for t in (kv.keys, kv.values))
            return entry

        def prepare(buffers, *args, **kwargs):
            keys, values = original_prepare(buffers, *args, **kwargs)
            tracker._track((keys, values))
            return keys, values

        def loras(run, weights, device):
            copies = original_loras(run, weights, device)
            own = {id(t) for block in weights.blocks for low_rank in (block.q, block.k, block.v)
                   for t in (low_rank.down, low_rank.up)}
            tracker._track(t for block in copies for low_rank in (block.q, block.k, block.v)
                           for t in (low_rank.down, low_rank.up) if id(t) not in own)
            return copies

        monkeypatch.setattr(RunState, "__init__", init)
        monkeypatch.setattr(ReferenceKVCache, "get_or_build", get_or_build)
        monkeypatch.setattr(JointKVBuffers, "prepare", prepare)
        monkeypatch.setattr(RunState, "loras", loras)

    def _track(self, tensors):
        known = {id(ref()) for ref in self.tensors if ref() is not None}
        self.tensors += [weakref.ref(t) for t in tensors if id(t) not in known]

    def alive(self):
        """(live RunStates, live tracked tensors) after a full garbage collection."""
        gc.collect()
        return [r() for r in self.runs if r() is not None], [t() for t in self.tensors if t() is not None]


def standin_state_left_on(model) -> dict:
    """What a finished (or failed) run may not leave on a ModelPatcher: a run state in its options, a changed memory
    estimate on its BaseModel."""
    from comfyui_standin.nodes.model_call import CALL_KEY
    from comfyui_standin.nodes.run_state import RUN_KEY
    options = model.model_options.get("transformer_options", {})
    return {"run state in model_options": RUN_KEY in options,
            "call in model_options": CALL_KEY in options,
            "memory_required patched": "memory_required" in vars(model.model)}


# ---------------------------------------------------------------------------------------------------------------------
# graphs through the real server (devtools/comfyui_server.py) and their in-process oracle

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


def saved_latent(server: Server, entry: dict, node="save") -> torch.Tensor:
    from safetensors.torch import load_file
    (item,) = entry["outputs"][node]["latents"]
    return load_file(str(server.base / "output" / item["subfolder"] / item["filename"]))["latent_tensor"]


def executed_nodes(server: Server, entry: dict, graph: dict) -> set:
    status = entry["status"]
    assert status["status_str"] == "success" and status["completed"], f"{status['messages']}\n{server.log_tail()}"
    cached = {node for kind, message in status["messages"] if kind == "execution_cached" for node in message["nodes"]}
    return set(graph) - cached
