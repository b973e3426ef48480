"""The device memory Stand-In adds to a sampling run, and ComfyUI's memory estimate made to count it.

A PREPARE_SAMPLING wrapper (:class:`MemoryEstimate`) adds :class:`StandInMemory` to ComfyUI's estimate of the run's
inference memory, so its loader frees (or offloads) that much more before sampling starts.
"""
from dataclasses import dataclass
from typing import Optional

import torch

import comfy.model_management

from ..standin_core import token_grid
from ..standin_core.cache import kv_cache_bytes
from .run_state import StandInSettings, cache_mode, standin_settings
from .wan_models import compute_dtype, diffusion_model_of


@dataclass(frozen=True)
class StandInMemory:
    """The device memory Stand-In adds to a sampling run on top of the base model, in bytes."""

    cache: int  # the reference K/V of every block
    buffers: int  # the [video; reference] key and value buffers, for this batch and video size
    lora: int  # the Stand-In LoRA's copy on the compute device (0 when the weights already live there)

    @property
    def total(self) -> int:
        return self.cache + self.buffers + self.lora


def element_size(model) -> int:
    return torch.empty((), dtype=compute_dtype(model)).element_size()


def expected_cache_bytes(model) -> Optional[int]:
    """Size of the reference K/V cache this model will build for one video size (None without Stand-In)."""
    settings = standin_settings(model)
    if settings is None:
        return None
    dm = diffusion_model_of(model)
    return kv_cache_bytes(len(dm.blocks), settings.reference_tokens(dm.patch_size), dm.dim, element_size(model))


def cache_streams(model) -> bool:
    """Whether this model's K/V cache lives off the compute device and is streamed block by block (mode offload,
    with an offload device other than the load device)."""
    offload_device = torch.device(comfy.model_management.unet_offload_device())
    return cache_mode(model) == "offload" and offload_device != torch.device(model.load_device)


def standin_memory(model, settings: StandInSettings, latent_shape) -> StandInMemory:
    """What a run with a latent batch of ``latent_shape`` [B, C, T, H, W] allocates for Stand-In on the device.
    A streamed (offload) cache holds two blocks' worth there (:class:`standin_core.cache.StreamedKV`)."""
    dm = diffusion_model_of(model)
    element = element_size(model)
    ref_tokens = settings.reference_tokens(dm.patch_size)
    frames, rows, cols = token_grid(latent_shape[2:], dm.patch_size)
    device = torch.device(model.load_device)
    on_device = all(t.device == device for block in settings.weights.blocks
                    for low_rank in (block.q, block.k, block.v) for t in (low_rank.down, low_rank.up))
    blocks_on_device = min(2, len(dm.blocks)) if cache_streams(model) else len(dm.blocks)
    return StandInMemory(cache=kv_cache_bytes(blocks_on_device, ref_tokens, dm.dim, element),
                         buffers=2 * latent_shape[0] * (frames * rows * cols + ref_tokens) * dm.dim * element,
                         lora=0 if on_device else settings.weights.nbytes)


class MemoryEstimate:
    """PREPARE_SAMPLING wrapper: ComfyUI's estimate of a run's inference memory includes Stand-In's own.

    ComfyUI asks ``model.model.memory_required(input_shape)`` while it prepares sampling; for the duration of that
    step (and only for this model) the answer gets Stand-In's bytes added. The BaseModel is shared by every clone,
    so this relies on ComfyUI preparing one sampling run at a time (it has no public hook for extra memory). Later
    per-step estimates (how many conds to batch) are ComfyUI's own, without Stand-In's buffers.
    """

    def __init__(self, settings: StandInSettings):
        self.settings = settings

    def memory(self, model, input_shape) -> StandInMemory:
        """What Stand-In adds for a latent batch of ``input_shape``."""
        return standin_memory(model, self.settings, input_shape)

    def __call__(self, executor, model, *args, **kwargs):
        base_model = model.model
        had_own = "memory_required" in vars(base_model)
        original = base_model.memory_required

        def memory_required(input_shape, *rest, **options):
            return original(input_shape, *rest, **options) + self.memory(model, input_shape).total

        base_model.memory_required = memory_required
        try:
            return executor(model, *args, **kwargs)
        finally:
            if had_own:
                base_model.memory_required = original
            else:
                del base_model.memory_required
