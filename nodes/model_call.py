"""What happens in one call of the Wan diffusion model: the reference K/V for the call, and each block's attention.

* :class:`ReferencePass` (a DIFFUSION_MODEL wrapper) takes the reference K/V from the run's cache, or builds them
  (the reference pass), and hands them to the blocks through ``transformer_options[CALL_KEY]``;
* :class:`VideoSelfAttention` (an object patch of every block's ``self_attn.forward``) attends the video tokens to
  [video; reference] with the block's own modules, or runs the original forward when identity does not apply.
The video tensor keeps its shape, so VACE, other patches and samplers see an ordinary Wan forward.
"""
import logging
from dataclasses import astuple, dataclass, field
from typing import Optional, Sequence

import torch

from ..standin_core import CacheKey, JointKVBuffers, ReferenceKV, ReferenceKVCache, token_grid
from ..standin_core.reference import reference_branch
from .run_state import RUN_KEY, RunState, SamplingState, StandInSettings
from .wan_adapter import position_map, video_attention, wan_parts

log = logging.getLogger("standin")

CALL_KEY = "standin_call"  # transformer_options: the reference K/V for this model call


@dataclass(frozen=True)
class ModelCall:
    """Handed to the patched blocks for one model call (``transformer_options[CALL_KEY]``).

    ``blocks`` are the blocks of the diffusion model that is running THIS call: the patches find their module there
    at call time and hold none themselves, so a model deep-copied for another device (ComfyUI's multi-GPU work units)
    computes with its own weights. ``kv`` is None where identity does not apply (strength 0, outside the range): the
    blocks then run their own forward."""

    blocks: Sequence[torch.nn.Module]
    kv: Optional[Sequence[ReferenceKV]]
    strength: object  # a number, or one per reference (StandInSettings.strengths)
    buffers: Optional[JointKVBuffers]  # the run's [video; reference] K/V buffers, reused by every block
    ran: set = field(default_factory=set)  # blocks whose Stand-In attention ran in this call
    regions: Optional[tuple] = None  # (token masks [N, S], outside) when the references have regions


class VideoSelfAttention:
    """Object patch for block ``index``'s ``self_attn.forward``: ComfyUI calls it as fn(x, freqs, transformer_options).

    It holds no module: the block it runs in is found at call time in the call's :class:`ModelCall`."""

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
        return video_attention(self_attn, x, freqs, transformer_options, call.kv[self.index], call.strength,
                               call.buffers, call.regions)


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
            run = RunState(ReferenceKVCache("off"))
        else:  # this call's work unit: its device (ComfyUI's multi-GPU work units name theirs)
            run = state.unit(str(options.get("multigpu_thread_device", x.device)))
        options = dict(options)
        if self.settings.inactive or not run.active_at(options.get("sigmas")):
            options[CALL_KEY] = ModelCall(dm.blocks, None, self.settings.strengths, None)
            args, kwargs = _with_options(args, kwargs, options, in_kwargs)
            return executor(*args, **kwargs)
        if kwargs.get("context_latents") is not None:
            # ComfyUI v0.28+ (BerniniConditioning): in-context latents appended to the video tokens, each with its own
            # RoPE grid from (0, 0, 0) turned by a per-source rotation (comfy/ldm/wan/model.py, forward_orig and
            # _forward). Stand-In was neither trained nor checked against an oracle with them in the sequence.
            raise ValueError("Stand-In does not run together with Bernini in-context latents (BerniniConditioning): "
                             "they join the video's sequence at positions of their own that Stand-In was not built "
                             "for. Use one of the two.")
        grid = token_grid(x.shape[2:], dm.patch_size)
        positions = position_map(options, self.settings.rope_takes_options)
        key = CacheKey(grid[1:], str(x.device), str(x.dtype), astuple(positions))
        kv = run.cache.get_or_build(key, lambda: self.reference_pass(dm, x, options, run), x.device)
        if run.cache.builds == 1 and run.cache.hits == 0 and run.cache.mode != "off":
            log.info("%s (reference K/V built once for this run)", run.cache.describe())
        regions = run.regions(self.settings, grid, dm.patch_size, x.device)
        call = options[CALL_KEY] = ModelCall(dm.blocks, kv, self.settings.strengths, run.buffers, regions=regions)
        replaced = not_ours(dm)
        args, kwargs = _with_options(args, kwargs, options, in_kwargs)
        out = executor(*args, **kwargs)
        if replaced:  # another patch sits on some blocks' attention: fine only if it still ran ours inside
            check_standin_ran(dm, call, replaced, options)
        return out

    def reference_pass(self, dm, x: torch.Tensor, options: dict, run: RunState) -> list[ReferenceKV]:
        """The reference tokens through every block at t = 0 (standin_core.reference.reference_branch)."""
        positions = position_map(options, self.settings.rope_takes_options)
        kv = reference_branch(wan_parts(dm, x.dtype, x.device, options, positions), self.settings.reference,
                              token_grid(x.shape[2:], dm.patch_size), run.loras(self.settings.weights, x.device),
                              x.dtype, x.device, keep=run.cache.keep)
        if run.cache.mode != "off":
            run.drop_loras()  # kept for this run: the LoRA's device copy is no longer needed
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
