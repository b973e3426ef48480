"""The reference K/V cache.

K_I and V_I of every block depend only on:
  * the reference latent (its values, shape and dtype),
  * the Stand-In weights,
  * the base model's weights as patched at sampling time (a style LoRA changes the reference pass too),
  * the video's token grid (the reference's RoPE rows/cols start just past it) and any scale/shift of the video's
    RoPE positions (the reference's positions follow it),
  * the device and dtype the pass ran in.
Not on the prompt and not on the timestep (the reference runs at t = 0 and, as in the official code, without text
cross-attention), so one entry serves cond and uncond rows and every denoising step. :class:`CacheKey` holds exactly
these inputs; an entry is reused only under an equal key, and ``clear()`` drops it explicitly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Hashable, Optional, Sequence

import torch

from .reference import ReferenceKV

MODES = ("on", "off", "offload")


def tensor_fingerprint(tensor: torch.Tensor) -> str:
    """A content hash of a tensor (shape, dtype and values)."""
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha1(f"{tuple(data.shape)}|{data.dtype}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything a cached reference K/V depends on."""

    reference: str  # tensor_fingerprint of the reference latent
    weights: Hashable  # identity of the Stand-In weight set
    model_state: Hashable  # identity of the base weights + their patches (e.g. ComfyUI's patches_uuid)
    video_grid: tuple  # (rows, cols) of the video token grid: the reference positions depend on it
    device: str
    dtype: str
    positions_map: tuple = ()  # how the video's RoPE positions are scaled/shifted (positions.PositionMap), if at all


def kv_cache_bytes(depth: int, ref_tokens: int, width: int, bytes_per_value: int) -> int:
    """Size of one cache entry: keys and values of every block, [ref_tokens, width] each."""
    return depth * 2 * ref_tokens * width * bytes_per_value


def format_bytes(n: float) -> str:
    sign, n = ("-" if n < 0 else ""), abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.2f} {unit}"
        n /= 1024
    return f"{sign}{n} B"


class ReferenceKVCache:
    """Holds at most one entry (the reference K/V of every block) under its :class:`CacheKey`.

    mode "on": kept where it was computed; "offload": kept on ``storage_device`` between uses and moved to the
    compute device when used; "off": nothing kept, every lookup recomputes.
    """

    def __init__(self, mode: str = "on", storage_device=None):
        if mode not in MODES:
            raise ValueError(f"cache mode must be one of {MODES}, got {mode!r}")
        if mode == "offload" and storage_device is None:
            storage_device = torch.device("cpu")
        self.mode = mode
        self.storage_device = storage_device
        self._key: Optional[CacheKey] = None
        self._entry: Optional[list[ReferenceKV]] = None
        self.builds = 0
        self.hits = 0

    def get_or_build(self, key: CacheKey, build: Callable[[], Sequence[ReferenceKV]],
                     device=None) -> list[ReferenceKV]:
        """The K/V of every block for ``key``: the cached entry if its key is equal, else ``build()`` (and keep it)."""
        if self.mode != "off" and self._key == key and self._entry is not None:
            self.hits += 1
            if self.mode == "offload":
                return [kv.to(device, non_blocking=True) for kv in self._entry]
            return self._entry
        entry = list(build())
        self.builds += 1
        if self.mode == "off":
            return entry
        self._key = key
        self._entry = [kv.to(self.storage_device) for kv in entry] if self.mode == "offload" else entry
        return entry

    def clear(self) -> None:
        """Drop the entry (explicit invalidation; also what ends a sampling run)."""
        self._key = None
        self._entry = None

    @property
    def key(self) -> Optional[CacheKey]:
        return self._key

    @property
    def bytes_per_layer(self) -> list[int]:
        return [kv.nbytes for kv in self._entry] if self._entry else []

    @property
    def nbytes(self) -> int:
        return sum(self.bytes_per_layer)

    def describe(self) -> str:
        if not self._entry:
            return f"Stand-In K/V cache ({self.mode}): empty"
        where = self._entry[0].keys.device
        return (f"Stand-In K/V cache ({self.mode}): {len(self._entry)} layers x {format_bytes(self.bytes_per_layer[0])}"
                f" = {format_bytes(self.nbytes)} on {where}; {self.builds} build(s), {self.hits} hit(s)")
