"""The real ComfyUI frontend (comfyui-frontend-package) in headless Chromium, for the workflow checks and the gallery.

Which frontends: ``scripts/setup_comfyui.sh`` installs, outside site-packages, the frontend a ComfyUI tree pins (its
requirements.txt) into ``.venv/frontends/<version>`` and the newest release on the package registry into
``.venv/frontends/newest``; a server serves one of them with ``--front-end-root``.
``load_workflow`` loads a workflow the way a drag-and-drop does (``app.loadGraphData``, which runs the frontend's own
zod schema check) and reports what a user would see: toasts, dialogs, nodes the frontend does not know or marks red,
the widget values it shows, and console errors.
"""
import json
import re
import shutil
from pathlib import Path

import pytest

from comfyui_standin.devtools.workflow_graph import LOADER_FOLDERS

REPO = Path(__file__).resolve().parents[1]
FRONTENDS = REPO / ".venv" / "frontends"

# toasts: PrimeVue's (the frontends ComfyUI v0.3.64/v0.8.0 pin) and the newer reka-ui list (1.5x)
TOAST_SELECTOR = '.p-toast-message, [data-testid="toast"]'
LOAD = """async (workflow) => {
    const TOASTS = '%s';
    document.querySelectorAll(TOASTS).forEach(toast => toast.remove());
    const DIALOGS = '.p-dialog, [data-testid="error-overlay"]';  // 1.58 reports missing nodes in an overlay
    document.querySelectorAll('.p-dialog-mask, [data-testid="error-overlay"]').forEach(mask => mask.remove());
    window.__consoleErrors = [];
    await window.app.loadGraphData(workflow);
    await new Promise(resolve => setTimeout(resolve, 800));
    const registered = window.LiteGraph.registered_node_types;
    return {
        alerts: Array.from(document.querySelectorAll(TOASTS)).map(toast => toast.innerText).filter(text => text.trim()),
        dialogs: Array.from(document.querySelectorAll(DIALOGS)).map(dialog => dialog.innerText),
        nodes: window.app.graph._nodes.map(node => ({
            id: node.id, type: node.type, known: !!registered[node.type], errors: !!node.has_errors,
            widgets: (node.widgets || []).filter(w => w.serialize !== false).map(widget => widget.value)})),
    };
}""" % TOAST_SELECTOR

def pinned_version(comfyui_root: Path) -> str:
    """The comfyui-frontend-package version a ComfyUI tree's requirements.txt pins."""
    found = re.search(r"^comfyui-frontend-package==(\S+)", (comfyui_root / "requirements.txt").read_text(), re.M)
    assert found, f"{comfyui_root}/requirements.txt pins no comfyui-frontend-package"
    return found.group(1)


def installed_version(folder: Path) -> str:
    (info,) = folder.glob("comfyui_frontend_package-*.dist-info")
    return info.name[len("comfyui_frontend_package-"):-len(".dist-info")]


def frontend_folder(which: str, comfyui_root: Path) -> Path:
    """``.venv/frontends/<pinned version>`` or ``.venv/frontends/newest``; a missing one fails with the fix."""
    folder = FRONTENDS / (pinned_version(comfyui_root) if which == "pinned" else "newest")
    if not (folder / "comfyui_frontend_package" / "static" / "index.html").is_file():
        pytest.fail(f"no frontend in {folder}: run scripts/setup_comfyui.sh {comfyui_root}", pytrace=False)
    return folder


def static_root(folder: Path) -> Path:
    return folder / "comfyui_frontend_package" / "static"


def chromium_path() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the frontend checks need Chromium: apt-get install chromium (scripts/setup_comfyui.sh)",
                    pytrace=False)
    return chromium


QUIET_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Validation.Workflows": True,
                  "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.1, "LiteGraph.Canvas.MinFontSizeForLOD": 0}


def quiet_user_settings(base: Path) -> None:
    """A returning user's settings in a server's base directory: the frontend's zod check of every loaded workflow
    on (newer frontends default it off), no first-run template browser over the canvas (newer frontends open it for
    a new user), no minimap, and text drawn at any zoom in the pictures."""
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(QUIET_SETTINGS))


def open_page(browser, url: str, viewport=(1600, 1000)):
    """A page on the server's frontend, ready when our nodes are registered; console errors are kept in
    ``page.console_errors`` (a list that ``load_workflow`` empties first)."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    errors, offline = [], []

    def on_console(message):
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        if message.text.startswith("Failed to load resource: net::ERR_NAME_NOT_RESOLVED") and not url.startswith(
                url_base):
            offline.append(url)  # a download link the frontend looked up: this machine has no internet
        else:
            errors.append(message.text)

    url_base = url.rstrip("/")
    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.goto(url, wait_until="load", timeout=90_000)
    page.wait_for_function("() => !!(window.app && window.app.graph && window.LiteGraph && "
                           "window.LiteGraph.registered_node_types['ApplyStandInToWanModel'])", timeout=90_000)
    page.wait_for_timeout(1500)  # let the first (empty/default) graph settle before anything is measured
    page.console_errors, page.offline_lookups = errors, offline
    return page


def load_workflow(page, workflow: dict) -> dict:
    page.console_errors.clear()
    page.offline_lookups.clear()
    loaded = page.evaluate(LOAD, workflow)
    loaded["console_errors"] = list(page.console_errors)
    loaded["offline_lookups"] = list(page.offline_lookups)
    return loaded




def files_named_in(workflow: dict) -> dict:
    """Every file a workflow names: {path under the server's base directory: kind}, from the loaders' widgets (the
    model files the README lists), their ``properties.models``, and the widgets that pick an input file."""
    files = {}
    for node in workflow["nodes"]:
        for item in node.get("properties", {}).get("models", []):
            files[f"models/{item['directory']}/{item['name']}"] = "model"
        if node["type"] in LOADER_FOLDERS:
            files[f"models/{LOADER_FOLDERS[node['type']]}/{node['widgets_values'][0]}"] = "model"
        kind = {"LoadImage": "image", "LoadVideo": "video"}.get(node["type"])
        if kind:
            files[f"input/{node['widgets_values'][0]}"] = kind
    return files


def provide_model_files(base: Path, workflows: list) -> list:
    """Puts an empty file under every model name the workflows' loaders carry (the README's model files; the
    frontend only sees names) into a server's base directory, as a user who followed the README has them. The
    inputs are NOT provided: the pack copies its example inputs into the input folder when it loads
    (nodes/examples.py), which is what a fresh ComfyUI gets. A file already there stays as it is (the model files
    are hard links shared by every server). Returns the input files the workflows load, for the caller to check."""
    inputs = []
    for workflow in workflows:
        for name, kind in files_named_in(workflow).items():
            path = base / name
            if kind != "model":
                inputs.append(path)
            elif not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"")
    return inputs


def missing_node_dialogs(loaded: dict) -> list:
    return [text for text in loaded["dialogs"] if re.search(r"missing.{0,40}node|node.{0,40}(missing|not found)",
                                                             text, re.I | re.S)]


def screenshot(page, path: Path) -> None:
    """The whole graph fitted into the canvas, written as a PNG."""
    page.keyboard.press("Escape")
    page.evaluate("() => document.querySelectorAll('.p-dialog-mask, %s').forEach(e => e.remove())" % TOAST_SELECTOR)
    page.wait_for_timeout(400)  # (the view is the workflow's own: extra.ds, set by scripts/build_workflows.py)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#graph-canvas").screenshot(path=str(path))
