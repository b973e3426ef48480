"""Stand-In's restricted attention when one video's tokens are split across processes (sequence parallelism).

Ulysses (degree U) and ring (degree N) attention as xDiT/xfuser and yunchang arrange them: the P = U * N ranks of the
sequence-parallel group each hold a contiguous 1/P of the video tokens (all heads). An all-to-all in the Ulysses group
trades the sequence split for a head split: afterwards each rank holds the tokens of its Ulysses group (1/N of the
video, its ring block) for H/U heads, its Ulysses rank's contiguous slice of heads. The ring group then passes the
K/V blocks around so that every query block meets every key block, and merges the partial results with their
log-sum-exp (LSE). A second all-to-all gives every rank its own tokens back, all heads.

The reference tokens' K/V are the same on every rank (the reference pass is local, :mod:`standin_core.reference`), so
Stand-In adds them where each rank sees its own heads, after the all-to-all, and only once per query:

* ring degree 1: the rank appends ITS head slice of the reference K/V to the keys/values of the whole sequence and
  attends with the log(s) key bias, which is the single-device :func:`~standin_core.attention.restricted_attention`
  on H/U heads;
* ring degree > 1: the reference is one extra block, attended with the log(s) bias on its logits and merged by its
  LSE like the ring's own blocks. Ring attention needs an attention kernel that returns the LSE:
  :func:`check_ring_backend` refuses yunchang's backends that do not.

Appending the whole reference on every rank instead (before the all-to-all, or to every ring block) counts each
reference key U (or N) times: the attention of strength s * U, not s. Strength 0 skips the reference.

Each rank needs only its heads of the reference K/V: :func:`local_reference_heads` keeps them (a copy, so the cache
on each rank is 1/U of the single-device one). Process groups are passed in; nothing here knows xfuser or raylight.
Tensors are [batch, tokens, heads * head_dim] as in Wan.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist

from .attention import (AttentionFn, Strength, check_strength, reference_logit_bias, restricted_attention,
                        sdpa_attention, strengths_of)
from .reference import ReferenceKV

AttentionWithLSE = Callable[..., tuple]
"""attention_with_lse(q, k, v, heads, mask=None) -> (out [B, Sq, heads*head_dim], lse [B, heads, Sq]): like
:data:`~standin_core.attention.AttentionFn`, plus the natural-log log-sum-exp of each query's (biased) logits."""

# yunchang's attention backends (yunchang.kernels.AttnType, member names; raylight passes these names) whose
# forward returns no usable LSE: the torch math and cuDNN paths return zeros (kernels/attention.py, pytorch_attn_forward
# with op_type "math" and "cudnn"), sparse Sage returns None (kernels/__init__.py, select_flash_attn_impl).
BACKENDS_WITHOUT_LSE = {
    "TORCH_MATH": "returns an LSE of zeros",
    "TORCH_CUDNN": "returns an LSE of zeros",
    "SPARSE_SAGE": "returns no LSE (None)",
}


def check_ring_backend(name, ring_degree: int) -> None:
    """Refuse an attention backend that returns no LSE when the ring degree is above 1.

    ``name`` is yunchang's ``AttnType`` member name as raylight passes it ("TORCH_MATH"), its value ("torch_math"),
    or the enum member itself. Ring attention merges its blocks (and Stand-In's reference block) by their LSE; a
    backend whose LSE is zero weights every block alike and gives a wrong result without any error.
    """
    key = getattr(name, "name", name)
    key = str(key).strip().upper()
    if ring_degree > 1 and key in BACKENDS_WITHOUT_LSE:
        raise ValueError(
            f"Stand-In with ring attention (ring degree {ring_degree}) needs an attention backend that returns its "
            f"log-sum-exp, and {key} {BACKENDS_WITHOUT_LSE[key]}: the ring's blocks and the reference would be "
            f"mixed with wrong weights. Choose another attention backend (TORCH_FLASH, TORCH_EFFICIENT, FA, FA3, "
            f"SAGE_*) or set the ring degree to 1 and use Ulysses only.")


def group_degree(group) -> int:
    """The size of a process group; ``None`` stands for no split (1)."""
    return 1 if group is None else dist.get_world_size(group)


