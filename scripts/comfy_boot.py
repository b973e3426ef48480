"""Start an unpacked ComfyUI tree in this process (CPU) and load this pack into it as ComfyUI's loader would.

Shared by the ComfyUI test tier (tests/conftest.py), the tiny identity run and the benchmark. Nothing is
downloaded: ``COMFYUI_PATH`` must already point at a ComfyUI checkout.
"""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK_MODULE = "standin_pack"


def import_comfyui(comfyui_path: str, extra_args=("--cpu", "--use-pytorch-cross-attention")) -> None:
    """Import ComfyUI from ``comfyui_path`` once, with ``extra_args`` as its command line."""
    if "comfy.model_management" in sys.modules:
        return
    root = Path(comfyui_path).resolve()
    if not (root / "comfy").is_dir():
        raise FileNotFoundError(f"COMFYUI_PATH={comfyui_path!r} is not a ComfyUI tree (no comfy/ folder)")
    sys.path.insert(0, str(root))  # before this repo, so ComfyUI's top-level `nodes` module is never shadowed
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *extra_args]
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.model_management  # noqa: F401  (parses the arguments above)
        import comfy.sd  # noqa: F401
    finally:
        sys.argv = saved_argv


def load_pack():
    """This repository as the package ``standin_pack`` (a folder package, relative imports intact)."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module
