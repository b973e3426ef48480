"""Prototype: the cached video self-attention without the per-call ``torch.cat`` of [video K/V; reference K/V].

The core (:func:`standin_core.attention.restricted_attention`) builds ``keys = cat([K_V, K_I])`` and
``values = cat([V_V, V_I])`` in every block of every call: a full extra read and write of the video K and V.
Here one pair of buffers [B, S + R, width] is allocated per sampling run (not per block: the blocks run one after
another, so one pair is reused by all of them), and per block:

* the rotated video keys are written by RoPE's last operation straight into ``kbuf[:, :S]`` (``torch.add(..., out=)``
  replaces the ``type_as`` copy the core's ``apply_rope`` makes anyway): the key concatenation costs nothing;
* the video values (the output of the ``v`` module, which has no ``out=``) are copied into ``vbuf[:, :S]``;
* the block's cached reference K/V are copied into the last R rows (R/S of the video part).

The arithmetic is the core's, operation for operation (same RoPE products and sum in float32, same rounding to the
model dtype, same SDPA call on the same values): :func:`check_exact` asserts bit-equal outputs before timing.
"""
from __future__ import annotations

import torch

from standin_core.attention import sdpa_attention
from standin_core.positions import apply_rope
from standin_core.reference import video_self_attention


def rope_into(x: torch.Tensor, rotations: torch.Tensor, out: torch.Tensor) -> None:
    """:func:`standin_core.positions.apply_rope` with its result written (cast to ``out``'s dtype) into ``out``."""
    pairs = x.to(rotations.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    torch.add(rotations[..., 0] * pairs[..., 0], rotations[..., 1] * pairs[..., 1],
              out=out.view(*x.shape[:-1], -1, 2))


def prealloc_self_attention(self_attn, x, rotations, heads, ref_kv, buffers: dict) -> torch.Tensor:
    batch, seq, width = x.shape
    refs = ref_kv.keys.shape[1]
    key = (batch, seq + refs, width, x.dtype, x.device)
    if buffers.get("key") != key:
        buffers["key"] = key
        buffers["k"] = torch.empty(batch, seq + refs, width, dtype=x.dtype, device=x.device)
        buffers["v"] = torch.empty(batch, seq + refs, width, dtype=x.dtype, device=x.device)
    kbuf, vbuf = buffers["k"], buffers["v"]
    queries = apply_rope(self_attn.norm_q(self_attn.q(x)).view(batch, seq, heads, -1), rotations).view(batch, seq, -1)
    rope_into(self_attn.norm_k(self_attn.k(x)).view(batch, seq, heads, -1), rotations,
              kbuf[:, :seq].view(batch, seq, heads, -1))
    vbuf[:, :seq].copy_(self_attn.v(x))
    kbuf[:, seq:].copy_(ref_kv.keys.expand(batch, -1, -1))
    vbuf[:, seq:].copy_(ref_kv.values.expand(batch, -1, -1))
    return self_attn.o(sdpa_attention(queries, kbuf, vbuf, heads))


def attention_for(kv, setup, buffers: dict):
    def attention(i, sa, h, freqs):
        return prealloc_self_attention(sa, h, freqs, sa.heads, kv[i], buffers)
    return attention


def check_exact(setup, kv) -> None:
    """Assert the prototype's block output is bit-equal to the core's for every block, on a random input."""
    model = setup.model
    gen = torch.Generator(device="cpu").manual_seed(3)
    seq = setup.video_rot.shape[1]
    x = torch.randn(2, seq, model.dim, generator=gen).to(device=setup.device, dtype=setup.dtype)
    buffers: dict = {}
    for i, block in enumerate(model.blocks):
        sa = block.self_attn
        core = video_self_attention(sa, x, setup.video_rot, sa.heads, kv[i])
        proto = prealloc_self_attention(sa, x, setup.video_rot, sa.heads, kv[i], buffers)
        if not torch.equal(core, proto):
            raise AssertionError(f"prealloc prototype differs from the core in block {i}: max |diff| "
                                 f"{(core.float() - proto.float()).abs().max().item():.3g}")
