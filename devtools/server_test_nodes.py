"""TEST-ONLY ComfyUI nodes (scaffolding, not part of the pack): the server harness (comfyui_server.py) copies this file
into the server's custom_nodes folder as ``standin_test_helpers.py``. Text encoders are too big for a test, so these
nodes make seeded CONDITIONING and latents; two more save a MASK and report what a run left in memory."""
import torch


class StandInTestConditioning:
    """Seeded random text-encoder output (umt5 width 4096) so a graph needs no text encoder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31}),
                             "tokens": ("INT", {"default": 7, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        generator = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 4096, generator=generator), {}]],)


class StandInTestLatent:
    """A seeded non-zero Wan latent [1, 16, frames, height, width] (a stand-in for an encoded reference face)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31}),
                             "frames": ("INT", {"default": 1, "min": 1, "max": 64}),
                             "height": ("INT", {"default": 6, "min": 1, "max": 256}),
                             "width": ("INT", {"default": 6, "min": 1, "max": 256})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, frames, height, width):
        generator = torch.Generator().manual_seed(seed)
        return ({"samples": torch.randn(1, 16, frames, height, width, generator=generator)},)


class StandInTestSaveMask:
    """Saves a MASK to output/masks/<prefix>.safetensors (so a test can read what a graph computed)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "prefix": ("STRING", {"default": "mask"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def save(self, mask, prefix):
        import os
        import folder_paths
        from safetensors.torch import save_file
        folder = os.path.join(folder_paths.get_output_directory(), "masks")
        os.makedirs(folder, exist_ok=True)
        save_file({"mask": mask.contiguous()}, os.path.join(folder, prefix + ".safetensors"))
        return {"ui": {"masks": [{"filename": prefix + ".safetensors", "subfolder": "masks"}]}}


class StandInTestMemory:
    """After a run (its input is the sampled LATENT): the server process's RSS, the bytes of the distinct storages of
    every tensor the garbage collector tracks, and the Stand-In run objects still alive (the pack's RunState,
    JointKVBuffers holding tensors, ReferenceKVCache holding an entry)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "label": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "measure"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def measure(self, samples, label):
        import gc
        import psutil
        gc.collect()
        storages, alive = {}, {"RunState": 0, "JointKVBuffers": 0, "ReferenceKVCache": 0}
        for obj in gc.get_objects():
            kind = type(obj)
            if issubclass(kind, torch.Tensor):
                if obj.device.type != "meta":
                    storage = obj.untyped_storage()
                    storages[(obj.device.type, storage.data_ptr())] = storage.nbytes()
            elif kind.__name__ in alive and kind.__module__.rsplit(".", 1)[-1] in ("run_state", "attention", "cache"):
                holds = {"RunState": True, "JointKVBuffers": getattr(obj, "keys", None) is not None,
                         "ReferenceKVCache": bool(getattr(obj, "entries", None))}[kind.__name__]
                alive[kind.__name__] += int(holds)
        report = {"label": label, "rss": psutil.Process().memory_info().rss, "tensor_bytes": sum(storages.values()),
                  "tensors": len(storages), **alive}
        return {"ui": {"memory": [report]}}


NODE_CLASS_MAPPINGS = {"StandInTestConditioning": StandInTestConditioning, "StandInTestLatent": StandInTestLatent,
                       "StandInTestSaveMask": StandInTestSaveMask, "StandInTestMemory": StandInTestMemory}
