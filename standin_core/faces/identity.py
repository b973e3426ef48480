"""How well a video keeps the reference's identity: per-frame face similarity (the FaceSim protocol of OpenS2V-Eval).

Protocol: ``frames`` evenly spaced frames of the video (32 by default; 0 = every frame); in each, the largest face;
aligned with its 5 keypoints; a face-recognition embedding; the cosine to the reference photo's embedding, clamped at
0; averaged over the frames that have a face. Frames without a face are reported as such, never counted as 0.

Backends (an :class:`Embedder` is "RGB uint8 image -> embedding of its largest face, or None"):
  * :func:`dlib_embedder`: dlib's HOG face detector, its 5-point landmarks and its ResNet face descriptor (128-d),
    whose own alignment uses those 5 points. Real weights from the package registry (``dlib-bin``,
    ``face-recognition-models``); nothing is downloaded at run time.
  * :func:`arcface_embedder`: a recognition ONNX on the standard 112 x 112 five-point alignment, keypoints from
    RetinaFace: "arcface", an insightface ArcFace model (antelopev2's glintr100.onnx or buffalo_l's w600k_r50.onnx,
    512-d; non-commercial research licence), or "sface", OpenCV Zoo's SFace (face_recognition_sface_2021dec.onnx,
    128-d, Apache-2.0).

Each backend also says "same person" or not per frame, by its own published operating point (:data:`VERDICTS`):
the FaceSim mean is what papers report; the verdict is what an artist can read.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from .models import install_command
from .prepare import CROP_SCALE, REFERENCE_SIZE, select_face, to_rgb_uint8
from .swap import detect_with_landmarks

DEFAULT_FRAMES = 32
DLIB_PACKAGES = "dlib-bin face-recognition-models"
ONNX_PACKAGES = "onnxruntime"

# The standard ArcFace alignment: where the 5 keypoints (left eye, right eye, nose, left and right mouth corner) of a
# 112 x 112 face crop sit (insightface's arcface_dst).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                             [70.7299, 92.2041]], np.float32)
ARCFACE_SIZE = 112

Embedder = Callable[[np.ndarray], Optional[np.ndarray]]


@dataclass(frozen=True)
class Verdict:
    """A backend's own same/different decision on two embeddings: a Euclidean distance below, or a cosine at or
    above, a published threshold."""

    measure: str  # "distance" or "cosine"
    threshold: float
    source: str

    def value(self, a: np.ndarray, b: np.ndarray) -> float:
        if self.measure == "distance":
            return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
        return cosine(a, b)

    def same(self, value: float) -> bool:
        return value < self.threshold if self.measure == "distance" else value >= self.threshold

    def rule(self) -> str:
        side = "<" if self.measure == "distance" else ">="
        return f"same person when the {self.measure} {side} {self.threshold:g} ({self.source})"


VERDICTS = {
    # dlib's ResNet was trained so that two faces of one person lie within 0.6 of each other (dlib's
    # examples/dnn_face_recognition_ex.cpp; face_recognition's compare_faces tolerance=0.6)
    "dlib": Verdict("distance", 0.6, "dlib's own threshold"),
    # insightface's web demo for buffalo_l: "ARE the same person" from 0.28 (web-demos/src_recognition/main.py)
    "arcface": Verdict("cosine", 0.28, "insightface's demo threshold"),
    # OpenCV Zoo's SFace at its LFW operating point (models/face_recognition_sface/sface.py; OpenCV's DNN face
    # tutorial): cosine 0.363
    "sface": Verdict("cosine", 0.363, "OpenCV's LFW threshold"),
}


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
    """The result: ``mean`` over frames with a face (None when none has one) and one entry per sampled frame; with a
    ``verdict``, the backend's own measure per frame (``decisions``) and whether it says "same person"."""

    frames: list[int]  # indices of the sampled frames
    scores: list[Optional[float]]  # None = no face in that frame
    backend: str
    mean: Optional[float] = None
    verdict: Optional[Verdict] = None
    decisions: list[Optional[float]] = field(default_factory=list)  # the verdict's measure per frame

    @property
    def with_face(self) -> int:
        return sum(score is not None for score in self.scores)

    @property
    def same(self) -> list[Optional[bool]]:
        """Per sampled frame: the backend says "same person" (True) or not (False); None = no face."""
        return [None if value is None else self.verdict.same(value) for value in self.decisions]

    def verdict_line(self) -> str:
        if self.verdict is None or self.mean is None:
            return ""
        same = sum(bool(flag) for flag in self.same)
        return f"same person on {same} of {self.with_face} frames with a face; {self.verdict.rule()}"

    def summary(self) -> str:
        if self.mean is None:
            return f"Stand-In identity ({self.backend}): no face in any of {len(self.frames)} sampled frames"
        scored = [s for s in self.scores if s is not None]
        line = (f"Stand-In identity ({self.backend}, FaceSim protocol): {self.mean:.3f} mean over {self.with_face} of "
                f"{len(self.frames)} sampled frames with a face (min {min(scored):.3f}, max {max(scored):.3f})")
        return f"{line}. {self.verdict_line()}" if self.verdict is not None else line

    def per_frame(self) -> str:
        def entry(frame, score, same):
            if score is None:
                return f"{frame}: no face"
            return f"{frame}: {score:.3f}" + ("" if same is None else " same" if same else " different")
        same = self.same if self.verdict is not None else [None] * len(self.frames)
        return ", ".join(entry(*row) for row in zip(self.frames, self.scores, same))


