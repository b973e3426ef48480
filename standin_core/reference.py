"""The reference branch: the image tokens alone through the DiT blocks at timestep 0, recording each block's K/V.

Because image queries never attend to video keys and every other module treats tokens independently, running the
image tokens as their own sequence gives exactly the image half of the paper's joint sequence. As in the official
code, the image tokens skip the text cross-attention. Per block:

    x_I = x_I + gate_msa * o(Attention(Q_I', K_I', V_I))
    x_I = x_I + gate_mlp * ffn(norm2(x_I) * (1 + scale_mlp) + shift_mlp)

with Q_I' = RoPE(norm_q(W_q h + lora_q(h))), h = the modulated norm1(x_I), and the six modulation vectors of t = 0.
K_I' = RoPE(norm_k(W_k h + lora_k(h))) and V_I = W_v h + lora_v(h) are what the video tokens attend to.

Every function takes the real block (anything with ``norm1``, ``norm2``, ``ffn`` and a ``self_attn`` holding
``q, k, v, o, norm_q, norm_k``) and calls its modules, never a copy of their weights, so quantised, offloaded or
LoRA-patched weights behave exactly as in the model's own forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from .attention import (AttentionFn, JointKVBuffers, Strength, attend_with_reference, check_strength,
                        restricted_attention,
                        sdpa_attention)
from .positions import apply_rope as default_apply_rope
from .positions import reference_positions
from .regions import regional_attention
from .weights import BlockLoRA


AfterAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
References = Union[torch.Tensor, Sequence[torch.Tensor]]  # one reference, or one per person
"""after_attention(out, queries, keys) -> out: [B, S, width] each, the video tokens' attention output (before the
output projection) and their own rotated queries and keys."""


@dataclass(frozen=True)
class ReferenceKV:
    """One block's reference keys (after norm and RoPE) and values, [1, R, width] each."""

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def to(self, device=None, dtype=None, non_blocking: bool = False) -> "ReferenceKV":
        return ReferenceKV(self.keys.to(device=device, dtype=dtype, non_blocking=non_blocking),
                           self.values.to(device=device, dtype=dtype, non_blocking=non_blocking))


