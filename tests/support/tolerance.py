"""How close a float32 result must be to its oracle, on any CPU.

The pack and its oracles compute the same mathematics in float32 in a different order: [video; reference] keys in one
softmax or in a buffer, cond and uncond batched or row by row, another attention kernel, SIMD widths that differ
between CPUs (``ATEN_CPU_CAPABILITY``) and thread counts that split reductions differently. Each rounding is exact up
to a relative u = 2^-24 of the values it combines, so what two orders can disagree by scales with the size of the
values, not with 1: an absolute limit that holds for outputs near 1 fails on outputs near 4 (seen: 1.14e-5 on a
sample of size ~4 on another machine, against an absolute 1e-5).

So every oracle comparison is bounded RELATIVE to the expected output's scale (its largest magnitude):

    |actual - expected|_max  <=  ulps * eps32 * max|expected|        eps32 = 2^-23 (one float32 ulp at 1.0)

``ULPS = 128`` (a relative 1.5e-5) covers a short run (a forward, or a sampling run of up to four steps) through a
few DiT blocks of float32 dot products of length <= 1024 and a softmax over a few hundred keys, where rounding errors
add up like a random walk (~sqrt(n) u per reduction; the worst-case n u bound of textbook error analysis is never
reached in practice). The largest disagreement seen across this project's CPUs and kernel paths was 24 ulps of the
scale (1.14e-5 on a sample of size 4.0, another machine), so the bound holds with a 5x margin, while a real mistake (a
wrong position, a missing LoRA term, a dropped hook) moves the output by 1e-3 to 1e-1 of its scale, thousands of ulps.
Longer runs compound the rounding through the sampler's updates: they pass ``steps`` (the bound is that many times
larger). Every comparison is recorded and the test summary prints the largest, in ulps of its scale.

``assert_differs`` is the other half of each test: the result must be far from the model WITHOUT the feature, by
more than ``SEPARATION`` times the bound, so that the closeness above is not a coincidence of a feature that did
nothing.
"""
from __future__ import annotations

import os

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2^-23
ULPS = 128
SEPARATION = 100
MEASURED: list = []  # (ulps of the scale the comparison used, what): the terminal summary prints the largest


def scale_of(expected: torch.Tensor) -> float:
    """The output's scale: its largest magnitude (never below the smallest normal float32, so a zero output still
    gets a bound)."""
    return max(expected.detach().abs().max().item(), torch.finfo(torch.float32).tiny)


def oracle_bound(expected: torch.Tensor, ulps: float = ULPS, steps: int = 1) -> float:
    """The largest difference from ``expected`` that float32 rounding explains (see the module docstring)."""
    return ulps * steps * EPS32 * scale_of(expected)


def max_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual.detach().float() - expected.detach().float()).abs().max().item()


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, what: str = "result", ulps: float = ULPS,
                   steps: int = 1) -> float:
    """``actual`` equals ``expected`` up to float32 rounding at the output's scale; returns the difference."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    difference, scale, bound = max_difference(actual, expected), scale_of(expected), oracle_bound(expected, ulps, steps)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    MEASURED.append((difference / (EPS32 * scale), f"{test}: {what}"))
    assert difference <= bound, (f"{what}: max difference {difference:.3g} > {bound:.3g} ({ulps * steps:g} ulps of "
                                 f"the output's scale {scale:.3g})")
    return difference


def assert_differs(actual: torch.Tensor, other: torch.Tensor, what: str = "the feature", ulps: float = ULPS,
                   steps: int = 1) -> float:
    """``actual`` is far from ``other`` (the run without the feature): more than SEPARATION oracle bounds."""
    difference, bound = max_difference(actual, other), SEPARATION * oracle_bound(other, ulps, steps)
    assert difference > bound, f"{what} changed the output by only {difference:.3g} (<= {bound:.3g}): it did not act"
    return difference
