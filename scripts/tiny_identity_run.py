"""A tiny Stand-In identity run through the real nodes inside a real ComfyUI (CPU, no downloads).

    COMFYUI_PATH=/path/to/ComfyUI PYTHONPATH=/path/to/ComfyUI \
        python scripts/tiny_identity_run.py [--out out/tiny_run] [--steps 4]

What it does, with nothing downloaded:
  1. prepares scikit-image's bundled astronaut portrait into the 512x512 reference (face found by the bundled LBP
     cascade; background removal needs parsing_bisenet.pth, which is not here, and the log says so);
  2. encodes it with a *demo* encoder (8x8 average pool + a fixed random 3->16 projection), because the real Wan
     VAE weights are not available offline: the latent has the real shape [1, 16, 1, 64, 64] (1,024 tokens) but
     not the real VAE's values;
  3. builds a tiny real ComfyUI WanModel (random weights, width 256, 3 blocks) and a random Stand-In file, loads the
     file through LoadStandInLoRA from a models/standin folder, applies ApplyStandInToWanModel and StandInKVCache;
  4. samples a 832x480-geometry latent (30x52 token grid, 3 latent frames) with ComfyUI's own sampler three ways
     (base, Stand-In cache on, cache off) and reports time, cache size, and that cache on == cache off exactly.
Random weights cannot show a likeness: this proves the plumbing end to end; real likeness needs the real models.
"""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from comfyui_standin.devtools.comfy_boot import ComfyUIPathError, comfyui_path_from_env, import_comfyui


class DemoEncoder:
    """NOT the Wan VAE: 8x8 average pooling and a fixed random 3->16 projection, for offline plumbing runs only."""

    def __init__(self, seed=0):
        self.projection = torch.randn(16, 3, generator=torch.Generator().manual_seed(seed))

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:  # [B, H, W, 3] in 0..1 -> [B, 16, 1, H/8, W/8]
        pooled = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1) * 2 - 1, 8)
        return torch.einsum("oc,bchw->bohw", self.projection, pooled).unsqueeze(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/tiny_run", help="folder for the prepared reference PNG")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import_comfyui(comfyui_path_from_env())
    except ComfyUIPathError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import comfy.sample
    import comfy.sd
    import folder_paths
    import safetensors.torch
    from skimage import data

    from comfyui_standin.nodes.apply import ApplyStandInToWanModel
    from comfyui_standin.nodes.cache import StandInKVCache
    from comfyui_standin.nodes.faces import EncodeReferenceFace
    from comfyui_standin.nodes.loaders import LoadStandInLoRA
    from comfyui_standin.standin_core.faces import models as face_models, prepare as faces
    from comfyui_standin.devtools.tiny_models import standin_state_dict_for, tiny_wan_state_dict

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prepared = faces.prepare_reference(data.astronaut(), face_models.cascade_detector(), None)
    import cv2
    cv2.imwrite(str(out / "reference.png"), cv2.cvtColor(prepared.image, cv2.COLOR_RGB2BGR))
    pixels = torch.from_numpy(prepared.image).float()[None] / 255.0
    # The node itself, in subject mode (the face was already cropped above; its facexlib weights are not here).
    reference = EncodeReferenceFace.execute(pixels, DemoEncoder(), subject_mode=True).args[0]
    print(f"reference: {prepared.path}, face box {prepared.face_box}, latent {tuple(reference['samples'].shape)} "
          f"(demo encoder, not the Wan VAE) -> {out / 'reference.png'}")

    model = comfy.sd.load_diffusion_model_state_dict(tiny_wan_state_dict())
    with tempfile.TemporaryDirectory() as models:
        folder = Path(models) / "standin"
        folder.mkdir()
        safetensors.torch.save_file(standin_state_dict_for(256, 3), str(folder / "tiny_standin.safetensors"))
        folder_paths.add_model_folder_path("standin", str(folder))
        weights = LoadStandInLoRA.execute("tiny_standin.safetensors").args[0]
    with_standin = ApplyStandInToWanModel.execute(model, weights, reference, 1.0, 0.0, 1.0).args[0]
    cache_on, info = StandInKVCache.execute(with_standin, "on").args
    cache_off = StandInKVCache.execute(with_standin, "off").args[0]

    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 3, 60, 104, generator=gen)
    positive, negative = ([[torch.randn(1, 12, 4096, generator=gen), {}]],
                          [[torch.randn(1, 12, 4096, generator=gen), {}]])

    def run(m):
        start = time.perf_counter()
        with torch.inference_mode():
            result = comfy.sample.sample(m, noise, args.steps, 5.0, "euler", "simple", positive, negative,
                                         torch.zeros_like(noise), disable_pbar=True, seed=0)
        return result, time.perf_counter() - start

    run(model)  # warm-up
    base, t_base = run(model)
    on, t_on = run(cache_on)
    off, t_off = run(cache_off)
    print(f"{args.steps} steps, cfg 5 (cond+uncond batched), video latent {tuple(noise.shape)} = 4,680 tokens, "
          f"reference 1,024 tokens (22% of the video's; 3% in the paper's 81-frame setting)")
    print("  (one run each, timings are indicative only: the benchmark is benchmarks/standin_bench.py)")
    print(f"  base            {t_base:7.2f} s")
    print(f"  Stand-In cached {t_on:7.2f} s  ({100 * (t_on / t_base - 1):+.1f}%)")
    print(f"  Stand-In no cache {t_off:5.2f} s  ({100 * (t_off / t_base - 1):+.1f}%)")
    print(f"  cache on == cache off exactly: {torch.equal(on, off)}")
    print(f"  identity branch changes the result: max |Stand-In - base| = {(on - base).abs().max().item():.4f}")
    return 0 if torch.equal(on, off) and torch.isfinite(on).all() else 1


if __name__ == "__main__":
    sys.exit(main())