def group_rank(group) -> int:
    return 0 if group is None else dist.get_rank(group)


def local_reference_heads(tensor: torch.Tensor, heads: int, rank: int, degree: int) -> torch.Tensor:
    """This Ulysses rank's heads of a reference key or value tensor [..., R, heads * head_dim].

    The all-to-all gives Ulysses rank r the contiguous heads r * heads/degree .. (r + 1) * heads/degree - 1
    (yunchang's all_to_all_4D, and :func:`scatter_heads`); the result holds those heads only, as a new contiguous
    tensor (not a view that would keep the full tensor alive), so a cache of them takes 1/degree of the memory.
    """
    if degree < 1 or not 0 <= rank < degree:
        raise ValueError(f"Ulysses rank {rank} is not in 0..{degree - 1}")
    if heads % degree:
        raise ValueError(f"{heads} attention heads cannot be split among {degree} Ulysses ranks")
    width = tensor.shape[-1]
    if width % heads:
        raise ValueError(f"width {width} is not a multiple of {heads} heads")
    if degree == 1:
        return tensor
    local = width // degree
    return tensor[..., rank * local:(rank + 1) * local].clone(memory_format=torch.contiguous_format)


def local_reference_kv(entry: Sequence[ReferenceKV], heads: int, rank: int, degree: int) -> list:
    """Every block's reference K/V reduced to this Ulysses rank's heads (see :func:`local_reference_heads`)."""
    return [ReferenceKV(local_reference_heads(kv.keys, heads, rank, degree),
                        local_reference_heads(kv.values, heads, rank, degree)) for kv in entry]


def scatter_heads(x: torch.Tensor, heads: int, group) -> torch.Tensor:
    """The Ulysses all-to-all: this rank's sequence shard [B, s, heads*d] -> the group's whole sequence for this
    rank's heads, [B, U*s, (heads/U)*d], the shards in group-rank order."""
    degree = group_degree(group)
    if degree == 1:
        return x
    batch, length, width = x.shape
    local, head_dim = heads // degree, width // heads
    send = x.reshape(batch, length, degree, local, head_dim).permute(2, 0, 1, 3, 4).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)  # part j: rank j's tokens, this rank's heads
    return received.transpose(0, 1).reshape(batch, degree * length, local * head_dim)


def gather_heads(x: torch.Tensor, heads: int, group) -> torch.Tensor:
    """The inverse all-to-all: [B, U*s, (heads/U)*d] (the group's sequence, this rank's heads) -> this rank's
    sequence shard with every head, [B, s, heads*d]."""
    degree = group_degree(group)
    if degree == 1:
        return x
    batch, length, width = x.shape
    local = heads // degree
    head_dim = width // local
    shard = length // degree
    send = x.reshape(batch, degree, shard, local, head_dim).transpose(0, 1).contiguous()
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)  # part j: this rank's tokens, rank j's heads
    return received.permute(1, 2, 0, 3, 4).reshape(batch, shard, degree * local * head_dim)


def attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                       mask: Optional[torch.Tensor] = None) -> tuple:
    """Plain attention that also returns the log-sum-exp of each query's logits, computed in float32.

    ``mask`` is an additive bias broadcast to [B, heads, Sq, Sk]. Materialises the logits: the CPU default and the
    tests' kernel; a GPU integration passes a fused kernel with the same contract.
    """
    batch, q_len, width = q.shape
    head_dim = width // heads

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2).float()

    logits = split(q) @ split(k).transpose(-1, -2) * head_dim ** -0.5
    if mask is not None:
        logits = logits + (mask[None, None] if mask.ndim == 2 else mask).float()
    lse = torch.logsumexp(logits, dim=-1)
    out = torch.exp(logits - lse[..., None]) @ split(v)
    return out.transpose(1, 2).reshape(batch, q_len, width), lse


