"""Face swap the official Stand-In way: paste the reference face onto every frame, then sample video-to-video.

WeChatCV/Stand-In, ``preprocessor/videomask_generator.py`` (``VideoMaskGenerator.process``), which this module
follows step by step (line numbers of that file):
  * the video is centre-cropped to multiples of 16 and trimmed to 4n + 1 frames (l. 102-111);
  * the reference is the prepared 512 x 512 crop as an RGBA cut-out whose alpha is "parse class != background"
    (``preprocessor/image_input_preprocessor.py`` l. 163-177), and its 5 keypoints come from the highest-scoring face
    the detector finds on that cut-out (l. 128-137);
  * per frame: the largest detected face, kept only if its score > ``confidence`` (l. 150-158);
  * "match angle and size" (default): a similarity transform from the reference's 5 keypoints to the frame face's,
    ``cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)``, warps the cut-out's RGB and alpha onto the frame, which
    is alpha-blended there; the frame's mask is the warped alpha (l. 160-182);
  * otherwise, or when no transform is found: the cut-out resized (Lanczos) into the 1.5x face window is pasted
    through the frame face's parse mask (classes 1..13, elliptic dilation, Gaussian feather), which is also the
    frame's mask (l. 185-233);
  * frames without a (confident) face stay as they are, with an empty mask.
The official code detects with insightface's antelopev2 (SCRFD boxes and 5 keypoints); here the detector is
facexlib's RetinaFace, which gives the same five points (eyes, nose, mouth corners) in the same order.
"""
from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np

from .masks import DILATION, FEATHER, window_part_mask
from .prepare import CROP_SCALE, DETECT_MAX_SIDE, PreparedReference, detect_rows, select_face, to_rgb_uint8

SWAP_CONFIDENCE = 0.5  # official confidence_threshold

LandmarkDetector = Callable[[np.ndarray], np.ndarray]
"""RGB uint8 [H, W, 3] -> [N, 15]: x1, y1, x2, y2, score, then the 5 keypoints (x, y) in pixels."""