def score_video(frames, reference, embed: Embedder, sample: int = DEFAULT_FRAMES, backend: str = "",
                progress: Optional[Callable[[int, int], None]] = None) -> IdentityScore:
    """Score ``frames`` [F, H, W, C] (any layout :func:`to_rgb_uint8` takes per frame) against ``reference``; a
    ``backend`` named in :data:`VERDICTS` also gives its same/different decision per frame."""
    target = embed(to_rgb_uint8(reference))
    if target is None:
        raise ValueError("no face found in the reference photo: the score needs a visible face in it")
    verdict = VERDICTS.get(backend)
    indices = sample_indices(len(frames), sample)
    scores, decisions = [], []
    for done, index in enumerate(indices, 1):
        found = embed(to_rgb_uint8(frames[index]))
        scores.append(None if found is None else face_similarity(found, target))
        decisions.append(None if found is None or verdict is None else verdict.value(found, target))
        if progress is not None:
            progress(done, len(indices))
    scored = [s for s in scores if s is not None]
    return IdentityScore(indices, scores, backend, float(np.mean(scored)) if scored else None, verdict,
                         decisions if verdict is not None else [])


@dataclass
class PeopleScore:
    """Several people, one reference each. Person j is the j-th of the N largest faces from the left (N = the number
    of references); a frame counts only when it shows at least N faces (None otherwise). Per counted frame, ``sims``
    holds the FaceSim of face j to reference k [N, N] and ``decisions`` the verdict's measure for the same pairs."""

    frames: list[int]
    sims: list[Optional[np.ndarray]]
    backend: str
    verdict: Optional[Verdict] = None
    decisions: list[Optional[np.ndarray]] = field(default_factory=list)

    @property
    def people(self) -> int:
        return next((len(m) for m in self.sims if m is not None), 0)

    def own(self, person: int) -> list[Optional[float]]:
        """Per frame: person j's face against reference j."""
        return [None if m is None else float(m[person, person]) for m in self.sims]

    def others(self, person: int) -> list[Optional[float]]:
        """Per frame: person j's face against the most alike other reference (identity mixing)."""
        return [None if m is None else float(np.delete(m[person], person).max()) for m in self.sims]

    def same(self, person: int, reference: int) -> list[Optional[bool]]:
        """Per frame: the backend says person j's face is reference k's person."""
        return [None if d is None else self.verdict.same(float(d[person, reference])) for d in self.decisions]

    def mixed(self, person: int) -> list[Optional[bool]]:
        """Per frame: the backend says person j's face is another reference's person."""
        return [None if d is None else any(self.verdict.same(float(d[person, k])) for k in range(len(d)) if k != person)
                for d in self.decisions]

    def mean(self) -> Optional[float]:
        """The people's own-reference FaceSim, averaged over the counted frames and the people; None if none."""
        values = [v for person in range(self.people) for v in self.own(person) if v is not None]
        return float(np.mean(values)) if values else None

    def per_frame(self) -> str:
        def person(j, m, d):
            words = f"person {j + 1} {m[j, j]:.3f} (others {np.delete(m[j], j).max():.3f})"
            if d is None:
                return words
            own = self.verdict.same(float(d[j, j]))
            mixed = any(self.verdict.same(float(d[j, k])) for k in range(len(d)) if k != j)
            return words + (" same" if own else " different") + (" mixed" if mixed else "")
        decisions = self.decisions or [None] * len(self.frames)
        return "; ".join(f"{frame}: " + ("not everyone found" if m is None else
                                          ", ".join(person(j, m, d) for j in range(len(m))))
                         for frame, m, d in zip(self.frames, self.sims, decisions))

    def summary(self) -> str:
        counted = sum(m is not None for m in self.sims)
        head = (f"Stand-In identity of {self.people if counted else 'several'} people ({self.backend}, FaceSim "
                f"protocol): {counted} of {len(self.frames)} sampled frames show them all")
        if not counted:
            return head
        lines = [head]
        for person in range(self.people):
            own = [v for v in self.own(person) if v is not None]
            other = [v for v in self.others(person) if v is not None]
            line = (f"person {person + 1} (from the left): own reference {np.mean(own):.3f}, the most alike other "
                    f"{np.mean(other):.3f}")
            if self.verdict is not None:
                line += (f"; same person on {sum(map(bool, self.same(person, person)))} of {counted} frames, "
                         f"mixed with another reference on {sum(map(bool, self.mixed(person)))}")
            lines.append(line)
        if self.verdict is not None:
            lines.append(self.verdict.rule())
        return "\n".join(lines)