def merge_attention(out: Optional[torch.Tensor], lse: Optional[torch.Tensor], block_out: torch.Tensor,
                    block_lse: torch.Tensor) -> tuple:
    """Exact merge of two attentions of the same queries over disjoint key sets, by their LSE ([B, heads, Sq]):
    the softmax over the union. ``out``/``lse`` None is the empty set. Returns float32 (out, lse)."""
    block_out, block_lse = block_out.float(), block_lse.float()
    if out is None:
        return block_out, block_lse
    batch, q_len, width = out.shape
    heads = lse.shape[1]
    merged = torch.logaddexp(lse, block_lse)

    def weight(part_lse):  # [B, heads, Sq] -> [B, Sq, heads, 1], the share of that part in the union
        return torch.exp(part_lse - merged).transpose(1, 2)[..., None]

    out = (out.view(batch, q_len, heads, -1) * weight(lse)
           + block_out.view(batch, q_len, heads, -1) * weight(block_lse))
    return out.reshape(batch, q_len, width), merged


def _ring_blocks(keys: torch.Tensor, values: torch.Tensor, group):
    """Yield every ring rank's (keys, values) block once, this rank's first, passing them around the ring group
    (send to the next rank, receive from the previous one); the next transfer runs while the caller computes."""
    degree, rank = group_degree(group), group_rank(group)
    block = torch.stack([keys, values]).contiguous()
    send_to = dist.get_global_rank(group, (rank + 1) % degree)
    receive_from = dist.get_global_rank(group, (rank - 1) % degree)
    for step in range(degree):
        requests, incoming = [], None
        if step + 1 < degree:
            incoming = torch.empty_like(block)
            requests = dist.batch_isend_irecv([dist.P2POp(dist.isend, block, send_to, group),
                                               dist.P2POp(dist.irecv, incoming, receive_from, group)])
        yield block[0], block[1]
        for request in requests:
            request.wait()
        block = incoming


def head_slice_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                         ref_keys: Optional[torch.Tensor], ref_values: Optional[torch.Tensor], heads: int,
                         strength: Strength = 1.0, *, ring_group=None, attention: AttentionFn = sdpa_attention,
                         attention_lse: AttentionWithLSE = attention_with_lse) -> torch.Tensor:
    """Stand-In attention AFTER the Ulysses all-to-all: this rank's ring block of the sequence [B, S/N, heads*d],
    ``heads`` being this rank's heads, and this rank's head slice of the reference K/V [1 or B, R, heads*d].

    Ring degree 1: the single-device :func:`restricted_attention` over [video; reference] with ``attention``.
    Ring degree N > 1: the video K/V blocks pass around ``ring_group``; each block and then the reference (one extra
    block with the log(s) bias on its logits, :func:`reference_logit_bias`) are merged by their LSE, which
    ``attention_lse`` must return. ``ref_keys`` None, or every strength 0, attends over the video only.
    """
    check_strength(strength)
    if ref_keys is not None and not any(value > 0 for value in strengths_of(strength)):
        ref_keys = ref_values = None  # strength 0: the reference has no weight, skip it
    if group_degree(ring_group) == 1:
        return restricted_attention(queries, keys, values, ref_keys, ref_values, heads, strength, attention)
    out = lse = None
    for block_keys, block_values in _ring_blocks(keys, values, ring_group):
        out, lse = merge_attention(out, lse, *attention_lse(queries, block_keys, block_values, heads))
    if ref_keys is not None:
        batch = queries.shape[0]
        if ref_keys.shape[0] not in (1, batch):
            raise ValueError(f"reference K/V batch {ref_keys.shape[0]} does not match video batch {batch}")
        ref_keys = ref_keys.to(keys).expand(batch, -1, -1)
        ref_values = ref_values.to(values).expand(batch, -1, -1)
        bias = None
        if not all(value == 1 for value in strengths_of(strength)):
            bias = reference_logit_bias(0, ref_keys.shape[1], strength, torch.float32, queries.device)
        out, lse = merge_attention(out, lse, *attention_lse(queries, ref_keys, ref_values, heads, mask=bias))
    return out.to(queries.dtype)


