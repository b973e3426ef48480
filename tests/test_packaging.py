"""Registry readiness (CI tier): the LICENSE is the Apache-2.0 text pyproject.toml declares, and the icon it names
is a square image of at most 400 x 400 pixels (the registry's limit)."""
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10, which pyproject.toml supports, has no tomllib: its forerunner tomli (requirements-test.txt)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def test_license_file_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
            and "END OF TERMS AND CONDITIONS" in text)
    assert len(text.splitlines()) == 202  # the whole licence (apache.org's LICENSE-2.0.txt), not an excerpt


def test_registry_icon_is_a_small_square_image():
    from PIL import Image
    icon = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["Icon"]
    assert icon, "[tool.comfy] Icon is empty"
    with Image.open(REPO / icon) as image:
        assert image.width == image.height <= 400, image.size


def test_the_registry_archive_holds_the_pack_and_not_the_tests(tmp_path, monkeypatch):
    """The archive `comfy node publish` uploads, built by comfy-cli's own zip_files (requirements-test-nodeps.txt):
    the git-tracked files minus .comfyignore. It carries the pack (code, workflows, example inputs, licence) and
    none of the tests, their photos and video, the developer tools or the gallery screenshots."""
    import shutil
    import subprocess
    import zipfile
    from comfy_cli.file_utils import zip_files
    assert shutil.which("git") and (REPO / ".git").exists(), "zip_files lists the files through git"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True,
                             check=True).stdout.split()
    monkeypatch.chdir(REPO)  # zip_files reads .comfyignore and git from the working directory
    zip_files(str(tmp_path / "node.zip"), tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]
              .get("includes", []))
    with zipfile.ZipFile(tmp_path / "node.zip") as archive:
        names = set(archive.namelist())
        size = sum(info.file_size for info in archive.infolist())
    left_out = ("tests/", "devtools/", "benchmarks/", "scripts/", ".ci/", "docs/workflows/")
    assert not [name for name in names if name.startswith(left_out)], sorted(names)
    assert not [name for name in names if name.startswith("requirements-test")]
    expected = {name for name in tracked if not name.startswith(left_out) and not name.startswith(
        "requirements-test") and (REPO / name).exists()}
    assert names == expected  # everything else that git tracks, nothing that it does not
    for needed in ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md",
                   "nodes/__init__.py", "standin_core/attention.py", "workflows/standin_wan21_t2v.json",
                   "example_inputs/standin_example_face.jpg", "example_inputs/LICENSE.face_recognition"):
        assert needed in names, needed
    assert tracked and sum((REPO / name).stat().st_size for name in tracked if name.startswith("tests/")) > 5e6
    assert size < 3e6, f"the package holds {size / 1e6:.1f} MB"
