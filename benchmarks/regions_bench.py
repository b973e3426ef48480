"""Time the video self-attention with two references: all references (the official baseline), regions (this pack's
own), and one and four references, interleaved in one process, with ratios to the all-references attention and, for
the references without regions, the ratio to one reference that their key count predicts.

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
    four_k, four_v = ref_k.repeat(1, 2, 1), ref_v.repeat(1, 2, 1)  # four references' keys: the key count is what counts
    regions = torch.zeros(2, seq, dtype=torch.bool, device=device)
    regions[0, :seq // 3], regions[1, 2 * seq // 3:] = True, True
    variants = {
        "all references": lambda: restricted_attention(q, k, v, ref_k, ref_v, heads),
        "regions, outside all": lambda: regional_attention(q, k, v, ref_k, ref_v, regions, heads),
        "regions, outside none": lambda: regional_attention(q, k, v, ref_k, ref_v, regions, heads, outside="none"),
        "one reference": lambda: restricted_attention(q, k, v, ref_k[:, :per], ref_v[:, :per], heads),
        "four references": lambda: restricted_attention(q, k, v, four_k, four_v, heads),
    }
    # on a CPU with one thread every operation runs on this thread: its CPU time leaves out the time other processes
    # take the core (what made wall-clock ratios of a few percent unreadable on a shared machine); on a GPU, wall time
    clock = time.thread_time if device.type == "cpu" and args.threads == 1 else time.perf_counter
    times = {name: [] for name in variants}
    with torch.inference_mode():
        for name in variants:  # warm-up
            variants[name]()
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 else list(variants)[::-1]
            for name in order:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = clock()
                variants[name]()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[name].append(clock() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["all references"]
    print(f"video self-attention, 2 x {seq} video tokens, width {width}, {heads} heads, 2 references of {per} "
          f"tokens, {args.dtype} on {device} ({args.threads} thread(s) on a CPU), "
          f"{'CPU time of this thread' if clock is time.thread_time else 'wall time'}, median of {args.rounds} "
          "rounds (and the middle half of the rounds, the noise to read the ratios against):")
    for name, value in medians.items():
        low, _, high = statistics.quantiles(times[name], n=4)
        print(f"  {name:24s} {value * 1e3:9.2f} ms  {value / base:.3f}x all references  (middle half "
              f"{low / value - 1:+.1%} .. {high / value - 1:+.1%})")
    one = medians["one reference"]
    for name, count in (("all references", 2), ("four references", 4)):
        print(f"  {name} / one reference {medians[name] / one:.3f}x (key count predicts "
              f"{(seq + count * per) / (seq + per):.3f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
