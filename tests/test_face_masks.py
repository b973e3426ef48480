"""Per-frame face masks (standin_core.faces.masks): a real face moving across a clip, dilation, feather, classes."""
import cv2
import numpy as np
import pytest
import torch

from comfyui_standin.standin_core.faces import masks as face_masks, models as face_models

from skimage import data as skimage_data  # noqa: E402  (requirements-test.txt)

SHIFTS = (0, 64, 128, 192)


@pytest.fixture(scope="module")
def lbp():
    return face_models.cascade_detector()


@pytest.fixture(scope="module")
def clip():
    """The astronaut pasted at growing x offsets on a 512 x 768 grey canvas, then one frame with no face."""
    astronaut = skimage_data.astronaut()
    frames = np.full((len(SHIFTS) + 1, 512, 768, 3), 128, np.uint8)
    for index, shift in enumerate(SHIFTS):
        frames[index, :, shift:shift + 512] = astronaut
    return frames


def everything_is_skin(rgb):
    return np.ones(rgb.shape[:2], np.uint8)


def test_masks_follow_the_moving_face(clip, lbp):
    calls = []
    masks = face_masks.face_masks(clip, lbp, everything_is_skin, dilation=10, feather=21,
                                  progress=lambda done, total: calls.append((done, total)))
    assert masks.shape == clip.shape[:3] and masks.dtype == np.float32
    assert calls == [(i + 1, len(clip)) for i in range(len(clip))]
    assert masks[-1].max() == 0, "a frame without a face gets an empty mask"
    centres = []
    for index in range(len(SHIFTS)):
        # expected: the official 1.5x window around the largest box the detector itself reports, filled with 1
        raw = lbp(clip[index])
        x1, y1, x2, y2 = (int(v) for v in raw[np.argmax((raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1]))])
        cx, cy, half = (x1 + x2) // 2, (y1 + y2) // 2, int(max(x2 - x1, y2 - y1) * 1.5) // 2
        expected = np.zeros((512, 768), np.float32)
        expected[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half] = 1.0
        np.testing.assert_array_equal(masks[index], expected)
        ys, xs = np.nonzero(masks[index])
        centres.append((xs.mean(), ys.mean()))
    steps = np.diff([c[0] for c in centres])
    assert np.abs(steps - 64).max() <= 8, f"mask centre should move 64 px per frame, moved {steps}"
    assert np.ptp([c[1] for c in centres]) <= 8
    assert all(200 < cx - shift < 240 and 95 < cy < 135 for (cx, cy), shift in zip(centres, SHIFTS))


def test_face_part_mask_classes_dilation_and_feather():
    parse_map = np.full((512, 512), 17, np.uint8)  # hair everywhere
    yy, xx = np.mgrid[:512, :512]
    disc = (yy - 256) ** 2 + (xx - 256) ** 2 <= 100 ** 2
    parse_map[disc] = 1
    parse_map[250:262, 200:312] = 6  # glasses: a face part (class 6)
    plain = face_masks.face_part_mask(parse_map, dilation=0, feather=0)
    np.testing.assert_array_equal(plain, disc.astype(np.uint8) * 255)
    dilated = face_masks.face_part_mask(parse_map, dilation=15, feather=0)
    assert (dilated[disc] == 255).all()
    assert abs((dilated > 0).sum() / (np.pi * 107 ** 2) - 1) < 0.03, "a 15-px ellipse grows the radius by ~7 px"
    feathered = face_masks.face_part_mask(parse_map, dilation=0, feather=21)
    ramp = feathered[256, 340:372]
    assert ramp[0] == 255 and ramp[-1] == 0 and ((ramp > 0) & (ramp < 255)).sum() >= 10
    assert np.all(np.diff(ramp.astype(int)) <= 0)
    np.testing.assert_array_equal(face_masks.face_part_mask(parse_map, dilation=0, feather=20), feathered)
    not_face = np.array([[0, 14, 15], [16, 17, 18]], np.uint8)
    assert face_masks.face_part_mask(not_face, dilation=0, feather=0).max() == 0
    with pytest.raises(ValueError, match=">= 0"):
        face_masks.face_part_mask(parse_map, dilation=-1)


def test_mask_is_the_parsed_face_resized_back_into_the_window():
    frame = np.full((300, 400, 3), 90, np.uint8)
    box = (150, 100, 210, 160)  # window: centre (180, 130), side 90 -> (135, 85, 225, 175)

    def parser(rgb):
        out = np.zeros(rgb.shape[:2], np.uint8)
        out[128:384, 128:384] = 11  # mouth
        return out

    mask = face_masks.face_mask(frame, lambda rgb: np.array([box], float), parser, dilation=0, feather=0)
    part = np.zeros((512, 512), np.uint8)
    part[128:384, 128:384] = 255
    expected = np.zeros((300, 400), np.float32)
    expected[85:175, 135:225] = cv2.resize(part, (90, 90), interpolation=cv2.INTER_LINEAR) / 255.0
    np.testing.assert_array_equal(mask, expected)


def test_torch_frames_and_a_single_frame(clip, lbp):
    frames = torch.from_numpy(clip[:1]).float() / 255
    from_torch = face_masks.face_masks(frames, lbp, everything_is_skin)
    np.testing.assert_array_equal(from_torch, face_masks.face_masks(clip[0], lbp, everything_is_skin))
    with pytest.raises(ValueError, match="F >= 1"):
        face_masks.face_masks(np.zeros((0, 64, 64, 3), np.uint8), lbp, everything_is_skin)