def score_people(frames, references: Sequence, embed: FaceEmbedder, sample: int = DEFAULT_FRAMES,
                 backend: str = "", progress: Optional[Callable[[int, int], None]] = None) -> PeopleScore:
    """Score each person in ``frames`` against their own reference and the others' (see :class:`PeopleScore`):
    reference j is person j from the left. The references are embedded by their largest face."""
    targets = []
    for number, reference in enumerate(references, 1):
        target = embed(to_rgb_uint8(reference))
        if target is None:
            raise ValueError(f"no face found in reference photo {number}: the score needs a visible face in each")
        targets.append(target)
    verdict = VERDICTS.get(backend)
    indices = sample_indices(len(frames), sample)
    sims, decisions = [], []
    for done, index in enumerate(indices, 1):
        faces = embed.people(to_rgb_uint8(frames[index]), len(targets))
        whole = len(faces) == len(targets)
        sims.append(np.array([[face_similarity(face, target) for target in targets] for face in faces])
                    if whole else None)
        if verdict is not None:
            decisions.append(np.array([[verdict.value(face, target) for target in targets] for face in faces])
                             if whole else None)
        if progress is not None:
            progress(done, len(indices))
    return PeopleScore(indices, sims, backend, verdict, decisions)


# ---------------------------------------------------------------------------------------------------- dlib

def dlib_models_folder() -> str:
    """face-recognition-models' data folder, found without importing it (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackendError(f"the dlib backend needs dlib's face models: {install_command(DLIB_PACKAGES)}")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


class FaceEmbedder:
    """An :data:`Embedder` (called on an RGB image: the embedding of its largest face, or None) that can also embed
    several people: :meth:`people`. ``find``: RGB -> one (left edge, area, handle) per face; ``describe``:
    (RGB, handle) -> embedding."""

    def __init__(self, find: Callable, describe: Callable):
        self.find, self.describe = find, describe

    def __call__(self, rgb: np.ndarray) -> Optional[np.ndarray]:
        faces = self.find(rgb)
        if not faces:
            return None
        return self.describe(rgb, max(faces, key=lambda face: face[1])[2])  # the first of equal areas

    def people(self, rgb: np.ndarray, count: int) -> list[np.ndarray]:
        """The embeddings of the ``count`` largest faces, ordered left to right (fewer when fewer are found)."""
        faces = sorted(self.find(rgb), key=lambda face: -face[1])[:count]
        return [self.describe(rgb, handle) for _, _, handle in sorted(faces, key=lambda face: face[0])]


def dlib_embedder(upsample: int = 1) -> FaceEmbedder:
    """dlib's detector, 5-point landmarks and 128-d face descriptor."""
    try:
        import dlib
    except ImportError as error:
        raise MissingBackendError(f"the dlib backend needs dlib: {install_command(DLIB_PACKAGES)}") from error
    folder = dlib_models_folder()
    detect = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(os.path.join(folder, "shape_predictor_5_face_landmarks.dat"))
    describe = dlib.face_recognition_model_v1(os.path.join(folder, "dlib_face_recognition_resnet_model_v1.dat"))

    def find(rgb):
        return [(rect.left(), rect.area(), rect) for rect in detect(np.ascontiguousarray(rgb), upsample)]

    def descriptor(rgb, rect):
        rgb = np.ascontiguousarray(rgb)
        return np.array(describe.compute_face_descriptor(rgb, shape(rgb, rect)))
    return FaceEmbedder(find, descriptor)


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
        raise MissingBackendError(f"the ArcFace backend needs onnxruntime: {install_command(ONNX_PACKAGES)}") from error
    if not os.path.isfile(path):
        raise MissingBackendError(f"ArcFace model file not found: {path}")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1] != 3 or shape[2:] != [ARCFACE_SIZE, ARCFACE_SIZE]:
        raise ValueError(f"{os.path.basename(path)} takes input {shape}; an ArcFace recognition model takes "
                         f"[N, 3, {ARCFACE_SIZE}, {ARCFACE_SIZE}]")
    return session


