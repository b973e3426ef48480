"""Shared test setup.

Two tiers: the core tests run everywhere (CI included); tests marked ``comfyui`` run only when COMFYUI_PATH points
to a ComfyUI tree, and are skipped otherwise. The ``comfy`` fixture imports that ComfyUI (CPU, PyTorch attention)
and loads this pack the way ComfyUI's loader does: as a package from its folder, so relative imports work and
ComfyUI's own top-level ``nodes`` module is never shadowed.
"""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
sys.path.insert(0, str(REPO / "scripts"))
from comfy_boot import import_comfyui, load_pack  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if COMFYUI_PATH:
        return
    skip = pytest.mark.skip(reason="needs a real ComfyUI tree: set COMFYUI_PATH")
    for item in items:
        if "comfyui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def comfy():
    """The pack loaded inside a real ComfyUI (tests marked ``comfyui`` only)."""
    if not COMFYUI_PATH or not (Path(COMFYUI_PATH) / "comfy").is_dir():
        pytest.skip(f"COMFYUI_PATH={COMFYUI_PATH!r} is not a ComfyUI tree")
    import_comfyui(COMFYUI_PATH)
    return load_pack()


@pytest.fixture(scope="session")
def standin_pack(comfy):
    """Alias of ``comfy`` for test modules that import ComfyUI's own ``comfy`` package by name."""
    return comfy
