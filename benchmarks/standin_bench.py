"""Time Stand-In against the base Wan model: base, Stand-In with the K/V cache, Stand-In without it.

One process, one model, the three variants interleaved round by round (the order rotates every round); each
variant samples ``--steps`` denoising steps with cond and uncond batched in one call (ComfyUI at cfg > 1). Reported:
median ratio of each variant's sampling time to base in the same round (with min/max over rounds), the same for
the steady-state calls (every call after the first, i.e. without the one-time cache build), peak memory, the cache
size, and the analytic figures of :mod:`benchmarks.analytic` for the configuration actually timed.

    # CPU, reduced shape, the paper's R/S ratio
    .venv/bin/python -m comfyui_standin.benchmarks.standin_bench
    # Wan2.1 14B shape on a GPU
    python3 -m comfyui_standin.benchmarks.standin_bench --device cuda --dtype bf16 --paper-shape
    # ComfyUI's real WanModel
    COMFYUI_PATH=/path/to/ComfyUI PYTHONPATH=/path/to/ComfyUI \
        python -m comfyui_standin.benchmarks.standin_bench --comfyui

The model is :class:`benchmarks.wan_like.WanLike` (ComfyUI's Wan attribute names, random weights) and the Stand-In
path is the core as the pack runs it: :func:`standin_core.reference.video_self_attention` with the reusable
[video; reference] K/V buffers, and :func:`standin_core.reference.reference_branch` behind
:class:`standin_core.cache.ReferenceKVCache`. With ``--comfyui`` the model is ComfyUI's own ``WanModel`` and the
Stand-In path is the pack's ComfyUI glue itself (:mod:`benchmarks.comfy_model`). ``--with-concat`` adds a fourth
variant: the cached path with a ``torch.cat`` of the K/V in every block instead of the buffers (what it saves).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from comfyui_standin.standin_core.attention import JointKVBuffers, sdpa_attention
from comfyui_standin.standin_core.cache import CacheKey
from comfyui_standin.standin_core.cache import format_bytes as fmt_bytes
from comfyui_standin.standin_core.positions import rope_rotations, video_positions
from comfyui_standin.standin_core.reference import reference_branch, video_self_attention
from comfyui_standin.standin_core.weights import StandInWeights, standin_weights_from_state_dict
from comfyui_standin.devtools.tiny_models import random_standin_state_dict

from comfyui_standin.benchmarks import analytic
from comfyui_standin.benchmarks.timing import TimedSampler, cache_for, sync
from comfyui_standin.benchmarks.wan_like import WanLike, base_self_attention

log = logging.getLogger("standin_bench")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# CPU default: the paper's proportions at 1/20 of the width (head dim 128 as in Wan). S/d (6.4 in the paper, 6.25
# here) fixes the attention share of the FLOPs, so the analytic floor is the paper's (~1.6%); R/S = 50/1600 = 0.03125
# (paper 1024/32760 = 0.03126); text L/d and LoRA rank/d about the paper's (0.1 and 1/40).
CPU_DEFAULT = dict(dim=256, depth=4, heads=2, ffn=691, frames=4, height=20, width=20, ref_height=5,
                   ref_width=10, text_len=26, rank=8, steps=4, rounds=12)
PAPER_SHAPE = dict(dim=5120, depth=40, heads=40, ffn=13824, frames=21, height=30, width=52, ref_height=32,
                   ref_width=32, text_len=512, rank=128)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads"


# ---------------------------------------------------------------- memory

class PeakMemory:
    """Peak memory of a region: CUDA allocator peak, or the process's peak RSS (VmHWM reset via clear_refs)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._libc = None
        if device.type != "cuda":
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = None

    @staticmethod
    def _status(field_name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            if self._libc is not None:
                self._libc.malloc_trim(0)  # give freed arenas back so RSS starts from live memory
            self.before = self._status("VmRSS")
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
                self.hwm_reset = True
            except OSError:
                self.hwm_reset = False
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = self._status("VmHWM") if self.hwm_reset else self._status("VmRSS")
        self.delta = self.peak - self.before
        return False


# ---------------------------------------------------------------- the setup

@dataclass
class Setup:
    model: WanLike
    weights: StandInWeights
    loras: list
    latent: torch.Tensor  # [1, 16, F, 2H, 2W]
    ref_latent: torch.Tensor  # [1, 16, 1, 2Hr, 2Wr]
    context: torch.Tensor  # [2, L, text_dim]: uncond, cond
    video_rot: torch.Tensor
    cache_key: CacheKey
    sigmas: torch.Tensor
    device: torch.device
    dtype: torch.dtype
    cfg: float
    video_grid: tuple  # token grid (frames, rows, cols)


def random_standin_weights(depth: int, width: int, rank: int, device, dtype) -> StandInWeights:
    sd = random_standin_state_dict(width, depth, rank, seed=1, down_std=1 / width ** 0.5, up_std=0.01 / rank ** 0.5)
    weights = standin_weights_from_state_dict(sd, source="<random>")
    return StandInWeights(weights.blocks_on(device, dtype), source="<random>")


def build_setup(cfg: dict, device: torch.device, dtype: torch.dtype) -> Setup:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = WanLike(cfg["dim"], cfg["depth"], cfg["heads"], cfg["ffn"], device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    sync(device)
    log.info("model built on %s in %.1f s (%.2f B parameters)", device, time.perf_counter() - t0,
             sum(p.numel() for p in model.parameters()) / 1e9)
    weights = random_standin_weights(cfg["depth"], cfg["dim"], cfg["rank"], device, dtype)
    loras = weights.blocks  # built on the device in the model dtype: moved once, reused by every pass
    head_dim = cfg["dim"] // cfg["heads"]
    frames, height, width = cfg["frames"], cfg["height"], cfg["width"]
    latent = torch.randn(1, 16, frames, 2 * height, 2 * width, device=device, dtype=torch.float32)
    ref_latent = torch.randn(1, 16, 1, 2 * cfg["ref_height"], 2 * cfg["ref_width"], device=device)
    context = torch.randn(2, cfg["text_len"], 4096, device=device, dtype=dtype)
    video_rot = rope_rotations(video_positions(frames, height, width), head_dim).to(device)
    key = CacheKey(video_grid=(height, width), device=str(device), dtype=str(dtype))
    sigmas = torch.linspace(1.0, 0.0, cfg["steps"] + 1, device=device)
    return Setup(model, weights, loras, latent, ref_latent, context, video_rot, key, sigmas, device, dtype,
                 cfg=5.0, video_grid=(frames, height, width))


def reference_pass(s: Setup, keep=lambda kv: kv):
    """The whole reference branch (the core's one implementation) on the Wan-like model."""
    return reference_branch(s.model.parts(), s.ref_latent, s.video_grid, s.loras, s.dtype, s.device, keep=keep)



class Sampler(TimedSampler):
    """One variant on the Wan-like stack, with the core's Stand-In path."""

    def __init__(self, s: Setup, variant: str):
        super().__init__(s.latent, s.sigmas, s.cfg, s.device)
        self.s, self.variant = s, variant
        self.cache = None
        if variant != "base":
            self.cache = cache_for(variant)
        self.buffers = None if variant == "concat" else JointKVBuffers()

    def model_call(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = self.s
        if self.cache is None:
            def attention(i, sa, h, freqs):
                return base_self_attention(i, sa, h, freqs, self.buffers)
        else:
            kv = self.cache.get_or_build(s.cache_key, lambda: reference_pass(s, self.cache.keep), device=s.device)

            def attention(i, sa, h, freqs, kv=kv):
                return video_self_attention(sa, h, freqs, sa.heads, kv[i], buffers=self.buffers)
        return s.model(x, (sigma * 1000).expand(2), s.context, s.video_rot, attention)

    def finish(self) -> None:
        if self.cache is not None:
            self.cache_bytes = self.cache.nbytes
            self.counts = (self.cache.builds, self.cache.hits)
            self.cache.clear()  # sampling ended: the cache is freed
        if self.buffers is not None:
            self.buffers.release()


def run_round(make_sampler, variants: list[str], rotate: int) -> dict:
    """All variants sample side by side: at every step each variant makes its call (order rotated per step), or,
    where the sampler runs whole runs (ComfyUI's), each variant samples in turn (order rotated per round)."""
    samplers = {v: make_sampler(v) for v in variants}
    if not samplers[variants[0]].interleave_calls:
        k = rotate % len(variants)
        for v in variants[k:] + variants[:k]:
            samplers[v].sample_all()
        return samplers
    for step in range(samplers[variants[0]].steps):
        k = (rotate + step) % len(variants)
        for v in variants[k:] + variants[:k]:
            samplers[v].call(step)
    return samplers


def attention_kernel_floor(cfg: dict, device: torch.device, dtype: torch.dtype, reps: int) -> dict:
    """Time the attention kernel alone over S keys and over S + R keys (interleaved), and the K/V concatenation."""
    batch, width, heads = 2, cfg["dim"], cfg["heads"]
    seq = cfg["frames"] * cfg["height"] * cfg["width"]
    refs = cfg["ref_height"] * cfg["ref_width"]
    q = torch.randn(batch, seq, width, device=device, dtype=dtype)
    k = torch.randn(batch, seq, width, device=device, dtype=dtype)
    v = torch.randn_like(k)
    rk = torch.randn(1, refs, width, device=device, dtype=dtype)
    rv = torch.randn_like(rk)
    kk = torch.cat([k, rk.expand(batch, -1, -1)], 1)
    vv = torch.cat([v, rv.expand(batch, -1, -1)], 1)
    plain, extended, concat = [], [], []

    def timed(fn):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    for _ in range(2):  # warmup
        sdpa_attention(q, k, v, heads)
        sdpa_attention(q, kk, vv, heads)
    for _ in range(reps):
        plain.append(timed(lambda: sdpa_attention(q, k, v, heads)))
        extended.append(timed(lambda: sdpa_attention(q, kk, vv, heads)))
        concat.append(timed(lambda: (torch.cat([k, rk.expand(batch, -1, -1)], 1),
                                     torch.cat([v, rv.expand(batch, -1, -1)], 1))))
    return {"attention_s": statistics.median(plain), "attention_s_plus_r": statistics.median(extended),
            "kv_concat": statistics.median(concat)}


# ---------------------------------------------------------------- report

@dataclass
class Result:
    device: str
    device_type: str
    command: str
    config: dict
    dtype: str
    analytic: dict
    measured: dict = field(default_factory=dict)


def summarize(values: list[float]) -> dict:
    ordered = sorted(values)
    n = len(ordered)
    q1 = ordered[(n - 1) // 4]
    q3 = ordered[-1 - (n - 1) // 4]
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "q1": q1, "q3": q3,
            "n": n}


def pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="fp32 on CPU, bf16 on CUDA by default")
    p.add_argument("--paper-shape", action="store_true",
                   help="Wan2.1 14B shape: dim 5120, 40 blocks, ffn 13824, S=32760, R=1024, text 512 (GPU)")
    for name in ("dim", "depth", "heads", "ffn", "frames", "height", "width", "ref_height", "ref_width",
                 "text_len", "rank", "steps", "rounds"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed rounds first (default 1; 0 with --paper-shape, where the memory runs warm up)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default 1 on CPU: on a shared 2-core machine a second thread is no faster "
                        "and makes the timings noisier)")
    p.add_argument("--with-concat", action="store_true",
                   help="also time the cached path with a torch.cat of the K/V per block (instead of the buffers)")
    p.add_argument("--with-offload", action="store_true",
                   help="also time the offload cache: K/V in CPU memory, streamed to the device block by block")
    p.add_argument("--comfyui", action="store_true",
                   help="time ComfyUI's real WanModel with the pack's ComfyUI glue (needs COMFYUI_PATH)")
    p.add_argument("--kernel-reps", type=int, default=5, help="repetitions of the isolated attention timing")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.error("--device cuda but torch sees no CUDA device")
        return 2
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    cfg = dict(CPU_DEFAULT)
    if args.paper_shape:
        cfg.update(PAPER_SHAPE, steps=2, rounds=3)
    if args.warmup is None:
        args.warmup = 0 if args.paper_shape else 1
    for name in cfg:
        value = getattr(args, name, None)
        if value is not None:
            cfg[name] = value
    if cfg["dim"] % cfg["heads"]:
        raise SystemExit("--dim must be a multiple of --heads")

    shape = analytic.WanShape(dim=cfg["dim"], depth=cfg["depth"], heads=cfg["heads"], ffn=cfg["ffn"])
    seq = cfg["frames"] * cfg["height"] * cfg["width"]
    refs = cfg["ref_height"] * cfg["ref_width"]
    work = analytic.Workload(video_tokens=seq, ref_tokens=refs, text_len=cfg["text_len"], lora_rank=cfg["rank"],
                             steps=cfg["steps"], rows_per_call=2, calls_per_step=1, ref_passes_per_call=1)
    elem = torch.tensor([], dtype=dtype).element_size()
    run = analytic.run_cost(shape, work)
    ana = {"floor": analytic.floor_overhead(shape, work), "cached_run": run.cached_overhead,
           "uncached_run": run.uncached_overhead, "cache_bytes": analytic.kv_cache_bytes(shape, work, elem),
           "attention_share": analytic.attention_share(shape, work),
           "base_call_tflop": 2 * analytic.base_row_flops(shape, work) / 1e12,
           "reference_pass_tflop": run.reference_pass / 1e12,
           "per_forward_linear_only_uncached": analytic.per_forward_overheads(shape, work, False)["uncached"],
           "per_forward_uncached": analytic.per_forward_overheads(shape, work)["uncached"]}
    command = "python -m comfyui_standin.benchmarks.standin_bench " + " ".join(sys.argv[1:] if argv is None else argv)
    result = Result(device=device_name(device), device_type=device.type, command=command.strip(), config=cfg,
                    dtype=dtype_name, analytic=ana)

    variants = (["base", "cached", "uncached"] + (["offload"] if args.with_offload else [])
                + (["concat"] if args.with_concat else []))
    if args.comfyui and args.with_concat:
        raise SystemExit("--with-concat times the core path; it is not available with --comfyui")

    with torch.inference_mode():
        if args.comfyui:
            from comfyui_standin.benchmarks.comfy_model import ComfySampler, ComfySetup
            s = ComfySetup(cfg, device, dtype)
            result.device += f"; ComfyUI {s.version} WanModel sampled by ComfyUI, Stand-In by the pack's apply_standin"

            def make_sampler(variant):
                return ComfySampler(s, variant)
        else:
            s = build_setup(cfg, device, dtype)

            def make_sampler(variant):
                return Sampler(s, variant)
        rounds = []
        memory = {}
        finals = {}
        for r in range(args.warmup):
            samplers = run_round(make_sampler, variants, r)
            log.info("warmup round %d/%d: %s", r + 1, args.warmup,
                     ", ".join(f"{v} {sum(samplers[v].wall):.2f}s" for v in variants))
        for variant in variants:  # memory: one untimed run per variant, alone (the peak is per region)
            with PeakMemory(device) as mem:
                sampler = make_sampler(variant)
                sampler.sample_all()
            memory[variant] = {"peak": mem.peak, "delta": mem.delta}
            finals[variant] = sampler.x
            if not torch.isfinite(sampler.x).all():
                log.warning("%s: the sampled latent is not finite (random weights); timings are still valid", variant)
            if variant != "base":
                result.measured.setdefault("cache_bytes", sampler.cache_bytes)
                result.measured[f"{variant}_builds_hits"] = sampler.counts
            log.info("memory run %s: %.2f s, peak %s", variant, sum(sampler.wall), fmt_bytes(mem.peak))
        for r in range(cfg["rounds"]):
            samplers = run_round(make_sampler, variants, args.warmup + r)
            rounds.append(samplers)
            log.info("round %d/%d: %s", r + 1, cfg["rounds"],
                     ", ".join(f"{v} {sum(samplers[v].wall):.2f}s" for v in variants))
        kernel = attention_kernel_floor(cfg, device, dtype, args.kernel_reps)
    # Self-checks of what was timed: every Stand-In variant samples the same latent bit for bit (the cache and the
    # buffers change nothing), and it is not the base model's latent (the reference is really attended to).
    result.measured["same_latent_as_cached"] = {v: bool(torch.equal(finals[v], finals["cached"]))
                                                for v in variants if v != "cached"}

    m = result.measured
    clocks = ("wall", "cpu") if device.type == "cpu" else ("wall",)
    for clock in clocks:
        base_runs = [sum(getattr(r["base"], clock)) for r in rounds]
        mc = m.setdefault(clock, {})
        mc["base_run_s"] = summarize(base_runs)
        mc["base_call_s"] = summarize([x for r in rounds for x in getattr(r["base"], clock)[1:]])
        for variant in variants[1:]:
            runs = [sum(getattr(r[variant], clock)) for r in rounds]
            steady = [a / b - 1 for r in rounds
                      for a, b in zip(getattr(r[variant], clock)[1:], getattr(r["base"], clock)[1:])]
            mc[variant] = {"run": summarize([a / b - 1 for a, b in zip(runs, base_runs)]),
                           "steady": summarize(steady)}
    base_call = m["wall"]["base_call_s"]["median"]
    m["memory"] = memory
    m["kernel"] = kernel
    m["kernel_floor"] = cfg["depth"] * (kernel["attention_s_plus_r"] - kernel["attention_s"]) / base_call
    m["concat_share"] = cfg["depth"] * kernel["kv_concat"] / base_call

    lines = report(result, shape, work, variants)
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2, default=str))
    return 0


CLOCK_LABEL = {"wall": "wall-clock time", "cpu": "process CPU time (robust to other processes sharing the cores)"}


def primary_clock(measured: dict) -> str:
    return "cpu" if "cpu" in measured else "wall"


def report(result: Result, shape, work, variants) -> list[str]:
    cfg, a, m = result.config, result.analytic, result.measured
    lines = [
        "=" * 100,
        "Stand-In benchmark",
        f"machine: {result.device}",
        f"command: {result.command}",
        f"dtype {result.dtype}; dim {cfg['dim']}, {cfg['depth']} blocks, {cfg['heads']} heads, ffn {cfg['ffn']}; "
        f"video {cfg['frames']}x{cfg['height']}x{cfg['width']} = {work.video_tokens} tokens, reference "
        f"{cfg['ref_height']}x{cfg['ref_width']} = {work.ref_tokens} tokens (R/S = "
        f"{work.ref_tokens / work.video_tokens:.5f}; paper 1024/32760 = 0.03126), text {cfg['text_len']}, "
        f"LoRA rank {cfg['rank']}",
        f"sampling: {cfg['steps']} steps, cond+uncond batched (2 rows per call); {cfg['rounds']} timed rounds; "
        f"the variants are interleaved call by call (order rotated every call)",
        "",
        "analytic (FLOPs, all matmuls incl. attention; benchmarks/analytic.py):",
        f"  base call (2 rows): {a['base_call_tflop']:.4f} TFLOP; self-attention products "
        f"{100 * a['attention_share']:.1f}% of it; reference pass {a['reference_pass_tflop']:.5f} TFLOP",
        f"  floor (cached, per call, steady state): {pct(a['floor'])}",
        f"  cached sampling run (floor + one build over {cfg['steps']} calls): {pct(a['cached_run'])}",
        f"  uncached sampling run (reference pass every call, shared by both rows): {pct(a['uncached_run'])}",
        f"  K/V cache: {fmt_bytes(a['cache_bytes'])}",
    ]
    for clock in (["cpu", "wall"] if "cpu" in m else ["wall"]):
        mc = m[clock]
        lines += [
            "",
            f"measured, {CLOCK_LABEL[clock]}: ratio to base; median [min, max] over rounds (run) or over "
            f"call pairs (steady):",
            f"  base: sampling run {mc['base_run_s']['median']:.3f} s [{mc['base_run_s']['min']:.3f}, "
            f"{mc['base_run_s']['max']:.3f}], steady call {mc['base_call_s']['median']:.3f} s",
        ]
        for v in variants[1:]:
            run, steady = mc[v]["run"], mc[v]["steady"]
            label = {"cached": "Stand-In cached", "uncached": "Stand-In uncached",
                     "offload": "Stand-In offload (streamed)", "concat": "Stand-In cached, torch.cat K/V"}[v]
            lines.append(f"  {label:31s} run {pct(run['median'])} [{pct(run['min'])}, {pct(run['max'])}]  "
                         f"steady call {pct(steady['median'])} [IQR {pct(steady['q1'])}, {pct(steady['q3'])}]")
    k = m["kernel"]
    lines += [
        "",
        f"attention kernel alone (wall): S keys {1e3 * k['attention_s']:.2f} ms, S+R keys "
        f"{1e3 * k['attention_s_plus_r']:.2f} ms per block -> kernel floor {pct(m['kernel_floor'])} of a base call; "
        f"K/V concat {1e3 * k['kv_concat']:.3f} ms per block = {pct(m['concat_share'])} of a base call",
        f"cache: {fmt_bytes(m.get('cache_bytes', 0))} measured (analytic {fmt_bytes(a['cache_bytes'])}); "
        f"builds/hits per run: cached {m.get('cached_builds_hits')}, uncached {m.get('uncached_builds_hits')}"
        + (f", offload {m.get('offload_builds_hits')}" if "offload_builds_hits" in m else ""),
        "sampled latent bit-identical to the cached run's: " + ", ".join(
            f"{v} {'yes' if same else 'NO'}" for v, same in m["same_latent_as_cached"].items()),
        "peak memory (" + ("CUDA max_memory_allocated" if result.device_type == "cuda" else
                           "process peak RSS, VmHWM") + "; + = above the memory in use before the run):",
    ]
    for v, mem in m["memory"].items():
        lines.append(f"  {v:10s} peak {fmt_bytes(mem['peak'])}, +{fmt_bytes(mem['delta'])}")
    clock = primary_clock(m)
    cached, uncached = m[clock]["cached"], m[clock]["uncached"]
    lines += [
        "",
        f"judged ({CLOCK_LABEL[clock]}):",
        f"  cached overhead: run {pct(cached['run']['median'])} vs analytic {pct(a['cached_run'])} -> "
        f"{cached['run']['median'] / a['cached_run']:.2f}x; steady call {pct(cached['steady']['median'])} vs floor "
        f"{pct(a['floor'])} -> {cached['steady']['median'] / a['floor']:.2f}x (limit 1.2x)",
        f"  uncached overhead: run {pct(uncached['run']['median'])} (analytic {pct(a['uncached_run'])}; paper +3.6% "
        f"time, +2.6% FLOPs)",
    ]
    if "offload" in m[clock]:
        offload = m[clock]["offload"]
        ratio = (1 + offload['steady']['median']) / (1 + cached['steady']['median'])
        lines.append(f"  offload (streamed) steady call {pct(offload['steady']['median'])} vs cached "
                     f"{pct(cached['steady']['median'])} -> {ratio:.3f}x the cached call time (limit 1.10x)")
    lines.append("=" * 100)
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
