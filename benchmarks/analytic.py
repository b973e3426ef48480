"""Analytic cost model of Wan with and without Stand-In (pure Python, no torch).

Counting convention ("full"): every matrix product is counted as 2 FLOPs per multiply-add, attention included
(Q K^T and P V are matrix products). Element-wise work (layer/RMS norms, RoPE, modulation, softmax, GELU, residual
adds) is O(tokens * width) per op and is left out; for Wan at the paper's shape it is far below 1% of the total.

A second convention ("linear"): only the linear layers (nn.Linear / Conv3d) are counted, attention products are
not. That is what module-hook FLOP counters report when attention runs in a fused kernel (flash attention, SDPA),
and it is the convention under which the paper's "+2.6% FLOPs without cache" is reproduced (see ``paper_report``).

Per batch row and per model call (one denoising step runs ``calls_per_step`` rows: 2 when ComfyUI batches cond and
uncond at cfg > 1), with S video tokens, R reference tokens, L text tokens, width d, FFN width f, depth D:

    block (video)   self-attn q,k,v,o        4 * 2 S d^2
                    self-attn Q K^T, P V     2 * 2 S^2 d
                    cross-attn q,o (video)   2 * 2 S d^2
                    cross-attn k,v (text)    2 * 2 L d^2
                    cross-attn Q K^T, P V    2 * 2 S L d
                    FFN                      2 * 2 S d f
    outside blocks  patch embedding 2 S (c p) d, text embedding 2 L (d_text d + d^2),
                    time embedding 2 (d_freq d + d^2) + 2 d (6 d), head 2 S d (c_out p)

Stand-In, cached (the floor): in every block the video queries attend to R extra keys:
    extra per row per call = D * (2 S R d  [Q K_I^T]  +  2 S R d  [P V_I])  = 4 D S R d
Nothing else changes per call: the reference K/V come from the cache.

Reference pass (builds the cache; B = 1, t = 0, no cross-attention, LoRA of rank r on q/k/v):
    patch embedding 2 R (c p) d, t = 0 embedding (as above, negligible),
    blocks 0..D-2:  q,k,v,o 8 R d^2 + LoRA q,k,v 3 * (2 R d r + 2 R r d) + Q K^T, P V 4 R^2 d + FFN 4 R d f
    last block:     k,v 4 R d^2 + LoRA k,v 2 * 4 R d r   (only its K/V are read)

Stand-In, uncached: the reference pass on every call, plus the cached extra. The reference does not depend on the
text or the noisy video, so one pass serves every row of a call (``ref_passes_per_call = 1``, what the core does);
a port that concatenates the reference to every row runs it ``rows`` times (the paper's per-forward figure).

K/V cache: D * 2 * R * d values (keys and values of every block, [1, R, d] each).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class WanShape:
    """A Wan DiT's dimensions (defaults: the ComfyUI Wan T2V layout)."""

    dim: int
    depth: int
    heads: int
    ffn: int
    in_channels: int = 16
    out_channels: int = 16
    patch: tuple = (1, 2, 2)
    text_dim: int = 4096
    freq_dim: int = 256

    @property
    def patch_volume(self) -> int:
        p = 1
        for n in self.patch:
            p *= n
        return p


@dataclass(frozen=True)
class Workload:
    """What one sampling run processes."""

    video_tokens: int  # S
    ref_tokens: int  # R
    text_len: int = 512  # L
    lora_rank: int = 128  # r
    steps: int = 20
    rows_per_call: int = 2  # cond + uncond batched (ComfyUI at cfg > 1); 1 at cfg = 1
    calls_per_step: int = 1
    ref_passes_per_call: int = 1  # uncached: reference pass once per call (shared by every row)


WAN21_14B = WanShape(dim=5120, depth=40, heads=40, ffn=13824)
WAN21_1_3B = WanShape(dim=1536, depth=30, heads=12, ffn=8960)
# 832x480x81 -> latent 21x60x104 -> tokens 21x30x52; 512x512 reference -> latent 64x64 -> 32x32 tokens.
PAPER_WORKLOAD = Workload(video_tokens=21 * 30 * 52, ref_tokens=32 * 32, text_len=512, lora_rank=128, steps=20)
PAPER_FIGURES = {"flops_uncached": 0.026, "flops_cached": 0.0007, "time_uncached": 0.036, "time_cached": 0.023}


