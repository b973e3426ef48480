"""A real ComfyUI server for the ``comfyui`` test tier, shared by every test module that needs one.

``serving()`` starts ``main.py --cpu`` from COMFYUI_PATH as a subprocess with a throwaway base directory: the
repository is linked in as ``custom_nodes/ComfyUI-StandIn``, and test-made weights go into its model folders (a
tiny real Wan T2V model, Stand-In files in the official .ckpt layout and as .safetensors, and a Stand-In file of the
wrong width in models/loras). Text encoders are too big for a test, so a TEST-ONLY custom node file written next to
the pack (``standin_test_helpers.py``, scaffolding, not part of the pack) makes seeded CONDITIONING and latents.
One server serves the whole pytest session; it is stopped when the last user releases it.
"""
import atexit
import contextlib
import importlib.util
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch

from comfyui_standin.standin_core.faces.video import read_video
from comfyui_standin.tests.support.joint_sequence import standin_state_dict_for, tiny_wan_state_dict
from comfyui_standin.tests.support.tiny_models import style_lora, tiny_wan_vae_state_dict

REPO = Path(__file__).resolve().parents[2]
PACK_FOLDER = "ComfyUI-StandIn"
OUR_NODES = ("LoadStandInLoRA", "EncodeReferenceFace", "ApplyStandInToWanModel", "StandInKVCache", "StandInFaceMask",
             "StandInFaceSwapPaste", "StandInIdentityScore", "StandInPickReference")
VAE_FILE = "tiny_wan_vae.safetensors"
SWAP_VIDEO = "standin_swap_input.mp4"  # 5 real frames (4n+1), 256x160, cut from tests/data/short_hamilton_clip.mp4
SWAP_PHOTO = "standin_swap_reference.jpg"  # tests/data/obama.jpg
PERFORMER_PHOTO = "standin_performer.png"  # the face of the man in SWAP_VIDEO, cut from another frame of the clip
PHOTOS = (SWAP_PHOTO, "standin_kit_harington.jpg", "standin_rose_leslie.jpg")  # three people (tests/data)
DATA = Path(__file__).resolve().parents[1] / "data"
WAN_FILE = "tiny_wan_t2v.safetensors"
STANDIN_SAFETENSORS = "tiny_standin.safetensors"
STANDIN_CKPT = "tiny_standin.ckpt"
WRONG_WIDTH_LORA = "loras/tiny_standin_dim128.safetensors"
STANDIN_OTHER = "tiny_standin_seed7.safetensors"  # another Stand-In file of the right shape (other values)
STYLE_LORA = "tiny_style_lora.safetensors"  # a style LoRA for LoraLoaderModelOnly (tiny_models.style_lora)
START_TIMEOUT_S = 120
PROMPT_TIMEOUT_S = 360  # the face-swap graph (real detector, tiny real VAE) takes ~110 s on 2 busy cores

# TEST-ONLY nodes written into the server's custom_nodes folder (scaffolding, not part of the pack).
TEST_HELPERS = '''
import torch


class StandInTestConditioning:
    """Seeded random text-encoder output (umt5 width 4096) so a graph needs no text encoder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31}),
                             "tokens": ("INT", {"default": 7, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        generator = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 4096, generator=generator), {}]],)


class StandInTestLatent:
    """A seeded non-zero Wan latent [1, 16, frames, height, width] (a stand-in for an encoded reference face)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31}),
                             "frames": ("INT", {"default": 1, "min": 1, "max": 64}),
                             "height": ("INT", {"default": 6, "min": 1, "max": 256}),
                             "width": ("INT", {"default": 6, "min": 1, "max": 256})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, frames, height, width):
        generator = torch.Generator().manual_seed(seed)
        return ({"samples": torch.randn(1, 16, frames, height, width, generator=generator)},)


class StandInTestSaveMask:
    """Saves a MASK to output/masks/<prefix>.safetensors (so a test can read what a graph computed)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",), "prefix": ("STRING", {"default": "mask"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def save(self, mask, prefix):
        import os
        import folder_paths
        from safetensors.torch import save_file
        folder = os.path.join(folder_paths.get_output_directory(), "masks")
        os.makedirs(folder, exist_ok=True)
        save_file({"mask": mask.contiguous()}, os.path.join(folder, prefix + ".safetensors"))
        return {"ui": {"masks": [{"filename": prefix + ".safetensors", "subfolder": "masks"}]}}


class StandInTestMemory:
    """After a run (its input is the sampled LATENT): the server process's RSS, the bytes of the distinct storages of
    every tensor the garbage collector tracks, and the Stand-In run objects still alive (the pack's RunState,
    JointKVBuffers holding tensors, ReferenceKVCache holding an entry)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "label": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "measure"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def measure(self, samples, label):
        import gc
        import psutil
        gc.collect()
        storages, alive = {}, {"RunState": 0, "JointKVBuffers": 0, "ReferenceKVCache": 0}
        for obj in gc.get_objects():
            kind = type(obj)
            if issubclass(kind, torch.Tensor):
                if obj.device.type != "meta":
                    storage = obj.untyped_storage()
                    storages[(obj.device.type, storage.data_ptr())] = storage.nbytes()
            elif kind.__name__ in alive and kind.__module__.rsplit(".", 1)[-1] in ("patching", "attention", "cache"):
                holds = {"RunState": True, "JointKVBuffers": getattr(obj, "keys", None) is not None,
                         "ReferenceKVCache": getattr(obj, "_entry", None) is not None}[kind.__name__]
                alive[kind.__name__] += int(holds)
        report = {"label": label, "rss": psutil.Process().memory_info().rss, "tensor_bytes": sum(storages.values()),
                  "tensors": len(storages), **alive}
        return {"ui": {"memory": [report]}}


NODE_CLASS_MAPPINGS = {"StandInTestConditioning": StandInTestConditioning, "StandInTestLatent": StandInTestLatent,
                       "StandInTestSaveMask": StandInTestSaveMask, "StandInTestMemory": StandInTestMemory}
'''


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


