"""The core's Stand-In run on the naive model's modules (tests/support/naive_wan.py), for the core tests to compare
with the naive joint sequence: random Stand-In weights, their plain-matmul LoRAs for the oracle, the core's
reference branch and its two-pass forward."""
import torch

from comfyui_standin.devtools.tiny_models import random_standin_state_dict
from comfyui_standin.standin_core import (DiTParts, reference_branch, rope_rotations, standin_weights_from_state_dict,
                                          token_grid, video_positions, video_self_attention)


def random_standin_weights(dim, depth, rank=8, seed=1):
    sd = random_standin_state_dict(dim, depth, rank, seed, down_std=0.2, up_std=0.2)
    return standin_weights_from_state_dict(sd), sd


def naive_loras(sd, depth):
    """Plain matmul LoRAs per block for the joint reference: h @ down^T @ up^T."""
    def lora(i, p):
        down = sd[f"blocks.{i}.self_attn.{p}_loras.down.weight"].float()
        up = sd[f"blocks.{i}.self_attn.{p}_loras.up.weight"].float()
        return lambda h: h @ down.T @ up.T
    return [{p: lora(i, p) for p in "qkv"} for i in range(depth)]


def reference_kv(model, latent_shape, ref_latent, weights, position_shift=(0.0, 0.0, 0.0)):
    """The core's reference branch run on the naive model's modules (``position_shift`` moves the reference)."""
    parts = DiTParts(patch_embedding=model.patch_embedding, patch_size=(1, 2, 2),
                     rope=lambda positions: rope_rotations(positions + torch.tensor(position_shift),
                                                           model.dim // model.heads),
                     time_embedding=model.time_embedding, time_projection=model.time_projection,
                     freq_dim=model.freq_dim, width=model.dim, heads=model.heads, blocks=model.blocks)
    return reference_branch(parts, ref_latent, token_grid(latent_shape[2:]), weights.blocks, torch.float32, "cpu")


def two_pass(model, latent, t, context, ref_latent, weights, strength=1.0, kv=None, buffers=None, regions=None):
    """Stand-In as the pack runs it: reference K/V once, then the model's own forward with patched self-attention."""
    if kv is None:
        kv = reference_kv(model, latent.shape, ref_latent, weights)
    video_rot = rope_rotations(video_positions(*token_grid(latent.shape[2:])), model.dim // model.heads)

    def patched(i, block, h, grid):
        return video_self_attention(block.self_attn, h, video_rot, model.heads, kv[i], strength, buffers=buffers,
                                    regions=regions)

    return model.forward_video(latent, t, context, patched)
