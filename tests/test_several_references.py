"""Several references in one video, the official zero-shot baseline (WeChatCV/Stand-In dev/multi, cc7c8c5), in the
core: each reference's own pass at its slot of the staircase, the video over [video; ref_0; ...; ref_{N-1}] in one
softmax, a strength per reference; against the naive joint sequence with an explicit mask per query."""
import pytest
import torch

from comfyui_standin.standin_core import JointKVBuffers, reference_positions
from comfyui_standin.tests.support.naive_wan import NaiveWan
from comfyui_standin.tests.support.sampling import JointModel
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


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI tier: Stand-In References through the nodes, against the joint sequence with the references in order. Every
# oracle here runs in float64 (support/joint_sequence.py: one explicit sequence [video; ref_0; ...] with an explicit
# boolean mask per query, written without the pack's attention code); the pack runs in float32.

F64 = torch.float64

def several(env, count=2, factors=None, seed=31):
    """``count`` non-square references (6 x 10 latents, like env.reference) and Stand-In References' LATENT of them."""
    gen = torch.Generator().manual_seed(seed)
    latents = [torch.randn(1, 16, 1, 6, 10, generator=gen) for _ in range(count)]
    return latents, gathered(latents, factors=factors)


def gathered(latents, regions=None, outside="all references", factors=None):
    """Stand-In References' LATENT for ``latents``, with a strength and a region (or none) per reference."""
    from comfyui_standin.nodes.references import StandInReferences
    inputs = {f"reference_{j + 1}": {"samples": latent} for j, latent in enumerate(latents)}
    inputs.update({f"strength_{j + 1}": value for j, value in enumerate(factors or [1.0] * len(latents))})
    inputs.update({f"region_{j + 1}": region for j, region in enumerate(regions or []) if region is not None})
    return StandInReferences.execute(outside_regions=outside, **inputs).args[0]


def applied(env, model, latent, strength=1.0, mode="on"):
    patched = env.apply.ApplyStandInToWanModel.execute(model, env.weights, latent, strength, 0.0, 1.0).args[0]
    return env.cache.StandInKVCache.execute(patched, mode).args[0]


def processed_all(model, latents):
    return [model.get_model_object("latent_format").process_in(latent) for latent in latents]


@pytest.mark.comfyui
@pytest.mark.parametrize("count,factors,strength", [(2, None, 1.0), (3, None, 1.0), (2, (0.5, 2.0), 0.8)])
def test_several_references_through_the_nodes_equal_the_joint_sequence(env, count, factors, strength):
    latents, references = several(env, count, factors)
    ours = env.sample(applied(env, env.base, references, strength))
    joint = JointModel(env.base, latents, env.standin_sd, [strength * f for f in (factors or [1.0] * count)], dtype=F64)
    assert_matches(ours, env.sample(joint.model), f"{count} references")
    assert_differs(ours, env.sample(applied(env, env.base, {"samples": latents[0]}, strength)), "the other people")


@pytest.mark.comfyui
def test_several_references_on_vace_equal_the_joint_sequence(env):
    gen = torch.Generator().manual_seed(9)
    vace = dict(vace_frames=[torch.randn(1, 32, 3, 8, 12, generator=gen)],
                vace_mask=[torch.rand(1, 64, 3, 8, 12, generator=gen)], vace_strength=[0.8])
    latents, references = several(env, 2)
    ours = env.sample(applied(env, env.vace, references), **vace)
    joint = JointModel(env.vace, latents, env.standin_sd, dtype=F64)
    assert_matches(ours, env.sample(joint.model, **vace))


@pytest.mark.comfyui
def test_a_second_reference_at_strength_zero_is_the_single_reference(env):
    """Reference 2 at strength 0 gets no weight: the single-reference run of reference 1 (up to the rounding of a
    longer softmax). One reference alone goes straight to Apply, the unchanged single-reference path."""
    from comfyui_standin.nodes.references import StandInReferences
    with pytest.raises(ValueError, match="at least two"):
        StandInReferences.execute(reference_1={"samples": env.reference})
    latents, references = several(env, 2, factors=(1.0, 0.0))
    single = env.sample(applied(env, env.base, {"samples": latents[0]}))
    assert_matches(env.sample(applied(env, env.base, references)), single, "the second reference at strength 0")


