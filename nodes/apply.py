"""ApplyStandInToWanModel: MODEL + STANDIN + reference latent -> MODEL with Stand-In identity control."""
from comfy_api.latest import io

from .loaders import StandInWeightsType
from .install import apply_standin


def standin_inputs(other_reference: str, outside_range: str) -> list:
    """The inputs every node that applies Stand-In shares (this one and the raylight node): the weights, the
    reference latent (``other_reference``: what else may give it), strength and the step range (``outside_range``:
    what runs outside it)."""
    return [
        StandInWeightsType.Input(
            "standin", tooltip="From Load Stand-In LoRA. For Wan2.2 A14B use the _high file on the high-noise model "
                               "and the _low file on the low-noise model."),
        io.Latent.Input("reference_latent", tooltip=(
            "The reference face as ONE latent frame: the 'reference_latent' output of Encode Stand-In Reference Face "
            f"({other_reference}).")),
        io.Float.Input("strength", default=1.0, min=0.0, max=3.0, step=0.05, tooltip=(
            "1.0 = Stand-In exactly as trained. 0 = the base model exactly. In between / above, each reference key "
            "counts that many times in the video's attention (more or less identity).")),
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, tooltip=(
            "Fraction of the sampling schedule where identity starts to apply (0 = from the first step).")),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
            f"Fraction of the schedule where identity stops (1 = to the end). Outside the range {outside_range}.")),
    ]


class ApplyStandInToWanModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ApplyStandInToWanModel",
            display_name="Apply Stand-In to Wan Model",
            category="Stand-In",
            description=(
                "Adds Stand-In identity control to a native Wan text-to-video model (Wan2.1 T2V/VACE 14B, each expert "
                "of Wan2.2 A14B). The reference face's tokens run through the model at timestep 0 with the Stand-In "
                "LoRA, and every video self-attention also attends to their keys/values. Works on a copy: the input "
                "MODEL is unchanged. Chains with VACE, style LoRAs, fp8/GGUF weights and KSampler."),
            inputs=[
                io.Model.Input("model", tooltip="A Wan T2V model from 'Load Diffusion Model' (fp8, GGUF and "
                                                "LoRA'd models are fine)."),
                *standin_inputs("or a VAE Encode of a prepared 512x512 face on white",
                                "the model is exactly the base model"),
            ],
            outputs=[io.Model.Output(tooltip="The model with Stand-In applied (a clone).")],
        )

    @classmethod
    def execute(cls, model, standin, reference_latent, strength, start_percent, end_percent) -> io.NodeOutput:
        return io.NodeOutput(apply_standin(model, standin, reference_latent, strength, start_percent, end_percent))


NODES = [ApplyStandInToWanModel]
