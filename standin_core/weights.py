"""The Stand-In weight set: per block, a rank-r LoRA on the q, k and v projections of the reference tokens.

Official layout (``Stand-In_wan2.1_T2V_14B.ckpt`` and the Wan2.2 high/low files): 240 tensors
``blocks.{i}.self_attn.{q,k,v}_loras.{down,up}.weight`` with down [r, width] and up [width, r], no bias, no alpha
(delta = up(down(x)) at scale 1), optionally wrapped in ``{"state_dict": ...}``. Community safetensors repacks carry
the same keys behind a ``diffusion_model.`` prefix, in fp32 or fp16.

Loading is safe by construction: safetensors holds only tensors, and ``.ckpt``/``.pt``/``.pth`` files go through
``torch.load(weights_only=True)``, which refuses any pickled object that is not a tensor or a plain container, so no
code inside a file ever runs. A safetensors header is read and checked first (its length, every tensor's byte range
against the file, the total against :data:`MAX_FILE_BYTES`), so a header that declares absurd shapes is refused
before anything is allocated.
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass

import torch

PROJECTIONS = ("q", "k", "v")
_KEY = re.compile(r"^blocks\.(\d+)\.self_attn\.([qkv])_loras\.(down|up)\.weight$")
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "dit.")
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
MAX_FILE_BYTES = 4 * 2 ** 30  # the largest Stand-In file (Wan 14B, rank 128, float32) is 0.6 GiB
_HEADER_MAX_BYTES = 16 * 2 ** 20
_SAFETENSORS_ITEM_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                           "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class StandInWeightsError(ValueError):
    """A Stand-In weight file is unreadable, unsafe, malformed, or does not fit the model."""


@dataclass(frozen=True)
class LowRank:
    """delta(x) = up(down(x)), computed in the LoRA's own dtype and cast back to x's dtype (as the official code)."""

    down: torch.Tensor  # [rank, in_features]
    up: torch.Tensor  # [out_features, rank]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.linear(x.to(self.down.dtype), self.down)
        return torch.nn.functional.linear(hidden, self.up).to(x.dtype)

    def to(self, device=None, dtype=None) -> "LowRank":
        return LowRank(self.down.to(device=device, dtype=dtype), self.up.to(device=device, dtype=dtype))


@dataclass(frozen=True)
class BlockLoRA:
    """The three LoRAs of one DiT block's self-attention (reference tokens only)."""

    q: LowRank
    k: LowRank
    v: LowRank

    def to(self, device=None, dtype=None) -> "BlockLoRA":
        return BlockLoRA(self.q.to(device, dtype), self.k.to(device, dtype), self.v.to(device, dtype))


@dataclass(eq=False)
class StandInWeights:
    """A validated Stand-In weight set. ``blocks[i]`` belongs to DiT block i."""

    blocks: list[BlockLoRA]
    source: str = "<memory>"

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def width(self) -> int:
        return self.blocks[0].q.down.shape[1]

    @property
    def rank(self) -> int:
        return self.blocks[0].q.down.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0].q.down.dtype

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for b in self.blocks for lr in (b.q, b.k, b.v) for t in (lr.down, lr.up))

    @property
    def nbytes(self) -> int:
        return self.num_parameters * self.blocks[0].q.down.element_size()

    def describe(self) -> str:
        return (f"{os.path.basename(self.source)}: {self.depth} blocks, width {self.width}, rank {self.rank}, "
                f"{self.dtype}, {self.num_parameters / 1e6:.1f}M parameters")

    def validate_for(self, width: int, depth: int, model_name: str = "the model") -> None:
        """Raise :class:`StandInWeightsError` unless these weights fit a DiT of this width and depth."""
        problems = []
        if self.width != width:
            problems.append(f"they are for width {self.width} ({_guess_model(self.width)}) but {model_name} has "
                            f"width {width} ({_guess_model(width)})")
        if self.depth != depth:
            problems.append(f"they have {self.depth} blocks but {model_name} has {depth}")
        if problems:
            raise StandInWeightsError(
                f"Stand-In weights {self.source} do not fit {model_name}: " + "; ".join(problems) +
                ". Use the Stand-In file trained for this Wan model (Wan2.1 14B T2V: Stand-In_wan2.1_T2V_14B.ckpt; "
                "Wan2.2 A14B: the _high file for the high-noise expert and the _low file for the low-noise expert).")

    def blocks_on(self, device, dtype=None) -> list[BlockLoRA]:
        """The blocks moved to ``device`` (and ``dtype`` if given). Nothing is kept here: the caller owns the copy
        for as long as it needs it (a sampling run), so the weights are never held twice at rest."""
        return [block.to(device, dtype) for block in self.blocks]


