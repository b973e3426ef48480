"""The reference K/V cache: one entry per key, modes, accounting, invalidation."""

import pytest
import torch

from comfyui_standin.standin_core import CacheKey, ReferenceKV, ReferenceKVCache, kv_cache_bytes
from comfyui_standin.standin_core.cache import StreamedKV

def entry(depth=3, tokens=4, width=8, dtype=torch.float32, value=1.0):
    return [ReferenceKV(torch.full((1, tokens, width), value, dtype=dtype),
                        torch.full((1, tokens, width), -value, dtype=dtype))
            for _ in range(depth)]


def key(**changes):
    fields = dict(video_grid=(30, 52), device="cpu", dtype="float32")
    fields.update(changes)
    return CacheKey(**fields)


def test_one_entry_per_key_each_built_once():
    """Every key gets its own entry, built once: the full frame and an area crop (another video grid) alternating
    call by call build two entries, not one per call, and each lookup returns its own key's entry."""
    cache = ReferenceKVCache("on")
    builds = []

    def build():
        builds.append(1)
        return entry(value=len(builds))

    first = cache.get_or_build(key(), build)
    assert cache.get_or_build(key(), build) is first
    changes = (dict(video_grid=(30, 40)), dict(dtype="bfloat16"), dict(device="cuda:0"),
               dict(positions_map=((1.0, 2.0, 1.0), (0.0, 0.0, 0.0))))
    for number, changed in enumerate(changes, start=2):
        got = cache.get_or_build(key(**changed), build)
        assert got[0].keys[0, 0, 0].item() == number  # its own entry, not another key's
    for _ in range(3):  # full frame and area crop alternating, as ComfyUI batches them step by step
        assert cache.get_or_build(key(), build) is first
        assert cache.get_or_build(key(video_grid=(30, 40)), build)[0].keys[0, 0, 0].item() == 2
    assert len(builds) == 5 and cache.hits == 7
    assert cache.nbytes == 5 * 3 * 2 * 4 * 8 * 4  # five entries: 3 layers of K and V, 4 x 8 float32 each


def test_off_mode_never_keeps_anything():
    cache = ReferenceKVCache("off")
    cache.get_or_build(key(), entry)
    cache.get_or_build(key(), entry)
    assert (cache.builds, cache.hits, cache.nbytes) == (2, 0, 0)


def test_offload_mode_stores_on_the_storage_device():
    """Kept on the storage device (here "meta", which no build uses) and streamed back from there block by block:
    even the build's own call gets the streamed entry (reading a meta tensor back fails, which proves it)."""
    cache = ReferenceKVCache("offload", storage_device=torch.device("meta"))
    got = cache.get_or_build(key(), lambda: entry(dtype=torch.bfloat16), device="cpu")
    assert isinstance(got, StreamedKV) and len(got) == 3
    assert " on meta;" in cache.describe() and cache.describe().startswith("Stand-In K/V cache (offload): 3 layers")
    assert all(kv.keys.device.type == "meta" and kv.values.device.type == "meta"
               for kv in next(iter(cache.entries.values())))
    with pytest.raises(NotImplementedError):
        got[0]
    again = cache.get_or_build(key(), lambda: pytest.fail("should be cached"), device="cpu")
    assert isinstance(again, StreamedKV) and (cache.builds, cache.hits) == (1, 1)


def test_offload_streams_one_block_at_a_time_through_two_device_slots(monkeypatch):
    """40 blocks stored: every block read back equals its stored K/V, but all of them come from the same two device
    slots (the device holds 2 blocks' worth, counted from the slots' own storages), each block is copied once when
    read in order, and blocks read out of order or again (skipped blocks) are still right."""
    monkeypatch.setattr(ReferenceKVCache, "always_stream", True)  # CPU storage and CPU "device": force the copies
    cache = ReferenceKVCache("offload", storage_device=torch.device("cpu"))
    stored = [ReferenceKV(torch.randn(1, 5, 8), torch.randn(1, 5, 8)) for _ in range(40)]
    streamed = cache.get_or_build(key(), lambda: [ReferenceKV(kv.keys.clone(), kv.values.clone()) for kv in stored],
                                  device="cpu")
    storages = set()
    for index in range(40):
        kv = streamed[index]
        assert torch.equal(kv.keys, stored[index].keys) and torch.equal(kv.values, stored[index].values)
        storages |= {kv.keys.untyped_storage().data_ptr(), kv.values.untyped_storage().data_ptr()}
    assert not storages & {t.untyped_storage().data_ptr()
                           for kv in next(iter(cache.entries.values())) for t in (kv.keys, kv.values)}
    assert len(storages) == 4  # keys and values of two slots
    assert streamed.device_bytes == 2 * stored[0].nbytes and streamed.copies == 40
    for index in (7, 9, 9, 3, 39, 0):
        assert torch.equal(streamed[index].values, stored[index].values)


def test_memory_accounting_by_hand():
    cache = ReferenceKVCache("on")
    cache.get_or_build(key(), lambda: entry(depth=5, tokens=7, width=16, dtype=torch.bfloat16))
    assert cache.nbytes == 5 * 2 * 7 * 16 * 2 == kv_cache_bytes(5, 7, 16, 2)
    # the paper's setting: Wan 14B, 40 blocks, 1024 reference tokens, width 5120, bf16 -> 0.78 GiB
    assert kv_cache_bytes(40, 1024, 5120, 2) == 838_860_800


def test_clear_invalidates():
    cache = ReferenceKVCache("on")
    cache.get_or_build(key(), entry)
    cache.clear()
    assert not cache.entries and cache.nbytes == 0
    cache.get_or_build(key(), entry)
    assert cache.builds == 2


def test_bad_mode():
    with pytest.raises(ValueError, match="cache mode"):
        ReferenceKVCache("sometimes")
