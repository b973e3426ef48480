"""Loading Stand-In weight files the tests write: formats, dtypes, wrappers, prefixes, and every refusal."""
import os
import pickle

import pytest
import safetensors.torch
import torch

from comfyui_standin.standin_core import LowRank, StandInWeightsError, load_standin_weights, standin_state_dict

DIM, DEPTH, RANK = 48, 3, 4


def official_state_dict(dim=DIM, depth=DEPTH, rank=RANK, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(depth):
        for p in "qkv":
            sd[f"blocks.{i}.self_attn.{p}_loras.down.weight"] = torch.randn(rank, dim, generator=g).to(dtype)
            sd[f"blocks.{i}.self_attn.{p}_loras.up.weight"] = torch.randn(dim, rank, generator=g).to(dtype)
    return sd


def check_loaded(weights, sd, prefix=""):
    assert (weights.depth, weights.width, weights.rank) == (DEPTH, DIM, RANK)
    assert weights.num_parameters == DEPTH * 3 * 2 * DIM * RANK
    for key, value in standin_state_dict(weights).items():
        assert torch.equal(value, sd[prefix + key])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("wrap", [False, True])
def test_official_ckpt(tmp_path, dtype, wrap):
    sd = official_state_dict(dtype=dtype)
    path = tmp_path / "Stand-In_wan2.1_T2V_14B.ckpt"
    torch.save({"state_dict": sd} if wrap else sd, path)
    weights = load_standin_weights(str(path))
    check_loaded(weights, sd)
    assert weights.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prefix", ["", "diffusion_model."])
def test_safetensors(tmp_path, dtype, prefix):
    sd = {prefix + k: v for k, v in official_state_dict(dtype=dtype).items()}
    path = tmp_path / "standin.safetensors"
    safetensors.torch.save_file(sd, str(path))
    check_loaded(load_standin_weights(str(path)), sd, prefix)


def test_lora_computes_in_its_own_dtype():
    g = torch.Generator().manual_seed(0)
    down, up = torch.randn(4, 16, generator=g).bfloat16(), torch.randn(16, 4, generator=g).bfloat16()
    x = torch.randn(3, 16, generator=g)
    out = LowRank(down, up)(x)
    expected = ((x.bfloat16() @ down.T) @ up.T).float()
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-2, rtol=1e-2)
    assert not torch.allclose(out, (x @ down.float().T) @ up.float().T, atol=1e-6, rtol=0)  # really bf16 math


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    sd = official_state_dict()
    sd["extra"] = _Payload(marker)
    with open(path, "wb") as fh:  # a legacy (non-zip) pickle
        pickle.dump(sd, fh)
    with pytest.raises(StandInWeightsError, match="refused") as info:
        load_standin_weights(str(path))
    assert str(path) in str(info.value)
    assert not marker.exists()

    zipped = tmp_path / "evil_zip.ckpt"  # the torch.save zip format with the same payload
    torch.save(sd, zipped)
    with pytest.raises(StandInWeightsError, match="refused"):
        load_standin_weights(str(zipped))
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    sd = official_state_dict()
    if suffix == ".ckpt":
        torch.save(sd, path)
    else:
        safetensors.torch.save_file(sd, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StandInWeightsError, match="truncated or corrupt") as info:
        load_standin_weights(str(path))
    assert str(path) in str(info.value)


def test_wrong_width_names_file_and_expectation(tmp_path):
    path = tmp_path / "Stand-In_wan2.1_T2V_14B.safetensors"
    safetensors.torch.save_file(official_state_dict(), str(path))
    weights = load_standin_weights(str(path))
    weights.validate_for(width=DIM, depth=DEPTH)  # fits
    with pytest.raises(StandInWeightsError) as info:
        weights.validate_for(width=1536, depth=DEPTH, model_name="WanModel")
    message = str(info.value)
    assert str(path) in message and "width 48" in message and "width 1536" in message and "Wan 1.3B" in message
    with pytest.raises(StandInWeightsError, match="3 blocks but WanModel has 30"):
        weights.validate_for(width=DIM, depth=30, model_name="WanModel")


def test_missing_block(tmp_path):
    sd = official_state_dict()
    for key in [k for k in sd if k.startswith("blocks.1.")]:
        del sd[key]
    path = tmp_path / "holey.safetensors"
    safetensors.torch.save_file(sd, str(path))
    with pytest.raises(StandInWeightsError, match=r"incomplete: 6 tensors missing") as info:
        load_standin_weights(str(path))
    assert "blocks.1.self_attn.q_loras.down.weight" in str(info.value) and str(path) in str(info.value)


def test_rank_mismatch(tmp_path):
    sd = official_state_dict()
    sd["blocks.2.self_attn.v_loras.up.weight"] = torch.randn(DIM, RANK + 2)
    path = tmp_path / "ranks.ckpt"
    torch.save(sd, path)
    with pytest.raises(StandInWeightsError) as info:
        load_standin_weights(str(path))
    message = str(info.value)
    assert "blocks.2.self_attn.v_loras.up.weight" in message and "(48, 6)" in message and "(48, 4)" in message


def test_style_lora_is_not_mistaken_for_standin(tmp_path):
    path = tmp_path / "style.safetensors"
    safetensors.torch.save_file({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 8),
                                 "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(8, 4)}, str(path))
    with pytest.raises(StandInWeightsError, match="LoraLoaderModelOnly"):
        load_standin_weights(str(path))


def test_other_refusals(tmp_path):
    with pytest.raises(StandInWeightsError, match="not found"):
        load_standin_weights(str(tmp_path / "absent.ckpt"))
    gguf = tmp_path / "w.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(StandInWeightsError, match="unsupported"):
        load_standin_weights(str(gguf))
    ints = tmp_path / "ints.safetensors"
    sd = official_state_dict()
    sd["blocks.0.self_attn.q_loras.down.weight"] = torch.zeros(RANK, DIM, dtype=torch.int8)
    safetensors.torch.save_file(sd, str(ints))
    with pytest.raises(StandInWeightsError, match="int8"):
        load_standin_weights(str(ints))
    not_zip = tmp_path / "garbage.ckpt"
    not_zip.write_bytes(b"\x00" * 100)
    with pytest.raises(StandInWeightsError, match=str(not_zip)):
        load_standin_weights(str(not_zip))