def _guess_model(width: int) -> str:
    return {1536: "Wan 1.3B", 5120: "Wan 14B", 3072: "Wan2.2 5B"}.get(width, "unknown Wan size")


def load_standin_weights(path: str) -> StandInWeights:
    """Load and check a Stand-In weight file (.ckpt/.pt/.pth/.bin or .safetensors)."""
    return standin_weights_from_state_dict(read_state_dict(path), source=path)


def read_state_dict(path: str) -> dict:
    """Read tensors from ``path`` safely; every failure is a :class:`StandInWeightsError` naming the file."""
    if not os.path.isfile(path):
        raise StandInWeightsError(f"Stand-In weight file not found: {path}")
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIXES):
        import safetensors.torch
        check_safetensors_header(path)
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except Exception as error:  # safetensors raises its own error types for truncated/corrupt headers
            raise StandInWeightsError(f"cannot read {path} as safetensors (truncated or corrupt?): {error}") from error
    if lower.endswith(PICKLE_SUFFIXES):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            if "GLOBAL" in str(error) or "Unsupported global" in str(error):  # a pickled callable
                raise StandInWeightsError(
                    f"refused to load {path}: it contains pickled Python objects other than tensors, which could run "
                    "code. Stand-In weights are plain tensors; get the file from the official release or convert it "
                    "to .safetensors.") from error
            if "Weights only load failed" in str(error):
                raise StandInWeightsError(
                    f"refused to load {path}: the safe (tensors only) loader cannot read it: it is truncated or "
                    "corrupt, or holds pickled data other than tensors. Stand-In weights are plain tensors; download "
                    "the file again from the official release.") from error
            raise StandInWeightsError(
                f"cannot read {path} as a torch checkpoint (truncated or corrupt?): {error}") from error
        return _unwrap(loaded, path)
    raise StandInWeightsError(
        f"unsupported Stand-In weight file {path}: expected .safetensors or a torch checkpoint "
        f"({', '.join(PICKLE_SUFFIXES)})")


_NAME_IN_FILE = re.compile(rb"self_attn\.[qkv]_loras\.(?:down|up)\.weight")


def looks_like_standin_file(path: str) -> bool:
    """Whether ``path`` holds Stand-In tensors, judged by their names alone, without reading a tensor: a safetensors
    header, or the pickle index (``data.pkl``) of a torch zip checkpoint, which lists the keys but is never
    unpickled here. Any other file (an old-style pickle, an unreadable file) counts as not Stand-In."""
    import zipfile
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if path.lower().endswith(SAFETENSORS_SUFFIXES) and len(prefix) == 8:
                (length,) = struct.unpack("<Q", prefix)
                return length <= _HEADER_MAX_BYTES and bool(_NAME_IN_FILE.search(handle.read(length)))
        if path.lower().endswith(PICKLE_SUFFIXES) and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                index = [info for info in archive.infolist() if info.filename.endswith("/data.pkl")]
                if len(index) == 1 and index[0].file_size <= _HEADER_MAX_BYTES:
                    return bool(_NAME_IN_FILE.search(archive.read(index[0])))
    except (OSError, zipfile.BadZipFile):
        pass
    return False


