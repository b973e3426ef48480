"""Stand-In through the pack's nodes on a tiny REAL ComfyUI WanModel / VaceWanModel (CPU, float32).

Compared against the paper's joint sequence built from the same model's modules (tests/support/joint_sequence.py).
Runs only when COMFYUI_PATH points to a ComfyUI tree.
"""
import pytest
import torch

from comfyui_standin.devtools.tiny_models import standin_state_dict_for, tiny_wan_state_dict
from comfyui_standin.tests.support.joint_sequence import joint_forward
from comfyui_standin.tests.support.sampling import (JointModel, forward, load_model, processed, sample,
                                                     sample_two_stages, standin, with_style_lora)
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches

pytestmark = pytest.mark.comfyui


def test_plain_forward_equals_joint_sequence(env):
    patched = env.standin()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 3, 8, 12, generator=gen)
    context = torch.randn(2, 7, 4096, generator=gen)
    ours, t = forward(patched, x, torch.tensor([0.8, 0.3]), context)
    expected = joint_forward(patched.model.diffusion_model, x, t, context, processed(patched, env.reference),
                             env.standin_sd)
    base, _ = forward(env.base, x, torch.tensor([0.8, 0.3]), context)
    assert_matches(ours, expected)
    assert_differs(ours, base)


def test_ksampler_run_equals_joint_sequence(env):
    ours = env.sample(env.standin())
    joint = env.joint(env.base)
    expected = env.sample(joint.model)
    assert joint.calls == 3  # cond and uncond batched in one call per step
    assert_matches(ours, expected)
    assert_differs(ours, env.sample(env.base))


def test_vace_model_with_vace_conditioning_equals_joint_sequence(env):
    gen = torch.Generator().manual_seed(9)
    vace = dict(vace_frames=[torch.randn(1, 32, 3, 8, 12, generator=gen)],
                vace_mask=[torch.rand(1, 64, 3, 8, 12, generator=gen)], vace_strength=[0.8])
    ours = env.sample(env.standin(env.vace), **vace)
    joint = env.joint(env.vace)
    expected = env.sample(joint.model, **vace)
    assert joint.calls == 3
    # relative to the output's size: the VACE hints make it larger (|x| up to ~7 here), and float32 rounding with it
    # (1.05e-5 absolute measured on a CPU with other matmul kernels)
    assert_matches(ours, expected)
    assert_differs(ours, env.sample(env.vace, **vace))


@pytest.mark.parametrize("weight_dtype", [torch.float8_e4m3fn, torch.bfloat16])
def test_low_precision_weights_equal_joint_sequence(env, tiny_wan, weight_dtype):
    """fp8/bf16 stored weights (computed in fp32 through comfy.ops casting): still exactly the joint formulation."""
    low = load_model(tiny_wan, dtype=weight_dtype)
    ours = env.sample(env.standin(low))
    joint = env.joint(low)
    assert_matches(ours, env.sample(joint.model))
    assert torch.isfinite(ours).all()


def test_cache_on_equals_cache_off_bitwise(env):
    patched = env.standin()
    on = env.cache.StandInKVCache.execute(patched, "on").args[0]
    off = env.cache.StandInKVCache.execute(patched, "off").args[0]
    offload = env.cache.StandInKVCache.execute(patched, "offload").args[0]
    result_on = env.sample(on, steps=4)
    assert torch.equal(result_on, env.sample(off, steps=4))
    assert torch.equal(result_on, env.sample(offload, steps=4))


def test_cache_builds_once_per_run_and_is_freed(env, monkeypatch):
    builds = []
    original = env.model_call.ReferencePass.reference_pass
    runs = []

    def counting(self, dm, x, options, run):
        builds.append(run)
        runs.append(run)
        return original(self, dm, x, options, run)

    monkeypatch.setattr(env.model_call.ReferencePass, "reference_pass", counting)
    env.sample(env.standin(), steps=4)
    assert len(builds) == 1
    assert runs[0].cache.nbytes == 0 and not runs[0].cache.entries  # freed at the end of the run
    env.sample(env.cache.StandInKVCache.execute(env.standin(), "off").args[0], steps=4)
    assert len(builds) == 1 + 4
    env.sample(env.standin(), steps=2, cfg=3.0)
    assert len(builds) == 6  # a new run builds again


@pytest.mark.parametrize("strength", [0.3, 2.0])
def test_strength_equals_joint_sequence_with_the_logit_bias(env, strength):
    """strength s through ComfyUI's attention (a mask) == the joint sequence with log(s) on the image keys."""
    import math
    patched = env.standin(strength=strength)
    gen = torch.Generator().manual_seed(5)
    x, context = torch.randn(2, 16, 3, 8, 12, generator=gen), torch.randn(2, 7, 4096, generator=gen)
    ours, t = forward(patched, x, torch.tensor([0.7, 0.4]), context)
    reference = processed(patched, env.reference)
    dm = patched.model.diffusion_model
    expected = joint_forward(dm, x, t, context, reference, env.standin_sd, video_to_image_bias=math.log(strength))
    paper = joint_forward(dm, x, t, context, reference, env.standin_sd)
    assert_matches(ours, expected)
    assert_differs(ours, paper)


def test_strength_zero_skips_the_reference_and_range_outside_equal_base(env, monkeypatch):
    """At strength 0 (and outside start..end) the node runs no reference pass at all: exactly the base model.
    (The method itself at strength 0, a -inf bias, is checked against the oracle in the core tier.)"""
    builds = []
    original = env.model_call.ReferencePass.reference_pass
    monkeypatch.setattr(env.model_call.ReferencePass, "reference_pass",
                        lambda self, *a: builds.append(1) or original(self, *a))
    base = env.sample(env.base)
    assert torch.equal(env.sample(env.standin(strength=0.0)), base)
    assert torch.equal(env.sample(env.standin(start=1.0, end=1.0)), base)
    assert builds == []



