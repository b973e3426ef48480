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
                    tooltip=("Stand-In weight file: every file in ComfyUI/models/standin/, then the Stand-In files "
                             "found in models/loras/ (recognised by their tensor names). Put "
                             "Stand-In_wan2.1_T2V_14B.ckpt (Wan2.1 T2V/VACE 14B) or the Wan2.2 A14B _high/_low files "
                             "in models/standin/. Also accepted: the same file under its first name "
                             "Stand-In_wan2.1_T2V_14B_ver1.0.ckpt (a workflow naming either finds the one you have), "
                             "and .safetensors repacks such as those WanVideoWrapper users have.")),
            ],
            outputs=[StandInWeightsType.Output(display_name="standin",
                                               tooltip="Stand-In weights for ApplyStandInToWanModel")],
        )

    @classmethod
    def validate_inputs(cls, weights: str) -> bool | str:
        """Instead of ComfyUI's check that the value is one of the listed files: a saved workflow may name the same
        weights under another name (see paths.resolve_standin_file)."""
        try:
            resolve_standin_file(weights)
        except FileNotFoundError:
            return _not_found(weights)
        return True

    @classmethod
    def execute(cls, weights: str) -> io.NodeOutput:
        try:
            path = resolve_standin_file(weights)
        except FileNotFoundError as error:
            raise ValueError(_not_found(weights)) from error
        loaded = load_standin_weights(path)
        log.info("Loaded Stand-In weights %s", loaded.describe())
        return io.NodeOutput(loaded)


def _not_found(name: str) -> str:
    folders = ", ".join(folder_paths.get_folder_paths(STANDIN_FOLDER))
    return (f"Stand-In weight file '{name}' not found. Put it in one of: {folders} (or a Stand-In file in "
            "models/loras) and pick it from the list (names are relative to those folders; '..' and absolute paths "
            "are not accepted)")


NODES = [LoadStandInLoRA]
