"""Putting Stand-In on a Wan ModelPatcher and taking it off. Everything is local to a clone, under the key "standin":

* an object patch of ``diffusion_model.blocks.{i}.self_attn.forward`` per block (model_call.VideoSelfAttention);
* a DIFFUSION_MODEL wrapper: the reference K/V of each model call (model_call.ReferencePass);
* an OUTER_SAMPLE wrapper: a fresh state for each sampling run, freed when it ends (run_state.SamplingRun);
* a PREPARE_SAMPLING wrapper: ComfyUI's memory estimate counts Stand-In's memory (memory.MemoryEstimate).
"""
import logging

import torch

import comfy.patcher_extension

from ..standin_core import StandInWeights
from .memory import MemoryEstimate
from .model_call import ReferencePass, VideoSelfAttention
from .run_state import CACHE_MODE_KEY, KEY, SamplingRun, StandInSettings
from .wan_adapter import rope_takes_options
from .wan_models import check_wan_model, prepare_reference

log = logging.getLogger("standin")

MAX_STRENGTH = 3.0  # the node's widget maximum
# The LATENT of Stand-In References: "samples" is the first reference (so the LATENT is still one), and these keys
# carry all of them, in order, with their strength factors.
REFERENCES_KEY, FACTORS_KEY = "standin_references", "standin_reference_strengths"
REGIONS_KEY, OUTSIDE_KEY = "standin_reference_regions", "standin_outside_regions"  # pixel MASKs or None; all/none
WRAPPER_TYPES = (comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
                 comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING)


def apply_standin(model, weights: StandInWeights, latent: dict, strength: float, start_percent: float,
                  end_percent: float):
    """A clone of ``model`` with Stand-In installed; ``model`` itself is left untouched."""
    dm = check_wan_model(model)
    weights.validate_for(dm.dim, len(dm.blocks), model_name=f"this {type(dm).__name__}")
    if not 0.0 <= strength <= MAX_STRENGTH:  # also NaN, which passes ComfyUI's min/max validation
        raise ValueError(f"strength must be a number from 0 to {MAX_STRENGTH:g} (1 = Stand-In as trained, 0 = the "
                         f"base model), got {strength}: set the strength input of Apply Stand-In to Wan Model")
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"start_percent ({start_percent}) must be <= end_percent ({end_percent}), both in 0..1")
    references, factors = reference_latents(latent)
    prepared = tuple(prepare_reference(model, {"samples": samples}) for samples in references)
    if len({tuple(reference.shape) for reference in prepared}) > 1:
        raise ValueError("the references have different sizes " + ", ".join(str(tuple(r.shape[-2:])) for r in prepared)
                         + ": encode every photo the same way (Encode Stand-In Reference Face makes 512x512 faces)")
    regions = latent.get(REGIONS_KEY) if isinstance(latent, dict) else None
    if regions is not None:  # a reference without a region counts everywhere: one all-ones frame of that size
        size = next(region for region in regions if region is not None).shape[-2:]
        regions = tuple((region if region is not None else torch.ones(1, *size)).float().reshape(-1, *size)
                        .cpu() for region in regions)
    settings = StandInSettings(weights, prepared, float(strength), float(start_percent), float(end_percent),
                               rope_takes_options(dm), factors, regions, latent.get(OUTSIDE_KEY, "all"))
    patched = model.clone()
    remove_standin(patched)
    for index in range(len(dm.blocks)):
        patched.add_object_patch(f"diffusion_model.blocks.{index}.self_attn.forward", VideoSelfAttention(index))
    for wrapper_type, wrapper in zip(WRAPPER_TYPES,
                                     (ReferencePass(settings), SamplingRun(settings), MemoryEstimate(settings))):
        patched.add_wrapper_with_key(wrapper_type, KEY, wrapper)
    log.info("Stand-In applied: %s; %d reference(s) %s; strength %.2f, steps %.0f%%..%.0f%%", weights.describe(),
             len(prepared), tuple(prepared[0].shape), strength, 100 * start_percent, 100 * end_percent)
    return patched


def reference_latents(latent) -> tuple[list, tuple]:
    """The reference latent(s) of Apply's ``reference_latent`` input and their strength factors: one LATENT, or the
    LATENT of Stand-In References, which carries every reference (``REFERENCES_KEY``) and its factor."""
    if isinstance(latent, dict) and REFERENCES_KEY in latent:
        references, factors = latent[REFERENCES_KEY], tuple(float(f) for f in latent[FACTORS_KEY])
        return list(references), factors
    return [latent.get("samples") if isinstance(latent, dict) else None], (1.0,)


def remove_standin(model) -> None:
    """Take Stand-In off a (cloned) model: applying twice replaces, never stacks."""
    for wrapper_type in WRAPPER_TYPES:
        model.remove_wrappers_with_key(wrapper_type, KEY)
    for name in [n for n, patch in model.object_patches.items() if isinstance(patch, VideoSelfAttention)]:
        del model.object_patches[name]


def set_cache_mode(model, mode: str):
    """A clone of ``model`` whose sampling runs keep the reference K/V as ``mode`` says (StandInKVCache)."""
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})[CACHE_MODE_KEY] = mode
    return patched