def check_safetensors_header(path: str) -> None:
    """Read and check a safetensors header without reading any tensor: its declared length, each tensor's dtype,
    shape and byte range against the file, and the total size. :class:`StandInWeightsError` when anything is off."""
    size = os.path.getsize(path)

    def refuse(problem: str):
        raise StandInWeightsError(f"refused {path}: {problem}. The file is truncated or corrupt, or not a Stand-In "
                                  "weight file (nothing was loaded); download it again.")
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            refuse(f"it has {size} bytes, too few for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_HEADER_MAX_BYTES, size - 8):
            refuse(f"its header declares {length} bytes but the file has {size}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, ValueError) as error:
            refuse(f"its header is not valid JSON ({error})")
    if not isinstance(header, dict):
        refuse("its header is not a JSON object")
    data_bytes, total = size - 8 - length, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            if not all(isinstance(v, int) and v >= 0 for v in (*shape, start, end)):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            refuse(f"its header entry for {name!r} is malformed: {str(entry)[:200]}")
        if dtype not in _SAFETENSORS_ITEM_BYTES:
            refuse(f"{name!r} has the unknown dtype {dtype!r}")
        nbytes = math.prod(shape) * _SAFETENSORS_ITEM_BYTES[dtype]
        total += nbytes
        if end - start != nbytes or end > data_bytes:
            refuse(f"the header declares {name!r} as {dtype} {list(shape)} ({nbytes} bytes at {start}..{end}) but "
                   f"the file holds {data_bytes} bytes of tensor data")
    if total > MAX_FILE_BYTES:
        refuse(f"its header declares {total} bytes of tensors, far more than any Stand-In file "
               f"(at most {MAX_FILE_BYTES})")


def _unwrap(loaded, path: str) -> dict:
    for _ in range(3):  # {"state_dict": {...}} or {"model": {...}} wrappers
        if isinstance(loaded, dict) and len(loaded) == 1:
            (only,) = loaded.values()
            if isinstance(only, dict):
                loaded = only
                continue
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
            continue
        break
    if not isinstance(loaded, dict):
        raise StandInWeightsError(f"{path} holds a {type(loaded).__name__}, not a dictionary of tensors")
    return loaded


def _strip_prefix(keys: list[str]) -> str:
    for prefix in _PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def standin_weights_from_state_dict(state_dict: dict, source: str = "<memory>") -> StandInWeights:
    """Build :class:`StandInWeights` from the official key layout, checking names, shapes, ranks and dtypes."""
    if not state_dict:
        raise StandInWeightsError(f"{source} contains no tensors")
    prefix = _strip_prefix(list(state_dict))
    found: dict[tuple[int, str, str], torch.Tensor] = {}
    unexpected = []
    for key, value in state_dict.items():
        match = _KEY.match(key[len(prefix):])
        if match is None or not isinstance(value, torch.Tensor):
            unexpected.append(key)
            continue
        found[(int(match.group(1)), match.group(2), match.group(3))] = value
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else "")
        hint = " This looks like an ordinary (style) LoRA: load it with LoraLoaderModelOnly instead." if any(
            "lora_A" in k or "lora_down" in k or "lora_B" in k for k in unexpected) else ""
        raise StandInWeightsError(
            f"{source} is not a Stand-In weight file: unexpected keys {shown}. Expected only "
            f"'blocks.<i>.self_attn.<q|k|v>_loras.<down|up>.weight'.{hint}")
    if not found:
        raise StandInWeightsError(f"{source} has no Stand-In LoRA tensors")

    depth = max(index for index, _, _ in found) + 1
    missing = [f"{prefix}blocks.{i}.self_attn.{p}_loras.{part}.weight"
               for i in range(depth) for p in PROJECTIONS for part in ("down", "up") if (i, p, part) not in found]
    if missing:
        shown = ", ".join(missing[:6]) + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")
        raise StandInWeightsError(
            f"{source} is incomplete: {len(missing)} tensors missing for blocks 0..{depth - 1}: {shown}")

    first_down = found[(0, "q", "down")]
    if first_down.ndim != 2:
        raise StandInWeightsError(
            f"{source}: {prefix}blocks.0.self_attn.q_loras.down.weight must be 2-D, got {tuple(first_down.shape)}")
    rank, width = first_down.shape
    expected = {"down": (rank, width), "up": (width, rank)}
    for (index, proj, part), tensor in sorted(found.items()):
        key = f"{prefix}blocks.{index}.self_attn.{proj}_loras.{part}.weight"
        if tuple(tensor.shape) != expected[part]:
            raise StandInWeightsError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, expected {expected[part]} "
                f"(rank {rank}, width {width}, from blocks.0.self_attn.q_loras.down.weight)")
        if tensor.dtype not in _FLOAT_DTYPES:
            raise StandInWeightsError(
                f"{source}: {key} has dtype {tensor.dtype}; expected float32, float16 or bfloat16")
        if tensor.dtype != first_down.dtype:
            raise StandInWeightsError(f"{source}: {key} is {tensor.dtype} but the others are {first_down.dtype}")

    def pair(i, p):
        return LowRank(found[(i, p, "down")].contiguous(), found[(i, p, "up")].contiguous())

    blocks = [BlockLoRA(pair(i, "q"), pair(i, "k"), pair(i, "v")) for i in range(depth)]
    return StandInWeights(blocks=blocks, source=source)


def standin_state_dict(weights: StandInWeights, prefix: str = "") -> dict[str, torch.Tensor]:
    """The official key layout of ``weights`` (for saving or converting)."""
    out = {}
    for i, block in enumerate(weights.blocks):
        for p in PROJECTIONS:
            lowrank = getattr(block, p)
            out[f"{prefix}blocks.{i}.self_attn.{p}_loras.down.weight"] = lowrank.down
            out[f"{prefix}blocks.{i}.self_attn.{p}_loras.up.weight"] = lowrank.up
    return out
