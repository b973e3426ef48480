"""Stale state: a changed prompt, reference, strength, Stand-In file or style LoRA never reuses a stale
cache; ComfyUI's execution cache re-runs what changed and reuses the rest; two Stand-In experts keep their own cache.

Every result is compared with the same prompt run alone on fresh state: a freshly loaded model, fresh Stand-In
weights, cache off (tests/support/sampling.py). Tiny real Wan models, CPU float32, comfyui tier.
"""
from types import SimpleNamespace

import pytest
import torch

from comfyui_standin.devtools.comfyui_server import STANDIN_CKPT, STANDIN_OTHER
from comfyui_standin.devtools.tiny_models import standin_state_dict_for, style_lora
from comfyui_standin.tests.support.sampling import (conds, fresh_standin_run, load_model, sample, sample_two_stages,
                                                     standin, with_style_lora)
from comfyui_standin.tests.support.server_graphs import (executed_nodes, saved_latent, server_files, server_graph,
                                                         server_oracle)
from comfyui_standin.tests.support.tolerance import assert_matches

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def scene(tiny_wan, wan_base, standin_state):
    """Two Stand-In weights ("a": seed 1, "b": seed 7), two references [1, 16, 1, 6, 6] and then noise [1, 16, 2, 6, 8]
    from seed 42, prompts of seeds 1 and 3 and a negative of seed 2, and a style LoRA."""
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    standin_states = {"a": standin_state, "b": standin_state_dict_for(256, 3, seed=7)}
    gen = torch.Generator().manual_seed(42)
    references = {"a": torch.randn(1, 16, 1, 6, 6, generator=gen), "b": torch.randn(1, 16, 1, 6, 6, generator=gen)}
    return SimpleNamespace(
        model_state=tiny_wan, base=wan_base, standin_states=standin_states,
        weights={name: standin_weights_from_state_dict(sd, source=name) for name, sd in standin_states.items()},
        references=references, prompts=dict(zip(("p1", "p2", "neg"), conds(1, 3, 2))),
        noise=torch.randn(1, 16, 2, 6, 8, generator=gen), lora=style_lora(tiny_wan))


def test_changing_any_input_between_runs_never_reuses_a_stale_cache(scene):
    """An artist's session on one loaded model: each run changes one thing. Objects are reused exactly as ComfyUI's
    execution cache would (the Stand-In MODEL is rebuilt only when its own inputs change). Every run equals the same
    prompt alone on fresh state, bit for bit, and differs from the run before (the change mattered), except moving the
    style LoRA before Stand-In, which must give the same video."""
    session = [dict(),
               dict(prompt="p2"),
               dict(reference="b"),
               dict(strength=0.6),
               dict(weights="b"),
               dict(lora=0.8),  # a style LoRA after Stand-In
               dict(lora=0.3),
               dict(mode="offload", prompt="p1"),
               dict(lora_first=True)]  # the same style LoRA before Stand-In instead
    state = dict(prompt="p1", reference="a", strength=1.0, weights="a", lora=0.0, mode="on", lora_first=False)
    standin_model, previous = None, None
    for step, change in enumerate(session):
        state.update(change)
        if standin_model is None or set(change) & {"reference", "strength", "weights", "mode", "lora_first"}:
            base = with_style_lora(scene.base, scene.lora, state["lora"]) if state["lora_first"] else scene.base
            standin_model = standin(base, scene.weights[state["weights"]], scene.references[state["reference"]],
                                    state["strength"], mode=state["mode"])
        model = standin_model
        if state["lora"] and not state["lora_first"]:
            model = with_style_lora(standin_model, scene.lora, state["lora"])
        positive, negative = [[scene.prompts[state["prompt"]], {}]], [[scene.prompts["neg"], {}]]
        ours = sample(model, scene.noise, positive, negative)
        # the oracle applies the LoRA after Stand-In; before or after gives the same model (test_nodes_wan.py::
        # test_style_lora_before_or_after_and_joint), so moving it must not change the result, only the cache key
        expected = fresh_standin_run(scene.model_state, scene.standin_states[state["weights"]],
                                     scene.references[state["reference"]], scene.noise, positive, negative,
                                     strength=state["strength"], lora=scene.lora if state["lora"] else None,
                                     lora_strength=state["lora"])
        assert torch.equal(ours, expected), f"run {step} ({change}) differs from the same prompt on fresh state"
        if change == dict(lora_first=True):
            assert torch.equal(ours, previous)
        elif previous is not None:
            assert not torch.equal(ours, previous), f"run {step} ({change}) changed nothing: the test cannot see"
        previous = ours


def two_stage(high, low, scene):
    """The prompt p1 in two stages (support.sampling.sample_two_stages): ``high`` for steps 0-2, ``low`` for 2-4."""
    return sample_two_stages(high, low, scene.noise, [[scene.prompts["p1"], {}]], [[scene.prompts["neg"], {}]])


