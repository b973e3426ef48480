"""Shared test setup.

Two tiers. The core tier runs everywhere. The ``comfyui`` tier (tests marked ``comfyui``) runs when COMFYUI_PATH
points at a ComfyUI tree; then nothing in it may skip: a COMFYUI_PATH that is set but wrong, a tree that is not on
PYTHONPATH, or a missing requirement of the tier (ComfyUI's Python requirements, requests, playwright, Chromium)
is an error, never a quiet skip. Without COMFYUI_PATH the tier is skipped and the summary says so.

Fixtures shared by the test modules:
  * ``comfy``: that ComfyUI imported in this process (CPU, PyTorch attention); returns this pack, ``comfyui_standin``
    (the editable install), whose ``nodes`` package then imports ComfyUI's modules;
  * ``server``: the session's ComfyUI server (a subprocess with tiny real weights);
  * tiny Wan and weights: ``tiny_wan`` and ``standin_state`` (state dicts), ``wan_base`` (the loaded MODEL) and
    ``standin_weights``;
  * sampling and the joint oracle: ``env``, the node tests' Scene (tests/support/sampling.py);
  * faces: ``nodes_faces``, ``weights_dir``, ``real_detector_folder``, ``facexlib_folder``;
  * files: ``file_server``, a local HTTP server for the download tests.
Helpers that are not fixtures are in tests/support/.
"""
import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from comfyui_standin.devtools.comfy_boot import ComfyUIPathError, check_comfyui_tree, comfyui_version, import_comfyui
from comfyui_standin.devtools.comfyui_server import serving
from comfyui_standin.devtools.tiny_models import standin_state_dict_for, tiny_wan_state_dict
from comfyui_standin.tests.support.downloads import serving_files
from comfyui_standin.tests.support.sampling import Scene, load_model

DATA = Path(__file__).resolve().parent / "data"  # real photos, a clip and detector weights, with their licences
# Tests that start or use a ComfyUI server (the executor, the browser, the load test) or compile are marked slow:
# `scripts/test.sh -m "not slow"` is the fast loop.
SLOW_FIXTURES = {"server", "frontend_page", "live_object_info"}

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
GGUF_PATH = os.environ.get("COMFYUI_GGUF_PATH")  # an unpacked city96/ComfyUI-GGUF tree: the gguf checks
RAYLIGHT_PATH = os.environ.get("RAYLIGHT_PATH")  # an unpacked komikndr/raylight tree: the raylight checks
# checks that need a third-party pack beside the run: deselected (not part of the comfyui tier's count) without it
THIRD_PARTY = {"gguf": (GGUF_PATH, "COMFYUI_GGUF_PATH to an unpacked city96/ComfyUI-GGUF tree"),
               "raylight": (RAYLIGHT_PATH, "RAYLIGHT_PATH to an unpacked komikndr/raylight tree")}


@pytest.fixture(autouse=True)
def fresh_file_lists(monkeypatch):
    """Each test gets its own copy of ComfyUI's file-list cache (folder_paths.filename_list_cache, once ComfyUI is
    loaded). The cache keeps every folder it listed and stats it again at the next lookup, so a test that points a
    model folder at its own temporary directory, which pytest deletes when the test passes, would leave a dead entry
    that breaks the next test listing that folder (FileNotFoundError)."""
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is not None:
        monkeypatch.setattr(folder_paths, "filename_list_cache", {})


def pytest_configure(config):
    if COMFYUI_PATH:
        try:
            config._standin_comfyui = check_comfyui_tree(COMFYUI_PATH)
        except ComfyUIPathError as error:
            raise pytest.UsageError(str(error)) from None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    config._standin_deselected = {}
    for marker, (path, _) in THIRD_PARTY.items():
        chosen = [item for item in items if marker in item.keywords]
        if not path and chosen:
            config.hook.pytest_deselected(items=chosen)
            items[:] = [item for item in items if marker not in item.keywords]
            config._standin_deselected[marker] = len(chosen)
    if COMFYUI_PATH:
        return
    skip = pytest.mark.skip(reason="comfyui tier: COMFYUI_PATH is not set")
    for item in items:
        if "comfyui" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line with the comfyui tier's own counts (CI prints it for each ComfyUI version)."""
    counts = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if "comfyui" in getattr(report, "keywords", {}) and (report.when == "call" or outcome != "passed"):
                counts[outcome] = counts.get(outcome, 0) + 1
    from comfyui_standin.tests.support.tolerance import MEASURED, ULPS
    if MEASURED:
        worst, what = max(MEASURED, key=lambda item: item[0])
        terminalreporter.write_line(f"oracle comparisons: {len(MEASURED)}, the largest difference {worst:.1f} ulps of "
                                    f"its output's scale (bound {ULPS} per short run): {what}")
    if not COMFYUI_PATH:
        terminalreporter.write_line(f"comfyui tier: NOT RUN (COMFYUI_PATH is not set; {counts.get('skipped', 0)} "
                                    "tests skipped); only the core tier ran")
        return
    root = config._standin_comfyui
    for marker, count in getattr(config, "_standin_deselected", {}).items():
        terminalreporter.write_line(f"{marker} checks: NOT RUN ({count} deselected; set {THIRD_PARTY[marker][1]})")
    terminalreporter.write_line(
        f"comfyui tier on ComfyUI {comfyui_version(root)} ({root}): {counts.get('passed', 0)} passed, "
        f"{counts.get('failed', 0) + counts.get('error', 0)} failed, {counts.get('skipped', 0)} skipped")