def test_original_model_untouched(env):
    before = env.sample(env.base)
    patched = env.standin()
    env.sample(patched)
    assert torch.equal(env.sample(env.base), before)
    dm = env.base.model.diffusion_model
    patch = env.model_call.VideoSelfAttention
    assert all(not isinstance(b.self_attn.__dict__.get("forward"), patch) for b in dm.blocks)
    assert not env.base.get_wrappers("diffusion_model", "standin")


def test_applying_twice_replaces(env):
    """The second ApplyStandIn replaces the first: re-applied at strength 0 over strength 1 it is the base model
    (a stacked first application would still attend to the reference), with one Stand-In wrapper of each kind."""
    again = env.apply.ApplyStandInToWanModel.execute(env.standin(), env.weights, env.ref, 0.0, 0.0, 1.0).args[0]
    assert torch.equal(env.sample(again), env.sample(env.base))
    for kind in ("diffusion_model", "outer_sample", "prepare_sampling"):
        assert len(again.get_wrappers(kind, "standin")) == 1, kind
    patches = [p for p in again.object_patches.values() if isinstance(p, env.model_call.VideoSelfAttention)]
    assert len(patches) == 3


def style_lora(env) -> dict:
    """A small style LoRA (lora_A/lora_B) on q, v, a cross-attention key and the FFN of every block."""
    gen = torch.Generator().manual_seed(5)
    lora = {}
    for i in range(3):
        for proj in ("self_attn.q", "self_attn.v", "cross_attn.k", "ffn.0"):
            out_f, in_f = env.base.model.diffusion_model.state_dict()[f"blocks.{i}.{proj}.weight"].shape
            lora[f"diffusion_model.blocks.{i}.{proj}.lora_A.weight"] = torch.randn(4, in_f, generator=gen) * 0.05
            lora[f"diffusion_model.blocks.{i}.{proj}.lora_B.weight"] = torch.randn(out_f, 4, generator=gen) * 0.05
    return lora


def test_style_lora_before_or_after_and_joint(env):
    lora = style_lora(env)
    with_lora = with_style_lora(env.base, lora)
    after = with_style_lora(env.standin(), lora)
    before = env.standin(with_lora)
    result_after, result_before = env.sample(after), env.sample(before)
    assert torch.equal(result_after, result_before)
    joint = env.joint(with_lora)
    assert_matches(result_before, env.sample(joint.model))
    assert_differs(result_before, env.sample(env.standin()))


def test_low_vram_partial_loading_is_exact(env, monkeypatch):
    """ComfyUI's low-VRAM path (--lowvram, or too little free VRAM): the weights that do not fit stay on the offload
    device and are cast, and LoRA-patched, layer by layer at call time. Forced here on the CPU by giving the loader a
    64 KiB budget. Stand-In's reference pass and video attention then run through those cast layers: the run equals
    the joint sequence on the same partially loaded model, and the fully loaded run, with and without a style LoRA."""
    import comfy.model_management
    comfy.model_management.unload_all_models()
    full = {name: env.sample(env.standin(model)) for name, model in
            (("plain", env.base), ("lora", with_style_lora(env.base, style_lora(env))))}
    comfy.model_management.unload_all_models()
    original = comfy.model_management.LoadedModel.model_load
    cast_layers = []

    def partial_load(self, lowvram_model_memory=0, force_patch_weights=False):
        loaded = original(self, 64 * 1024, force_patch_weights=force_patch_weights)
        cast_layers.append(sum(bool(getattr(m, "comfy_cast_weights", False)) for m in loaded.modules()))
        return loaded

    monkeypatch.setattr(comfy.model_management.LoadedModel, "model_load", partial_load)
    with_lora = with_style_lora(env.base, style_lora(env))
    for name, model in (("plain", env.base), ("lora", with_lora)):
        ours = env.sample(env.standin(model))
        assert_matches(ours, env.sample(env.joint(model).model))
        assert_matches(ours, full[name])
    assert cast_layers and min(cast_layers) > 20, cast_layers  # most layers really went through the low-VRAM cast
    comfy.model_management.unload_all_models()


def speed_lora(env, layout, rank=64, seed=21):
    """A lightx2v-style distill LoRA: every linear layer of every block at rank 64 (``diffusion_model.`` prefix,
    ``lora_down/lora_up`` + ``alpha`` or ``lora_A/lora_B``), plus bias deltas (``diff_b``) on the attention outputs.
    Returns the LoRA and the base state dict with it merged by hand: W + (alpha / rank) * up @ down, b + diff_b."""
    gen = torch.Generator().manual_seed(seed)
    base = {k: v.clone() for k, v in env.base.model.diffusion_model.state_dict().items()}
    lora, merged = {}, dict(base)
    alpha = 32.0
    for i in range(3):
        for proj in ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                     "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"):
            key = f"blocks.{i}.{proj}"
            out_f, in_f = base[f"{key}.weight"].shape
            down = torch.randn(rank, in_f, generator=gen) * 0.02
            up = torch.randn(out_f, rank, generator=gen) * 0.02
            if layout == "down_up":
                lora[f"diffusion_model.{key}.lora_down.weight"] = down
                lora[f"diffusion_model.{key}.lora_up.weight"] = up
                lora[f"diffusion_model.{key}.alpha"] = torch.tensor(alpha)
                scale = alpha / rank
            else:
                lora[f"diffusion_model.{key}.lora_A.weight"] = down
                lora[f"diffusion_model.{key}.lora_B.weight"] = up
                scale = 1.0
            merged[f"{key}.weight"] = base[f"{key}.weight"] + scale * (up @ down)
        for proj in ("self_attn.o", "cross_attn.o"):
            delta = torch.randn(base[f"blocks.{i}.{proj}.bias"].shape, generator=gen) * 0.01
            lora[f"diffusion_model.blocks.{i}.{proj}.diff_b"] = delta
            merged[f"blocks.{i}.{proj}.bias"] = base[f"blocks.{i}.{proj}.bias"] + delta
    return lora, merged


