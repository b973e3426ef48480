"""StandInIdentityScore (how well a video keeps the reference's identity) and StandInPickReference (which photo).

The work is in standin_core.faces.identity; this module picks the backend, finds its weights and converts types.
"""
import logging
import os
from typing import Optional

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..standin_core.faces import identity
from ..standin_core.faces import models as face_models
from .faces import _detector_input, _download_input, _facexlib_models, _progress
from .paths import INSIGHTFACE_FOLDER

log = logging.getLogger("standin")

# The recognition models each ONNX backend looks for in models/insightface: the usual files first, then any .onnx
# whose name says which kind it is.
MODEL_FILES = {"arcface": ("antelopev2/glintr100.onnx", "buffalo_l/w600k_r50.onnx"),
               "sface": ("face_recognition_sface_2021dec.onnx",)}
MODEL_NAME_HINTS = {"arcface": ("glintr", "w600k", "arcface"), "sface": ("sface",)}
MODEL_HELP = {
    "arcface": "an insightface recognition model (antelopev2/glintr100.onnx or buffalo_l/w600k_r50.onnx; "
               "non-commercial research licence)",
    "sface": "OpenCV Zoo's SFace, face_recognition_sface_2021dec.onnx (Apache-2.0), from "
             "https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
}


def recognition_files(backend: Optional[str] = None) -> list[str]:
    """Recognition models found in models/insightface (where other face packs keep them), for one ONNX backend or
    for all of them."""
    found = []
    for kind in ([backend] if backend else MODEL_FILES):
        for folder in folder_paths.get_folder_paths(INSIGHTFACE_FOLDER):
            for name in MODEL_FILES[kind]:
                if os.path.isfile(os.path.join(folder, name)) and name not in found:
                    found.append(name)
            for root, _, files in os.walk(folder):
                for file in files:
                    relative = os.path.relpath(os.path.join(root, file), folder).replace(os.sep, "/")
                    if file.endswith(".onnx") and any(hint in file for hint in MODEL_NAME_HINTS[kind]) \
                            and relative not in found:
                        found.append(relative)
    return found


def _model_path(backend: str, name: str) -> str:
    for folder in folder_paths.get_folder_paths(INSIGHTFACE_FOLDER):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    folders = ", ".join(folder_paths.get_folder_paths(INSIGHTFACE_FOLDER))
    raise identity.MissingBackendError(
        f"{backend} model '{name}' not found. Put {MODEL_HELP[backend]} in one of: {folders}")


def _embedder(backend: str, model: str, detector: str, allow_download: bool):
    if backend == "dlib":
        return identity.dlib_embedder()
    if not model:
        found = recognition_files(backend)
        model = found[0] if found else MODEL_FILES[backend][0]  # a missing file raises, naming it and the folders
    session = identity.load_onnx(_model_path(backend, model))
    (detector_model,) = _facexlib_models([detector], allow_download)
    return identity.arcface_embedder(session, face_models.retinaface_detector(detector_model, landmarks=True),
                                     unit_range=backend == "arcface")


class StandInIdentityScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInIdentityScore",
            display_name="Stand-In Identity Score",
            category="Stand-In",
            is_output_node=True,
            description=(
                "How well a video keeps the reference photo's identity, by the FaceSim protocol of OpenS2V-Eval: "
                "evenly spaced frames, the largest face in each, aligned by its 5 keypoints, a face-recognition "
                "embedding, the cosine to the reference's (clamped at 0), averaged over the frames with a face. "
                "Frames without a face are reported, not counted. Each backend also says 'same person' or not per "
                "frame by its own published threshold (dlib: distance < 0.6; SFace: cosine >= 0.363; ArcFace: "
                "cosine >= 0.28); the summary counts those frames and the plot draws the threshold. Compare seeds, "
                "strengths or reference photos with it; scores of different backends are not comparable with each "
                "other."),
            inputs=[
                io.Image.Input("video", tooltip="The generated frames (an IMAGE batch)."),
                io.Image.Input("reference", tooltip="The reference photo (the original, not the prepared 512x512). "
                                                    "With several people: person 1's, the leftmost."),
                io.Int.Input("frames", default=identity.DEFAULT_FRAMES, min=0, max=4096,
                             tooltip="How many evenly spaced frames to score (the protocol: 32); 0 = every frame."),
                io.Combo.Input("backend", options=["dlib", "arcface", "sface"], default="dlib", tooltip=(
                    "dlib: its HOG detector, 5-point alignment and ResNet descriptor; needs "
                    f"'{face_models.install_command(identity.DLIB_PACKAGES)}' (free for commercial use). arcface: an "
                    "insightface ArcFace ONNX from models/insightface with onnxruntime, keypoints from RetinaFace "
                    "(the benchmark's kind of model; its weights are for non-commercial research). sface: OpenCV "
                    "Zoo's SFace ONNX (face_recognition_sface_2021dec.onnx, Apache-2.0) from models/insightface, "
                    "the same way.")),
                io.Combo.Input("arcface_model", options=[""] + recognition_files(), default="",
                               tooltip="The recognition model in models/insightface for the arcface or sface backend "
                                       "(empty = the first one of that kind found)."),
                _detector_input(),
                _download_input(),
                io.Image.Input("reference_2", optional=True, tooltip=(
                    "Several people: person 2's reference photo. Person j is the j-th of the largest faces from the "
                    "left; each is scored against their own reference and against the others' (identity mixing), on "
                    "the frames that show them all.")),
                io.Image.Input("reference_3", optional=True, tooltip="Several people: person 3's reference photo."),
                io.Image.Input("reference_4", optional=True, tooltip="Several people: person 4's reference photo."),
            ],
            outputs=[
                io.Float.Output(display_name="score", tooltip="Mean score over the frames with a face (0..1); "
                                                              "-1 when no sampled frame has a face. Several "
                                                              "people: their own-reference scores, averaged."),
                io.String.Output(display_name="per_frame",
                                 tooltip="For each sampled frame: its score and the backend's verdict (same or "
                                         "different person), or 'no face'; several people: per person, own and "
                                         "most alike other reference."),
                io.Image.Output(display_name="plot", tooltip="Score against frame, the mean, frames without a face, "
                                                             "the same-person threshold; several people: a colour "
                                                             "each."),
                io.String.Output(display_name="summary", tooltip="One line to share with the result."),
            ],
        )

    @classmethod
    def execute(cls, video, reference, frames=identity.DEFAULT_FRAMES, backend="dlib", arcface_model="",
                detector=face_models.AUTO_DETECTOR, allow_download=False, reference_2=None, reference_3=None,
                reference_4=None) -> io.NodeOutput:
        if video.ndim != 4 or video.shape[0] == 0:
            raise ValueError(f"Stand-In Identity Score needs video frames [frames, H, W, C], got {tuple(video.shape)}")
        references = [photo for photo in (reference, reference_2, reference_3, reference_4) if photo is not None]
        for number, photo in enumerate(references, 1):
            if photo.ndim == 4 and photo.shape[0] != 1:
                raise ValueError(f"reference {number} must be one photo (a batch of one): pick one with 'Get Image "
                                 "from Batch'")
        references = [photo[0] if photo.ndim == 4 else photo for photo in references]
        embed = _embedder(backend, arcface_model, detector, allow_download)
        count = len(identity.sample_indices(video.shape[0], frames))
        if len(references) > 1:
            result = identity.score_people(video, references, embed, frames, backend, progress=_progress(count))
            picture, mean = identity.plot_people(result), result.mean()
        else:
            result = identity.score_video(video, references[0], embed, frames, backend, progress=_progress(count))
            picture, mean = identity.plot_scores(result), result.mean
        summary = result.summary()
        log.info("%s", summary)
        plot = torch.from_numpy(picture).float().div(255.0)[None]
        score = -1.0 if mean is None else mean
        shown = {**ui.PreviewImage(plot, cls=cls).as_dict(), **ui.PreviewText(summary).as_dict()}
        return io.NodeOutput(score, result.per_frame(), plot, summary, ui=shown)


class StandInPickReference(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInPickReference",
            display_name="Stand-In Pick Reference Photo",
            category="Stand-In",
            description=(
                "From a batch of candidate photos, the one that should keep the identity best: the official authors "
                "ask for a frontal, clear face. " + identity.PICKER_RULE),
            inputs=[
                io.Image.Input("photos", tooltip="Candidate photos as one IMAGE batch (same size; use 'Batch Images' "
                                                 "or a folder loader)."),
                _detector_input(),
                _download_input(),
            ],
            outputs=[io.Image.Output(display_name="best", tooltip="The chosen photo."),
                     io.Int.Output(display_name="index", tooltip="Its index in the batch."),
                     io.String.Output(display_name="report", tooltip="Per photo: face found, face size and its real "
                                                                     "pixels, detail, JPEG blockiness, how frontal, "
                                                                     "the score; the rule: " + identity.PICKER_RULE)],
        )

    @classmethod
    def execute(cls, photos, detector=face_models.AUTO_DETECTOR, allow_download=False) -> io.NodeOutput:
        if photos.ndim != 4 or photos.shape[0] == 0:
            raise ValueError(f"Stand-In Pick Reference needs photos [N, H, W, C], got {tuple(photos.shape)}")
        (detector_model,) = _facexlib_models([detector], allow_download)
        detect = face_models.retinaface_detector(detector_model, landmarks=True)
        best, reports = identity.pick_reference(list(photos), detect)
        report = "\n".join(r.line() for r in reports) + f"\nbest: photo {best}"
        shown = {**ui.PreviewImage(photos[best:best + 1], cls=cls).as_dict(), **ui.PreviewText(report).as_dict()}
        return io.NodeOutput(photos[best:best + 1], best, report, ui=shown)


NODES = [StandInIdentityScore, StandInPickReference]