def zero_timestep_embedding(freq_dim: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The sinusoidal embedding of t = 0, [1, freq_dim]: cos(0) = 1 on the first half, sin(0) = 0 on the second."""
    half = freq_dim // 2
    return torch.cat([torch.ones(1, half), torch.zeros(1, freq_dim - half)], dim=1).to(device=device, dtype=dtype)


def zero_timestep_modulation(time_embedding: Callable, time_projection: Callable, freq_dim: int, width: int,
                             dtype=torch.float32, device=None) -> torch.Tensor:
    """e0 at t = 0, shaped [1, 6, width] (shift/scale/gate for attention, then for the FFN)."""
    embedded = time_embedding(zero_timestep_embedding(freq_dim, dtype=dtype, device=device))
    return time_projection(embedded).unflatten(1, (6, width))


def addcmul_modulate(x: torch.Tensor, norm: Callable, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Wan's adaptive norm: norm(x) * (1 + scale) + shift, as one addcmul (what Wan's block computes)."""
    return torch.addcmul(shift, norm(x), 1 + scale)


def project_qkv(self_attn, x: torch.Tensor, rotations: torch.Tensor, heads: int, lora: Optional[BlockLoRA] = None,
                apply_rope: Callable = default_apply_rope, need_queries: bool = True
                ) -> tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """q, k (normed, rotated) and v of ``x`` [B, S, width] through the block's own projections.

    With ``lora`` the low-rank terms are added BEFORE the q/k RMS norms (as the official weights expect).
    ``need_queries=False`` skips q (returned as None).
    """
    queries = None
    if need_queries:
        queries = self_attn.q(x) if lora is None else self_attn.q(x) + lora.q(x)
        queries = _rotate(self_attn.norm_q(queries), rotations, heads, apply_rope)
    keys = self_attn.k(x) if lora is None else self_attn.k(x) + lora.k(x)
    keys = _rotate(self_attn.norm_k(keys), rotations, heads, apply_rope)
    values = self_attn.v(x) if lora is None else self_attn.v(x) + lora.v(x)
    return queries, keys, values


def _rotate(x: torch.Tensor, rotations: torch.Tensor, heads: int, apply_rope: Callable) -> torch.Tensor:
    batch, seq = x.shape[:2]
    return apply_rope(x.view(batch, seq, heads, -1), rotations).view(batch, seq, -1)


def reference_block(block, ref_tokens: torch.Tensor, modulation: torch.Tensor, ref_rotations: torch.Tensor,
                    lora: BlockLoRA, heads: int, attention: AttentionFn = sdpa_attention,
                    apply_rope: Callable = default_apply_rope, need_output: bool = True,
                    modulate: Callable = addcmul_modulate) -> tuple[Optional[torch.Tensor], ReferenceKV]:
    """One DiT block on the reference tokens [1, R, width] at t = 0.

    ``modulation`` is the block's modulation parameter plus e0 at t = 0, [1, 6, width]. Returns the updated tokens
    (``None`` when ``need_output`` is False, e.g. after the last block, whose output nobody reads) and the block's
    reference K/V. ``modulate(x, norm, shift, scale)`` is the model's adaptive norm (:func:`addcmul_modulate`).
    """
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)
    attn_in = modulate(ref_tokens, block.norm1, shift_msa, scale_msa)
    queries, keys, values = project_qkv(block.self_attn, attn_in, ref_rotations, heads, lora, apply_rope,
                                        need_queries=need_output)
    kv = ReferenceKV(keys, values)
    if not need_output:
        return None, kv
    attended = block.self_attn.o(attention(queries, keys, values, heads))
    ref_tokens = torch.addcmul(ref_tokens, attended, gate_msa)
    ffn_out = block.ffn(modulate(ref_tokens, block.norm2, shift_mlp, scale_mlp))
    return torch.addcmul(ref_tokens, ffn_out, gate_mlp), kv


def build_reference_kv(blocks: Sequence, ref_tokens: References, zero_modulation: torch.Tensor,
                       ref_rotations: References, loras: Sequence[BlockLoRA], heads: int,
                       attention_for_block: Optional[Callable[[int], AttentionFn]] = None,
                       apply_rope: Callable = default_apply_rope,
                       block_modulation: Callable = lambda block: block.modulation,
                       keep: Callable[[ReferenceKV], ReferenceKV] = lambda kv: kv,
                       modulate: Callable = addcmul_modulate) -> list[ReferenceKV]:
    """The blocks' part of the reference pass: K/V of every block for the reference tokens [1, R, width].

    ``ref_tokens`` and ``ref_rotations`` may also be sequences, one per reference (several people): each reference
    goes through every block on its own, attending only to itself (the official multi-reference code loops over
    the references inside each block), and a block's K/V are theirs concatenated in order.
    ``zero_modulation`` is e0 at t = 0 [1, 6, width]; ``block_modulation(block)`` returns the block's modulation
    parameter ready to add (the ComfyUI glue casts it to the compute device/dtype there). ``keep(kv)`` is applied
    to each block's K/V as soon as it is made (the offload cache moves it off the device there). Use
    :func:`reference_branch` for the whole branch from the reference latent.
    """
    if len(loras) != len(blocks):
        raise ValueError(f"{len(loras)} Stand-In LoRA blocks for a model with {len(blocks)} blocks")
    tokens = [ref_tokens] if isinstance(ref_tokens, torch.Tensor) else list(ref_tokens)
    rotations = [ref_rotations] if isinstance(ref_rotations, torch.Tensor) else list(ref_rotations)
    kv_per_block = []
    for index, (block, lora) in enumerate(zip(blocks, loras)):
        attention = attention_for_block(index) if attention_for_block is not None else sdpa_attention
        modulation = block_modulation(block).to(zero_modulation) + zero_modulation
        last = index == len(blocks) - 1
        kvs = []
        for j, rotation in enumerate(rotations):
            tokens[j], kv = reference_block(block, tokens[j], modulation, rotation, lora, heads, attention,
                                            apply_rope, need_output=not last, modulate=modulate)
            kvs.append(kv)
        if len(kvs) > 1:
            kvs = [ReferenceKV(torch.cat([kv.keys for kv in kvs], 1), torch.cat([kv.values for kv in kvs], 1))]
        kv_per_block.append(keep(kvs[0]))
    return kv_per_block


