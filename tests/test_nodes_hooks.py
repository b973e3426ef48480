"""ComfyUI's Wan hooks keep working under Stand-In (tiny REAL WanModel, CPU, float32).

Stand-In replaces each block's ``self_attn.forward``. Whatever hook the ORIGINAL forward (and the block around it)
calls in the ComfyUI version under test must still be called, with the same arguments:
  * ``attn1_patch`` (v0.28 and newer: WanSelfAttention.forward, after attention, before ``o``; gets ``x``, ``q``,
    ``k``): with a patch that zeroes the attention output, nothing of the self-attention (so nothing of Stand-In)
    reaches the output, and the result must be the base model with that patch;
  * ``attn2_patch`` (v0.28 and newer: WanAttentionBlock.forward, after the cross-attention): the same with a patch
    that zeroes the residual stream there;
  * at strength 0 Stand-In must be the base model, hooks included.
Whether a version calls a hook at all is read from the base model's own behaviour (does the patch change its
output?), never from the pack's version detection.
"""
import pytest
import torch

from comfyui_standin.tests.support.sampling import forward
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches

pytestmark = pytest.mark.comfyui


def with_patch(model, kind: str, patch):
    patched = model.clone()
    patched.set_model_patch(patch, kind)
    return patched


def zero_output(arguments):
    return torch.zeros_like(arguments["x"])


def half_output(arguments):
    return arguments["x"] * 0.5


def base_calls(env, kind: str) -> bool:
    """Whether this ComfyUI's Wan calls the ``kind`` hook: the base model's sample moves when the hook acts."""
    plain = env.sample(env.base, steps=2)
    hooked = env.sample(with_patch(env.base, kind, half_output), steps=2)
    return (hooked - plain).abs().max().item() > 1e-3


@pytest.mark.parametrize("kind", ["attn1_patch", "attn2_patch"])
def test_a_zeroing_hook_gives_the_base_model_with_that_hook(env, kind):
    """A hook that zeroes what it is given removes every trace of Stand-In's attention from the output (attn1: the
    attention output; attn2: the whole residual stream, after which only the FFN of the modulation acts). If
    Stand-In's forward skipped the hook, the result would carry the reference and differ."""
    standin = env.standin()
    ours = env.sample(with_patch(standin, kind, zero_output), steps=2)
    if base_calls(env, kind):
        expected = env.sample(with_patch(env.base, kind, zero_output), steps=2)
        assert_matches(ours, expected, f"Stand-In with a zeroing {kind}", steps=2)
        assert_differs(env.sample(standin, steps=2), expected, f"the zeroing {kind}", steps=2)
    else:  # this ComfyUI's Wan never calls the hook: neither may Stand-In, which then equals the joint sequence
        expected = env.sample(env.joint(env.base).model, steps=2)
        assert_matches(ours, expected, f"Stand-In with an uncalled {kind}", steps=2)


@pytest.mark.parametrize("kind", ["attn1_patch", "attn2_patch"])
def test_strength_zero_with_a_hook_is_the_base_model_with_that_hook(env, kind):
    ours = env.sample(with_patch(env.standin(strength=0.0), kind, half_output), steps=2)
    expected = env.sample(with_patch(env.base, kind, half_output), steps=2)
    assert torch.equal(ours, expected)


