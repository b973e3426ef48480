"""ComfyUI's WanModel as the core sees it: its parts, its video positions, its attention function and hooks.

Everything here is read from the model and the call's ``transformer_options`` as ComfyUI's own Wan forward reads
them (comfy/ldm/wan/model.py), so the reference runs through the same modules, casting and attention as the video.
"""
import inspect

import torch

import comfy.ldm.wan.model as wan
import comfy.model_management

from ..standin_core.positions import PositionMap
from ..standin_core.reference import DiTParts, addcmul_modulate, video_self_attention


def rope_takes_options(dm) -> bool:
    """Whether this WanModel's rope_encode takes transformer_options (ComfyUI v0.8.0+, ScaleROPE): read once, when
    Stand-In is applied."""
    return "transformer_options" in inspect.signature(type(dm).rope_encode).parameters


def position_map(options: dict, takes_options: bool) -> PositionMap:
    """How this call's video RoPE positions are scaled and shifted: ComfyUI's ``rope_options`` (ScaleROPE), which
    WanModel.rope_encode applies as position k -> shift + scale * k on each axis (t, y, x). A WanModel whose
    rope_encode takes no options (ComfyUI before ScaleROPE) ignores them, and so does the reference."""
    rope = options.get("rope_options") or {}
    if not rope or not takes_options:
        return PositionMap()
    return PositionMap(scale=tuple(float(rope.get(f"scale_{axis}", 1.0)) for axis in "tyx"),
                       shift=tuple(float(rope.get(f"shift_{axis}", 0.0)) for axis in "tyx"))


def comfy_attention(transformer_options: dict, self_attn=None):
    """ComfyUI's own attention (the function Wan uses), so sage/flash/overrides chain as in the base model.

    Newer ComfyUI (after v0.28) gives each attention module a ``comfy_attention`` (ComfyAttention) that a checkpoint
    can configure (e.g. int8 attention), and Wan passes it as ``optimized_attention(..., preferred_attention=...)``;
    Stand-In passes the same module's. Where modules have none (v0.28.0 and older), nothing extra is passed."""
    preferred = getattr(self_attn, "comfy_attention", None)
    extra = {} if preferred is None else {"preferred_attention": preferred}

    def attention(q, k, v, heads, mask=None):
        return wan.optimized_attention(q, k, v, heads=heads, mask=mask, transformer_options=transformer_options,
                                       **extra)
    return attention


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
        return run_attn1_patches(patches, out, queries, keys, heads, transformer_options)
    return after_attention


def run_attn1_patches(patches, out, queries, keys, heads: int, transformer_options: dict):
    """Each ``attn1_patch`` hook in turn on the attention output ``out`` [B, S, width], given this call's rotated
    queries and keys as [B, S, heads, head_dim], as Wan's own forward calls them; returns the output."""
    batch, seq = queries.shape[:2]
    q, k = queries.view(batch, seq, heads, -1), keys.view(batch, seq, heads, -1)
    for patch in patches:
        out = patch({"x": out, "q": q, "k": k, "transformer_options": transformer_options})
    return out


def video_attention(self_attn, x, freqs, transformer_options: dict, kv, strength, buffers, regions=None):
    """One block's video self-attention with the reference K/V, through the block's own modules."""
    return video_self_attention(self_attn, x, freqs, self_attn.num_heads, kv, strength,
                                comfy_attention(transformer_options, self_attn), wan.apply_rope1, buffers=buffers,
                                after_attention=attn1_patches(transformer_options, self_attn.num_heads),
                                regions=regions)


def wan_parts(dm, dtype: torch.dtype, device, options: dict, positions: PositionMap) -> DiTParts:
    """ComfyUI's WanModel as the parts the reference branch runs through, computed as its own forward does; the
    reference follows any scale/shift of the video's positions (``positions``)."""
    def attention_for_block(index):
        return comfy_attention({**options, "block_index": index, "standin_reference_pass": True},
                               dm.blocks[index].self_attn)

    return DiTParts(
        patch_embedding=lambda latent: dm.patch_embedding(latent.float()),  # WanModel.forward_orig: float32 conv
        patch_size=tuple(dm.patch_size),
        rope=lambda grid: dm.rope_embedder(positions(grid)[None]).movedim(1, 2),  # as WanModel.rope_encode
        time_embedding=dm.time_embedding, time_projection=dm.time_projection, freq_dim=dm.freq_dim, width=dm.dim,
        heads=dm.num_heads, blocks=dm.blocks, apply_rope=wan.apply_rope1,
        block_modulation=lambda block: comfy.model_management.cast_to(block.modulation, dtype=dtype, device=device),
        attention_for_block=attention_for_block,
        # newer ComfyUI (after v0.28) has the block's adaptive norm as one function, fused on CUDA for large inputs
        # (comfy/ldm/wan/model.py, modulate); where it exists the reference runs through the same one
        modulate=getattr(wan, "modulate", None) or addcmul_modulate)
