"""The layers: standin_core never imports ComfyUI, and the pack imports without it."""
import ast
from pathlib import Path



CORE = Path(__file__).resolve().parents[1] / "standin_core"
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server",
                 "execution", "node_helpers", "latent_preview"}


def test_standin_core_never_imports_comfyui():
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in COMFY_MODULES]
    assert list(CORE.rglob("*.py")), "standin_core has no modules?"
    assert offenders == []


def test_the_pack_imports_without_comfyui(tmp_path):
    """Outside ComfyUI the package loads (as ComfyUI's loader loads it: a folder by path) and imports no ComfyUI
    module until ComfyUI awaits its entry point."""
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[1]
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {str(repo / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(repo)!r}])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['pack'] = module; "
        "spec.loader.exec_module(module)\n"
        "import inspect; assert inspect.iscoroutinefunction(module.comfy_entrypoint)\n"
        "import pack.standin_core, pack.standin_core.faces.prepare\n"
        "assert not any(name.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths') for name in sys.modules)\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
