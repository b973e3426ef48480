"""Per-frame face masks for face swap / inpainting: the mask of the official face swap's fallback (window) path.

For every frame (WeChatCV/Stand-In, ``preprocessor/videomask_generator.py``): detect faces and keep the largest;
take the 1.5x window around it (clamped, not padded); resize it to 512 x 512 (INTER_AREA); parse; keep the face
parts (CelebAMask-HQ classes 1..13: skin, brows, eyes, glasses, ears, earring, nose, mouth, lips); dilate with an
elliptic kernel; feather with a Gaussian blur; resize back to the window (INTER_LINEAR) and place it in an
otherwise empty frame mask. A frame without a face gets an empty mask.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from .prepare import (CROP_SCALE, FACE_PART_CLASSES, REFERENCE_SIZE, Detector, Parser, _as_numpy, _parse,
                    detect_faces, select_face, square_crop_window, to_rgb_uint8)

DILATION = 10  # official defaults
FEATHER = 21


def face_part_mask(parse_map: np.ndarray, classes: Sequence[int] = FACE_PART_CLASSES, dilation: int = DILATION,
                   feather: int = FEATHER) -> np.ndarray:
    """Class map [S, S] -> uint8 mask [S, S] (0..255): ``classes`` dilated by an elliptic ``dilation`` x
    ``dilation`` kernel, then blurred by a Gaussian of odd size ``feather`` (an even size is rounded up)."""
    if dilation < 0 or feather < 0:
        raise ValueError(f"dilation ({dilation}) and feather ({feather}) must be >= 0")
    mask = np.isin(parse_map, classes).astype(np.uint8) * 255
    if dilation > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dilation, dilation))
        mask = cv2.dilate(mask, kernel, iterations=1)
    if feather > 0:
        feather += 1 - feather % 2
        mask = cv2.GaussianBlur(mask, (feather, feather), 0)
    return mask


def window_part_mask(rgb: np.ndarray, box, parser: Parser, crop_scale: float = CROP_SCALE, dilation: int = DILATION,
                     feather: int = FEATHER, parse_size: int = REFERENCE_SIZE):
    """The official window mask of one face: its ``crop_scale`` window (clamped), resized to ``parse_size``
    (INTER_AREA), parsed, face parts dilated and feathered, resized back (INTER_LINEAR). Returns the window
    (left, top, right, bottom) and its uint8 mask, or None for an empty window."""
    height, width = rgb.shape[:2]
    left, top, right, bottom = square_crop_window(tuple(int(v) for v in box[:4]), width, height, crop_scale)
    if right - left < 1 or bottom - top < 1:
        return None
    crop = cv2.resize(rgb[top:bottom, left:right], (parse_size, parse_size), interpolation=cv2.INTER_AREA)
    parts = face_part_mask(_parse(parser, crop), dilation=dilation, feather=feather)
    return (left, top, right, bottom), cv2.resize(parts, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)


def face_mask(frame, detector: Detector, parser: Parser, *, dilation: int = DILATION, feather: int = FEATHER,
              crop_scale: float = CROP_SCALE, parse_size: int = REFERENCE_SIZE) -> np.ndarray:
    """One frame (any layout :func:`~standin_core.faces.prepare.to_rgb_uint8` accepts) -> float32 mask [H, W], 0..1."""
    rgb = to_rgb_uint8(frame)
    height, width = rgb.shape[:2]
    mask = np.zeros((height, width), np.float32)
    box = select_face(detect_faces(rgb, detector), -1)
    window = None if box is None else window_part_mask(rgb, box, parser, crop_scale, dilation, feather, parse_size)
    if window is None:
        return mask
    (left, top, right, bottom), parts = window
    mask[top:bottom, left:right] = parts.astype(np.float32) / 255.0
    return mask


def face_masks(frames, detector: Detector, parser: Parser, *, dilation: int = DILATION, feather: int = FEATHER,
               crop_scale: float = CROP_SCALE, progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Frames [F, H, W, C] (or one frame) -> float32 masks [F, H, W] in 0..1, one per frame.

    ``progress(done, total)`` is called after every frame.
    """
    array = _as_numpy(frames)
    if array.ndim in (2, 3):
        array = array[None]
    if array.ndim != 4 or array.shape[0] == 0:
        raise ValueError(f"expected frames [F, H, W, C] with F >= 1, got shape {tuple(array.shape)}")
    masks = np.zeros(array.shape[:3], np.float32)
    for index, frame in enumerate(array):
        masks[index] = face_mask(frame, detector, parser, dilation=dilation, feather=feather, crop_scale=crop_scale)
        if progress is not None:
            progress(index + 1, len(array))
    return masks
