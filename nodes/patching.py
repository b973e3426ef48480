"""How Stand-In rides on a ComfyUI Wan ModelPatcher. The one module here that knows ComfyUI's Wan internals.

Everything is local to a cloned ModelPatcher, under the key ``"standin"``:
  * an object patch of ``diffusion_model.blocks.{i}.self_attn.forward`` per block (:class:`VideoSelfAttention`):
    the video tokens' self-attention, through the block's own q/k/v/o modules and ComfyUI's attention function,
    with the reference K/V of this call appended; with no reference for this call it runs the original forward;
  * a DIFFUSION_MODEL wrapper (:class:`ReferencePass`): on each model call inside the identity range, takes the
    reference K/V from the run's cache (or builds them: the reference pass) and hands them to the blocks for this
    call through ``transformer_options``;
  * an OUTER_SAMPLE wrapper (:class:`SamplingRun`): gives every sampling run a fresh :class:`RunState` (its cache,
    its sigma range) and frees it when the run ends;
  * a PREPARE_SAMPLING wrapper (:class:`MemoryEstimate`): ComfyUI's memory estimate for the run includes what
    Stand-In allocates (:class:`StandInMemory`), so the loader makes room for it.
The video tensor keeps its shape, so VACE, other patches and samplers see an ordinary Wan forward.
"""
from __future__ import annotations

import functools
import inspect
import logging
import threading
from dataclasses import astuple, dataclass, field
from typing import Callable, Optional, Sequence

import torch

import comfy.ldm.wan.model as wan
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension

from ..standin_core import (CacheKey, JointKVBuffers, ReferenceKV, ReferenceKVCache, StandInWeights,
                            tensor_fingerprint, token_grid, video_self_attention)
from ..standin_core.cache import format_bytes, kv_cache_bytes
from ..standin_core.positions import PositionMap
from ..standin_core.reference import DiTParts, addcmul_modulate, reference_branch

log = logging.getLogger("standin")

KEY = "standin"
CALL_KEY = "standin_call"  # transformer_options: the reference K/V for this model call
RUN_KEY = "standin_run"  # transformer_options: the sampling run's state (SamplingState)
CACHE_MODE_KEY = "standin_cache_mode"  # transformer_options: "on" | "off" | "offload" (StandInKVCache)
SUPPORTED_MODELS = ("WanModel", "VaceWanModel")
# The other Wan-family classes of ComfyUI (v0.28.0: comfy/ldm/wan/model.py, model_animate.py, model_wandancer.py,
# ar_model.py): why Stand-In does not run on each, and what to use instead. Stand-In's weights were trained on Wan2.1
# T2V 14B, where the video's frames start at time 0 and nothing else shares the sequence.
OTHER_WAN_MODELS = {
    "CameraWanModel": "a Wan-Fun camera-control model: 32/36 input channels (image latent and mask with the noise) "
                      "and a camera adapter added to the video tokens. Use Wan2.1 T2V or VACE 14B with Stand-In (and "
                      "a camera-motion LoRA) for camera moves with one identity",
    "WanModel_S2V": "Wan2.2 S2V: a fine-tune that carries its own identity reference (at time 30 and later, with a "
                    "learned condition embedding), motion frames at negative times and audio injected after every "
                    "block. Give the person's photo to its own ref_image (WanSoundImageToVideo)",
    "HumoWanModel": "HuMo: a fine-tune with its own subject reference (appended after the video frames) and audio "
                    "cross-attention in every block (17B: 36 channels; 1.7B: another width). Give the photo to its own "
                    "reference input (WanHuMoImageToVideo)",
    "SCAILWanModel": "SCAIL: a 20-channel image-to-video model whose own reference frames come BEFORE the video in "
                     "time (the video starts at time R, so Stand-In's frame -1 is not one before it) and whose pose "
                     "tokens share the sequence. Use SCAIL's own reference image",
    "SCAIL2WanModel": "SCAIL-2: like SCAIL, a 20-channel image-to-video model with its own reference frames before "
                      "the video and pose and mask streams in the sequence. Use SCAIL-2's own reference image",
    "AnimateWanModel": "Wan2.2 Animate: a 36-channel character-replacement model whose reference image is the first "
                       "latent frame, with a face adapter every five blocks. Use its own reference_image "
                       "(WanAnimateToVideo)",
    "WanDancerModel": "WanDancer: a 36-channel music-to-dance image-to-video fine-tune whose time positions step by "
                      "30/fps. Use its own reference image",
    "CausalWanModel": "the causal (autoregressive, self-forcing) Wan: its attention takes a K/V cache of past frames "
                      "and, in its ar_video sampler, its blocks are called without ComfyUI's model wrappers, so the "
                      "reference could not be attended. Use Wan2.1 T2V 14B with KSampler",
}
WAN_LATENT_CHANNELS = 16  # the Wan2.1 VAE's latent: what Stand-In's reference is and what its weights expect


