"""Stand-In under raylight (nodes/raylight.py): the tiny Wan through raylight's REAL sequence-parallel forward
(``usp_dit_forward``, ``usp_self_attn_forward``, xfuser's Ulysses/ring attention) and its CFG split, 2 processes on
gloo, against the single-device Stand-In run of the same inputs in this process.

raylight is a snapshot unpacked beside the run (RAYLIGHT_PATH: the folder holding ``src/raylight``), with xfuser and
yunchang installed ``--no-deps`` (requirements-test-nodeps.txt); its code is never committed here. One set of
processes per sequence-parallel layout (tests/support/raylight_ranks.py): every rank loads the tiny Wan, adds what
raylight's RayWorker adds (``patch_usp``/``patch_cfg``), runs the case's Stand-In and samples 2 steps at cfg 3 (noise
[1, 16, 3, 8, 12]: 72 tokens, divisible by the split, as raylight needs: it does not mask its padding). The ring
spawn then checks the reference pass under raylight's own FSDP2 sharding. The 4-process layouts (Ulysses 2 x
ring 2, CFG split x Ulysses 2) are collected only with STANDIN_RAYLIGHT_FOUR_RANKS=1 (about 80 s instead of 45 s).
"""
import os

import pytest
import torch

from comfyui_standin.tests.support.raylight_ranks import run_raylight_world
from comfyui_standin.tests.support.sampling import load_model, sample
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches

RAYLIGHT_PATH = os.environ.get("RAYLIGHT_PATH")

pytestmark = [pytest.mark.comfyui, pytest.mark.raylight]  # deselected without RAYLIGHT_PATH (tests/conftest.py)

STEPS = 2  # 2 euler steps: the bound is that many oracle bounds (tests/support/tolerance.py)

# one spawn per sequence-parallel layout (raylight's attention keeps the groups it was made with); raylight's backend
# TORCH_FLASH (torch's flash kernel, on the CPU here) returns its LSE, which the ring needs
SPAWNS = {
    "ulysses": {"attention": "TORCH_FLASH", "layouts": {
        # CFG split: cond on rank 0, uncond on rank 1 (raylight's DIFFUSION_MODEL wrapper), no sequence split
        "cfg2": dict(ulysses=1, ring=1, cfg=2, cases={"s1": {"kind": "raylight", "strength": 1.0}}),
        "ulysses2": dict(ulysses=2, ring=1, cfg=1, cases={
            "base": {"kind": "base"},
            "s1": {"kind": "raylight", "strength": 1.0},
            "s0.5": {"kind": "raylight", "strength": 0.5},
            "s0": {"kind": "raylight", "strength": 0.0},
            "apply": {"kind": "apply", "strength": 1.0},
            "apply_unchecked": {"kind": "apply_unchecked", "strength": 1.0},
        }),
    }},
    "ring": {"attention": "TORCH_FLASH", "fsdp": True, "layouts": {
        "ring2": dict(ulysses=1, ring=2, cfg=1, cases={
            "s1": {"kind": "raylight", "strength": 1.0},
            "s0.5": {"kind": "raylight", "strength": 0.5},
            "math": {"kind": "raylight", "strength": 1.0, "backend": "TORCH_MATH"},
        }),
    }},
}


# Ulysses 2 x ring 2, and the CFG split over Ulysses 2: 4 processes each, about 25 s more per spawn on 2 cores, so
# they run only with STANDIN_RAYLIGHT_FOUR_RANKS=1 (measured 2026-12-03: 4.6 and 6.0 ulps of the output's scale)
FOUR_RANKS = os.environ.get("STANDIN_RAYLIGHT_FOUR_RANKS") == "1"
FOUR_CASES = {"s1": {"kind": "raylight", "strength": 1.0}, "s0.5": {"kind": "raylight", "strength": 0.5}}
SPAWNS_FOUR = {
    "u2r2": {"attention": "TORCH_FLASH", "layouts": {"u2r2": dict(ulysses=2, ring=2, cfg=1, cases=FOUR_CASES)}},
    "cfg2u2": {"attention": "TORCH_FLASH", "layouts": {"cfg2u2": dict(ulysses=2, ring=1, cfg=2, cases=FOUR_CASES)}},
}


@pytest.fixture(scope="module")
def inputs(comfy, tiny_wan, standin_state):
    """What every rank and the single-device runs sample: the tiny Wan, Stand-In weights, a reference [1, 16, 1, 6,
    10], noise [1, 16, 3, 8, 12] and cond/uncond [1, 7, 4096] (seed 42)."""
    gen = torch.Generator().manual_seed(42)
    return dict(wan=tiny_wan, standin=standin_state, reference=torch.randn(1, 16, 1, 6, 10, generator=gen),
                noise=torch.randn(1, 16, 3, 8, 12, generator=gen), cond=torch.randn(1, 7, 4096, generator=gen),
                uncond=torch.randn(1, 7, 4096, generator=gen))


