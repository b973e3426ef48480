"""Reference photos: real photos (tests/data) that are awkward in one way each, through the reference
preparation with the REAL RetinaFace mobile0.25 weights. Face positions are checked against dlib's real HOG detector
(an independent detector), crops against the official recipe restated in tests/support/official_reference.py.
"""
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_standin.standin_core.faces import models as face_models, prepare as faces
from comfyui_standin.standin_core.faces.images import read_image
from comfyui_standin.tests.support.faces import exif_rotated_jpeg, iou
from comfyui_standin.tests.support.official_reference import area512, official_window, white_square

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def detector():
    """The real RetinaFace as a Detector, remembering its answer per image (the tests ask about a photo repeatedly)."""
    import hashlib
    detect = face_models.retinaface_detector(face_models.load_face_detector(DATA, "retinaface_mobile0.25"))
    seen = {}

    def remembered(rgb):
        key = (rgb.shape, hashlib.sha256(np.ascontiguousarray(rgb).data).hexdigest())
        if key not in seen:
            seen[key] = detect(rgb)
        return seen[key].copy()
    return remembered


@pytest.fixture(scope="module")
def hog():
    return dlib.get_frontal_face_detector()


def photo(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)


def dlib_boxes(hog, rgb) -> list:
    """dlib's faces as (left, top, right, bottom), left to right (no upsampling: these faces are over 100 px)."""
    return sorted(((r.left(), r.top(), r.right(), r.bottom()) for r in hog(rgb, 0)), key=lambda box: box[0])


