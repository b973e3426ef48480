"""StandInFaceSwapComposite: the face swap's last step, the re-sampled frames back into the original footage.

The work is done by standin_core.faces.composite; this class checks the inputs, converts ComfyUI's IMAGE / MASK /
AUDIO and reports progress. The STANDIN_SWAP_GEOMETRY type (Stand-In Face Swap Paste's 'swap' output) is defined here.
"""
import logging

import torch
from comfy_api.latest import io

from ..standin_core.faces import composite

log = logging.getLogger("standin")

SwapGeometryType = io.Custom("STANDIN_SWAP_GEOMETRY")


class StandInFaceSwapComposite(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInFaceSwapComposite",
            display_name="Stand-In Face Swap Composite",
            category="Stand-In",
            description=(
                "The face swap's last step: puts the re-sampled frames back into the ORIGINAL video at its own size, "
                "only where Stand-In Face Swap Paste put the face (its masks, feathered), so that only the face "
                "changes: every other pixel is the original's, exactly. Gives the original frames the paste used "
                "(first_frame on, max_frames at most) and, when audio is connected, the audio cut to those frames. "
                "Then Create Video with Get Video Components' fps."),
            inputs=[
                io.Image.Input("original_images", tooltip=(
                    "The original video's frames, all of them at their own size: Get Video Components' images, the "
                    "same that went into Stand-In Face Swap Paste.")),
                io.Image.Input("generated_images", tooltip=(
                    "The re-sampled frames: VAE Decode of the KSampler's latent (the paste's size and frame count; "
                    "an upscale of them also works).")),
                io.Mask.Input("masks", tooltip="Stand-In Face Swap Paste's masks: where the face was pasted."),
                SwapGeometryType.Input("swap", tooltip=(
                    "Stand-In Face Swap Paste's 'swap' output: which original frames and which rectangle of them "
                    "the paste used, and how they were scaled.")),
                io.Int.Input("feather", default=composite.FEATHER, min=0, max=256, tooltip=(
                    "Soften the mask edge: a Gaussian of this radius in pixels of the generated frames (sigma a "
                    "third of it). The face blends into the original over about this many pixels each side of the "
                    "mask's edge; 0 = the paste's mask as it is.")),
                io.Audio.Input("audio", optional=True, tooltip=(
                    "The original video's audio (Get Video Components' audio): it comes out cut to the frames used, "
                    "for Create Video.")),
                io.Float.Input("fps", optional=True, force_input=True, min=0.0, tooltip=(
                    "The original video's frame rate (Get Video Components' fps), needed to cut the audio; connect "
                    "the same to Create Video's fps.")),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip=(
                    "The original frames the paste used, at the original size, with the new face composited in.")),
                io.Audio.Output(display_name="audio", tooltip=(
                    "The audio of those frames, for Create Video (nothing when no audio was connected).")),
            ],
        )

    @classmethod
    def execute(cls, original_images, generated_images, masks, swap, feather=composite.FEATHER, audio=None,
                fps=None) -> io.NodeOutput:
        from .faces import _progress
        for name, value, dims in (("original_images", original_images, 4), ("generated_images", generated_images, 4),
                                  ("masks", masks, 3)):
            if value.ndim != dims or value.shape[0] == 0:
                raise ValueError(f"{name} must be a batch of {'images [frames, H, W, C]' if dims == 4 else 'masks'} "
                                 f"but has shape {tuple(value.shape)}")
        trimmed = None
        if audio is not None:
            if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
                raise ValueError("audio must be ComfyUI AUDIO (Get Video Components' audio)")
            rate = int(audio["sample_rate"])
            trimmed = {**audio, "waveform": composite.trim_audio(audio["waveform"], rate, swap, fps)}
        frames = composite.composite_frames(original_images, generated_images, masks, swap, feather,
                                            progress=_progress(swap.frame_count))
        log.info("Stand-In face swap composite: %s, feather %d px%s", swap, feather,
                 "" if trimmed is None else f", audio samples {composite.audio_span(swap, fps, rate)}")
        return io.NodeOutput(torch.from_numpy(frames), trimmed)


NODES = [StandInFaceSwapComposite]