def test_attn1_patch_gets_the_video_tokens_q_k_and_attention_output(env):
    """What each attn1_patch call receives under Stand-In: one call per block, ``q`` and ``k`` of the video tokens
    only ([B, S, heads, head_dim], rotated, the reference's keys not among them) and ``x`` the attention output
    [B, S, width]. In block 0 the video's q and k do not depend on the reference: they equal the base model's
    exactly, while ``x`` there carries the reference."""
    seen = {"base": [], "standin": []}

    def recorder(name):
        def patch(arguments):
            seen[name].append({key: arguments[key].clone() for key in ("x", "q", "k")})
            return arguments["x"]
        return patch

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16, 3, 8, 12, generator=gen)
    context = torch.randn(2, 7, 4096, generator=gen)
    sigma = torch.tensor([0.7, 0.7])
    base_out, _ = forward(with_patch(env.base, "attn1_patch", recorder("base")), x, sigma, context)
    ours, _ = forward(with_patch(env.standin(), "attn1_patch", recorder("standin")), x, sigma, context)
    if not base_calls(env, "attn1_patch"):  # this ComfyUI's Wan calls no attn1_patch (v0.28.0 and newer do)
        assert not seen["base"] and not seen["standin"], "Stand-In called attn1_patch where this ComfyUI's Wan does not"
        return
    blocks = len(env.base.model.diffusion_model.blocks)
    assert len(seen["base"]) == len(seen["standin"]) == blocks
    tokens, heads = 3 * 4 * 6, env.base.model.diffusion_model.num_heads
    for got in seen["standin"]:
        assert got["q"].shape == got["k"].shape == (2, tokens, heads, 256 // heads)
        assert got["x"].shape == (2, tokens, 256)
    assert torch.equal(seen["standin"][0]["q"], seen["base"][0]["q"])
    assert torch.equal(seen["standin"][0]["k"], seen["base"][0]["k"])
    assert_differs(seen["standin"][0]["x"], seen["base"][0]["x"], "the reference in block 0's attention")
    assert_differs(ours, base_out, "Stand-In")


class PreferredAttention(torch.nn.Module):
    """A stand-in for newer ComfyUI's per-module ``ComfyAttention`` (comfy/ldm/modules/attention.py after v0.28):
    ``function`` is the attention a checkpoint configured for this module (int8, a kernel), None when it has none.
    Here it records its calls and scales the attention output, so that a use of it shows in the result."""

    def __init__(self, calls: list, name: str):
        super().__init__()
        self.calls, self.name = calls, name

    def function(self, q, k, v, heads, mask=None, **kwargs):
        from comfy.ldm.modules.attention import attention_pytorch
        self.calls.append((self.name, q.shape[1], k.shape[1]))
        return 0.5 * attention_pytorch(q, k, v, heads, mask=mask)


def test_a_modules_preferred_attention_runs_stand_ins_attention_too(env, monkeypatch):
    """Newer ComfyUI calls ``optimized_attention(q, k, v, ..., preferred_attention=module.comfy_attention)``, and the
    attention dispatcher runs ``preferred_attention.function`` when it is set (its wrap_attn). With the newer
    shape of the API put onto this ComfyUI (a ``comfy_attention`` on each self-attention, a dispatcher that honours
    it), Stand-In's video attention AND its reference pass run through each block's own preferred function, the way
    the newer Wan forward does for the base model; where no module has one (this ComfyUI as shipped), nothing
    changes."""
    import comfy.ldm.wan.model as wan
    original = wan.optimized_attention
    plain = env.sample(env.standin(), steps=1)

    def dispatcher(q, k, v, heads, *args, preferred_attention=None, **kwargs):
        if preferred_attention is not None and preferred_attention.function is not None:
            return preferred_attention.function(q, k, v, heads, *args, **kwargs)
        return original(q, k, v, heads, *args, **kwargs)

    calls = []
    model = env.standin()
    blocks = model.model.diffusion_model.blocks
    for index, block in enumerate(blocks):
        monkeypatch.setattr(block.self_attn, "comfy_attention", PreferredAttention(calls, f"block {index}"),
                            raising=False)
    monkeypatch.setattr(wan, "optimized_attention", dispatcher)
    halved = env.sample(model, steps=1)
    video_tokens, reference_tokens = 3 * 4 * 6, 3 * 5
    joint_keys = video_tokens + reference_tokens
    # one model call (cond and uncond batched): the reference pass (its last block only records K/V), then the video
    assert calls[:len(blocks) - 1] == [(f"block {i}", reference_tokens, reference_tokens)
                                       for i in range(len(blocks) - 1)]
    assert calls[len(blocks) - 1:] == [(f"block {i}", video_tokens, joint_keys) for i in range(len(blocks))]
    assert_differs(halved, plain, "the preferred attention")
    for block in blocks:
        monkeypatch.delattr(block.self_attn, "comfy_attention")
    assert torch.equal(env.sample(model, steps=1), plain)  # no module has one: Stand-In as before


def test_an_attention_override_sees_stand_ins_joint_keys(env):
    """``transformer_options["optimized_attention_override"]`` (how attention nodes such as Sage or radial attention
    take over ComfyUI's attention): Stand-In's attention goes through ComfyUI's ``optimized_attention``, so the override
    gets every call, the reference pass's and the video's with the [video; reference] keys, and an override that
    runs the attention it is given changes nothing."""
    seen = []

    def override(func, q, k, v, *args, **kwargs):
        seen.append((kwargs["transformer_options"].get("standin_reference_pass", False), q.shape[1], k.shape[1]))
        return func(q, k, v, *args, **kwargs)

    model = env.standin()
    plain = env.sample(model, steps=1)
    overridden = model.clone()
    overridden.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    assert torch.equal(env.sample(overridden, steps=1), plain)
    blocks = len(env.base.model.diffusion_model.blocks)
    video, reference = 3 * 4 * 6, 3 * 5
    self_attention = [call for call in seen if call[2] in (reference, video + reference)]
    assert self_attention[:blocks - 1] == [(True, reference, reference)] * (blocks - 1)  # the reference pass
    assert self_attention[blocks - 1:] == [(False, video, video + reference)] * blocks  # the video's, with the ref
    assert len(seen) == len(self_attention) + blocks  # and each block's text cross-attention (ComfyUI's own)


def test_a_newer_comfyuis_modulate_runs_the_reference_pass_too(env, monkeypatch):
    """Newer ComfyUI computes the block's adaptive norms with ``comfy.ldm.wan.model.modulate(x, norm, shift, scale)``
    (fused on CUDA for large inputs). Where it exists, the reference pass calls it too: norm1 before the attention
    and norm2 before the FFN in every block, except the last, whose K/V need only norm1. Put onto this tree (its
    non-fused branch, which records its calls), the run is the same as without it."""
    import comfy.ldm.wan.model as wan
    plain = env.sample(env.standin(), steps=1)
    blocks = env.base.model.diffusion_model.blocks
    names = {id(block.norm1): f"block {i} norm1" for i, block in enumerate(blocks)}
    names.update({id(block.norm2): f"block {i} norm2" for i, block in enumerate(blocks)})
    calls = []

    def modulate(x, norm, shift, scale):
        calls.append((names.get(id(norm)), x.shape[1]))
        return torch.addcmul(shift, norm(x), 1 + scale)

    monkeypatch.setattr(wan, "modulate", modulate, raising=False)
    assert torch.equal(env.sample(env.standin(), steps=1), plain)
    reference_tokens = 3 * 5
    expected = [(f"block {i} {norm}", reference_tokens) for i in range(len(blocks))
                for norm in (("norm1", "norm2") if i < len(blocks) - 1 else ("norm1",))]
    assert calls == expected


class FoldedFeedForward(torch.nn.Sequential):
    """Newer ComfyUI's WanFeedForward (comfy/ldm/wan/model.py after v0.28): the same [Linear, GELU(tanh), Linear]
    modules and state-dict keys, with the GELU applied inside the down-projection's call (``self[1]`` is never
    called)."""

    def forward(self, x):
        return self[2](torch.nn.functional.gelu(self[0](x), approximate="tanh"))


def test_a_folded_feed_forward_is_called_as_the_blocks_own_module(env, monkeypatch):
    """The reference pass calls each block's ``ffn`` module, never its parts: with newer ComfyUI's folded FFN put
    into every block (its unused GELU made to fail if called), Stand-In still equals the joint sequence."""
    model = env.standin()
    blocks = model.model.diffusion_model.blocks
    for block in blocks:
        folded = FoldedFeedForward(*block.ffn)
        folded[1].forward = lambda *args: pytest.fail("the folded GELU module was called on its own")
        monkeypatch.setattr(block, "ffn", folded)
    ours = env.sample(model, steps=2)
    assert_matches(ours, env.sample(env.joint(env.base).model, steps=2), "Stand-In with the folded FFN")
