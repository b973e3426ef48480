"""The ranks of the raylight checks: one process per rank, gloo on 127.0.0.1, raylight's real sequence-parallel Wan.

Each rank does what a raylight Ray actor does, without Ray: it imports ComfyUI (COMFYUI_PATH) and raylight's snapshot
(``RAYLIGHT_PATH``, the folder holding ``src/raylight``; importing ``raylight`` loads xfuser through raylight's own
loader), initialises xfuser (``init_distributed_environment`` on gloo, then per layout ``initialize_model_parallel``,
as raylight's parallel_group_manager does), sets raylight's attention backend, and then for every case:

  * loads the tiny Wan (a fresh ModelPatcher from the state dict in ``inputs.pt``);
  * adds what raylight's RayWorker adds after loading: ``patch_usp`` (an ON_LOAD callback running
    ``USPInjectRegistry.inject``) when the sequence-parallel degree is above 1, ``patch_cfg`` (the DIFFUSION_MODEL
    wrapper ``CFGParallelInjectRegistry.inject(model)``) when the CFG degree is above 1;
  * applies Stand-In as the case says: "raylight" runs the function the node sends to every actor
    (``nodes.raylight.actor_call``) on the model, as ``RayWorker.model_function_runner`` does; "apply" is the plain
    Apply Stand-In node (Stand-In installed before raylight's inject, no ON_LOAD step), "apply_unchecked" the same
    with the pack's foreign-forward check switched off (what the output would be without it); "base" no Stand-In.
    A case's "backend" is the attention name the ON_LOAD step reads (raylight's own kernel stays the spawn's);
  * samples 2 euler steps at cfg 3 (cond and uncond: batch 2) with ComfyUI's comfy.sample, and saves the latent
    (every rank gets the whole latent back from raylight's all-gather), or the error's type and message.

A spawn with "fsdp" then runs :func:`_fsdp_check` on the same processes.

Only ComfyUI's CPU device is touched; xfuser's device helpers are pointed at the CPU (this torch is a CUDA build, so
they would pick cuda and nccl), and yunchang's flash kernel at torch's CPU flash op.
"""
from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import torch

from comfyui_standin.tests.support.parallel_ranks import spawn_ranks


def raylight_source(raylight_path: str) -> Path:
    """The folder to put on sys.path so that ``import raylight`` finds the snapshot's package."""
    source = Path(raylight_path).expanduser().resolve() / "src"
    if not (source / "raylight" / "distributed_modules" / "usp.py").is_file():
        raise FileNotFoundError(f"RAYLIGHT_PATH={raylight_path!r} is not a raylight tree (no src/raylight/"
                                "distributed_modules/usp.py)")
    return source


def _cpu_xfuser() -> None:
    """xfuser's device helpers as on a machine without CUDA: the CPU device and gloo; and yunchang's TORCH_FLASH
    kernel (torch's CUDA flash op, called by keyword: yunchang/kernels/attention.py:67-75) as torch's CPU flash op,
    which returns the same (out, lse) first."""
    envs = sys.modules["xfuser.envs"]
    envs.get_device = lambda local_rank: torch.device("cpu")
    envs.get_torch_distributed_backend = lambda: "gloo"
    envs.get_device_name = lambda: "cpu"
    envs._is_cuda = lambda: False
    import yunchang.kernels.attention as kernels

    def cpu_flash(q, k, v, dropout_p=0.0, is_causal=False, scale=None):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, scale=scale)
    kernels._scaled_dot_product_flash_attention = cpu_flash


def _setup(rank: int, world: int, port: int, attention_type: str, comfyui_path: str, raylight_path: str):
    torch.set_num_threads(1)
    sys.path.insert(0, str(raylight_source(raylight_path)))
    from comfyui_standin.devtools.comfy_boot import import_comfyui
    import_comfyui(comfyui_path)
    # xfuser's attention layer subclasses yunchang's only where torch.cuda.is_available() (attn_layer.py:9-19), and
    # raylight's loader imports it when raylight is imported: let it see a CUDA build here, then restore
    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        import raylight  # noqa: F401  (loads xfuser through raylight's loader)
    finally:
        torch.cuda.is_available = available
    _cpu_xfuser()
    import xfuser.core.distributed as xdist
    xdist.init_distributed_environment(world_size=world, rank=rank,
                                       distributed_init_method=f"tcp://127.0.0.1:{port}", backend="gloo")
    import raylight.distributed_modules.attention as attention
    attention.set_attn_type(attention_type)
    attention.set_sync_ulysses(False)


def _groups(layout: dict) -> None:
    """xfuser's groups for ``layout``, as raylight's parallel_group_manager makes them (the last ones destroyed).
    raylight's attention keeps the groups it was first made with (xdit_context_parallel.py:12-14, at import), so a
    spawn holds at most one sequence-parallel layout, after any CFG-only ones."""
    import xfuser.core.distributed as xdist
    from xfuser.core.distributed.parallel_state import destroy_model_parallel
    if xdist.model_parallel_is_initialized():
        destroy_model_parallel()
    xdist.initialize_model_parallel(classifier_free_guidance_degree=layout["cfg"],
                                    sequence_parallel_degree=layout["ulysses"] * layout["ring"],
                                    ulysses_degree=layout["ulysses"], ring_degree=layout["ring"], backend="gloo")


