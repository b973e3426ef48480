"""Stand-In's restricted self-attention for the video tokens.

    Out_V = Attention(Q_V', [K_V', K_I'], [V_V, V_I])

Video queries attend to the video keys and to the reference keys; reference queries never see video keys (that is
the reference pass, :mod:`standin_core.reference`). Tensors are [batch, tokens, heads * head_dim] as in Wan.

``strength`` s weights every reference key as if it were present s times: the reference columns of the softmax get
the logit bias log(s). s = 1 is the paper exactly (no bias), s = 0 gives the reference keys zero weight, which is
the base model (up to the rounding of a longer softmax; the nodes skip the reference entirely at 0), and the share
of attention that goes to the reference, s*R / (V + s*R), grows monotonically with s.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

AttentionFn = Callable[..., torch.Tensor]
"""attention(q, k, v, heads, mask=None) -> [B, Sq, heads*head_dim]; q/k/v are [B, S, heads*head_dim]."""
Strength = Union[float, Sequence[float]]  # one strength, or one per reference in the order of their keys


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain multi-head scaled dot-product attention; ``mask`` is an additive bias broadcast to [B, heads, Sq, Sk]."""
    batch, q_len, width = q.shape
    head_dim = width // heads

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    if mask is not None and mask.ndim == 2:
        mask = mask[None, None]
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return out.transpose(1, 2).reshape(batch, q_len, width)


def reference_logit_bias(video_len: int, ref_len: int, strength: Strength, dtype: torch.dtype,
                         device) -> torch.Tensor:
    """Additive key bias [1, video_len + ref_len]: 0 on video keys, log(strength) on reference keys (-inf at 0).
    With one strength per reference (several people), the ``ref_len`` keys are theirs in equal parts, in order."""
    strengths = strengths_of(strength)
    if ref_len % len(strengths):
        raise ValueError(f"{ref_len} reference keys cannot be split among {len(strengths)} references")
    per_reference = ref_len // len(strengths)
    bias = torch.zeros(1, video_len + ref_len, dtype=dtype, device=device)
    for index, value in enumerate(strengths):
        start = video_len + index * per_reference
        bias[:, start:start + per_reference] = math.log(value) if value > 0 else float("-inf")
    return bias


class JointKVBuffers:
    """Reusable [B, S + R, width] key and value buffers for the video pass.

    The video keys (rotated by the model's own RoPE function, the one its queries use) and values go into the first
    S rows, a block's reference K/V into the last R rows. This replaces a ``torch.cat`` per block, which reads and
    writes the whole video K/V once more: +2.27% of a base Wan 14B call in the core benchmark and +2.58% through
    ComfyUI's WanModel on an H100 (benchmarks/RESULTS.md), more than the extra attention itself. One pair serves
    every block of a call and every call of a sampling run with the same shapes; ``release()`` frees it.
    """

    def __init__(self):
        self.keys: Optional[torch.Tensor] = None
        self.values: Optional[torch.Tensor] = None

    def prepare(self, batch: int, video_len: int, ref_keys: torch.Tensor, ref_values: torch.Tensor,
                dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The two buffers with this block's reference K/V ([1 or B, R, width]) already in their last R rows."""
        if ref_keys.shape[0] not in (1, batch):
            raise ValueError(f"reference K/V batch {ref_keys.shape[0]} does not match video batch {batch}")
        shape = (batch, video_len + ref_keys.shape[1], ref_keys.shape[2])
        if (self.keys is None or self.keys.shape != shape or self.keys.dtype != dtype
                or self.keys.device != torch.device(device)):
            self.keys = torch.empty(shape, dtype=dtype, device=device)
            self.values = torch.empty(shape, dtype=dtype, device=device)
        self.keys[:, video_len:].copy_(ref_keys.expand(batch, -1, -1))
        self.values[:, video_len:].copy_(ref_values.expand(batch, -1, -1))
        return self.keys, self.values

    def release(self) -> None:
        self.keys = self.values = None


def strengths_of(strength: Strength) -> tuple:
    """``strength`` as one value per reference (a single number is one reference's, or every reference's)."""
    return (float(strength),) if isinstance(strength, (int, float)) else tuple(float(value) for value in strength)


def check_strength(strength: Strength) -> None:
    for value in strengths_of(strength):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"Stand-In strength must be a finite number >= 0, got {value}")


def attend_with_reference(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, video_len: int,
                          heads: int, strength: Strength, attention: AttentionFn) -> torch.Tensor:
    """Attention of video queries over joint [video; reference] keys/values (video first, ``video_len`` rows)."""
    if all(value == 1 for value in strengths_of(strength)):
        return attention(queries, keys, values, heads)
    bias = reference_logit_bias(video_len, keys.shape[1] - video_len, strength, queries.dtype, queries.device)
    return attention(queries, keys, values, heads, mask=bias)


def restricted_attention(video_queries: torch.Tensor, video_keys: torch.Tensor, video_values: torch.Tensor,
                         ref_keys: Optional[torch.Tensor], ref_values: Optional[torch.Tensor], heads: int,
                         strength: Strength = 1.0, attention: AttentionFn = sdpa_attention) -> torch.Tensor:
    """Video queries over [video keys; reference keys].

    ``ref_keys``/``ref_values`` are [1 or B, R, width] (one reference serves every batch row: cond, uncond, and
    every sample of the batch). ``None`` is the base model's self-attention; ``strength == 0`` runs the same
    attention with the reference keys biased to -inf, which is the base model up to rounding.
    """
    check_strength(strength)
    if ref_keys is None:
        return attention(video_queries, video_keys, video_values, heads)
    batch = video_queries.shape[0]
    if ref_keys.shape[0] not in (1, batch):
        raise ValueError(f"reference K/V batch {ref_keys.shape[0]} does not match video batch {batch}")
    ref_keys = ref_keys.to(video_keys).expand(batch, -1, -1)
    ref_values = ref_values.to(video_values).expand(batch, -1, -1)
    keys = torch.cat([video_keys, ref_keys], dim=1)
    values = torch.cat([video_values, ref_values], dim=1)
    return attend_with_reference(video_queries, keys, values, video_keys.shape[1], heads, strength, attention)
