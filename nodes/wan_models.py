"""Which ComfyUI Wan models Stand-In runs on, and the reference latent as the model sees it (checked at apply time).

Stand-In's weights were trained on Wan2.1 T2V 14B, where the video's frames start at time 0 and nothing else shares
the sequence; they also fit Wan2.1 VACE 14B and each Wan2.2 A14B T2V expert.
"""
import torch

import comfy.model_management

SUPPORTED_MODELS = ("WanModel", "VaceWanModel")
# The other Wan-family classes of ComfyUI (v0.28.0: comfy/ldm/wan/model.py, model_animate.py, model_wandancer.py,
# ar_model.py): why Stand-In does not run on each, and what to use instead.
OTHER_WAN_MODELS = {
    "CameraWanModel": "a Wan-Fun camera-control model: 32/36 input channels (image latent and mask with the noise) "
                      "and a camera adapter added to the video tokens. Use Wan2.1 T2V or VACE 14B with Stand-In (and "
                      "a camera-motion LoRA) for camera moves with one identity",
    "WanModel_S2V": "Wan2.2 S2V: a fine-tune that carries its own identity reference (at time 30 and later, with a "
                    "learned condition embedding), motion frames at negative times and audio injected after every "
                    "block. Give the person's photo to its own ref_image (WanSoundImageToVideo)",
    "HumoWanModel": "HuMo: a fine-tune with its own subject reference (appended after the video frames) and audio "
                    "cross-attention in every block (17B: 36 channels; 1.7B: another width). Give the photo to its own "
                    "reference input (WanHuMoImageToVideo)",
    "SCAILWanModel": "SCAIL: a 20-channel image-to-video model whose own reference frames come BEFORE the video in "
                     "time (the video starts at time R, so Stand-In's frame -1 is not one before it) and whose pose "
                     "tokens share the sequence. Use SCAIL's own reference image",
    "SCAIL2WanModel": "SCAIL-2: like SCAIL, a 20-channel image-to-video model with its own reference frames before "
                      "the video and pose and mask streams in the sequence. Use SCAIL-2's own reference image",
    "AnimateWanModel": "Wan2.2 Animate: a 36-channel character-replacement model whose reference image is the first "
                       "latent frame, with a face adapter every five blocks. Use its own reference_image "
                       "(WanAnimateToVideo)",
    "WanDancerModel": "WanDancer: a 36-channel music-to-dance image-to-video fine-tune whose time positions step by "
                      "30/fps. Use its own reference image",
    "CausalWanModel": "the causal (autoregressive, self-forcing) Wan: its attention takes a K/V cache of past frames "
                      "and, in its ar_video sampler, its blocks are called without ComfyUI's model wrappers, so the "
                      "reference could not be attended. Use Wan2.1 T2V 14B with KSampler",
}
WAN_LATENT_CHANNELS = 16  # the Wan2.1 VAE's latent: what Stand-In's reference is and what its weights expect


def diffusion_model_of(model) -> torch.nn.Module:
    return model.get_model_object("diffusion_model")


def check_wan_model(model) -> torch.nn.Module:
    """The model's WanModel, or a ValueError saying what was expected."""
    dm = diffusion_model_of(model)
    name = type(dm).__name__
    if name in OTHER_WAN_MODELS:
        raise ValueError(f"Stand-In does not run on this {name}: it is {OTHER_WAN_MODELS[name]}. Stand-In's weights "
                         "fit Wan2.1 T2V 14B, Wan2.1 VACE 14B and each Wan2.2 A14B T2V expert.")
    if name not in SUPPORTED_MODELS:
        raise ValueError(
            f"Stand-In needs a Wan text-to-video model ({' or '.join(SUPPORTED_MODELS)}, loaded with 'Load Diffusion "
            f"Model'), but this MODEL is a {name}. Use Wan2.1 T2V 14B, Wan2.1 VACE 14B or a Wan2.2 A14B T2V expert.")
    channels = dm.patch_embedding.weight.shape[1]
    if channels != WAN_LATENT_CHANNELS or getattr(dm, "model_type", "t2v") != "t2v":
        # By the patch embedding, not by model_type: Wan2.2 I2V A14B loads as 't2v' with 36 input channels (image
        # latent and mask concatenated to the noise), TI2V-5B takes 48 (the Wan2.2 VAE), the Fun models differ too.
        kind = {36: "image-to-video (the start image is concatenated to the noise)",
                48: "Wan2.2 TI2V-5B (the 48-channel Wan2.2 VAE)"}.get(channels, f"Wan '{dm.model_type}'")
        raise ValueError(
            f"Stand-In needs a Wan text-to-video model whose patch embedding takes {WAN_LATENT_CHANNELS} latent "
            f"channels; this one takes {channels}: {kind}. The Stand-In weights were trained on Wan2.1 T2V 14B "
            "(they also fit Wan2.1 VACE 14B and each Wan2.2 A14B T2V expert). For a first or last frame, or to extend "
            "a clip, use Wan2.1 VACE 14B with WanVaceToVideo (reference image / control frames) and Stand-In on it.")
    if getattr(dm, "ref_conv", None) is not None:
        # Wan-Fun's reference convolution prepends its reference's tokens as frame 0 and moves the video to frames
        # 1.. (comfy/ldm/wan/model.py, WanModel.forward_orig and _forward's t_len + 1): Stand-In's frame -1 would no
        # longer be the frame before the video.
        raise ValueError("Stand-In does not run on a Wan-Fun model with a reference convolution (ref_conv): it puts "
                         "its own reference image before the video's first frame. Use Wan2.1 T2V 14B or Wan2.1 VACE "
                         "14B.")
    return dm


def prepare_reference(model, latent: dict) -> torch.Tensor:
    """The reference LATENT as the model sees it: one frame, batch 1, through the model's latent format."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise ValueError("reference_latent must be a LATENT (connect EncodeReferenceFace or a VAE Encode of one image)")
    if samples.ndim == 4:  # an image latent [B, C, H, W]
        samples = samples.unsqueeze(2)
    if samples.ndim != 5:
        raise ValueError(f"reference_latent has shape {tuple(samples.shape)}; expected [1, C, 1, H, W]")
    if samples.shape[0] != 1 or samples.shape[2] != 1:
        raise ValueError(
            f"reference_latent must be ONE image (batch 1, one latent frame), got batch {samples.shape[0]} with "
            f"{samples.shape[2]} frames. Encode a single photo (EncodeReferenceFace), or pick one with 'Latent From "
            "Batch'.")
    dm = diffusion_model_of(model)
    channels = dm.patch_embedding.weight.shape[1]
    if samples.shape[1] != channels:
        raise ValueError(f"reference_latent has {samples.shape[1]} channels but this Wan model expects {channels}: "
                         "encode the reference with this model's own VAE (Wan2.1 VAE for Wan2.1/2.2 14B).")
    latent_format = model.get_model_object("latent_format")
    return latent_format.process_in(samples.float()).to(comfy.model_management.intermediate_device())



def compute_dtype(model) -> torch.dtype:
    """The dtype the diffusion model computes in (its activations, hence the reference K/V)."""
    return getattr(model.model, "manual_cast_dtype", None) or model.model_dtype()