def _run_case(case: dict, inputs: dict, layout: dict):
    import comfy.patcher_extension
    from raylight.distributed_modules.cfg import CFGParallelInjectRegistry
    from raylight.distributed_modules.usp import USPInjectRegistry

    from comfyui_standin.nodes import model_call
    from comfyui_standin.nodes import raylight as standin_raylight
    from comfyui_standin.nodes.install import apply_standin
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    from comfyui_standin.tests.support.sampling import load_model, sample

    model = load_model(inputs["wan"])
    if layout["ulysses"] * layout["ring"] > 1:  # RayWorker.patch_usp
        model.add_callback(comfy.patcher_extension.CallbacksMP.ON_LOAD, USPInjectRegistry.inject)
    if layout["cfg"] > 1:  # RayWorker.patch_cfg
        model.add_wrapper(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, CFGParallelInjectRegistry.inject(model))
    weights = standin_weights_from_state_dict({k: v.clone() for k, v in inputs["standin"].items()}, source="tiny")
    latent = {"samples": inputs["reference"]}
    kind, strength = case["kind"], case.get("strength", 1.0)
    saved_check = model_call.check_standin_ran
    import raylight.distributed_modules.attention as attention
    saved_backend = attention.get_attn_type()
    attention.set_attn_type(case.get("backend", saved_backend))  # what the ON_LOAD step reads (not raylight's kernel)
    if kind == "raylight":
        function, args = standin_raylight.actor_call(weights, latent, strength, 0.0, 1.0)
        model = function(model, *args)  # RayWorker.model_function_runner: self.model = fn(self.model, *args)
    elif kind in ("apply", "apply_unchecked"):
        model = apply_standin(model, weights, latent, strength, 0.0, 1.0)
        if kind == "apply_unchecked":
            model_call.check_standin_ran = lambda *a, **k: None
    try:
        positive, negative = [[inputs["cond"], {}]], [[inputs["uncond"], {}]]
        return sample(model, inputs["noise"], positive, negative, steps=2, cfg=3.0)
    finally:
        model_call.check_standin_ran = saved_check
        attention.set_attn_type(saved_backend)


def _rank_main(rank: int, world: int, port: int, folder: str, spawn: dict, comfyui_path: str,
               raylight_path: str) -> None:
    folder = Path(folder)
    results = {}
    try:
        _setup(rank, world, port, spawn["attention"], comfyui_path, raylight_path)
        inputs = torch.load(folder / "inputs.pt")
        for layout_name, layout in spawn["layouts"].items():
            _groups(layout)
            for name, case in layout["cases"].items():
                started = time.monotonic()
                try:
                    entry = {"latent": _run_case(case, inputs, layout)}
                except Exception as error:  # the test asserts which cases must fail, and how
                    entry = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
                entry["seconds"] = time.monotonic() - started
                results[f"{layout_name}/{name}"] = entry
        if spawn.get("fsdp"):
            try:
                results["fsdp"] = _fsdp_check(inputs)
            except Exception as error:
                results["fsdp"] = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
    except Exception:
        results["__setup__"] = {"error": traceback.format_exc()}
    torch.save(results, folder / f"rank{rank}.pt")
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()


def run_raylight_world(folder: Path, spawn: dict, comfyui_path: str, raylight_path: str,
                       timeout: float = 240.0) -> list:
    """Run ``spawn`` = {"attention": raylight's backend, "layouts": {name: {ulysses, ring, cfg, cases}}} in one set of
    processes (every layout of a spawn has the same world size); returns each rank's {"layout/case": result}."""
    worlds = {layout["ulysses"] * layout["ring"] * layout["cfg"] for layout in spawn["layouts"].values()}
    assert len(worlds) == 1, f"one world size per spawn, not {sorted(worlds)}"
    world = worlds.pop()
    return spawn_ranks(_rank_main, world, (str(folder), spawn, comfyui_path, raylight_path), folder, timeout,
                       "raylight ranks")



def _fsdp_check(inputs: dict) -> dict:
    """The FSDP check (after a spawn's layouts, on its process group): the reference K/V of the tiny Wan through
    Stand-In's raylight reference pass, before and after raylight's own FSDP2 sharding of the diffusion model
    (``fully_shard_bottom_up``, reshard after forward, as its model patcher calls it), and what the plain reference
    pass does on the sharded model."""
    from raylight.comfy_dist.fsdp_utils import fully_shard_bottom_up

    from comfyui_standin.nodes import raylight as standin_raylight
    from comfyui_standin.nodes.model_call import ReferencePass
    from comfyui_standin.nodes.run_state import RunState, standin_settings
    from comfyui_standin.standin_core import ReferenceKVCache, standin_weights_from_state_dict
    from comfyui_standin.tests.support.sampling import load_model
    model = load_model(inputs["wan"])
    weights = standin_weights_from_state_dict({k: v.clone() for k, v in inputs["standin"].items()}, source="tiny")
    settings = standin_settings(standin_raylight.standin_for_raylight(model, weights, {"samples": inputs["reference"]},
                                                                      1.0, 0.0, 1.0))
    dm = model.model.diffusion_model

    def kv_of(reference_pass):
        with torch.no_grad():
            kv = reference_pass.reference_pass(dm, inputs["noise"], {}, RunState(ReferenceKVCache("off")))
        return [torch.stack([block.keys, block.values]) for block in kv]
    results = {"unsharded": kv_of(standin_raylight.ShardedReferencePass(settings)),
               "units": fully_shard_bottom_up(dm, fsdp_kwargs={"reshard_after_forward": True},
                                              native_ignore_scale=True)}
    results["sharded"] = kv_of(standin_raylight.ShardedReferencePass(settings))
    results["dtensors_after"] = sum(type(p).__name__ == "DTensor" for p in dm.parameters())
    try:
        kv_of(ReferencePass(settings))
        results["plain"] = "ran"
    except Exception as error:
        results["plain"] = f"{type(error).__name__}: {error}"
    return results
