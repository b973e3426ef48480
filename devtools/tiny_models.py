"""Tiny models for the tests, the tiny identity run and the benchmark: REAL Wan models and a Wan2.1 VAE with random
weights (ComfyUI's own classes: these functions need ComfyUI imported), the one random Stand-In weights factory, a
random style LoRA for them, and a small ONNX model with ArcFace's signature (the last three need no ComfyUI).
"""
import torch


def tiny_wan_state_dict(vace=False, dim=256, layers=3, seed=0):
    import comfy.ops
    from comfy.ldm.wan.model import VaceWanModel, WanModel
    kwargs = dict(patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=dim, ffn_dim=2 * dim, freq_dim=256,
                  text_dim=4096, out_dim=16, num_heads=dim // 128, num_layers=layers, cross_attn_norm=True,
                  eps=1e-6, operations=comfy.ops.disable_weight_init, device="cpu", dtype=torch.float32)
    model = VaceWanModel(vace_layers=1, vace_in_dim=96, **kwargs) if vace else WanModel(model_type="t2v", **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm3.weight"):
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            elif param.ndim == 1:
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
            else:
                fan_in = param[0].numel() if param.ndim > 1 else 1
                param.copy_(torch.randn(param.shape, generator=gen) * (0.7 / fan_in ** 0.5))
    return model.state_dict()


def random_standin_state_dict(dim, depth, rank=16, seed=1, down_std=None, up_std=None, dtype=torch.float32):
    """THE random Stand-In weights factory (tests, tiny run, benchmarks): the official key layout
    ``blocks.{i}.self_attn.{q,k,v}_loras.{down,up}.weight``, normal values with the given standard deviations
    (defaults 0.3/sqrt(dim) and 0.3/sqrt(rank)), drawn block by block, q/k/v, down then up, from one seeded
    generator."""
    down_std = 0.3 / dim ** 0.5 if down_std is None else down_std
    up_std = 0.3 / rank ** 0.5 if up_std is None else up_std
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(depth):
        for p in "qkv":
            sd[f"blocks.{i}.self_attn.{p}_loras.down.weight"] = (
                torch.randn(rank, dim, generator=gen) * down_std).to(dtype)
            sd[f"blocks.{i}.self_attn.{p}_loras.up.weight"] = (torch.randn(dim, rank, generator=gen) * up_std).to(dtype)
    return sd


def style_lora(model_state: dict, seed=5, rank=4, scale=0.05) -> dict:
    """A random style LoRA (lora_A/lora_B) on every block's self-attention q, v, cross-attention k and FFN input."""
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    depth = 1 + max(int(k.split(".")[1]) for k in model_state if k.startswith("blocks."))
    for i in range(depth):
        for proj in ("self_attn.q", "self_attn.v", "cross_attn.k", "ffn.0"):
            out_f, in_f = model_state[f"blocks.{i}.{proj}.weight"].shape
            lora[f"diffusion_model.blocks.{i}.{proj}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * scale
            lora[f"diffusion_model.blocks.{i}.{proj}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * scale
    return lora


def standin_state_dict_for(dim, depth, rank=16, seed=1):
    """Random Stand-In weights for the tiny ComfyUI models (the factory's defaults)."""
    return random_standin_state_dict(dim, depth, rank, seed)


def tiny_wan_vae_state_dict(dim=96, seed=0):
    """A tiny REAL Wan2.1 VAE (ComfyUI's own WanVAE class, 16 latent channels, 8x spatial / 4x temporal
    compression) with random weights, at the real width 96 (ComfyUI v0.3.64 builds that width whatever the file
    holds)."""
    from comfy.ldm.wan.vae import WanVAE
    model = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True], dropout=0.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 or name.endswith("gamma"):
                param.copy_(1.0 + 0.05 * torch.randn(param.shape, generator=gen) if name.endswith("gamma")
                            else 0.02 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * (0.5 / param[0].numel() ** 0.5))
    return model.state_dict()


def tiny_recognition_onnx(path, weights, size=112):
    """A model with ArcFace's signature ([1, 3, 112, 112] float32 -> [1, D]): global average pool, then a matmul."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["embedding"])],
        "tiny_arcface", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, weights.shape[1]])],
        [numpy_helper.from_array(weights.astype(np.float32), "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