def arcface_embedder(session, detector: Callable[[np.ndarray], np.ndarray], unit_range: bool = True) -> FaceEmbedder:
    """A recognition model on the aligned faces. ``detector``: RGB -> rows [N, 15] (box, score, 5 keypoints), run on
    a copy at most 1024 px. ``unit_range``: feed RGB scaled to [-1, 1] (insightface's ArcFace models); off: RGB
    0..255, for models that scale inside their graph (OpenCV Zoo's SFace starts with (x - 127.5) * 0.0078125)."""
    input_name = session.get_inputs()[0].name
    offset, scale = (127.5, 1 / 127.5) if unit_range else (0.0, 1.0)

    def find(rgb):
        return [(row[0], (row[2] - row[0]) * (row[3] - row[1]), row) for row in detect_with_landmarks(rgb, detector)]

    def describe(rgb, row):
        crop = align_arcface(rgb, row[5:15].reshape(5, 2))
        blob = ((crop.astype(np.float32) - offset) * scale).transpose(2, 0, 1)[None]  # RGB, NCHW
        return np.asarray(session.run(None, {input_name: blob})[0], np.float64).reshape(-1)
    return FaceEmbedder(find, describe)


# ---------------------------------------------------------------------------------------------------- plot

class _Canvas:
    """The plots' frame: a white picture, score axis 0..1 on the left (with ``distance``, a distance axis on the
    right running down from 0), frames along the bottom."""

    def __init__(self, frames: Sequence[int], width: int, height: int, distance: bool = False):
        self.image = np.full((height, width, 3), 255, np.uint8)
        self.left, self.right, self.top, self.bottom = 60, width - 60, 40, height - 50
        self.last = max(frames[-1], 1) if frames else 1
        cv2.rectangle(self.image, (self.left, self.top), (self.right, self.bottom), (200, 200, 200), 1)
        for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
            cv2.line(self.image, (self.left - 4, self.y_of(tick)), (self.right, self.y_of(tick)), (230, 230, 230), 1)
            self.text(f"{tick:.2f}", (8, self.y_of(tick) + 4), 0.4)
            if distance:
                self.text(f"{1 - tick:.2f}", (self.right + 8, self.y_of(tick) + 4), 0.4, (120, 60, 160))

    def x_of(self, frame) -> int:
        return int(self.left + (self.right - self.left) * frame / self.last)

    def y_of(self, score) -> int:
        return int(self.bottom - (self.bottom - self.top) * score)

    def dashed(self, y: int, color, thickness: int = 2) -> None:
        for x in range(self.left, self.right, 16):
            cv2.line(self.image, (x, y), (min(x + 8, self.right), y), color, thickness)

    def text(self, words: str, at, scale: float = 0.45, color=(80, 80, 80)) -> None:
        cv2.putText(self.image, words, at, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1)

    def series(self, frames, values, color, thickness: int = 2, dots: bool = True) -> None:
        """A line through the values, broken where one is None."""
        previous = None
        for frame, value in zip(frames, values):
            point = None if value is None else (self.x_of(frame), self.y_of(value))
            if point is not None and previous is not None:
                cv2.line(self.image, previous, point, color, thickness)
            if point is not None and dots:
                cv2.circle(self.image, point, 3, color, -1)
            previous = point


