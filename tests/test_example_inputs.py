"""The example inputs (example_inputs/) the shipped workflows load: what they hold, and that a fresh ComfyUI with the
pack offers every one of them, so no Load Image or Load Video node of a shipped workflow opens red."""
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_inputs"
DATA = REPO / "tests" / "data"
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def workflow_inputs() -> dict:
    """{file name: loader type} for every Load Image / Load Video of the shipped workflows."""
    found = {}
    for path in WORKFLOWS:
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            if node["type"] in ("LoadImage", "LoadVideo"):
                found[node["widgets_values"][0]] = node["type"]
    return found


def test_every_input_a_workflow_loads_is_an_example_input():
    names = workflow_inputs()
    assert set(names) <= {path.name for path in EXAMPLES.glob("standin_example_*")}, names
    assert {"LoadImage", "LoadVideo"} <= set(names.values())


def test_the_example_faces_are_faces_the_real_detector_finds():
    """The reference photos the face workflows load hold one face each, which the REAL RetinaFace (mobile0.25,
    tests/data) finds large enough for Stand-In (at least 64 px, the pack's small-face limit)."""
    from facexlib.detection import init_detection_model
    detector = init_detection_model("retinaface_mobile0.25", half=False, device="cpu", model_rootpath=str(DATA))
    for name in ("standin_example_face.jpg", "standin_example_performer.jpg", "standin_example_person_1.jpg",
                 "standin_example_person_2.jpg"):
        with torch.inference_mode():
            found = detector.detect_faces(cv2.imread(str(EXAMPLES / name)), 0.97)
        assert len(found) == 1, (name, found)
        x1, y1, x2, y2 = found[0][:4]
        assert min(x2 - x1, y2 - y1) >= 64, (name, found[0][:4])


def test_the_example_videos_have_the_size_rate_and_sound_the_workflows_expect():
    with av.open(str(EXAMPLES / "standin_example_clip.mp4")) as clip:
        video = clip.streams.video[0]
        assert (video.width, video.height, float(video.average_rate)) == (640, 360, 29.97)
        assert [stream.type for stream in clip.streams if stream.type == "audio"] == ["audio"]
    assert (EXAMPLES / "standin_example_clip.mp4").read_bytes() == (DATA / "short_hamilton_clip.mp4").read_bytes()
    for name, people in (("standin_example_pose.mp4", 1), ("standin_example_pose_two.mp4", 2)):
        with av.open(str(EXAMPLES / name)) as clip:
            frames = [frame.to_ndarray(format="rgb24") for frame in clip.decode(video=0)]
            assert clip.streams.video[0].average_rate == 16
        assert len(frames) == 81 and frames[0].shape == (480, 832, 3)  # the VACE workflow's 832x480, 81 frames
        drawn = (frames[10].max(axis=2) > 60).astype(np.uint8)  # frame 10: arms down, the figures apart
        columns = np.flatnonzero(drawn.any(axis=0))
        gaps = np.flatnonzero(np.diff(columns) > 20)  # separate figures leave empty columns between them
        assert len(gaps) + 1 == people, (name, columns.min(), columns.max(), gaps)


def test_the_two_people_clip_shows_two_faces_the_real_detector_finds():
    """The several-people face swap's clip (a still photo of two people, moved): 41 frames (4n+1, all of them used)
    of 832x480 (the 480p budget, so the paste neither scales nor crops) at 16 fps, and in every 4th frame from the
    first to the last the REAL RetinaFace (mobile0.25) finds the two faces, one in each half, large enough; the two
    largest confident faces (the paste's rule) are those two. The reference photos are the two people's own faces
    (standin_example_person_1/2.jpg, from other photos of them): the same person by dlib's face descriptor, person 1
    the left face."""
    from facexlib.detection import init_detection_model
    with av.open(str(EXAMPLES / "standin_example_two_people.mp4")) as clip:
        assert clip.streams.video[0].average_rate == 16
        frames = [frame.to_ndarray(format="rgb24") for frame in clip.decode(video=0)]
    assert len(frames) == 41 and frames[0].shape == (480, 832, 3)
    assert (EXAMPLES / "standin_example_two_people.mp4").stat().st_size < 300_000
    detector = init_detection_model("retinaface_mobile0.25", half=False, device="cpu", model_rootpath=str(DATA))
    for index in range(0, len(frames), 4):  # every 4th frame, the first and the last (a smooth zoom; CPU time)
        with torch.inference_mode():
            found = detector.detect_faces(np.ascontiguousarray(frames[index][:, :, ::-1]), 0.5)
        areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
        x1, y1, x2, y2 = found[np.argsort(-areas)[:2]][:, :4].T
        centres = np.sort((x1 + x2) / 2)
        assert centres[0] < 416 < centres[1], (index, found[:, :5])
        assert min((x2 - x1).min(), (y2 - y1).min()) >= 64, (index, found[:, :5])
    # whose faces: dlib's real face descriptor (an independent model), the photos against the faces left to right
    import dlib
    from comfyui_standin.devtools.landmark_parse import DLIB_MODELS
    detect = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(DLIB_MODELS / "shape_predictor_5_face_landmarks.dat"))
    describe = dlib.face_recognition_model_v1(str(DLIB_MODELS / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptors(rgb):
        boxes = sorted(detect(rgb, 0), key=lambda box: box.center().x)
        return [np.array(describe.compute_face_descriptor(rgb, shape(rgb, box))) for box in boxes]
    in_video = descriptors(frames[20])
    photos = [descriptors(cv2.cvtColor(cv2.imread(str(EXAMPLES / f"standin_example_person_{n}.jpg")),
                                       cv2.COLOR_BGR2RGB)) for n in (1, 2)]
    assert len(in_video) == 2 and [len(found) for found in photos] == [1, 1]
    distance = np.array([[np.linalg.norm(photo[0] - face) for face in in_video] for photo in photos])
    assert distance[0, 0] < 0.6 and distance[1, 1] < 0.6 and distance[0, 1] > 0.6 and distance[1, 0] > 0.6, distance


@pytest.mark.comfyui
def test_a_fresh_comfyui_offers_every_example_input(server):
    """The session's server started on an empty base directory with the pack linked in: its Load Image and Load
    Video lists hold every input the shipped workflows load, byte for byte the pack's files."""
    options = {}
    for node in ("LoadImage", "LoadVideo"):
        spec = server.get(f"/object_info/{node}")[node]["input"]["required"]
        options[node] = spec["image" if node == "LoadImage" else "file"]
    from comfyui_standin.devtools.comfyui_server import combo_options
    for name, node in workflow_inputs().items():
        assert name in combo_options(options[node]), (node, name)
        assert (server.base / "input" / name).read_bytes() == (EXAMPLES / name).read_bytes()


@pytest.mark.comfyui
def test_example_inputs_never_overwrite_a_users_file(comfy, monkeypatch, tmp_path):
    import folder_paths
    from comfyui_standin.nodes import examples
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "standin_example_face.jpg").write_bytes(b"the user's own file")
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(folder))
    added = examples.add_example_inputs()
    expected = sorted(path.name for path in EXAMPLES.glob("standin_example_*"))
    assert added == [name for name in expected if name != "standin_example_face.jpg"]
    assert (folder / "standin_example_face.jpg").read_bytes() == b"the user's own file"
    for name in added:
        assert (folder / name).read_bytes() == (EXAMPLES / name).read_bytes()
    assert examples.add_example_inputs() == []  # nothing missing, nothing copied
