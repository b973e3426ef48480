"""Reference preparation (standin_core.faces.prepare) on a real photo, against expectations computed here.

Expectations follow the official Stand-In FaceProcessor, restated in the test: box -> window of side
int(1.5 * max(w, h)) around the integer centre, clamped; white centred padding; INTER_AREA to 512; parse class 0 white.
"""
import logging

import cv2
import numpy as np
import pytest
import torch

from comfyui_standin.standin_core.faces import models as face_models, prepare as faces
from comfyui_standin.tests.support.official_reference import area512, official_window, white_square

from skimage import data as skimage_data  # noqa: E402  (requirements-test.txt)


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def lbp():
    return face_models.cascade_detector()


def fixed(*boxes):
    """A detector that always reports these boxes."""
    return lambda rgb: np.array(boxes, dtype=float).reshape(-1, 4)


def test_real_photo_crop_contains_the_detected_face(astronaut, lbp):
    raw = lbp(astronaut)
    largest = raw[np.argmax((raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1]))]
    result = faces.prepare_reference(astronaut, lbp, None)
    assert result.path == "face_crop"
    assert result.face_box == tuple(int(v) for v in largest)
    x1, y1, x2, y2 = result.face_box
    assert 150 < x1 < x2 < 290 and 50 < y1 < y2 < 190, "the astronaut's face is at about (178, 74)-(261, 157)"
    left, top, right, bottom = result.crop_window
    assert result.crop_window == official_window(result.face_box, 512, 512)
    assert left <= x1 and top <= y1 and right >= x2 and bottom >= y2
    assert right - left == bottom - top, "an unclamped window is square"
    assert result.image.shape == (512, 512, 3) and result.image.dtype == np.uint8
    np.testing.assert_array_equal(result.image, area512(astronaut[top:bottom, left:right]))
    assert result.mask.shape == (512, 512) and result.mask.min() == 1.0
    assert any("background removal skipped" in note for note in result.notes)


