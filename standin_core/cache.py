"""The reference K/V cache of one sampling run.

The reference tokens see neither the noisy video nor the prompt: they run at t = 0 and, as in the official code,
without text cross-attention. So within one run (one reference, one set of weights, one patched model) their K/V
change only with what :class:`CacheKey` holds: the video's token grid (the reference's RoPE rows/cols start just past
it) and any scale/shift of the video's positions, and the device and dtype the pass runs in. One entry per key serves
cond and uncond rows and every denoising step; area conditioning that crops the video to another grid gets its own
entry, built once and reused like the full frame's.

The nodes give every sampling run (and every multi-GPU work unit of it) a fresh cache and clear it when the run ends
(nodes/run_state.py), so nothing outlives its run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .reference import ReferenceKV

MODES = ("on", "off", "offload")


@dataclass(frozen=True)
class CacheKey:
    """What a run's reference K/V depend on (the reference, the weights and the model are fixed for a run)."""

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


class StreamedKV(Sequence[ReferenceKV]):
    """The reference K/V of every block, kept on a storage device and handed out on the compute device one block at a
    time: ``kv[i]`` is block i's K/V in one of TWO device slots, so the device holds two blocks' worth (not all).

    Reading block i also starts copying block i + 1 into the other slot. On CUDA that copy runs on a side stream from
    pinned host memory, after the compute stream has finished with what the slot held (an event recorded when block
    i was asked for, i.e. after everything block i - 1 queued), and the compute stream waits for a slot's copy
    before block i uses it. A slot's contents are valid until block i + 2 is asked for: the caller copies them
    into its [video; reference] buffers straight away. Blocks may be asked for out of order (skipped blocks);
    any block is then fetched on demand.
    """

    def __init__(self, entry: Sequence[ReferenceKV], device):
        self.entry = list(entry)
        self.device = torch.device(device)
        self.slots: list[Optional[ReferenceKV]] = [None, None]
        self.held = [-1, -1]  # which block each slot holds
        self.copied: list = [None, None]  # CUDA events: the copy into the slot is done
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.copies = 0  # host-to-device block copies made

    def __len__(self) -> int:
        return len(self.entry)

    def __getitem__(self, index: int) -> ReferenceKV:
        if not 0 <= index < len(self.entry):
            raise IndexError(index)
        released = torch.cuda.current_stream(self.device).record_event() if self.stream is not None else None
        if self.held[index % 2] != index:
            self._fetch(index, released)
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_event(self.copied[index % 2])
        if index + 1 < len(self.entry) and self.held[(index + 1) % 2] != index + 1:
            self._fetch(index + 1, released)  # prefetch the next block into the other slot
        return self.slots[index % 2]

    def _fetch(self, index: int, released) -> None:
        slot, source = index % 2, self.entry[index]
        if self.slots[slot] is None:
            self.slots[slot] = ReferenceKV(torch.empty_like(source.keys, device=self.device),
                                           torch.empty_like(source.values, device=self.device))
        target = self.slots[slot]
        if self.stream is None:
            target.keys.copy_(source.keys)
            target.values.copy_(source.values)
        else:
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(released)  # the compute stream is done with what this slot held
                target.keys.copy_(source.keys, non_blocking=True)
                target.values.copy_(source.values, non_blocking=True)
                self.copied[slot] = self.stream.record_event()
        self.held[slot] = index
        self.copies += 1

    @property
    def device_bytes(self) -> int:
        """Bytes this object holds on the compute device (its two slots)."""
        return sum(kv.nbytes for kv in self.slots if kv is not None)


class ReferenceKVCache:
    """The reference K/V of every block, one entry per :class:`CacheKey` met in the run.

    mode "on": kept where it was computed; "off": nothing kept, every lookup recomputes; "offload": each block's K/V
    is moved to ``storage_device`` (pinned when the compute device is CUDA) as soon as the reference pass has made
    it (:meth:`keep`), and every lookup hands out a :class:`StreamedKV` that brings one block at a time back to the
    compute device: the device holds two blocks' worth instead of all of them. Where storage and compute device are
    the same (a CPU-only run) there is nothing to move and the entry is handed out as it is, unless
    ``always_stream`` is set (the tests and the CPU benchmark use it to run the streaming path on the CPU).
    """

    always_stream = False

    def __init__(self, mode: str = "on", storage_device=None, always_stream: Optional[bool] = None):
        if always_stream is not None:
            self.always_stream = always_stream
        if mode not in MODES:
            raise ValueError(f"cache mode must be one of {MODES}, got {mode!r}")
        if mode == "offload" and storage_device is None:
            storage_device = torch.device("cpu")
        self.mode = mode
        self.storage_device = storage_device
        self.entries: dict[CacheKey, list[ReferenceKV]] = {}
        self.builds = 0
        self.hits = 0

    def keep(self, kv: ReferenceKV) -> ReferenceKV:
        """How one freshly built block's K/V is kept: as it is, or (offload) on the storage device, pinned for
        asynchronous copies when it comes from a CUDA device."""
        if self.mode != "offload":
            return kv
        stored = kv.to(self.storage_device)
        if kv.keys.device.type == "cuda" and stored.keys.device.type == "cpu":
            stored = ReferenceKV(stored.keys.pin_memory(), stored.values.pin_memory())
        return stored

    def get_or_build(self, key: CacheKey, build: Callable[[], Sequence[ReferenceKV]],
                     device=None) -> Sequence[ReferenceKV]:
        """The K/V of every block for ``key``: its entry if there is one, else ``build()`` (and keep it).

        ``build()`` should pass each block's K/V through :meth:`keep` as it makes them; any it returned elsewhere are
        moved here."""
        if self.mode != "off" and key in self.entries:
            self.hits += 1
            return self._hand_out(self.entries[key], device)
        entry = list(build())
        self.builds += 1
        if self.mode == "off":
            return entry
        if self.mode == "offload":
            entry = [kv if kv.keys.device == torch.device(self.storage_device) else self.keep(kv) for kv in entry]
        self.entries[key] = entry
        return self._hand_out(entry, device)

    def _hand_out(self, entry: list[ReferenceKV], device) -> Sequence[ReferenceKV]:
        if self.mode != "offload":
            return entry
        device = torch.device(device) if device is not None else entry[0].keys.device
        if device == entry[0].keys.device and not self.always_stream:
            return entry
        return StreamedKV(entry, device)

    def clear(self) -> None:
        """Drop every entry (what ends a sampling run)."""
        self.entries.clear()

    @property
    def nbytes(self) -> int:
        return sum(kv.nbytes for entry in self.entries.values() for kv in entry)

    def describe(self) -> str:
        if not self.entries:
            return f"Stand-In K/V cache ({self.mode}): empty"
        entry = next(iter(self.entries.values()))
        per_layer = format_bytes(entry[0].nbytes)
        grids = f" for {len(self.entries)} video grids" if len(self.entries) > 1 else ""
        return (f"Stand-In K/V cache ({self.mode}): {len(entry)} layers x {per_layer}{grids} = "
                f"{format_bytes(self.nbytes)} on {entry[0].keys.device}; {self.builds} build(s), {self.hits} hit(s)")
