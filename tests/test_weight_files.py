"""Hostile and broken files: corrupt weight files, a safetensors header declaring absurd shapes (refused
without allocating, proved under an address-space limit), pickled code in face weights (never runs), and the
facexlib download (served by a local http.server on 127.0.0.1: checked against the SHA-256 before use, nothing left
that loads after wrong bytes, a connection closed half way, or a killed process).
"""
import hashlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from comfyui_standin.standin_core import StandInWeightsError, load_standin_weights
from comfyui_standin.standin_core.faces import models as face_models
from comfyui_standin.tests.support.downloads import MOBILENET, MOBILENET_BYTES, serve

DATA = Path(__file__).resolve().parent / "data"
MOBILENET_SHA256 = hashlib.sha256(MOBILENET_BYTES).hexdigest()


def standin_tensors(width=32, depth=2, rank=4):
    generator = torch.Generator().manual_seed(0)
    return {f"blocks.{i}.self_attn.{p}_loras.{part}.weight":
            torch.randn(*((rank, width) if part == "down" else (width, rank)), generator=generator)
            for i in range(depth) for p in "qkv" for part in ("down", "up")}


def safetensors_file(path: Path, header: dict, data: bytes = b"", header_length=None) -> Path:
    encoded = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded) if header_length is None else header_length))
        handle.write(encoded)
        handle.write(data)
    return path


# ------------------------------------------------------------------------------------------------ Stand-In files

