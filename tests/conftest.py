"""Shared test setup.

Two tiers. The core tier runs everywhere. The ``comfyui`` tier (tests marked ``comfyui``) runs when COMFYUI_PATH
points at a ComfyUI tree; then nothing in it may skip: a COMFYUI_PATH that is set but wrong, a tree that is not on
PYTHONPATH, or a missing requirement of the tier (ComfyUI's Python requirements, requests, playwright, Chromium)
is an error, never a quiet skip. Without COMFYUI_PATH the tier is skipped and the summary says so.

The ``comfy`` fixture imports that ComfyUI in this process (CPU, PyTorch attention) and returns this pack,
``comfyui_standin`` (the editable install), whose ``nodes`` package then imports ComfyUI's modules.
"""
import importlib
import os

import pytest

from comfyui_standin.devtools.comfy_boot import ComfyUIPathError, check_comfyui_tree, comfyui_version, import_comfyui

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
GGUF_PATH = os.environ.get("COMFYUI_GGUF_PATH")  # an unpacked city96/ComfyUI-GGUF tree: the gguf checks


def pytest_configure(config):
    if COMFYUI_PATH:
        try:
            config._standin_comfyui = check_comfyui_tree(COMFYUI_PATH)
        except ComfyUIPathError as error:
            raise pytest.UsageError(str(error)) from None


def pytest_collection_modifyitems(config, items):
    if not GGUF_PATH:  # the gguf checks need a third-party pack beside the run: not part of the comfyui tier's count
        gguf = [item for item in items if "gguf" in item.keywords]
        if gguf:
            config.hook.pytest_deselected(items=gguf)
            items[:] = [item for item in items if "gguf" not in item.keywords]
            config._standin_gguf_deselected = len(gguf)
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
    if getattr(config, "_standin_gguf_deselected", 0):
        terminalreporter.write_line(f"gguf checks: NOT RUN ({config._standin_gguf_deselected} deselected; set "
                                    "COMFYUI_GGUF_PATH to an unpacked city96/ComfyUI-GGUF tree)")
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