@pytest.fixture(scope="session")
def comfy():
    """This pack loaded inside a real ComfyUI (tests marked ``comfyui`` only)."""
    try:
        import_comfyui(COMFYUI_PATH)
    except ComfyUIPathError as error:
        pytest.fail(str(error), pytrace=False)
    return importlib.import_module("comfyui_standin")


@pytest.fixture(scope="session")
def server(comfy, tmp_path_factory):
    """The session's ComfyUI server: ``main.py --cpu`` of COMFYUI_PATH as a subprocess with this pack linked in and
    tiny real weights in its model folders (devtools/comfyui_server.py); stopped when the session ends."""
    with serving(tmp_path_factory, DATA) as running:
        yield running


# ---------------------------------------------------------------------------------------------------------------------
# tiny Wan and weights (devtools/tiny_models.py): the state dicts once per session, the loaded objects once per module

@pytest.fixture(scope="session")
def tiny_wan():
    """The tiny real Wan2.1 T2V model's state dict (width 256, 3 blocks, seed 0). Load it with
    ``support.sampling.load_model``, which copies it."""
    return tiny_wan_state_dict()


@pytest.fixture(scope="session")
def standin_state():
    """Stand-In weights for the tiny Wan as a state dict (width 256, 3 blocks, rank 16, seed 1)."""
    return standin_state_dict_for(256, 3)


@pytest.fixture(scope="module")
def wan_base(comfy, tiny_wan):
    """The tiny Wan loaded as a ComfyUI MODEL, one per test module."""
    return load_model(tiny_wan)


@pytest.fixture(scope="module")
def standin_weights(standin_state):
    """``standin_state`` as the pack's StandInWeights, one per test module."""
    from comfyui_standin.standin_core import standin_weights_from_state_dict
    return standin_weights_from_state_dict(standin_state, source="tiny-standin")


# ---------------------------------------------------------------------------------------------------------------------
# sampling and the joint oracle (support/sampling.py)

@pytest.fixture(scope="module")
def env(comfy, wan_base, standin_state, standin_weights):
    """The node tests' Scene: the tiny Wan (``base``) and a VACE one (``vace``), Stand-In weights, a non-square
    reference latent [1, 16, 1, 6, 10], noise [1, 16, 3, 8, 12] and a prompt (all seed 42), 3 steps at cfg 3; with
    the pack's node modules as attributes (``apply``, ``cache``, ``model_call`` ...)."""
    from comfyui_standin.nodes import apply, cache, loaders, memory, model_call, run_state, wan_models
    gen = torch.Generator().manual_seed(42)
    reference = torch.randn(1, 16, 1, 6, 10, generator=gen)
    noise = torch.randn(1, 16, 3, 8, 12, generator=gen)
    cond, uncond = torch.randn(1, 7, 4096, generator=gen), torch.randn(1, 7, 4096, generator=gen)
    scene = Scene(wan_base, standin_weights, standin_state, reference, noise, cond, uncond)
    scene.vace = load_model(tiny_wan_state_dict(vace=True, seed=3))
    scene.comfy, scene.apply, scene.cache, scene.loaders = comfy, apply, cache, loaders
    scene.memory, scene.model_call, scene.run_state, scene.wan_models = memory, model_call, run_state, wan_models
    return scene


# ---------------------------------------------------------------------------------------------------------------------
# faces: the pack's face nodes and facexlib weight folders

@pytest.fixture(scope="module")
def nodes_faces(comfy):
    """The pack's face nodes (comfyui_standin.nodes.faces), imported inside ComfyUI."""
    return importlib.import_module("comfyui_standin.nodes.faces")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """mobile0.25 RetinaFace and BiSeNet with random weights (seed 0), under facexlib's file names."""
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.parsing.bisenet import BiSeNet
    folder = tmp_path_factory.mktemp("facexlib_weights")
    torch.manual_seed(0)
    torch.save(RetinaFace(network_name="mobile0.25", half=False, device="cpu").state_dict(),
               folder / "detection_mobilenet0.25_Final.pth")
    torch.save(BiSeNet(num_class=19).state_dict(), folder / "parsing_bisenet.pth")
    return folder


@pytest.fixture(scope="module")
def real_detector_folder(tmp_path_factory, weights_dir):
    """models/facexlib with the REAL RetinaFace mobile0.25 weights (tests/data) and a generated BiSeNet."""
    folder = tmp_path_factory.mktemp("facexlib_real")
    shutil.copy(DATA / "detection_mobilenet0.25_Final.pth", folder)
    shutil.copy(weights_dir / "parsing_bisenet.pth", folder)
    return folder


@pytest.fixture
def facexlib_folder(comfy, monkeypatch, nodes_faces):
    """Point ComfyUI's registered 'facexlib' folder at a folder of the test's choice: ``facexlib_folder(path)``."""
    import folder_paths

    def use(folder):
        monkeypatch.setitem(folder_paths.folder_names_and_paths, "facexlib", ([str(folder)], {".pth"}))
        return folder
    monkeypatch.setattr(nodes_faces, "_PATCHERS", {})
    return use


# ---------------------------------------------------------------------------------------------------------------------
# files: a local HTTP server for the download tests (support/downloads.py)

@pytest.fixture
def file_server():
    """A local HTTP server that serves ``server.files`` (see ``support.downloads.serve``); stopped after the test."""
    with serving_files() as server:
        yield server