@pytest.mark.parametrize("layout", ["down_up", "A_B"])
def test_speed_lora_before_or_after_standin_at_four_steps_cfg_one(env, layout, tmp_path):
    """LoraLoaderModelOnly with a rank-64 distill LoRA, before and after Stand-In: a 4-step cfg-1 run equals Stand-In
    on the base with the LoRA merged by hand, and the joint sequence on those merged weights."""
    import folder_paths
    import nodes
    import safetensors.torch
    lora, merged = speed_lora(env, layout)
    folder = tmp_path / "loras"
    folder.mkdir()
    safetensors.torch.save_file(lora, str(folder / f"speed_{layout}.safetensors"))
    folder_paths.add_model_folder_path("loras", str(folder))
    loader = nodes.LoraLoaderModelOnly()
    before = env.standin(loader.load_lora_model_only(env.base, f"speed_{layout}.safetensors", 1.0)[0])
    after = loader.load_lora_model_only(env.standin(), f"speed_{layout}.safetensors", 1.0)[0]
    merged_model = load_model(merged)
    expected = env.sample(env.standin(merged_model), steps=4, cfg=1.0)
    result_before, result_after = env.sample(before, steps=4, cfg=1.0), env.sample(after, steps=4, cfg=1.0)
    assert torch.equal(result_before, result_after)
    assert_matches(result_before, expected)
    assert_matches(result_before, env.sample(env.joint(merged_model).model, steps=4, cfg=1.0))
    assert_differs(result_before, env.sample(env.standin(), steps=4, cfg=1.0))  # the LoRA acts


@pytest.mark.parametrize("node_name", ["EasyCacheNode", "LazyCacheNode"])
def test_step_caches_skip_calls_without_rebuilding_the_reference(env, node_name, monkeypatch):
    """EasyCache / LazyCache skip model calls. Stand-In's reference K/V, built once per sampling run, survives the
    skipped calls (one build), and the run equals the joint sequence under the same step cache."""
    from comfy_extras import nodes_easycache
    node = getattr(nodes_easycache, node_name)
    builds, block_calls = [], []
    original_pass = env.model_call.ReferencePass.reference_pass
    monkeypatch.setattr(env.model_call.ReferencePass, "reference_pass",
                        lambda self, *a: builds.append(1) or original_pass(self, *a))
    original_call = env.model_call.VideoSelfAttention.__call__

    def counting(self, x, freqs, transformer_options={}):
        call = transformer_options.get(env.model_call.CALL_KEY)
        if self.index == 0 and call is not None and call.kv is not None:
            block_calls.append(1)
        return original_call(self, x, freqs, transformer_options)

    monkeypatch.setattr(env.model_call.VideoSelfAttention, "__call__", counting)
    steps = 10
    cached = node.execute(env.standin(), 1.5, 0.15, 0.95, False).args[0]  # a loose threshold: calls get skipped
    ours = env.sample(cached, steps=steps)
    assert builds == [1], "the reference K/V are built once per run, skipped calls or not"
    assert 0 < len(block_calls) < steps, f"{node_name} skipped no model call ({len(block_calls)} of {steps} ran)"
    # the oracle innermost, under the same step cache (a wrapper added later runs inside the earlier ones)
    joint = env.joint(node.execute(env.base, 1.5, 0.15, 0.95, False).args[0]).model
    # 10 steps with reused outputs carry the float32 rounding of both formulations further than one forward
    assert_matches(ours, env.sample(joint, steps=steps), steps=5)


def guidance_patch(name):
    """ComfyUI's own guidance and sampling patches, as a function MODEL -> MODEL."""
    from comfy_extras import nodes_apg, nodes_cfg, nodes_model_advanced
    return {
        "CFGZeroStar": lambda m: nodes_cfg.CFGZeroStar.execute(m).args[0],
        "CFGNorm": lambda m: nodes_cfg.CFGNorm.execute(m, 1.0).args[0],
        "APG": lambda m: nodes_apg.APG.execute(m, 1.0, 5.0, -0.5).args[0],
        "ModelSamplingSD3": lambda m: nodes_model_advanced.ModelSamplingSD3().patch(m, 5.0)[0],
    }[name]


@pytest.mark.parametrize("name", ["CFGZeroStar", "CFGNorm", "APG", "ModelSamplingSD3"])
def test_guidance_and_sampling_patches_compose_exactly(env, name):
    """These patches act on the sampler's side (cfg combination, sigma schedule), not inside the model: Stand-In
    under them equals the joint sequence under them, before or after Stand-In is applied."""
    patch = guidance_patch(name)
    after = env.sample(patch(env.standin()), steps=4)
    before = env.sample(env.standin(patch(env.base)), steps=4)
    assert torch.equal(after, before)
    joint = env.sample(env.joint(patch(env.base)).model, steps=4)
    assert_matches(after, joint)
    assert_differs(after, env.sample(env.standin(), steps=4), f"{name} changed nothing")


def plain_attention(self_attn):
    """A foreign patch: the block's own (non-Stand-In) forward."""
    return lambda x, freqs, transformer_options={}: type(self_attn).forward(self_attn, x, freqs,
                                                                            transformer_options=transformer_options)


