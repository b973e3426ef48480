"""Start an unpacked ComfyUI tree in this process (CPU) for the ComfyUI tier, the tiny identity run and the benchmark.

The tree must already be importable: its root on ``PYTHONPATH`` ahead of this repository (``scripts/test.sh`` and
``scripts/try.sh`` set it from ``COMFYUI_PATH``), so ComfyUI's own top-level modules (``nodes``, ``folder_paths``,
``comfy``) are the ones imported. Nothing here edits ``sys.path`` and nothing is downloaded. The pack itself is
imported as ``comfyui_standin`` (the editable install of this repository, see pyproject.toml), the one name every
test, script and benchmark uses.
"""
import importlib
import importlib.util
import os
import sys
from pathlib import Path


class ComfyUIPathError(RuntimeError):
    """COMFYUI_PATH is set but does not lead to an importable ComfyUI tree."""


def check_comfyui_tree(comfyui_path: str) -> Path:
    """The resolved tree, or a ComfyUIPathError that says what is wrong with ``comfyui_path``."""
    root = Path(comfyui_path).expanduser().resolve()
    missing = [name for name in ("comfy", "comfy_api", "nodes.py", "folder_paths.py", "main.py")
               if not (root / name).exists()]
    if missing:
        raise ComfyUIPathError(f"COMFYUI_PATH={comfyui_path!r} is not a ComfyUI tree (missing {', '.join(missing)})")
    return root


def comfyui_version(root: Path) -> str:
    try:
        for line in (root / "comfyui_version.py").read_text().splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
    except OSError:
        pass
    return "(unknown version)"


def import_comfyui(comfyui_path: str, extra_args=("--cpu", "--use-pytorch-cross-attention"),
                   need_core_nodes: bool = True) -> Path:
    """Import ComfyUI from ``comfyui_path`` once, with ``extra_args`` as its command line; returns the tree.

    ``need_core_nodes``: also check that ``import nodes`` (ComfyUI's core nodes, used by the tests and the tiny
    run) finds the tree's nodes.py, not this repository's nodes/ package.
    """
    root = check_comfyui_tree(comfyui_path)
    if "comfy.model_management" not in sys.modules:
        spec = importlib.util.find_spec("comfy")
        locations = list(spec.submodule_search_locations or []) if spec else []  # comfy/ is a namespace package
        found = Path(locations[0]).resolve().parent if locations else None
        if found != root:
            raise ComfyUIPathError(
                f"`import comfy` finds {found or 'nothing'}, not the tree in COMFYUI_PATH ({root}). Put the tree on "
                f"PYTHONPATH ahead of this repository: PYTHONPATH={root} (scripts/test.sh does it for you)")
        saved_argv = sys.argv
        sys.argv = [saved_argv[0], *extra_args]
        try:
            import comfy.options
            comfy.options.enable_args_parsing()
            import comfy.model_management  # noqa: F401  (parses the arguments above)
            import comfy.sd  # noqa: F401
        finally:
            sys.argv = saved_argv
    nodes_spec = importlib.util.find_spec("nodes") if need_core_nodes else None
    if need_core_nodes and (nodes_spec is None or Path(nodes_spec.origin).resolve() != root / "nodes.py"):
        raise ComfyUIPathError(f"`import nodes` finds {nodes_spec and nodes_spec.origin}, not ComfyUI's nodes.py: a "
                               "folder with a nodes/ package (this repository?) is ahead of the tree on sys.path")
    return root


def comfyui_path_from_env() -> str:
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        raise ComfyUIPathError("COMFYUI_PATH is not set: point it at an unpacked ComfyUI tree")
    return path