@dataclass(frozen=True)
class StandInSettings:
    """What ApplyStandInToWanModel fixed: weights, the reference in the model's latent space, strength, range."""

    weights: StandInWeights
    reference: torch.Tensor  # [1, C, 1, H, W], already through the model's latent format (process_in)
    reference_fingerprint: str
    strength: float
    start_percent: float
    end_percent: float

    def reference_tokens(self, patch_size) -> int:
        _, rows, cols = token_grid(self.reference.shape[2:], patch_size)
        return rows * cols


@dataclass(frozen=True)
class ModelCall:
    """Handed to the patched blocks for one model call (``transformer_options[CALL_KEY]``).

    ``blocks`` are the blocks of the diffusion model that is running THIS call: the patches find their module there
    at call time and hold none themselves, so a model deep-copied for another device (ComfyUI's multi-GPU work units)
    computes with its own weights. ``kv`` is None where identity does not apply (strength 0, outside the range): the
    blocks then run their own forward."""

    blocks: Sequence[torch.nn.Module]
    kv: Optional[Sequence[ReferenceKV]]
    strength: float
    buffers: Optional[JointKVBuffers]  # the run's [video; reference] K/V buffers, reused by every block
    ran: set = field(default_factory=set)  # blocks whose Stand-In attention ran in this call


class RunState:
    """One sampling run on one device: the K/V cache, the sigma range where identity applies, the [video; reference]
    buffers, the LoRA's device copy. A run has one per work unit (:class:`SamplingState`)."""

    def __init__(self, cache: ReferenceKVCache, sigma_start: float, sigma_end: float, model_state):
        self.cache = cache
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.model_state = model_state
        self.buffers = JointKVBuffers()
        self._loras = None

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

    def release(self) -> None:
        self.cache.clear()
        self.buffers.release()
        self.drop_loras()


class SamplingState:
    """What one sampling run keeps (``transformer_options[RUN_KEY]``): a :class:`RunState` per work unit.

    ComfyUI v0.28's multi-GPU work units (MultiGPU_WorkUnits) run model calls of one sampling run on deep clones of
    the model, each on its own device and thread, with the same transformer_options; each call says its unit in
    ``transformer_options["multigpu_thread_device"]`` (comfy/samplers.py, _calc_cond_batch_multigpu). Each unit gets
    its own reference K/V (built once on its device), buffers and LoRA copy, so the units neither rebuild each
    other's cache nor write into each other's buffers. A run on one device has one unit."""

    def __init__(self, new_cache: Callable[[], ReferenceKVCache], sigma_start: float, sigma_end: float, model_state):
        self.new_cache = new_cache  # a fresh cache for each unit (the cache node's mode)
        self.sigma_start, self.sigma_end, self.model_state = sigma_start, sigma_end, model_state
        self.units: dict = {}
        self._lock = threading.Lock()

    def unit(self, device) -> RunState:
        with self._lock:
            if device not in self.units:
                self.units[device] = RunState(self.new_cache(), self.sigma_start, self.sigma_end, self.model_state)
            return self.units[device]

    def describe(self) -> str:
        return "; ".join(f"{device}: {run.cache.describe()}" for device, run in self.units.items()) or "no model call"

    def release(self) -> None:
        with self._lock:
            for run in self.units.values():
                run.release()
            self.units.clear()


