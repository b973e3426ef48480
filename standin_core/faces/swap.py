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

Beyond the official code, :func:`plan_fit` and :func:`fit_frames` first fit any video for Wan (a pixel budget,
at most ``max_frames`` frames) and record in a :class:`SwapGeometry` where the frames came from, so that
:mod:`.composite` can put the re-sampled frames back into the original footage.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------------------------------- fit for Wan

FIT_SIZES = {"480p": 832 * 480, "720p": 1280 * 720, "source": None}
"""Pixel budgets (width x height at most) of the fit. 480p is the official Stand-In size (832x480, 81 frames:
pipelines/wan_video.py and wan_video_face_swap.py defaults); "source" keeps the video's own size (the official face
swap: only the crop to multiples of 16)."""
FIT_DEFAULT = "480p"
MAX_FRAMES = 81  # the official num_frames
GRID = 16  # Wan's frames: sides multiples of 16 (VAE x8, patch x2)


@dataclass(frozen=True)
class SwapGeometry:
    """Where the frames handed to Wan came from, so the re-sampled frames can be put back (:mod:`.composite`).

    Wan frame ``i`` is original frame ``first_frame + i``, its rectangle ``crop`` (left, top, width, height, in
    ORIGINAL pixels) resized to ``size`` (width, height)."""
    source_size: tuple[int, int]  # (width, height) of the original frames
    source_frames: int  # how many original frames there were
    crop: tuple[int, int, int, int]  # (left, top, width, height) of the part used, original pixels
    size: tuple[int, int]  # (width, height) of the frames for Wan, multiples of 16 unless the fit was off
    first_frame: int
    frame_count: int

    @property
    def scale(self) -> tuple[float, float]:
        """Wan pixels per original pixel, (x, y): the same up to the rounding of the crop to whole pixels."""
        return self.size[0] / self.crop[2], self.size[1] / self.crop[3]

    @property
    def frames(self) -> range:
        """The original frames used, in order."""
        return range(self.first_frame, self.first_frame + self.frame_count)

    def __str__(self) -> str:
        left, top, width, height = self.crop
        return (f"original frames {self.first_frame}..{self.first_frame + self.frame_count - 1} of "
                f"{self.source_frames}, {self.source_size[0]}x{self.source_size[1]}: the {width}x{height} rectangle "
                f"at ({left}, {top}) scaled x{self.scale[0]:.4g} to {self.size[0]}x{self.size[1]}")


