"""An independent, deliberately plain Wan-like DiT used as the reference implementation in the core tests.

Written from the method description, not from standin_core: RMS norms, LayerNorms, sinusoidal time embedding in
float64 (as the official code), complex-number 3D RoPE with a table that starts at -1 (as the official code),
explicit-softmax attention with an explicit mask, cross-attention, FFN and modulation. ``joint_forward`` runs the
paper's single sequence [video; image] with the restricted attention mask exactly as the official code concatenates
the two; ``forward_video`` is the block-by-block video forward whose self-attention can be swapped (which is what
the ComfyUI integration does with an object patch).
"""
import math

import torch
from torch import nn


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)


class Block(nn.Module):
    def __init__(self, dim, ffn, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=True)
        self.self_attn = Attn(dim, heads)
        self.cross_attn = Attn(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(approximate="tanh"), nn.Linear(ffn, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)


def naive_attention(q, k, v, heads, mask=None):
    """softmax(q k^T / sqrt(d) + mask) v, written out. q/k/v [B, S, heads*d]; mask [Sq, Sk] of 0 / -inf."""
    b, sq, width = q.shape
    d = width // heads
    q = q.view(b, sq, heads, d).transpose(1, 2)
    k = k.view(b, k.shape[1], heads, d).transpose(1, 2)
    v = v.view(b, v.shape[1], heads, d).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / math.sqrt(d)
    if mask is not None:
        logits = logits + mask
    return (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, sq, width)


def rope_table(head_dim, end=64, theta=10000.0):
    """Complex rotations per axis for positions -1, 0, 1, ..., end-1 (index = position + 1)."""
    t_dim = head_dim - 2 * (head_dim // 3)
    tables = []
    for axis_dim in (t_dim, head_dim // 3, head_dim // 3):
        freqs = 1.0 / theta ** (torch.arange(0, axis_dim, 2).double() / axis_dim)
        angles = torch.outer(torch.arange(-1, end).double(), freqs)
        tables.append(torch.polar(torch.ones_like(angles), angles))
    return tables


def rope_for(positions, tables):
    """positions: integer [L, 3] -> complex [L, head_dim/2]."""
    return torch.cat([tables[a][positions[:, a] + 1] for a in range(3)], dim=-1)


def rope_at(positions, head_dim, theta=10000.0):
    """Like rope_for, for real-valued positions [L, 3] (float64 angles): complex [L, head_dim/2]."""
    t_dim = head_dim - 2 * (head_dim // 3)
    parts = []
    for axis, axis_dim in enumerate((t_dim, head_dim // 3, head_dim // 3)):
        freqs = 1.0 / theta ** (torch.arange(0, axis_dim, 2).double() / axis_dim)
        angles = torch.outer(positions[:, axis].double(), freqs)
        parts.append(torch.polar(torch.ones_like(angles), angles))
    return torch.cat(parts, dim=-1)


def naive_apply_rope(x, rot, heads):
    b, s, width = x.shape
    pairs = torch.view_as_complex(x.double().reshape(b, s, heads, -1, 2))
    return torch.view_as_real(pairs * rot[None, :, None]).reshape(b, s, width).to(x.dtype)


def sinusoid(dim, t):
    half = dim // 2
    angles = torch.outer(t.double(), torch.pow(10000, -torch.arange(half).double().div(half)))
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


class NaiveWan(nn.Module):
    def __init__(self, dim=64, ffn=128, heads=2, depth=3, text_dim=24, freq_dim=32, in_dim=16, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.dim, self.heads, self.freq_dim = dim, heads, freq_dim
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(Block(dim, ffn, heads) for _ in range(depth))
        self.head_norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.head = nn.Linear(dim, 16 * 4)
        self.head_modulation = nn.Parameter(torch.randn(1, 2, dim) / dim ** 0.5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1))
            for block in self.blocks:  # RMS norm weights near 1 keep the activations tame
                for norm in (block.self_attn.norm_q, block.self_attn.norm_k,
                             block.cross_attn.norm_q, block.cross_attn.norm_k):
                    norm.weight.add_(1.0)
        self.tables = rope_table(dim // heads)

    # -- shared pieces -------------------------------------------------------------------------------------------
    def embed_time(self, t):
        e = self.time_embedding(sinusoid(self.freq_dim, t))
        return e, self.time_projection(e).unflatten(1, (6, self.dim))

    def patchify(self, latent):
        tokens = self.patch_embedding(latent)
        grid = tokens.shape[2:]
        return tokens.flatten(2).transpose(1, 2), tuple(grid)

    def finish(self, x, e, grid):
        shift, scale = (self.head_modulation + e[:, None]).chunk(2, dim=1)
        out = self.head(self.head_norm(x) * (1 + scale) + shift)
        f, h, w = grid
        return (out.view(x.shape[0], f, h, w, 1, 2, 2, 16).permute(0, 7, 1, 4, 2, 5, 3, 6)
                .reshape(x.shape[0], 16, f, 2 * h, 2 * w))

    def cross(self, block, x, context):
        ca = block.cross_attn
        q, k, v = ca.norm_q(ca.q(x)), ca.norm_k(ca.k(context)), ca.v(context)
        return ca.o(naive_attention(q, k, v, self.heads))

    @staticmethod
    def grid_positions(f, h, w, t0=0, h0=0, w0=0):
        t, y, x = torch.meshgrid(torch.arange(t0, t0 + f), torch.arange(h0, h0 + h), torch.arange(w0, w0 + w),
                                 indexing="ij")
        return torch.stack([t, y, x], -1).reshape(-1, 3)

    # -- the paper's joint sequence -------------------------------------------------------------------------------
    def joint_blocks(self, x, is_image, mask, rot, loras, t, context):
        """The blocks over one joint sequence ``x`` [B, L, dim]: image tokens (``is_image`` [L]) get t = 0 and the
        LoRA on q/k/v and skip the text; ``mask`` [L, L] is the additive attention mask."""
        _, mod_video = self.embed_time(t)
        _, mod_image = self.embed_time(torch.zeros(1))
        context = self.text_embedding(context)
        for block, lora in zip(self.blocks, loras):
            m = torch.where(is_image[None, :, None, None], (block.modulation + mod_image)[:, None],
                            (block.modulation + mod_video)[:, None])  # [B, L, 6, dim]
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = m.unbind(2)
            h = block.norm1(x) * (1 + scale_msa) + shift_msa
            sa = block.self_attn
            img = is_image[None, :, None]
            q = sa.q(h) + torch.where(img, lora["q"](h), 0.0)
            k = sa.k(h) + torch.where(img, lora["k"](h), 0.0)
            v = sa.v(h) + torch.where(img, lora["v"](h), 0.0)
            q = naive_apply_rope(sa.norm_q(q), rot, self.heads)
            k = naive_apply_rope(sa.norm_k(k), rot, self.heads)
            x = x + gate_msa * sa.o(naive_attention(q, k, v, self.heads, mask))
            x = x + torch.where(img, 0.0, self.cross(block, block.norm3(x), context))  # the code: no text for image
            x = x + gate_mlp * block.ffn(block.norm2(x) * (1 + scale_mlp) + shift_mlp)
        return x

    def joint_forward(self, latent, t, context, ref_latent, loras, strength_mask_bias=0.0):
        """[video; image] as ONE sequence per sample, restricted attention by an explicit mask."""
        batch = latent.shape[0]
        video, grid = self.patchify(latent)
        image, (_, hi, wi) = self.patchify(ref_latent.expand(batch, -1, -1, -1, -1))
        s, r = video.shape[1], image.shape[1]
        e, _ = self.embed_time(t)
        positions = torch.cat([self.grid_positions(*grid), self.grid_positions(1, hi, wi, -1, grid[1], grid[2])])
        rot = rope_for(positions, self.tables)
        is_image = torch.cat([torch.zeros(s, dtype=torch.bool), torch.ones(r, dtype=torch.bool)])
        mask = torch.zeros(s + r, s + r)
        mask[s:, :s] = float("-inf")  # image queries never see video keys
        mask[:s, s:] = strength_mask_bias
        x = self.joint_blocks(torch.cat([video, image], dim=1), is_image, mask, rot, loras, t, context)
        return self.finish(x[:, :s], e, grid)

    def joint_forward_several(self, latent, t, context, ref_latents, loras, strengths=None, regions=None,
                              outside="all"):
        """Several references, as WeChatCV/Stand-In dev/multi (cc7c8c5) runs them: ONE sequence
        [video; ref_0; ...; ref_{N-1}], with an explicit boolean mask per query (video queries see every key; the
        queries of ref j see only ref j's keys), reference j at frame -1, rows h + j*h_I.., cols w + j*h_I..
        (the official staircase moves both axes by h_I), and log(strengths[j]) added to the video queries' logits
        over ref j's keys (strength 1 everywhere is the official code). ``regions`` (bool [N, S], this pack's own):
        video token i sees ref j's keys only when it is in region j, or, outside every region, all references'
        (``outside`` "all") or none ("none")."""
        batch = latent.shape[0]
        video, grid = self.patchify(latent)
        images = [self.patchify(ref.expand(batch, -1, -1, -1, -1)) for ref in ref_latents]
        s, sizes = video.shape[1], [image.shape[1] for image, _ in images]
        owner = torch.cat([torch.full((s,), -1)] + [torch.full((n,), j) for j, n in enumerate(sizes)])
        sees = (owner[:, None] == -1) | (owner[:, None] == owner[None, :])  # [query, key]
        if regions is not None:
            for i in range(s):
                for j in range(len(sizes)):
                    outside_all = not regions[:, i].any() and outside == "all"
                    sees[i, owner == j] = bool(regions[j, i]) or outside_all
        mask = torch.where(sees, 0.0, float("-inf"))
        for j, value in enumerate(strengths or [1.0] * len(sizes)):
            mask[:s][:, owner == j] += math.log(value) if value > 0 else float("-inf")
        positions = [self.grid_positions(*grid)]
        for j, (_, (_, hi, wi)) in enumerate(images):
            positions.append(self.grid_positions(1, hi, wi, -1, grid[1] + j * hi, grid[2] + j * hi))
        rot = rope_for(torch.cat(positions), self.tables)
        e, _ = self.embed_time(t)
        x = torch.cat([video] + [image for image, _ in images], dim=1)
        x = self.joint_blocks(x, owner >= 0, mask, rot, loras, t, context)
        return self.finish(x[:, :s], e, grid)

    # -- the model's own block-by-block forward, with a swappable self-attention --------------------------------------
    def forward_video(self, latent, t, context, self_attention=None):
        """Base forward. ``self_attention(i, block, h, video_rotations_complex, grid)`` replaces block i's attention."""
        video, grid = self.patchify(latent)
        e, mod = self.embed_time(t)
        context = self.text_embedding(context)
        rot = rope_for(self.grid_positions(*grid), self.tables)
        x = video
        for i, block in enumerate(self.blocks):
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (block.modulation + mod).chunk(6, dim=1)
            h = block.norm1(x) * (1 + scale_msa) + shift_msa
            if self_attention is None:
                sa = block.self_attn
                q = naive_apply_rope(sa.norm_q(sa.q(h)), rot, self.heads)
                k = naive_apply_rope(sa.norm_k(sa.k(h)), rot, self.heads)
                y = sa.o(naive_attention(q, k, sa.v(h), self.heads))
            else:
                y = self_attention(i, block, h, grid)
            x = x + gate_msa * y
            x = x + self.cross(block, block.norm3(x), context)
            x = x + gate_mlp * block.ffn(block.norm2(x) * (1 + scale_mlp) + shift_mlp)
        return self.finish(x, e, grid)
