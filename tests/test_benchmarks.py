"""The benchmark's analytic cost model against hand-computed values, and a smoke run of the timing script (CI tier)."""
import json

import pytest
import torch

from comfyui_standin.benchmarks import analytic as a

# Tiny config: d=4, D=2, f=8, 1 input/output channel, patch 1x1x1, text_dim 4, freq_dim 2; S=3, R=2, L=1, r=1.
SHAPE = a.WanShape(dim=4, depth=2, heads=2, ffn=8, in_channels=1, out_channels=1, patch=(1, 1, 1), text_dim=4,
                   freq_dim=2)
WORK = a.Workload(video_tokens=3, ref_tokens=2, text_len=1, lora_rank=1, steps=2, rows_per_call=2)


def test_video_block_by_hand():
    parts = a.video_block_flops(SHAPE, 3, 1)
    assert parts == {
        "self_qkvo": 4 * 2 * 3 * 4 * 4,  # 384
        "self_attention": 2 * 2 * 3 * 3 * 4,  # 144
        "cross_q_o": 2 * 2 * 3 * 4 * 4,  # 192
        "cross_k_v": 2 * 2 * 1 * 4 * 4,  # 64
        "cross_attention": 2 * 2 * 3 * 1 * 4,  # 48
        "ffn": 2 * 2 * 3 * 4 * 8,  # 384
    }
    assert sum(parts.values()) == 1216


def test_base_cached_reference_by_hand():
    # outside the blocks: patch 24 + text 64 + time 240 + head 24 = 352
    assert sum(a.embedding_flops(SHAPE, 3, 1).values()) == 352
    assert a.base_row_flops(SHAPE, WORK) == 2 * 1216 + 352 == 2784
    assert a.cached_extra_row_flops(SHAPE, WORK) == 2 * 4 * 3 * 2 * 4 == 192  # D * 4 S R d
    # reference pass: blocks 0..D-2 = 256 (qkvo) + 96 (3 LoRAs of 32) + 64 (attention) + 256 (FFN) = 672;
    # last block k,v = 128 + 2 LoRAs 64 = 192; patch 16 + t=0 embedding 240 = 256
    assert a.reference_pass_flops(SHAPE, WORK) == 672 + 192 + 256 == 1120
    assert a.floor_overhead(SHAPE, WORK) == pytest.approx(192 / 2784)


def test_run_costs_by_hand():
    run = a.run_cost(SHAPE, WORK)  # 2 steps x 1 call x 2 rows
    assert run.calls == 2
    assert run.base == 2 * 2 * 2784 == 11136
    assert run.cached == 11136 + 2 * 2 * 192 + 1120 == 13024  # one build
    assert run.uncached == 11136 + 2 * (2 * 192 + 1120) == 14144  # one shared reference pass per call
    naive = a.run_cost(SHAPE, a.scaled_workload(WORK, ref_passes_per_call=2))
    assert naive.uncached == 11136 + 2 * (2 * 192 + 2 * 1120)
    assert run.cached_overhead == pytest.approx(13024 / 11136 - 1)


def test_linear_only_convention_by_hand():
    assert a.base_row_flops(SHAPE, WORK, count_attention=False) == 2784 - 2 * (144 + 48) == 2400
    assert a.cached_extra_row_flops(SHAPE, WORK, count_attention=False) == 0
    assert a.reference_pass_flops(SHAPE, WORK, count_attention=False) == 1120 - 64 == 1056
    per = a.per_forward_overheads(SHAPE, WORK, count_attention=False)
    assert per == {"cached": 0.0, "uncached": pytest.approx(1056 / 2400)}


def test_cache_bytes_and_lora_count():
    assert a.kv_cache_bytes(SHAPE, WORK, 2) == 2 * 2 * 2 * 4 * 2 == 64
    # the paper's anchors: the official file holds 157,286,400 LoRA values; the bf16 cache is 800 MiB
    assert a.lora_parameters(a.WAN21_14B, 128) == 157_286_400
    assert a.kv_cache_bytes(a.WAN21_14B, a.PAPER_WORKLOAD, 2) == 800 * 2 ** 20  # the paper's 800 MiB


def test_paper_setting():
    work = a.PAPER_WORKLOAD
    assert work.video_tokens == 32760 and work.ref_tokens == 1024
    linear = a.per_forward_overheads(a.WAN21_14B, work, count_attention=False)
    full = a.per_forward_overheads(a.WAN21_14B, work)
    assert linear["uncached"] == pytest.approx(0.026, abs=0.001)  # the paper's +2.6% FLOPs, linear layers counted
    assert full["cached"] == pytest.approx(0.0164, abs=0.0002)  # video queries x 1,024 extra keys in 40 blocks
    assert full["uncached"] > linear["uncached"]
    report = "\n".join(a.paper_report())
    assert "linear layers only:              cached +0.000%, uncached +2.560%" in report
    assert "floor +1.637%" in report and "K/V cache: 800.00 MiB" in report


def run_benchmark(tmp_path, argv):
    from comfyui_standin.benchmarks import standin_bench
    out = tmp_path / "bench.json"
    assert standin_bench.main([*argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


TINY = ["--heads", "1", "--ffn", "96", "--frames", "2", "--height", "4", "--width", "8", "--text-len", "5",
        "--rank", "4", "--steps", "3", "--rounds", "1", "--warmup", "0", "--kernel-reps", "1"]


def check_timed_runs(measured, depth, ref_tokens, width, steps):
    """What the benchmark timed is Stand-In: one build then hits when cached, a build every call when not, a cache
    of the size counted by hand (float32), the same latent with and without the cache, and not the base model's."""
    assert measured["cached_builds_hits"] == [1, steps - 1]
    assert measured["uncached_builds_hits"] == [steps, 0]
    assert measured["cache_bytes"] == depth * 2 * ref_tokens * width * 4
    same = dict(measured["same_latent_as_cached"])
    assert same.pop("base") is False
    assert same and all(same.values()), same


def test_timing_script_times_the_real_method(tmp_path):
    result = run_benchmark(tmp_path, ["--dim", "64", "--depth", "2", "--ref-height", "1", "--ref-width", "2",
                                      *TINY, "--with-concat", "--with-offload"])
    assert set(result["measured"]["same_latent_as_cached"]) == {"base", "uncached", "offload", "concat"}
    check_timed_runs(result["measured"], depth=2, ref_tokens=2, width=64, steps=3)
    assert result["measured"]["offload_builds_hits"] == [1, 2]
    assert torch.is_inference_mode_enabled() is False


@pytest.mark.comfyui
def test_timing_script_on_comfyui_wan_model(comfy, tmp_path):
    """--comfyui: ComfyUI's WanModel, sampled by ComfyUI, with Stand-In installed by apply_standin (no second
    installer), times the same method."""
    result = run_benchmark(tmp_path, ["--comfyui", "--dim", "256", "--depth", "2", "--ref-height", "2",
                                      "--ref-width", "2", *TINY, "--heads", "2", "--with-offload"])
    assert result["measured"]["same_latent_as_cached"]["offload"] is True
    assert "Stand-In by the pack's apply_standin" in result["device"]
    check_timed_runs(result["measured"], depth=2, ref_tokens=4, width=256, steps=3)
