"""Face swap as the official Stand-In does it (standin_core.faces.swap), on a real video with real detections.

Real data (tests/data, licences there): the REAL RetinaFace mobile0.25 weights give boxes and the 5 keypoints; a real
clip (short_hamilton_clip.mp4) and a real reference photo (obama.jpg). dlib's real models (dlib-bin,
face-recognition-models) are the independent check: its 68 landmarks make the face-parse stand-in (no real BiSeNet
weights exist here) and its face descriptor judges whose face the pasted frames show.
"""
import math
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from comfyui_standin.devtools.landmark_parse import DLIB_MODELS, landmark_parser as make_landmark_parser
from comfyui_standin.standin_core.faces import composite, masks, models, prepare, swap
from comfyui_standin.standin_core.faces.video import FloatFrames, read_video
from comfyui_standin.tests.support import swap_oracle

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



# ---------------------------------------------------------------------------------------------------------------------
# several people: one cut-out per face, person j the j-th face from the left (issue 19)

def reference_photo_cutout(retinaface, landmark_parser, name):
    photo = cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)
    prepared = prepare.prepare_reference(photo, models.retinaface_detector(retinaface), landmark_parser)
    assert prepared.path == "face_crop"
    return swap.face_cutout(prepared)


@pytest.fixture(scope="module")
def people_cutouts(retinaface, landmark_parser):
    """Two real people's cut-outs from photos of their own (biden2.jpg, obama2.jpg)."""
    return [reference_photo_cutout(retinaface, landmark_parser, name) for name in ("biden2.jpg", "obama2.jpg")]


GONE = 2  # the frame of the two-people video where the left person's face is painted over


@pytest.fixture(scope="module")
def two_people_video():
    """two_people.jpg (1126x661, two real faces side by side) as a 5-frame 960x480 'video': the frame moving 40 px
    to the right each frame; in frame 2 the left face is covered by a flat grey box (that person has no face)."""
    photo = cv2.cvtColor(cv2.imread(str(DATA / "two_people.jpg")), cv2.COLOR_BGR2RGB)
    frames = np.stack([photo[0:480, shift:shift + 960] for shift in (0, 40, 80, 120, 160)]).copy()
    frames[GONE, 0:300, 130:340] = 128  # the left face (x 238..383 in the photo, 158..303 in this frame)
    return frames


def boxes_left_to_right(model, rgb):
    """facexlib's own detections (score > 0.5), boxes [N, 4] sorted by the centre's x: the independent check."""
    faces = facexlib_faces(model, rgb)
    return faces[np.argsort((faces[:, 0] + faces[:, 2]) / 2), :4]


def test_each_reference_lands_on_its_own_face_from_the_left(two_people_video, people_cutouts, retinaface):
    """Two real cut-outs on the real two-faces video: person j's paste mask lies on the j-th face from the left of
    facexlib's own detection, the other person's face untouched; the union mask is the pixelwise largest of the two;
    the frame outside the union is unchanged. Where the left face is missing (frame 2) person 1 gets nothing (an
    empty mask, 'no_face') and person 2 still gets the right face."""
    frames = two_people_video
    detector = models.retinaface_detector(retinaface, landmarks=True)
    out, union, people, how = swap.swap_faces(frames, people_cutouts, detector, None, crop=False)
    assert people.shape == (2, 5, 480, 960) and people.dtype == np.float32 and union.shape == (5, 480, 960)
    np.testing.assert_array_equal(union, people.max(axis=0))
    assert how == [["warped", "warped"]] * GONE + [["no_face", "warped"]] + [["warped", "warped"]] * 2
    for index, frame in enumerate(frames):
        boxes = boxes_left_to_right(retinaface, frame)
        assert len(boxes) == (1 if index == GONE else 2)
        owners = [0, 1] if len(boxes) == 2 else [1]  # the person each detected box must carry
        for box, person in zip(boxes, owners):
            x1, y1, x2, y2 = box
            rows, cols = np.nonzero(people[person, index] > 0.5)
            assert x1 <= cols.mean() <= x2 and y1 <= rows.mean() <= y2, (index, person)
            other = people[1 - person, index]
            x1, y1, x2, y2 = (int(v) for v in box)
            assert other[y1:y2, x1:x2].max() == 0  # the other reference is not on this face
        if index == GONE:
            assert people[0, index].max() == 0
        np.testing.assert_array_equal(out[index][union[index] == 0], frame[union[index] == 0])
    swapped = swap.swap_faces(frames, people_cutouts[::-1], detector, None, crop=False)
    assert swapped[3] == how  # the same faces found and assigned: the order of the cut-outs decides who is who
    left_face = people[0, 0] == 1.0  # where person 1's face fully covers: the other cut-out now shows there
    assert left_face.sum() > 1000 and np.abs(swapped[0][0][left_face].astype(int) - out[0][left_face]).mean() > 10


