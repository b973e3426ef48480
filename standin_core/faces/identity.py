"""How well a video keeps the reference's identity: per-frame face similarity (the FaceSim protocol of OpenS2V-Eval).

Protocol: ``frames`` evenly spaced frames of the video (32 by default; 0 = every frame); in each, the largest face;
aligned with its 5 keypoints; a face-recognition embedding; the cosine to the reference photo's embedding, clamped at
0; averaged over the frames that have a face. Frames without a face are reported as such, never counted as 0.

Backends (an :class:`Embedder` is "RGB uint8 image -> embedding of its largest face, or None"):
  * :func:`dlib_embedder`: dlib's HOG face detector, its 5-point landmarks and its ResNet face descriptor (128-d),
    whose own alignment uses those 5 points. Real weights from the package registry (``dlib-bin``,
    ``face-recognition-models``); nothing is downloaded at run time.
  * :func:`arcface_embedder`: an insightface ArcFace recognition ONNX (e.g. antelopev2's glintr100.onnx or
    buffalo_l's w600k_r50.onnx, 512-d) on the standard 112 x 112 five-point alignment, keypoints from any
    :data:`LandmarkDetector` (the pack's RetinaFace). Those weights are for non-commercial research only.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from .prepare import select_face, to_rgb_uint8
from .swap import detect_with_landmarks

DEFAULT_FRAMES = 32
DLIB_INSTALL = "pip install dlib-bin face-recognition-models"
ONNX_INSTALL = "pip install onnxruntime"

# The standard ArcFace alignment: where the 5 keypoints (left eye, right eye, nose, left and right mouth corner) of a
# 112 x 112 face crop sit (insightface's arcface_dst).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], np.float32)
ARCFACE_SIZE = 112

Embedder = Callable[[np.ndarray], Optional[np.ndarray]]


class MissingBackendError(RuntimeError):
    """A scoring backend's package or weight file is not installed; the message says what to install or where."""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def face_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The protocol's per-frame score: the cosine of two embeddings, clamped at 0."""
    return max(0.0, cosine(a, b))


def sample_indices(count: int, frames: int = DEFAULT_FRAMES) -> list[int]:
    """``frames`` evenly spaced frame indices of a ``count``-frame video (first and last included); 0 = all."""
    if count < 1:
        raise ValueError("the video has no frames")
    if frames <= 0 or frames >= count:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, frames)})


@dataclass
class IdentityScore:
    """The result: ``mean`` over frames with a face (None when none has one) and one entry per sampled frame."""

    frames: list[int]  # indices of the sampled frames
    scores: list[Optional[float]]  # None = no face in that frame
    backend: str
    mean: Optional[float] = None

    @property
    def with_face(self) -> int:
        return sum(score is not None for score in self.scores)

    def summary(self) -> str:
        if self.mean is None:
            return f"Stand-In identity ({self.backend}): no face in any of {len(self.frames)} sampled frames"
        scored = [s for s in self.scores if s is not None]
        return (f"Stand-In identity ({self.backend}, FaceSim protocol): {self.mean:.3f} mean over {self.with_face} of "
                f"{len(self.frames)} sampled frames with a face (min {min(scored):.3f}, max {max(scored):.3f})")

    def per_frame(self) -> str:
        return ", ".join(f"{frame}: {'no face' if score is None else f'{score:.3f}'}"
                         for frame, score in zip(self.frames, self.scores))


def score_video(frames, reference, embed: Embedder, sample: int = DEFAULT_FRAMES, backend: str = "",
                progress: Optional[Callable[[int, int], None]] = None) -> IdentityScore:
    """Score ``frames`` [F, H, W, C] (any layout :func:`to_rgb_uint8` takes per frame) against ``reference``."""
    target = embed(to_rgb_uint8(reference))
    if target is None:
        raise ValueError("no face found in the reference photo: the score needs a visible face in it")
    indices = sample_indices(len(frames), sample)
    scores = []
    for done, index in enumerate(indices, 1):
        found = embed(to_rgb_uint8(frames[index]))
        scores.append(None if found is None else face_similarity(found, target))
        if progress is not None:
            progress(done, len(indices))
    scored = [s for s in scores if s is not None]
    return IdentityScore(indices, scores, backend, float(np.mean(scored)) if scored else None)


# ---------------------------------------------------------------------------------------------------- dlib

def dlib_models_folder() -> str:
    """face-recognition-models' data folder, found without importing it (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackendError(f"the dlib backend needs dlib's face models: {DLIB_INSTALL}")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def dlib_embedder(upsample: int = 1) -> Embedder:
    """dlib's detector (largest face), 5-point landmarks and 128-d face descriptor."""
    try:
        import dlib
    except ImportError as error:
        raise MissingBackendError(f"the dlib backend needs dlib: {DLIB_INSTALL}") from error
    folder = dlib_models_folder()
    detect = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(os.path.join(folder, "shape_predictor_5_face_landmarks.dat"))
    describe = dlib.face_recognition_model_v1(os.path.join(folder, "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(rgb: np.ndarray) -> Optional[np.ndarray]:
        rgb = np.ascontiguousarray(rgb)
        found = detect(rgb, upsample)
        if not found:
            return None
        face = max(found, key=lambda rect: rect.area())
        return np.array(describe.compute_face_descriptor(rgb, shape(rgb, face)))
    return embed


# ---------------------------------------------------------------------------------------------------- ArcFace

def arcface_matrix(keypoints: np.ndarray) -> np.ndarray:
    """The similarity transform [2, 3] that takes a face's 5 keypoints onto :data:`ARCFACE_TEMPLATE`: rotation,
    uniform scale and translation fitted by least squares (Umeyama's closed form, as insightface aligns)."""
    src = np.asarray(keypoints, np.float64)
    dst = ARCFACE_TEMPLATE.astype(np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    variance = (src_c ** 2).sum() / len(src)
    if variance <= 0:
        raise ValueError("the 5 keypoints coincide: no similarity transform")
    u, singular, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ sign @ vt
    scale = (singular * np.diag(sign)).sum() / variance
    return np.hstack([scale * rotation, (dst_mean - scale * rotation @ src_mean)[:, None]])


def align_arcface(rgb: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """The 112 x 112 ArcFace crop of the face with these 5 keypoints."""
    return cv2.warpAffine(rgb, arcface_matrix(keypoints), (ARCFACE_SIZE, ARCFACE_SIZE), borderValue=0.0)


def load_onnx(path: str):
    """An onnxruntime session for a recognition model [1, 3, 112, 112] float32 -> [1, D]."""
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingBackendError(f"the ArcFace backend needs onnxruntime: {ONNX_INSTALL}") from error
    if not os.path.isfile(path):
        raise MissingBackendError(f"ArcFace model file not found: {path}")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1] != 3 or shape[2:] != [ARCFACE_SIZE, ARCFACE_SIZE]:
        raise ValueError(f"{os.path.basename(path)} takes input {shape}; an ArcFace recognition model takes "
                         f"[N, 3, {ARCFACE_SIZE}, {ARCFACE_SIZE}]")
    return session


def arcface_embedder(session, detector: Callable[[np.ndarray], np.ndarray]) -> Embedder:
    """ArcFace on the aligned largest face. ``detector``: RGB -> rows [N, 15] (box, score, 5 keypoints)."""
    input_name = session.get_inputs()[0].name

    def embed(rgb: np.ndarray) -> Optional[np.ndarray]:
        face = select_face(detect_with_landmarks(rgb, detector), -1)  # on a copy at most 1024 px, the largest
        if face is None:
            return None
        crop = align_arcface(rgb, face[5:15].reshape(5, 2))
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]  # RGB, NCHW, [-1, 1]
        return np.asarray(session.run(None, {input_name: blob})[0], np.float64).reshape(-1)
    return embed


# ---------------------------------------------------------------------------------------------------- plot

def plot_scores(result: IdentityScore, width: int = 960, height: int = 360) -> np.ndarray:
    """Score against frame as an RGB uint8 picture: the scores, their mean (dashed), frames without a face (red
    ticks on the axis), drawn with OpenCV."""
    image = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, width - 20, 40, height - 50
    last = max(result.frames[-1], 1) if result.frames else 1

    def x_of(frame):
        return int(left + (right - left) * frame / last)

    def y_of(score):
        return int(bottom - (bottom - top) * score)

    cv2.rectangle(image, (left, top), (right, bottom), (200, 200, 200), 1)
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        cv2.line(image, (left - 4, y_of(tick)), (right, y_of(tick)), (230, 230, 230), 1)
        cv2.putText(image, f"{tick:.2f}", (8, y_of(tick) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1)
    previous = None
    for frame, score in zip(result.frames, result.scores):  # the line breaks where a frame has no face
        point = None if score is None else (x_of(frame), y_of(score))
        if point is not None:
            cv2.circle(image, point, 3, (40, 90, 200), -1)
            if previous is not None:
                cv2.line(image, previous, point, (40, 90, 200), 2)
        previous = point
    for frame, score in zip(result.frames, result.scores):
        if score is None:
            cv2.line(image, (x_of(frame), bottom - 8), (x_of(frame), bottom + 8), (220, 30, 30), 2)
    if result.mean is not None:
        y = y_of(result.mean)
        for x in range(left, right, 16):
            cv2.line(image, (x, y), (min(x + 8, right), y), (30, 150, 60), 2)
    title = (f"identity {result.mean:.3f} (mean, green), {result.with_face}/{len(result.frames)} frames with a face; "
             f"red ticks: no face" if result.mean is not None else "no face in any sampled frame")
    cv2.putText(image, title, (left, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(image, f"frame (0..{last})  backend: {result.backend}", (left, height - 18), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (80, 80, 80), 1)
    return image


# ---------------------------------------------------------------------------------------------------- picker

@dataclass
class PhotoReport:
    index: int
    face: bool
    face_size: int = 0  # the shorter side of the face box, pixels
    sharpness: float = 0.0  # variance of the Laplacian of the face, resized to 128 px
    frontal: float = 0.0  # 1 = eyes level and nose centred between eyes and mouth corners
    touches_border: bool = False
    score: float = 0.0

    def line(self) -> str:
        if not self.face:
            return f"photo {self.index}: no face"
        return (f"photo {self.index}: face {self.face_size} px, sharpness {self.sharpness:.0f}, frontal "
                f"{self.frontal:.2f}{', cut by the border' if self.touches_border else ''} -> {self.score:.3f}")


PICKER_RULE = ("score = frontal x min(1, face px / 256) x min(1, sharpness / 100), halved if the face is cut by the "
               "photo border; no face = 0. The photo with the highest score wins.")


def frontalness(keypoints: np.ndarray) -> float:
    """1 for a level, frontal face; less as it turns or tilts: the nose's offset from the midline of the eyes and of
    the mouth corners (relative to the eye distance), and the tilt of the eye line."""
    left_eye, right_eye, nose, mouth_left, mouth_right = np.asarray(keypoints, np.float64)
    eyes = np.linalg.norm(right_eye - left_eye)
    if eyes <= 0:
        return 0.0
    midline = ((left_eye + right_eye) / 2 + (mouth_left + mouth_right) / 2) / 2
    turn = abs(nose[0] - midline[0]) / eyes
    tilt = abs(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    return float(max(0.0, 1.0 - 2.0 * turn) * max(0.0, np.cos(tilt)))


def report_photo(index: int, rgb: np.ndarray, detector: Callable[[np.ndarray], np.ndarray],
                 border: int = 2) -> PhotoReport:
    """``detector``: RGB -> rows [N, 15] (box, score, 5 keypoints)."""
    face = select_face(detect_with_landmarks(rgb, detector), -1)  # on a copy at most 1024 px, the largest
    if face is None:
        return PhotoReport(index, False)
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in face[:4])
    cut = x1 <= border or y1 <= border or x2 >= width - border or y2 >= height - border
    crop = rgb[max(y1, 0):min(y2, height), max(x1, 0):min(x2, width)]
    if crop.size == 0:
        return PhotoReport(index, False)
    gray = cv2.cvtColor(cv2.resize(crop, (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    size = int(min(x2 - x1, y2 - y1))
    frontal = frontalness(face[5:15].reshape(5, 2))
    score = frontal * min(1.0, size / 256) * min(1.0, sharpness / 100) * (0.5 if cut else 1.0)
    return PhotoReport(index, True, size, sharpness, frontal, cut, score)


def pick_reference(photos: Sequence, detector: Callable[[np.ndarray], np.ndarray]) -> tuple[int, list[PhotoReport]]:
    """The index of the best photo for Stand-In (see :data:`PICKER_RULE`) and a report per photo."""
    reports = [report_photo(index, to_rgb_uint8(photo), detector) for index, photo in enumerate(photos)]
    best = max(reports, key=lambda report: report.score)
    if not best.face:
        raise ValueError("no face found in any of the photos")
    return best.index, reports