def fit_size(width: int, height: int, max_pixels: Optional[int], multiple: int = GRID) -> tuple[int, int]:
    """The Wan frame size for a ``width`` x ``height`` video: the video scaled (never up) to at most ``max_pixels``
    pixels, each side then rounded down to a multiple of ``multiple``. Exact in integers: the largest side ``s``
    with ``s * s <= side * side * max_pixels / (width * height)`` is ``isqrt(side * max_pixels // other_side)``."""
    fit_w, fit_h = width, height
    if max_pixels is not None and width * height > max_pixels:
        fit_w, fit_h = math.isqrt(width * max_pixels // height), math.isqrt(height * max_pixels // width)
    fit_w, fit_h = min(fit_w, width) // multiple * multiple, min(fit_h, height) // multiple * multiple
    if fit_w < multiple or fit_h < multiple:
        raise ValueError(f"a {width}x{height} video is too small for Wan at this size: each side must keep at least "
                         f"{multiple} pixels (use a larger video or a larger size)")
    return fit_w, fit_h


def plan_fit(frame_count: int, width: int, height: int, *, max_pixels: Optional[int] = FIT_SIZES[FIT_DEFAULT],
             max_frames: int = MAX_FRAMES, first_frame: int = 0, fit: bool = True,
             multiple: int = GRID) -> SwapGeometry:
    """How a video of ``frame_count`` frames of ``width`` x ``height`` is fitted for Wan.

    * size (:func:`fit_size`): within ``max_pixels``, sides multiples of ``multiple``;
    * crop: a video that needs no scaling is centre-cropped to that size (the official crop, pixels untouched);
      a larger one keeps its aspect ratio: the largest centred rectangle of the fitted size's aspect ratio is
      scaled to it, so only the remainder (less than ``multiple`` pixels of the fitted size) is cropped;
    * frames: from ``first_frame``, at most ``max_frames``, then the most of the form 4n + 1 (the official
      ``(F // 4) * 4 + 1`` keeps all F frames when F is a multiple of 4, which is not 4n + 1; here it always is).

    ``fit=False``: everything as it is (all frames, the whole frame, no scaling).
    """
    if frame_count < 1 or width < 1 or height < 1:
        raise ValueError(f"no video to fit: {frame_count} frames of {width}x{height}")
    if not fit:
        return SwapGeometry((width, height), frame_count, (0, 0, width, height), (width, height), 0, frame_count)
    if not 0 <= first_frame < frame_count:
        raise ValueError(f"first_frame {first_frame} is outside the video's {frame_count} frames (0.."
                         f"{frame_count - 1}): lower first_frame")
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    count = min(frame_count - first_frame, max_frames)
    count = (count - 1) // 4 * 4 + 1
    fit_w, fit_h = fit_size(width, height, max_pixels, multiple)
    if max_pixels is None or width * height <= max_pixels:
        crop_w, crop_h = fit_w, fit_h  # no scaling: the official centre crop
    elif width * fit_h >= height * fit_w:  # wider than the fitted size: the full height, the sides cropped
        crop_w, crop_h = min(width, round(height * fit_w / fit_h)), height
    else:  # taller: the full width
        crop_w, crop_h = width, min(height, round(width * fit_h / fit_w))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return SwapGeometry((width, height), frame_count, (left, top, crop_w, crop_h), (fit_w, fit_h), first_frame, count)


def fit_frames(frames, geometry: SwapGeometry) -> np.ndarray:
    """The frames for Wan (RGB uint8 [frame_count, height, width, 3]) as ``geometry`` says: original frames
    ``geometry.frames``, cropped, and area-downscaled where the fit scales. ``frames`` [F, H, W, C] in any layout
    :func:`to_rgb_uint8` accepts per frame (ComfyUI's IMAGE)."""
    count, height, width = len(frames), *tuple(frames[0].shape[:2])
    if (width, height) != geometry.source_size or count != geometry.source_frames:
        raise ValueError(f"these are {count} frames of {width}x{height}, but the fit was planned for "
                         f"{geometry.source_frames} frames of {geometry.source_size[0]}x{geometry.source_size[1]}")
    left, top, crop_w, crop_h = geometry.crop
    out = np.empty((geometry.frame_count, geometry.size[1], geometry.size[0], 3), np.uint8)
    for index, source in enumerate(geometry.frames):
        part = to_rgb_uint8(frames[source])[top:top + crop_h, left:left + crop_w]
        if (crop_w, crop_h) != geometry.size:
            part = cv2.resize(part, geometry.size, interpolation=cv2.INTER_AREA)
        out[index] = part
    return out


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


MAX_PEOPLE = 4  # the most references one paste takes (as Stand-In References)
REGION_GROW = 16  # pixels a person's region reaches past their paste: one token (8x VAE, 2x2 patch)


def _people_faces(found: np.ndarray, people: int, confidence: float) -> np.ndarray:
    """A frame's faces for ``people`` references: the confident ones (score > ``confidence``), the ``people``
    largest of them if there are more, ordered left to right by the centre of their box."""
    faces = found[found[:, 4] > confidence] if len(found) else found
    if len(faces) > people:
        areas = (faces[:, 2] - faces[:, 0]) * (faces[:, 3] - faces[:, 1])
        faces = faces[np.sort(np.argsort(-areas, kind="stable")[:people])]
    return faces[np.argsort((faces[:, 0] + faces[:, 2]) / 2, kind="stable")]


def _centres(faces: np.ndarray) -> np.ndarray:
    return np.stack([(faces[:, 0] + faces[:, 2]) / 2, (faces[:, 1] + faces[:, 3]) / 2], axis=1)


def assign_people(frame_faces: list[np.ndarray], people: int) -> list[list[Optional[np.ndarray]]]:
    """Which face each of ``people`` references goes onto, per frame (None: that person has no face there).

    ``frame_faces``: per frame the faces of :func:`_people_faces` (at most ``people``, left to right). A frame
    showing ``people`` faces: face j from the left is person j. A frame showing fewer (one person left the frame or
    was not detected): each face goes to the person whose face was nearest in the nearest frame in time that shows
    everyone (the earlier one on a tie), the assignment with the least total distance between box centres; without
    any such frame, the faces are persons 1, 2, ... from the left. Persons without a face are None."""
    full = [index for index, faces in enumerate(frame_faces) if len(faces) == people]
    plan = []
    for index, faces in enumerate(frame_faces):
        persons: list[Optional[np.ndarray]] = [None] * people
        if len(faces) == people or not full:
            for person, face in enumerate(faces):
                persons[person] = face
        elif len(faces):
            anchor = _centres(frame_faces[min(full, key=lambda other: (abs(other - index), other))])
            here = _centres(faces)
            cost = np.linalg.norm(here[:, None] - anchor[None], axis=2)  # [faces, people]
            best = min(itertools.permutations(range(people), len(faces)),
                       key=lambda chosen: sum(cost[face, person] for face, person in enumerate(chosen)))
            for face, person in enumerate(best):
                persons[person] = faces[face]
        plan.append(persons)
    return plan


def person_regions(person_masks: np.ndarray, grow: int = REGION_GROW) -> np.ndarray:
    """Per-person paste masks [N, F, H, W] -> regions for Stand-In References, float32 0/1 of the same shape: 1 where
    the paste reached (mask > 0), grown by an ellipse of radius ``grow`` pixels. With ``grow`` 16 every 16 x 16-pixel
    token (Wan: 8x VAE, 2x2 patch) that holds a pasted pixel is at least 3/4 covered in that frame (a quarter of
    the disc around its corner pixel, pi * 16^2 / 4 = 201 of 256 pixels), past the one-half rule of
    :func:`standin_core.regions.token_regions`, so the region takes every token of the pasted face."""
    person_masks = np.asarray(person_masks)
    regions = (person_masks > 0).astype(np.uint8)
    if grow > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        for region in regions.reshape(-1, *regions.shape[-2:]):
            region[...] = cv2.dilate(region, kernel)
    return regions.astype(np.float32)


def _paste_face(frame, cutout, source_points, face, parser, crop_scale, dilation, feather):
    """One cut-out onto one frame face: the warp when the keypoints match, else the window paste."""
    matrix = None
    if source_points is not None:
        matrix = similarity_matrix(source_points, face[5:15].reshape(5, 2))
    if matrix is not None:
        return (*paste_warped(frame, cutout, matrix), "warped")
    if parser is not None:
        return (*paste_in_window(frame, cutout, face[:4], parser, crop_scale, dilation, feather), "window")
    raise ValueError("no keypoint match for this frame and no face parser for the window paste")


def swap_faces(frames, cutout, detector: LandmarkDetector, parser, *, match_angle_and_size: bool = True,
               confidence: float = SWAP_CONFIDENCE, crop_scale: float = CROP_SCALE, dilation: int = DILATION,
               feather: int = FEATHER, crop: bool = True,
               progress: Optional[Callable[[int, int], None]] = None):
    """Paste the reference cut-out onto every frame; or several cut-outs, one per person.

    ``frames`` [F, H, W, C] (any layout :func:`to_rgb_uint8` accepts per frame); ``crop`` applies
    :func:`crop_and_trim` first. ``parser`` is needed only for the window paste.

    One cut-out (an RGBA array): the official face swap, onto each frame's largest face if its score is above
    ``confidence``. Returns the frames (uint8 [F', H', W', 3]), the masks (float32 [F', H', W'] in 0..1) and one
    word per frame: "warped", "window", "no_face".

    Several cut-outs (a list or tuple of 1 to 4 RGBA arrays, person j = cut-out j; this pack's own): per frame, the
    confident faces (score above ``confidence``; the largest ones if there are more faces than cut-outs) are
    ordered left to right by their box centre, and a frame showing as many faces as there are cut-outs gets
    cut-out j on face j from the left (so with one cut-out: the largest confident face). The order is the order on
    screen, not a tracked identity: where two people swap sides, their faces swap references. A frame showing fewer
    faces: each face goes to the person whose face was nearest in the nearest frame showing everyone
    (:func:`assign_people`); the others are "no_face" there, with an empty mask. Overlapping pastes: the later
    person's face is on top. Returns the frames, the union of the masks (float32 [F', H', W'], the largest of the
    persons' masks per pixel), the persons' masks (float32 [N, F', H', W']) and per frame one word per person.
    To bind a reference to another person, put the cut-outs in that order.
    """
    several = isinstance(cutout, (list, tuple))
    cutouts = list(cutout) if several else [cutout]
    if not 1 <= len(cutouts) <= MAX_PEOPLE:
        raise ValueError(f"swap_faces takes 1 to {MAX_PEOPLE} cut-outs, got {len(cutouts)}")
    array = np.stack([to_rgb_uint8(frame) for frame in frames])
    if crop:
        array = crop_and_trim(array)
    sources = [reference_keypoints(one, detector) if match_angle_and_size else None for one in cutouts]
    out = np.empty_like(array)
    people = np.zeros((len(cutouts), *array.shape[:3]), np.float32)
    how = []
    found = [] if several else None
    if several:  # every frame's faces first: a frame missing someone is matched to a frame showing everyone
        for frame in array:
            found.append(_people_faces(detect_with_landmarks(frame, detector), len(cutouts), confidence))
        plan = assign_people(found, len(cutouts))
    for index, frame in enumerate(array):
        if several:
            chosen = plan[index]
        else:  # the official rule: the largest face, if confident
            face = select_face(detect_with_landmarks(frame, detector), -1)
            chosen = [face if face is not None and face[4] > confidence else None]
        pasted, kinds = frame, []
        for person, face in enumerate(chosen):
            if face is None:
                kinds.append("no_face")
                continue
            pasted, mask, kind = _paste_face(pasted, cutouts[person], sources[person], face, parser, crop_scale,
                                             dilation, feather)
            people[person, index] = mask.astype(np.float32) / 255.0
            kinds.append(kind)
        out[index] = pasted
        how.append(kinds if several else kinds[0])
        if progress is not None:
            progress(index + 1, len(array))
    if not several:
        return out, people[0], how
    return out, people.max(axis=0), people, how
