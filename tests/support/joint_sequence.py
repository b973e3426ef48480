"""The ComfyUI tier's oracle: the paper's joint sequence built from a tiny real Wan model's modules (the tiny models
themselves are devtools/tiny_models.py).

``joint_forward`` is the official formulation written out independently of the pack: ONE sequence [video; image]
per sample through the real model's own submodules (patch embedding, time embedding, q/k/v/o, norms, cross
attention, FFN, head, VACE blocks), with the Stand-In LoRA on image tokens only, the official RoPE positions (as
complex rotations) and the restricted self-attention as an explicit mask. Image tokens skip the text
cross-attention and get no VACE hints, as in the official code.
"""
import copy

import torch

from comfyui_standin.tests.support.naive_wan import naive_apply_rope, naive_attention, rope_at, rope_for, rope_table


def _grid(f, h, w, t0=0, h0=0, w0=0):
    t, y, x = torch.meshgrid(torch.arange(t0, t0 + f), torch.arange(h0, h0 + h), torch.arange(w0, w0 + w),
                             indexing="ij")
    return torch.stack([t, y, x], -1).reshape(-1, 3)


@torch.no_grad()
def joint_forward(dm, x, timestep, context, reference, standin_sd, vace_context=None, vace_strength=None,
                  video_to_image_bias=0.0, position_scale=None, position_shift=None, time_dim_concat=None,
                  regions=None, outside="all", slots=None, dtype=torch.float32):
    """The official joint-sequence forward of Stand-In on ComfyUI WanModel ``dm`` (weights as currently loaded).

    ``reference`` is the reference latent already in the model's latent space, [1, 16, 1, h, w], or a list of them
    (several people, as WeChatCV/Stand-In dev/multi cc7c8c5 runs them: reference j at rows and cols moved by j*h_I,
    its queries seeing only its own keys, the video's seeing all).
    ``video_to_image_bias`` is added to the video queries' logits on the image keys (0 = the paper), one number or
    one per reference. ``regions`` (bool [N, video tokens], this pack's own): video token i sees reference j's keys
    only when it is in region j, or, outside every region, every reference's (``outside`` "all") or none ("none").
    ``position_scale``/``position_shift`` ((t, h, w) each): every token of the joint sequence, video and image, is
    placed at shift + scale * (its official position), as ComfyUI's ScaleROPE places the video's tokens.
    ``time_dim_concat`` (Phantom's subject frames, [B, 16, N, H, W]) are more frames after the video's, on the same
    grid: they belong to the video part of the sequence (so they see the image keys too), and the output is the
    video's frames only.
    ``dtype`` torch.float64 runs the whole oracle in float64 on a float64 copy of ``dm`` (time embedding, LoRA,
    attention and all), so the pack's float32 result is compared with the exact value, not with another float32
    order. Two parts keep ComfyUI's float32 rounding, as they are the base model's own and not Stand-In's: the time
    step's sinusoid (ComfyUI computes its angles in float32, up to 1e-4 off the float64 ones at t near 1000) and the
    VACE blocks (ComfyUI's own modules, whose RoPE kernel takes no float64) run in float32 on the original
    ``dm``, and their hints join the float64 sequence.
    """
    from comfy.ldm.wan.model import sinusoidal_embedding_1d
    out_dtype, vace_dm = x.dtype, dm
    if dtype != torch.float32:
        dm = copy.deepcopy(dm).to(dtype)
        standin_sd = {name: tensor.to(dtype) for name, tensor in standin_sd.items()}
    batch, dim, heads = x.shape[0], dm.dim, dm.num_heads
    frames = x.shape[2]
    if time_dim_concat is not None:
        x = torch.cat([x, time_dim_concat], dim=2)
    x = x.to(dtype)
    video = dm.patch_embedding(x)
    grid = tuple(video.shape[2:])
    video = video.flatten(2).transpose(1, 2)
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    biases = ([video_to_image_bias] * len(references) if isinstance(video_to_image_bias, (int, float))
              else list(video_to_image_bias))
    images, placed = [], []
    for j, ref in enumerate(references):  # reference j at the official staircase slot: rows AND cols + j * h_I
        image = dm.patch_embedding(ref.to(dtype))
        _, hi, wi = image.shape[2:]
        images.append(image.flatten(2).transpose(1, 2).expand(batch, -1, -1))
        slot = j if slots is None else slots[j]
        placed.append(_grid(1, hi, wi, -1, grid[1] + slot * hi, grid[2] + slot * hi))
    image = torch.cat(images, dim=1)
    s, r = video.shape[1], image.shape[1]
    owner = torch.cat([torch.full((s,), -1)] + [torch.full((im.shape[1],), j) for j, im in enumerate(images)])

    e = dm.time_embedding(sinusoidal_embedding_1d(dm.freq_dim, timestep.flatten()).to(dtype))
    e0_video = dm.time_projection(e).unflatten(1, (6, dim))
    e0_image = dm.time_projection(dm.time_embedding(sinusoidal_embedding_1d(dm.freq_dim, torch.zeros(1)).to(dtype)))
    e0_image = e0_image.unflatten(1, (6, dim))
    context = dm.text_embedding(context.to(dtype))

    positions = torch.cat([_grid(*grid), *placed])
    if position_scale is None and position_shift is None:
        rot = rope_for(positions, rope_table(dim // heads))
    else:
        scale = torch.tensor(position_scale or (1.0, 1.0, 1.0), dtype=torch.float64)
        shift = torch.tensor(position_shift or (0.0, 0.0, 0.0), dtype=torch.float64)
        rot = rope_at(shift + scale * positions.double(), dim // heads)
    is_image = torch.cat([torch.zeros(s, dtype=torch.bool), torch.ones(r, dtype=torch.bool)])[None, :, None]
    sees = (owner[:, None] == -1) | (owner[:, None] == owner[None, :])  # video queries: every key; image j: its own
    if regions is not None:
        for i in range(s):
            for j in range(len(images)):
                sees[i, owner == j] = bool(regions[j, i]) or (not regions[:, i].any() and outside == "all")
    mask = torch.where(sees, 0.0, float("-inf"))
    for j, bias in enumerate(biases):
        mask[:s, s:][:, owner[s:] == j] += bias  # -inf stays where a region shuts reference j out

    if vace_context is not None:
        comfy_freqs = vace_dm.rope_encode(*x.shape[2:], device=x.device, dtype=torch.float32)
        c = vace_dm.vace_patch_embedding(vace_context[0].float()).flatten(2).transpose(1, 2)
        video_orig = video.float()

    tokens = torch.cat([video, image], dim=1)
    for index, block in enumerate(dm.blocks):
        modulation = block.modulation.to(dtype)  # stored weights may be fp8/bf16
        mod = torch.where(is_image[..., None], (modulation + e0_image)[:, None], (modulation + e0_video)[:, None])
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(2)
        h = block.norm1(tokens) * (1 + scale_msa) + shift_msa
        sa = block.self_attn

        def lora(p):
            down = standin_sd[f"blocks.{index}.self_attn.{p}_loras.down.weight"]
            up = standin_sd[f"blocks.{index}.self_attn.{p}_loras.up.weight"]
            return torch.where(is_image, (h.to(down.dtype) @ down.T @ up.T).to(h.dtype), 0.0)

        q = naive_apply_rope(sa.norm_q(sa.q(h) + lora("q")), rot, heads)
        k = naive_apply_rope(sa.norm_k(sa.k(h) + lora("k")), rot, heads)
        v = sa.v(h) + lora("v")
        tokens = tokens + gate_msa * sa.o(naive_attention(q, k, v, heads, mask))
        cross = block.cross_attn(block.norm3(tokens[:, :s]), context, context_img_len=None)
        tokens = tokens + torch.cat([cross, torch.zeros_like(tokens[:, s:])], dim=1)
        tokens = tokens + gate_mlp * block.ffn(block.norm2(tokens) * (1 + scale_mlp) + shift_mlp)
        if vace_context is not None and index in dm.vace_layers_mapping:
            hint, c = vace_dm.vace_blocks[dm.vace_layers_mapping[index]](
                c, x=video_orig, e=e0_video.float(), freqs=comfy_freqs, context=context.float(), context_img_len=None)
            tokens = torch.cat([tokens[:, :s] + hint.to(dtype) * vace_strength[0], tokens[:, s:]], dim=1)
    out = dm.head(tokens[:, :s], e.reshape(batch, -1, dim))
    return dm.unpatchify(out, grid)[:, :, :frames].to(out_dtype)