# ---------------------------------------------------------------- per-row, per-call pieces

def video_block_flops(shape: WanShape, s: int, text_len: int, count_attention: bool = True) -> dict:
    """FLOPs of one block on one row of S video tokens, by part."""
    d, f, L = shape.dim, shape.ffn, text_len
    parts = {
        "self_qkvo": 4 * 2 * s * d * d,
        "self_attention": 2 * 2 * s * s * d if count_attention else 0,
        "cross_q_o": 2 * 2 * s * d * d,
        "cross_k_v": 2 * 2 * L * d * d,
        "cross_attention": 2 * 2 * s * L * d if count_attention else 0,
        "ffn": 2 * 2 * s * d * f,
    }
    return parts


def embedding_flops(shape: WanShape, tokens: int, text_len: int) -> dict:
    """FLOPs outside the blocks for one row: patch embedding, text/time embeddings, head."""
    d = shape.dim
    return {
        "patch_embedding": 2 * tokens * shape.in_channels * shape.patch_volume * d,
        "text_embedding": 2 * text_len * (shape.text_dim * d + d * d),
        "time_embedding": 2 * (shape.freq_dim * d + d * d) + 2 * d * 6 * d,
        "head": 2 * tokens * d * shape.out_channels * shape.patch_volume,
    }


def base_row_flops(shape: WanShape, work: Workload, count_attention: bool = True) -> int:
    """FLOPs of the base model for one row and one call."""
    block = sum(video_block_flops(shape, work.video_tokens, work.text_len, count_attention).values())
    return shape.depth * block + sum(embedding_flops(shape, work.video_tokens, work.text_len).values())


def cached_extra_row_flops(shape: WanShape, work: Workload, count_attention: bool = True) -> int:
    """Stand-In's per-call extra with the cache, one row: video queries x R extra keys/values, every block."""
    if not count_attention:
        return 0
    return shape.depth * 2 * (2 * work.video_tokens * work.ref_tokens * shape.dim)


def reference_pass_flops(shape: WanShape, work: Workload, count_attention: bool = True) -> int:
    """One reference pass (R tokens, B = 1, t = 0, no cross-attention, LoRA on q/k/v; last block K/V only)."""
    d, f, r, R = shape.dim, shape.ffn, work.lora_rank, work.ref_tokens
    lora_one = 2 * R * d * r + 2 * R * r * d  # down then up
    full_block = 8 * R * d * d + 3 * lora_one + (4 * R * R * d if count_attention else 0) + 4 * R * d * f
    last_block = 4 * R * d * d + 2 * lora_one
    emb = 2 * R * shape.in_channels * shape.patch_volume * d + 2 * (shape.freq_dim * d + d * d) + 2 * d * 6 * d
    return (shape.depth - 1) * full_block + last_block + emb


def kv_cache_bytes(shape: WanShape, work: Workload, bytes_per_value: int) -> int:
    """Keys and values of every block for the reference: depth * 2 * R * d values."""
    return shape.depth * 2 * work.ref_tokens * shape.dim * bytes_per_value


def lora_parameters(shape: WanShape, rank: int) -> int:
    return shape.depth * 3 * 2 * rank * shape.dim


# ---------------------------------------------------------------- a whole sampling run

@dataclass(frozen=True)
class RunCost:
    base: int
    cached: int
    uncached: int
    reference_pass: int
    calls: int

    @property
    def cached_overhead(self) -> float:
        return self.cached / self.base - 1

    @property
    def uncached_overhead(self) -> float:
        return self.uncached / self.base - 1


def run_cost(shape: WanShape, work: Workload, count_attention: bool = True) -> RunCost:
    """FLOPs of a sampling run (steps * calls_per_step calls of rows_per_call rows) three ways.

    cached = base + every call's cached extra + ONE reference pass (the cache build at the first call);
    uncached = base + every call's cached extra + ref_passes_per_call reference passes per call.
    """
    calls = work.steps * work.calls_per_step
    base_call = work.rows_per_call * base_row_flops(shape, work, count_attention)
    extra_call = work.rows_per_call * cached_extra_row_flops(shape, work, count_attention)
    ref = reference_pass_flops(shape, work, count_attention)
    base = calls * base_call
    cached = base + calls * extra_call + ref
    uncached = base + calls * (extra_call + work.ref_passes_per_call * ref)
    return RunCost(base=base, cached=cached, uncached=uncached, reference_pass=ref, calls=calls)


