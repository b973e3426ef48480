"""A real ComfyUI server for the ``comfyui`` test tier (shared by every test module that needs one) and the scripts.

``serving()`` starts ``main.py --cpu`` from COMFYUI_PATH as a subprocess with a throwaway base directory: the
repository is linked in as ``custom_nodes/ComfyUI-StandIn``, and test-made weights go into its model folders (a
tiny real Wan T2V model, Stand-In files in the official .ckpt layout and as .safetensors, and a Stand-In file of the
wrong width in models/loras). Text encoders are too big for a test, so a TEST-ONLY custom node file copied next to
the pack (server_test_nodes.py, installed as ``standin_test_helpers.py``; scaffolding, not part of the pack) makes
seeded CONDITIONING and latents. The real files the server gets (the RetinaFace mobile0.25 weights, three photos and
a clip: ``DATA_FILES``) come from a folder the caller names (the tests and scripts pass tests/data).
The tests share one server for the session (tests/conftest.py).
"""
import atexit
import contextlib
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch

from comfyui_standin.devtools.tiny_models import (standin_state_dict_for, style_lora, tiny_wan_state_dict,
                                                  tiny_wan_vae_state_dict)
from comfyui_standin.standin_core.faces.video import read_video

REPO = Path(__file__).resolve().parents[1]
TEST_NODES = Path(__file__).with_name("server_test_nodes.py")
TEST_NODES_FILE = "standin_test_helpers.py"  # its name in the server's custom_nodes folder
PACK_FOLDER = "ComfyUI-StandIn"
OUR_NODES = ("LoadStandInLoRA", "EncodeReferenceFace", "ApplyStandInToWanModel", "StandInKVCache", "StandInFaceMask",
             "StandInFaceSwapPaste", "StandInFaceSwapComposite", "StandInIdentityScore", "StandInPickReference",
             "StandInReferences", "StandInRegion", "StandInRegionsFromPose", "StandInForRaylight")
VAE_FILE = "tiny_wan_vae.safetensors"
SWAP_VIDEO = "standin_swap_input.mp4"  # 5 real frames (4n+1), 256x160, cut from <data>/short_hamilton_clip.mp4
SWAP_PHOTO = "standin_swap_reference.jpg"  # <data>/obama.jpg
PERFORMER_PHOTO = "standin_performer.png"  # the face of the man in SWAP_VIDEO, cut from another frame of the clip
PHOTOS = (SWAP_PHOTO, "standin_kit_harington.jpg", "standin_rose_leslie.jpg")  # three people
# what the harness reads from the caller's data folder: the REAL detector weights, three photos, a real clip
DATA_FILES = ("detection_mobilenet0.25_Final.pth", "obama.jpg", "kit_harington1.jpg", "rose_leslie1.jpg",
              "short_hamilton_clip.mp4")