def crop_and_trim(frames: np.ndarray, multiple: int = 16) -> np.ndarray:
    """[F, H, W, C] -> the centre crop whose sides are multiples of ``multiple``, first 4n + 1 frames."""
    count, height, width = frames.shape[:3]
    new_h, new_w = (height // multiple) * multiple, (width // multiple) * multiple
    if new_h < multiple or new_w < multiple or count < 1:
        raise ValueError(f"frames of {width}x{height} are too small for a {multiple}-pixel grid (or no frames)")
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return frames[: (count // 4) * 4 + 1, top:top + new_h, left:left + new_w]


def face_cutout(prepared: PreparedReference) -> np.ndarray:
    """The reference as the official face swap pastes it: the 512 x 512 crop before the background was whitened,
    RGBA with alpha 255 where the face parser saw anything but background (hair, neck and clothes included).
    Without a parse (subject mode, or no parser) the alpha is the photo's own area."""
    if prepared.parse_map is not None:
        alpha = prepared.parse_map != 0
    else:
        alpha = prepared.mask > 0.5
    return np.dstack([prepared.resized, alpha.astype(np.uint8) * 255])


def detect_with_landmarks(rgb: np.ndarray, detector: LandmarkDetector, max_side: int = DETECT_MAX_SIDE) -> np.ndarray:
    """``detector`` on a copy at most ``max_side`` px; rows [N, 15] (box, score, 5 keypoints) in ``rgb``'s pixels."""
    return detect_rows(rgb, detector, 15, max_side)


def reference_keypoints(cutout: np.ndarray, detector: LandmarkDetector) -> Optional[np.ndarray]:
    """The 5 keypoints [5, 2] of the highest-scoring face on the cut-out's RGB, or None when there is none."""
    found = detect_with_landmarks(np.ascontiguousarray(cutout[..., :3]), detector)
    if len(found) == 0:
        return None
    return found[int(np.argmax(found[:, 4])), 5:15].reshape(5, 2)


def similarity_matrix(source_points: np.ndarray, target_points: np.ndarray) -> Optional[np.ndarray]:
    """The official partial-affine (rotation, uniform scale, translation) fit, LMEDS, [2, 3], or None."""
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(source_points, np.float32),
                                            np.asarray(target_points, np.float32), method=cv2.LMEDS)
    return matrix


def paste_warped(frame: np.ndarray, cutout: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp the cut-out's RGB and alpha by ``matrix`` onto ``frame`` and alpha-blend; (frame, mask uint8)."""
    height, width = frame.shape[:2]
    warped = cv2.warpAffine(np.ascontiguousarray(cutout[..., :3]), matrix, (width, height))
    alpha = cv2.warpAffine(np.ascontiguousarray(cutout[..., 3]), matrix, (width, height))
    weight = alpha.astype(np.float32)[..., None] / 255.0
    return ((1.0 - weight) * frame + weight * warped).astype(np.uint8), alpha


def paste_in_window(frame: np.ndarray, cutout: np.ndarray, box, parser, crop_scale: float = CROP_SCALE,
                    dilation: int = DILATION, feather: int = FEATHER) -> tuple[np.ndarray, np.ndarray]:
    """The official fallback: the cut-out resized into the face window, pasted through the frame's face parse mask."""
    from PIL import Image
    mask = np.zeros(frame.shape[:2], np.uint8)
    window = window_part_mask(frame, box, parser, crop_scale, dilation, feather)
    if window is None:
        return frame, mask
    (left, top, right, bottom), parts = window
    resized = Image.fromarray(cutout, "RGBA").resize((right - left, bottom - top), Image.Resampling.LANCZOS)
    pasted = Image.fromarray(frame)
    pasted.paste(resized, (left, top), mask=Image.fromarray(parts, "L"))
    mask[top:bottom, left:right] = parts
    return np.array(pasted), mask


def swap_faces(frames, cutout: np.ndarray, detector: LandmarkDetector, parser, *, match_angle_and_size: bool = True,
               confidence: float = SWAP_CONFIDENCE, crop_scale: float = CROP_SCALE, dilation: int = DILATION,
               feather: int = FEATHER, crop: bool = True,
               progress: Optional[Callable[[int, int], None]] = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Paste the reference cut-out onto every frame.

    ``frames`` [F, H, W, C] (any layout :func:`to_rgb_uint8` accepts per frame); ``crop`` applies
    :func:`crop_and_trim` first. Returns the frames (uint8 [F', H', W', 3]), the masks (float32 [F', H', W'] in
    0..1) and one word per frame: "warped", "window", "no_face". ``parser`` is needed only for the window paste.
    """
    array = np.stack([to_rgb_uint8(frame) for frame in frames])
    if crop:
        array = crop_and_trim(array)
    source_points = reference_keypoints(cutout, detector) if match_angle_and_size else None
    out = np.empty_like(array)
    masks = np.zeros(array.shape[:3], np.float32)
    how = []
    for index, frame in enumerate(array):
        found = detect_with_landmarks(frame, detector)
        pasted, mask, kind = frame, None, "no_face"
        face = select_face(found, -1)
        if face is not None:
            if face[4] > confidence:
                matrix = None
                if source_points is not None:
                    matrix = similarity_matrix(source_points, face[5:15].reshape(5, 2))
                if matrix is not None:
                    (pasted, mask), kind = paste_warped(frame, cutout, matrix), "warped"
                elif parser is not None:
                    (pasted, mask), kind = paste_in_window(frame, cutout, face[:4], parser, crop_scale, dilation,
                                                          feather), "window"
                else:
                    raise ValueError("no keypoint match for this frame and no face parser for the window paste")
        out[index] = pasted
        if mask is not None:
            masks[index] = mask.astype(np.float32) / 255.0
        how.append(kind)
        if progress is not None:
            progress(index + 1, len(array))
    return out, masks, how