def padded_reference(region):
    """White square, 512 INTER_AREA; without a parser only the padding is white (512 pixels less than half photo)."""
    height, width = region.shape[:2]
    side = max(height, width)
    content = np.zeros((side, side), np.float32)
    content[(side - height) // 2:(side - height) // 2 + height, (side - width) // 2:(side - width) // 2 + width] = 1
    out = area512(white_square(region))
    out[cv2.resize(content, (512, 512), interpolation=cv2.INTER_AREA) < 0.5] = 255
    return out


def expected_crop(rgb, box):
    """The official reference of ``rgb`` around ``box`` without parsing."""
    left, top, right, bottom = official_window(box, rgb.shape[1], rgb.shape[0])
    return padded_reference(rgb[top:bottom, left:right])


# ------------------------------------------------------------------------------------------------ which face

def test_no_face_on_a_real_photo_uses_the_whole_image_with_a_note(detector, hog):
    from skimage import data as skimage_data
    cat = skimage_data.chelsea()  # a real photo of a cat (451 x 300): no human face
    assert dlib_boxes(hog, cat) == [], "dlib agrees: no face"
    result = faces.prepare_reference(cat, detector, None)
    assert result.path == "whole_image_no_face" and result.face_box is None and len(result.boxes) == 0
    assert any("no face detected" in note and "subject mode" in note for note in result.notes)
    np.testing.assert_array_equal(result.image, padded_reference(cat))
    assert (result.image[:80] == 255).all() and (result.image[-80:] == 255).all(), "padded white above and below"


def test_several_real_faces_the_largest_is_taken(detector, hog):
    rgb = photo("obama_and_biden.jpg")  # three faces; Obama's is clearly the largest (for dlib by 1.4x in area)
    theirs = dlib_boxes(hog, rgb)
    largest_theirs = max(theirs, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    result = faces.prepare_reference(rgb, detector, None)
    assert result.path == "face_crop" and len(result.boxes) == len(theirs) == 3
    assert iou(result.face_box, largest_theirs) > 0.5, (result.face_box, largest_theirs)
    np.testing.assert_array_equal(result.image, expected_crop(rgb, result.face_box))


def test_face_index_counts_the_real_faces_from_the_left(detector, hog):
    rgb = photo("obama_and_biden.jpg")  # Biden (left), Obama, and a third face low on the right
    theirs = dlib_boxes(hog, rgb)
    assert len(theirs) == 3
    for index, their_box in enumerate(theirs):
        result = faces.prepare_reference(rgb, detector, None, face_index=index)
        assert iou(result.face_box, their_box) > 0.5, (index, result.face_box, their_box)
        assert result.crop_window == official_window(result.face_box, rgb.shape[1], rgb.shape[0])
    # the third face is the smallest: taken only when asked for by its index
    assert iou(faces.prepare_reference(rgb, detector, None).face_box, theirs[2]) == 0


def test_face_index_out_of_range_names_the_faces_found(detector):
    with pytest.raises(ValueError, match=r"face_index 3 is out of range: 3 face\(s\) found. Use 0..2 .* -1 for the "
                                         r"largest"):
        faces.prepare_reference(photo("obama_and_biden.jpg"), detector, None, face_index=3)


def test_face_cut_by_the_border_is_cropped_and_padded_white(detector, hog):
    rgb = photo("obama_partial_face.jpg")  # 491 x 1137, the face cut by the left border
    (theirs,) = dlib_boxes(hog, rgb)
    assert theirs[0] < 0, "dlib's box runs past the left border: the face really is cut"
    result = faces.prepare_reference(rgb, detector, None)
    x1, y1, x2, y2 = result.face_box
    assert x1 <= faces.BORDER_THRESHOLD and iou(result.face_box, (0, *theirs[1:])) > 0.5
    assert result.path == "face_crop", "one border only: the official code crops (whole image only at all four)"
    left, top, right, bottom = result.crop_window
    assert (left, top, right, bottom) == official_window(result.face_box, 491, 1137) and left == 0
    np.testing.assert_array_equal(result.image, padded_reference(rgb[top:bottom, left:right]))
    pad = ((bottom - top) - (right - left)) // 2 * 512 // (bottom - top)  # white columns at 512 px, each side
    assert pad > 30 and (result.image[:, :pad - 1] == 255).all() and (result.image[:, 512 - pad + 1:] == 255).all()
    assert faces.prepare_reference(rgb, detector, None, border_rule="any").path == "whole_image_border"


# ------------------------------------------------------------------------------------------------ sizes

def test_tiny_photo_is_prepared_with_a_note(detector):
    original = photo("obama_small.jpg")  # 320 x 240
    big_box = faces.prepare_reference(original, detector, None).face_box
    tiny = cv2.resize(original, (64, 48), interpolation=cv2.INTER_AREA)  # 5x smaller: a ~20 px face
    result = faces.prepare_reference(tiny, detector, None)
    assert result.path == "face_crop"
    assert iou(np.array(result.face_box) * 5, big_box) > 0.5, "the same face, found at 1/5 scale"
    width, height = result.face_box[2] - result.face_box[0], result.face_box[3] - result.face_box[1]
    assert max(width, height) < faces.SMALL_FACE
    assert any(f"the face is only {width}x{height} px" in note and "at least 64 px" in note for note in result.notes)
    np.testing.assert_array_equal(result.image, expected_crop(tiny, result.face_box))
    big = faces.prepare_reference(original, detector, None)
    assert not any("only" in note for note in big.notes), "no such note for a face of normal size"


def test_huge_photo_is_detected_on_a_capped_copy_without_a_full_size_copy(detector, hog):
    original = photo("obama.jpg")  # 910 x 1137
    scale = 7.5
    huge = cv2.resize(original, (round(910 * scale), round(1137 * scale)), interpolation=cv2.INTER_LINEAR)
    assert max(huge.shape) > 8000
    seen = []

    def recording(rgb):
        seen.append(rgb.shape)
        return detector(rgb)

    tracemalloc.start()
    try:
        result = faces.prepare_reference(huge, recording, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(seen) == 1 and max(seen[0][:2]) == faces.DETECT_MAX_SIDE, seen
    assert peak < 0.5 * huge.nbytes, f"peak {peak / 1e6:.0f} MB for a {huge.nbytes / 1e6:.0f} MB photo"
    (theirs,) = dlib_boxes(hog, original)
    assert iou(np.array(result.face_box) / scale, theirs) > 0.5, (result.face_box, theirs)
    assert result.path == "face_crop" and result.crop_window[2] - result.crop_window[0] > 3000, "full resolution"
    np.testing.assert_array_equal(result.image, expected_crop(huge, result.face_box))


# Run in a fresh process: the kernel's peak resident set (VmHWM) sees every allocation, torch's and numpy's alike
# (tracemalloc sees only Python's and numpy's). The input is filled in place, so the peak before the call is the
# resident set itself and the peak's growth during the call is what the conversion allocated.
STRIP_PROBE = r"""
import json
import numpy as np
import torch
from comfyui_standin.standin_core.faces.prepare import to_rgb_uint8


def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmHWM", "VmRSS")}


image = torch.empty(1, 5000, 4000, 3)  # 240 MB of float32
image.uniform_(0, 1, generator=torch.Generator().manual_seed(0))
image[0, -1, -1] = torch.tensor([0.0, 1.0, 0.25])  # the last pixel, in the last strip
before = memory()
result = to_rgb_uint8(image)
after = memory()
values = image[0].numpy()  # the naive conversion, 250 rows at a time (cheaper than one full-size temporary)
equal = all(np.array_equal(result[top:top + 250], np.rint(values[top:top + 250] * np.float32(255)).astype(np.uint8))
            for top in range(0, 5000, 250))
print(json.dumps({"before": before, "after": after, "input": image.numel() * 4, "result": result.nbytes,
                  "equal": equal, "last": result[-1, -1].tolist()}))
"""


def test_huge_float_image_is_converted_without_full_size_temporaries(tmp_path):
    """A ComfyUI IMAGE (float32 [1, H, W, 3], 240 MB) becomes uint8 in strips: the process's peak memory grows by
    the uint8 result (60 MB) and a few strips of ~1 MB, never by another full-size copy (60 MB or more)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("the peak resident set is read from /proc (Linux)")
    run = subprocess.run([sys.executable, "-c", STRIP_PROBE], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["input"] == 240_000_000 and got["result"] == 60_000_000
    assert got["before"]["VmHWM"] - got["before"]["VmRSS"] < 8 << 20, "the peak before the call must be its baseline"
    grown = got["after"]["VmHWM"] - got["before"]["VmHWM"]
    assert got["result"] <= grown < got["result"] + (16 << 20), f"peak grew by {grown / 1e6:.0f} MB"
    assert got["equal"] and got["last"] == [0, 255, 64]


# ------------------------------------------------------------------------------------------------ formats

@pytest.mark.parametrize("kind", ["gray", "rgba", "rgba_transparent", "sixteen_bit_gray", "sixteen_bit_rgb",
                                  "exif_rotated"])
def test_photo_files_in_other_formats_give_the_same_reference(kind, detector, tmp_path):
    """Each file written here and read back by the pack's reader (standin_core.faces.images) gives the reference
    of the plain photo it was made from: exactly, or (the JPEG-recompressed EXIF file) the same face."""
    rgb = photo("obama.jpg")
    path = tmp_path / f"{kind}.png"
    if kind == "gray":
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(path), gray)
        expected_source = np.dstack([gray] * 3)
    elif kind == "rgba":
        path = DATA / "32bit.png"  # a real RGBA file (fully opaque)
        rgba = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        expected_source = rgba[:, :, :3]
    elif kind == "rgba_transparent":
        rgba = cv2.cvtColor(cv2.imread(str(DATA / "32bit.png"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        rgba[:, :200, 3] = 0  # a transparent left strip: it must come out white, not the colours hidden under it
        cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        expected_source = rgba[:, :, :3].copy()
        expected_source[:, :200] = 255
    elif kind == "sixteen_bit_gray":  # read as uint16 (PIL mode I;16)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        cv2.imwrite(str(path), gray.astype(np.uint16) * 257)
        expected_source = np.dstack([gray] * 3)
    elif kind == "sixteen_bit_rgb":  # PIL reads 16-bit RGB as 8-bit RGB
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
        expected_source = rgb
    else:
        path = tmp_path / "rotated.jpg"
        exif_rotated_jpeg(path, rgb)
        expected_source = rgb
    loaded = read_image(str(path))
    assert loaded.dtype == (np.uint16 if kind == "sixteen_bit_gray" else np.uint8)
    channels = {"gray": (), "sixteen_bit_gray": (), "rgba": (4,), "rgba_transparent": (4,)}.get(kind, (3,))
    assert loaded.shape[2:] == channels, loaded.shape
    result = faces.prepare_reference(loaded, detector, None)
    expected = faces.prepare_reference(expected_source, detector, None)
    assert result.path == expected.path == "face_crop"
    if kind == "exif_rotated":
        assert loaded.shape == rgb.shape, "read upright"
        assert iou(result.face_box, expected.face_box) > 0.9
        stored = np.asarray(Image.open(path))  # the pixels as stored: turned, the face elsewhere
        assert stored.shape[:2] == rgb.shape[1::-1]
        return
    assert result.face_box == expected.face_box
    np.testing.assert_array_equal(result.image, expected.image)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("layout", ["numpy", "comfy_float32", "comfy_float16"])
def test_nan_or_inf_pixels_are_refused(bad, layout, detector):
    image = photo("obama_small.jpg").astype(np.float32) / 255
    image[-1, -1, 2] = bad  # the very last value: every strip of the conversion is checked
    if layout != "numpy":
        image = torch.from_numpy(image)[None]
        if layout == "comfy_float16":
            image = image.half()
    with pytest.raises(ValueError, match="NaN or infinite values: check the node that produced it"):
        faces.prepare_reference(image, detector, None)


def test_a_blank_image_is_refused_with_the_likely_cause(detector, tmp_path):
    """A 16-bit grayscale PNG converted to RGB the way ComfyUI's Load Image does (PIL 'I;16' -> 'RGB') comes out
    white: no face, and a white reference would keep no identity. The error says so and names the likely cause."""
    gray = cv2.cvtColor(photo("obama_small.jpg"), cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "gray16.png"), gray.astype(np.uint16) * 257)
    with Image.open(tmp_path / "gray16.png") as opened:
        assert opened.mode in ("I;16", "I")
        as_comfyui_reads_it = np.array(opened.convert("RGB"))
    assert (as_comfyui_reads_it == 255).mean() > 0.99
    with pytest.raises(ValueError, match=r"no face found: the reference image \(320x240\) is blank .* 16-bit"):
        faces.prepare_reference(as_comfyui_reads_it, detector, None)
    almost = photo("obama_small.jpg")  # a real photo is far from blank
    assert faces.blank_fraction(almost) < 0.01
    assert faces.prepare_reference(as_comfyui_reads_it, None, None, subject_mode=True).path == "subject"
