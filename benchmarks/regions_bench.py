"""Time the video self-attention with two references: all references (the official baseline), regions (this pack's
own), and one reference, interleaved in one process, with ratios to the all-references attention.

    .venv/bin/python -m comfyui_standin.benchmarks.regions_bench                    # CPU proxy (1 thread)
    python -m comfyui_standin.benchmarks.regions_bench --device cuda --dtype bf16 --paper-shape

The paper's shape is Wan 14B at 832x480x81 (S = 32,760 video tokens, width 5,120, 40 heads) with 1,024 tokens per
reference; the CPU proxy keeps its ratio of reference to video tokens at a width and length a CPU can time. The
regions are thirds of the frame: person 1 on the left, person 2 on the right, the middle outside both.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from comfyui_standin.standin_core import restricted_attention
from comfyui_standin.standin_core.regions import regional_attention

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--paper-shape", action="store_true", help="S 32,760, width 5,120, 40 heads, R 1,024")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    seq, width, heads, per = (32760, 5120, 40, 1024) if args.paper_shape else (4096, 1536, 12, 128)
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    q, k, v = rand(2, seq, width), rand(2, seq, width), rand(2, seq, width)
    ref_k, ref_v = rand(1, 2 * per, width), rand(1, 2 * per, width)
    regions = torch.zeros(2, seq, dtype=torch.bool, device=device)
    regions[0, :seq // 3], regions[1, 2 * seq // 3:] = True, True
    variants = {
        "all references": lambda: restricted_attention(q, k, v, ref_k, ref_v, heads),
        "regions, outside all": lambda: regional_attention(q, k, v, ref_k, ref_v, regions, heads),
        "regions, outside none": lambda: regional_attention(q, k, v, ref_k, ref_v, regions, heads, outside="none"),
        "one reference": lambda: restricted_attention(q, k, v, ref_k[:, :per], ref_v[:, :per], heads),
    }
    times = {name: [] for name in variants}
    with torch.inference_mode():
        for name in variants:  # warm-up
            variants[name]()
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 else list(variants)[::-1]
            for name in order:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                variants[name]()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["all references"]
    print(f"video self-attention, 2 x {seq} video tokens, width {width}, {heads} heads, 2 references of {per} "
          f"tokens, {args.dtype} on {device} ({args.threads} thread(s) on a CPU), median of {args.rounds} rounds:")
    for name, value in medians.items():
        print(f"  {name:24s} {value * 1e3:9.2f} ms  {value / base:.3f}x all references")
    predicted = (seq + 2 * per) / (seq + per)
    print(f"  all references / one reference {base / medians['one reference']:.3f}x (key count predicts "
          f"{predicted:.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
