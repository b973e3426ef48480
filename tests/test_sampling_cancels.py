"""Cancels and failures: an interrupt during sampling (at a step callback, or the server's /interrupt) and
an exception raised inside a block leave no cache, buffer, LoRA copy, run state or patch behind, and the next run is
correct: it equals the same prompt on fresh state (a fresh model, cache off), and the loader's MODEL samples as before.

Tiny real Wan models, CPU float32, comfyui tier.
"""
from types import SimpleNamespace

import pytest
import torch

from comfyui_standin.tests.support.leftovers import RunLeftovers, standin_state_left_on
from comfyui_standin.tests.support.sampling import conds, fresh_standin_run, sample, standin
from comfyui_standin.tests.support.server_graphs import saved_latent, server_files, server_graph, server_oracle
from comfyui_standin.tests.support.tolerance import assert_matches

pytestmark = pytest.mark.comfyui
STEPS = 3


@pytest.fixture(scope="module")
def scene(tiny_wan, wan_base, standin_state, standin_weights):
    """A reference [1, 16, 1, 6, 6] (3 x 3 = 9 tokens), then noise [1, 16, 2, 6, 8] (2 x 3 x 4 = 24 video tokens),
    both from seed 42, conds of seeds 1 and 2; and the base model's and the fresh-state Stand-In run of that prompt."""
    gen = torch.Generator().manual_seed(42)
    reference = torch.randn(1, 16, 1, 6, 6, generator=gen)
    noise = torch.randn(1, 16, 2, 6, 8, generator=gen)
    cond, uncond = conds(1, 2)
    positive, negative = [[cond, {}]], [[uncond, {}]]
    return SimpleNamespace(
        model_state=tiny_wan, base=wan_base, standin_state=standin_state, weights=standin_weights,
        reference=reference, noise=noise, positive=positive, negative=negative,
        base_result=sample(wan_base, noise, positive, negative, steps=STEPS),
        fresh_result=fresh_standin_run(tiny_wan, standin_state, reference, noise, positive, negative, steps=STEPS))