def test_clamped_window_is_padded_white_and_centred(astronaut):
    box = (8, 80, 90, 170)  # near the left border only: the official code crops, clamps and pads
    result = faces.prepare_reference(astronaut, fixed(box), None)
    left, top, right, bottom = official_window(box, 512, 512)
    assert (left, right) == (0, 116) and result.crop_window == (left, top, right, bottom)
    expected = area512(white_square(astronaut[top:bottom, left:right]))
    np.testing.assert_array_equal(result.image, expected)
    pad = (bottom - top - right) // 2  # 9 white columns each side of a 134-px square -> ~34 px at 512
    assert (result.image[:, : pad * 512 // (bottom - top) - 1] == 255).all()
    assert (result.image[:, -(pad * 512 // (bottom - top)) + 1:] == 255).all()
    assert result.mask[:, :30].max() == 0 and result.mask[:, 40:470].min() == 1 and result.mask[:, -30:].max() == 0


def test_border_rule_all_sides_whole_image(astronaut):
    narrow = astronaut[:, 56:456]  # 512 x 400
    result = faces.prepare_reference(narrow, fixed((3, 4, 398, 509)), None)
    assert result.path == "whole_image_border" and result.crop_window == (0, 0, 400, 512)
    np.testing.assert_array_equal(result.image, area512(white_square(narrow)))
    assert (result.image[:, :55] == 255).all() and (result.image[:, -55:] == 255).all()


def test_border_rule_one_side_crops_unless_any(astronaut):
    box = (2, 100, 120, 220)  # touches the left border only
    assert faces.prepare_reference(astronaut, fixed(box), None).path == "face_crop"  # official inference code
    assert faces.prepare_reference(astronaut, fixed(box), None, border_rule="any").path == "whole_image_border"
    with pytest.raises(ValueError, match="border rule"):
        faces.prepare_reference(astronaut, fixed(box), None, border_rule="some")


def test_no_face_whole_image_padded_then_parsed_with_warning(astronaut, caplog):
    wide = astronaut[100:400]  # 300 x 512
    parse_map = np.zeros((512, 512), np.uint8)
    parse_map[200:300, 200:300] = 1
    with caplog.at_level(logging.WARNING, logger="standin"):
        result = faces.prepare_reference(wide, fixed(), lambda rgb: parse_map)
    assert result.path == "whole_image_no_face" and result.face_box is None
    assert "no face detected" in caplog.text and "subject mode" in caplog.text
    square = area512(white_square(wide))
    expected = np.full_like(square, 255)
    expected[200:300, 200:300] = square[200:300, 200:300]
    np.testing.assert_array_equal(result.image, expected)


def test_parse_map_gives_exact_white_background_composite(astronaut):
    box = (178, 74, 261, 157)
    parse_map = np.zeros((512, 512), np.int64)  # background
    parse_map[100:400, 120:390] = 1  # skin
    parse_map[40:100, 100:420] = 17  # hair
    parse_map[20:40, 100:420] = 18  # hat
    parse_map[400:450, 150:360] = 14  # neck
    parse_map[450:500, 50:460] = 16  # cloth
    parse_map[440:450, 200:300] = 15  # necklace
    seen = []

    def parser(rgb):
        seen.append(rgb.copy())
        return parse_map

    left, top, right, bottom = official_window(box, 512, 512)
    square = area512(astronaut[top:bottom, left:right])
    for remove_extra, white_classes in ((False, {0}), (True, {0, 14, 15, 16, 18})):
        result = faces.prepare_reference(astronaut, fixed(box), parser, remove_neck_cloth_hat=remove_extra)
        np.testing.assert_array_equal(seen[-1], square)  # the parser sees the 512 crop, RGB
        expected = square.copy()
        white = np.zeros((512, 512), bool)
        for cls in white_classes:
            white |= parse_map == cls
        expected[white] = 255
        np.testing.assert_array_equal(result.image, expected)
        np.testing.assert_array_equal(result.mask, (~white).astype(np.float32))
        np.testing.assert_array_equal(result.parse_map, parse_map)
    assert (result.image[30, 200] == 255).all() and (result.image[60, 200] == square[60, 200]).all()  # hat/hair


def test_parser_with_wrong_output_is_refused(astronaut):
    with pytest.raises(ValueError, match="class map"):
        faces.prepare_reference(astronaut, fixed((178, 74, 261, 157)), lambda rgb: np.zeros((256, 256), np.uint8))


def test_face_index_counts_from_the_left_and_default_is_largest(astronaut):
    boxes = [(300, 60, 360, 120), (40, 60, 80, 100), (150, 200, 260, 310)]  # out of order; the third is largest
    detector = fixed(*boxes)
    assert faces.prepare_reference(astronaut, detector, None).face_box == boxes[2]
    assert faces.prepare_reference(astronaut, detector, None, face_index=0).face_box == boxes[1]
    assert faces.prepare_reference(astronaut, detector, None, face_index=1).face_box == boxes[2]
    assert faces.prepare_reference(astronaut, detector, None, face_index=2).face_box == boxes[0]
    with pytest.raises(ValueError, match=r"face_index 3 is out of range: 3 face\(s\).*-1 for the largest"):
        faces.prepare_reference(astronaut, detector, None, face_index=3)


def test_subject_mode_skips_detection_and_parsing(astronaut):
    def forbidden(rgb):
        raise AssertionError("must not be called in subject mode")

    tall = astronaut[:, 100:356]  # 512 x 256
    result = faces.prepare_reference(tall, forbidden, forbidden, subject_mode=True)
    assert result.path == "subject" and result.parse_map is None and result.notes == []
    np.testing.assert_array_equal(result.image, area512(white_square(tall)))
    assert result.mask[:, :126].max() == 0 and result.mask[:, 130:382].min() == 1 and result.mask[:, 386:].max() == 0
    with pytest.raises(ValueError, match="no face detector"):
        faces.prepare_reference(tall, None, None)


# ------------------------------------------------------------------------------------------------ input formats

BOX = (178, 74, 261, 157)


def test_grayscale_inputs_match_the_three_channel_image(astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    reference = faces.prepare_reference(np.dstack([gray] * 3), fixed(BOX), None).image
    for variant in (gray, gray[:, :, None]):
        np.testing.assert_array_equal(faces.prepare_reference(variant, fixed(BOX), None).image, reference)


def test_rgba_is_composited_over_white(astronaut):
    alpha = np.full((512, 512, 1), 255, np.uint8)
    alpha[:, :256] = 0
    result = faces.to_rgb_uint8(np.concatenate([astronaut, alpha], axis=2))
    assert (result[:, :256] == 255).all()
    np.testing.assert_array_equal(result[:, 256:], astronaut[:, 256:])
    half = faces.to_rgb_uint8(np.concatenate([astronaut, np.full_like(alpha, 128)], axis=2))  # alpha 128/255
    expected = np.rint(astronaut[:, :256] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(half[:, :256].astype(int) - expected).max() <= 1


def test_sixteen_bit_float_and_torch_inputs_equal_the_uint8_result(astronaut):
    reference = faces.prepare_reference(astronaut, fixed(BOX), None).image
    sixteen = astronaut.astype(np.uint16) * 257
    comfy_image = torch.from_numpy(astronaut).float().div(255)[None]  # ComfyUI IMAGE [1, H, W, 3]
    for variant in (sixteen, astronaut / 255.0, comfy_image, comfy_image.half()):
        result = faces.prepare_reference(variant, fixed(BOX), None).image
        assert np.abs(result.astype(int) - reference).max() <= (1 if variant is not comfy_image else 0)


@pytest.mark.parametrize("bad, message", [
    (np.full((64, 64, 3), 2.0, np.float32), "0..1"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    (np.zeros((64, 64, 3), np.int32), "dtype"),
    (np.zeros((3, 64, 64), np.uint8), "channels last"),
    (np.zeros((4, 4, 3), np.uint8), "too small"),
    (np.zeros((20000, 8, 3), np.uint8), "too large"),
])
def test_bad_inputs_give_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        faces.prepare_reference(bad, fixed(), None)


def test_batches(astronaut):
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    batch = torch.from_numpy(np.stack([astronaut, flipped])).float() / 255
    with pytest.raises(ValueError, match="batch of 2"):
        faces.prepare_reference(batch, fixed(BOX), None)
    results = faces.prepare_reference_batch(batch, fixed(BOX), None)
    assert len(results) == 2
    np.testing.assert_array_equal(results[0].image, faces.prepare_reference(astronaut, fixed(BOX), None).image)
    np.testing.assert_array_equal(results[1].image, faces.prepare_reference(flipped, fixed(BOX), None).image)


def test_tiny_image_without_face_is_padded_and_upscaled():
    tiny = np.zeros((10, 16, 3), np.uint8)
    tiny[:, :8, 1] = 200
    tiny[:, 8:, 0] = 120
    result = faces.prepare_reference(tiny, face_models.cascade_detector(), None)
    assert result.path == "whole_image_no_face" and result.image.shape == (512, 512, 3)
    assert (result.image[:60] == 255).all() and (result.image[256, 128] == (0, 200, 0)).all()
    assert (result.image[256, 384] == (120, 0, 0)).all()


def test_huge_image_detects_on_a_copy_and_crops_at_full_resolution(astronaut, lbp):
    scale = 6
    huge = cv2.resize(astronaut, (512 * scale, 512 * scale), interpolation=cv2.INTER_LINEAR)
    small_box = np.array(faces.prepare_reference(astronaut, lbp, None).face_box)
    sizes = []

    def recording(rgb):
        sizes.append(rgb.shape)
        return lbp(rgb)

    result = faces.prepare_reference(huge, recording, None)
    assert sizes == [(faces.DETECT_MAX_SIDE, faces.DETECT_MAX_SIDE, 3)]
    assert result.path == "face_crop" and result.image.shape == (512, 512, 3)
    assert np.abs(np.array(result.face_box) - small_box * scale).max() <= 12 * scale
    left, top, right, bottom = result.crop_window
    assert right - left > 600, "the crop is cut from the full-resolution image"
