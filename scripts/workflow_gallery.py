"""Screenshots of every workflow in workflows/ as the real frontend draws it: the README gallery and the thumbnails.

    PYTHONPATH=/path/to/ComfyUI COMFYUI_PATH=/path/to/ComfyUI .venv/bin/python scripts/workflow_gallery.py [--data DIR]

Starts that ComfyUI (the harness's server, devtools/comfyui_server.py, this pack linked in; the real files it needs
and the clip the video loaders show come from --data, by default the tests' tests/data) with the newest frontend that
scripts/setup_comfyui.sh installed (``.venv/frontends/newest``), loads each workflow in headless Chromium and writes
``docs/workflows/<name>.png`` (the whole graph) and ``workflows/<name>.jpg`` (the thumbnail ComfyUI's template browser
shows for a custom pack's workflow: ``/api/workflow_templates/<pack>/<name>.jpg``). ``docs/workflows/manifest.json``
records the SHA-256 of each JSON the pictures show; a CI test fails when a workflow changed after its picture.
"""
import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "workflows"
THUMBNAIL = (480, 300)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--data", type=Path, default=REPO / "tests" / "data",
                     help="folder with the real files the server harness needs and short_hamilton_clip.mp4 "
                          "(default: the tests' tests/data)")
    args = cli.parse_args(argv)
    from comfyui_standin.devtools.comfy_boot import import_comfyui
    root = import_comfyui(os.environ["COMFYUI_PATH"])
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from comfyui_standin.devtools import comfyui_server, frontend

    folder = frontend.frontend_folder("newest", root)
    version = frontend.installed_version(folder)
    manifest = {"frontend": version, "workflows": {}}
    front_end = str(frontend.static_root(folder))
    with comfyui_server.serving(comfyui_server.TempDirs(), args.data, "--front-end-root", front_end) as server, \
            sync_playwright() as playwright:
        paths = sorted((REPO / "workflows").glob("*.json"))
        workflows = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
        # the README's model files (empty: the frontend sees names); the inputs are the pack's example inputs
        missing = [path.name for path in frontend.provide_model_files(server.base, workflows) if not path.exists()]
        if missing:
            sys.exit(f"the pack did not put these example inputs into the input folder: {missing}")
        frontend.quiet_user_settings(server.base)
        browser = playwright.chromium.launch(executable_path=frontend.chromium_path(), args=["--no-sandbox"])
        page = frontend.open_page(browser, server.url, viewport=(1920, 1080))
        for path in sorted((REPO / "workflows").glob("*.json")):
            loaded = frontend.load_workflow(page, json.loads(path.read_text(encoding="utf-8")))
            bad = [node for node in loaded["nodes"] if not node["known"] or node["errors"]]
            if loaded["alerts"] or bad or frontend.missing_node_dialogs(loaded):
                sys.exit(f"{path.name}: the frontend complains: {loaded['alerts']} {bad} {loaded['dialogs']}")
            picture = DOCS / f"{path.stem}.png"
            frontend.screenshot(page, picture)
            with Image.open(picture) as image:
                image.convert("RGB").resize(THUMBNAIL, Image.LANCZOS).save(path.with_suffix(".jpg"), quality=88)
            manifest["workflows"][path.name] = sha256(path)
            print(f"{path.name}: {picture.relative_to(REPO)}, {path.with_suffix('.jpg').relative_to(REPO)}")
        browser.close()
    (DOCS / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