def diffusion_model_of(model) -> torch.nn.Module:
    return model.get_model_object("diffusion_model")


def check_wan_model(model) -> torch.nn.Module:
    """The model's WanModel, or a ValueError saying what was expected."""
    dm = diffusion_model_of(model)
    name = type(dm).__name__
    if name in OTHER_WAN_MODELS:
        raise ValueError(f"Stand-In does not run on this {name}: it is {OTHER_WAN_MODELS[name]}. Stand-In's weights "
                         "fit Wan2.1 T2V 14B, Wan2.1 VACE 14B and each Wan2.2 A14B T2V expert.")
    if name not in SUPPORTED_MODELS:
        raise ValueError(
            f"Stand-In needs a Wan text-to-video model ({' or '.join(SUPPORTED_MODELS)}, loaded with 'Load Diffusion "
            f"Model'), but this MODEL is a {name}. Use Wan2.1 T2V 14B, Wan2.1 VACE 14B or a Wan2.2 A14B T2V expert.")
    channels = dm.patch_embedding.weight.shape[1]
    if channels != WAN_LATENT_CHANNELS or getattr(dm, "model_type", "t2v") != "t2v":
        # By the patch embedding, not by model_type: Wan2.2 I2V A14B loads as 't2v' with 36 input channels (image
        # latent and mask concatenated to the noise), TI2V-5B takes 48 (the Wan2.2 VAE), the Fun models differ too.
        kind = {36: "image-to-video (the start image is concatenated to the noise)",
                48: "Wan2.2 TI2V-5B (the 48-channel Wan2.2 VAE)"}.get(channels, f"Wan '{dm.model_type}'")
        raise ValueError(
            f"Stand-In needs a Wan text-to-video model whose patch embedding takes {WAN_LATENT_CHANNELS} latent "
            f"channels; this one takes {channels}: {kind}. The Stand-In weights were trained on Wan2.1 T2V 14B "
            "(they also fit Wan2.1 VACE 14B and each Wan2.2 A14B T2V expert). For a first or last frame, or to extend "
            "a clip, use Wan2.1 VACE 14B with WanVaceToVideo (reference image / control frames) and Stand-In on it.")
    if getattr(dm, "ref_conv", None) is not None:
        # Wan-Fun's reference convolution prepends its reference's tokens as frame 0 and moves the video to frames
        # 1.. (comfy/ldm/wan/model.py, WanModel.forward_orig and _forward's t_len + 1): Stand-In's frame -1 would no
        # longer be the frame before the video.
        raise ValueError("Stand-In does not run on a Wan-Fun model with a reference convolution (ref_conv): it puts "
                         "its own reference image before the video's first frame. Use Wan2.1 T2V 14B or Wan2.1 VACE "
                         "14B.")
    return dm


