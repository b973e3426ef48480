"""Stand-In through the pack's nodes on a tiny real Wan MODEL, sampled with ComfyUI, and the joint-sequence oracle in
the diffusion model's place (comfyui tier).

  * :func:`load_model`, :func:`standin`, :func:`with_style_lora`: a MODEL from a state dict, Stand-In applied through
    ApplyStandInToWanModel (and StandInKVCache), a style LoRA through ComfyUI's loader; :func:`conds`: seeded
    prompts; :func:`processed`: a latent in a model's latent space;
  * :func:`sample` (comfy.sample, euler/simple), :func:`sample_two_stages` (two experts, as Wan2.2 A14B) and
    :func:`forward` (one diffusion-model call as ComfyUI makes it);
  * :class:`JointModel`: a clone of a MODEL whose diffusion model is the paper's joint sequence
    (tests/support/joint_sequence.py), the oracle of the node tests;
  * :func:`fresh_standin_run`: the oracle "the same prompt alone on fresh state";
  * :class:`Scene`: one test module's inputs (base model, weights, reference, noise, prompt) with the calls above
    bound to them.
"""
import math
from dataclasses import dataclass, field

import torch

from comfyui_standin.tests.support.joint_sequence import joint_forward


def load_model(state_dict: dict, **model_options):
    """A fresh ComfyUI MODEL (ModelPatcher) from a copy of ``state_dict`` (the loader may consume the dict)."""
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict({k: v.clone() for k, v in state_dict.items()},
                                                    model_options=model_options)


def standin(model, weights, reference: torch.Tensor, strength=1.0, start=0.0, end=1.0, mode="on"):
    """``model`` through ApplyStandInToWanModel, then StandInKVCache(``mode``) unless ``mode`` is None."""
    from comfyui_standin.nodes import apply, cache
    patched = apply.ApplyStandInToWanModel.execute(model, weights, {"samples": reference}, strength, start, end).args[0]
    return patched if mode is None else cache.StandInKVCache.execute(patched, mode).args[0]


def with_style_lora(model, lora: dict, strength=1.0):
    """``model`` with a LoRA through ComfyUI's loader (comfy.sd.load_lora_for_models, model only)."""
    import comfy.sd
    return comfy.sd.load_lora_for_models(model, None, lora, strength, 0)[0]


def conds(*seeds, tokens=7):
    """Seeded text-encoder outputs, exactly as the server's StandInTestConditioning makes them."""
    return [torch.randn(1, tokens, 4096, generator=torch.Generator().manual_seed(seed)) for seed in seeds]


def sample(model, noise, positive, negative, steps=2, cfg=3.0, latent=None, callback=None, **kwargs):
    """comfy.sample.sample with euler/simple; ``positive``/``negative`` are ComfyUI CONDITIONING lists."""
    import comfy.sample
    latent = torch.zeros_like(noise) if latent is None else latent
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent,
                                   denoise=1.0, disable_pbar=True, seed=0, callback=callback, **kwargs)


def sample_two_stages(high, low, noise, positive, negative, steps=4, switch=2, cfg=3.0):
    """Wan2.2 A14B as two KSamplerAdvanced run it: ``high`` (the high-noise expert) for the first ``switch`` steps,
    then ``low`` for the rest, on the first stage's latent without new noise."""
    mid = sample(high, noise, positive, negative, steps, cfg, start_step=0, last_step=switch, force_full_denoise=False)
    return sample(low, torch.zeros_like(noise), positive, negative, steps, cfg, latent=mid, start_step=switch,
                  last_step=steps, disable_noise=True)


def forward(model, x, sigma, context, **extra):
    """One call of the model's diffusion model as ComfyUI makes it (object patches loaded; the MODEL's
    transformer_options, its patches included, and its wrappers in the options). Returns (output, timestep)."""
    import comfy.model_management
    comfy.model_management.load_models_gpu([model])
    dm = model.model.diffusion_model
    options = {**model.model_options.get("transformer_options", {}), "wrappers": model.wrappers}
    t = model.model.model_sampling.timestep(sigma)
    with torch.no_grad():
        return dm(x, t, context, transformer_options=options, **extra), t


