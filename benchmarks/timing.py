"""The timed sampling loop both benchmark stacks share (the Wan-like core stack and ComfyUI's WanModel)."""
from __future__ import annotations

import time

import torch

from comfyui_standin.standin_core.cache import ReferenceKVCache


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedSampler:
    """A sampling run (Euler, cfg with cond+uncond batched) advanced one model call at a time, so the variants can
    be interleaved call by call; every call is timed (wall and process CPU). Subclasses make the model call, or
    (``interleave_calls = False``) run the whole sampling in :meth:`sample_all`."""

    interleave_calls = True

    def __init__(self, latent: torch.Tensor, sigmas: torch.Tensor, cfg: float, device: torch.device):
        self.x, self.sigmas, self.cfg, self.device = latent.clone(), sigmas, cfg, device
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.cache_bytes = 0
        self.counts = (0, 0)

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def model_call(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def call(self, step: int) -> None:
        sigma, sigma_next = self.sigmas[step], self.sigmas[step + 1]
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = self.model_call(self.x.expand(2, -1, -1, -1, -1), sigma).float()
        uncond, cond = out.chunk(2)
        self.x = (self.x.float() + (sigma_next - sigma) * (uncond + self.cfg * (cond - uncond))).to(self.x.dtype)
        sync(self.device)
        self.wall.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        if step == self.steps - 1:
            self.finish()

    def finish(self) -> None:
        """Sampling ended."""

    def sample_all(self) -> None:
        for step in range(self.steps):
            self.call(step)


def cache_for(variant: str) -> ReferenceKVCache:
    """The K/V cache a Stand-In variant runs with. "offload" keeps the K/V in CPU memory and streams them block by
    block (also on a CPU run, where it then times the copies)."""
    if variant == "offload":
        return ReferenceKVCache("offload", storage_device=torch.device("cpu"), always_stream=True)
    return ReferenceKVCache("off" if variant == "uncached" else "on")
