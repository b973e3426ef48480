"""A Wan-like DiT from plain torch modules, for timing only (random weights).

Attribute names follow ComfyUI's Wan (``comfy/ldm/wan/model.py``): ``patch_embedding``, ``text_embedding``,
``time_embedding``, ``time_projection``, ``blocks[i].{norm1, norm2, norm3, self_attn.{q, k, v, o, norm_q, norm_k},
cross_attn, ffn, modulation}``, ``head``; so the Stand-In core runs on it exactly as it runs on ComfyUI's modules.
The self-attention of every block is pluggable per call (``self_attention(index, self_attn, x, freqs)``): the
benchmark passes the base attention or Stand-In's :func:`standin_core.reference.video_self_attention`.
Written from the published architecture, not copied from ComfyUI.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from comfyui_standin.standin_core.attention import JointKVBuffers, sdpa_attention
from comfyui_standin.standin_core.positions import rope_rotations
from comfyui_standin.standin_core.reference import DiTParts, ReferenceKV, video_self_attention

SelfAttentionFn = Callable[[int, nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def sinusoidal_embedding(dim: int, position: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, dim]: cos on the first half, sin on the second (Wan's layout)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=position.device) / half)
    angles = position.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(torch.float32)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, **factory):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, **factory)
        self.k = nn.Linear(dim, dim, **factory)
        self.v = nn.Linear(dim, dim, **factory)
        self.o = nn.Linear(dim, dim, **factory)
        self.norm_q = nn.RMSNorm(dim, eps=1e-6, **factory)
        self.norm_k = nn.RMSNorm(dim, eps=1e-6, **factory)


class CrossAttention(SelfAttention):
    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.q(x))
        k = self.norm_k(self.k(context))
        return self.o(sdpa_attention(q, k, self.v(context), self.heads))


class Block(nn.Module):
    def __init__(self, dim: int, ffn: int, heads: int, **factory):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False, **factory)
        self.self_attn = SelfAttention(dim, heads, **factory)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=True, **factory)
        self.cross_attn = CrossAttention(dim, heads, **factory)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False, **factory)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn, **factory), nn.GELU(approximate="tanh"),
                                 nn.Linear(ffn, dim, **factory))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim, **factory) / dim ** 0.5)

    def forward(self, x, e, freqs, context, attend: Callable[[torch.Tensor], torch.Tensor]):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (self.modulation + e).chunk(6, dim=1)
        x = torch.addcmul(x, attend(torch.addcmul(shift_msa, self.norm1(x), 1 + scale_msa)), gate_msa)
        x = x + self.cross_attn(self.norm3(x), context)
        return torch.addcmul(x, self.ffn(torch.addcmul(shift_mlp, self.norm2(x), 1 + scale_mlp)), gate_mlp)


class Head(nn.Module):
    def __init__(self, dim: int, out_features: int, **factory):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False, **factory)
        self.head = nn.Linear(dim, out_features, **factory)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim, **factory) / dim ** 0.5)

    def forward(self, x, e):
        shift, scale = (self.modulation + e[:, None]).chunk(2, dim=1)
        return self.head(torch.addcmul(shift, self.norm(x), 1 + scale))


class WanLike(nn.Module):
    """Wan T2V DiT skeleton: patchify -> blocks (self-attn, text cross-attn, FFN, t-modulation) -> head."""

    def __init__(self, dim: int, depth: int, heads: int, ffn: int, in_channels: int = 16, out_channels: int = 16,
                 patch=(1, 2, 2), text_dim: int = 4096, freq_dim: int = 256, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim, self.heads, self.freq_dim, self.patch = dim, heads, freq_dim, tuple(patch)
        self.out_channels = out_channels
        self.patch_embedding = nn.Conv3d(in_channels, dim, kernel_size=patch, stride=patch, **factory)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim, **factory), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim, **factory))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim, **factory), nn.SiLU(),
                                            nn.Linear(dim, dim, **factory))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, **factory))
        self.blocks = nn.ModuleList(Block(dim, ffn, heads, **factory) for _ in range(depth))
        self.head = Head(dim, out_channels * math.prod(patch), **factory)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.head.weight.dtype

    def parts(self) -> DiTParts:
        """This model as the parts the core's reference branch runs through (core RoPE, plain SDPA)."""
        return DiTParts(patch_embedding=lambda latent: self.patch_embedding(latent.to(self.dtype)),
                        patch_size=self.patch, rope=lambda positions: rope_rotations(positions, self.dim // self.heads),
                        time_embedding=self.time_embedding, time_projection=self.time_projection,
                        freq_dim=self.freq_dim, width=self.dim, heads=self.heads, blocks=self.blocks)

    def embed_tokens(self, latent: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, C, T, H, W] latent -> [B, S, dim] tokens and the token grid."""
        x = self.patch_embedding(latent.to(self.dtype))
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, freqs: torch.Tensor,
                self_attention: Optional[SelfAttentionFn] = None) -> torch.Tensor:
        """One denoiser call. ``self_attention(i, self_attn, x, freqs)`` replaces block i's self-attention."""
        if self_attention is None:
            self_attention = base_self_attention
        x, grid = self.embed_tokens(latent)
        e = self.time_embedding(sinusoidal_embedding(self.freq_dim, timestep).to(self.dtype))
        e0 = self.time_projection(e).unflatten(1, (6, self.dim))
        context = self.text_embedding(context.to(self.dtype))
        for index, block in enumerate(self.blocks):
            sa = block.self_attn
            x = block(x, e0, freqs, context, lambda h, i=index, sa=sa: self_attention(i, sa, h, freqs))
        x = self.head(x, e)
        return self.unpatchify(x, grid)

    def unpatchify(self, x: torch.Tensor, grid) -> torch.Tensor:
        b = x.shape[0]
        pt, ph, pw = self.patch
        t, h, w = grid
        x = x.view(b, t, h, w, pt, ph, pw, self.out_channels)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.out_channels, t * pt, h * ph, w * pw)


def base_self_attention(index: int, self_attn: SelfAttention, x: torch.Tensor, freqs: torch.Tensor,
                        buffers: Optional[JointKVBuffers] = None) -> torch.Tensor:
    """The model's plain self-attention.

    With ``buffers``: the very code path Stand-In's video pass runs (K/V written into reusable buffers), with zero
    reference tokens, so a comparison isolates what the reference adds rather than how the buffers are filled.
    """
    if buffers is None:
        return video_self_attention(self_attn, x, freqs, self_attn.heads, None)
    width = self_attn.q.weight.shape[0]
    no_reference = ReferenceKV(x.new_empty(1, 0, width), x.new_empty(1, 0, width))
    return video_self_attention(self_attn, x, freqs, self_attn.heads, no_reference, buffers=buffers)