def prepare_reference(model, latent: dict) -> torch.Tensor:
    """The reference LATENT as the model sees it: one frame, batch 1, through the model's latent format."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise ValueError("reference_latent must be a LATENT (connect EncodeReferenceFace or a VAE Encode of one image)")
    if samples.ndim == 4:  # an image latent [B, C, H, W]
        samples = samples.unsqueeze(2)
    if samples.ndim != 5:
        raise ValueError(f"reference_latent has shape {tuple(samples.shape)}; expected [1, C, 1, H, W]")
    if samples.shape[0] != 1 or samples.shape[2] != 1:
        raise ValueError(
            f"reference_latent must be ONE image (batch 1, one latent frame), got batch {samples.shape[0]} with "
            f"{samples.shape[2]} frames. Encode a single photo (EncodeReferenceFace), or pick one with 'Latent From Batch'.")
    dm = diffusion_model_of(model)
    channels = dm.patch_embedding.weight.shape[1]
    if samples.shape[1] != channels:
        raise ValueError(f"reference_latent has {samples.shape[1]} channels but this Wan model expects {channels}: "
                         "encode the reference with this model's own VAE (Wan2.1 VAE for Wan2.1/2.2 14B).")
    latent_format = model.get_model_object("latent_format")
    return latent_format.process_in(samples.float()).to(comfy.model_management.intermediate_device())


MAX_STRENGTH = 3.0  # the node's widget maximum


def apply_standin(model, weights: StandInWeights, latent: dict, strength: float, start_percent: float,
                  end_percent: float):
    """A clone of ``model`` with Stand-In installed; ``model`` itself is left untouched."""
    dm = check_wan_model(model)
    weights.validate_for(dm.dim, len(dm.blocks), model_name=f"this {type(dm).__name__}")
    if not 0.0 <= strength <= MAX_STRENGTH:  # also NaN, which passes ComfyUI's min/max validation
        raise ValueError(f"strength must be a number from 0 to {MAX_STRENGTH:g} (1 = Stand-In as trained, 0 = the base "
                         f"model), got {strength}: set the strength input of Apply Stand-In to Wan Model")
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(f"start_percent ({start_percent}) must be <= end_percent ({end_percent}), both in 0..1")
    reference = prepare_reference(model, latent)
    settings = StandInSettings(weights, reference, tensor_fingerprint(reference), float(strength),
                               float(start_percent), float(end_percent))
    patched = model.clone()
    remove_standin(patched)
    for index, block in enumerate(dm.blocks):
        patched.add_object_patch(f"diffusion_model.blocks.{index}.self_attn.forward", VideoSelfAttention(index))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, ReferencePass(settings))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY, SamplingRun(settings))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, KEY, MemoryEstimate(settings))
    log.info("Stand-In applied: %s; reference %s; strength %.2f, steps %.0f%%..%.0f%%", weights.describe(),
             tuple(reference.shape), strength, 100 * start_percent, 100 * end_percent)
    return patched


def remove_standin(model) -> None:
    """Take Stand-In off a (cloned) model: applying twice replaces, never stacks."""
    for wrapper_type in (comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, comfy.patcher_extension.WrappersMP.OUTER_SAMPLE,
                         comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING):
        model.remove_wrappers_with_key(wrapper_type, KEY)
    for name in [n for n, patch in model.object_patches.items() if isinstance(patch, VideoSelfAttention)]:
        del model.object_patches[name]


def standin_settings(model) -> Optional[StandInSettings]:
    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY):
        if isinstance(wrapper, SamplingRun):
            return wrapper.settings
    return None


def set_cache_mode(model, mode: str):
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})[CACHE_MODE_KEY] = mode
    return patched


def compute_dtype(model) -> torch.dtype:
    """The dtype the diffusion model computes in (its activations, hence the reference K/V)."""
    return getattr(model.model, "manual_cast_dtype", None) or model.model_dtype()


def expected_cache_bytes(model) -> Optional[int]:
    """Size of the reference K/V cache this model will build (None without Stand-In)."""
    settings = standin_settings(model)
    if settings is None:
        return None
    dm = diffusion_model_of(model)
    return kv_cache_bytes(len(dm.blocks), settings.reference_tokens(dm.patch_size), dm.dim,
                          torch.empty((), dtype=compute_dtype(model)).element_size())


@dataclass(frozen=True)
class StandInMemory:
    """The device memory Stand-In adds to a sampling run on top of the base model, in bytes."""

    cache: int  # the reference K/V of every block
    buffers: int  # the [video; reference] key and value buffers, for this batch and video size
    lora: int  # the Stand-In LoRA's copy on the compute device (0 when the weights already live there)

    @property
    def total(self) -> int:
        return self.cache + self.buffers + self.lora


def cache_streams(model) -> bool:
    """Whether this model's K/V cache lives off the compute device and is streamed block by block (mode offload,
    with an offload device other than the load device)."""
    mode = model.model_options.get("transformer_options", {}).get(CACHE_MODE_KEY, "on")
    offload_device = torch.device(comfy.model_management.unet_offload_device())
    return mode == "offload" and offload_device != torch.device(model.load_device)


def standin_memory(model, settings: StandInSettings, latent_shape) -> StandInMemory:
    """What a run with a latent batch of ``latent_shape`` [B, C, T, H, W] allocates for Stand-In on the device.
    A streamed (offload) cache holds two blocks' worth there (:class:`standin_core.cache.StreamedKV`)."""
    dm = diffusion_model_of(model)
    element = torch.empty((), dtype=compute_dtype(model)).element_size()
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
    """PREPARE_SAMPLING wrapper: ComfyUI's estimate of a run's inference memory includes Stand-In's own
    (:class:`StandInMemory`), so its loader frees (or offloads) that much more before sampling starts.

    ComfyUI asks ``model.model.memory_required(input_shape)`` while it prepares sampling; for the duration of that
    step (and only for this model) the answer gets Stand-In's bytes added. The BaseModel is shared by every clone,
    so this relies on ComfyUI preparing one sampling run at a time (it has no public hook for extra memory). Later
    per-step estimates (how many conds to batch) are ComfyUI's own, without Stand-In's buffers.
    """

    def __init__(self, settings: StandInSettings):
        self.settings = settings

    def __call__(self, executor, model, *args, **kwargs):
        base_model = model.model
        had_own = "memory_required" in vars(base_model)
        original = base_model.memory_required

        def memory_required(input_shape, *rest, **options):
            return original(input_shape, *rest, **options) + standin_memory(model, self.settings, input_shape).total

        base_model.memory_required = memory_required
        try:
            return executor(model, *args, **kwargs)
        finally:
            if had_own:
                base_model.memory_required = original
            else:
                del base_model.memory_required


