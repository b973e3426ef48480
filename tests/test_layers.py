"""The layers: standin_core never imports ComfyUI, imports go one way (product <- tools <- tests), and the pack
imports without ComfyUI."""
import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "standin_core"
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


# What each folder of the repository may import of the others (docs/design.md, "Layers"): the product (the method,
# then the ComfyUI glue) imports no tool and no test; the tools import no test.
LAYER_OF = {"standin_core": "core", "nodes": "glue", "__init__.py": "glue", "devtools": "tools", "scripts": "tools",
            "benchmarks": "tools", "tests": "tests"}
MAY_IMPORT = {"core": {"core"}, "glue": {"core", "glue"}, "tools": {"core", "glue", "tools"},
              "tests": {"core", "glue", "tools", "tests"}}


def imported_folders(path: Path) -> set:
    """The repository's top-level folders that the module at ``path`` imports, absolutely (``comfyui_standin.X``)
    or relatively (``from ..X import``), resolved against the module's own package."""
    package = path.relative_to(REPO).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - (node.level - 1)]) if node.level - 1 <= len(package) else None
            if base is not None:
                names = [["comfyui_standin", *base, *(node.module.split(".") if node.module else [])]]
                if not base and not node.module:  # "from . import x" at the top level
                    names = [["comfyui_standin", alias.name] for alias in node.names]
        found |= {parts[1] for parts in names if len(parts) > 1 and parts[0] == "comfyui_standin"}
    return found


def test_the_layers_import_in_one_direction():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    offenders = []
    for name in files:
        layer = LAYER_OF.get(name.split("/")[0])
        if layer is None or not (REPO / name).is_file():
            continue
        for folder in imported_folders(REPO / name):
            target = LAYER_OF.get(folder) or LAYER_OF.get(folder + ".py")
            if target is not None and target not in MAY_IMPORT[layer]:
                offenders.append(f"{name} ({layer}) imports {folder} ({target})")
    assert len(files) > 50 and {"nodes/install.py", "devtools/comfy_boot.py", "tests/conftest.py"} <= set(files)
    assert offenders == []


def test_the_pack_imports_without_comfyui(tmp_path):
    """Outside ComfyUI the package loads (as ComfyUI's loader loads it: a folder by path) and imports no ComfyUI
    module until ComfyUI awaits its entry point."""
    import sys
    repo = REPO
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
