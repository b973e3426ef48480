"""``standin_bench --comfyui``: ComfyUI's real ``WanModel``, sampled by ComfyUI, with Stand-In applied as a user does.

The model is ComfyUI's WanModel at the requested shape, random weights, loaded by ComfyUI's own loader
(``comfy.sd.load_diffusion_model_state_dict``). Stand-In goes on through the pack's ``apply_standin`` (what Apply
Stand-In to Wan Model runs) and ``set_cache_mode`` (the K/V cache node), and every variant samples with ComfyUI's
sampler (``comfy.sample.sample``, euler, cfg with cond and uncond in one call), so the object patches, the wrappers,
the memory estimate and the per-run state are exactly a user's graph's. Each model call is timed through ComfyUI's
unet function wrapper. The base variant samples the model without Stand-In the same way.
"""
from __future__ import annotations

import importlib
import math
import time

import torch

from comfyui_standin.benchmarks.timing import TimedSampler, sync
from comfyui_standin.devtools.comfy_boot import (ComfyUIPathError, comfyui_path_from_env, comfyui_version,
                                                 import_comfyui)
from comfyui_standin.devtools.tiny_models import random_standin_state_dict
from comfyui_standin.standin_core.cache import ReferenceKVCache

CACHE_MODES = {"cached": "on", "uncached": "off", "offload": "offload"}
HEAD_DIM = 128  # ComfyUI's loader reads a Wan model's head count as width / 128 (comfy/model_detection.py)


def random_wan_state_dict(cfg: dict, dtype: torch.dtype) -> dict:
    """Random weights in the layout of ComfyUI's WanModel at this shape (its parameters' names and shapes, read from
    a model built on the meta device); the q/k and cross-attention norms are ones, as in a trained model."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    shapes = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=cfg["dim"],
                      ffn_dim=cfg["ffn"], freq_dim=256, text_dim=4096, out_dim=16, num_heads=cfg["heads"],
                      num_layers=cfg["depth"], cross_attn_norm=True, eps=1e-6,
                      operations=comfy.ops.disable_weight_init, device="meta")
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, param in shapes.named_parameters():
        if name.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
            state[name] = torch.ones(param.shape, dtype=dtype)
        else:
            state[name] = (torch.randn(param.shape, generator=gen) * 0.02).to(dtype)
    return state


class ComfySetup:
    """The loaded base MODEL, the Stand-In MODEL per variant, and the sampling inputs."""

    def __init__(self, cfg: dict, device: torch.device, dtype: torch.dtype):
        if cfg["dim"] != HEAD_DIM * cfg["heads"]:
            raise SystemExit(f"--comfyui: ComfyUI's loader reads the head count as width / {HEAD_DIM}: use --heads "
                             f"{max(1, cfg['dim'] // HEAD_DIM)} with --dim {cfg['dim']} (or a --dim of 128 x heads)")
        try:
            path = comfyui_path_from_env()
        except ComfyUIPathError as error:
            raise SystemExit(f"--comfyui: {error}") from None
        root = import_comfyui(path, (("--cpu",) if device.type == "cpu" else ()) + ("--use-pytorch-cross-attention",),
                              need_core_nodes=False)
        import comfy.sd
        install = importlib.import_module("comfyui_standin.nodes.install")
        weights_mod = importlib.import_module("comfyui_standin.standin_core.weights")
        self.version, self.device, self.steps, self.cfg = comfyui_version(root), device, cfg["steps"], 5.0
        self.base = comfy.sd.load_diffusion_model_state_dict(random_wan_state_dict(cfg, dtype),
                                                             model_options={"dtype": dtype})
        # Stand-In weights as a loaded file gives them: float32, on the CPU
        weights = weights_mod.standin_weights_from_state_dict(
            random_standin_state_dict(cfg["dim"], cfg["depth"], cfg["rank"], seed=1,
                                      down_std=1 / math.sqrt(cfg["dim"]), up_std=0.01 / math.sqrt(cfg["rank"])),
            source="<random>")
        gen = torch.Generator().manual_seed(2)
        reference = {"samples": torch.randn(1, 16, 1, 2 * cfg["ref_height"], 2 * cfg["ref_width"], generator=gen)}
        with_standin = install.apply_standin(self.base, weights, reference, 1.0, 0.0, 1.0)
        self.models = {variant: install.set_cache_mode(with_standin, mode) for variant, mode in CACHE_MODES.items()}
        self.models["base"] = self.base
        # a CPU run has no other device to offload to: stream the offload variant's blocks anyway, to time the copies
        ReferenceKVCache.always_stream = device.type == "cpu"
        self.noise = torch.randn(1, 16, cfg["frames"], 2 * cfg["height"], 2 * cfg["width"], generator=gen)
        self.positive = [[torch.randn(1, cfg["text_len"], 4096, generator=gen), {}]]
        self.negative = [[torch.randn(1, cfg["text_len"], 4096, generator=gen), {}]]


class ComfySampler(TimedSampler):
    """One variant's sampling run by ComfyUI's sampler; every model call timed."""

    interleave_calls = False  # ComfyUI's sampler runs the steps: variants alternate run by run

    def __init__(self, s: ComfySetup, variant: str):
        super().__init__(s.noise, torch.zeros(s.steps + 1), s.cfg, s.device)
        self.s, self.variant = s, variant
        self.model = s.models[variant].clone()
        self.model.set_model_unet_function_wrapper(self.timed_call)

    def timed_call(self, apply_model, args: dict) -> torch.Tensor:
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = apply_model(args["input"], args["timestep"], **args["c"])
        sync(self.device)
        self.wall.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        run = args["c"].get("transformer_options", {}).get("standin_run")  # nodes.run_state.RUN_KEY
        if run is not None:
            (unit,) = run.units.values()  # one device: one work unit
            self.cache_bytes, self.counts = unit.cache.nbytes, (unit.cache.builds, unit.cache.hits)
        return out

    def sample_all(self) -> None:
        import comfy.sample
        s = self.s
        with torch.inference_mode():
            self.x = comfy.sample.sample(self.model, s.noise, s.steps, s.cfg, "euler", "simple", s.positive,
                                         s.negative, torch.zeros_like(s.noise), denoise=1.0, disable_pbar=True,
                                         seed=0)
        if len(self.wall) != s.steps:
            raise RuntimeError(f"{self.variant}: ComfyUI made {len(self.wall)} model calls for {s.steps} steps; the "
                               "benchmark expects cond and uncond in one call per step")