def test_two_standin_experts_each_keep_their_own_cache(scene, monkeypatch):
    """Two Stand-In models in one graph (Wan2.2 experts), here both clones of the SAME loaded model (the hardest case:
    they share every module), each with its own file: each sampling run builds its own cache once, under its own
    weights, and the two-stage result equals the same two stages on fresh models with the cache off, twice in a row
    and in either order. (test_nodes_wan.py::test_wan22_two_experts_each_with_its_own_weights checks two separate
    experts against the joint sequence.)"""
    from comfyui_standin.standin_core import ReferenceKVCache, standin_weights_from_state_dict
    builds = []
    original = ReferenceKVCache.get_or_build

    def recording(cache, key, build, device=None):
        before = cache.builds
        entry = original(cache, key, build, device)
        if cache.builds > before:
            builds.append(id(cache))
        return entry

    monkeypatch.setattr(ReferenceKVCache, "get_or_build", recording)
    reference = scene.references["a"]
    high, low = standin(scene.base, scene.weights["a"], reference), standin(scene.base, scene.weights["b"], reference)
    ours = two_stage(high, low, scene)
    assert len(builds) == 2 and builds[0] != builds[1], "each run builds its own cache once"
    assert torch.equal(two_stage(high, low, scene), ours)  # nothing carried over from the first time

    def fresh(name):
        weights = standin_weights_from_state_dict(dict(scene.standin_states[name]), source="fresh")
        return standin(load_model(scene.model_state), weights, reference.clone(), mode="off")

    assert torch.equal(ours, two_stage(fresh("a"), fresh("b"), scene))
    swapped = two_stage(low, high, scene)
    assert torch.equal(swapped, two_stage(fresh("b"), fresh("a"), scene))
    assert not torch.equal(swapped, ours)


# ---------------------------------------------------------------------------------------------------------------------
# ComfyUI's own execution cache, through the real server


def test_execution_cache_reruns_what_changed_and_reuses_the_rest(server):
    """A sequence of prompts through the real server, each changing one input: ComfyUI re-executes exactly the changed
    node and what depends on it, reuses everything else, and every saved latent equals the same prompt alone on fresh
    state in this process. Going back to the first prompt's values reproduces its latent exactly."""
    files = server_files(server)
    downstream_of_apply = {"apply", "lora", "cache", "sample", "save"}
    steps = [(dict(), None),
             (dict(cond_seed=3), {"cond", "sample", "save"}),
             (dict(reference_seed=43), {"reference"} | downstream_of_apply),
             (dict(strength=0.6), downstream_of_apply),
             (dict(weights=STANDIN_OTHER), {"weights"} | downstream_of_apply),
             (dict(lora_strength=0.7), {"lora", "cache", "sample", "save"}),
             (dict(lora_strength=0.0, weights=STANDIN_CKPT, strength=1.0, reference_seed=42, cond_seed=1),
              {"cond", "reference", "weights"} | downstream_of_apply)]
    settings, results = {}, []
    for change, expected_executed in steps:
        settings.update(change)
        graph = server_graph(**settings)
        entry = server.run(graph)
        executed = executed_nodes(server, entry, graph)
        if expected_executed is not None:
            assert executed == expected_executed, f"after {change}: executed {sorted(executed)}"
        result = saved_latent(server, entry)
        expected = server_oracle(files, **settings)
        assert_matches(result, expected, f"after {change}: not the fresh-state result")
        results.append(result)
    assert torch.equal(results[-1], results[0])
    assert all(not torch.equal(a, b) for a, b in zip(results, results[1:]))


def experts_graph(high_file, low_file) -> dict:
    """Wan2.2 A14B in one graph: one loaded model, Stand-In applied twice with two files (the high- and low-noise
    experts' stand-ins), two KSamplerAdvanced (steps 0-2, then 2-4)."""
    graph = server_graph(prefix="experts")
    for name in ("lora", "cache", "sample"):
        del graph[name]
    graph["weights_low"] = {"class_type": "LoadStandInLoRA", "inputs": {"weights": low_file}}
    graph["weights"]["inputs"]["weights"] = high_file
    graph["apply_low"] = {"class_type": "ApplyStandInToWanModel",
                          "inputs": {**graph["apply"]["inputs"], "standin": ["weights_low", 0]}}
    common = {"noise_seed": 0, "steps": 4, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
              "positive": ["cond", 0], "negative": ["uncond", 0]}
    graph["high"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["apply", 0], "add_noise": "enable", "latent_image": ["video", 0], "start_at_step": 0,
        "end_at_step": 2, "return_with_leftover_noise": "enable"}}
    graph["low"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "model": ["apply_low", 0], "add_noise": "disable", "latent_image": ["high", 0], "start_at_step": 2,
        "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    graph["save"]["inputs"]["samples"] = ["low", 0]
    return graph


def test_two_standin_experts_in_one_server_graph(server):
    """The same through the real server, in ONE graph: equal to the two stages on fresh models with the cache off in
    this process; with the files swapped, the result equals the swapped oracle and differs."""
    import nodes
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    files = server_files(server)
    reference = torch.randn(1, 16, 1, 6, 6, generator=torch.Generator().manual_seed(42))
    positive, negative = [[conds(1)[0], {}]], [[conds(2)[0], {}]]

    def oracle(high_file, low_file):
        def fresh(name):
            weights = standin_weights_from_state_dict(dict(files[name]), source="fresh")
            return standin(load_model(files["model"]), weights, reference.clone(), mode="off")
        sampler, common = nodes.KSamplerAdvanced(), (0, 4, 3.0, "euler", "simple", positive, negative)
        with torch.inference_mode():
            mid = sampler.sample(fresh(high_file), "enable", *common, {"samples": torch.zeros(1, 16, 2, 6, 8)}, 0, 2,
                                 "enable")[0]
            return sampler.sample(fresh(low_file), "disable", *common, mid, 2, 10000, "disable")[0]["samples"]

    results = []
    for high_file, low_file in ((STANDIN_CKPT, STANDIN_OTHER), (STANDIN_OTHER, STANDIN_CKPT)):
        graph = experts_graph(high_file, low_file)
        entry = server.run(graph)
        assert "high" in executed_nodes(server, entry, graph)
        results.append(saved_latent(server, entry))
        assert_matches(results[-1], oracle(high_file, low_file), f"{high_file}, {low_file}")
    assert not torch.equal(*results)
