"""StandInIdentityScore (how well a video keeps the reference's identity) and StandInPickReference (which photo).

The work is in standin_core.faces.identity; this module picks the backend, finds its weights and converts types.
"""
import logging
import os

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..standin_core.faces import identity
from ..standin_core.faces import models as face_models
from .faces import _detector_input, _download_input, _facexlib_models, _progress
from .paths import INSIGHTFACE_FOLDER

log = logging.getLogger("standin")

ARCFACE_FILES = ("antelopev2/glintr100.onnx", "buffalo_l/w600k_r50.onnx")


def arcface_files() -> list[str]:
    """ArcFace recognition models found in models/insightface (where other face packs keep them)."""
    found = []
    for folder in folder_paths.get_folder_paths(INSIGHTFACE_FOLDER):
        for name in ARCFACE_FILES:
            if os.path.isfile(os.path.join(folder, name)) and name not in found:
                found.append(name)
        for root, _, files in os.walk(folder):
            for file in files:
                relative = os.path.relpath(os.path.join(root, file), folder).replace(os.sep, "/")
                if file.endswith(".onnx") and ("glintr" in file or "w600k" in file or "arcface" in file) \
                        and relative not in found:
                    found.append(relative)
    return found


def _arcface_path(name: str) -> str:
    for folder in folder_paths.get_folder_paths(INSIGHTFACE_FOLDER):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    folders = ", ".join(folder_paths.get_folder_paths(INSIGHTFACE_FOLDER))
    raise identity.MissingBackendError(
        f"ArcFace model '{name}' not found. Put an insightface recognition model (antelopev2/glintr100.onnx or "
        f"buffalo_l/w600k_r50.onnx; non-commercial research licence) in one of: {folders}")


def _embedder(backend: str, arcface_model: str, detector: str, allow_download: bool):
    if backend == "dlib":
        return identity.dlib_embedder()
    if not arcface_model:
        found = arcface_files()
        arcface_model = found[0] if found else ARCFACE_FILES[0]  # a missing file raises, naming it and the folders
    session = identity.load_onnx(_arcface_path(arcface_model))
    (detector_model,) = _facexlib_models([detector], allow_download)
    return identity.arcface_embedder(session, face_models.retinaface_detector(detector_model, landmarks=True))


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
                "Frames without a face are reported, not counted. Compare seeds, strengths or reference photos with "
                "it; scores of different backends are not comparable with each other."),
            inputs=[
                io.Image.Input("video", tooltip="The generated frames (an IMAGE batch)."),
                io.Image.Input("reference", tooltip="The reference photo (the original, not the prepared 512x512)."),
                io.Int.Input("frames", default=identity.DEFAULT_FRAMES, min=0, max=4096,
                             tooltip="How many evenly spaced frames to score (the protocol: 32); 0 = every frame."),
                io.Combo.Input("backend", options=["dlib", "arcface"], default="dlib", tooltip=(
                    "dlib: its HOG detector, 5-point alignment and ResNet descriptor; needs "
                    f"'{identity.DLIB_INSTALL}' (free for commercial use). arcface: an insightface ArcFace ONNX "
                    "from models/insightface with onnxruntime, keypoints from RetinaFace (the benchmark's kind of "
                    "model; its weights are for non-commercial research).")),
                io.Combo.Input("arcface_model", options=[""] + arcface_files(), default="",
                               tooltip="The ArcFace recognition model in models/insightface (arcface backend; empty = "
                                       "the first one found)."),
                _detector_input(),
                _download_input(),
            ],
            outputs=[
                io.Float.Output(display_name="score", tooltip="Mean score over the frames with a face (0..1); "
                                                              "-1 when no sampled frame has a face."),
                io.String.Output(display_name="per_frame",
                                 tooltip="frame: score, or 'no face', for each sampled frame."),
                io.Image.Output(display_name="plot", tooltip="Score against frame, the mean, frames without a face."),
                io.String.Output(display_name="summary", tooltip="One line to share with the result."),
            ],
        )

    @classmethod
    def execute(cls, video, reference, frames=identity.DEFAULT_FRAMES, backend="dlib", arcface_model="",
                detector=face_models.DETECTORS[0], allow_download=False) -> io.NodeOutput:
        if video.ndim != 4 or video.shape[0] == 0:
            raise ValueError(f"Stand-In Identity Score needs video frames [frames, H, W, C], got {tuple(video.shape)}")
        if reference.ndim == 4 and reference.shape[0] != 1:
            raise ValueError("the reference must be one photo (a batch of one): pick one with 'Get Image from Batch'")
        embed = _embedder(backend, arcface_model, detector, allow_download)
        count = len(identity.sample_indices(video.shape[0], frames))
        result = identity.score_video(video, reference[0] if reference.ndim == 4 else reference, embed, frames,
                                      backend, progress=_progress(count))
        summary = result.summary()
        log.info("%s", summary)
        plot = torch.from_numpy(identity.plot_scores(result)).float().div(255.0)[None]
        score = -1.0 if result.mean is None else result.mean
        return io.NodeOutput(score, result.per_frame(), plot, summary, ui=ui.PreviewText(summary))


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
                     io.String.Output(display_name="report", tooltip="Face found, face size, sharpness and how "
                                                                     "frontal, per photo; the rule: " +
                                                                     identity.PICKER_RULE)],
        )

    @classmethod
    def execute(cls, photos, detector=face_models.DETECTORS[0], allow_download=False) -> io.NodeOutput:
        if photos.ndim != 4 or photos.shape[0] == 0:
            raise ValueError(f"Stand-In Pick Reference needs photos [N, H, W, C], got {tuple(photos.shape)}")
        (detector_model,) = _facexlib_models([detector], allow_download)
        detect = face_models.retinaface_detector(detector_model, landmarks=True)
        best, reports = identity.pick_reference(list(photos), detect)
        report = "\n".join(r.line() for r in reports) + f"\nbest: photo {best}"
        return io.NodeOutput(photos[best:best + 1], best, report)


NODES = [StandInIdentityScore, StandInPickReference]
