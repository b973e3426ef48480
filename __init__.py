"""Stand-In identity control for ComfyUI's native Wan video models.

Inside ComfyUI this registers the pack's nodes through ``comfy_entrypoint`` (the V3 node API). Outside ComfyUI
(tests, the command-line demo, benchmarks) importing the package registers nothing and needs nothing from ComfyUI:
the method lives in :mod:`standin_core`, which never imports ComfyUI.
"""
import importlib.util

WEB_DIRECTORY = None

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI's loader looks this name up)