def test_one_reference_in_a_list_is_the_single_reference_swap_exactly(two_people_video, people_cutouts, retinaface):
    """The same cut-out given alone and as a one-element list: the same frames and mask, bit for bit (the largest
    face), and the person's mask is the union."""
    detector = models.retinaface_detector(retinaface, landmarks=True)
    single = swap.swap_faces(two_people_video, people_cutouts[1], detector, None, crop=False)
    listed = swap.swap_faces(two_people_video, [people_cutouts[1]], detector, None, crop=False)
    np.testing.assert_array_equal(listed[0], single[0])
    np.testing.assert_array_equal(listed[1], single[1])
    np.testing.assert_array_equal(listed[2][0], single[1])
    assert [kinds[0] for kinds in listed[3]] == single[2] == ["warped"] * 5


def test_the_people_follow_their_places_when_someone_is_missing():
    """assign_people by hand: a full frame orders left to right; a frame with one face gives it to the person who
    was nearest in the nearest full frame (before or after); without any full frame, faces are persons from the
    left; the faces past the number of people are the smaller ones."""
    def face(x, size=10.0, score=0.9):
        return np.array([x, 0, x + size, size, score] + [0.0] * 10)

    left, right = face(0), face(100)
    frames = [np.stack([left, right]), np.stack([right]), np.stack([face(5)]), np.zeros((0, 15)),
              np.stack([face(95), face(2)])]
    faces = [swap._people_faces(found, 2, 0.5) for found in frames]
    plan = swap.assign_people(faces, 2)
    assert [[None if f is None else f[0] for f in persons] for persons in plan] == [
        [0, 100], [None, 100], [5, None], [None, None], [2, 95]]
    assert [[None if f is None else f[0] for f in persons] for persons in swap.assign_people(faces[1:4], 2)] == [
        [100, None], [5, None], [None, None]]
    crowd = swap._people_faces(np.stack([face(0, 5), face(50, 20), face(30, 30), face(70, 40, score=0.4)]), 2, 0.5)
    assert crowd[:, 0].tolist() == [30, 50]  # the two largest confident faces (not the larger unsure one), in order


def test_regions_cover_every_token_the_paste_touches():
    """person_regions: a single pasted pixel anywhere in a 16x16 token makes that token at least half covered, so
    token_regions (the Stand-In References rule) puts it in the region; an empty mask gives an empty region."""
    import torch
    from comfyui_standin.standin_core.regions import token_regions
    masks = np.zeros((2, 1, 64, 64), np.float32)
    masks[0, 0, 16, 16] = 0.2  # the corner pixel of token (1, 1)
    masks[0, 0, 47, 40] = 1.0  # inside token (2, 2)
    regions = swap.person_regions(masks)
    assert set(np.unique(regions)) == {0.0, 1.0} and regions[1].max() == 0
    tokens = token_regions(torch.from_numpy(regions), (1, 4, 4)).reshape(2, 4, 4)
    assert tokens[0, 1, 1] and tokens[0, 2, 2] and not tokens[1].any()
    assert swap.person_regions(masks, grow=0)[0].sum() == 2  # grow 0: the pasted pixels only