def test_another_patch_on_the_same_attention_stops_the_run_with_a_message(env):
    """A foreign object patch added after Stand-In on one block's self_attn.forward: the identity would be lost in
    that block, so sampling stops and says which block and why."""
    patched = env.standin()
    dm = patched.model.diffusion_model
    patched.add_object_patch("diffusion_model.blocks.1.self_attn.forward", plain_attention(dm.blocks[1].self_attn))
    with pytest.raises(RuntimeError, match=r"did not run in block\(s\) \[1\] of 3: another node"):
        env.sample(patched, steps=1)


def test_a_forward_swapped_at_load_time_is_caught_too(env):
    """An extension that replaces the forwards in an ON_LOAD callback (after ComfyUI applied the object patches, as
    multi-GPU engines do) is caught the same way; one that wraps Stand-In's patch and calls it is fine."""
    import comfy.model_management
    import comfy.patcher_extension
    comfy.model_management.unload_all_models()  # so that the next sampling run loads (and calls ON_LOAD)
    swapped = env.standin()

    def swap_all(patcher, *args, **kwargs):
        for block in patcher.model.diffusion_model.blocks:
            block.self_attn.forward = plain_attention(block.self_attn)
    swapped.add_callback(comfy.patcher_extension.CallbacksMP.ON_LOAD, swap_all)
    with pytest.raises(RuntimeError, match=r"did not run in block\(s\) \[0, 1, 2\] of 3"):
        env.sample(swapped, steps=1)
    comfy.model_management.unload_all_models()  # the swapped forwards stay on the loaded model otherwise

    wrapped = env.standin()
    calls = []

    def wrap_all(patcher, *args, **kwargs):
        for block in patcher.model.diffusion_model.blocks:
            inner = block.self_attn.forward
            block.self_attn.forward = lambda *a, inner=inner, **k: calls.append(1) or inner(*a, **k)
    wrapped.add_callback(comfy.patcher_extension.CallbacksMP.ON_LOAD, wrap_all)
    assert torch.equal(env.sample(wrapped, steps=2), env.sample(env.standin(), steps=2))
    assert calls
    comfy.model_management.unload_all_models()


def deep_copy_with_other_weights(patched):
    """A second ModelPatcher over a deep copy of ``patched``'s diffusion model, with its q/k/v/o weights x1.25 and
    the same object patches and wrappers, as a patcher deep-cloned for another device has them."""
    import copy

    import comfy.model_patcher
    model = copy.copy(patched.model)  # a second BaseModel whose diffusion model is a deep copy
    model._modules = {**patched.model._modules, "diffusion_model": copy.deepcopy(patched.model.diffusion_model)}
    twin = comfy.model_patcher.ModelPatcher(model, patched.load_device, patched.offload_device)
    twin.object_patches = dict(patched.object_patches)  # the same patch objects, as a deep-cloned patcher has
    twin.wrappers = {kind: {key: list(fns) for key, fns in keyed.items()} for kind, keyed in patched.wrappers.items()}
    with torch.no_grad():
        for block in twin.model.diffusion_model.blocks:  # the copy's weights differ from the original's
            for linear in (block.self_attn.q, block.self_attn.k, block.self_attn.v, block.self_attn.o):
                linear.weight.mul_(1.25)
    return twin