PERSON_COLORS = ((40, 90, 200), (30, 150, 60), (150, 60, 170), (170, 110, 40))  # RGB, person 1..4


def plot_people(result: PeopleScore, width: int = 960, height: int = 400) -> np.ndarray:
    """Per person (colour): the FaceSim of their face to their own reference (thick line) and to the most alike
    other reference (thin line: identity mixing; the closer to the thick one, the more the faces mix); frames where
    not every person was found are red ticks; a cosine verdict's threshold is the dashed orange line."""
    canvas = _Canvas(result.frames, width, height)
    for person in range(result.people):
        color = PERSON_COLORS[person % len(PERSON_COLORS)]
        canvas.series(result.frames, result.others(person), color, 1, dots=False)
        canvas.series(result.frames, result.own(person), color, 3)
        canvas.text(f"person {person + 1}", (canvas.right + 4, height - 60 + 14 * person - 14 * result.people), 0.4,
                    color)
    for frame, sims in zip(result.frames, result.sims):
        if sims is None:
            x = canvas.x_of(frame)
            cv2.line(canvas.image, (x, canvas.bottom - 8), (x, canvas.bottom + 8), (220, 30, 30), 2)
    if result.verdict is not None and result.verdict.measure == "cosine":
        y = canvas.y_of(result.verdict.threshold)
        canvas.dashed(y, (240, 130, 0))
        canvas.text(result.verdict.rule(), (canvas.left + 6, y - 6), 0.42, (200, 100, 0))
    canvas.text("thick: own reference; thin: most alike other reference (mixing); red ticks: not everyone found",
                (canvas.left, 24), 0.5, (0, 0, 0))
    canvas.text(f"frame (0..{canvas.last})  backend: {result.backend}", (canvas.left, height - 18))
    return canvas.image


def plot_scores(result: IdentityScore, width: int = 960, height: int = 360) -> np.ndarray:
    """Score against frame as an RGB uint8 picture, drawn with OpenCV: the FaceSim scores (blue; a frame's dot is
    orange where the backend says "different person"), their mean (dashed green), frames without a face (red ticks
    on the axis) and the backend's same-person threshold (dashed orange). A cosine threshold is drawn on the score
    axis; a distance threshold (dlib) on a right-hand distance axis, along with the distances (purple), the axis
    running down from 0 so that up means "more alike" on both."""
    verdict = result.verdict
    by_distance = verdict is not None and verdict.measure == "distance"
    canvas = _Canvas(result.frames, width, height, by_distance)
    if by_distance:  # the distances, on the right-hand axis (1 - distance up)
        canvas.series(result.frames, [None if d is None else max(0.0, 1.0 - d) for d in result.decisions],
                      (150, 90, 200), 1, dots=False)
    canvas.series(result.frames, result.scores, (40, 90, 200), dots=False)  # the line breaks where no face
    same = result.same if verdict is not None else [None] * len(result.frames)
    for frame, score, alike in zip(result.frames, result.scores, same):
        if score is not None:
            cv2.circle(canvas.image, (canvas.x_of(frame), canvas.y_of(score)), 4,
                       (40, 90, 200) if alike is not False else (240, 130, 0), -1)
        else:
            x = canvas.x_of(frame)
            cv2.line(canvas.image, (x, canvas.bottom - 8), (x, canvas.bottom + 8), (220, 30, 30), 2)
    if result.mean is not None:
        canvas.dashed(canvas.y_of(result.mean), (30, 150, 60))
    if verdict is not None:
        y = canvas.y_of(1.0 - verdict.threshold if by_distance else verdict.threshold)
        canvas.dashed(y, (240, 130, 0))
        canvas.text(verdict.rule(), (canvas.left + 6, y - 6), 0.42, (200, 100, 0))
    if result.mean is None:
        title = "no face in any sampled frame"
    else:
        title = (f"identity {result.mean:.3f} (mean, green), {result.with_face}/{len(result.frames)} frames with a "
                 "face; red ticks: no face")
        if verdict is not None:
            title += f"; same person on {sum(bool(flag) for flag in same)} of {result.with_face} (orange: not)"
    canvas.text(title, (canvas.left, 24), 0.5, (0, 0, 0))
    axis = f"frame (0..{canvas.last})  backend: {result.backend}"
    if by_distance:
        axis += "  (purple, right axis: distance)"
    canvas.text(axis, (canvas.left, height - 18))
    return canvas.image