@pytest.fixture(scope="module")
def single(inputs, standin_weights):
    """The single-device runs: {strength or "base": latent}."""
    from comfyui_standin.nodes.install import apply_standin
    positive, negative = [[inputs["cond"], {}]], [[inputs["uncond"], {}]]
    runs = {"base": sample(load_model(inputs["wan"]), inputs["noise"], positive, negative, steps=STEPS)}
    for strength in (1.0, 0.5):
        model = apply_standin(load_model(inputs["wan"]), standin_weights, {"samples": inputs["reference"]}, strength,
                              0.0, 1.0)
        runs[strength] = sample(model, inputs["noise"], positive, negative, steps=STEPS)
    return runs


@pytest.fixture(scope="module")
def ranks(inputs, tmp_path_factory):
    """Run every spawn: {"layout/case": [rank 0's result, rank 1's result]}."""
    comfyui_path = os.environ["COMFYUI_PATH"]
    results = {}
    for name, spawn in {**SPAWNS, **(SPAWNS_FOUR if FOUR_RANKS else {})}.items():
        folder = tmp_path_factory.mktemp(f"raylight_{name}")
        torch.save(inputs, folder / "inputs.pt")
        per_rank = run_raylight_world(folder, spawn, comfyui_path, RAYLIGHT_PATH)
        for rank, result in enumerate(per_rank):
            assert "__setup__" not in result, f"{name} rank {rank} could not start: {result['__setup__']['error']}"
        for case in per_rank[0]:
            results[case] = [result[case] for result in per_rank]
    return results


def latents(ranks, case: str) -> list:
    """Each rank's latent of ``case`` (each rank gets the whole latent back); fails with the rank's error."""
    out = []
    for rank, entry in enumerate(ranks[case]):
        assert "latent" in entry, f"{case} failed on rank {rank}: {entry['error']}\n{entry['trace']}"
        out.append(entry["latent"])
    return out


def assert_every_rank_is_single_device_standin(ranks, single, layout: str, strength: float) -> None:
    """Every rank's latent of Stand-In at ``strength`` under ``layout`` equals the single-device Stand-In sample and
    is far from the single-device base model."""
    name = "s1" if strength == 1.0 else "s0.5"
    for rank, latent in enumerate(latents(ranks, f"{layout}/{name}")):
        assert_matches(latent, single[strength], f"{layout} Stand-In s={strength}, rank {rank}", steps=STEPS)
        assert_differs(latent, single["base"], f"Stand-In under {layout}", steps=STEPS)


if FOUR_RANKS:  # collected only when asked for: the comfyui tier counts a skip as a fault
    @pytest.mark.parametrize("layout", ["u2r2", "cfg2u2"])
    @pytest.mark.parametrize("strength", [1.0, 0.5])
    def test_four_ranks_match_single_device(ranks, single, layout, strength):
        """Ulysses 2 x ring 2 (4 ranks), and raylight's CFG split over Ulysses 2 (4 ranks)."""
        assert_every_rank_is_single_device_standin(ranks, single, layout, strength)


def test_raylight_base_matches_single_device(ranks, single):
    """The harness itself: raylight's sequence-parallel forward without Stand-In equals the single-device model."""
    for rank, latent in enumerate(latents(ranks, "ulysses2/base")):
        assert_matches(latent, single["base"], f"raylight Ulysses 2 base, rank {rank}", steps=STEPS)


