"""The comfyui tier never skips quietly: a COMFYUI_PATH that is set but wrong is an error, with a message.

Each case runs the README's test command (scripts/test.sh) or pytest itself in a subprocess, on one fast test.
"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTEST = Path(sys.executable).parent / "pytest"
ONE_COMFYUI_TEST = "tests/test_nodes_faces.py::test_schemas_are_complete_and_registered"


def run(command, comfyui_path, extra_env=None):
    env = {**os.environ, "COMFYUI_PATH": str(comfyui_path), **(extra_env or {})}
    env.pop("PYTHONPATH", None)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def fake_tree(folder: Path) -> Path:
    """A folder with the names of a ComfyUI tree but no ComfyUI inside (so it cannot be imported)."""
    for name in ("comfy", "comfy_api"):
        (folder / name).mkdir(parents=True)
    for name in ("nodes.py", "folder_paths.py", "main.py"):
        (folder / name).write_text("")
    (folder / "comfyui_version.py").write_text('__version__ = "0.0.0"\n')
    return folder


def test_the_test_command_refuses_a_path_that_is_no_comfyui_tree(tmp_path):
    result = run(["bash", "scripts/test.sh", "-q", ONE_COMFYUI_TEST], tmp_path)
    assert result.returncode != 0
    assert f"COMFYUI_PATH={tmp_path} is not a ComfyUI tree" in result.stderr


def test_pytest_itself_refuses_it_too(tmp_path):
    result = run([str(PYTEST), "-q", ONE_COMFYUI_TEST], tmp_path / "missing")
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error, not a pass or a skip
    assert "is not a ComfyUI tree (missing comfy, comfy_api" in result.stderr


def test_a_tree_that_does_not_import_fails_the_tier_instead_of_skipping(tmp_path):
    tree = fake_tree(tmp_path / "ComfyUI")
    result = run([str(PYTEST), "-q", "-p", "no:cacheprovider", ONE_COMFYUI_TEST], tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout and "skipped" not in result.stdout.split("\n")[-2]
    assert f"not the tree in COMFYUI_PATH ({tree})" in result.stdout