def processed(model, latent: torch.Tensor) -> torch.Tensor:
    """``latent`` (as in a LATENT) in ``model``'s latent space: its latent format's ``process_in``."""
    return model.get_model_object("latent_format").process_in(latent)


class JointModel:
    """``model`` (a clone in ``.model``) whose diffusion model is the joint-sequence oracle with the Stand-In state
    dict ``standin_sd`` and ``reference`` (as in the LATENT; a list for several people), log(``strength``) on the
    video queries' logits over the reference keys (a list: one per reference); ``joint_options`` go to
    :func:`joint_forward`. ``.calls`` counts the model calls."""

    def __init__(self, model, reference, standin_sd: dict, strength=1.0, **joint_options):
        import comfy.patcher_extension
        self.calls = 0
        if isinstance(reference, torch.Tensor):
            reference = processed(model, reference)
        else:
            reference = [processed(model, one) for one in reference]

        def log_of(value):
            return math.log(value) if value > 0 else float("-inf")
        bias = log_of(strength) if isinstance(strength, (int, float)) else [log_of(value) for value in strength]

        def wrapper(executor, x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kw):
            self.calls += 1
            return joint_forward(executor.class_obj, x, timestep, context, reference, standin_sd,
                                 vace_context=kw.get("vace_context"), vace_strength=kw.get("vace_strength"),
                                 video_to_image_bias=bias, time_dim_concat=time_dim_concat, **joint_options)

        self.model = model.clone()
        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_joint", wrapper)


def fresh_standin_run(model_state: dict, standin_state: dict, reference, noise, positive, negative, strength=1.0,
                      lora=None, lora_strength=1.0, **sample_args):
    """The oracle "the same prompt alone on fresh state": a new model, new Stand-In weights, cache off."""
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    model = load_model(model_state)
    weights = standin_weights_from_state_dict({k: v.clone() for k, v in standin_state.items()}, source="fresh")
    model = standin(model, weights, reference.clone(), strength, mode="off")
    if lora is not None:
        model = with_style_lora(model, lora, lora_strength)
    return sample(model, noise, positive, negative, **sample_args)


@dataclass
class Scene:
    """A test module's inputs: the base MODEL, Stand-In weights and their state dict, the reference latent, noise and
    a prompt (cond, uncond), with :func:`standin`, :func:`sample` and :class:`JointModel` bound to them. Other
    attributes (models, the pack's node modules) may be set on it."""

    base: object
    weights: object
    standin_sd: dict
    reference: torch.Tensor
    noise: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    steps: int = 3
    cfg: float = 3.0
    ref: dict = field(init=False)  # the reference as a LATENT

    def __post_init__(self):
        self.ref = {"samples": self.reference}

    def standin(self, model=None, strength=1.0, start=0.0, end=1.0):
        """``model`` (the base model by default) with this scene's Stand-In applied, no cache node."""
        return standin(self.base if model is None else model, self.weights, self.reference, strength, start, end,
                       mode=None)

    def sample(self, model, steps=None, cfg=None, noise=None, **cond_extra):
        """This scene's prompt sampled with ``model``; ``cond_extra`` goes into both conds (VACE, Phantom inputs)."""
        noise = self.noise if noise is None else noise
        positive, negative = [[self.cond, dict(cond_extra)]], [[self.uncond, dict(cond_extra)]]
        return sample(model, noise, positive, negative, steps=self.steps if steps is None else steps,
                      cfg=self.cfg if cfg is None else cfg)

    def joint(self, model, **joint_options) -> JointModel:
        """``model`` with the joint-sequence oracle on this scene's reference and Stand-In weights."""
        return JointModel(model, self.reference, self.standin_sd, **joint_options)
