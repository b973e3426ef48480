"""Stand-In under sequence parallelism (standin_core/parallel.py): Ulysses 2, ring 2 and Ulysses 2 x ring 2 on real
gloo process groups (2 and 4 processes on 127.0.0.1), against single-device Stand-In attention computed here in
float64: a naive softmax over [video; reference] keys with log(s) added to each reference's logits.

Every case of a world size runs in one spawn (tests/support/parallel_ranks.py); the test process assembles the
ranks' output shards in token order and compares them with the oracle.
"""
import math
from enum import Enum

import pytest
import torch

from comfyui_standin.standin_core.parallel import (BACKENDS_WITHOUT_LSE, attention_with_lse, check_ring_backend,
                                                   local_reference_heads, merge_attention)
from comfyui_standin.tests.support.parallel_ranks import LAYOUTS, run_world
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches, scale_of

BATCH, TOKENS, HEADS, HEAD_DIM, REF_TOKENS = 2, 16, 4, 8, 6  # 16 tokens: divisible by every split (2 and 4)
STRENGTHS = [0.0, 0.5, 1.0, 2.0]
SEVERAL = [(0.5, 2.0), (0.0, 1.5)]  # two references of 3 tokens each, one strength per reference


def oracle(q, k, v, ref_k, ref_v, heads, strength):
    """Single-device Stand-In attention, written out in float64: the video queries' softmax over the video keys and
    every reference with a strength > 0, log(strength) added to that reference's logits (one strength per
    reference; the reference tokens are theirs in equal parts, in order)."""
    strengths = [float(strength)] if isinstance(strength, (int, float)) else [float(s) for s in strength]
    per = ref_k.shape[1] // len(strengths)
    batch = q.shape[0]
    keys, values, bias = [k], [v], [torch.zeros(k.shape[1], dtype=torch.float64)]
    for index, s in enumerate(strengths):
        if s > 0:
            keys.append(ref_k[:, index * per:(index + 1) * per].expand(batch, -1, -1))
            values.append(ref_v[:, index * per:(index + 1) * per].expand(batch, -1, -1))
            bias.append(torch.full((per,), math.log(s), dtype=torch.float64))
    keys, values, bias = torch.cat(keys, 1).double(), torch.cat(values, 1).double(), torch.cat(bias)
    d = q.shape[-1] // heads

    def split(t):
        return t.double().reshape(batch, t.shape[1], heads, d).permute(0, 2, 1, 3)

    logits = split(q) @ split(keys).transpose(-1, -2) / math.sqrt(d) + bias
    weights = torch.exp(logits - logits.max(-1, keepdim=True).values)
    weights = weights / weights.sum(-1, keepdim=True)
    return (weights @ split(values)).permute(0, 2, 1, 3).reshape(batch, q.shape[1], heads * d)


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    width = HEADS * HEAD_DIM
    q, k, v = (torch.randn(BATCH, TOKENS, width, generator=g) for _ in range(3))
    ref_k = torch.randn(1, REF_TOKENS, width, generator=g)
    ref_v = torch.randn(1, REF_TOKENS, width, generator=g) + 3.0  # the reference's share shows in the output
    return {"q": q, "k": k, "v": v, "ref_k": ref_k, "ref_v": ref_v}