@pytest.mark.comfyui
@pytest.mark.parametrize("mode", ["off", "offload"])
def test_the_cache_holds_every_reference_once_per_run(env, mode, monkeypatch):
    """Built once per run for all references (cond, uncond and every step reuse it); off and offload give the same
    latent bit for bit; the cache node and the memory estimate count every reference."""
    from comfyui_standin.standin_core import ReferenceKVCache
    builds = []
    original = ReferenceKVCache.get_or_build

    def recording(cache, key, build, device=None):
        before = cache.builds
        entry = original(cache, key, build, device)
        builds.append((cache.builds > before, entry[0].keys.shape[1]))
        return entry

    monkeypatch.setattr(ReferenceKVCache, "get_or_build", recording)
    _, references = several(env, 3)
    on = env.sample(applied(env, env.base, references, mode="on"))
    assert [built for built, _ in builds] == [True, False, False] and {n for _, n in builds} == {3 * 15}
    assert torch.equal(env.sample(applied(env, env.base, references, mode=mode)), on)
    patched = applied(env, env.base, references)
    one = applied(env, env.base, {"samples": env.reference})
    assert env.memory.expected_cache_bytes(patched) == 3 * env.memory.expected_cache_bytes(one)
    each = 3 * 2 * 15 * 256 * 4  # 3 blocks x (K, V) x 15 tokens (6 x 10 latent -> 3 x 5) x width 256 x float32
    report = env.cache.StandInKVCache.execute(patched, "on").args[1]
    assert f"reference K/V {3 * each / 1024:.2f} KiB for 3 references ({each / 1024:.2f} KiB each)" in report
    settings = env.run_state.standin_settings(patched)
    shape = (2, 16, 3, 8, 12)
    assert (env.memory.standin_memory(patched, settings, shape).cache
            == 3 * env.memory.standin_memory(one, env.run_state.standin_settings(one), shape).cache)


@pytest.mark.comfyui
def test_wan22_experts_each_build_their_own_references(env):
    """Wan2.2 A14B: two experts, each with its own Stand-In file and the same two references, sampled in two
    stages: equal to the joint sequence on each expert."""
    from comfyui_standin.devtools.tiny_models import standin_state_dict_for, tiny_wan_state_dict
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    from comfyui_standin.tests.support.sampling import load_model, sample_two_stages
    latents, references = several(env, 2)
    low = load_model(tiny_wan_state_dict(seed=11))
    low_sd = standin_state_dict_for(256, 3, seed=12)
    low_weights = standin_weights_from_state_dict(low_sd, source="tiny-low")
    low_standin = env.apply.ApplyStandInToWanModel.execute(low, low_weights, references, 1.0, 0.0, 1.0).args[0]
    ours = sample_two_stages(applied(env, env.base, references), low_standin, env.noise, [[env.cond, {}]],
                             [[env.uncond, {}]])
    expected = sample_two_stages(JointModel(env.base, latents, env.standin_sd, dtype=F64).model,
                                 JointModel(low, latents, low_sd, dtype=F64).model, env.noise, [[env.cond, {}]],
                                 [[env.uncond, {}]])
    assert_matches(ours, expected)


@pytest.mark.comfyui
def test_references_of_different_sizes_are_refused_by_apply(env):
    from comfyui_standin.nodes.references import StandInReferences
    references = StandInReferences.execute(reference_1={"samples": torch.randn(1, 16, 1, 6, 10)},
                                           reference_2={"samples": torch.randn(1, 16, 1, 8, 8)}).args[0]
    with pytest.raises(ValueError, match="different sizes"):
        applied(env, env.base, references)


@pytest.mark.comfyui
@pytest.mark.parametrize("outside", ["all references", "none"])
def test_each_face_in_its_region_through_the_nodes_equals_the_joint_sequence(env, outside):
    """Person 1 on the left third of the frame, person 2 on the right third (one mask for every frame of the 64 x
    96 pixel video), the middle outside both: equal to the joint sequence whose video queries see reference j only
    in region j, and not the run without regions."""
    from comfyui_standin.nodes.references import StandInReferences
    from comfyui_standin.standin_core.regions import token_regions
    latents, _ = several(env, 2)
    left, right = torch.zeros(1, 64, 96), torch.zeros(1, 64, 96)
    left[..., :32], right[..., 64:] = 1, 1
    references = StandInReferences.execute(reference_1={"samples": latents[0]}, reference_2={"samples": latents[1]},
                                           region_1=left, region_2=right, outside_regions=outside).args[0]
    ours = env.sample(applied(env, env.base, references))
    regions = token_regions(torch.stack([left, right]), (3, 4, 6))
    joint = JointModel(env.base, latents, env.standin_sd, regions=regions,
                       outside="all" if outside == "all references" else "none", dtype=F64)
    assert_matches(ours, env.sample(joint.model), f"regions, outside {outside}")
    assert_differs(ours, env.sample(applied(env, env.base, several(env, 2)[1])), "the regions")