def write_weights(models: Path) -> None:
    import shutil
    from facexlib.parsing.bisenet import BiSeNet
    from safetensors.torch import save_file
    for folder in ("diffusion_models", "standin", "loras", "vae", "facexlib"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    save_file(tiny_wan_state_dict(), str(models / "diffusion_models" / WAN_FILE))
    save_file(tiny_wan_vae_state_dict(), str(models / "vae" / VAE_FILE))
    shutil.copy(DATA / "detection_mobilenet0.25_Final.pth", models / "facexlib")  # the REAL detector
    torch.manual_seed(0)
    torch.save(BiSeNet(num_class=19).state_dict(), str(models / "facexlib" / "parsing_bisenet.pth"))  # generated
    standin = standin_state_dict_for(256, 3)
    save_file(standin, str(models / "standin" / STANDIN_SAFETENSORS))
    torch.save({"state_dict": standin}, str(models / "standin" / STANDIN_CKPT))  # the official checkpoint layout
    save_file(standin_state_dict_for(128, 3), str(models / WRONG_WIDTH_LORA))
    save_file(standin_state_dict_for(256, 3, seed=7), str(models / "standin" / STANDIN_OTHER))
    save_file(style_lora(tiny_wan_state_dict()), str(models / "loras" / STYLE_LORA))


def write_inputs(folder: Path) -> None:
    """The face-swap inputs (a reference photo and 5 real frames around a face, as an H.264 video) and two more
    reference photos of other people."""
    import shutil
    import av
    import cv2
    import numpy as np
    shutil.copy(DATA / "obama.jpg", folder / SWAP_PHOTO)
    shutil.copy(DATA / "kit_harington1.jpg", folder / PHOTOS[1])
    shutil.copy(DATA / "rose_leslie1.jpg", folder / PHOTOS[2])
    frames = read_video(DATA / "short_hamilton_clip.mp4", limit=151)
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


_RUNNING = {"server": None, "process": None, "users": 0}


class TempDirs:
    """What the harness needs of pytest's ``tmp_path_factory`` (``mktemp``), for the scripts that start a server
    outside pytest."""

    def __init__(self):
        self.counter = itertools.count()

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}{next(self.counter)}_"))


def _start(tmp_path_factory, extra_args=()) -> tuple:
    import requests
    comfy_root = Path(os.environ["COMFYUI_PATH"]).resolve()
    base = tmp_path_factory.mktemp("comfyui_base")
    custom_nodes = base / "custom_nodes"
    custom_nodes.mkdir()
    (custom_nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    (custom_nodes / "standin_test_helpers.py").write_text(TEST_HELPERS)
    for folder in ("input", "output", "temp", "user"):
        (base / folder).mkdir()
    write_weights(base / "models")
    write_inputs(base / "input")

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
def serving(tmp_path_factory):
    """The session's ComfyUI server (started on first use); stopped when the last user leaves."""
    if _RUNNING["server"] is None:
        _RUNNING["server"], _RUNNING["process"] = _start(tmp_path_factory)
    _RUNNING["users"] += 1
    try:
        yield _RUNNING["server"]
    finally:
        _RUNNING["users"] -= 1
        if _RUNNING["users"] == 0:
            _stop(_RUNNING["process"])
            _RUNNING["server"] = _RUNNING["process"] = None


@contextlib.contextmanager
def own_server(tmp_path_factory, *extra_args):
    """A server of its own (not the session's), started with more command-line arguments (e.g. ``--front-end-root``
    for another frontend); stopped on exit."""
    server, process = _start(tmp_path_factory, extra_args)
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