# ---------------------------------------------------------------------------------------------------------------------
# fit for Wan, and the composite back into the original footage (standin_core.faces.swap plan_fit / fit_frames,
# standin_core.faces.composite); the expectation is written out in tests/support/swap_oracle.py

CLIP_FPS = 29.97  # short_hamilton_clip.mp4: 2997/100 frames per second, 44.1 kHz stereo AAC


def test_fit_of_the_clip_at_its_own_size_is_the_official_crop_of_the_frames_asked_for(clip):
    """640x360 is within every size: no scaling, only the official centre crop to 640x352 (4 rows off the top and
    the bottom); frames from first_frame, at most max_frames, 4n+1."""
    for size in swap.FIT_SIZES.values():
        geometry = swap.plan_fit(275, 640, 360, max_pixels=size, first_frame=100)
        assert (geometry.crop, geometry.size, geometry.scale) == ((0, 4, 640, 352), (640, 352), (1.0, 1.0))
        assert (geometry.first_frame, geometry.frame_count, geometry.source_size, geometry.source_frames) == \
            (100, 81, (640, 360), 275)
    geometry = swap.plan_fit(275, 640, 360, first_frame=100, max_frames=9)
    assert list(geometry.frames) == list(range(100, 109))
    np.testing.assert_array_equal(swap.fit_frames(clip, geometry), clip[100:109, 4:356])
    # 4n+1 from what is left: 275 - 270 = 5 frames; 275 - 272 = 3 -> 1; max_frames 8 -> 5 (the official rule
    # (F // 4) * 4 + 1 would keep all 8); everything, as the official crop_and_trim: 273
    counts = [swap.plan_fit(275, 640, 360, first_frame=first, max_frames=most).frame_count
              for first, most in ((270, 81), (272, 81), (0, 8), (0, 1), (0, 10_000))]
    assert counts == [5, 1, 5, 1, 273]
    whole = swap.plan_fit(275, 640, 360, fit=False)
    assert (whole.crop, whole.size, whole.first_frame, whole.frame_count) == ((0, 0, 640, 360), (640, 360), 0, 275)
    with pytest.raises(ValueError, match="first_frame 275 is outside the video's 275 frames"):
        swap.plan_fit(275, 640, 360, first_frame=275)


@pytest.mark.parametrize("width, height", [(1920, 1080), (1080, 1920), (1280, 720), (3840, 2160), (720, 720),
                                           (1000, 333), (650, 360), (4000, 3000), (2312, 800)])
