"""RoPE positions and rotation tables against hand-computed and naive references."""

import pytest
import torch

from comfyui_standin.tests.support.naive_wan import naive_apply_rope, rope_for, rope_table
from comfyui_standin.standin_core import (apply_rope, reference_positions, rope_rotations, token_grid,
                          video_positions, wan_rope_axes)
from comfyui_standin.tests.support.tolerance import assert_matches


def test_token_grid_pads_odd_latents():
    assert token_grid((21, 60, 104)) == (21, 30, 52)  # 832x480x81
    assert token_grid((1, 64, 64)) == (1, 32, 32)  # 512x512 reference
    assert token_grid((3, 61, 7)) == (3, 31, 4)
    with pytest.raises(ValueError):
        token_grid((0, 4, 4))


def test_video_and_reference_positions_by_hand():
    video = video_positions(2, 2, 3)
    assert video.tolist()[:4] == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0]]
    assert video.tolist()[-1] == [1, 1, 2]
    ref = reference_positions(2, 3, video_height=30, video_width=52)  # non-square reference
    assert ref.tolist() == [[-1, 30, 52], [-1, 30, 53], [-1, 30, 54], [-1, 31, 52], [-1, 31, 53], [-1, 31, 54]]


def test_paper_geometry():
    """480x832x81 -> 30x52 token grid; a 512x512 reference occupies rows 30..61 and cols 52..83 at time -1."""
    _, h, w = token_grid((21, 60, 104))
    ref = reference_positions(32, 32, h, w)
    assert ref.shape == (1024, 3)
    assert ref[:, 0].unique().tolist() == [-1]
    assert (ref[:, 1].min().item(), ref[:, 1].max().item()) == (30, 61)
    assert (ref[:, 2].min().item(), ref[:, 2].max().item()) == (52, 83)


def test_wan_axes_split():
    assert wan_rope_axes(128) == (44, 42, 42)
    assert wan_rope_axes(32) == (12, 10, 10)  # time gets what 2 * (d // 6) leaves


@pytest.mark.parametrize("head_dim", [32, 128])
def test_rope_matches_complex_rotation(head_dim):
    positions = torch.cat([video_positions(3, 4, 5), reference_positions(2, 3, 4, 5)]).long()
    x = torch.randn(2, positions.shape[0], 2 * head_dim)
    expected = naive_apply_rope(x, rope_for(positions, rope_table(head_dim)), heads=2)
    ours = apply_rope(x.view(2, -1, 2, head_dim), rope_rotations(positions.float(), head_dim)).reshape(x.shape)
    assert_matches(ours, expected)


def test_rope_keeps_input_dtype():
    rot = rope_rotations(video_positions(1, 2, 2), 8)
    out = apply_rope(torch.randn(1, 4, 1, 8, dtype=torch.bfloat16), rot)
    assert out.dtype == torch.bfloat16


def test_position_map_moves_the_reference_with_the_scaled_video_grid():
    """ScaleROPE's map, hand-computed: video row k at shift + scale * k; the reference (time -1, rows/cols just past
    a 3 x 4 grid) lands one scaled step past the last scaled video row/col, and one scaled frame before frame 0."""
    from comfyui_standin.standin_core.positions import PositionMap
    mapped = PositionMap(scale=(2.0, 0.5, 1.5), shift=(1.0, -3.0, 2.0))
    reference = mapped(reference_positions(1, 2, 3, 4))
    assert reference.tolist() == [[-1.0, -1.5, 8.0], [-1.0, -1.5, 9.5]]  # t: 1 - 2; h: -3 + 0.5 * 3; w: 2 + 1.5 * 4, 5
    video = mapped(video_positions(1, 3, 4))
    assert video[-1].tolist() == [1.0, -2.0, 6.5]  # the last video token: t 0, row 2, col 3
    assert PositionMap()(video) is video
