"""Tiny Wan models written as GGUF files (quantized Q8_0 and Q4_K, F16 and F32 tensors) for the GGUF checks, and
city96's ComfyUI-GGUF loaded the way ComfyUI loads a custom node (a folder package from COMFYUI_GGUF_PATH).

Nothing is downloaded: ComfyUI-GGUF is a snapshot unpacked beside the test run; its code is never committed here.
"""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import torch

GGUF_PACK_MODULE = "ComfyUI_GGUF_under_test"


def load_gguf_pack():
    """city96/ComfyUI-GGUF from COMFYUI_GGUF_PATH as a package (ComfyUI must already be imported)."""
    root = Path(os.environ["COMFYUI_GGUF_PATH"]).resolve()
    if GGUF_PACK_MODULE in sys.modules:
        return sys.modules[GGUF_PACK_MODULE]
    if not (root / "nodes.py").is_file() or not (root / "loader.py").is_file():
        raise FileNotFoundError(f"COMFYUI_GGUF_PATH={root} is not a ComfyUI-GGUF tree (no nodes.py/loader.py)")
    spec = importlib.util.spec_from_file_location(GGUF_PACK_MODULE, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[GGUF_PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def q4_k_blocks(rows: int, cols: int, seed: int) -> np.ndarray:
    """Raw Q4_K data for a [rows, cols] tensor (cols a multiple of 256): 144 bytes per 256 values. The super-block
    scale d and min dmin (the first 4 bytes, fp16) are kept small and finite; every other byte is any value."""
    generator = np.random.default_rng(seed)
    blocks = generator.integers(0, 256, size=(rows, cols // 256, 144), dtype=np.uint8)
    scales = np.array([0.0005, 0.0002], np.float16).view(np.uint8)
    blocks[..., 0:4] = scales
    return blocks.reshape(rows, cols // 256 * 144)


def write_wan_gguf(path: Path, state_dict: dict, quantize) -> dict:
    """Write ``state_dict`` (float32 tensors) to a GGUF file of architecture "wan"; ``quantize(name, tensor)`` picks
    each 2D tensor's type ("Q8_0", "Q4_K", "F16" or "F32"; other tensors are F32, >4D ones flattened with their
    shape in ComfyUI-GGUF's ``comfy.gguf.orig_shape`` metadata). Returns the state dict the file holds, dequantized
    with gguf's own numpy code: the weights a loader should compute with."""
    import gguf
    writer = gguf.GGUFWriter(str(path), "wan")
    held = {}
    for name, tensor in state_dict.items():
        array = tensor.detach().float().numpy()
        kind = quantize(name, tensor) if array.ndim == 2 else "F32"
        if kind == "Q8_0":
            raw = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            held[name] = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q8_0)
        elif kind == "Q4_K":
            raw = q4_k_blocks(*array.shape, seed=len(held))
            writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
            held[name] = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.Q4_K)
        elif kind == "F16":
            writer.add_tensor(name, array.astype(np.float16))
            held[name] = array.astype(np.float16).astype(np.float32)
        else:
            stored = array.reshape(array.shape[0], -1) if array.ndim > 4 else array
            if array.ndim > 4:
                writer.add_array(f"comfy.gguf.orig_shape.{name}", list(array.shape))
            writer.add_tensor(name, np.ascontiguousarray(stored.astype(np.float32)))
            held[name] = array
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {name: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)).reshape(state_dict[name].shape)
            for name, value in held.items()}
