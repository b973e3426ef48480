"""The core's two-pass Stand-In (reference pass + video pass) equals the paper's joint sequence, run naively."""
import pytest
import torch

from comfyui_standin.tests.support.core_runs import naive_loras, random_standin_weights, reference_kv, two_pass
from comfyui_standin.tests.support.naive_wan import NaiveWan
from comfyui_standin.standin_core import (CacheKey, JointKVBuffers, ReferenceKVCache, rope_rotations, token_grid,
                                          video_positions, video_self_attention)
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches



@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


CASES = [  # (batch, latent T, H, W), reference latent (H, W): odd token grids, non-square references
    ((2, 3, 8, 12), (8, 8)),
    ((3, 2, 14, 10), (6, 10)),
    ((2, 1, 6, 18), (10, 4)),
]


@pytest.mark.parametrize("use_buffers", [False, True], ids=["concat", "buffers"])
@pytest.mark.parametrize("latent_shape,ref_hw", CASES)
def test_two_pass_equals_joint_sequence(latent_shape, ref_hw, use_buffers):
    batch, frames, height, width = latent_shape
    model = NaiveWan(depth=3)
    weights, sd = random_standin_weights(model.dim, 3)
    gen = torch.Generator().manual_seed(7)
    latent = torch.randn(batch, 16, frames, height, width, generator=gen)
    ref_latent = torch.randn(1, 16, 1, *ref_hw, generator=gen)
    t = torch.linspace(900.0, 100.0, batch)  # every row at its own timestep
    context = torch.randn(batch, 5, 24, generator=gen)

    joint = model.joint_forward(latent, t, context, ref_latent, naive_loras(sd, 3))
    ours = two_pass(model, latent, t, context, ref_latent, weights, buffers=JointKVBuffers() if use_buffers else None)
    base = model.forward_video(latent, t, context)

    assert ours.shape == joint.shape == latent.shape
    assert_matches(ours, joint)
    # The reference really changes the output (otherwise the comparison above would prove nothing).
    assert_differs(joint, base, "the reference")


def test_reference_position_offset_matters():
    """A reference placed one token off (the known deviation of another port) is detectably different."""
    model = NaiveWan(depth=2)
    weights, sd = random_standin_weights(model.dim, 2)
    gen = torch.Generator().manual_seed(3)
    latent, ref_latent = torch.randn(1, 16, 2, 8, 8, generator=gen), torch.randn(1, 16, 1, 8, 8, generator=gen)
    t, context = torch.tensor([500.0]), torch.randn(1, 4, 24, generator=gen)
    joint = model.joint_forward(latent, t, context, ref_latent, naive_loras(sd, 2))

    kv = reference_kv(model, latent.shape, ref_latent, weights, position_shift=(0.0, 1.0, 1.0))
    off_by_one = two_pass(model, latent, t, context, ref_latent, weights, kv=kv)
    assert_differs(off_by_one, joint, "one token of position")


@pytest.mark.parametrize("use_buffers", [False, True], ids=["concat", "buffers"])
def test_strength_zero_runs_the_method_and_is_the_base_model(use_buffers):
    """s = 0 goes through the reference attention with a -inf bias on the reference keys (no shortcut in the core):
    it equals the joint sequence with that bias and the base model, while s = 1 is far from both."""
    model = NaiveWan(depth=3)
    weights, sd = random_standin_weights(model.dim, 3)
    gen = torch.Generator().manual_seed(11)
    latent, ref_latent = torch.randn(2, 16, 2, 8, 10, generator=gen), torch.randn(1, 16, 1, 8, 8, generator=gen)
    t, context = torch.tensor([700.0, 700.0]), torch.randn(2, 6, 24, generator=gen)
    base = model.forward_video(latent, t, context)
    joint_zero = model.joint_forward(latent, t, context, ref_latent, naive_loras(sd, 3),
                                     strength_mask_bias=float("-inf"))
    buffers = JointKVBuffers() if use_buffers else None
    zero = two_pass(model, latent, t, context, ref_latent, weights, strength=0.0, buffers=buffers)
    one = two_pass(model, latent, t, context, ref_latent, weights, strength=1.0, buffers=buffers)
    assert_matches(joint_zero, base, "the oracle at strength 0")  # the oracle agrees with itself
    assert_matches(zero, joint_zero, "strength 0")
    assert_differs(one, base, "strength 1")


def test_strength_is_monotone_and_matches_logit_bias_joint():
    """strength s == the joint sequence with log(s) added to the video->image logits; effect grows with s."""
    model = NaiveWan(depth=2)
    weights, sd = random_standin_weights(model.dim, 2)
    gen = torch.Generator().manual_seed(5)
    latent, ref_latent = torch.randn(1, 16, 2, 8, 8, generator=gen), torch.randn(1, 16, 1, 8, 8, generator=gen)
    t, context = torch.tensor([400.0]), torch.randn(1, 4, 24, generator=gen)
    base = model.forward_video(latent, t, context)
    kv = reference_kv(model, latent.shape, ref_latent, weights)
    distances = []
    for s in (0.0, 1e-3, 0.25, 0.5, 1.0, 1.5, 2.5):
        ours = two_pass(model, latent, t, context, ref_latent, weights, strength=s, kv=kv)
        bias = torch.log(torch.tensor(s)).item()  # -inf at 0
        joint = model.joint_forward(latent, t, context, ref_latent, naive_loras(sd, 2), strength_mask_bias=bias)
        assert_matches(ours, joint, f"strength {s}")
        distances.append((ours - base).norm().item())
        if s == 0:
            assert_matches(ours, base, "strength 0")
    assert all(a < b for a, b in zip(distances, distances[1:])), distances