class VideoSelfAttention:
    """Object patch for block ``index``'s ``self_attn.forward``: ComfyUI calls it as fn(x, freqs, transformer_options).

    It holds no module: the block it runs in is found at call time in the call's :class:`ModelCall`, which
    :class:`ReferencePass` puts in ``transformer_options`` for every call of the model that is running."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, x, freqs, transformer_options={}):
        call: Optional[ModelCall] = transformer_options.get(CALL_KEY)
        if call is None:
            raise RuntimeError(
                f"Stand-In's attention patch (block {self.index}) ran outside a Wan model call that went through "
                "ComfyUI's diffusion-model wrappers, so it cannot tell which model it runs in, and the identity "
                "would be lost. Some node calls the Wan blocks directly; sample with KSampler, or remove Stand-In.")
        self_attn = call.blocks[self.index].self_attn
        if call.kv is None:
            return type(self_attn).forward(self_attn, x, freqs, transformer_options=transformer_options)
        call.ran.add(self.index)
        return video_self_attention(self_attn, x, freqs, self_attn.num_heads, call.kv[self.index], call.strength,
                                    comfy_attention(transformer_options, self_attn), wan.apply_rope1,
                                    buffers=call.buffers, is_plain_linear=is_plain_comfy_linear,
                                    after_attention=attn1_patches(transformer_options, self_attn.num_heads))


# ComfyUI v0.28 and newer: WanSelfAttention.forward hands its attention output, with the video's rotated q and k as
# [B, S, heads, head_dim], to each transformer_options["patches"]["attn1_patch"] before the output projection
# (comfy/ldm/wan/model.py:91-93 in v0.28.0; core's MultiTalk/InfiniteTalk use it). Older Wan forwards call none,
# so neither does Stand-In there: the patched attention calls exactly the hooks the original forward calls.
WAN_CALLS_ATTN1_PATCH = "attn1_patch" in wan.WanSelfAttention.forward.__code__.co_consts


def attn1_patches(transformer_options: dict, heads: int):
    """The ``attn1_patch`` hooks of this call as Stand-In's ``after_attention`` (None when there are none)."""
    patches = transformer_options.get("patches", {}).get("attn1_patch") if WAN_CALLS_ATTN1_PATCH else None
    if not patches:
        return None

    def after_attention(out, queries, keys):
        batch, seq = queries.shape[:2]
        q, k = queries.view(batch, seq, heads, -1), keys.view(batch, seq, heads, -1)
        for patch in patches:
            out = patch({"x": out, "q": q, "k": k, "transformer_options": transformer_options})
        return out
    return after_attention


