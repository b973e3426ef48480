"""Stand-In on GGUF weights loaded by city96's ComfyUI-GGUF (``UnetLoaderGGUF``), inside a real ComfyUI.

Tiny real Wan models (T2V and VACE) are written as GGUF with Q8_0, Q4_K, F16 and F32 tensors; the same model is
loaded the ordinary way from the dequantized weights the file holds; with Stand-In applied to each, a KSampler run
gives the same latent. ComfyUI-GGUF is a snapshot unpacked beside the run (COMFYUI_GGUF_PATH); these checks are
the ``gguf`` tier, not run without it (see conftest.py).
"""
import pytest
import torch

from comfyui_standin.devtools.tiny_models import tiny_wan_state_dict
from comfyui_standin.tests.support.gguf_models import load_gguf_pack, write_wan_gguf
from comfyui_standin.tests.support.sampling import Scene, load_model
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
        ordinary = load_model(computed)
        models[vace] = (loaded, ordinary)
    return pack, models


@pytest.fixture(scope="module")
def scene(comfy, standin_state, standin_weights):
    """What every check samples: the reference [1, 16, 1, 6, 10] from seed 9; noise [1, 16, 3, 8, 12], cond and
    uncond from seed 3; 3 steps at cfg 4."""
    reference = torch.randn(1, 16, 1, 6, 10, generator=torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 16, 3, 8, 12, generator=gen)
    cond, uncond = torch.randn(1, 7, 4096, generator=gen), torch.randn(1, 7, 4096, generator=gen)
    return Scene(None, standin_weights, standin_state, reference, noise, cond, uncond, steps=3, cfg=4.0)


def test_the_gguf_file_really_is_quantized(gguf_env):
    pack, models = gguf_env
    loaded, _ = models[False]
    dm = loaded.model.diffusion_model
    kinds = {type(dm.blocks[i].self_attn.q.weight).__name__ for i in range(3)}
    assert kinds == {"GGMLTensor"}
    types = [getattr(dm.blocks[i].self_attn.q.weight, "tensor_type", None) for i in range(3)]
    assert [getattr(t, "name", str(t)) for t in types] == ["Q8_0", "Q4_K", "F16"]


def test_standin_on_gguf_weights_equals_the_dequantized_weights_loaded_the_ordinary_way(gguf_env, scene):
    _, models = gguf_env
    loaded, ordinary = models[False]
    ours, reference = scene.sample(scene.standin(loaded)), scene.sample(scene.standin(ordinary))
    assert_matches(ours, reference, "GGUF against the same values loaded the ordinary way")
    assert_matches(ours, scene.sample(scene.joint(ordinary).model), "GGUF against the joint sequence")  # Stand-In
    assert_differs(ours, scene.sample(loaded), "Stand-In on the GGUF model")


def test_vace_gguf_with_vace_conditioning(gguf_env, scene):
    _, models = gguf_env
    loaded, ordinary = models[True]
    gen = torch.Generator().manual_seed(4)
    vace = dict(vace_frames=[torch.randn(1, 32, 3, 8, 12, generator=gen)],
                vace_mask=[torch.rand(1, 64, 3, 8, 12, generator=gen)], vace_strength=[0.8])
    ours, reference = scene.sample(scene.standin(loaded), **vace), scene.sample(scene.standin(ordinary), **vace)
    assert_matches(ours, reference, "VACE GGUF against the same values loaded the ordinary way")