def test_multi_gpu_work_units_each_keep_their_own_reference(env):
    """ComfyUI v0.28's multi-GPU work units: model calls of ONE sampling run on deep clones, one thread per device,
    all with the same transformer_options (so the same run state), each naming its device in
    ``multigpu_thread_device`` (comfy/samplers.py, _calc_cond_batch_multigpu). Simulated on the CPU: two units (named
    cuda:0 and cuda:1, computing on the CPU) on two copies with different weights, three calls each, concurrently.
    Each unit builds its reference K/V once and reuses it, and each call equals the joint sequence on ITS copy (a run
    state shared by the units would hand one copy's reference to the other, or rebuild it on every call)."""
    import threading

    import comfy.model_management
    comfy.model_management.unload_all_models()
    first = env.standin()
    second = deep_copy_with_other_weights(first)
    for model in (first, second):
        model.patch_model()  # loaded, as each unit's clone is on its device
    from comfyui_standin.standin_core import ReferenceKVCache
    state = env.run_state.SamplingState(lambda: ReferenceKVCache("on"), float("inf"), 0.0)
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(2, 16, 3, 8, 12, generator=gen)
    context = torch.randn(2, 7, 4096, generator=gen)
    timestep = first.model.model_sampling.timestep(torch.tensor([0.6, 0.6]))
    results, errors = {}, []

    def unit(name, model):
        try:
            options = {"wrappers": model.wrappers, env.run_state.RUN_KEY: state,
                       "multigpu_thread_device": torch.device(name)}
            with torch.no_grad():
                results[name] = [model.model.diffusion_model(x, timestep, context, transformer_options=dict(options))
                                 for _ in range(3)]
        except Exception as error:  # noqa: BLE001  (reported below, with the thread's error)
            errors.append(error)

    threads = [threading.Thread(target=unit, args=args) for args in (("cuda:0", first), ("cuda:1", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(state.units) == ["cuda:0", "cuda:1"]
    for name, model in (("cuda:0", first), ("cuda:1", second)):
        cache = state.units[name].cache
        assert (cache.builds, cache.hits) == (1, 2), (name, cache.describe())
        expected = joint_forward(model.model.diffusion_model, x, timestep, context, processed(model, env.reference),
                                 env.standin_sd)
        for result in results[name]:
            assert_matches(result, expected, f"unit {name}")
    assert_differs(results["cuda:1"][0], results["cuda:0"][0], "the second copy's weights")
    state.release()
    assert state.units == {}
    for model in (first, second):
        model.unpatch_model()
    comfy.model_management.unload_all_models()


def test_patches_hold_no_module_and_follow_a_deep_copied_model(env):
    """Newer ComfyUI deep-copies a model for each device of a multi-GPU run, and the copy's patcher carries the same
    object patches. Stand-In's patch holds no module: it finds the block it runs in at call time, so a deep copy
    with different weights computes with ITS weights and equals the joint sequence on the copy."""
    import comfy.model_management
    comfy.model_management.unload_all_models()  # object patches off, so the copy is of the plain model
    patched = env.standin()
    patches = [p for p in patched.object_patches.values() if isinstance(p, env.model_call.VideoSelfAttention)]
    assert len(patches) == 3
    assert not [v for p in patches for v in vars(p).values() if isinstance(v, torch.nn.Module)]
    twin = deep_copy_with_other_weights(patched)
    ours = env.sample(twin)
    joint = env.joint(twin)
    assert_matches(ours, env.sample(joint.model))
    assert_differs(ours, env.sample(patched))  # the copy really computes differently
    comfy.model_management.unload_all_models()


def test_a_call_that_bypasses_the_wrappers_stops_with_a_message(env):
    """Something calling the Wan model without ComfyUI's diffusion-model wrappers (so without Stand-In's reference
    pass) would silently drop the identity: the patch says so instead of running the plain attention."""
    import comfy.model_management
    patched = env.standin()
    comfy.model_management.load_models_gpu([patched])
    dm = patched.model.diffusion_model
    with torch.no_grad(), pytest.raises(RuntimeError, match="outside a Wan model call that went through"):
        dm(env.noise, torch.tensor([500.0]), env.cond, transformer_options={})
    comfy.model_management.unload_all_models()


def test_scale_rope_places_the_reference_by_the_same_map(env):
    """ScaleROPE (ComfyUI v0.8.0+) places the video token k of each axis at shift + scale * k. The reference follows
    the same map, so it keeps the official layout relative to the video grid in the scaled coordinates: the run
    equals the joint sequence whose every position, video and image, is mapped. ComfyUI v0.3.64 has no ScaleROPE
    and its Wan ignores ``rope_options``: there Stand-In ignores them too (the run equals the unmapped joint)."""
    import importlib.util
    scale, shift = (2.0, 0.5, 1.5), (1.0, -3.0, 2.0)  # (t, y, x)
    rope = dict(scale_x=scale[2], shift_x=shift[2], scale_y=scale[1], shift_y=shift[1], scale_t=scale[0],
                shift_t=shift[0])
    plain = env.sample(env.standin())
    if importlib.util.find_spec("comfy_extras.nodes_rope") is not None:
        from comfy_extras.nodes_rope import ScaleROPE
        ours = env.sample(ScaleROPE.execute(env.standin(), **rope).args[0])
        joint = env.joint(ScaleROPE.execute(env.base, **rope).args[0], position_scale=scale,
                           position_shift=shift)
        assert_matches(ours, env.sample(joint.model))
        assert_differs(ours, plain)  # the map acted
    else:
        scaled = env.standin()
        scaled.model_options.setdefault("transformer_options", {})["rope_options"] = rope
        assert torch.equal(env.sample(scaled), plain)
        assert_matches(plain, env.sample(env.joint(env.base).model))


def test_context_windows_give_each_window_the_reference_before_its_first_frame(env, monkeypatch):
    """WAN Context Windows run the model on windows of frames, each window with RoPE positions
    0..n-1 of its own, and fuse the results. What is right for Stand-In: each window is a clip of its own, with the
    reference at the official place for that clip (time -1, the spatial block past its grid), so every window gets
    the identity. That is what the pack does, with one reference pass for the whole run (the grid is the same for
    every window): the run equals the same windows over the joint sequence."""
    import inspect

    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode as Windows
    builds = []
    original_pass = env.model_call.ReferencePass.reference_pass
    monkeypatch.setattr(env.model_call.ReferencePass, "reference_pass",
                        lambda self, *a: builds.append(1) or original_pass(self, *a))
    noise = torch.randn(1, 16, 5, 8, 12, generator=torch.Generator().manual_seed(5))  # 5 latent frames

    def windowed(model):  # 9 video frames = 3 latent frames per window, 1 latent frame of overlap
        settings = dict(model=model, context_length=9, context_overlap=1, context_schedule="standard_static",
                        context_stride=1, closed_loop=False, fuse_method="pyramid", freenoise=False)
        accepted = inspect.signature(Windows.execute).parameters  # v0.3.64 has no freenoise
        return Windows.execute(**{k: v for k, v in settings.items() if k in accepted}).args[0]

    ours = env.sample(windowed(env.standin()), noise=noise)
    assert builds == [1]
    joint = env.joint(windowed(env.base))
    expected = env.sample(joint.model, noise=noise)
    assert joint.calls == 3 * 2  # two windows per step: the windows really ran
    assert_matches(ours, expected)
    assert_differs(ours, env.sample(env.standin(), noise=noise))  # windows changed the run


def test_offload_streams_the_reference_kv_block_by_block(env, monkeypatch):
    """The offload cache keeps each block's reference K/V off the compute device and brings one block at a time into
    two device slots (forced here on the CPU, where storage and compute device are the same). The run is
    bit-identical to the cache "on"; in every model call each block's attention got its K/V from one of the same
    two slots, which hold two blocks' worth (3 x 5 reference tokens x width 256 x keys and values x float32)."""
    import itertools

    from comfyui_standin.standin_core.cache import ReferenceKVCache, StreamedKV
    monkeypatch.setattr(ReferenceKVCache, "always_stream", True)
    seen, tags = [], itertools.count()
    original = StreamedKV.__getitem__

    def recording(self, index):
        kv = original(self, index)
        tag = self.__dict__.setdefault("tag", next(tags))
        seen.append((tag, index, kv.keys.untyped_storage().data_ptr(), self.device_bytes))
        return kv

    monkeypatch.setattr(StreamedKV, "__getitem__", recording)
    patched = env.standin()
    offload = env.cache.StandInKVCache.execute(patched, "offload").args[0]
    on = env.cache.StandInKVCache.execute(patched, "on").args[0]
    assert torch.equal(env.sample(offload, steps=3), env.sample(on, steps=3))
    calls = {}
    for tag, index, pointer, device_bytes in seen:
        calls.setdefault(tag, []).append((index, pointer, device_bytes))
    assert len(calls) == 3  # one streamed entry per model call (cond and uncond batched)
    for blocks in calls.values():
        assert [index for index, _, _ in blocks] == [0, 1, 2]
        assert len({pointer for _, pointer, _ in blocks}) == 2
        assert max(device_bytes for _, _, device_bytes in blocks) == 2 * (2 * 15 * 256 * 4)


def test_skip_layer_guidance_skips_blocks_without_a_false_alarm(env):
    from comfy_extras import nodes_slg
    skipping = nodes_slg.SkipLayerGuidanceDiT.execute(env.standin(), 3.0, 0.0, 1.0, "1", "", 0.0).args[0]
    result = env.sample(skipping, steps=3)
    assert torch.isfinite(result).all()
    assert_differs(result, env.sample(env.standin(), steps=3))  # the skip guidance acted


@pytest.mark.slow  # inductor compiles the model: about a minute with a cold cache
def test_torch_compile_keeps_standin(env, monkeypatch):
    """TorchCompileModel (inductor on the CPU; the first compile takes about a minute on 2 cores, which is why there
    is one such test): the compiled model still runs Stand-In's patches, building the reference once per run, and
    matches the eager Stand-In run to float32 rounding, while the eager base model is far away."""
    import os
    import tempfile
    from comfy_extras import nodes_torch_compile
    # Inductor's on-disk cache does not tell CPU kernel paths apart: C++ compiled under one ATEN_CPU_CAPABILITY and
    # reused under another fails to build ('at::vec has not been declared', seen with 'default' after the best path
    # had filled the cache). One cache per capability keeps the warm cache across runs and avoids that.
    capability = os.environ.get("ATEN_CPU_CAPABILITY", "best")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"standin-inductor-{capability}"))
    compiles, builds = [], []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: compiles.append(1) or real_compile(*a, **k))
    original_pass = env.model_call.ReferencePass.reference_pass
    monkeypatch.setattr(env.model_call.ReferencePass, "reference_pass",
                        lambda self, *a: builds.append(1) or original_pass(self, *a))
    compiled = nodes_torch_compile.TorchCompileModel.execute(env.standin(), "inductor").args[0]
    assert compiles, "TorchCompileModel did not call torch.compile"
    result = env.sample(compiled, steps=2)
    assert builds == [1]
    eager = env.sample(env.standin(), steps=2)
    assert_matches(result, eager, "the compiled run", steps=2)  # inductor fuses and reorders the float32 ops
    assert_differs(result, env.sample(env.base, steps=2), "Stand-In in the compiled run", steps=2)


