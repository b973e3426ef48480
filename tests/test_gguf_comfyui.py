"""Stand-In on GGUF weights loaded by city96's ComfyUI-GGUF (``UnetLoaderGGUF``), inside a real ComfyUI.

Tiny real Wan models (T2V and VACE) are written as GGUF with Q8_0, Q4_K, F16 and F32 tensors; the same model is
loaded the ordinary way from the dequantized weights the file holds; with Stand-In applied to each, a KSampler run
gives the same latent. ComfyUI-GGUF is a snapshot unpacked beside the run (COMFYUI_GGUF_PATH); these checks are
the ``gguf`` tier, not run without it (see conftest.py).
"""
import pytest
import torch

from comfyui_standin.devtools.tiny_models import standin_state_dict_for, tiny_wan_state_dict
from comfyui_standin.tests.support.gguf_models import load_gguf_pack, write_wan_gguf
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches

pytestmark = [pytest.mark.comfyui, pytest.mark.gguf]


def mixed_quantization(name, tensor):
    """Q8_0 in block 0, Q4_K in block 1 (a K-quant), F16 in block 2 and the embeddings, F32 for the rest."""
    if ".0." in name and tensor.shape[-1] % 32 == 0:
        return "Q8_0"
    if ".1." in name and tensor.shape[-1] % 256 == 0:
        return "Q4_K"
    if ".2." in name or "embedding" in name:
        return "F16"
    return "F32"


def named_tensors(module):
    """Parameters and buffers as the layers hold them (GGMLTensors keep their quantization type and shape)."""
    yield from module.named_parameters()
    yield from module.named_buffers()


@pytest.fixture(scope="module")
def gguf_env(comfy, tmp_path_factory):
    import comfy.sd
    import folder_paths
    pack = load_gguf_pack()
    folder = tmp_path_factory.mktemp("gguf_models")
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    models = {}
    for vace in (False, True):
        name = f"tiny_wan{'_vace' if vace else ''}.gguf"
        held = write_wan_gguf(folder / name, tiny_wan_state_dict(vace=vace, seed=5), mixed_quantization)
        loaded = pack.nodes.UnetLoaderGGUF().load_unet(name)[0]
        # the values ComfyUI-GGUF computes with (its dequantizer rounds through fp16), loaded the ordinary way
        computed = {key: pack.dequant.dequantize_tensor(value, torch.float32).reshape(held[key].shape).contiguous()
                    for key, value in named_tensors(loaded.model.diffusion_model) if key in held}
        assert set(computed) == set(held)
        for key, value in computed.items():  # ... which are the file's quantized values, up to fp16 rounding
            assert (value - held[key]).abs().max() <= 2e-3 * held[key].abs().max() + 1e-6, key
        ordinary = comfy.sd.load_diffusion_model_state_dict(computed)
        models[vace] = (loaded, ordinary)
    return pack, models


REFERENCE = torch.randn(1, 16, 1, 6, 10, generator=torch.Generator().manual_seed(9))


def standin(model, strength=1.0):
    from comfyui_standin.nodes.apply import ApplyStandInToWanModel
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    weights = standin_weights_from_state_dict(standin_state_dict_for(256, 3))
    return ApplyStandInToWanModel.execute(model, weights, {"samples": REFERENCE}, strength, 0.0, 1.0).args[0]


def joint_sequence_model(model):
    """``model`` whose diffusion model runs the paper's joint sequence (the independent oracle) with its weights."""
    import comfy.patcher_extension
    from comfyui_standin.tests.support.joint_sequence import joint_forward
    reference = model.get_model_object("latent_format").process_in(REFERENCE)
    standin_sd = standin_state_dict_for(256, 3)

    def forward(executor, x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kw):
        return joint_forward(executor.class_obj, x, timestep, context, reference, standin_sd)

    joint = model.clone()
    joint.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_joint", forward)
    return joint


def sample(model, **cond_extra):
    import comfy.sample
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 16, 3, 8, 12, generator=gen)
    positive = [[torch.randn(1, 7, 4096, generator=gen), dict(cond_extra)]]
    negative = [[torch.randn(1, 7, 4096, generator=gen), dict(cond_extra)]]
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, 3, 4.0, "euler", "simple", positive, negative,
                                   torch.zeros_like(noise), denoise=1.0, disable_pbar=True, seed=0)


def test_the_gguf_file_really_is_quantized(gguf_env):
    pack, models = gguf_env
    loaded, _ = models[False]
    dm = loaded.model.diffusion_model
    kinds = {type(dm.blocks[i].self_attn.q.weight).__name__ for i in range(3)}
    assert kinds == {"GGMLTensor"}
    types = [getattr(dm.blocks[i].self_attn.q.weight, "tensor_type", None) for i in range(3)]
    assert [getattr(t, "name", str(t)) for t in types] == ["Q8_0", "Q4_K", "F16"]


def test_standin_on_gguf_weights_equals_the_dequantized_weights_loaded_the_ordinary_way(gguf_env):
    _, models = gguf_env
    loaded, ordinary = models[False]
    ours, reference = sample(standin(loaded)), sample(standin(ordinary))
    assert_matches(ours, reference, "GGUF against the same values loaded the ordinary way")
    assert_matches(ours, sample(joint_sequence_model(ordinary)), "GGUF against the joint sequence")  # it is Stand-In
    assert_differs(ours, sample(loaded), "Stand-In on the GGUF model")


def test_vace_gguf_with_vace_conditioning(gguf_env):
    _, models = gguf_env
    loaded, ordinary = models[True]
    gen = torch.Generator().manual_seed(4)
    vace = dict(vace_frames=[torch.randn(1, 32, 3, 8, 12, generator=gen)],
                vace_mask=[torch.rand(1, 64, 3, 8, 12, generator=gen)], vace_strength=[0.8])
    ours, reference = sample(standin(loaded), **vace), sample(standin(ordinary), **vace)
    assert_matches(ours, reference, "VACE GGUF against the same values loaded the ordinary way")