# ---------------------------------------------------------------------------------------------------- picker

# The face's size in the prepared reference (a 512 px square that is 1.5 x the face box): detail finer than this is
# lost when Stand-In prepares the photo, so a larger face earns nothing more.
REFERENCE_FACE_PX = round(REFERENCE_SIZE / CROP_SCALE)
JPEG_BLOCK = 8


@dataclass
class PhotoReport:
    index: int
    face: bool
    face_size: int = 0  # the shorter side of the face box, pixels
    real_px: float = 0.0  # face_size over how often rows and columns repeat (nearest-neighbour upscaling repeats them)
    detail: float = 0.0  # the share of the face's structure finer than half its size (see face_detail)
    blockiness: float = 1.0  # the gradient across the JPEG 8 x 8 grid over the gradient elsewhere (1 = none)
    frontal: float = 0.0  # 1 = level eyes, nose on the eyes' and mouth's midline and centred in the face box
    touches_border: bool = False
    score: float = 0.0

    @property
    def quality(self) -> float:
        """The score's image terms alone, without frontalness: what a degraded copy of a photo loses."""
        return min(1.0, self.real_px / REFERENCE_FACE_PX) * self.detail / max(1.0, self.blockiness) * \
            (0.5 if self.touches_border else 1.0)

    def line(self) -> str:
        if not self.face:
            return f"photo {self.index}: no face"
        return (f"photo {self.index}: face {self.face_size} px ({self.real_px:.0f} real), detail {self.detail:.2f}, "
                f"JPEG blocks {self.blockiness:.2f}, frontal {self.frontal:.2f}"
                f"{', cut by the border' if self.touches_border else ''} -> {self.score:.3f}")


PICKER_RULE = (
    f"score = frontal x min(1, real face px / {REFERENCE_FACE_PX}) x detail / max(1, JPEG blockiness), halved if the "
    "face is cut by the photo border; no face = 0; the highest score wins. Real face px: the face box's shorter side "
    "over how often its rows and columns repeat (an upscaled thumbnail repeats them); "
    f"{REFERENCE_FACE_PX} px is the face's size in the prepared 512 px reference. Detail: the share of the face's "
    "structure finer than half its size (sharp photos 0.3-0.6, upscaled or blurred ones about 0.1-0.2). JPEG "
    "blockiness: the gradient across the 8 x 8 JPEG grid over the gradient elsewhere. Frontal: from the 5 "
    "keypoints, nose on the eyes' and mouth's midline and centred in the face box, eyes level.")


def frontalness(keypoints: np.ndarray, box: Optional[Sequence[float]] = None) -> float:
    """1 for a level, frontal face; less as it turns or tilts: the nose's offset from the midline of the eyes and of
    the mouth corners (relative to the eye distance), the tilt of the eye line, and with ``box`` (x1, y1, x2, y2) the
    nose's offset from the box's centre (relative to its width), which a half-visible face shows."""
    left_eye, right_eye, nose, mouth_left, mouth_right = np.asarray(keypoints, np.float64)
    eyes = np.linalg.norm(right_eye - left_eye)
    if eyes <= 0:
        return 0.0
    midline = ((left_eye + right_eye) / 2 + (mouth_left + mouth_right) / 2) / 2
    turn = abs(nose[0] - midline[0]) / eyes
    tilt = abs(np.arctan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    frontal = max(0.0, 1.0 - 2.0 * turn) * max(0.0, np.cos(tilt))
    if box is not None:
        x1, _, x2, _ = box
        width = x2 - x1
        frontal *= max(0.0, 1.0 - 2.0 * abs(nose[0] - (x1 + x2) / 2) / width) if width > 0 else 0.0
    return float(frontal)


def repetition(crop: np.ndarray) -> float:
    """How many times, on average, each row and column of ``crop`` [H, W(, C)] repeats its neighbour exactly: 1 for a
    photo, about k for one upscaled k times by nearest neighbour (the larger of the row and column figures)."""
    crop = crop.reshape(crop.shape[0], crop.shape[1], -1)
    columns = 1 + np.count_nonzero(np.any(crop[:, 1:] != crop[:, :-1], axis=(0, 2)))
    rows = 1 + np.count_nonzero(np.any(crop[1:] != crop[:-1], axis=(1, 2)))
    return max(crop.shape[1] / columns, crop.shape[0] / rows)


def _restore_error(gray: np.ndarray, fraction: float) -> float:
    """RMS difference between ``gray`` and itself area-downscaled by ``fraction`` and cubic-upscaled back."""
    height, width = gray.shape
    small = cv2.resize(gray, (max(2, round(width * fraction)), max(2, round(height * fraction))),
                       interpolation=cv2.INTER_AREA)
    return float(np.sqrt(np.mean((gray - cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)) ** 2)))


