"""What lives for one sampling run: the settings Apply fixed, and per work unit the K/V cache, buffers and LoRA copy.

An OUTER_SAMPLE wrapper (:class:`SamplingRun`) gives every sampling run a fresh :class:`SamplingState` in its
``transformer_options`` and frees it when the run ends, so nothing Stand-In allocates outlives the run.
"""
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension

from ..standin_core import JointKVBuffers, ReferenceKVCache, StandInWeights, token_grid
from ..standin_core.regions import token_regions

log = logging.getLogger("standin")

KEY = "standin"  # the key of Stand-In's wrappers on a ModelPatcher
RUN_KEY = "standin_run"  # transformer_options: the sampling run's state (SamplingState)
CACHE_MODE_KEY = "standin_cache_mode"  # transformer_options: "on" | "off" | "offload" (StandInKVCache)


@dataclass(frozen=True)
class StandInSettings:
    """What ApplyStandInToWanModel fixed: weights, the reference(s) in the model's latent space, strength, range.

    Several references (several people, Stand-In References) each have a strength factor; reference j's keys
    count ``strength * factors[j]`` times in the video's attention."""

    weights: StandInWeights
    references: tuple  # [1, C, 1, H, W] each, already through the model's latent format (process_in)
    strength: float
    start_percent: float
    end_percent: float
    rope_takes_options: bool  # whether the model's rope_encode reads ScaleROPE's rope_options (wan_adapter)
    factors: tuple = (1.0,)  # one per reference
    regions: Optional[tuple] = None  # per reference a pixel mask [frames or 1, H, W] (Stand-In References), or None
    outside: str = "all"  # what tokens outside every region attend to: "all" references or "none"

    @property
    def reference(self):
        """What the reference branch takes: the one reference, or the list of them."""
        return self.references[0] if len(self.references) == 1 else list(self.references)

    @property
    def strengths(self):
        """The attention's strength: one number for one reference, one per reference for several."""
        if len(self.references) == 1:
            return self.strength * self.factors[0] if self.factors[0] != 1.0 else self.strength
        return tuple(self.strength * factor for factor in self.factors)

    @property
    def inactive(self) -> bool:
        """Every reference at strength 0: the base model, without the reference pass."""
        return all(self.strength * factor == 0 for factor in self.factors)

    def reference_tokens(self, patch_size) -> int:
        """The reference tokens of all references together."""
        _, rows, cols = token_grid(self.references[0].shape[2:], patch_size)
        return rows * cols * len(self.references)


class RunState:
    """One sampling run on one device: the K/V cache, the sigma range where identity applies, the [video; reference]
    buffers, the LoRA's device copy."""

    def __init__(self, cache: ReferenceKVCache, sigma_start: float = float("inf"), sigma_end: float = 0.0):
        self.cache = cache
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.buffers = JointKVBuffers()
        self._loras = None
        self._regions = {}  # token grid -> token regions (standin_core.regions.token_regions)

    def active_at(self, sigmas: Optional[torch.Tensor]) -> bool:
        if sigmas is None:
            return True
        sigma = float(sigmas.reshape(-1)[0])
        return self.sigma_end <= sigma <= self.sigma_start

    def loras(self, weights: StandInWeights, device):
        if self._loras is None or self._loras[0] != device:
            self._loras = (device, weights.blocks_on(device))
        return self._loras[1]

    def drop_loras(self) -> None:
        self._loras = None

    def regions(self, settings: StandInSettings, grid: tuple, patch_size, device):
        """``settings.regions`` as token masks [N, tokens] for a video of token ``grid`` (None without regions),
        computed once per grid in the run."""
        if settings.regions is None:
            return None
        if grid not in self._regions:
            try:
                masks = [token_regions(region[None], grid, patch_size)[0] for region in settings.regions]
            except ValueError as error:
                raise ValueError(f"Stand-In References' regions do not fit this video: {error}. Give the regions "
                                 "the video's width and height; area conditioning cannot be combined with "
                                 "regions.") from None
            self._regions[grid] = (torch.stack(masks).to(device), settings.outside)
        return self._regions[grid]

    def release(self) -> None:
        self.cache.clear()
        self.buffers.release()
        self.drop_loras()
        self._regions.clear()


class SamplingState:
    """What one sampling run keeps (``transformer_options[RUN_KEY]``): a :class:`RunState` per work unit.

    ComfyUI v0.28's multi-GPU work units (MultiGPU_WorkUnits) run model calls of one sampling run on deep clones of
    the model, each on its own device and thread, with the same transformer_options; each call says its unit in
    ``transformer_options["multigpu_thread_device"]`` (comfy/samplers.py, _calc_cond_batch_multigpu). Each unit gets
    its own reference K/V (built once on its device), buffers and LoRA copy, so the units neither rebuild each
    other's cache nor write into each other's buffers. A run on one device has one unit."""

    def __init__(self, new_cache: Callable[[], ReferenceKVCache], sigma_start: float, sigma_end: float):
        self.new_cache = new_cache  # a fresh cache for each unit (the cache node's mode)
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.units: dict = {}
        self._lock = threading.Lock()

    def unit(self, device) -> RunState:
        with self._lock:
            if device not in self.units:
                self.units[device] = RunState(self.new_cache(), self.sigma_start, self.sigma_end)
            return self.units[device]

    def describe(self) -> str:
        return "; ".join(f"{device}: {run.cache.describe()}" for device, run in self.units.items()) or "no model call"

    def release(self) -> None:
        with self._lock:
            for run in self.units.values():
                run.release()
            self.units.clear()


class SamplingRun:
    """OUTER_SAMPLE wrapper: a fresh :class:`SamplingState` for each sampling run, freed when the run ends."""

    def __init__(self, settings: StandInSettings):
        self.settings = settings

    def __call__(self, executor, *args, **kwargs):
        guider = executor.class_obj
        original = guider.model_options
        guider.model_options = comfy.model_patcher.create_model_options_clone(original)
        options = guider.model_options.setdefault("transformer_options", {})
        mode = options.get(CACHE_MODE_KEY, "on")
        storage = comfy.model_management.unet_offload_device() if mode == "offload" else None
        sampling = guider.model_patcher.get_model_object("model_sampling")
        state = SamplingState(lambda: ReferenceKVCache(mode, storage),
                              float(sampling.percent_to_sigma(self.settings.start_percent)),
                              float(sampling.percent_to_sigma(self.settings.end_percent)))
        options[RUN_KEY] = state
        try:
            return executor(*args, **kwargs)
        finally:
            log.debug("Stand-In run finished: %s", state.describe())
            state.release()
            guider.model_options = original


def standin_settings(model) -> Optional[StandInSettings]:
    """The settings of the Stand-In applied to ``model`` (None without Stand-In)."""
    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY):
        if isinstance(wrapper, SamplingRun):
            return wrapper.settings
    return None


def cache_mode(model) -> str:
    return model.model_options.get("transformer_options", {}).get(CACHE_MODE_KEY, "on")