def floor_overhead(shape: WanShape, work: Workload, count_attention: bool = True) -> float:
    """Steady-state cached overhead per call (no build): the analytic floor."""
    return cached_extra_row_flops(shape, work, count_attention) / base_row_flops(shape, work, count_attention)


def per_forward_overheads(shape: WanShape, work: Workload, count_attention: bool = True) -> dict:
    """The paper's per-forward view: one row, reference pass per forward (uncached) or none (cached)."""
    base = base_row_flops(shape, work, count_attention)
    extra = cached_extra_row_flops(shape, work, count_attention)
    ref = reference_pass_flops(shape, work, count_attention)
    return {"cached": extra / base, "uncached": (extra + ref) / base}


def attention_share(shape: WanShape, work: Workload) -> float:
    """Share of the base forward's FLOPs in the self-attention products (what the extra keys scale)."""
    parts = video_block_flops(shape, work.video_tokens, work.text_len)
    return shape.depth * parts["self_attention"] / base_row_flops(shape, work)


# ---------------------------------------------------------------- reports

def _pct(x: float) -> str:
    return f"{100 * x:+.3f}%"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def report(shape: WanShape, work: Workload, bytes_per_value: int, title: str) -> list[str]:
    """Human-readable lines for one configuration."""
    run = run_cost(shape, work)
    lines = [
        f"{title}: dim {shape.dim}, {shape.depth} blocks, {shape.heads} heads, ffn {shape.ffn}; "
        f"S={work.video_tokens} video, R={work.ref_tokens} reference (R/S={work.ref_tokens / work.video_tokens:.5f}), "
        f"text {work.text_len}, LoRA rank {work.lora_rank}; {work.steps} steps x {work.calls_per_step} call(s) x "
        f"{work.rows_per_call} row(s)",
        f"  base forward, one row:            {base_row_flops(shape, work) / 1e12:10.3f} TFLOP "
        f"(self-attention products {100 * attention_share(shape, work):.1f}%)",
        f"  cached extra per row per call:     {cached_extra_row_flops(shape, work) / 1e12:10.4f} TFLOP "
        f"-> floor {_pct(floor_overhead(shape, work))}",
        f"  reference pass (once per build):   {run.reference_pass / 1e12:10.4f} TFLOP",
        f"  sampling run: cached {_pct(run.cached_overhead)} (floor + one build / {run.calls} calls), "
        f"uncached {_pct(run.uncached_overhead)} ({work.ref_passes_per_call} reference pass(es) per call)",
        f"  K/V cache: {_bytes(kv_cache_bytes(shape, work, bytes_per_value))} at {bytes_per_value} B/value; "
        f"LoRA parameters {lora_parameters(shape, work.lora_rank) / 1e6:.1f}M",
    ]
    return lines


def paper_report() -> list[str]:
    """The paper's setting, both counting conventions, against the paper's figures."""
    shape, work = WAN21_14B, PAPER_WORKLOAD
    lines = report(shape, work, 2, "Paper setting (Wan2.1 14B, 832x480x81, 512x512 reference, bf16 cache)")
    full = per_forward_overheads(shape, work, True)
    linear = per_forward_overheads(shape, work, False)
    lines += [
        "  per forward (one row; uncached = reference tokens processed in the same forward), vs the paper:",
        f"    all matmuls (attention counted): cached {_pct(full['cached'])}, uncached {_pct(full['uncached'])}",
        f"    linear layers only:              cached {_pct(linear['cached'])}, uncached {_pct(linear['uncached'])}",
        f"    paper:                           cached {_pct(PAPER_FIGURES['flops_cached'])}, uncached "
        f"{_pct(PAPER_FIGURES['flops_uncached'])} FLOPs; time cached {_pct(PAPER_FIGURES['time_cached'])}, "
        f"uncached {_pct(PAPER_FIGURES['time_uncached'])}",
    ]
    return lines


def scaled_workload(base: Workload, **changes) -> Workload:
    return replace(base, **changes)


if __name__ == "__main__":
    print("\n".join(paper_report()))
