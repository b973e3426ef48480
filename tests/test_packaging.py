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