_PLAIN_LINEAR_FORWARDS = {torch.nn.Linear.forward, comfy.ops.disable_weight_init.Linear.forward,
                          comfy.ops.manual_cast.Linear.forward}


def is_plain_comfy_linear(linear) -> bool:
    """Whether ``linear`` is ComfyUI's (or torch's) Linear with nothing to cast or patch at call time (no lowvram
    casting, no weight functions, no quantised weight): then x @ weight.T + bias is exactly what it computes, and
    the video values can be written straight into the K/V buffer (see standin_core.reference.linear_into)."""
    return (isinstance(linear, torch.nn.Module) and type(linear).forward in _PLAIN_LINEAR_FORWARDS
            and not getattr(linear, "comfy_cast_weights", False) and not getattr(linear, "weight_function", None)
            and not getattr(linear, "bias_function", None))


def comfy_attention(transformer_options: dict, self_attn=None):
    """ComfyUI's own attention (the function Wan uses), so sage/flash/overrides chain as in the base model.

    Newer ComfyUI (after v0.28) gives each attention module a ``comfy_attention`` (ComfyAttention) that a checkpoint
    can configure (e.g. int8 attention), and Wan passes it as ``optimized_attention(..., preferred_attention=...)``
    (comfy/ldm/wan/model.py, WanSelfAttention.forward); Stand-In passes the same module's, so that configuration
    applies to its attention too. Where modules have none (v0.28.0 and older), nothing extra is passed."""
    preferred = getattr(self_attn, "comfy_attention", None)
    extra = {} if preferred is None else {"preferred_attention": preferred}

    def attention(q, k, v, heads, mask=None):
        return wan.optimized_attention(q, k, v, heads=heads, mask=mask, transformer_options=transformer_options,
                                       **extra)
    return attention


