"""LoadStandInLoRA: a Stand-In weight file from models/standin (or models/loras) -> STANDIN weights."""
import logging

import folder_paths
from comfy_api.latest import io

from ..standin_core import load_standin_weights
from .paths import STANDIN_FOLDER, resolve_standin_file, standin_weight_files

log = logging.getLogger("standin")

StandInWeightsType = io.Custom("STANDIN_WEIGHTS")


class LoadStandInLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LoadStandInLoRA",
            display_name="Load Stand-In LoRA",
            category="Stand-In",
            description=(
                "Loads Stand-In identity weights (the official .ckpt, or a .safetensors repack) from models/standin "
                "or models/loras. Loading is safe: only tensors are read, never code. The weights are checked "
                "against the Wan model when Stand-In is applied."),
            inputs=[
                io.Combo.Input(
                    "weights", options=standin_weight_files(),
                    tooltip=("Stand-In weight file. Put Stand-In_wan2.1_T2V_14B.ckpt (Wan2.1 T2V/VACE 14B) or the "
                             "Wan2.2 A14B _high/_low files in ComfyUI/models/standin/.")),
            ],
            outputs=[StandInWeightsType.Output(display_name="standin",
                                               tooltip="Stand-In weights for ApplyStandInToWanModel")],
        )

    @classmethod
    def execute(cls, weights: str) -> io.NodeOutput:
        try:
            path = resolve_standin_file(weights)
        except FileNotFoundError as error:
            folders = ", ".join(folder_paths.get_folder_paths(STANDIN_FOLDER))
            raise ValueError(f"Stand-In weight file '{weights}' not found. Put it in one of: {folders} and pick it "
                             "from the list (names are relative to those folders; '..' and absolute paths are not "
                             "accepted)") from error
        loaded = load_standin_weights(path)
        log.info("Loaded Stand-In weights %s", loaded.describe())
        return io.NodeOutput(loaded)


NODES = [LoadStandInLoRA]
