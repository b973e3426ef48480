"""StandInKVCache: where (and whether) the reference K/V are kept during a sampling run."""
import logging

from comfy_api.latest import io

from ..standin_core.cache import format_bytes
from .install import set_cache_mode
from .memory import expected_cache_bytes, standin_memory
from .run_state import standin_settings

log = logging.getLogger("standin")


def describe_cache(model, mode: str) -> str:
    """The node's cache_info: what the cache will hold and where, and what else Stand-In allocates while sampling."""
    settings = standin_settings(model)
    if settings is None:
        return f"cache {mode}: Stand-In is not applied to this MODEL yet (the setting still holds once it is)"
    where = {"on": "on the compute device",
             "offload": "on the offload device, streamed to the compute device one block at a time (two blocks "
                        "there at once)",
             "off": "not kept (recomputed every model call)"}[mode]
    example = standin_memory(model, settings, (2, 16, 21, 60, 104))  # 832x480, 81 frames, cond + uncond
    count, cache = len(settings.references), expected_cache_bytes(model)
    held = (f"{format_bytes(cache)} for {count} references ({format_bytes(cache // count)} each)" if count > 1
            else format_bytes(cache))
    return (f"cache {mode}: reference K/V {held} {where}. While sampling, "
            f"Stand-In also allocates [video; reference] K/V buffers ({format_bytes(example.buffers)} at 832x480x81, "
            f"cond+uncond) and the LoRA's device copy ({format_bytes(example.lora)}); ComfyUI's memory estimate "
            f"counts all three ({format_bytes(example.total)} at that size)")


class StandInKVCache(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInKVCache",
            display_name="Stand-In K/V Cache",
            category="Stand-In",
            description=(
                "Controls the reference K/V cache. The reference branch sees neither the noisy video nor the prompt, "
                "so its keys/values are computed once per sampling run (first model call) and reused for every step "
                "and for both cond and uncond; they are freed when sampling ends. Wan 14B at a 512x512 reference: "
                "about 0.8 GB in bf16."),
            inputs=[
                io.Model.Input("model", tooltip="A model (with Stand-In applied before or after this node)."),
                io.Combo.Input("mode", options=["on", "offload", "off"], default="on", tooltip=(
                    "on: keep the K/V on the GPU for the run (fastest). offload: keep them in CPU memory and stream "
                    "one block at a time to the GPU just before that block (two blocks' worth on the GPU instead of "
                    "all 40), for low VRAM. off: recompute every model call (debugging, benchmarks).")),
            ],
            outputs=[io.Model.Output(tooltip="The model with this cache setting (a clone)."),
                     io.String.Output(display_name="cache_info", tooltip="What the cache will hold, and where.")],
        )

    @classmethod
    def execute(cls, model, mode) -> io.NodeOutput:
        patched = set_cache_mode(model, mode)
        info = describe_cache(patched, mode)
        log.info("Stand-In %s", info)
        return io.NodeOutput(patched, info)


NODES = [StandInKVCache]