@pytest.mark.parametrize("layout", ["ulysses2", "ring2"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_standin_under_sequence_parallelism_matches_single_device(ranks, single, layout, strength):
    assert_every_rank_is_single_device_standin(ranks, single, layout, strength)


def test_strength_zero_is_raylight_base(ranks, single):
    """Strength 0: every block runs raylight's own forward (the one the ON_LOAD step found there)."""
    base = latents(ranks, "ulysses2/base")
    for rank, latent in enumerate(latents(ranks, "ulysses2/s0")):
        assert torch.equal(latent, base[rank]), f"rank {rank}: strength 0 is not raylight's base run"


def test_cfg_split_matches_single_device(ranks, single):
    """raylight's CFG split (batch 1 per rank, its wrapper outside Stand-In's) with Stand-In."""
    for rank, latent in enumerate(latents(ranks, "cfg2/s1")):
        assert_matches(latent, single[1.0], f"CFG split Stand-In, rank {rank}", steps=STEPS)
        assert_differs(latent, single["base"], "Stand-In under the CFG split", steps=STEPS)


def test_plain_apply_under_raylight_is_refused(ranks):
    """Negative control, part 1: Apply Stand-In alone (installed before raylight's inject, no ON_LOAD step): raylight
    replaces the attention, and the pack's foreign-forward check stops the run."""
    for rank, entry in enumerate(ranks["ulysses2/apply"]):
        error = entry.get("error", "")
        assert error.startswith("RuntimeError") and "did not run in block(s) [0, 1, 2]" in error, (rank, error)


def test_without_the_on_load_step_identity_is_lost(ranks, single):
    """Negative control, part 2: the same with the check switched off equals raylight's BASE model, not Stand-In:
    what the ON_LOAD step (and the check) are there for."""
    base = latents(ranks, "ulysses2/base")
    for rank, latent in enumerate(latents(ranks, "ulysses2/apply_unchecked")):
        assert_matches(latent, base[rank], f"plain Apply under raylight, rank {rank}", steps=STEPS)
        assert_differs(latent, single[1.0], "the ON_LOAD step", steps=STEPS)


def test_ring_refuses_a_backend_without_lse(ranks):
    """Ring degree 2 with raylight's TORCH_MATH backend (its LSE is zeros): the ON_LOAD step refuses it."""
    for rank, entry in enumerate(ranks["ring2/math"]):
        error = entry.get("error", "")
        assert error.startswith("ValueError") and "TORCH_MATH returns an LSE of zeros" in error, (rank, error)


def test_fsdp_reference_pass_equals_unsharded(ranks):
    """Under raylight's FSDP2 sharding (its fully_shard_bottom_up, on a CPU mesh of 2 ranks) Stand-In's raylight
    reference pass unshards each block around its direct module calls: the K/V equal the unsharded model's exactly,
    and the parameters are sharded again afterwards. The plain reference pass fails there (mixed Tensor/DTensor)."""
    for rank, result in enumerate(ranks["fsdp"]):
        assert "error" not in result, f"rank {rank}: {result.get('error')}\n{result.get('trace')}"
        assert result["units"] > 2 * 3 and result["dtensors_after"] > 0, (rank, result["units"])
        assert len(result["sharded"]) == len(result["unsharded"]) == 3
        for block, (sharded, unsharded) in enumerate(zip(result["sharded"], result["unsharded"])):
            assert torch.equal(sharded, unsharded), f"rank {rank}, block {block}: sharded K/V differ"
        assert "mixed torch.Tensor and DTensor" in result["plain"], (rank, result["plain"])


def test_node_and_single_gpu_import_nothing_of_raylight(comfy):
    """The node module imports neither raylight nor Ray nor xfuser (single GPU is unaffected), and the node has a
    tooltip on every input, in the Stand-In category."""
    import sys

    from comfyui_standin.nodes.raylight import StandInForRaylight
    schema = StandInForRaylight.define_schema()
    assert schema.display_name == "Stand-In for raylight (every GPU)" and schema.category == "Stand-In"
    assert [i.id for i in schema.inputs] == ["ray_actors", "standin", "reference_latent", "strength", "start_percent",
                                             "end_percent"]
    assert all(i.tooltip for i in schema.inputs), [i.id for i in schema.inputs if not i.tooltip]
    assert not {"ray", "raylight", "xfuser", "yunchang"} & set(sys.modules), "the test process imported one"


@pytest.mark.parametrize("degree", [2, 4])
def test_the_memory_estimate_counts_this_ranks_share_of_the_cache(comfy, wan_base, standin_weights, monkeypatch,
                                                                  degree):
    """In an actor whose Ulysses degree is U, ComfyUI's memory estimate (asked while sampling is prepared) counts the
    1/U of the reference cache the rank keeps, and without a sequence split exactly what Apply counts: the cache by
    hand is 3 blocks x (K, V) x 15 reference tokens (6 x 10 latent -> 3 x 5) x width 256 x 4 bytes."""
    import comfy.patcher_extension

    from comfyui_standin.nodes import install, raylight
    from comfyui_standin.nodes.run_state import KEY
    cache = 3 * 2 * 15 * 256 * 4
    reference, shape = {"samples": torch.randn(1, 16, 1, 6, 10)}, (2, 16, 3, 8, 12)

    def estimate(model):
        (wrapper,) = model.get_wrappers(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, KEY)
        return wrapper(lambda patched: patched.model.memory_required(shape), model)

    plain = estimate(install.apply_standin(wan_base, standin_weights, reference, 1.0, 0.0, 1.0))
    for_raylight = raylight.standin_for_raylight(wan_base, standin_weights, reference, 1.0, 0.0, 1.0)
    assert estimate(for_raylight) == plain  # no sequence split here (xfuser not initialised)
    monkeypatch.setattr(raylight, "sequence_parallel_layout",
                        lambda: raylight.SequenceParallelLayout(None, None, 0, degree, 1))
    assert plain - estimate(for_raylight) == cache - cache // degree