@dataclass(frozen=True)
class DiTParts:
    """The parts of a Wan-style DiT that the reference branch runs through, as the caller's model has them.

    ``patch_embedding(latent)`` maps a [1, C, T, H, W] latent (already padded to the patch size) to its embedded
    grid [1, width, T', H', W'] in whatever dtype the model computes it (ComfyUI's Wan: the Conv3d in float32).
    ``rope(positions)`` maps token positions [L, 3] (float32, on the compute device) to the model's rotation table,
    and ``apply_rope(x [B, L, heads, head_dim], table)`` applies it: the same pair the model uses for its video
    tokens. ``block_modulation(block)`` is the block's own modulation parameter, ready to add to e0, and
    ``modulate(x, norm, shift, scale)`` its adaptive norm.
    ``attention_for_block(i)`` is the attention function block i uses.
    """

    patch_embedding: Callable[[torch.Tensor], torch.Tensor]
    patch_size: tuple
    rope: Callable[[torch.Tensor], torch.Tensor]
    time_embedding: Callable
    time_projection: Callable
    freq_dim: int
    width: int
    heads: int
    blocks: Sequence
    apply_rope: Callable = default_apply_rope
    block_modulation: Callable = lambda block: block.modulation
    modulate: Callable = addcmul_modulate
    attention_for_block: Callable[[int], AttentionFn] = lambda index: sdpa_attention


