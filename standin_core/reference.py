"""The reference branch: the image tokens alone through the DiT blocks at timestep 0, recording each block's K/V.

Because image queries never attend to video keys and every other module treats tokens independently, running the
image tokens as their own sequence gives exactly the image half of the paper's joint sequence. As in the official
code, the image tokens skip the text cross-attention. Per block:

    x_I = x_I + gate_msa * o(Attention(Q_I', K_I', V_I))        Q_I' = RoPE(norm_q(W_q h + lora_q(h))), h = modulated norm1(x_I)
    x_I = x_I + gate_mlp * ffn(norm2(x_I) * (1 + scale_mlp) + shift_mlp)

with the six modulation vectors of t = 0. K_I' = RoPE(norm_k(W_k h + lora_k(h))) and V_I = W_v h + lora_v(h) are
what the video tokens attend to.

Every function takes the real block (anything with ``norm1``, ``norm2``, ``ffn`` and a ``self_attn`` holding
``q, k, v, o, norm_q, norm_k``) and calls its modules, never a copy of their weights, so quantised, offloaded or
LoRA-patched weights behave exactly as in the model's own forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .attention import (AttentionFn, JointKVBuffers, attend_with_reference, check_strength, restricted_attention,
                        sdpa_attention)
from .positions import apply_rope as default_apply_rope
from .weights import BlockLoRA


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
                    apply_rope: Callable = default_apply_rope, need_output: bool = True
                    ) -> tuple[Optional[torch.Tensor], ReferenceKV]:
    """One DiT block on the reference tokens [1, R, width] at t = 0.

    ``modulation`` is the block's modulation parameter plus e0 at t = 0, [1, 6, width]. Returns the updated tokens
    (``None`` when ``need_output`` is False, e.g. after the last block, whose output nobody reads) and the block's
    reference K/V.
    """
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=1)
    attn_in = torch.addcmul(shift_msa, block.norm1(ref_tokens), 1 + scale_msa)
    queries, keys, values = project_qkv(block.self_attn, attn_in, ref_rotations, heads, lora, apply_rope,
                                        need_queries=need_output)
    kv = ReferenceKV(keys, values)
    if not need_output:
        return None, kv
    attended = block.self_attn.o(attention(queries, keys, values, heads))
    ref_tokens = torch.addcmul(ref_tokens, attended, gate_msa)
    ffn_out = block.ffn(torch.addcmul(shift_mlp, block.norm2(ref_tokens), 1 + scale_mlp))
    return torch.addcmul(ref_tokens, ffn_out, gate_mlp), kv


def build_reference_kv(blocks: Sequence, ref_tokens: torch.Tensor, zero_modulation: torch.Tensor,
                       ref_rotations: torch.Tensor, loras: Sequence[BlockLoRA], heads: int,
                       attention_for_block: Optional[Callable[[int], AttentionFn]] = None,
                       apply_rope: Callable = default_apply_rope,
                       block_modulation: Callable = lambda block: block.modulation) -> list[ReferenceKV]:
    """The whole reference pass: K/V of every block for the reference tokens [1, R, width].

    ``zero_modulation`` is e0 at t = 0 [1, 6, width]; ``block_modulation(block)`` returns the block's modulation
    parameter ready to add (the ComfyUI glue casts it to the compute device/dtype there).
    """
    if len(loras) != len(blocks):
        raise ValueError(f"{len(loras)} Stand-In LoRA blocks for a model with {len(blocks)} blocks")
    kv_per_block = []
    for index, (block, lora) in enumerate(zip(blocks, loras)):
        attention = attention_for_block(index) if attention_for_block is not None else sdpa_attention
        modulation = block_modulation(block).to(zero_modulation) + zero_modulation
        last = index == len(blocks) - 1
        ref_tokens, kv = reference_block(block, ref_tokens, modulation, ref_rotations, lora, heads, attention,
                                         apply_rope, need_output=not last)
        kv_per_block.append(kv)
    return kv_per_block


def video_self_attention(self_attn, x: torch.Tensor, rotations: torch.Tensor, heads: int,
                         ref_kv: Optional[ReferenceKV], strength: float = 1.0,
                         attention: AttentionFn = sdpa_attention, apply_rope: Callable = default_apply_rope,
                         buffers: Optional[JointKVBuffers] = None,
                         linear_into: Optional[Callable] = None) -> torch.Tensor:
    """The video tokens' self-attention with Stand-In: base projections, keys/values extended by the reference.

    With ``ref_kv=None`` or ``strength=0`` this is the model's plain self-attention, operation for operation.
    ``buffers`` (reused across blocks and calls) avoids concatenating [video; reference] K/V in every block: the
    video keys are rotated straight into the buffer by this package's RoPE (``apply_rope`` still rotates the
    queries), and ``linear_into(self_attn.v, x, out)`` writes the values (default :func:`default_linear_into`:
    computed straight into the buffer for a plain ``torch.nn.Linear``, otherwise computed and copied; a caller that
    knows its own layer types passes its own).
    """
    check_strength(strength)
    if ref_kv is None or strength == 0 or buffers is None:
        queries, keys, values = project_qkv(self_attn, x, rotations, heads, None, apply_rope)
        ref_keys = ref_kv.keys if ref_kv is not None else None
        ref_values = ref_kv.values if ref_kv is not None else None
        return self_attn.o(restricted_attention(queries, keys, values, ref_keys, ref_values, heads, strength,
                                                attention))
    batch, seq = x.shape[:2]
    queries = _rotate(self_attn.norm_q(self_attn.q(x)), rotations, heads, apply_rope)
    keys, values = buffers.prepare(batch, seq, ref_kv.keys, ref_kv.values, queries.dtype, queries.device)
    default_apply_rope(self_attn.norm_k(self_attn.k(x)).view(batch, seq, heads, -1), rotations,
                       out=keys[:, :seq].view(batch, seq, heads, -1))
    (linear_into or default_linear_into)(self_attn.v, x, values[:, :seq])
    return self_attn.o(attend_with_reference(queries, keys, values, seq, heads, strength, attention))


def default_linear_into(linear: Callable, x: torch.Tensor, out: torch.Tensor) -> None:
    """``out[...] = linear(x)``: straight into ``out`` for a plain ``torch.nn.Linear``, else computed and copied."""
    if isinstance(linear, torch.nn.Module) and type(linear).forward is torch.nn.Linear.forward \
            and matmul_ready(linear.weight, linear.bias, x):
        matmul_into(linear.weight, linear.bias, x, out)
    else:
        out.copy_(linear(x))


def matmul_ready(weight: torch.Tensor, bias: Optional[torch.Tensor], x: torch.Tensor) -> bool:
    """Whether x @ weight.T + bias can be written into a buffer with one plain matmul per batch row."""
    return (type(weight) is torch.nn.Parameter and weight.dtype == x.dtype and weight.device == x.device
            and (bias is None or (type(bias) is torch.nn.Parameter and bias.dtype == x.dtype))
            and x.ndim == 3 and x.is_contiguous()
            and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)))


def matmul_into(weight: torch.Tensor, bias: Optional[torch.Tensor], x: torch.Tensor, out: torch.Tensor) -> None:
    """``out[b] = x[b] @ weight.T + bias`` for each batch row b (``out`` may be rows of a larger buffer)."""
    for row in range(x.shape[0]):
        if bias is None:
            torch.mm(x[row], weight.t(), out=out[row])
        else:
            torch.addmm(bias, x[row], weight.t(), out=out[row])
