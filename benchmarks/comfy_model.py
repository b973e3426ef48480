"""``standin_bench --comfyui``: ComfyUI's real ``WanModel`` with the pack's own ComfyUI glue.

The model is built with ComfyUI's classes at the requested shape (random weights, straight on the device), and each
Stand-In variant runs exactly what the pack installs on a MODEL: the per-block :class:`VideoSelfAttention` object
patches (set as the blocks' ``self_attn.forward``, which is what ComfyUI's object patching does) and the
:class:`ReferencePass` DIFFUSION_MODEL wrapper, with a per-run :class:`RunState` (its cache, its K/V buffers) as
the OUTER_SAMPLE wrapper makes it. The base variant runs the untouched model. Sampling is an Euler loop calling the
diffusion model as ComfyUI's ``apply_model`` does, cond and uncond batched.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch

from comfyui_standin.benchmarks.timing import TimedSampler, cache_for
from comfyui_standin.standin_core.cache import tensor_fingerprint
from comfyui_standin.tests.support.comfy_boot import (ComfyUIPathError, comfyui_path_from_env, comfyui_version,
                                                      import_comfyui)
from comfyui_standin.tests.support.tiny_models import random_standin_state_dict


@dataclass
class ComfySetup:
    model: torch.nn.Module
    patches: list
    wrapper: object
    patching: object
    latent: torch.Tensor
    context: torch.Tensor
    sigmas: torch.Tensor
    device: torch.device
    dtype: torch.dtype
    version: str
    cfg: float = 5.0


def build_comfy_setup(cfg: dict, device: torch.device, dtype: torch.dtype) -> ComfySetup:
    try:
        path = comfyui_path_from_env()
    except ComfyUIPathError as error:
        raise SystemExit(f"--comfyui: {error}") from None
    root = import_comfyui(path,
                          (("--cpu",) if device.type == "cpu" else ()) + ("--use-pytorch-cross-attention",),
                          need_core_nodes=False)
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    patching = importlib.import_module("comfyui_standin.nodes.patching")
    weights_mod = importlib.import_module("comfyui_standin.standin_core.weights")
    version = comfyui_version(root)

    torch.manual_seed(0)
    model = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=cfg["dim"],
                     ffn_dim=cfg["ffn"], freq_dim=256, text_dim=4096, out_dim=16, num_heads=cfg["heads"],
                     num_layers=cfg["depth"], cross_attn_norm=True, eps=1e-6,
                     operations=comfy.ops.disable_weight_init, device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    for name, param in model.named_parameters():  # ComfyUI leaves parameters uninitialised
        if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm3.weight"):
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02)

    # Stand-In weights as a loaded file gives them: float32, on the CPU
    weights = weights_mod.standin_weights_from_state_dict(
        random_standin_state_dict(cfg["dim"], cfg["depth"], cfg["rank"], seed=1, down_std=1 / math.sqrt(cfg["dim"]),
                                  up_std=0.01 / math.sqrt(cfg["rank"])), source="<random>")
    gen = torch.Generator().manual_seed(2)
    reference = torch.randn(1, 16, 1, 2 * cfg["ref_height"], 2 * cfg["ref_width"], generator=gen)
    settings = patching.StandInSettings(weights, reference, tensor_fingerprint(reference), 1.0, 0.0, 1.0)
    patches = [patching.VideoSelfAttention(i) for i in range(len(model.blocks))]
    latent = torch.randn(1, 16, cfg["frames"], 2 * cfg["height"], 2 * cfg["width"], device=device, dtype=dtype)
    context = torch.randn(2, cfg["text_len"], 4096, device=device, dtype=dtype)
    sigmas = torch.linspace(1.0, 0.0, cfg["steps"] + 1, device=device)
    return ComfySetup(model, patches, patching.ReferencePass(settings), patching, latent, context, sigmas, device,
                      dtype, version)


class ComfySampler(TimedSampler):
    """One variant's sampling run on ComfyUI's WanModel."""

    def __init__(self, s: ComfySetup, variant: str):
        super().__init__(s.latent, s.sigmas, s.cfg, s.device)
        self.s, self.variant = s, variant
        self.run = None
        if variant != "base":
            self.run = s.patching.SamplingState(lambda: cache_for(variant), math.inf, 0.0, model_state=None)

    def _install(self, on: bool) -> None:
        for block, patch in zip(self.s.model.blocks, self.s.patches):
            if on:
                block.self_attn.forward = patch
            else:
                block.self_attn.__dict__.pop("forward", None)

    def model_call(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = self.s
        self._install(self.run is not None)
        options = {}
        if self.run is not None:
            options = {"wrappers": {"diffusion_model": {"standin": [s.wrapper]}},
                       s.patching.RUN_KEY: self.run, "sigmas": sigma.expand(2)}
        return s.model(x, (sigma * 1000).expand(2), s.context, transformer_options=options)

    def finish(self) -> None:
        if self.run is not None:
            (unit,) = self.run.units.values()  # one device: one work unit
            self.cache_bytes = unit.cache.nbytes
            self.counts = (unit.cache.builds, unit.cache.hits)
            self.run.release()  # what the OUTER_SAMPLE wrapper does when sampling ends
        self._install(False)
