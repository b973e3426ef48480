"""Regions (this pack's own): pixel masks to token masks by the stated rule, counted by hand, and the regional
attention against an explicit joint attention with a boolean mask per query, in float64."""
import math

import pytest
import torch

from comfyui_standin.standin_core import JointKVBuffers, restricted_attention
from comfyui_standin.standin_core.regions import regional_attention, token_regions
from comfyui_standin.tests.support.core_runs import naive_loras, random_standin_weights, two_pass
from comfyui_standin.tests.support.naive_wan import NaiveWan
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches


def test_pixel_masks_to_tokens_by_hand():
    """9 pixel frames (3 latent frames: pixel frame 0, then 1-4 and 5-8), 32 x 64 pixels (2 x 4 tokens of 16 x 16)."""
    mask = torch.zeros(1, 9, 32, 64)
    mask[0, 0, :, :32] = 1  # frame 0: the left half
    mask[0, 1:3, :16, 48:] = 1  # two of latent frame 1's four pixel frames, the top right token: half covered
    mask[0, 5, :16, 48:] = 1  # one of latent frame 2's four: a quarter
    mask[0, 5:9, 16:, :16] = 1  # latent frame 2, bottom left token, its 16 x 16 pixels ...
    mask[0, 5:9, 16:24, :16] = 0  # ... but only half of them (rows 24-31)
    mask[0, 5:9, 24, 0] = 0  # and one pixel less in each frame: under half
    tokens = token_regions(mask, (3, 2, 4)).view(3, 2, 4)
    expected = torch.zeros(3, 2, 4, dtype=torch.bool)
    expected[0, :, :2] = True
    expected[1, 0, 3] = True
    assert torch.equal(tokens[0], expected[0]) and torch.equal(tokens[1], expected[1])
    assert not tokens[2].any()
    mask[0, 5:9, 24, 0] = 1  # exactly half again: in
    assert token_regions(mask, (3, 2, 4)).view(3, 2, 4)[2, 1, 0]


def test_one_mask_for_every_frame_and_the_padded_edge():
    """One [1, 1, H, W] mask holds for every frame; a frame 40 pixels wide has 3 token columns (the last one half
    padding), and that token counts only the 8 pixel columns that exist."""
    mask = torch.zeros(1, 1, 16, 40)
    mask[..., 32:] = 1  # the last 8 columns: all of the last token's real pixels
    tokens = token_regions(mask, (2, 1, 3)).view(2, 1, 3)
    assert tokens[:, 0, 2].all() and not tokens[:, 0, :2].any()
    with pytest.raises(ValueError, match="4n\\+1"):
        token_regions(torch.zeros(1, 6, 16, 40), (2, 1, 3))
    with pytest.raises(ValueError, match="do not fit"):
        token_regions(torch.zeros(1, 1, 48, 40), (2, 1, 3))


def explicit(queries, video_keys, video_values, ref_keys, ref_values, regions, heads, strengths, outside):
    """The joint attention written out in float64: query i over [video; ref_0; ...] with a boolean mask row that
    allows every video key and reference j's keys when token i is in region j (all or none of them outside every
    region), plus log(strength_j) on reference j's keys."""
    count, seq = regions.shape
    per = ref_keys.shape[1] // count
    keys = torch.cat([video_keys, ref_keys.expand(queries.shape[0], -1, -1)], 1).double()
    values = torch.cat([video_values, ref_values.expand(queries.shape[0], -1, -1)], 1).double()
    allowed = torch.ones(seq, seq + count * per, dtype=torch.bool)
    bias = torch.zeros(seq + count * per, dtype=torch.float64)
    for i in range(seq):
        inside = regions[:, i]
        for j in range(count):
            attends = bool(inside[j]) or (not inside.any() and outside == "all")
            allowed[i, seq + j * per:seq + (j + 1) * per] = attends
    for j in range(count):
        bias[seq + j * per:seq + (j + 1) * per] = math.log(strengths[j]) if strengths[j] > 0 else -math.inf
    batch, _, width = queries.shape
    d = width // heads
    q = queries.double().view(batch, seq, heads, d).transpose(1, 2)
    k = keys.view(batch, -1, heads, d).transpose(1, 2)
    v = values.view(batch, -1, heads, d).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
    logits = logits.masked_fill(~allowed, -math.inf)
    return (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, width)