def sequence_parallel_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                                ref_keys: Optional[torch.Tensor], ref_values: Optional[torch.Tensor], heads: int,
                                strength: Strength = 1.0, *, ulysses_group=None, ring_group=None,
                                attention: AttentionFn = sdpa_attention,
                                attention_lse: AttentionWithLSE = attention_with_lse) -> torch.Tensor:
    """Stand-In's video self-attention for this rank's sequence shard under Ulysses x ring sequence parallelism.

    ``queries``/``keys``/``values``: this rank's tokens [B, s, heads*d] with every head (rotated by RoPE, as the
    block's own attention gets them); every rank of the groups holds the same number of tokens. ``ref_keys`` /
    ``ref_values``: THIS Ulysses rank's heads of the block's reference K/V, [1 or B, R, (heads/U)*d]
    (:func:`local_reference_heads`), or None. ``heads``: the model's head count. Returns this rank's tokens of the
    attention output, [B, s, heads*d], equal to the single-device restricted attention's rows for those tokens.

    The function runs the Ulysses all-to-all itself (``all_to_all_single`` in ``ulysses_group``), so the heads it
    hands this rank and the reference heads it expects are defined in one place; ``ring_group`` carries the ring.
    ``None`` for a group is degree 1. ``attention`` serves ring degree 1; ``attention_lse`` ring degree > 1.
    """
    check_strength(strength)
    degree = group_degree(ulysses_group)
    if heads % degree:
        raise ValueError(f"{heads} attention heads cannot be split among {degree} Ulysses ranks")
    local_heads = heads // degree
    local_width = local_heads * (queries.shape[-1] // heads)
    for name, tensor in (("keys", ref_keys), ("values", ref_values)):
        if tensor is not None and tensor.shape[-1] != local_width:
            raise ValueError(f"reference {name} of width {tensor.shape[-1]}: this rank needs its {local_heads} of "
                             f"{heads} heads (width {local_width}); keep them with local_reference_heads")
    out = head_slice_attention(scatter_heads(queries, heads, ulysses_group), scatter_heads(keys, heads, ulysses_group),
                               scatter_heads(values, heads, ulysses_group), ref_keys, ref_values, local_heads,
                               strength, ring_group=ring_group, attention=attention, attention_lse=attention_lse)
    return gather_heads(out, heads, ulysses_group)




def _key_runs(bias: torch.Tensor):
    """(start, end, value) for each run of equal values in a per-key bias vector."""
    values = bias.tolist()
    start = 0
    for index in range(1, len(values) + 1):
        if index == len(values) or values[index] != values[start]:
            yield start, index, values[start]
            start = index


def fused_attention_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        mask: Optional[torch.Tensor] = None) -> tuple:
    """:data:`AttentionWithLSE` through torch's fused flash kernels, which return the LSE
    without materialising the logits (CUDA: ``_scaled_dot_product_flash_attention``; CPU: its ``_for_cpu`` twin).

    ``mask`` is the per-key bias Stand-In gives a reference block ([1, Sk]: log of each reference's strength, the
    same for all of a reference's keys). A bias that is constant over a run of keys leaves their softmax unchanged
    and adds itself to the LSE, so each run is attended without a mask and merged by its LSE; runs at -inf are
    skipped. Falls back to :func:`attention_with_lse` where no fused kernel fits (other
    devices, head dims the kernel refuses)."""
    if mask is not None:
        bias = mask.reshape(-1, mask.shape[-1])
        if bias.shape[0] != 1:
            return attention_with_lse(q, k, v, heads, mask)
        out = lse = None
        for start, end, value in _key_runs(bias[0].float()):
            if value == float("-inf"):
                continue
            run_out, run_lse = fused_attention_lse(q, k[:, start:end], v[:, start:end], heads)
            out, lse = merge_attention(out, lse, run_out, run_lse + value)
        if out is None:
            raise ValueError("every reference key is masked out (all strengths 0): the reference must be skipped")
        return out, lse
    batch, q_len, width = q.shape
    head_dim = width // heads

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    try:
        if q.device.type == "cuda":
            result = torch.ops.aten._scaled_dot_product_flash_attention(split(q), split(k), split(v), 0.0, False,
                                                                       False)
        elif q.device.type == "cpu":
            result = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(split(q), split(k), split(v), 0.0,
                                                                               False)
        else:
            return attention_with_lse(q, k, v, heads)
    except RuntimeError:
        return attention_with_lse(q, k, v, heads)
    out, lse = result[0], result[1]
    return out.transpose(1, 2).reshape(batch, q_len, width), lse.float()
