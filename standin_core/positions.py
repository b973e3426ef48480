"""Token grids and 3D RoPE positions for the video and the reference (Stand-In's conditional position mapping).

Positions are in token units (after the patch embedding). Video tokens sit at (t, h, w) in
[0, F) x [0, H) x [0, W). The reference image's tokens all get time -1 and the spatial block
[H, H + H_I) x [W, W + W_I) just past the video grid, so they never overlap a video position.

The rotation tables use the layout of ComfyUI's Wan model (flux-style ``[1, L, 1, d/2, 2, 2]`` 2x2 rotations,
time/height/width axes concatenated), so the same table works with this module's :func:`apply_rope` and with
ComfyUI's ``apply_rope1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

WAN_PATCH_SIZE = (1, 2, 2)
ROPE_THETA = 10000.0


def token_grid(latent_thw: Sequence[int], patch_size: Sequence[int] = WAN_PATCH_SIZE) -> tuple[int, int, int]:
    """Token grid (frames, rows, cols) of a latent of size (T, H, W) after padding to the patch size.

    Wan pads a latent up to a multiple of the patch before its Conv3d patch embedding, so an odd latent side of 61
    with patch 2 gives 31 tokens.
    """
    if len(latent_thw) != 3 or len(patch_size) != 3:
        raise ValueError(f"token_grid expects (T, H, W) and a 3D patch size, got {tuple(latent_thw)} / "
                         f"{tuple(patch_size)}")
    if min(latent_thw) < 1:
        raise ValueError(f"latent size must be positive in every axis, got {tuple(latent_thw)}")
    return tuple(math.ceil(n / p) for n, p in zip(latent_thw, patch_size))  # type: ignore[return-value]


def video_positions(frames: int, height: int, width: int) -> torch.Tensor:
    """(t, h, w) ids of the video tokens, row-major over (frames, rows, cols). Returns float32 [F*H*W, 3]."""
    return _grid_ids(time=torch.arange(frames), rows=torch.arange(height), cols=torch.arange(width))


def reference_positions(ref_height: int, ref_width: int, video_height: int, video_width: int,
                        index: int = 0) -> torch.Tensor:
    """(t, h, w) ids of reference ``index``'s tokens: time -1, rows [H_V + j*H_I, H_V + (j+1)*H_I), cols
    [W_V + j*H_I, W_V + j*H_I + W_I) for j = ``index``.

    ``ref_height``/``ref_width`` are the reference's token grid (32 x 32 for a 512x512 photo), ``video_height``/
    ``video_width`` the video's token grid (30 x 52 at 480x832). Reference 0 is the single reference of the paper;
    with several, the official multi-reference code (WeChatCV/Stand-In dev/multi, cc7c8c5, pipelines/wan_video.py)
    moves each next one by H_I along the rows AND along the columns (a diagonal staircase; H_I on both axes).
    Returns float32 [H_I*W_I, 3].
    """
    if min(ref_height, ref_width, video_height, video_width) < 1 or index < 0:
        raise ValueError("grid sizes must be positive and the reference index >= 0")
    step = index * ref_height
    return _grid_ids(time=torch.tensor([-1]),
                     rows=torch.arange(video_height + step, video_height + step + ref_height),
                     cols=torch.arange(video_width + step, video_width + step + ref_width))


@dataclass(frozen=True)
class PositionMap:
    """An affine map of RoPE positions, axis by axis (t, h, w): p -> shift + scale * p.

    It is how ComfyUI's ScaleROPE (``rope_options``) places the video tokens: the video token k of an axis sits at
    shift + scale * k instead of k. The reference tokens get the same map, so they keep the official layout
    relative to the video grid (one frame before its first frame, the spatial block just past its last row and
    column) in the scaled coordinates.
    """

    scale: tuple = (1.0, 1.0, 1.0)
    shift: tuple = (0.0, 0.0, 0.0)

    @property
    def is_identity(self) -> bool:
        return tuple(self.scale) == (1.0, 1.0, 1.0) and tuple(self.shift) == (0.0, 0.0, 0.0)

    def __call__(self, positions: torch.Tensor) -> torch.Tensor:
        """``positions`` [L, 3] (t, h, w) mapped; the identity map returns them unchanged."""
        if self.is_identity:
            return positions
        scale = torch.tensor(self.scale, dtype=positions.dtype, device=positions.device)
        shift = torch.tensor(self.shift, dtype=positions.dtype, device=positions.device)
        return torch.addcmul(shift, positions, scale)


def _grid_ids(time: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    t, h, w = torch.meshgrid(time, rows, cols, indexing="ij")
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3).to(torch.float32)


def wan_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """How Wan splits a head's channels between the time, height and width axes ([44, 42, 42] for d = 128)."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    third = 2 * (head_dim // 6)
    return head_dim - 2 * third, third, third


def rope_rotations(positions: torch.Tensor, head_dim: int, theta: float = ROPE_THETA) -> torch.Tensor:
    """Rotation table for ``positions`` [L, 3]: float32 [1, L, 1, head_dim/2, 2, 2].

    Entry [..., i, :, :] is the 2x2 matrix [[cos a, -sin a], [sin a, cos a]] that rotates channel pair i, with
    a = position_axis * theta^(-2j/axis_dim) for the j-th pair of that axis. Angles are formed in float64.
    """
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be [L, 3], got {tuple(positions.shape)}")
    angles = []
    for axis, axis_dim in enumerate(wan_rope_axes(head_dim)):
        omega = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64, device=positions.device) / axis_dim)
        angles.append(positions[:, axis].to(torch.float64)[:, None] * omega[None, :])
    angle = torch.cat(angles, dim=1)  # [L, head_dim/2]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*angle.shape, 2, 2)
    return rotation.to(torch.float32)[None, :, None]


def apply_rope(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` [B, L, heads, head_dim] by ``rotations`` [1, L, 1, head_dim/2, 2, 2].

    Computed in the table's dtype (float32, one product then one in-place multiply-add: the arithmetic of ComfyUI's
    own fallback RoPE) and returned in x's dtype.
    """
    pairs = x.to(rotations.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    rotated = rotations[..., 0] * pairs[..., 0]
    rotated.addcmul_(rotations[..., 1], pairs[..., 1])
    return rotated.reshape(x.shape).type_as(x)