def pad_to_patch(latent: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """Pad the last len(patch_size) axes of ``latent`` up to multiples of the patch, wrapping around ("circular"),
    as Wan pads a latent before its patch embedding (ComfyUI: ``comfy.ldm.common_dit.pad_to_patch_size``)."""
    pad = []
    for axis, patch in zip(reversed(range(latent.ndim - len(patch_size), latent.ndim)), reversed(patch_size)):
        pad += [0, (patch - latent.shape[axis] % patch) % patch]
    return torch.nn.functional.pad(latent, pad, mode="circular") if any(pad) else latent


def reference_branch(parts: DiTParts, reference_latent: References, video_grid: Sequence[int],
                     loras: Sequence[BlockLoRA], dtype: torch.dtype, device,
                     keep: Callable[[ReferenceKV], ReferenceKV] = lambda kv: kv) -> list[ReferenceKV]:
    """Stand-In's whole reference branch: the per-block K/V that the video tokens attend to.

    ``reference_latent`` [1, C, 1, h, w] (in the model's latent space) is padded and patch-embedded into R tokens;
    they get the reference RoPE positions for a video whose token grid has ``video_grid[-2:]`` = (rows, cols)
    (time -1, the spatial block just past the video grid), the modulation of t = 0, and go through every block
    with the Stand-In LoRA on q/k/v and no text cross-attention, in ``dtype`` on ``device``; ``keep`` as in
    :func:`build_reference_kv`. A sequence of reference latents (several people, the official multi-reference
    baseline) gives each its slot of the staircase (:func:`positions.reference_positions`) and its own pass; they
    must have the same token count, as the official code assumes.
    This is the one implementation the ComfyUI nodes, the benchmark and the tests run.
    """
    latents = [reference_latent] if isinstance(reference_latent, torch.Tensor) else list(reference_latent)
    rows, cols = video_grid[-2:]
    tokens, rotations = [], []
    for index, latent in enumerate(latents):
        latent = pad_to_patch(latent.to(device=device, dtype=dtype), parts.patch_size)  # as the video latent
        grid = parts.patch_embedding(latent).to(dtype)
        _, ref_rows, ref_cols = grid.shape[2:]
        tokens.append(grid.flatten(2).transpose(1, 2))
        rotations.append(parts.rope(reference_positions(ref_rows, ref_cols, rows, cols, index).to(device)))
    counts = [t.shape[1] for t in tokens]
    if len(set(counts)) > 1:
        raise ValueError(f"the references have different token counts {counts}: prepare every reference photo the "
                         "same way (EncodeReferenceFace makes 512x512), as Stand-In's multi-reference code assumes")
    zero_modulation = zero_timestep_modulation(parts.time_embedding, parts.time_projection, parts.freq_dim,
                                               parts.width, dtype=dtype, device=device)
    return build_reference_kv(parts.blocks, tokens, zero_modulation, rotations, loras, parts.heads,
                              parts.attention_for_block, parts.apply_rope, parts.block_modulation, keep,
                              parts.modulate)


def video_self_attention(self_attn, x: torch.Tensor, rotations: torch.Tensor, heads: int,
                         ref_kv: Optional[ReferenceKV], strength: Strength = 1.0,
                         attention: AttentionFn = sdpa_attention, apply_rope: Callable = default_apply_rope,
                         buffers: Optional[JointKVBuffers] = None,
                         after_attention: Optional[AfterAttention] = None,
                         regions: Optional[tuple] = None) -> torch.Tensor:
    """The video tokens' self-attention with Stand-In: base projections, keys/values extended by the reference.

    With ``ref_kv=None`` this is the model's plain self-attention, operation for operation. ``strength`` 0 keeps
    the reference keys but gives them a logit bias of -inf (:mod:`.attention`): numerically the base model.
    Queries and keys are rotated by the one ``apply_rope`` the caller passes (the model's own function).
    ``buffers`` (reused across blocks and calls) avoids concatenating [video; reference] K/V in every block: the
    video's rotated keys and its values are copied into the buffer's first rows.
    ``after_attention(out, queries, keys)`` runs on the attention output before the output projection, with the
    video tokens' own rotated queries and keys ([B, S, width] each, the reference's keys not included): where the
    host model lets extensions change the attention output (ComfyUI's ``attn1_patch``), they keep working.
    ``regions`` = (token masks bool [N, S], outside) binds each of N references to its tokens
    (:func:`regions.regional_attention`); None: every video token attends to every reference.
    """
    check_strength(strength)
    if ref_kv is None or buffers is None:
        queries, keys, values = project_qkv(self_attn, x, rotations, heads, None, apply_rope)
        ref_keys = ref_kv.keys if ref_kv is not None else None
        ref_values = ref_kv.values if ref_kv is not None else None
        if regions is not None and ref_kv is not None:
            out = regional_attention(queries, keys, values, ref_keys, ref_values, regions[0], heads, strength,
                                     regions[1], attention)
        else:
            out = restricted_attention(queries, keys, values, ref_keys, ref_values, heads, strength, attention)
    else:
        batch, seq = x.shape[:2]
        queries = _rotate(self_attn.norm_q(self_attn.q(x)), rotations, heads, apply_rope)
        joint_keys, values = buffers.prepare(batch, seq, ref_kv.keys, ref_kv.values, queries.dtype, queries.device)
        keys = _rotate(self_attn.norm_k(self_attn.k(x)), rotations, heads, apply_rope)
        joint_keys[:, :seq].copy_(keys)
        if after_attention is None:
            del keys  # nobody reads the video keys again: free them before the attention
        values[:, :seq].copy_(self_attn.v(x))
        if regions is not None:
            out = regional_attention(queries, joint_keys[:, :seq], values[:, :seq], joint_keys[:, seq:],
                                     values[:, seq:], regions[0], heads, strength, regions[1], attention)
        else:
            out = attend_with_reference(queries, joint_keys, values, seq, heads, strength, attention)
    if after_attention is not None:
        out = after_attention(out, queries, keys)
    return self_attn.o(out)