def test_cfg_one_and_batch_two(env):
    gen = torch.Generator().manual_seed(8)
    noise = torch.randn(2, 16, 2, 8, 8, generator=gen)
    ours = env.sample(env.standin(), cfg=1.0, noise=noise)
    joint = env.joint(env.base)
    expected = env.sample(joint.model, cfg=1.0, noise=noise)
    assert joint.calls == 3  # cfg 1: cond only
    assert_matches(ours, expected)


def test_wan22_two_experts_each_with_its_own_weights(env):
    """Wan2.2 A14B: a high-noise and a low-noise expert, each with its own Stand-In file, sampled in two runs
    (KSamplerAdvanced split): each run equals the joint formulation on its own expert and weights."""
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    high = env.base
    low = load_model(tiny_wan_state_dict(seed=11))
    low_sd = standin_state_dict_for(256, 3, seed=12)
    low_weights = standin_weights_from_state_dict(low_sd, source="tiny-low")
    high_standin = env.standin(high)
    low_standin = standin(low, low_weights, env.reference, mode=None)
    high_joint, low_joint = env.joint(high), JointModel(low, env.reference, low_sd)

    def two_stage(first, second):
        return sample_two_stages(first, second, env.noise, [[env.cond, {}]], [[env.uncond, {}]])

    ours = two_stage(high_standin, low_standin)
    expected = two_stage(high_joint.model, low_joint.model)
    assert_matches(ours, expected)
    swapped = two_stage(high_standin, env.standin(low))  # the high file on the low expert: a different result
    assert_differs(ours, swapped)


def test_different_prompt_lengths_run_separately(env):
    """cond and uncond of different lengths are two model calls; one cache still serves both."""
    positive = [[env.cond, {}]]
    negative = [[env.uncond[:, :4], {}]]
    ours = sample(env.standin(), env.noise, positive, negative, steps=2)
    joint = env.joint(env.base)
    expected = sample(joint.model, env.noise, positive, negative, steps=2)
    assert joint.calls == 4
    assert_matches(ours, expected)


def test_clear_errors(env):
    from comfyui_standin.standin_core import StandInWeightsError, standin_weights_from_state_dict
    wrong_width = standin_weights_from_state_dict(standin_state_dict_for(128, 3))
    with pytest.raises(StandInWeightsError, match="width 128"):
        env.apply.ApplyStandInToWanModel.execute(env.base, wrong_width, env.ref, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="ONE image"):
        env.apply.ApplyStandInToWanModel.execute(env.base, env.weights, {"samples": torch.zeros(1, 16, 2, 8, 8)}, 1.0,
                                                 0.0, 1.0)
    with pytest.raises(ValueError, match="channels"):
        env.apply.ApplyStandInToWanModel.execute(env.base, env.weights, {"samples": torch.zeros(1, 4, 1, 8, 8)}, 1.0,
                                                 0.0, 1.0)
    with pytest.raises(ValueError, match="start_percent"):
        env.apply.ApplyStandInToWanModel.execute(env.base, env.weights, env.ref, 1.0, 0.8, 0.2)