def test_corrupt_weight_files_are_refused_naming_the_file(tmp_path):
    good = tmp_path / "good.safetensors"
    safetensors.torch.save_file(standin_tensors(), str(good))
    raw = good.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    broken = {
        "header_not_json.safetensors": raw[:8] + b"{" + b"\x00" * (length - 1) + raw[8 + length:],
        "header_longer_than_file.safetensors": struct.pack("<Q", 2 ** 40) + raw[8:],
        "five_bytes.safetensors": raw[:5],
        "header_cut.safetensors": raw[:8 + length // 2],
    }
    ckpt = tmp_path / "good.ckpt"
    torch.save(standin_tensors(), ckpt)
    zipped = ckpt.read_bytes()
    broken["no_zip_directory.ckpt"] = zipped[:-200] + b"\x00" * 200  # the zip's central directory overwritten
    middle = zipped.index(b"data.pkl") + 60
    broken["pickle_overwritten.ckpt"] = zipped[:middle] + b"\xff" * 64 + zipped[middle + 64:]
    for name, data in broken.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(StandInWeightsError, match="truncated or corrupt") as info:
            load_standin_weights(str(path))
        assert str(path) in str(info.value), name
    assert load_standin_weights(str(good)).depth == 2  # the same bytes, unbroken, load


ABSURD = textwrap.dedent("""
    import json, resource, sys
    import torch
    from comfyui_standin.standin_core import StandInWeightsError, load_standin_weights
    def vm_size():
        line = next(l for l in open("/proc/self/status") if l.startswith("VmSize:"))
        return int(line.split()[1]) * 1024
    limit = vm_size() + 3 * 2 ** 30  # everything imported, plus 3 GiB of address space
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = {}
    for path in sys.argv[1:]:
        try:
            load_standin_weights(path)
            out[path] = "loaded"
        except StandInWeightsError as error:
            out[path] = str(error)
    try:  # the limit is real: 40 GiB cannot be allocated under it
        torch.empty(40 * 2 ** 30, dtype=torch.uint8)
        out["control"] = "allocated"
    except (RuntimeError, MemoryError) as error:
        out["control"] = "refused"
    print(json.dumps(out))
""")


def test_absurd_safetensors_header_is_refused_without_allocating(tmp_path):
    """Three headers that would make a naive loader allocate tens of GiB, each loaded in a process whose address
    space is limited to what it already uses plus 3 GiB (so a 40 GiB allocation cannot happen, and would show as a
    memory error, not as the loader's own refusal)."""
    gib40 = 40 * 2 ** 30
    tiny_file = safetensors_file(tmp_path / "shapes_without_data.safetensors", {
        "blocks.0.self_attn.q_loras.down.weight": {"dtype": "F32", "shape": [2 ** 20, 2 ** 20],
                                                   "data_offsets": [0, 2 ** 42]}}, b"\x00" * 64)
    sparse = safetensors_file(tmp_path / "sparse_40gib.safetensors", {  # consistent header; the file really is
        "blocks.0.self_attn.q_loras.down.weight": {"dtype": "F32", "shape": [gib40 // 4 // 5120, 5120],
                                                   "data_offsets": [0, gib40]}})  # 40 GiB long (sparse on disk)
    with open(sparse, "r+b") as handle:
        handle.truncate(sparse.stat().st_size + gib40)
    assert os.stat(sparse).st_blocks * 512 < 2 ** 20, "the 40 GiB file takes no disk space"
    huge_header = safetensors_file(tmp_path / "header_2tib.safetensors", {}, header_length=2 ** 41)
    out = subprocess.run([sys.executable, "-c", ABSURD, str(tiny_file), str(sparse), str(huge_header)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    messages = json.loads(out.stdout.strip().splitlines()[-1])
    assert messages.pop("control") == "refused", "the address-space limit did not hold"
    assert "declares 'blocks.0.self_attn.q_loras.down.weight' as F32 [1048576, 1048576]" in messages[str(tiny_file)]
    assert f"declares {gib40} bytes of tensors, far more than any Stand-In file" in messages[str(sparse)]
    assert f"header declares {2 ** 41} bytes" in messages[str(huge_header)]
    for path, message in messages.items():
        assert message.startswith(f"refused {path}:") and "nothing was loaded" in message, message


# ------------------------------------------------------------------------------------------------ face weights

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("file_format", ["zip", "pickle_protocol_2", "pickle_protocol_4"])
def test_face_weights_with_pickled_code_are_refused_without_running(tmp_path, file_format):
    marker = tmp_path / "payload_ran"
    state = torch.load(DATA / MOBILENET, map_location="cpu", weights_only=True)  # the real weights...
    state["extra"] = _Payload(marker)  # ...plus an object whose unpickling runs a shell command
    folder = tmp_path / "facexlib"
    folder.mkdir()
    if file_format == "zip":  # torch.save's format
        torch.save(state, folder / MOBILENET)
    else:  # a legacy pickle; protocol 4 trips the safe unpickler on its framing before it reaches the payload
        with open(folder / MOBILENET, "wb") as handle:
            pickle.dump(state, handle, protocol=int(file_format[-1]))
    expected = face_models.UnsafeFaceWeightsError if file_format != "pickle_protocol_4" else RuntimeError
    with pytest.raises(expected, match=f"(?s)face model '{MOBILENET}'.*https://github.com/xinntao") as info:
        face_models.load_face_detector(folder, "retinaface_mobile0.25")
    if expected is face_models.UnsafeFaceWeightsError:
        assert "could run code" in str(info.value)
    assert not marker.exists(), "the payload ran"
    assert torch.load(DATA / MOBILENET, map_location="cpu", weights_only=True).keys() == state.keys() - {"extra"}


# ------------------------------------------------------------------------------------------------ downloads

def test_download_is_checked_then_loaded(tmp_path, monkeypatch, file_server):
    """The real mobile0.25 weights served over HTTP; their SHA-256 (computed here) stands in for the published
    one, since the copy in tests/data is not the facexlib release file (whose published hash the table holds)."""
    monkeypatch.setitem(face_models.KNOWN_SHA256, MOBILENET, MOBILENET_SHA256)
    url = serve(monkeypatch, file_server, "retinaface_mobile0.25", MOBILENET_BYTES)
    model = face_models.load_face_detector(tmp_path, "retinaface_mobile0.25", allow_download=True)
    assert file_server.requests == [url.split(str(file_server.server_address[1]))[1]]
    assert sorted(os.listdir(tmp_path)) == [MOBILENET]
    assert (tmp_path / MOBILENET).read_bytes() == MOBILENET_BYTES
    saved = torch.load(DATA / MOBILENET, map_location="cpu", weights_only=True)
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key.removeprefix("module.")], value), key
    face_models.load_face_detector(tmp_path, "retinaface_mobile0.25", allow_download=True)
    assert len(file_server.requests) == 1, "a file already there is not downloaded again"


@pytest.mark.parametrize("served", ["another_retinaface", "garbage", "empty"])
def test_download_with_wrong_bytes_is_refused_and_removed(tmp_path, monkeypatch, file_server, served):
    """With the real table: the copy of mobile0.25 in tests/data is a valid RetinaFace file, but not the facexlib
    release's bytes, so it is refused like any other wrong file."""
    data = {"another_retinaface": MOBILENET_BYTES, "garbage": os.urandom(4096), "empty": b""}[served]
    serve(monkeypatch, file_server, "retinaface_mobile0.25", data)
    published = face_models.KNOWN_SHA256[MOBILENET]
    with pytest.raises(face_models.FaceWeightsDownloadError,
                       match=f"has SHA-256 {hashlib.sha256(data).hexdigest()}, not the published {published}"):
        face_models.load_face_detector(tmp_path, "retinaface_mobile0.25", allow_download=True)
    assert os.listdir(tmp_path) == [], "nothing is left in the folder"
    with pytest.raises(face_models.MissingFaceWeightsError):
        face_models.load_face_detector(tmp_path, "retinaface_mobile0.25")


def test_interrupted_download_leaves_nothing_that_loads(tmp_path, monkeypatch, file_server):
    monkeypatch.setitem(face_models.KNOWN_SHA256, MOBILENET, MOBILENET_SHA256)
    serve(monkeypatch, file_server, "retinaface_mobile0.25", MOBILENET_BYTES, mode="cut")
    with pytest.raises(face_models.FaceWeightsDownloadError, match=f"stopped after .* of {len(MOBILENET_BYTES)} "
                                                                   "bytes; nothing was saved"):
        face_models.load_face_detector(tmp_path, "retinaface_mobile0.25", allow_download=True)
    assert os.listdir(tmp_path) == []
    with pytest.raises(face_models.MissingFaceWeightsError):
        face_models.load_face_detector(tmp_path, "retinaface_mobile0.25")


KILLED = textwrap.dedent("""
    import sys
    from comfyui_standin.standin_core.faces import models
    models.KNOWN_SHA256[sys.argv[3]] = sys.argv[4]
    models.FACEXLIB_WEIGHTS["retinaface_mobile0.25"] = (sys.argv[3], sys.argv[2])
    models.load_face_detector(sys.argv[1], "retinaface_mobile0.25", allow_download=True)
    print("finished")
""")


def test_killed_download_leaves_nothing_that_loads(tmp_path, monkeypatch, file_server):
    """The downloading process is killed (SIGKILL: no clean-up runs) while half the file has arrived: what is left
    is a temporary file that no loader looks at; the next run reports the file missing, or downloads it afresh."""
    url = serve(monkeypatch, file_server, "retinaface_mobile0.25", MOBILENET_BYTES, mode="hang")
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path), url, MOBILENET, MOBILENET_SHA256],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size >= 2 ** 16 for p in tmp_path.iterdir()):  # bytes arrived and were written
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the download never got half way"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    (left,) = os.listdir(tmp_path)
    assert left.startswith(f".{MOBILENET}.") and left.endswith(".part"), left
    with pytest.raises(face_models.MissingFaceWeightsError):
        face_models.load_face_detector(tmp_path, "retinaface_mobile0.25")
    monkeypatch.setitem(face_models.KNOWN_SHA256, MOBILENET, MOBILENET_SHA256)
    serve(monkeypatch, file_server, "retinaface_mobile0.25", MOBILENET_BYTES)
    face_models.load_face_detector(tmp_path, "retinaface_mobile0.25", allow_download=True)
    assert (tmp_path / MOBILENET).read_bytes() == MOBILENET_BYTES


def test_download_without_a_known_hash_is_refused(tmp_path, monkeypatch, file_server):
    serve(monkeypatch, file_server, "bisenet", b"anything")
    monkeypatch.delitem(face_models.KNOWN_SHA256, "parsing_bisenet.pth")
    with pytest.raises(face_models.FaceWeightsDownloadError,
                       match="'parsing_bisenet.pth' has no known SHA-256, so it is not downloaded automatically"):
        face_models.load_face_parser(tmp_path, allow_download=True)
    assert file_server.requests == [] and os.listdir(tmp_path) == []