def _cases():
    cases = {}
    for layout in LAYOUTS:
        for index, strength in enumerate(STRENGTHS + SEVERAL):
            cases[f"{layout}-s{strength}"] = dict(_inputs(index), layout=layout, kind="standin", strength=strength,
                                                  heads=HEADS)
        cases[f"{layout}-whole"] = dict(_inputs(99), layout=layout, kind="whole_reference", strength=1.0,
                                        heads=HEADS)
    return cases


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{case name: (case, the ranks' output shards assembled in token order)}: one spawn per world size."""
    folder = tmp_path_factory.mktemp("parallel")
    cases = _cases()
    torch.save(cases, folder / "cases.pt")
    assembled = {}
    for world in sorted(set(LAYOUTS.values())):
        shards = run_world(world, folder)
        for name, case in cases.items():
            if LAYOUTS[case["layout"]] == world:
                assembled[name] = (case, torch.cat([shards[rank][name] for rank in range(world)], dim=1))
    return assembled


@pytest.mark.parametrize("strength", STRENGTHS + SEVERAL, ids=str)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sequence_parallel_standin_equals_single_device(runs, layout, strength):
    case, out = runs[f"{layout}-s{strength}"]
    args = case["q"], case["k"], case["v"], case["ref_k"], case["ref_v"], HEADS
    expected = oracle(*args, strength)
    assert out.dtype == torch.float32
    assert_matches(out, expected, f"{layout} strength {strength}")
    if any(s > 0 for s in ([strength] if isinstance(strength, float) else strength)):
        assert_differs(out, oracle(*args, 0.0), f"the reference at strength {strength}")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_whole_reference_on_every_rank_is_wrong(runs, layout):
    """The negative control: appending the whole reference to every rank's K/V (before the all-to-all) counts each
    reference key once per rank, P times: far from Stand-In at strength 1, and exactly Stand-In at strength P."""
    case, out = runs[f"{layout}-whole"]
    args = case["q"], case["k"], case["v"], case["ref_k"], case["ref_v"], HEADS
    expected = oracle(*args, 1.0)
    error = assert_differs(out, expected, "appending the whole reference on every rank")
    assert error > 0.05 * scale_of(expected), f"the whole reference on every rank is off by only {error:.3g}"
    assert_matches(out, oracle(*args, float(LAYOUTS[layout])), "the whole reference counted once per rank")


@pytest.mark.parametrize("name", ["TORCH_MATH", "TORCH_CUDNN", "torch_math", "SPARSE_SAGE"])
def test_backends_without_lse_are_refused_with_ring(name):
    with pytest.raises(ValueError, match=rf"ring degree 2\).*log-sum-exp.*{name.upper()}.*ring degree to 1"):
        check_ring_backend(name, 2)
    check_ring_backend(name, 1)  # Ulysses alone needs no LSE


def test_backend_names_as_yunchang_spells_them():
    """An AttnType-like enum member (name TORCH_CUDNN, value "torch_cudnn") is refused; backends with an LSE pass."""
    AttnType = Enum("AttnType", {"TORCH_CUDNN": "torch_cudnn", "TORCH_FLASH": "torch_flash", "FA": "fa"})
    with pytest.raises(ValueError, match="TORCH_CUDNN returns an LSE of zeros"):
        check_ring_backend(AttnType.TORCH_CUDNN, 4)
    for backend in (AttnType.TORCH_FLASH, AttnType.FA, "TORCH_EFFICIENT", "FA3", "SAGE_FP8"):
        check_ring_backend(backend, 4)
    assert set(BACKENDS_WITHOUT_LSE) == {"TORCH_MATH", "TORCH_CUDNN", "SPARSE_SAGE"}


@pytest.mark.parametrize("degree", [1, 2, 4])
def test_each_rank_keeps_only_its_heads_of_the_reference(degree):
    g = torch.Generator().manual_seed(5)
    full = torch.randn(1, REF_TOKENS, HEADS * HEAD_DIM, generator=g)
    per_head = full.view(1, REF_TOKENS, HEADS, HEAD_DIM)
    local_heads = HEADS // degree
    for rank in range(degree):
        local = local_reference_heads(full, HEADS, rank, degree)
        expected = per_head[:, :, rank * local_heads:(rank + 1) * local_heads].reshape(1, REF_TOKENS, -1)
        assert torch.equal(local, expected)
        assert local.untyped_storage().nbytes() == full.untyped_storage().nbytes() // degree
    with pytest.raises(ValueError, match="cannot be split"):
        local_reference_heads(full, 3, 0, 2)


def test_attention_with_lse_and_the_merge_are_exact():
    """The ring's pieces: each block's output and LSE, merged, equal one softmax over the union of the keys."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(BATCH, 5, HEADS * HEAD_DIM, generator=g) for _ in range(3))
    ref_k, ref_v = (torch.randn(1, 4, HEADS * HEAD_DIM, generator=g) for _ in range(2))
    out, lse = attention_with_lse(q, k, v, HEADS)
    d = HEAD_DIM
    logits = (q.double().view(BATCH, 5, HEADS, d).transpose(1, 2)
              @ k.double().view(BATCH, 5, HEADS, d).transpose(1, 2).transpose(-1, -2)) / math.sqrt(d)
    assert_matches(lse, torch.logsumexp(logits, -1), "the LSE")
    assert_matches(out, oracle(q, k, v, ref_k, ref_v, HEADS, 0.0), "one block")
    first, second = attention_with_lse(q, k[:, :2], v[:, :2], HEADS), attention_with_lse(q, k[:, 2:], v[:, 2:], HEADS)
    merged, merged_lse = merge_attention(*first, *second)
    assert_matches(merged, out, "two blocks merged")
    assert_matches(merged_lse, lse, "the merged LSE")


def test_fused_attention_lse_matches_the_materialised_one():
    """The ring's fused attention with LSE (torch's CPU flash kernel here) and its per-reference strength bias, against
    the core's materialised attention_with_lse: several references, one of them at strength 0."""
    from comfyui_standin.standin_core.attention import reference_logit_bias
    from comfyui_standin.standin_core.parallel import fused_attention_lse
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 10, 4 * 16, generator=gen) for _ in range(3))
    for strength in (1.0, 0.5, (0.5, 2.0), (0.0, 1.5)):
        bias = reference_logit_bias(0, 10, strength, torch.float32, "cpu")
        keep = bias[0] > float("-inf")  # the materialised one with the masked reference's keys removed
        expected = attention_with_lse(q, k[:, keep], v[:, keep], 4, mask=bias[:, keep])
        actual = fused_attention_lse(q, k, v, 4, mask=None if strength == 1.0 else bias)
        for got, want, what in zip(actual, expected, ("out", "lse")):
            assert_matches(got, want, f"fused attention {what}, strength {strength}")