@pytest.mark.comfyui
def test_regions_that_do_not_fit_the_video_are_refused(env):
    from comfyui_standin.nodes.references import StandInReferences
    latents, _ = several(env, 2)
    references = StandInReferences.execute(reference_1={"samples": latents[0]}, reference_2={"samples": latents[1]},
                                           region_1=torch.ones(1, 32, 32)).args[0]
    with pytest.raises(ValueError, match="regions do not fit this video"):
        env.sample(applied(env, env.base, references))


@pytest.mark.comfyui
def test_the_static_region_node_by_hand():
    """Presets and a box as masks of the video's size, counted by hand; a box with its edges crossed is refused."""
    from comfyui_standin.nodes.references import StandInRegion
    box = dict(box_left=0.25, box_top=0.5, box_right=0.75, box_bottom=1.0)
    left = StandInRegion.execute(96, 64, "left third", **box).args[0]
    assert left.shape == (1, 64, 96) and left[0, :, :32].eq(1).all() and left[0, :, 32:].eq(0).all()
    bottom = StandInRegion.execute(96, 64, "bottom half", **box).args[0]
    assert bottom[0, 32:].eq(1).all() and bottom[0, :32].eq(0).all()
    drawn = StandInRegion.execute(96, 64, "box", **box).args[0]
    expected = torch.zeros(1, 64, 96)
    expected[:, 32:64, 24:72] = 1
    assert torch.equal(drawn, expected)
    with pytest.raises(ValueError, match="left < right"):
        StandInRegion.execute(96, 64, "box", box_left=0.6, box_top=0.0, box_right=0.4, box_bottom=1.0)


# ---------------------------------------------------------------------------------------------------------------------
# The judging list of several people, each through the nodes against the float64 joint sequence

@pytest.mark.comfyui
def test_regions_that_cover_the_whole_frame_are_the_official_mode(env):
    """Every region 'everything' (one person's as one mask for every frame, the other's one per pixel frame): each
    video token is in both regions, sees both faces (the union), and the run is the official all-references one."""
    latents, _ = several(env, 2)
    ours = env.sample(applied(env, env.base, gathered(latents, [torch.ones(1, 64, 96), torch.ones(9, 64, 96)])))
    official = env.sample(JointModel(env.base, latents, env.standin_sd, dtype=F64).model)
    assert_matches(ours, official, "regions covering everything")
    assert_matches(ours, env.sample(applied(env, env.base, gathered(latents))), "the pack's official mode")
    assert_differs(ours, env.sample(applied(env, env.base, {"samples": latents[0]})), "the second face")


@pytest.mark.comfyui
def test_one_reference_is_todays_standin(env):
    """One reference in the several-references LATENT (as Stand-In References carries them, with and without a
    region covering the frame) is today's single-reference Stand-In: bit for bit without a region, and both equal
    the float64 joint sequence [video; image]."""
    from comfyui_standin.nodes.install import FACTORS_KEY, OUTSIDE_KEY, REFERENCES_KEY, REGIONS_KEY
    today = env.sample(applied(env, env.base, env.ref))
    listed = {"samples": env.reference, REFERENCES_KEY: [env.reference], FACTORS_KEY: [1.0], REGIONS_KEY: None,
              OUTSIDE_KEY: "all"}
    assert torch.equal(env.sample(applied(env, env.base, listed)), today)
    assert_matches(today, env.sample(env.joint(env.base, dtype=F64).model), "today's Stand-In")
    regioned = dict(listed, **{REGIONS_KEY: [torch.ones(1, 64, 96)]})
    assert_matches(env.sample(applied(env, env.base, regioned)), today, "one reference with a whole-frame region")
    assert_differs(today, env.sample(env.base), "Stand-In")


@pytest.fixture(scope="module")
def one_block(comfy):
    """A one-block tiny Wan and its Stand-In weights: after one block (and one Euler step, which acts per token), a
    video token's output depends on the reference keys ITS query saw, so each token can be checked on its own."""
    from comfyui_standin.devtools.tiny_models import standin_state_dict_for, tiny_wan_state_dict
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    from comfyui_standin.tests.support.sampling import load_model
    sd = standin_state_dict_for(256, 1, seed=6)
    return load_model(tiny_wan_state_dict(layers=1, seed=5)), standin_weights_from_state_dict(sd, source="one"), sd