def failure_of(run) -> tuple:
    """Call ``run``, which must raise; only the exception's type and message are kept, so no traceback holds the
    failed run's frames (and their tensors) alive."""
    try:
        run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001  (ComfyUI's InterruptProcessingException: an Exception up to
        return type(error).__name__, str(error)  # v0.8, a BaseException from v0.28 on, so `except Exception` misses it)
    pytest.fail("the run did not fail")


def patch_state(model) -> tuple:
    """The Stand-In MODEL's own patch state: object patch names, wrapper counts, transformer_options keys."""
    wrappers = {kind: len(model.get_wrappers(kind, "standin")) for kind in ("diffusion_model", "outer_sample",
                                                                            "prepare_sampling")}
    return (sorted(model.object_patches), wrappers, sorted(model.model_options.get("transformer_options", {})))


def assert_nothing_left_and_next_run_correct(scene, leftovers, patched, before, allocated=True):
    """``allocated``: the run got as far as the reference K/V and the buffers (not when the reference pass failed)."""
    import comfy.model_management
    from comfyui_standin.nodes import model_call
    assert leftovers.runs, "no sampling run started: the check would be empty"
    assert bool(leftovers.tensors) == allocated, f"{len(leftovers.tensors)} Stand-In tensors were allocated"
    runs, tensors = leftovers.alive()
    assert runs == [], "a RunState outlived its run"
    assert tensors == [], f"{len(tensors)} reference K/V, buffer or LoRA-copy tensors outlived the run"
    assert not comfy.model_management.processing_interrupted()
    assert patch_state(patched) == before
    for model in (patched, scene.base):
        assert not any(standin_state_left_on(model).values()), standin_state_left_on(model)
    # the next run, on the same objects, equals the same prompt on fresh state; the loader's MODEL is as before
    again = sample(patched, scene.noise, scene.positive, scene.negative, steps=STEPS)
    assert torch.equal(again, scene.fresh_result)
    assert not torch.equal(again, scene.base_result)
    assert torch.equal(sample(scene.base, scene.noise, scene.positive, scene.negative, steps=STEPS), scene.base_result)
    blocks = scene.base.model.diffusion_model.blocks
    assert not any(isinstance(b.self_attn.__dict__.get("forward"), model_call.VideoSelfAttention) for b in blocks)


@pytest.mark.parametrize("mode", ["on", "offload", "off"])
def test_interrupt_at_a_step_callback_leaves_nothing_behind(scene, monkeypatch, mode):
    """The user cancels after the first step: ComfyUI's interrupt flag, raised at the sampler's step callback (where
    the server's progress hook raises it)."""
    import comfy.model_management
    leftovers = RunLeftovers(monkeypatch)
    patched = standin(scene.base, scene.weights, scene.reference, mode=mode)
    before = patch_state(patched)

    def cancel_after_first_step(step, denoised, x, total_steps):
        if step == 1:
            comfy.model_management.interrupt_current_processing()
            comfy.model_management.throw_exception_if_processing_interrupted()

    kind, _ = failure_of(lambda: sample(patched, scene.noise, scene.positive, scene.negative, steps=STEPS,
                                        callback=cancel_after_first_step))
    assert kind == "InterruptProcessingException"
    assert_nothing_left_and_next_run_correct(scene, leftovers, patched, before)


@pytest.mark.parametrize("fail_at, where, tokens", [(1, "reference pass", 9), (2, "video pass of the first call", 24),
                                                    (4, "video pass, the last step (cache filled)", 24)])
def test_an_exception_inside_a_block_leaves_nothing_behind(scene, monkeypatch, fail_at, where, tokens):
    """A module inside block 1 (its FFN) raises on its n-th call: during the reference pass, during the first video
    pass, or in a later step while the cache is full."""
    leftovers = RunLeftovers(monkeypatch)
    patched = standin(scene.base, scene.weights, scene.reference)
    before = patch_state(patched)
    calls = []

    def planted_failure(module, inputs, output):
        calls.append(inputs[0].shape[1])
        if len(calls) == fail_at:
            raise RuntimeError(f"planted failure in block 1 ({where})")

    handle = scene.base.model.diffusion_model.blocks[1].ffn.register_forward_hook(planted_failure)
    try:
        kind, message = failure_of(lambda: sample(patched, scene.noise, scene.positive, scene.negative, steps=STEPS))
    finally:
        handle.remove()
    assert (kind, message) == ("RuntimeError", f"planted failure in block 1 ({where})")
    assert calls[-1] == tokens, f"the failure hit a call with {calls[-1]} tokens, not the {where}"
    assert_nothing_left_and_next_run_correct(scene, leftovers, patched, before, allocated=fail_at > 1)


# ---------------------------------------------------------------------------------------------------------------------
# the server's /interrupt (the frontend's Cancel button)


def test_server_interrupt_mid_sampling_leaves_nothing_and_the_next_run_is_correct(server):
    """Run a graph; then a long run of the same graph, cancelled through POST /interrupt after its second step; then
    the graph again (cache mode off, so ComfyUI really re-runs it). No Stand-In run object is alive in the server
    after either run, the gc-tracked tensor bytes are the same as after the clean run, and the result equals the
    clean run and the same prompt on fresh state in this process."""
    clean = server.run(server_graph(memory="clean", prefix="cancel"))
    prompt_id = server.interrupt_during(server_graph(steps=1000, memory="long", prefix="cancel_long"), "sample", 2)
    cancelled = server.wait(prompt_id)
    kinds = [kind for kind, _ in cancelled["status"]["messages"]]
    assert "execution_interrupted" in kinds and "execution_success" not in kinds, kinds
    after = server.run(server_graph(mode="off", memory="after", prefix="cancel_after"))
    (clean_report,), (after_report,) = clean["outputs"]["memory"]["memory"], after["outputs"]["memory"]["memory"]
    print(f"server after a clean run: {clean_report}\nserver after the cancelled run and one more: {after_report}")
    for report in (clean_report, after_report):
        assert (report["RunState"], report["JointKVBuffers"], report["ReferenceKVCache"]) == (0, 0, 0), report
    assert after_report["tensor_bytes"] == clean_report["tensor_bytes"], (clean_report, after_report)
    result = saved_latent(server, after)
    assert torch.equal(result, saved_latent(server, clean))
    assert_matches(result, server_oracle(server_files(server)), "the run after the cancelled one")
