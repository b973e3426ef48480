"""Stand-In inside raylight's Ray actors: one Wan video split across GPUs by xDiT/xfuser sequence parallelism.

raylight (komikndr/raylight) loads a ComfyUI WanModel in every Ray actor, then, when its Ulysses or ring degree is
above 1, adds an ON_LOAD callback (``USPInjectRegistry.inject``, no key) that replaces each block's
``self_attn.forward`` with its own sequence-parallel forward and the model's ``forward_orig`` with one that keeps
this rank's 1/P of the video tokens (and all-gathers them at the end). ComfyUI applies object patches first and the
ON_LOAD callbacks afterwards, in the order they were added, so raylight's forward replaces Stand-In's object patch
and the pack refuses the run (model_call.check_standin_ran). This module adds what runs Stand-In there:

* :func:`standin_for_raylight` (what the node runs in every actor): Apply Stand-In as on one GPU, with a reference
  pass that keeps only this rank's Ulysses heads of the reference K/V (:class:`ShardedReferencePass`: 1/U of the
  cache per GPU; under FSDP each block is unsharded around the pass's direct module calls), plus an ON_LOAD step
  under the key "standin", added after raylight's, that replaces each block's forward again;
* :class:`SequenceParallelSelfAttention`, that forward: the block's q/k/v and RoPE as raylight's forward computes
  them, then :func:`standin_core.parallel.sequence_parallel_attention` with this rank's reference heads. It is a
  :class:`~.model_call.VideoSelfAttention`, so the foreign-forward check accepts it. Where identity does not apply
  (strength 0, outside the step range) it runs raylight's own forward, unchanged;
* :class:`StandInForRaylight`, the node: in raylight's style for nodes that patch the actors, it takes and returns
  RAY_ACTORS and runs :func:`standin_for_raylight` in each actor through ``RayWorker.model_function_runner``.

raylight's CFG split (a DIFFUSION_MODEL wrapper added at load, outside Stand-In's) hands the inner wrappers batch 1
per rank; the reference K/V have batch 1 and broadcast, so nothing changes there. Nothing here imports raylight,
Ray or xfuser at import time: the groups are read from ``sys.modules`` when a model loads, and only inside actors.

Limits: Stand-In References with regions are refused under a sequence split (each GPU holds part of the tokens).
With ring degree 1 the attention is ComfyUI's (as on one GPU), not raylight's xfuser kernel; with ring degree > 1
it is torch's flash kernel with its LSE (``standin_core.parallel.fused_attention_lse``; float16/bfloat16 on CUDA,
otherwise the materialised fallback). ComfyUI's memory estimate in each actor counts this rank's 1/U of the
reference cache (:class:`ShardedMemoryEstimate`); the [video; reference] buffers are still counted as on one GPU,
an overestimate.
"""
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import torch

import comfy.ldm.wan.model as wan
import comfy.patcher_extension
from comfy_api.latest import io

from ..standin_core import token_grid
from ..standin_core.parallel import (check_ring_backend, fused_attention_lse, local_reference_heads,
                                     sequence_parallel_attention)
from ..standin_core.reference import ReferenceKV, project_qkv, reference_branch
from ..standin_core.weights import BlockLoRA, LowRank, StandInWeights
from .apply import standin_inputs
from .install import apply_standin
from .model_call import CALL_KEY, ModelCall, ReferencePass, VideoSelfAttention
from .memory import MemoryEstimate, StandInMemory
from .run_state import KEY, RunState
from .wan_adapter import comfy_attention, position_map, run_attn1_patches, wan_parts

log = logging.getLogger("standin")

XFUSER_DISTRIBUTED = "xfuser.core.distributed"  # raylight loads it (its own shim, or the real package) in actors
RAYLIGHT_ATTENTION = "raylight.distributed_modules.attention"  # holds the attention backend's name (set_attn_type)


# ---------------------------------------------------------------------------------------------------------------------
# the sequence-parallel layout of this process, as xfuser set it up


@dataclass(frozen=True)
class SequenceParallelLayout:
    """This rank's place in xfuser's sequence-parallel group: Ulysses degree U and ring degree N (P = U * N)."""

    ulysses_group: object  # a torch ProcessGroup, or None for degree 1
    ring_group: object
    ulysses_rank: int
    ulysses_degree: int
    ring_degree: int
    backend: Optional[str] = None  # yunchang's AttnType name raylight uses ("TORCH_FLASH"), when known

    @property
    def world_size(self) -> int:
        return self.ulysses_degree * self.ring_degree


