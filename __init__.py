"""Stand-In identity control for ComfyUI's native Wan video models.

ComfyUI's loader calls :func:`comfy_entrypoint` (the V3 node API), which imports the nodes and registers the
pack's model folders. Importing the package itself imports nothing from ComfyUI and registers nothing, so tests,
scripts and benchmarks use :mod:`.standin_core` (the method, pure torch) without a ComfyUI tree.
"""
WEB_DIRECTORY = None


async def comfy_entrypoint():
    """The pack's ComfyExtension (ComfyUI awaits this when it loads custom nodes)."""
    from .nodes import StandInExtension
    return StandInExtension()
