"""The download tests' local HTTP server (no network): it serves bytes under a face model's download URL, whole, cut
half way or hanging; and the real RetinaFace mobile0.25 weights in tests/data that the tests serve."""
import contextlib
import http.server
import threading
from pathlib import Path

from comfyui_standin.standin_core.faces import models as face_models

DATA = Path(__file__).resolve().parents[1] / "data"
MOBILENET = "detection_mobilenet0.25_Final.pth"
MOBILENET_BYTES = (DATA / MOBILENET).read_bytes()  # the real RetinaFace mobile0.25 weights


class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path] = (bytes, mode)``: "full"; "cut" (announces every byte, sends half, closes);
    "hang" (sends half, then waits until ``server.release`` is set)."""

    def do_GET(self):
        self.server.requests.append(self.path)
        data, mode = self.server.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if mode == "full":
            self.wfile.write(data)
            return
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        if mode == "hang":
            self.server.release.wait(60)
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving_files():
    """A :class:`Files` server on 127.0.0.1 (a free port) in a thread; ``requests`` lists the paths asked for."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    server.files, server.requests, server.release = {}, [], threading.Event()
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def serve(monkeypatch, server, model_name: str, data: bytes, mode: str = "full") -> str:
    """Point the model's download URL at the local server, which serves ``data``."""
    file_name, _ = face_models.FACEXLIB_WEIGHTS[model_name]
    path = f"/{mode}/{file_name}"
    server.files[path] = (data, mode)
    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    monkeypatch.setitem(face_models.FACEXLIB_WEIGHTS, model_name, (file_name, url))
    return url