def face_detail(gray: np.ndarray) -> float:
    """The share of a face crop's structure finer than half its size: the RMS error of halving and restoring it over
    that of reducing it to 1/8 and restoring it. Measured at most at :data:`REFERENCE_FACE_PX` (larger crops are
    area-downscaled first, as preparing the reference would). Upscaling adds no detail above the source's
    resolution, whatever the filter, so an upscaled or blurred face scores low; 0 for a flat crop."""
    gray = np.asarray(gray, np.float32)
    size = min(gray.shape)
    if size > REFERENCE_FACE_PX:
        scale = REFERENCE_FACE_PX / size
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    coarse = _restore_error(gray, 1 / 8)
    return _restore_error(gray, 1 / 2) / coarse if coarse > 0 else 0.0


def jpeg_blockiness(gray: np.ndarray, origin: tuple[int, int] = (0, 0)) -> float:
    """Mean absolute gradient across the JPEG 8 x 8 block edges over the mean elsewhere, averaged over x and y;
    ``origin``: where the crop's top-left pixel sits in the photo (the grid is the photo's). 1 = no blocks; a photo
    saved at JPEG quality 20 measures about 1.7-2.9. 1 when the crop is too small to tell."""
    gray = np.asarray(gray, np.float32)
    ratios = []
    for axis, start in ((1, origin[0]), (0, origin[1])):
        steps = np.abs(np.diff(gray, axis=axis)).mean(axis=1 - axis)
        edge = (np.arange(len(steps)) + start) % JPEG_BLOCK == JPEG_BLOCK - 1
        if edge.any() and (~edge).any() and steps[~edge].mean() > 0:
            ratios.append(float(steps[edge].mean() / steps[~edge].mean()))
    return float(np.mean(ratios)) if ratios else 1.0


def report_photo(index: int, rgb: np.ndarray, detector: Callable[[np.ndarray], np.ndarray],
                 border: int = 2) -> PhotoReport:
    """The picker's terms for one photo (see :data:`PICKER_RULE`). ``detector``: RGB -> rows [N, 15] (box, score,
    5 keypoints)."""
    face = select_face(detect_with_landmarks(rgb, detector), -1)  # on a copy at most 1024 px, the largest
    if face is None:
        return PhotoReport(index, False)
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in face[:4])
    cut = x1 <= border or y1 <= border or x2 >= width - border or y2 >= height - border
    left, top = max(x1, 0), max(y1, 0)
    crop = rgb[top:min(y2, height), left:min(x2, width)]
    if min(crop.shape[:2]) < 2:
        return PhotoReport(index, False)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    size = int(min(crop.shape[:2]))
    report = PhotoReport(index, True, size, size / repetition(crop), face_detail(gray),
                         jpeg_blockiness(gray, (left, top)), frontalness(face[5:15].reshape(5, 2), face[:4]), cut)
    report.score = report.frontal * report.quality
    return report


def pick_reference(photos: Sequence, detector: Callable[[np.ndarray], np.ndarray]) -> tuple[int, list[PhotoReport]]:
    """The index of the best photo for Stand-In (see :data:`PICKER_RULE`) and a report per photo."""
    reports = [report_photo(index, to_rgb_uint8(photo), detector) for index, photo in enumerate(photos)]
    best = max(reports, key=lambda report: report.score)
    if not best.face:
        raise ValueError("no face found in any of the photos")
    return best.index, reports