def random_wan_model(model_type: str, in_dim: int, **extra):
    """A tiny WanModel of another kind (width 256, 3 blocks, random weights) loaded the way ComfyUI loads a file."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    model = WanModel(model_type=model_type, patch_size=(1, 2, 2), in_dim=in_dim, dim=256, ffn_dim=512, freq_dim=256,
                     text_dim=4096, out_dim=16, num_heads=2, num_layers=3, cross_attn_norm=True,
                     operations=comfy.ops.disable_weight_init, **extra)
    for param in model.parameters():
        torch.nn.init.normal_(param, std=0.02)
    return load_model(model.state_dict())


def test_models_it_does_not_fit(env):
    i2v_model = random_wan_model("i2v", 36)
    with pytest.raises(ValueError, match="takes 36: image-to-video .* use Wan2.1 VACE"):
        env.apply.ApplyStandInToWanModel.execute(i2v_model, env.weights, env.ref, 1.0, 0.0, 1.0)
    # Wan2.2 I2V A14B: no CLIP image embedding, so ComfyUI loads it as model type 't2v', with 36 input channels;
    # TI2V-5B-like: 48 input channels. Both are refused by their patch embedding, not by model_type.
    for channels, what in ((36, "image-to-video"), (48, "TI2V-5B")):
        loaded = random_wan_model("t2v", channels)
        assert loaded.model.diffusion_model.model_type == "t2v"
        with pytest.raises(ValueError, match=f"patch embedding takes 16 latent channels; this one takes {channels}: "
                                             f".*{what}"):
            env.apply.ApplyStandInToWanModel.execute(loaded, env.weights, env.ref, 1.0, 0.0, 1.0)
    not_wan = env.base.clone()
    not_wan.add_object_patch("diffusion_model", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="needs a Wan text-to-video model .* this MODEL is a Linear"):
        env.apply.ApplyStandInToWanModel.execute(not_wan, env.weights, env.ref, 1.0, 0.0, 1.0)


def wan_family_classes():
    """Every WanModel subclass (and WanModel) that this ComfyUI's comfy/ldm/wan modules define, by name."""
    import importlib
    import inspect
    import pkgutil

    import comfy.ldm.wan
    from comfy.ldm.wan.model import WanModel
    found = {}
    for module_info in pkgutil.iter_modules(comfy.ldm.wan.__path__):
        module = importlib.import_module(f"comfy.ldm.wan.{module_info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, WanModel) and cls.__module__ == module.__name__:
                found[name] = cls
    return found


def test_every_wan_model_class_is_supported_or_refused_with_its_reason(env):
    """Each Wan-family class of this ComfyUI is either one Stand-In runs on or one it refuses naming why and what to
    use instead (a class a newer ComfyUI adds fails here until it is decided). The refusal is checked on an instance
    of the real class (built bare: the check reads its class before anything else)."""
    classes = wan_family_classes()
    assert {"WanModel", "VaceWanModel"} <= set(classes)
    undecided = set(classes) - set(env.wan_models.SUPPORTED_MODELS) - set(env.wan_models.OTHER_WAN_MODELS)
    assert not undecided, f"Wan model classes neither supported nor refused: {undecided}"
    for name in set(classes) & set(env.wan_models.OTHER_WAN_MODELS):
        bare = classes[name].__new__(classes[name])
        torch.nn.Module.__init__(bare)
        model = env.base.clone()
        model.add_object_patch("diffusion_model", bare)
        reason = f"does not run on this {name}: it is .*\\. (Use|Give) .*Stand-In's weights fit Wan2.1 T2V 14B"
        with pytest.raises(ValueError, match=reason):
            env.apply.ApplyStandInToWanModel.execute(model, env.weights, env.ref, 1.0, 0.0, 1.0)
    print(f"\nWan model classes here: {sorted(classes)}")


def test_a_wan_fun_reference_convolution_is_refused(env):
    loaded = random_wan_model("t2v", 16, in_dim_ref_conv=16)
    assert loaded.model.diffusion_model.ref_conv is not None
    with pytest.raises(ValueError, match="reference convolution"):
        env.apply.ApplyStandInToWanModel.execute(loaded, env.weights, env.ref, 1.0, 0.0, 1.0)


def test_phantom_subject_frames_equal_the_joint_sequence(env):
    """Phantom (WanPhantomSubjectToVideo): subject images as extra latent frames after the video (time_dim_concat),
    on the video's grid. They are part of the video's sequence, so they attend to the reference like every video
    token; the reference stays at frame -1, just past the grid's rows and columns."""
    gen = torch.Generator().manual_seed(12)
    subjects = torch.randn(1, 16, 2, 8, 12, generator=gen)
    ours = env.sample(env.standin(), time_dim_concat=subjects)
    joint = env.joint(env.base)
    expected = env.sample(joint.model, time_dim_concat=subjects)
    assert joint.calls == 3
    assert_matches(ours, expected, "Stand-In with Phantom's subject frames")
    assert_differs(ours, env.sample(env.base, time_dim_concat=subjects), "Stand-In with Phantom")
    assert_differs(expected, env.sample(joint.model), "Phantom's subject frames")


def test_bernini_in_context_latents_are_refused(env):
    x = torch.randn(1, 16, 3, 8, 12)
    with pytest.raises(ValueError, match="Bernini in-context latents"):
        forward(env.standin(), x, torch.tensor([0.5]), env.cond, context_latents=[torch.randn(1, 16, 1, 8, 12)])

CACHE_BYTES = 3 * 2 * 15 * 256 * 4  # 3 blocks x (K, V) x 15 reference tokens (6x10 latent -> 3x5) x 256 x float32


def storage_bytes(tensors):
    """Bytes of the distinct storages behind ``tensors`` (a view of a larger tensor counts the whole storage)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def test_cache_node_reports_the_bytes_actually_allocated(env, monkeypatch):
    patched = env.standin()
    info = env.cache.StandInKVCache.execute(patched, "on").args[1]
    assert "reference K/V 90.00 KiB on the compute device" in info
    assert env.memory.expected_cache_bytes(patched) == CACHE_BYTES
    seen = []
    original = env.run_state.RunState.release

    def release(run):  # the end of the run: measure what the cache and the buffers really hold
        (entry,) = run.cache.entries.values()  # one video size: one entry
        seen.append((storage_bytes([t for kv in entry for t in (kv.keys, kv.values)]),
                     storage_bytes([run.buffers.keys, run.buffers.values])))
        original(run)

    monkeypatch.setattr(env.run_state.RunState, "release", release)
    env.sample(patched, steps=2)
    video_tokens = 3 * 4 * 6  # latent 3x8x12 -> 3x4x6 tokens
    settings = env.run_state.standin_settings(patched)
    memory = env.memory.standin_memory(patched, settings, (2, 16, 3, 8, 12))
    assert seen == [(CACHE_BYTES, 2 * 2 * (video_tokens + 15) * 256 * 4)]
    assert (memory.cache, memory.buffers, memory.lora) == (seen[0][0], seen[0][1], 0)


def test_comfyui_memory_estimate_counts_what_standin_allocates(env, monkeypatch):
    """ComfyUI's loader is asked to make room for the cache, the K/V buffers and the LoRA's device copy."""
    import comfy.model_management
    asked = []
    original = comfy.model_management.load_models_gpu

    def load_models_gpu(models, memory_required=0, *args, **kwargs):
        asked.append((memory_required, kwargs.get("minimum_memory_required")))
        return original(models, memory_required, *args, **kwargs)

    monkeypatch.setattr(comfy.model_management, "load_models_gpu", load_models_gpu)
    env.sample(env.base, steps=1)
    env.sample(env.standin(), steps=1)
    (base, base_min), (ours, ours_min) = asked[-2], asked[-1]
    video_tokens = 3 * 4 * 6
    # cond+uncond (batch 2) for the estimate, batch 1 for the minimum; on the CPU the LoRA needs no device copy
    assert ours - base == CACHE_BYTES + 2 * 2 * (video_tokens + 15) * 256 * 4
    assert ours_min - base_min == CACHE_BYTES + 2 * 1 * (video_tokens + 15) * 256 * 4
    assert "memory_required" not in vars(env.base.model)  # the estimate is only changed while preparing


def test_offload_counts_two_blocks_on_the_device_when_the_cache_is_streamed(env, monkeypatch):
    """With an offload device other than the compute device (a GPU run), the streamed cache holds two blocks' worth
    on the device: that is what ComfyUI's estimate gets and what the node reports."""
    import comfy.model_management
    monkeypatch.setattr(comfy.model_management, "unet_offload_device", lambda: torch.device("meta"))
    patched = env.standin()
    offload, info = env.cache.StandInKVCache.execute(patched, "offload").args
    settings = env.run_state.standin_settings(offload)
    memory = env.memory.standin_memory(offload, settings, (2, 16, 3, 8, 12))
    assert memory.cache == 2 * (2 * 15 * 256 * 4) == CACHE_BYTES * 2 // 3  # 2 of 3 blocks
    assert env.memory.standin_memory(patched, settings, (2, 16, 3, 8, 12)).cache == CACHE_BYTES  # mode "on"
    assert "streamed to the compute device one block at a time" in info


def test_partial_range_is_the_joint_sequence_above_the_cut_and_the_base_model_below(env):
    """end_percent 0.5: every step whose sigma is at or above the sigma of 50% of the schedule is Stand-In (the joint
    sequence), every later one the base model. The expected run switches on the sigma ComfyUI passes each call."""
    import comfy.patcher_extension
    reference = processed(env.base, env.reference)
    sigma_cut = float(env.base.get_model_object("model_sampling").percent_to_sigma(0.5))
    used = []

    def hybrid_forward(executor, x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kw):
        identity = float(transformer_options["sigmas"].reshape(-1)[0]) >= sigma_cut
        used.append(identity)
        if identity:
            return joint_forward(executor.class_obj, x, timestep, context, reference, env.standin_sd)
        return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kw)

    hybrid = env.base.clone()
    hybrid.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_hybrid", hybrid_forward)
    expected = env.sample(hybrid, steps=4)
    assert True in used and False in used
    assert_matches(env.sample(env.standin(start=0.0, end=0.5), steps=4), expected)


def test_lora_device_copy_is_counted_when_the_weights_live_elsewhere(env):
    import dataclasses
    from comfyui_standin.standin_core import StandInWeights
    patched = env.standin()
    settings = env.run_state.standin_settings(patched)
    elsewhere = dataclasses.replace(settings, weights=StandInWeights(env.weights.blocks_on("meta"), source="meta"))
    memory = env.memory.standin_memory(patched, elsewhere, (2, 16, 3, 8, 12))
    assert memory.lora == 3 * 3 * 2 * 16 * 256 * 4  # 3 blocks x q/k/v x (down, up) x rank 16 x width 256 x float32
    assert env.memory.standin_memory(patched, settings, (2, 16, 3, 8, 12)).lora == 0  # already on the device