def moving_regions():
    """Two regions of the 64 x 96 pixel, 9-frame video as pixel masks, and by hand which tokens (3 latent frames x 4
    rows x 6 cols, 16 x 16 pixels each) they hold: person 1 moves right (token cols 0-1 in latent frame 0, which is
    pixel frame 0; cols 1-2 in latent frame 1, pixel frames 1-4; cols 2-3 in latent frame 2, pixel frames 5-8),
    person 2 stays on cols 3-4, so they overlap at latent frame 2, col 3, and col 5 (and more) is nobody's."""
    person_cols = ({0: (0, 1), 1: (1, 2), 2: (2, 3)}, {0: (3, 4), 1: (3, 4), 2: (3, 4)})
    frames_of = {0: [0], 1: [1, 2, 3, 4], 2: [5, 6, 7, 8]}
    masks, tokens = torch.zeros(2, 9, 64, 96), torch.zeros(2, 3, 4, 6, dtype=torch.bool)
    for person, cols in enumerate(person_cols):
        for latent_frame, (first, last) in cols.items():
            masks[person, frames_of[latent_frame], :, 16 * first:16 * (last + 1)] = 1
            tokens[person, latent_frame, :, first:last + 1] = True
    masks[0, 1:4, :, 80:88] = 1  # half of token col 5 in 3 of latent frame 1's 4 pixel frames: 0.375 < 0.5, outside
    return masks, tokens


def on_latent(tokens):
    """Token mask [F, H', W'] -> latent mask [F, 2H', 2W'] (each token is a 2 x 2 patch of latent pixels)."""
    return tokens.repeat_interleave(2, -2).repeat_interleave(2, -1)


@pytest.mark.comfyui
@pytest.mark.parametrize("outside", ["all references", "none"])
def test_each_regions_tokens_are_the_joint_sequence_restricted_to_its_reference(env, one_block, outside):
    """One block, one step: inside person j's region only, the output is the joint sequence whose video queries see
    reference j only; inside both (the overlap), the official sequence; outside both, the official sequence or the
    base model (no Stand-In at all); every latent pixel falls in one of these four."""
    model, weights, sd = one_block
    latents, _ = several(env, 2)
    masks, tokens = moving_regions()
    references = gathered(latents, [masks[0], masks[1]], outside)
    patched = env.apply.ApplyStandInToWanModel.execute(model, weights, references, 1.0, 0.0, 1.0).args[0]
    ours = env.sample(env.cache.StandInKVCache.execute(patched, "on").args[0], steps=1)

    def oracle(*seen):  # every video query sees the references marked in ``seen``: an explicit mask, no regions
        regions = torch.tensor(seen)[:, None].expand(-1, tokens[0].numel())
        return env.sample(JointModel(model, latents, sd, regions=regions, outside="none", dtype=F64).model, steps=1)

    official, base = oracle(True, True), env.sample(model, steps=1)
    inside = (on_latent(tokens[0] & ~tokens[1]), oracle(True, False), official, "person 1 alone"), \
        (on_latent(tokens[1] & ~tokens[0]), oracle(False, True), official, "person 2 alone"), \
        (on_latent(tokens[0] & tokens[1]), official, oracle(True, False), "the overlap")
    neither = on_latent(~tokens[0] & ~tokens[1])
    beyond = (neither, official, base, "outside, all") if outside == "all references" else \
        (neither, base, official, "outside, none")
    for where, expected, other, what in (*inside, beyond):
        assert where.any()
        assert_matches(ours[:, :, where], expected[:, :, where], what)
        assert_differs(ours[:, :, where], other[:, :, where], what)


@pytest.mark.comfyui
def test_permuting_the_references_permutes_only_their_slots(env):
    """[B, A] with regions [R_B, R_A] is the float64 joint sequence of A and B, each with its own region, where A
    sits at staircase slot 1 and B at slot 0: the order moves the faces' positions and nothing else."""
    latents, _ = several(env, 2)
    left, right = torch.zeros(1, 64, 96), torch.zeros(1, 64, 96)
    left[..., :48], right[..., 48:] = 1, 1
    swapped = env.sample(applied(env, env.base, gathered(latents[::-1], [right, left])))
    regions = torch.stack([torch.zeros(3, 4, 6, dtype=torch.bool), torch.zeros(3, 4, 6, dtype=torch.bool)])
    regions[0, ..., :3], regions[1, ..., 3:] = True, True
    moved = JointModel(env.base, latents, env.standin_sd, regions=regions.flatten(1), slots=(1, 0), dtype=F64)
    assert_matches(swapped, env.sample(moved.model), "[B, A] = A and B at swapped slots")
    in_order = env.sample(applied(env, env.base, gathered(latents, [left, right])))
    assert_matches(in_order, env.sample(JointModel(env.base, latents, env.standin_sd, regions=regions.flatten(1),
                                                   dtype=F64).model), "[A, B]")
    assert_differs(swapped, in_order, "the slots")
