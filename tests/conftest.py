"""Shared test setup.

Two tiers: the core tests run everywhere (CI included); tests marked ``comfyui`` run only when COMFYUI_PATH points
to a ComfyUI tree, and are skipped otherwise. The ``comfy`` fixture imports that ComfyUI (CPU, PyTorch attention)
and loads this pack the way ComfyUI's loader does: as a package from its folder, so relative imports work and
ComfyUI's own top-level ``nodes`` module is never shadowed.
"""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
PACK_MODULE = "standin_pack"


def pytest_collection_modifyitems(config, items):
    if COMFYUI_PATH:
        return
    skip = pytest.mark.skip(reason="needs a real ComfyUI tree: set COMFYUI_PATH")
    for item in items:
        if "comfyui" in item.keywords:
            item.add_marker(skip)


def import_comfyui():
    """Import ComfyUI from COMFYUI_PATH once, on the CPU with PyTorch's SDPA attention."""
    if "comfy.model_management" in sys.modules:
        return
    if not COMFYUI_PATH or not (Path(COMFYUI_PATH) / "comfy").is_dir():
        pytest.skip(f"COMFYUI_PATH={COMFYUI_PATH!r} is not a ComfyUI tree")
    sys.path.insert(0, str(Path(COMFYUI_PATH).resolve()))
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], "--cpu", "--use-pytorch-cross-attention"]
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.model_management  # noqa: F401  (parses the arguments above)
        import comfy.sd  # noqa: F401
    finally:
        sys.argv = saved_argv


def load_pack():
    """Load this repository as the package ``standin_pack`` (what ComfyUI's custom-node loader does)."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def comfy():
    """The pack loaded inside a real ComfyUI (tests marked ``comfyui`` only)."""
    import_comfyui()
    return load_pack()


@pytest.fixture(scope="session")
def standin_pack(comfy):
    """Alias of ``comfy`` for test modules that import ComfyUI's own ``comfy`` package by name."""
    return comfy