class ReferencePass:
    """DIFFUSION_MODEL wrapper: the reference K/V for this call (cached per run), handed to the patched blocks."""

    def __init__(self, settings: StandInSettings):
        self.settings = settings

    def __call__(self, executor, *args, **kwargs):
        in_kwargs = "transformer_options" in kwargs
        options = kwargs["transformer_options"] if in_kwargs else args[5]
        x, dm = args[0], executor.class_obj  # the diffusion model running this call (it may be a deep copy)
        state: Optional[SamplingState] = options.get(RUN_KEY)
        if state is None:  # called outside a sampling run (e.g. a bare model call): no cache to keep
            run = RunState(ReferenceKVCache("off"), float("inf"), 0.0, None)
        else:  # this call's work unit: its device (ComfyUI's multi-GPU work units name theirs)
            run = state.unit(str(options.get("multigpu_thread_device", x.device)))
        options = dict(options)
        if self.settings.strength == 0 or not run.active_at(options.get("sigmas")):
            options[CALL_KEY] = ModelCall(dm.blocks, None, self.settings.strength, None)
            args, kwargs = _with_options(args, kwargs, options, in_kwargs)
            return executor(*args, **kwargs)
        if kwargs.get("context_latents") is not None:
            # ComfyUI v0.28+ (BerniniConditioning): in-context latents appended to the video tokens, each with its own
            # RoPE grid from (0, 0, 0) turned by a per-source rotation (comfy/ldm/wan/model.py, forward_orig and
            # _forward). Stand-In was neither trained nor checked against an oracle with them in the sequence.
            raise ValueError("Stand-In does not run together with Bernini in-context latents (BerniniConditioning): "
                             "they join the video's sequence at positions of their own that Stand-In was not built "
                             "for. Use one of the two.")
        _, rows, cols = token_grid(x.shape[2:], dm.patch_size)
        key = CacheKey(self.settings.reference_fingerprint, id(self.settings.weights), run.model_state,
                       (rows, cols), str(x.device), str(x.dtype), astuple(position_map(dm, options)))
        kv = run.cache.get_or_build(key, lambda: self.reference_pass(dm, x, options, run), device=x.device)
        if run.cache.builds == 1 and run.cache.hits == 0 and run.cache.mode != "off":
            log.info("%s (reference K/V built once for this run)", run.cache.describe())
        call = options[CALL_KEY] = ModelCall(dm.blocks, kv, self.settings.strength, run.buffers)
        replaced = not_ours(dm)
        args, kwargs = _with_options(args, kwargs, options, in_kwargs)
        out = executor(*args, **kwargs)
        if replaced:  # another patch sits on some blocks' attention: fine only if it still ran ours inside
            check_standin_ran(dm, call, replaced, options)
        return out

    def reference_pass(self, dm, x: torch.Tensor, options: dict, run: RunState) -> list[ReferenceKV]:
        """The reference tokens through every block at t = 0 (standin_core.reference.reference_branch)."""
        kv = reference_branch(wan_parts(dm, x.dtype, x.device, options), self.settings.reference,
                              token_grid(x.shape[2:], dm.patch_size), run.loras(self.settings.weights, x.device),
                              x.dtype, x.device, keep=run.cache.keep)
        if run.cache.mode != "off":
            run.drop_loras()  # built once for this run: the LoRA's device copy is no longer needed
        return kv


def _with_options(args: tuple, kwargs: dict, options: dict, in_kwargs: bool) -> tuple[tuple, dict]:
    """WanModel._forward's arguments with ``transformer_options`` (keyword, or positional argument 5) replaced."""
    if in_kwargs:
        return args, {**kwargs, "transformer_options": options}
    return (*args[:5], options, *args[6:]), kwargs


def not_ours(dm) -> list[int]:
    """Blocks whose self_attn.forward is not Stand-In's patch right now (another object patch, or an extension that
    swapped the forward after ComfyUI applied the object patches, e.g. in an ON_LOAD callback)."""
    return [index for index, block in enumerate(dm.blocks)
            if not isinstance(block.self_attn.__dict__.get("forward"), VideoSelfAttention)]


def check_standin_ran(dm, call: ModelCall, replaced: list[int], options: dict) -> None:
    """After a model call: every block whose attention was replaced must still have run Stand-In's (a wrapper that
    calls ours is fine), except blocks ComfyUI itself skipped on purpose (a "double_block" replacement, such as
    Skip Layer Guidance). Otherwise the identity would be silently lost in those blocks: stop and say so."""
    skipped = {index for kind, index in options.get("patches_replace", {}).get("dit", {}) if kind == "double_block"}
    lost = [index for index in replaced if index not in call.ran and index not in skipped]
    if lost:
        raise RuntimeError(
            f"Stand-In's attention did not run in block(s) {lost[:8]}{'...' if len(lost) > 8 else ''} of "
            f"{len(dm.blocks)}: another node or extension replaced those blocks' self_attn.forward (a second "
            "attention patch, or a forward swapped when the model loads). The identity would be lost there. Apply "
            "Stand-In after the other patch, or remove one of them.")