def test_cached_and_uncached_sampling_are_bit_identical():
    """A few Euler-like steps, cond+uncond batched: cache on (one build) == cache off (a build per call)."""
    model = NaiveWan(depth=3)
    weights, _ = random_standin_weights(model.dim, 3)
    gen = torch.Generator().manual_seed(2)
    noise, ref_latent = torch.randn(1, 16, 2, 8, 8, generator=gen), torch.randn(1, 16, 1, 8, 8, generator=gen)
    context = torch.randn(2, 5, 24, generator=gen)
    key = CacheKey(video_grid=(4, 4), device="cpu", dtype="float32")

    def sample(cache):
        x = noise.clone()
        sigmas = torch.linspace(1.0, 0.0, 5)
        for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
            kv = cache.get_or_build(key, lambda: reference_kv(model, x.shape, ref_latent, weights))
            out = two_pass(model, x.expand(2, -1, -1, -1, -1), torch.full((2,), s0.item() * 1000), context,
                           ref_latent, weights, kv=kv)
            cond, uncond = out.chunk(2)
            x = x + (s1 - s0) * (uncond + 3.0 * (cond - uncond))
        return x

    cached, uncached = ReferenceKVCache("on"), ReferenceKVCache("off")
    a, b = sample(cached), sample(uncached)
    assert torch.equal(a, b)
    assert (cached.builds, cached.hits) == (1, 3)
    assert (uncached.builds, uncached.hits) == (4, 0)


def test_buffered_video_pass_is_bit_identical_to_concatenation():
    """The reusable K/V buffers change nothing: same bits as torch.cat, across blocks, batch sizes and strengths."""
    model = NaiveWan(depth=3)
    weights, _ = random_standin_weights(model.dim, 3)
    gen = torch.Generator().manual_seed(4)
    ref_latent = torch.randn(1, 16, 1, 6, 10, generator=gen)
    buffers = JointKVBuffers()
    for batch, frames, strength in ((2, 2, 1.0), (1, 3, 1.0), (2, 2, 0.4), (3, 1, 2.0)):
        latent = torch.randn(batch, 16, frames, 8, 8, generator=gen)
        t, context = torch.full((batch,), 600.0), torch.randn(batch, 5, 24, generator=gen)
        kv = reference_kv(model, latent.shape, ref_latent, weights)
        concat = two_pass(model, latent, t, context, ref_latent, weights, strength, kv=kv)
        buffered = two_pass(model, latent, t, context, ref_latent, weights, strength, kv=kv, buffers=buffers)
        assert torch.equal(concat, buffered)
        assert buffers.keys.shape == (batch, frames * 16 + 15, model.dim)
    buffers.release()
    assert buffers.keys is None


@pytest.mark.parametrize("use_buffers", [False, True], ids=["concat", "buffers"])
def test_after_attention_gets_the_video_q_k_and_the_joint_attention_output(use_buffers):
    """``after_attention(out, queries, keys)``: called once, before the output projection, with the joint attention
    output and the video tokens' own rotated queries and keys (computed here independently: the block's q/k, its
    norms, the naive complex RoPE). What it returns is what ``o`` projects."""
    from comfyui_standin.tests.support.naive_wan import naive_apply_rope, rope_for, rope_table
    model = NaiveWan(depth=1)
    weights, _ = random_standin_weights(model.dim, 1)
    gen = torch.Generator().manual_seed(17)
    latent_shape, ref_latent = (2, 16, 2, 8, 8), torch.randn(1, 16, 1, 8, 8, generator=gen)
    kv = reference_kv(model, latent_shape, ref_latent, weights)[0]
    positions = video_positions(*token_grid(latent_shape[2:]))
    heads, head_dim = model.heads, model.dim // model.heads
    sa = model.blocks[0].self_attn
    h = torch.randn(2, positions.shape[0], model.dim, generator=gen)
    seen = []

    def record(out, queries, keys):
        seen.append((out.clone(), queries.clone(), keys.clone()))
        return torch.zeros_like(out)

    buffers = JointKVBuffers() if use_buffers else None
    plain = video_self_attention(sa, h, rope_rotations(positions, head_dim), heads, kv, buffers=buffers)
    zeroed = video_self_attention(sa, h, rope_rotations(positions, head_dim), heads, kv, buffers=buffers,
                                  after_attention=record)
    (out, queries, keys), = seen
    table = rope_for(positions.long(), rope_table(head_dim))
    assert_matches(queries, naive_apply_rope(sa.norm_q(sa.q(h)), table, heads), "the video queries")
    assert_matches(keys, naive_apply_rope(sa.norm_k(sa.k(h)), table, heads), "the video keys")
    assert_matches(sa.o(out), plain, "o of the attention output the hook got")
    assert torch.equal(zeroed, sa.o(torch.zeros_like(out)))