def random_case(seed, count=2, per=3, seq=12, width=16, batch=2):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, seq, width, generator=gen) for _ in range(3))
    rk, rv = (torch.randn(1, count * per, width, generator=gen) for _ in range(2))
    regions = torch.rand(count, seq, generator=gen) < 0.4
    regions[:, 0] = False  # one token outside every region
    regions[:, 1] = True  # one in every region (the union)
    return q, k, v, rk, rv, regions


@pytest.mark.parametrize("outside", ["all", "none"])
@pytest.mark.parametrize("count,strengths", [(2, (1.0, 1.0)), (2, (0.5, 2.0)), (3, (1.0, 0.0, 1.5))])
def test_regional_attention_equals_the_explicit_mask(count, strengths, outside):
    q, k, v, rk, rv, regions = random_case(3 + count, count)
    ours = regional_attention(q, k, v, rk, rv, regions, heads=2, strength=strengths, outside=outside)
    expected = explicit(q, k, v, rk, rv, regions, 2, strengths, outside)
    assert_matches(ours, expected.float(), f"{count} regions, outside {outside}")


def test_every_region_everything_is_the_official_all_references_attention():
    q, k, v, rk, rv, _ = random_case(11, 3)
    everything = torch.ones(3, q.shape[1], dtype=torch.bool)
    ours = regional_attention(q, k, v, rk, rv, everything, heads=2, strength=(0.5, 1.0, 2.0))
    assert_matches(ours, restricted_attention(q, k, v, rk, rv, heads=2, strength=(0.5, 1.0, 2.0)), "everything")
    nowhere = torch.zeros(3, q.shape[1], dtype=torch.bool)
    assert_matches(regional_attention(q, k, v, rk, rv, nowhere, heads=2), restricted_attention(q, k, v, rk, rv, 2),
                   "no region, outside all")
    assert_matches(regional_attention(q, k, v, rk, rv, nowhere, heads=2, outside="none"),
                   restricted_attention(q, k, v, None, None, 2), "no region, outside none: the base model")


def test_a_token_sees_only_its_own_reference():
    """Moving reference 1's keys changes the tokens in region 1 only (region 0's tokens never see them)."""
    q, k, v, rk, rv, _ = random_case(5, 2, seq=8)
    regions = torch.zeros(2, 8, dtype=torch.bool)
    regions[0, :4], regions[1, 4:] = True, True
    before = regional_attention(q, k, v, rk, rv, regions, heads=2)
    moved_k, moved_v = rk.clone(), rv.clone()
    moved_k[:, 3:], moved_v[:, 3:] = moved_k[:, 3:] * 2, moved_v[:, 3:] + 1
    after = regional_attention(q, k, v, moved_k, moved_v, regions, heads=2)
    assert torch.equal(before[:, :4], after[:, :4])
    assert_differs(before[:, 4:], after[:, 4:], "reference 1 in its region")


@pytest.mark.parametrize("use_buffers", [False, True], ids=["concat", "buffers"])
@pytest.mark.parametrize("outside", ["all", "none"])
def test_two_people_in_their_halves_equal_the_joint_sequence_with_regions(outside, use_buffers):
    """Two references, person 0 on the left third, person 1 on the right third (the middle outside both), through
    the core's two passes and the naive joint sequence whose video queries see reference j only in region j."""
    with torch.no_grad():
        model = NaiveWan(depth=3)
        weights, sd = random_standin_weights(model.dim, 3)
        gen = torch.Generator().manual_seed(23)
        latent = torch.randn(2, 16, 2, 8, 12, generator=gen)  # 2 x 4 x 6 tokens; 5 frames of 64 x 96 pixels
        refs = [torch.randn(1, 16, 1, 6, 6, generator=gen) for _ in range(2)]
        t, context = torch.tensor([500.0, 500.0]), torch.randn(2, 5, 24, generator=gen)
        masks = torch.zeros(2, 1, 64, 96)
        masks[0, :, :, :32], masks[1, :, :, 64:] = 1, 1
        regions = token_regions(masks, (2, 4, 6))
        assert regions.sum(1).tolist() == [16, 16]
        ours = two_pass(model, latent, t, context, refs, weights, buffers=JointKVBuffers() if use_buffers else None,
                        regions=(regions, outside))
        joint = model.joint_forward_several(latent, t, context, refs, naive_loras(sd, 3), regions=regions,
                                            outside=outside)
        assert_matches(ours, joint, f"regions, outside {outside}")
        everywhere = model.joint_forward_several(latent, t, context, refs, naive_loras(sd, 3))
        assert_differs(joint, everywhere, "the regions")