WAN_FILE = "tiny_wan_t2v.safetensors"
STANDIN_SAFETENSORS = "tiny_standin.safetensors"
STANDIN_CKPT = "tiny_standin.ckpt"
WRONG_WIDTH_LORA = "loras/tiny_standin_dim128.safetensors"
STANDIN_OTHER = "tiny_standin_seed7.safetensors"  # another Stand-In file of the right shape (other values)
STYLE_LORA = "tiny_style_lora.safetensors"  # a style LoRA for LoraLoaderModelOnly (tiny_models.style_lora)
START_TIMEOUT_S = 120
PROMPT_TIMEOUT_S = 360  # the face-swap graph (real detector, tiny real VAE) takes ~110 s on 2 busy cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running ComfyUI: its URL, base directory and log, with small helpers over its HTTP API."""

    def __init__(self, url: str, base: Path, log_path: Path):
        self.url, self.base, self.log_path = url, base, log_path

    def get(self, route: str, timeout: float = 30):
        import requests
        response = requests.get(self.url + route, timeout=timeout)
        response.raise_for_status()
        return response.json()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def submit(self, graph: dict, client_id: str = None) -> str:
        import requests
        body = {"prompt": graph, "client_id": client_id or uuid.uuid4().hex}
        response = requests.post(self.url + "/prompt", json=body, timeout=30)
        assert response.status_code == 200, f"/prompt refused the graph: {response.text}\n{self.log_tail()}"
        return response.json()["prompt_id"]

    def run(self, graph: dict) -> dict:
        """Submit ``graph`` and wait until the executor is done with it; returns its /history entry."""
        return self.wait(self.submit(graph))

    def interrupt_during(self, graph: dict, node: str, after_steps: int, timeout: float = PROMPT_TIMEOUT_S) -> str:
        """Submit ``graph``, follow its progress on the websocket, and POST /interrupt (the frontend's Cancel) once
        ``node`` has reported ``after_steps`` steps. Returns the prompt id (``wait`` for its history entry)."""
        import asyncio
        import json
        import aiohttp  # a ComfyUI requirement
        client_id = uuid.uuid4().hex

        async def follow():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{self.url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws:
                    prompt_id = self.submit(graph, client_id)
                    async for message in ws:
                        if message.type != aiohttp.WSMsgType.TEXT:
                            continue  # binary previews
                        event = json.loads(message.data)
                        data = event.get("data", {})
                        if event["type"] == "progress" and data.get("node") == node and data["value"] >= after_steps:
                            async with session.post(self.url + "/interrupt") as response:
                                assert response.status == 200, await response.text()
                            return prompt_id
                        if event["type"] in ("execution_error", "execution_success"):
                            pytest.fail(f"the prompt ended before {node} reached step {after_steps}: {event}")
            pytest.fail("the websocket closed before the interrupt")

        return asyncio.run(asyncio.wait_for(follow(), timeout))

    def wait(self, prompt_id: str) -> dict:
        """Wait until the executor is done with ``prompt_id`` (success, error or interrupt); its /history entry."""
        deadline = time.monotonic() + PROMPT_TIMEOUT_S
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"]["completed"] or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.25)
        pytest.fail(f"prompt {prompt_id} did not finish in {PROMPT_TIMEOUT_S} s\n{self.log_tail()}")


def write_weights(models: Path, data: Path) -> None:
    from facexlib.parsing.bisenet import BiSeNet
    from safetensors.torch import save_file
    for folder in ("diffusion_models", "standin", "loras", "vae", "facexlib"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    save_file(tiny_wan_state_dict(), str(models / "diffusion_models" / WAN_FILE))
    save_file(tiny_wan_vae_state_dict(), str(models / "vae" / VAE_FILE))
    shutil.copy(data / "detection_mobilenet0.25_Final.pth", models / "facexlib")  # the REAL detector
    torch.manual_seed(0)
    torch.save(BiSeNet(num_class=19).state_dict(), str(models / "facexlib" / "parsing_bisenet.pth"))  # generated
    standin = standin_state_dict_for(256, 3)
    save_file(standin, str(models / "standin" / STANDIN_SAFETENSORS))
    torch.save({"state_dict": standin}, str(models / "standin" / STANDIN_CKPT))  # the official checkpoint layout
    save_file(standin_state_dict_for(128, 3), str(models / WRONG_WIDTH_LORA))
    save_file(standin_state_dict_for(256, 3, seed=7), str(models / "standin" / STANDIN_OTHER))
    save_file(style_lora(tiny_wan_state_dict()), str(models / "loras" / STYLE_LORA))


def write_inputs(folder: Path, data: Path) -> None:
    """The face-swap inputs (a reference photo and 5 real frames around a face, as an H.264 video) and two more
    reference photos of other people, from the files in ``data``."""
    import av
    import cv2
    import numpy as np
    shutil.copy(data / "obama.jpg", folder / SWAP_PHOTO)
    shutil.copy(data / "kit_harington1.jpg", folder / PHOTOS[1])
    shutil.copy(data / "rose_leslie1.jpg", folder / PHOTOS[2])
    frames = read_video(data / "short_hamilton_clip.mp4", limit=151)
    assert len(frames) == 151, "short_hamilton_clip.mp4 has fewer frames than expected"
    cv2.imwrite(str(folder / PERFORMER_PHOTO), cv2.cvtColor(frames[150][0:200, 150:350], cv2.COLOR_RGB2BGR))
    with av.open(str(folder / SWAP_VIDEO), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 160, "yuv420p"
        for frame in frames[100:105]:
            rgb = np.ascontiguousarray(frame[60:220, 116:372])
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def templates_shim(comfy_root: Path, base: Path) -> dict:
    """Environment for the server process. ComfyUI before the multi-package templates (v0.3.64) serves
    ``comfyui_workflow_templates/templates`` unconditionally and refuses to start when the installed templates package
    is a newer one without that folder. Only then, an empty stand-in package on PYTHONPATH lets it start; it
    touches nothing but the core's own template route."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    spec = importlib.util.find_spec("comfyui_workflow_templates")
    legacy_server = "template_asset_handler" not in (comfy_root / "server.py").read_text()
    if not legacy_server or spec is None or (Path(spec.origin).parent / "templates").is_dir():
        return env
    shim = base / "shim" / "comfyui_workflow_templates"
    (shim / "templates").mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim.parent), env.get("PYTHONPATH")]))
    return env


class TempDirs:
    """What the harness needs of pytest's ``tmp_path_factory`` (``mktemp``, ``getbasetemp``), for the scripts that
    start a server outside pytest: one temporary folder per instance, removed when the process exits."""

    def __init__(self):
        self.counter = itertools.count()
        self.root = Path(tempfile.mkdtemp(prefix="standin_server_"))
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)  # after _stop: atexit runs last-in first-out

    def getbasetemp(self) -> Path:
        return self.root

    def mktemp(self, name: str) -> Path:
        path = self.root / f"{name}{next(self.counter)}"
        path.mkdir()
        return path


def shared_weights(tmp_path_factory, data: Path) -> Path:
    """The model folders of every server started from ``tmp_path_factory``, written once (the tiny Wan VAE alone is
    485 MB at the width ComfyUI v0.3.64 builds). A crashed writer leaves no marker, so the next start writes again."""
    folder = tmp_path_factory.getbasetemp() / "comfyui_models"
    marker = folder / ".complete"
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        write_weights(folder, data)
        marker.write_text("")
    return folder


def link_tree(source: Path, target: Path) -> None:
    """``target`` as a copy of the folder ``source`` whose files are hard links (no disk space; a file a test adds to
    one server's folders stays in that server's), or plain copies where the file system has no links."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(source, target, copy_function=link, ignore=shutil.ignore_patterns(".complete"))


def _start(tmp_path_factory, data: Path, extra_args=()) -> tuple:
    """Start a server whose real files come from the folder ``data`` (see DATA_FILES); (Server, process)."""
    import requests
    data = Path(data)
    missing = [name for name in DATA_FILES if not (data / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the server harness needs {', '.join(missing)} in {data}")
    comfy_root = Path(os.environ["COMFYUI_PATH"]).resolve()
    base = tmp_path_factory.mktemp("comfyui_base")
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    shutil.copy(TEST_NODES, custom_nodes / TEST_NODES_FILE)
    for folder in ("input", "output", "temp", "user"):
        (base / folder).mkdir()
    link_tree(shared_weights(tmp_path_factory, data), base / "models")
    write_inputs(base / "input", data)

    port = free_port()
    log_path = base / "server.log"
    command = [sys.executable, str(comfy_root / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--use-pytorch-cross-attention", "--disable-auto-launch", *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=str(comfy_root), stdout=log, stderr=subprocess.STDOUT,
                                   env=templates_shim(comfy_root, base))
    atexit.register(_stop, process)
    server = Server(f"http://127.0.0.1:{port}", base, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"ComfyUI exited with code {process.returncode} while starting\n{server.log_tail()}")
        try:
            if requests.get(server.url + "/system_stats", timeout=2).status_code == 200:
                return server, process
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            _stop(process)
            pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S} s\n{server.log_tail()}")
        time.sleep(0.5)


def _stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def serving(tmp_path_factory, data: Path, *extra_args):
    """A ComfyUI server with the real files in ``data``, started with any more command-line arguments (e.g.
    ``--front-end-root`` for another frontend); stopped on exit. The tests share one (conftest's ``server``)."""
    server, process = _start(tmp_path_factory, data, extra_args)
    try:
        yield server
    finally:
        _stop(process)


def combo_options(spec) -> list:
    """The choices of a COMBO input, in either form ComfyUI uses ([choices, opts] or ["COMBO", {"options": ..}])."""
    if isinstance(spec[0], list):
        return spec[0]
    assert spec[0] == "COMBO", spec
    return spec[1]["options"]
