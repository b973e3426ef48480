"""Regions: each reference bound to the part of the video where its person is (this pack's own, not in the paper).

A video token inside reference j's region attends to [video; ref_j] only; a token in several regions to the video
and each of those references (the union); a token outside every region follows ``outside``: "all" (every
reference, the official several-references behaviour) or "none" (no reference: the base model there).

Pixel masks become token masks by :func:`token_regions`: latent frame 0 is pixel frame 0 and latent frame t >= 1 is
pixel frames 4t-3 .. 4t (Wan's VAE), one latent pixel is 8 x 8 pixels, one token 2 x 2 latent pixels (Wan's patch),
so a token covers 16 x 16 pixels of one frame (t = 0) or four frames; it is in the region when at least half of the
pixels it covers are (tokens the patch padding adds past the frame count only the pixels that exist).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .attention import AttentionFn, Strength, reference_logit_bias, sdpa_attention, strengths_of

OUTSIDE = ("all", "none")
VAE_TIME, VAE_SPACE = 4, 8  # Wan2.1's VAE: 4 frames and 8 x 8 pixels per latent pixel (after its first frame)


def token_regions(masks: torch.Tensor, token_grid: Sequence[int], patch_size: Sequence[int] = (1, 2, 2),
                  threshold: float = 0.5) -> torch.Tensor:
    """Pixel masks [N, T, H, W] (or [N, 1, H, W] for every frame), values in 0..1, of a video whose token grid is
    ``token_grid`` (F, H', W') -> bool [N, F*H'*W'], row-major over (frames, rows, cols) like the video tokens."""
    if masks.ndim != 4:
        raise ValueError(f"region masks must be [N, frames, height, width], got {tuple(masks.shape)}")
    frames, rows, cols = token_grid
    if patch_size[0] != 1:
        raise ValueError("only Wan's patch of one latent frame is supported")
    masks = masks.float()
    if masks.shape[1] == 1:
        latent_frames = masks.expand(-1, frames, -1, -1)
    else:
        if masks.shape[1] != VAE_TIME * (frames - 1) + 1:
            raise ValueError(f"region masks have {masks.shape[1]} frames; a video of {frames} latent frames has "
                             f"{VAE_TIME * (frames - 1) + 1} (4n+1), or give one mask for every frame")
        later = masks[:, 1:].unflatten(1, (frames - 1, VAE_TIME)).mean(2)
        latent_frames = torch.cat([masks[:, :1], later], dim=1)  # [N, F, H, W]: each latent frame's coverage
    size = VAE_SPACE * patch_size[1], VAE_SPACE * patch_size[2]
    height, width = latent_frames.shape[-2:]
    if -(-height // size[0]) != rows or -(-width // size[1]) != cols:
        raise ValueError(f"region masks of {height} x {width} pixels do not fit a video of {rows} x {cols} tokens "
                         f"({rows * size[0]} x {cols * size[1]} pixels, up to the patch padding)")
    covered = F.avg_pool2d(latent_frames, size, ceil_mode=True, divisor_override=1)  # summed over each token
    counted = F.avg_pool2d(torch.ones_like(latent_frames[:1]), size, ceil_mode=True, divisor_override=1)
    return (covered / counted >= threshold).flatten(1)


def regional_attention(queries: torch.Tensor, video_keys: torch.Tensor, video_values: torch.Tensor,
                       ref_keys: torch.Tensor, ref_values: torch.Tensor, regions: torch.Tensor, heads: int,
                       strength: Strength = 1.0, outside: str = "all",
                       attention: AttentionFn = sdpa_attention) -> torch.Tensor:
    """Video queries [B, S, width] over the video keys and, per token, the references its regions name.

    ``ref_keys``/``ref_values`` [1 or B, N*R, width] hold the N references in order; ``regions`` bool [N, S] says
    which tokens are in which reference's region. The tokens are grouped by the set of references they attend to,
    and each group's queries attend to [video; those references] with the model's own attention function: no
    [S, S + N*R] mask is built.
    """
    if outside not in OUTSIDE:
        raise ValueError(f"outside must be one of {OUTSIDE}, got {outside!r}")
    count, seq = regions.shape
    batch, ref_len = queries.shape[0], ref_keys.shape[1]
    if regions.shape[1] != queries.shape[1] or ref_len % count:
        raise ValueError(f"regions {tuple(regions.shape)} do not fit {queries.shape[1]} video tokens and "
                         f"{ref_len} reference keys")
    per = ref_len // count
    strengths = strengths_of(strength)
    strengths = strengths * count if len(strengths) == 1 else strengths
    ref_keys, ref_values = ref_keys.expand(batch, -1, -1), ref_values.expand(batch, -1, -1)
    chosen = regions.clone()
    if outside == "all":
        chosen[:, ~regions.any(0)] = True
    codes = (chosen.long() * (2 ** torch.arange(count, device=regions.device))[:, None]).sum(0)  # [S]
    out = torch.empty_like(queries)
    for code in codes.unique().tolist():
        rows = (codes == code).nonzero().squeeze(1)
        picked = [j for j in range(count) if code >> j & 1]
        keys, values = video_keys, video_values
        if picked:
            keys = torch.cat([video_keys] + [ref_keys[:, j * per:(j + 1) * per] for j in picked], dim=1)
            values = torch.cat([video_values] + [ref_values[:, j * per:(j + 1) * per] for j in picked], dim=1)
        mask = _bias(seq, per, [strengths[j] for j in picked], queries) if picked else None
        out[:, rows] = attention(queries[:, rows], keys, values, heads, mask=mask)
    return out


def _bias(video_len: int, per: int, strengths: list, like: torch.Tensor) -> Optional[torch.Tensor]:
    if all(value == 1 for value in strengths):
        return None
    return reference_logit_bias(video_len, per * len(strengths), strengths, like.dtype, like.device)
