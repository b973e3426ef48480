"""The restricted attention: video queries over [video; reference] keys, and strength as a logit bias."""
import math

import pytest
import torch

from comfyui_standin.tests.support.naive_wan import naive_attention
from comfyui_standin.standin_core import (restricted_attention)
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches


def _qkv(batch, s, r, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, width, generator=g) for n in (s, s, s)] + \
           [torch.randn(1, r, width, generator=g) for _ in range(2)]


def test_restricted_attention_is_joint_attention_for_video_rows():
    q, k, v, rk, rv = _qkv(2, 10, 4)
    ours = restricted_attention(q, k, v, rk, rv, heads=4)
    expected = naive_attention(q, torch.cat([k, rk.expand(2, -1, -1)], 1), torch.cat([v, rv.expand(2, -1, -1)], 1), 4)
    assert_matches(ours, expected)


def test_no_reference_is_plain_attention_and_strength_zero_gives_the_reference_no_weight():
    """strength 0 still attends over [video; reference] keys (the method), with the reference masked to -inf: the
    result is plain attention over the video keys, even with reference values large enough to show any leak."""
    q, k, v, rk, rv = _qkv(2, 10, 4)
    plain = restricted_attention(q, k, v, None, None, heads=4)
    assert_matches(plain, naive_attention(q, k, v, 4))
    rv = rv + 100.0
    assert_matches(restricted_attention(q, k, v, rk, rv, heads=4, strength=0.0), plain, "strength 0")
    assert_differs(restricted_attention(q, k, v, rk, rv, heads=4, strength=1e-3), plain, "strength 1e-3")


@pytest.mark.parametrize("strength", [1e-3, 1e-6, 0.4])
def test_small_strengths_are_the_log_bias_exactly(strength):
    """Each strength, down to tiny ones, is the joint attention with log(s) on the reference logits (no floor, no
    clamp): checked against explicit-softmax attention with that bias, with reference values large enough that any
    error in the bias shows."""
    q, k, v, rk, rv = _qkv(2, 10, 4)
    rv = rv + 100.0
    mask = torch.zeros(10, 14)
    mask[:, 10:] = math.log(strength)
    expected = naive_attention(q, torch.cat([k, rk.expand(2, -1, -1)], 1), torch.cat([v, rv.expand(2, -1, -1)], 1), 4,
                               mask)
    ours = restricted_attention(q, k, v, rk, rv, heads=4, strength=strength)
    assert_matches(ours, expected)


@pytest.mark.parametrize("copies", [2, 3])
def test_integer_strength_equals_repeated_reference_keys(copies):
    """Strength s weighs each reference key as if it were there s times: an independent check of the logit bias."""
    q, k, v, rk, rv = _qkv(1, 9, 5)
    ours = restricted_attention(q, k, v, rk, rv, heads=2, strength=float(copies))
    repeated = naive_attention(q, torch.cat([k] + [rk] * copies, 1), torch.cat([v] + [rv] * copies, 1), 2)
    assert_matches(ours, repeated)


def test_reference_share_of_attention_grows_with_strength():
    q, k, v, rk, rv = _qkv(1, 12, 6)
    rv = rv + 10.0  # make the reference values easy to see in the output
    means = [restricted_attention(q, k, v, rk, rv, heads=4, strength=s).mean().item() for s in (0, 0.1, 0.5, 1, 2, 4)]
    assert all(a < b for a, b in zip(means, means[1:]))


@pytest.mark.parametrize("bad", [-0.5, math.inf, math.nan])
def test_invalid_strength_is_refused(bad):
    q, k, v, rk, rv = _qkv(1, 4, 2)
    with pytest.raises(ValueError, match="strength"):
        restricted_attention(q, k, v, rk, rv, heads=2, strength=bad)


def test_reference_batch_mismatch_is_refused():
    q, k, v, rk, rv = _qkv(3, 4, 2)
    with pytest.raises(ValueError, match="batch"):
        restricted_attention(q, k, v, rk.expand(2, -1, -1), rv.expand(2, -1, -1), heads=2)
