"""The ranks of the sequence-parallel attention tests: one process per rank, gloo on 127.0.0.1.

:func:`run_world` starts ``world`` processes (torch.multiprocessing, spawn) that each run every case of that world
size from ``folder/cases.pt`` through :func:`standin_core.parallel.sequence_parallel_attention` on their own shard
of the tokens and save their output shards to ``folder/rank<r>.pt``. The test process computes the oracle itself.

Layouts (the sequence-parallel rank r holds the r-th contiguous 1/P of the tokens, as raylight splits them):
  * "U2": one Ulysses group of 2, no ring;  "R2": one ring group of 2, no Ulysses;
  * "U2R2": 4 ranks, Ulysses groups {0, 1} and {2, 3}, ring groups {0, 2} and {1, 3}: Ulysses rank r % 2 and ring
    rank r // 2, the layout yunchang builds with ``use_ulysses_low`` (xfuser's default).
Case kinds: "standin" gives each rank its Ulysses head slice of the reference (the method); "whole_reference" is the
negative control, the whole reference appended to every rank's keys and values before the all-to-all.
"""
from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

LAYOUTS = {"U2": 2, "R2": 2, "U2R2": 4}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _groups(world: int) -> dict:
    """Every layout's (ulysses_group, ring_group) for this rank; every rank creates every group in the same order."""
    rank = dist.get_rank()
    if world == 2:
        pair = dist.new_group([0, 1])
        return {"U2": (pair, None), "R2": (None, pair)}
    ulysses = [dist.new_group(ranks) for ranks in ([0, 1], [2, 3])]
    ring = [dist.new_group(ranks) for ranks in ([0, 2], [1, 3])]
    return {"U2R2": (ulysses[rank // 2], ring[rank % 2])}


def _rank_main(rank: int, world: int, port: int, folder: str) -> None:
    from comfyui_standin.standin_core.parallel import group_degree, group_rank, local_reference_heads, \
        sequence_parallel_attention
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        groups = _groups(world)
        outputs = {}
        for name, case in torch.load(Path(folder) / "cases.pt").items():
            if case["layout"] not in groups:
                continue
            ulysses_group, ring_group = groups[case["layout"]]
            heads = case["heads"]

            def shard(t):
                return t.chunk(world, dim=1)[rank].contiguous()

            q, k, v = shard(case["q"]), shard(case["k"]), shard(case["v"])
            ref_k, ref_v = case["ref_k"], case["ref_v"]
            if case["kind"] == "whole_reference":
                batch = q.shape[0]
                k = torch.cat([k, ref_k.expand(batch, -1, -1)], dim=1)
                v = torch.cat([v, ref_v.expand(batch, -1, -1)], dim=1)
                ref_k = ref_v = None
            else:
                degree, ulysses_rank = group_degree(ulysses_group), group_rank(ulysses_group)
                ref_k = local_reference_heads(ref_k, heads, ulysses_rank, degree)
                ref_v = local_reference_heads(ref_v, heads, ulysses_rank, degree)
            outputs[name] = sequence_parallel_attention(q, k, v, ref_k, ref_v, heads, case["strength"],
                                                        ulysses_group=ulysses_group, ring_group=ring_group)
        torch.save(outputs, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_world(world: int, folder: Path, timeout: float = 120.0) -> list:
    """Run ``world`` ranks over the cases in ``folder``; returns each rank's {case: output shard}."""
    return spawn_ranks(_rank_main, world, (str(folder),), folder, timeout)


def spawn_ranks(main, world: int, args: tuple, folder: Path, timeout: float, what: str = "ranks") -> list:
    """Start ``main(rank, world, port, *args)`` in ``world`` spawned processes (one thread each: tiny tensors, 2
    shared cores), wait at most ``timeout`` seconds, and return what each rank saved as ``folder/rank<i>.pt``."""
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the children inherit it
    try:
        context = mp.start_processes(main, args=(world, free_port(), *args), nprocs=world, join=False,
                                     start_method="spawn")
    finally:
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world} {what} did not finish within {timeout:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    return [torch.load(Path(folder) / f"rank{rank}.pt") for rank in range(world)]
