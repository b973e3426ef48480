"""Several references in one video, the official zero-shot baseline (WeChatCV/Stand-In dev/multi, cc7c8c5), in the
core: each reference's own pass at its slot of the staircase, the video over [video; ref_0; ...; ref_{N-1}] in one
softmax, a strength per reference; against the naive joint sequence with an explicit mask per query."""
import pytest
import torch

from comfyui_standin.standin_core import JointKVBuffers, reference_positions
from comfyui_standin.tests.support.naive_wan import NaiveWan
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches
from comfyui_standin.tests.support.core_runs import naive_loras, random_standin_weights, reference_kv, two_pass


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def test_the_staircase_by_hand():
    """Reference j: time -1, rows from H_V + j*H_I, cols from W_V + j*H_I (H_I on both axes, as the official code
    moves its offset by h_ip): here a 2 x 3 reference grid beside a 30 x 52 video."""
    for index, (row, col) in enumerate([(30, 52), (32, 54), (34, 56)]):
        ids = reference_positions(2, 3, 30, 52, index=index)
        assert ids[:, 0].eq(-1).all()
        assert ids[:, 1].unique().tolist() == [row, row + 1]
        assert ids[:, 2].unique().tolist() == [col, col + 1, col + 2]
    assert torch.equal(reference_positions(2, 3, 30, 52), reference_positions(2, 3, 30, 52, index=0))


@pytest.mark.parametrize("use_buffers", [False, True], ids=["concat", "buffers"])
@pytest.mark.parametrize("count,strengths", [(2, None), (3, None), (2, (0.5, 2.0)), (3, (1.0, 0.0, 1.5))])
def test_several_references_equal_the_official_joint_sequence(count, strengths, use_buffers):
    """Non-square references (6 x 10 latents, 3 x 5 tokens), so a staircase moved by W_I on the columns would show."""
    model = NaiveWan(depth=3)
    weights, sd = random_standin_weights(model.dim, 3)
    gen = torch.Generator().manual_seed(17)
    latent = torch.randn(2, 16, 2, 8, 12, generator=gen)
    refs = [torch.randn(1, 16, 1, 6, 10, generator=gen) for _ in range(count)]
    t, context = torch.tensor([600.0, 600.0]), torch.randn(2, 5, 24, generator=gen)
    joint = model.joint_forward_several(latent, t, context, refs, naive_loras(sd, 3), strengths)
    ours = two_pass(model, latent, t, context, refs, weights, strength=strengths or 1.0,
                    buffers=JointKVBuffers() if use_buffers else None)
    assert_matches(ours, joint, f"{count} references, strengths {strengths}")
    fewer = model.joint_forward_several(latent, t, context, refs[:-1], naive_loras(sd, 3),
                                        strengths[:-1] if strengths else None)
    if not strengths or strengths[-1] > 0:
        assert_differs(joint, fewer, "the last reference")  # every reference counts
    else:
        assert_matches(ours, fewer, "a reference at strength 0")


def test_one_reference_in_a_list_is_the_single_reference_bit_for_bit():
    model = NaiveWan(depth=2)
    weights, _ = random_standin_weights(model.dim, 2)
    gen = torch.Generator().manual_seed(4)
    latent, ref = torch.randn(1, 16, 2, 8, 8, generator=gen), torch.randn(1, 16, 1, 8, 8, generator=gen)
    t, context = torch.tensor([300.0]), torch.randn(1, 4, 24, generator=gen)
    single, listed = reference_kv(model, latent.shape, ref, weights), reference_kv(model, latent.shape, [ref], weights)
    assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values) for a, b in zip(single, listed))
    assert torch.equal(two_pass(model, latent, t, context, ref, weights, kv=single, strength=0.7),
                       two_pass(model, latent, t, context, [ref], weights, kv=listed, strength=(0.7,)))


def test_swapping_two_references_swaps_their_slots():
    """The video attends to a set of keys, so the order of the references matters only through their staircase
    slots: [A, B] and [B, A] differ, and each equals the joint sequence in its own order."""
    model = NaiveWan(depth=2)
    weights, sd = random_standin_weights(model.dim, 2)
    gen = torch.Generator().manual_seed(8)
    latent = torch.randn(1, 16, 2, 8, 8, generator=gen)
    a, b = torch.randn(1, 16, 1, 8, 8, generator=gen), torch.randn(1, 16, 1, 8, 8, generator=gen)
    t, context = torch.tensor([500.0]), torch.randn(1, 4, 24, generator=gen)
    ab, ba = (two_pass(model, latent, t, context, refs, weights) for refs in ([a, b], [b, a]))
    assert_matches(ab, model.joint_forward_several(latent, t, context, [a, b], naive_loras(sd, 2)), "[A, B]")
    assert_matches(ba, model.joint_forward_several(latent, t, context, [b, a], naive_loras(sd, 2)), "[B, A]")
    assert_differs(ab, ba, "the order of the slots")


def test_references_of_different_sizes_are_refused():
    model = NaiveWan(depth=2)
    weights, _ = random_standin_weights(model.dim, 2)
    refs = [torch.randn(1, 16, 1, 8, 8), torch.randn(1, 16, 1, 6, 8)]
    with pytest.raises(ValueError, match="different token counts"):
        reference_kv(model, (1, 16, 2, 8, 8), refs, weights)