def sequence_parallel_layout() -> Optional[SequenceParallelLayout]:
    """xfuser's sequence-parallel layout in this process, or None where there is none (not raylight, xfuser not
    initialised, or a sequence-parallel world of 1). Imports nothing: xfuser must already be loaded."""
    distributed = sys.modules.get(XFUSER_DISTRIBUTED)
    if distributed is None:
        return None
    try:
        sp = distributed.get_sp_group()
    except (AssertionError, AttributeError):  # xfuser loaded but its groups not initialised
        return None
    if sp is None or sp.world_size <= 1:
        return None
    ulysses_degree, ring_degree = int(sp.ulysses_world_size), int(sp.ring_world_size)
    backend = None
    attention = sys.modules.get(RAYLIGHT_ATTENTION)
    if attention is not None:
        try:
            backend = attention.get_attn_type()
        except RuntimeError:  # raylight has not set its attention type
            backend = None
    return SequenceParallelLayout(sp.ulysses_group if ulysses_degree > 1 else None,
                                  sp.ring_group if ring_degree > 1 else None,
                                  int(sp.ulysses_rank) if ulysses_degree > 1 else 0, ulysses_degree, ring_degree,
                                  backend)


# ---------------------------------------------------------------------------------------------------------------------
# the block forward and the ON_LOAD step


def sequence_parallel_video_attention(self_attn, x: torch.Tensor, freqs: torch.Tensor, transformer_options: dict,
                                      kv: ReferenceKV, strength, layout: SequenceParallelLayout) -> torch.Tensor:
    """One block's self-attention for this rank's token shard with Stand-In: q/k/v and RoPE through the block's own
    modules (norm_q(q(x)), norm_k(k(x)), v(x), comfy's apply_rope1, as raylight's forward computes them), the
    sequence-parallel Stand-In attention with this rank's reference heads ``kv``, then ``attn1_patch`` hooks on the
    local shard (raylight's forward calls them there) and the output projection."""
    heads = self_attn.num_heads
    queries, keys, values = project_qkv(self_attn, x, freqs, heads, None, wan.apply_rope1)
    out = sequence_parallel_attention(queries, keys, values, kv.keys, kv.values, heads, strength,
                                      ulysses_group=layout.ulysses_group, ring_group=layout.ring_group,
                                      attention=comfy_attention(transformer_options, self_attn),
                                      attention_lse=fused_attention_lse)
    patches = transformer_options.get("patches", {}).get("attn1_patch")
    if patches:
        out = run_attn1_patches(patches, out, queries, keys, heads, transformer_options)
    return self_attn.o(out)


class SequenceParallelSelfAttention(VideoSelfAttention):
    """Block ``index``'s ``self_attn.forward`` under raylight's sequence parallelism (installed by
    :class:`SequenceParallelLoad` over raylight's forward). ``base_forward`` is the function raylight had put
    there (its ``usp_self_attn_forward``), called unbound where identity does not apply. Like its parent it holds
    no module: the block is found in the call's :class:`~.model_call.ModelCall`."""

    def __init__(self, index: int, base_forward, layout: SequenceParallelLayout):
        super().__init__(index)
        self.base_forward = base_forward
        self.layout = layout

    def __call__(self, x, freqs, transformer_options={}, **kwargs):
        call: Optional[ModelCall] = transformer_options.get(CALL_KEY)
        if call is None:
            return super().__call__(x, freqs, transformer_options)  # raises the pack's message
        self_attn = call.blocks[self.index].self_attn
        if call.kv is None:
            return self.base_forward(self_attn, x, freqs, transformer_options=transformer_options, **kwargs)
        if call.regions is not None:
            raise ValueError("Stand-In References with regions do not run under raylight's sequence parallelism "
                             "yet: each GPU holds only part of the video's tokens. Remove the regions, or set the "
                             "Ulysses and ring degrees to 1.")
        kv = call.kv[self.index]
        local_width = self_attn.num_heads // self.layout.ulysses_degree * self_attn.head_dim
        if kv.keys.shape[-1] != local_width:
            raise RuntimeError(f"Stand-In's reference K/V of block {self.index} have width {kv.keys.shape[-1]}, not "
                               f"this GPU's {local_width} (its heads): the model was not set up by 'Stand-In for "
                               "raylight (every GPU)'. Apply Stand-In with that node, after Load Diffusion Model "
                               "(Ray).")
        call.ran.add(self.index)
        return sequence_parallel_video_attention(self_attn, x, freqs, transformer_options, kv, call.strength,
                                                 self.layout)


def _unbound(forward):
    """The function behind a bound method (what raylight installs), or the callable itself."""
    return getattr(forward, "__func__", forward)