@pytest.mark.parametrize("size", ["480p", "720p", "source"])
def test_the_fitted_size_is_the_largest_grid_size_within_the_budget_and_the_crop_keeps_the_aspect(width, height,
                                                                                                   size):
    """The rule, checked against its definition: sides multiples of 16, never larger than the video, at most the
    budget's pixels, and the next multiple of 16 on either side would need more than the video scaled to the
    budget (w * w * H <= W * budget is the scaled width's bound); the crop is centred, keeps the full height or
    the full width, and has the fitted size's aspect ratio to within half a pixel. (2312x800 at 720p is a case
    where floating point gets the scaled width wrong: 1631.99... instead of exactly 1632.)"""
    budget = swap.FIT_SIZES[size]
    geometry = swap.plan_fit(100, width, height, max_pixels=budget)
    fit_w, fit_h = geometry.size
    assert fit_w % 16 == 0 and fit_h % 16 == 0 and fit_w <= width and fit_h <= height
    limit_w, limit_h = (width, height) if budget is None or width * height <= budget else \
        (math.sqrt(width * budget / height), math.sqrt(height * budget / width))
    assert fit_w <= limit_w < fit_w + 16 and fit_h <= limit_h < fit_h + 16
    if budget is not None:
        assert fit_w * fit_h <= budget
    left, top, crop_w, crop_h = geometry.crop
    assert (left, top) == ((width - crop_w) // 2, (height - crop_h) // 2)
    if budget is None or width * height <= budget:
        assert (crop_w, crop_h) == (fit_w, fit_h)  # no scaling: the official crop
    else:
        assert crop_w == width or crop_h == height
        assert abs(crop_w * fit_h - crop_h * fit_w) <= max(fit_w, fit_h) / 2 + 1e-9
        assert crop_w >= fit_w and crop_h >= fit_h  # only ever scaled down


def test_a_larger_video_is_scaled_down_to_the_budget_keeping_its_pixels(clip):
    """The clip blown up 2x (1280x720: every pixel a 2x2 block, half its value plus 0, 4, 8, 12 across the block)
    with a budget of 640x360 pixels: the fit must be exactly half size, 640x352 from the centred 1280x704 rectangle,
    and the area downscale averages each block: half the clip's pixel plus 6."""
    big = np.repeat(np.repeat(clip[:9] // 2, 2, axis=1), 2, axis=2)
    big += np.tile(np.array([[0, 4], [8, 12]], np.uint8), (360, 640))[None, :, :, None]
    geometry = swap.plan_fit(9, 1280, 720, max_pixels=640 * 360)
    assert (geometry.crop, geometry.size, geometry.scale) == ((0, 8, 1280, 704), (640, 352), (0.5, 0.5))
    np.testing.assert_array_equal(swap.fit_frames(big, geometry), clip[:9, 4:356] // 2 + 6)
    geometry = swap.plan_fit(9, 1280, 720)  # 480p: 832x468 -> 832x464, the crop 1280 x round(1280 * 464 / 832) = 714
    assert (geometry.crop, geometry.size) == ((0, 3, 1280, 714), (832, 464))
    assert swap.fit_frames(big, geometry).shape == (9, 464, 832, 3)


@pytest.fixture(scope="module")
def performer_cutout(clip, retinaface, landmark_parser):
    """The performer's own face, from frame 150 of the clip (as devtools/comfyui_server.py's PERFORMER_PHOTO)."""
    prepared = prepare.prepare_reference(clip[150][0:200, 150:350], models.retinaface_detector(retinaface),
                                         landmark_parser)
    assert prepared.path == "face_crop"
    return swap.face_cutout(prepared)


@pytest.fixture(scope="module")
def clip_swap(clip, performer_cutout, retinaface):
    """The face swap's paste on the clip at its own size (frames 100..108), and a stand-in for the re-sampled
    frames: the pasted frames inverted (every pixel differs from the original)."""
    geometry = swap.plan_fit(len(clip), 640, 360, first_frame=100, max_frames=9)
    pasted, masks, how = swap.swap_faces(swap.fit_frames(clip, geometry), performer_cutout,
                                         models.retinaface_detector(retinaface, landmarks=True), None, crop=False)
    assert how == ["warped"] * 9
    return geometry, 1 - pasted.astype(np.float32) / 255, masks


def test_the_composite_changes_only_the_face_of_the_original_frames(clip, clip_swap):
    """On the real clip at its own size: the output has the original's size and the frames the paste used;
    outside the feathered, mapped-back masks every pixel EQUALS the original's; everywhere it is the per-pixel
    blend original * (1 - m) + generated * m of the oracle (tests/support/swap_oracle.py)."""
    geometry, generated, masks = clip_swap
    out = composite.composite_frames(FloatFrames(clip), generated, masks, geometry, feather=10)
    assert out.shape == (9, 360, 640, 3) and out.dtype == np.float32
    for index, source in enumerate(range(100, 109)):
        original = clip[source].astype(np.float32) / 255
        outside = ~swap_oracle.reach(masks[index], geometry, 10)
        assert 0.8 < outside.mean() < 0.99, "the face is a small part of the frame"
        np.testing.assert_array_equal(out[index][outside], original[outside])
        expected, weight = swap_oracle.expected_frame(original, generated[index], masks[index], geometry, 10)
        assert np.abs(out[index] - expected).max() <= 1e-5  # values in 0..1: float32 rounding is ~1e-7
        face = weight > 0.999
        assert face.sum() > 1000 and np.abs(out[index][face] - original[face]).mean() > 0.2  # the face did change
        assert not weight[~np.pad(np.ones((352, 640), bool), ((4, 4), (0, 0)))].any()  # nothing outside the crop


def test_the_composite_maps_scaled_frames_back_onto_the_crop(clip):
    """A video the fit scaled (the clip blown up 2x, fitted to 640x352 from 1280x704 at (0, 8)): the mask and the
    generated frame are feathered at 640x352 and upsampled to the crop, bilinear, as the oracle writes it out; the
    rows outside the crop and everything away from the mask stay the original's."""
    big = np.repeat(np.repeat(clip[:5], 2, axis=1), 2, axis=2)
    geometry = swap.plan_fit(5, 1280, 720, max_pixels=640 * 360)
    rng = np.random.default_rng(3)
    generated = rng.random((5, 352, 640, 3)).astype(np.float32)
    masks = np.zeros((5, 352, 640), np.float32)
    yy, xx = np.mgrid[:352, :640]
    masks[0][((xx - 300) / 60) ** 2 + ((yy - 150) / 80) ** 2 <= 1] = 1.0
    masks[1][0:40, 600:640] = 0.5  # at the crop's corner: the feather mirrors at the edge
    masks[2] = rng.random((352, 640)) * (rng.random((352, 640)) < 0.001)  # scattered specks
    out = composite.composite_frames(FloatFrames(big), generated, masks, geometry, feather=6)
    assert out.shape == (5, 720, 1280, 3)
    for index in range(5):
        original = big[index].astype(np.float32) / 255
        outside = ~swap_oracle.reach(masks[index], geometry, 6)
        np.testing.assert_array_equal(out[index][outside], original[outside])
        expected, weight = swap_oracle.expected_frame(original, generated[index], masks[index], geometry, 6)
        assert np.abs(out[index] - expected).max() <= 1e-5
    np.testing.assert_array_equal(out[4], big[4].astype(np.float32) / 255)  # an empty mask: the frame as it was
    assert swap_oracle.reach(masks[0], geometry, 6)[8:712].mean() > 0.05


def test_the_composite_cuts_the_audio_to_the_frames_used(clip_swap):
    """Frames 100..108 of a 29.97 fps video with 44.1 kHz audio: from 100 / 29.97 s = sample 147147.1 to
    109 / 29.97 s = sample 160390.4, so samples 147147 up to 160390, exactly the decoded audio there."""
    geometry = clip_swap[0]
    waveform, rate = swap_oracle.read_audio(DATA / "short_hamilton_clip.mp4")
    assert rate == 44100 and waveform.shape[0] == 2
    assert composite.audio_span(geometry, CLIP_FPS, rate) == (147147, 160390)
    np.testing.assert_array_equal(composite.trim_audio(waveform[None], rate, geometry, CLIP_FPS),
                                  waveform[None, :, 147147:160390])
    with pytest.raises(ValueError, match="connect Get Video Components' fps"):
        composite.trim_audio(waveform, rate, geometry, None)


def test_the_composite_refuses_frames_of_another_swap(clip, clip_swap):
    geometry, generated, masks = clip_swap
    with pytest.raises(ValueError, match="connect the same images that went into Stand-In Face Swap Paste"):
        composite.composite_frames(FloatFrames(clip[:200]), generated, masks, geometry)
    with pytest.raises(ValueError, match="there are 8 generated frames, but Stand-In Face Swap Paste made 9"):
        composite.composite_frames(FloatFrames(clip), generated[:8], masks, geometry)
    with pytest.raises(ValueError, match="the masks are 352x352"):
        composite.composite_frames(FloatFrames(clip), generated, masks[:, :, :352], geometry)