@functools.lru_cache(maxsize=None)
def rope_encode_takes_options(rope_encode) -> bool:
    """Whether this rope_encode (a class's function, read once) takes transformer_options (ComfyUI v0.8.0+)."""
    return "transformer_options" in inspect.signature(rope_encode).parameters


def position_map(dm, options: dict) -> PositionMap:
    """How this call's video RoPE positions are scaled and shifted: ComfyUI's ``rope_options`` (ScaleROPE, v0.8.0+),
    which WanModel.rope_encode applies as position k -> shift + scale * k on each axis (t, y, x). A WanModel whose
    rope_encode takes no options (ComfyUI before ScaleROPE) ignores them, and so does the reference."""
    rope = options.get("rope_options") or {}
    if not rope or not rope_encode_takes_options(type(dm).rope_encode):
        return PositionMap()
    return PositionMap(scale=tuple(float(rope.get(f"scale_{axis}", 1.0)) for axis in "tyx"),
                       shift=tuple(float(rope.get(f"shift_{axis}", 0.0)) for axis in "tyx"))


def wan_parts(dm, dtype: torch.dtype, device, options: dict) -> DiTParts:
    """ComfyUI's WanModel as the parts the reference branch runs through, computed as its own forward does."""
    def attention_for_block(index):
        return comfy_attention({**options, "block_index": index, "standin_reference_pass": True},
                               dm.blocks[index].self_attn)

    mapped = position_map(dm, options)  # the reference follows any scale/shift of the video's positions
    return DiTParts(
        patch_embedding=lambda latent: dm.patch_embedding(latent.float()),  # WanModel.forward_orig: float32 conv
        patch_size=tuple(dm.patch_size),
        rope=lambda positions: dm.rope_embedder(mapped(positions)[None]).movedim(1, 2),  # as WanModel.rope_encode
        time_embedding=dm.time_embedding, time_projection=dm.time_projection, freq_dim=dm.freq_dim, width=dm.dim,
        heads=dm.num_heads, blocks=dm.blocks, apply_rope=wan.apply_rope1,
        block_modulation=lambda block: comfy.model_management.cast_to(block.modulation, dtype=dtype, device=device),
        attention_for_block=attention_for_block,
        # newer ComfyUI (after v0.28) has the block's adaptive norm as one function, fused on CUDA for large inputs
        # (comfy/ldm/wan/model.py, modulate); where it exists the reference runs through the same one
        modulate=getattr(wan, "modulate", None) or addcmul_modulate)


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
                              float(sampling.percent_to_sigma(self.settings.end_percent)),
                              guider.model_patcher.patches_uuid)
        options[RUN_KEY] = state
        try:
            return executor(*args, **kwargs)
        finally:
            log.debug("Stand-In run finished: %s", state.describe())
            state.release()
            guider.model_options = original


def describe_cache(model, mode: str) -> str:
    settings = standin_settings(model)
    if settings is None:
        return f"cache {mode}: Stand-In is not applied to this MODEL yet (the setting still holds once it is)"
    where = {"on": "on the compute device",
             "offload": "on the offload device, streamed to the compute device one block at a time (two blocks "
                        "there at once)",
             "off": "not kept (recomputed every model call)"}[mode]
    example = standin_memory(model, settings, (2, 16, 21, 60, 104))  # 832x480, 81 frames, cond + uncond
    return (f"cache {mode}: reference K/V {format_bytes(expected_cache_bytes(model))} {where}. While sampling, "
            f"Stand-In also allocates [video; reference] K/V buffers ({format_bytes(example.buffers)} at 832x480x81, "
            f"cond+uncond) and the LoRA's device copy ({format_bytes(example.lora)}); ComfyUI's memory estimate "
            f"counts all three ({format_bytes(example.total)} at that size)")