class SequenceParallelLoad:
    """ON_LOAD callback (key "standin", after raylight's): where xfuser's sequence-parallel world is above 1,
    replace each block's ``self_attn.forward`` (raylight's, by now) with :class:`SequenceParallelSelfAttention`.
    Where the world is 1 (raylight without USP, or no raylight) it leaves Stand-In's object patch alone."""

    def __call__(self, model_patcher, device_to=None, lowvram_model_memory=0, force_patch_weights=False,
                 full_load=False):
        layout = sequence_parallel_layout()
        if layout is None:
            return
        if layout.backend is not None:
            check_ring_backend(layout.backend, layout.ring_degree)
        dm = model_patcher.model.diffusion_model
        heads = dm.blocks[0].self_attn.num_heads
        if heads % layout.ulysses_degree:
            raise ValueError(f"this Wan model has {heads} attention heads, which the Ulysses degree "
                             f"{layout.ulysses_degree} does not divide")
        replaced = 0
        for index, block in enumerate(dm.blocks):
            forward = block.self_attn.__dict__.get("forward")
            if isinstance(forward, SequenceParallelSelfAttention):
                continue  # loaded again: ours is still in place
            if forward is None or isinstance(forward, VideoSelfAttention):
                # raylight's inject did not run before us: leave it; the pack's check refuses a lost identity
                continue
            block.self_attn.forward = SequenceParallelSelfAttention(index, _unbound(forward), layout)
            replaced += 1
        log.info("Stand-In: sequence-parallel attention in %d of %d blocks (Ulysses %d x ring %d)", replaced,
                 len(dm.blocks), layout.ulysses_degree, layout.ring_degree)


# ---------------------------------------------------------------------------------------------------------------------
# the reference pass per rank: local, this rank's heads kept, FSDP units unsharded around the direct module calls


def _fsdp_units(*modules) -> list:
    from torch.distributed.fsdp import FSDPModule
    return [module for module in modules if isinstance(module, FSDPModule)]


