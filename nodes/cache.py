"""StandInKVCache: where (and whether) the reference K/V are kept during a sampling run."""
import logging

from comfy_api.latest import io

from .patching import describe_cache, set_cache_mode

log = logging.getLogger("standin")


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
