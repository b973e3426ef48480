"""Reference preparation: the photo -> the 512x512 white-background face crop Stand-In was trained on.

The steps of the official FaceProcessor (WeChatCV/Stand-In, ``preprocessor/image_input_preprocessor.py``; where it
differs from the paper, the code wins):

1. detect faces and keep the largest (or the ``face_index``-th counted from the left);
2. border rule: when the box comes within ``border_threshold`` px of all four image borders (the face fills the
   photo), use the whole image;
3. otherwise a window of side ``int(1.5 * max(box w, box h))`` around the box centre, clamped to the image;
4. pad to a square with white (centred), resize to 512 x 512 with ``cv2.INTER_AREA``;
5. face parsing (BiSeNet, CelebAMask-HQ classes): background (class 0) becomes pure white; optionally neck,
   necklace, cloth and hat too (what the official ComfyUI preprocessor removes by default).

No face: the whole image padded to a white square (then parsed, as the official code does), with a warning.
Subject mode (non-human subjects): no detection, no parsing, the whole image padded to a white square.

The detector and the parser are passed in as plain callables (see :data:`Detector`, :data:`Parser`), so this
module needs only numpy and OpenCV; :mod:`standin_core.faces.models` builds them from facexlib or scikit-image.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

log = logging.getLogger("standin")

Detector = Callable[[np.ndarray], np.ndarray]
"""RGB uint8 [H, W, 3] -> float array [N, >=4]: one row per face, (x1, y1, x2, y2[, score, ...]) in pixels."""
Parser = Callable[[np.ndarray], np.ndarray]
"""RGB uint8 [S, S, 3] -> integer class map [S, S] in the CelebAMask-HQ order below."""

# facexlib's BiSeNet: the 19 CelebAMask-HQ classes, in this order.
CELEBAMASK_CLASSES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_glasses", "l_ear", "r_ear",
                      "earring", "nose", "mouth", "u_lip", "l_lip", "neck", "necklace", "cloth", "hair", "hat")
BACKGROUND_CLASSES = (0,)
NECK_CLOTH_HAT_CLASSES = (14, 15, 16, 18)  # neck, necklace, cloth, hat: what the official ComfyUI node also removes
FACE_PART_CLASSES = tuple(range(1, 14))  # skin .. lower lip: the face-swap mask of the official code

REFERENCE_SIZE = 512
CROP_SCALE = 1.5
BORDER_THRESHOLD = 10
BORDER_RULES = ("all", "any")  # "all": official inference code; "any": official ComfyUI preprocessor
DETECT_MAX_SIDE = 1024  # detection runs on a copy at most this large (the official detector works at 640)
REGION_MAX_SIDE = 4096  # larger crops are area-downscaled to this before padding (bounds memory; result ~identical)
MIN_SIDE = 8
MAX_SIDE = 16384
BLANK_FRACTION = 0.995  # an image this much of one colour has nothing to detect (e.g. a 16-bit PNG turned white)
SMALL_FACE = 64  # a face (or a whole image) smaller than this is upscaled more than 8x into the 512 reference
_STRIP_VALUES = 1 << 18  # values converted at a time by to_rgb_uint8 (~1 MB of float32)
WHITE = 255


@dataclass
class PreparedReference:
    """What :func:`prepare_reference` made, with everything a preview needs."""

    image: np.ndarray  # [S, S, 3] uint8 RGB: what the model sees
    mask: np.ndarray  # [S, S] float32 in {0, 1}: 1 where the photo shows, 0 where it was whitened or padded
    resized: np.ndarray  # [S, S, 3] uint8 RGB: the padded square before background removal
    path: str  # "face_crop", "whole_image_border", "whole_image_no_face" or "subject"
    boxes: np.ndarray  # [N, 4] float, every detected face, left to right (input pixels)
    crop_window: tuple[int, int, int, int] = (0, 0, 0, 0)  # (left, top, right, bottom) taken from the input
    face_box: Optional[tuple[int, int, int, int]] = None  # the chosen face (x1, y1, x2, y2), input pixels
    parse_map: Optional[np.ndarray] = None  # [S, S] class map, None when parsing did not run
    notes: list[str] = field(default_factory=list)  # warnings shown to the user
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the input photo

    @property
    def report(self) -> str:
        """One line for the user: what was found and used, then every note (the warnings)."""
        width, height = self.image_size
        found = f"{len(self.boxes)} face{'s' if len(self.boxes) != 1 else ''} found in the {width}x{height} photo"
        if self.path == "subject":
            head = f"subject mode: the whole {width}x{height} image, padded to a white square"
        elif self.path == "face_crop":
            x1, y1, x2, y2 = self.face_box
            left, top, right, bottom = self.crop_window
            head = (f"{found}; using the face at ({x1}, {y1}), {x2 - x1}x{y2 - y1} px, cropped to "
                    f"{right - left}x{bottom - top} and resized to {self.image.shape[1]}x{self.image.shape[0]}")
        else:
            head = f"{found}; using the WHOLE image"
        return ". ".join([head, *self.notes])


# ---------------------------------------------------------------------------------------------------- pixels

def _as_numpy(image) -> np.ndarray:
    if hasattr(image, "detach"):  # a torch tensor, without importing torch here
        image = image.detach().cpu()
        if str(image.dtype) != "torch.uint8":
            image = image.float()
        return image.numpy()
    return np.asarray(image)


def to_rgb_uint8(image) -> np.ndarray:
    """One image (numpy or torch; [H, W], [H, W, C] or [1, H, W, C]) -> RGB uint8 [H, W, 3].

    C may be 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); alpha is composited over white, so a cut-out keeps a
    white background. uint8, uint16 (16-bit PNGs) and float images in 0..1 (ComfyUI's IMAGE) are accepted.
    """
    array = _as_numpy(image)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"expected one image but got a batch of {array.shape[0]}: pick one image from the batch "
                             "(e.g. with 'Get Image from Batch') or use prepare_reference_batch")
        array = array[0]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an image [H, W], [H, W, C] or [1, H, W, C] with C in 1..4, got shape "
                         f"{tuple(array.shape)}: pass channels last (ComfyUI's IMAGE layout)")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"image of {width}x{height} px is too small (at least {MIN_SIDE} px per side): "
                         "use a photo where the face is at least ~64 px wide")
    if max(height, width) > MAX_SIDE:
        raise ValueError(f"image of {width}x{height} px is too large (at most {MAX_SIDE} px per side): "
                         "downscale it first (e.g. with 'Upscale Image By' < 1)")
    if array.dtype == np.uint8 and array.shape[2] in (1, 3):
        values8 = array
    else:  # converted in strips of rows: a huge float IMAGE never gets full-size float temporaries
        if not (array.dtype in (np.uint8, np.uint16, np.bool_) or np.issubdtype(array.dtype, np.floating)):
            raise ValueError(f"unsupported image dtype {array.dtype}: use uint8, uint16 or float in 0..1")
        channels = array.shape[2] - (1 if array.shape[2] in (2, 4) else 0)
        values8 = np.empty((height, width, channels), np.uint8)
        rows = max(1, _STRIP_VALUES // (width * array.shape[2]))
        for top in range(0, height, rows):
            values8[top:top + rows] = _strip_to_uint8(array[top:top + rows])
    if values8.shape[2] == 1:
        values8 = np.repeat(values8, 3, axis=2)
    return np.ascontiguousarray(values8)


def _strip_to_uint8(array: np.ndarray) -> np.ndarray:
    """Some rows of an image in any accepted dtype -> uint8, alpha (the last of 2 or 4 channels) over white."""
    values = _to_unit_float(array)
    if values.shape[2] in (2, 4):  # composite over white
        alpha = values[:, :, -1:]
        values = values[:, :, :-1] * alpha + (1.0 - alpha)
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("image contains NaN or infinite values: check the node that produced it (e.g. a VAE decode "
                         "in half precision, or a math node dividing by zero)")
    low, high = float(values.min()), float(values.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"float image values must lie in 0..1 (ComfyUI's IMAGE range), found {low:.3g}..{high:.3g}: "
                         "divide 0..255 data by 255")
    return np.clip(values, 0.0, 1.0)


def split_batch(images) -> list[np.ndarray]:
    """A batch [B, H, W, C] (or one image) -> a list of RGB uint8 images."""
    array = _as_numpy(images)
    if array.ndim == 4:
        return [to_rgb_uint8(frame) for frame in array]
    return [to_rgb_uint8(array)]


def pad_to_square(image: np.ndarray, value: int = WHITE) -> np.ndarray:
    """Pad [H, W, C] to a square with ``value``, centred (the extra pixel of an odd difference goes right/bottom)."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    before_y, before_x = (side - height) // 2, (side - width) // 2
    out = np.full((side, side) + image.shape[2:], value, dtype=image.dtype)
    out[before_y:before_y + height, before_x:before_x + width] = image
    return out


def _limit_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Area-downscale so the longest side is at most ``max_side``; returns the image and the scale used."""
    longest = max(image.shape[:2])
    if longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


# ---------------------------------------------------------------------------------------------------- faces

def detect_rows(image: np.ndarray, detector, columns: int = 4, max_side: int = DETECT_MAX_SIDE) -> np.ndarray:
    """Run ``detector`` on a copy at most ``max_side`` px; its first ``columns`` columns [N, columns] in input
    pixels: the box (x1, y1, x2, y2), then the score (left as it is) and keypoint coordinates (rescaled)."""
    small, scale = _limit_side(image, max_side)
    raw = np.asarray(detector(small), dtype=np.float64)
    if raw.size == 0:
        return np.zeros((0, columns))
    if raw.ndim != 2 or raw.shape[1] < columns:
        raise ValueError(f"the face detector returned shape {raw.shape}; expected [N, >={columns}] rows "
                         "(x1, y1, x2, y2, ...)")
    rows = raw[:, :columns].copy()
    rows[:, :4] /= scale
    rows[:, 5:] /= scale
    return rows


def detect_faces(image: np.ndarray, detector: Detector, max_side: int = DETECT_MAX_SIDE) -> np.ndarray:
    """Run ``detector`` (on a copy at most ``max_side`` px) and return boxes [N, 4] in input pixels, left to right."""
    boxes = detect_rows(image, detector, 4, max_side)
    return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


def select_face(boxes: np.ndarray, face_index: int = -1) -> Optional[np.ndarray]:
    """The largest box (``face_index`` -1) or the ``face_index``-th from the left; None when there is no box."""
    if len(boxes) == 0:
        return None
    if face_index < 0:
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[int(np.argmax(areas))]
    if face_index >= len(boxes):
        raise ValueError(f"face_index {face_index} is out of range: {len(boxes)} face(s) found. Use "
                         f"0..{len(boxes) - 1} (counted from the left) or -1 for the largest face")
    return boxes[face_index]


def touches_border(box: Sequence[int], width: int, height: int, threshold: int = BORDER_THRESHOLD,
                   rule: str = "all") -> bool:
    """Border rule. "all": the box reaches all four borders (official inference code); "any": one border suffices."""
    x1, y1, x2, y2 = box
    near = (x1 <= threshold, y1 <= threshold, x2 >= width - threshold, y2 >= height - threshold)
    if rule == "all":
        return all(near)
    if rule == "any":
        return any(near)
    raise ValueError(f"border rule {rule!r} is unknown: use one of {BORDER_RULES}")


def square_crop_window(box: Sequence[int], width: int, height: int,
                       scale: float = CROP_SCALE) -> tuple[int, int, int, int]:
    """(left, top, right, bottom): a square of side ``int(scale * max(w, h))`` around the box centre, clamped."""
    x1, y1, x2, y2 = box
    centre_x, centre_y = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) * scale) // 2
    return (max(centre_x - half, 0), max(centre_y - half, 0), min(centre_x + half, width), min(centre_y + half, height))


def removed_classes(remove_neck_cloth_hat: bool = False) -> tuple[int, ...]:
    """Parse classes that become white: background, plus neck/necklace/cloth/hat when asked."""
    return BACKGROUND_CLASSES + (NECK_CLOTH_HAT_CLASSES if remove_neck_cloth_hat else ())


def whiten(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Pixels where ``keep`` is False become pure white. image [H, W, 3] uint8, keep [H, W] bool."""
    return np.where(keep[:, :, None], image, np.uint8(WHITE)).astype(np.uint8)


def blank_fraction(image: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> float:
    """Share of the pixels that have the image's most common colour (on a strided view at most ``max_side``)."""
    step = max(1, -(-max(image.shape[:2]) // max_side))
    pixels = image[::step, ::step].reshape(-1, 3).astype(np.int32)
    _, counts = np.unique((pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2], return_counts=True)
    return float(counts.max()) / len(pixels)


def _parse(parser: Parser, image: np.ndarray) -> np.ndarray:
    parse_map = np.asarray(parser(image))
    if parse_map.shape != image.shape[:2] or not np.issubdtype(parse_map.dtype, np.integer):
        raise ValueError(f"the face parser returned {parse_map.dtype} {parse_map.shape}; expected an integer class "
                         f"map of shape {image.shape[:2]}")
    return parse_map


# ---------------------------------------------------------------------------------------------------- pipeline

def prepare_reference(image, detector: Optional[Detector], parser: Optional[Parser], *, face_index: int = -1,
                      subject_mode: bool = False, remove_neck_cloth_hat: bool = False,
                      size: int = REFERENCE_SIZE, crop_scale: float = CROP_SCALE,
                      border_threshold: int = BORDER_THRESHOLD, border_rule: str = "all") -> PreparedReference:
    """Prepare one photo (any layout :func:`to_rgb_uint8` accepts) into the ``size`` x ``size`` reference.

    ``detector`` may be None only in subject mode. ``parser`` None skips background removal (a note says so).
    """
    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    notes: list[str] = []
    boxes = np.zeros((0, 4))
    face_box, window = None, (0, 0, width, height)
    if subject_mode:
        path, region = "subject", rgb
    else:
        if detector is None:
            raise ValueError("no face detector given: load one (see standin_core.faces.models) or use subject mode")
        boxes = detect_faces(rgb, detector)
        chosen = select_face(boxes, face_index)
        if chosen is None:
            if blank_fraction(rgb) >= BLANK_FRACTION:
                raise ValueError(
                    f"no face found: the reference image ({width}x{height}) is blank ({100 * BLANK_FRACTION:g}% or "
                    "more of its pixels are one colour), so there is no identity to keep. If it came from a 16-bit "
                    "grayscale PNG, ComfyUI's Load Image turns those white: save the photo as an 8-bit PNG or a JPEG")
            path, region = "whole_image_no_face", rgb
            notes.append("no face detected: using the whole image padded to a white square. For a non-human subject "
                         "turn on subject mode; for a person use a photo where the face is visible and frontal")
        else:
            face_box = tuple(int(v) for v in chosen)
            window = square_crop_window(face_box, width, height, crop_scale)
            left, top, right, bottom = window
            if touches_border(face_box, width, height, border_threshold, border_rule):
                path, region, window = "whole_image_border", rgb, (0, 0, width, height)
                notes.append(f"the face reaches {'all four borders' if border_rule == 'all' else 'a border'} of "
                             "the photo, so it is already a face crop (the official rule): the whole image is used")
            elif right - left < 1 or bottom - top < 1:
                path, region, window = "whole_image_no_face", rgb, (0, 0, width, height)
                notes.append(f"the detected face box {face_box} is empty: using the whole image")
            else:
                path, region = "face_crop", rgb[top:bottom, left:right]
    small = face_box is not None and max(face_box[2] - face_box[0], face_box[3] - face_box[1]) < SMALL_FACE
    if small or max(height, width) < SMALL_FACE:
        what = (f"the face is only {face_box[2] - face_box[0]}x{face_box[3] - face_box[1]} px" if small
                else f"the image is only {width}x{height} px")
        notes.append(f"{what}: it is upscaled to {size}x{size}, so the identity will be blurred. Use a photo where "
                     f"the face is at least {SMALL_FACE} px (ideally 256 px or more)")
    region, _ = _limit_side(region, REGION_MAX_SIDE)
    content = pad_to_square(np.ones(region.shape[:2], np.float32), value=0)
    resized = cv2.resize(pad_to_square(region), (size, size), interpolation=cv2.INTER_AREA)
    content = cv2.resize(content, (size, size), interpolation=cv2.INTER_AREA) >= 0.5
    parse_map = None
    if subject_mode:
        keep = content
    elif parser is None:
        keep = content
        notes.append("background removal skipped: no face parser (add parsing_bisenet.pth to models/facexlib)")
    else:
        parse_map = _parse(parser, resized)
        keep = ~np.isin(parse_map, removed_classes(remove_neck_cloth_hat))
    prepared = whiten(resized, keep)
    for note in notes:
        log.warning("Stand-In: %s", note)
    return PreparedReference(image=prepared, mask=(keep & content).astype(np.float32), resized=resized, path=path,
                             boxes=boxes, face_box=face_box, crop_window=window, parse_map=parse_map, notes=notes,
                             image_size=(width, height))


def prepare_reference_batch(images, detector: Optional[Detector], parser: Optional[Parser],
                            **options) -> list[PreparedReference]:
    """:func:`prepare_reference` for every image of a batch [B, H, W, C] (or one image)."""
    return [prepare_reference(image, detector, parser, **options) for image in split_batch(images)]