class UnshardedBlocks:
    """A model's blocks for the reference pass under FSDP2: while the pass works on block i, block i (and its
    self_attn, a unit of its own in raylight's ``fully_shard_bottom_up``) is unsharded, and it is resharded before
    the next one, in block order on every rank. Without FSDP it is the blocks themselves."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, index):
        return self.blocks[index]

    def __iter__(self):
        for block in self.blocks:
            units = _fsdp_units(block, block.self_attn)
            for unit in units:
                unit.unshard()
            try:
                yield block
            finally:
                for unit in reversed(units):
                    unit.reshard()


class ShardedReferencePass(ReferencePass):
    """The DIFFUSION_MODEL wrapper of :class:`~.model_call.ReferencePass` for raylight: the same local reference pass
    on every rank (no collectives), keeping only this rank's Ulysses heads of each block's K/V as soon as the block
    made them, so the cache on each GPU is 1/U of the single-GPU one. Under FSDP2 the root and each block are
    unsharded around the pass (the pass calls their modules directly, outside their forward)."""

    def reference_pass(self, dm, x: torch.Tensor, options: dict, run: RunState) -> list:
        layout = sequence_parallel_layout()
        heads, degree = dm.num_heads, 1 if layout is None else layout.ulysses_degree
        rank = 0 if layout is None else layout.ulysses_rank

        def keep(kv: ReferenceKV) -> ReferenceKV:
            return run.cache.keep(ReferenceKV(local_reference_heads(kv.keys, heads, rank, degree),
                                              local_reference_heads(kv.values, heads, rank, degree)))

        positions = position_map(options, self.settings.rope_takes_options)
        parts = wan_parts(dm, x.dtype, x.device, options, positions)
        parts = replace(parts, blocks=UnshardedBlocks(dm.blocks))
        root = _fsdp_units(dm)
        for unit in root:
            unit.unshard()
        try:
            kv = reference_branch(parts, self.settings.reference, token_grid(x.shape[2:], dm.patch_size),
                                  run.loras(self.settings.weights, x.device), x.dtype, x.device, keep=keep)
        finally:
            for unit in root:
                unit.reshard()
        if run.cache.mode != "off":
            run.drop_loras()
        return kv


class ShardedMemoryEstimate(MemoryEstimate):
    """The PREPARE_SAMPLING wrapper of :class:`~.memory.MemoryEstimate` for raylight: ComfyUI's estimate in each actor
    counts the reference cache that :class:`ShardedReferencePass` keeps there, this rank's 1/U of the heads."""

    def memory(self, model, input_shape) -> StandInMemory:
        need = super().memory(model, input_shape)
        layout = sequence_parallel_layout()
        return need if layout is None else replace(need, cache=need.cache // layout.ulysses_degree)


# ---------------------------------------------------------------------------------------------------------------------
# what runs in every actor, and the node


def standin_for_raylight(model, weights: StandInWeights, latent: dict, strength: float, start_percent: float,
                         end_percent: float):
    """``model`` (an actor's ModelPatcher, raylight's callbacks and wrappers on it) with Stand-In for raylight: Apply
    Stand-In's clone, its reference pass and memory estimate replaced by :class:`ShardedReferencePass` and
    :class:`ShardedMemoryEstimate`, and the ON_LOAD step."""
    patched = apply_standin(model, weights, latent, strength, start_percent, end_percent)
    for wrapper_type, kind, sharded in ((comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, ReferencePass,
                                         ShardedReferencePass),
                                        (comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, MemoryEstimate,
                                         ShardedMemoryEstimate)):
        (ours,) = [w for w in patched.get_wrappers(wrapper_type, KEY) if isinstance(w, kind)]
        patched.remove_wrappers_with_key(wrapper_type, KEY)
        patched.add_wrapper_with_key(wrapper_type, KEY, sharded(ours.settings))
    on_load = comfy.patcher_extension.CallbacksMP.ON_LOAD
    patched.remove_callbacks_with_key(on_load, KEY)
    patched.add_callback_with_key(on_load, KEY, SequenceParallelLoad())
    return patched


def weights_as_tensors(weights: StandInWeights) -> tuple:
    """StandInWeights as plain tensors and a string, which unpickle in a Ray actor without this pack's classes."""
    return ([(b.q.down, b.q.up, b.k.down, b.k.up, b.v.down, b.v.up) for b in weights.blocks], weights.source)


def weights_from_tensors(blocks: list, source: str) -> StandInWeights:
    return StandInWeights([BlockLoRA(LowRank(qd, qu), LowRank(kd, ku), LowRank(vd, vu))
                           for qd, qu, kd, ku, vd, vu in blocks], source)


def pack_location() -> tuple:
    """This pack's package name and folder, as this process loaded it (ComfyUI names it after its folder)."""
    package = __name__.rsplit(".", 2)[0]
    return package, str(Path(__file__).resolve().parent.parent)


def in_actor(model, blocks: list, source: str, latent: dict, strength: float, start_percent: float,
             end_percent: float):
    """:func:`standin_for_raylight` in this process (a Ray actor), the weights rebuilt from plain tensors."""
    return standin_for_raylight(model, weights_from_tensors(blocks, source), latent, strength, start_percent,
                                end_percent)


def actor_call(weights: StandInWeights, latent: dict, strength: float, start_percent: float, end_percent: float):
    """(function, args) for ``RayWorker.model_function_runner.remote(function, *args)``: the function is made here
    as a closure so that Ray's cloudpickle sends it by value (an actor cannot import this pack under ComfyUI's
    folder name), and the arguments are plain tensors, strings and numbers."""
    package, folder = pack_location()

    def run_standin_in_actor(model, *args):  # in the actor: only the standard library and the pack's folder
        import importlib
        import importlib.util
        import sys
        module_name = package + ".nodes.raylight"
        if module_name not in sys.modules and package not in sys.modules:
            spec = importlib.util.spec_from_file_location(package, folder + "/__init__.py",
                                                          submodule_search_locations=[folder])
            pack = importlib.util.module_from_spec(spec)
            sys.modules[package] = pack
            spec.loader.exec_module(pack)
        return importlib.import_module(module_name).in_actor(model, *args)

    blocks, source = weights_as_tensors(weights)
    return run_standin_in_actor, (blocks, source, latent, float(strength), float(start_percent), float(end_percent))


class StandInForRaylight(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInForRaylight",
            display_name="Stand-In for raylight (every GPU)",
            category="Stand-In",
            description=(
                "Stand-In identity control for a Wan model that raylight splits across GPUs (Ulysses/ring sequence "
                "parallelism, CFG split, FSDP). Runs in every Ray actor, like raylight's own patch nodes: each GPU "
                "runs the reference pass itself and keeps only its attention heads of the reference K/V, and its "
                "video attention adds them after raylight's all-to-all, so the result equals Stand-In on one GPU. "
                "Put it between Load Diffusion Model (Ray) and the raylight sampler."),
            inputs=[
                io.Custom("RAY_ACTORS").Input(
                    "ray_actors", tooltip="The Ray actors from raylight's Load Diffusion Model (Ray), holding a Wan "
                                          "T2V model (Wan2.1 T2V/VACE 14B or a Wan2.2 A14B expert)."),
                *standin_inputs("or Stand-In References for several people, without regions",
                                "every GPU runs raylight's own attention"),
            ],
            outputs=[io.Custom("RAY_ACTORS").Output(
                display_name="ray_actors", tooltip="The same Ray actors, their models now with Stand-In.")],
        )

    @classmethod
    def execute(cls, ray_actors, standin, reference_latent, strength, start_percent, end_percent) -> io.NodeOutput:
        import ray  # only where raylight is in use: its actors exist, so Ray is installed
        function, args = actor_call(standin, reference_latent, strength, start_percent, end_percent)
        ray.get([actor.model_function_runner.remote(function, *args) for actor in ray_actors["workers"]])
        return io.NodeOutput(ray_actors)


NODES = [StandInForRaylight]
