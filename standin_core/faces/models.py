"""Face detector and parser models: facexlib's RetinaFace and BiSeNet loaded offline, and a bundled fallback.

Nothing here downloads unless ``allow_download=True`` is passed: a missing file raises
:class:`MissingFaceWeightsError` naming the file, the folder it belongs in and its official URL. torch, facexlib and
scikit-image are imported only inside the functions that need them.

The adapters turn the models into the plain callables :mod:`standin_core.faces.prepare` expects:
``retinaface_detector`` / ``cascade_detector`` -> :data:`~standin_core.faces.prepare.Detector` (with
``landmarks=True`` the 5 keypoints too, for :mod:`.swap` and :mod:`.identity`),
``bisenet_parser`` -> :data:`~standin_core.faces.prepare.Parser`.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Optional, Sequence, Union

import cv2
import numpy as np

from .prepare import Detector, Parser

log = logging.getLogger("standin")

_RELEASES = "https://github.com/xinntao/facexlib/releases/download"
FACEXLIB_WEIGHTS = {  # model name -> (file name facexlib uses, official download URL)
    "retinaface_resnet50": ("detection_Resnet50_Final.pth", f"{_RELEASES}/v0.1.0/detection_Resnet50_Final.pth"),
    "retinaface_mobile0.25": ("detection_mobilenet0.25_Final.pth",
                              f"{_RELEASES}/v0.1.0/detection_mobilenet0.25_Final.pth"),
    "bisenet": ("parsing_bisenet.pth", f"{_RELEASES}/v0.2.0/parsing_bisenet.pth"),
}
DETECTORS = ("retinaface_resnet50", "retinaface_mobile0.25")
PARSERS = ("bisenet",)
# Input normalisation of the parser: the official reference preprocessing uses mean = std = 0.5; the official
# face-swap mask (and the official ComfyUI node) use the ImageNet statistics.
REFERENCE_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DETECTION_CONFIDENCE = 0.5  # the official detectors' threshold

Folders = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


class MissingFaceWeightsError(RuntimeError):
    """A facexlib weight file is not in any of the folders searched (the message says what to do)."""


def _folder_list(folders: Folders) -> list[str]:
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    folders = [os.fspath(folder) for folder in folders]
    if not folders:
        raise ValueError("no folder to look for facexlib weights in: pass e.g. ComfyUI/models/facexlib")
    return folders


def weights_file(model_name: str) -> tuple[str, str]:
    """(file name, official URL) of a facexlib model: one of :data:`DETECTORS` or :data:`PARSERS`."""
    if model_name not in FACEXLIB_WEIGHTS:
        raise ValueError(f"unknown face model {model_name!r}: use one of {sorted(FACEXLIB_WEIGHTS)}")
    return FACEXLIB_WEIGHTS[model_name]


def find_weights(model_name: str, folders: Folders) -> Optional[str]:
    """Path of the model's weight file in the first folder that has it, or None."""
    file_name, _ = weights_file(model_name)
    for folder in _folder_list(folders):
        path = os.path.join(folder, file_name)
        if os.path.isfile(path):
            return path
    return None


def require_weights(model_name: str, folders: Folders) -> str:
    """Path of the model's weight file; :class:`MissingFaceWeightsError` (file, folder, URL) when absent."""
    path = find_weights(model_name, folders)
    if path is not None:
        return path
    file_name, url = weights_file(model_name)
    folders = _folder_list(folders)
    searched = "" if len(folders) == 1 else f" (searched: {', '.join(folders)})"
    raise MissingFaceWeightsError(
        f"face model weights '{file_name}' not found in {folders[0]}{searched}. Download it from {url} and put it in "
        f"{folders[0]}{os.sep} (the name must stay '{file_name}'), or allow the download explicitly.")


def _import_facexlib():
    try:
        from facexlib.detection import init_detection_model
        from facexlib.parsing import init_parsing_model
    except ImportError as error:
        raise RuntimeError(f"facexlib could not be imported ({error}): install it with 'pip install facexlib' "
                           "(it needs torchvision)") from error
    return init_detection_model, init_parsing_model


def _load(model_name: str, folders: Folders, device, allow_download: bool):
    init_detection_model, init_parsing_model = _import_facexlib()
    path = find_weights(model_name, folders)
    if path is None and not allow_download:
        require_weights(model_name, folders)
    root = os.path.dirname(path) if path else _folder_list(folders)[0]
    if path is None:
        log.warning("Stand-In: downloading %s into %s (allowed explicitly)", weights_file(model_name)[1], root)
    try:
        if model_name in DETECTORS:
            model = init_detection_model(model_name, half=False, device=device, model_rootpath=root)
        else:
            model = init_parsing_model(model_name, half=False, device=device, model_rootpath=root)
    except MissingFaceWeightsError:
        raise
    except Exception as error:  # corrupt / truncated / wrong file: say which one and how to fix it
        file_name, url = weights_file(model_name)
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(f"could not load face model '{file_name}' from {root} ({type(error).__name__}: {reason}). "
                           f"The file may be truncated "
                           f"or not the facexlib release; download it again from {url}") from error
    return model.eval()


def load_face_detector(folders: Folders, model_name: str = "retinaface_resnet50", device="cpu",
                       allow_download: bool = False):
    """facexlib RetinaFace from ``detection_Resnet50_Final.pth`` / ``detection_mobilenet0.25_Final.pth``."""
    if model_name not in DETECTORS:
        raise ValueError(f"unknown face detector {model_name!r}: use one of {DETECTORS}")
    return _load(model_name, folders, device, allow_download)


def load_face_parser(folders: Folders, model_name: str = "bisenet", device="cpu", allow_download: bool = False):
    """facexlib BiSeNet (19 CelebAMask-HQ classes) from ``parsing_bisenet.pth``."""
    if model_name not in PARSERS:
        raise ValueError(f"unknown face parser {model_name!r}: use one of {PARSERS}")
    return _load(model_name, folders, device, allow_download)


def retinaface_detector(model, confidence: float = DETECTION_CONFIDENCE, landmarks: bool = False) -> Detector:
    """A facexlib RetinaFace as a :data:`Detector` (RGB in): rows x1, y1, x2, y2, score, and with ``landmarks`` the
    5 keypoints (left eye, right eye, nose, left and right mouth corner; x, y each), [N, 15]."""
    import torch
    columns = 15 if landmarks else 5

    def detect(rgb: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            found = model.detect_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), conf_threshold=confidence)
        return np.asarray(found, dtype=np.float64).reshape(-1, 15)[:, :columns]
    return detect


def bisenet_parser(model, normalization=REFERENCE_NORMALIZATION) -> Parser:
    """A facexlib BiSeNet as a :data:`Parser`: RGB uint8 [S, S, 3] -> class map [S, S] (argmax of the main head)."""
    import torch
    mean, std = normalization
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    mean_t = torch.tensor(mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device, dtype=torch.float32).view(1, 3, 1, 1)

    def parse(rgb: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float() / 255.0
        with torch.inference_mode():
            logits = model(((pixels - mean_t) / std_t).to(dtype))[0]
        return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
    return parse


def cascade_detector(cascade_file: Optional[str] = None, min_size: int = 24) -> Detector:
    """scikit-image's bundled LBP frontal-face cascade as a :data:`Detector` (no weights to download; weaker
    than RetinaFace: frontal faces only). Needs ``pip install scikit-image``."""
    try:
        from skimage import data, feature
    except ImportError as error:
        raise RuntimeError("the bundled face detector needs scikit-image: pip install scikit-image") from error
    cascade = feature.Cascade(cascade_file or data.lbp_frontal_face_cascade_filename())

    def detect(rgb: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
        height, width = gray.shape
        if min(height, width) < min_size:
            return np.zeros((0, 4))
        found = cascade.detect_multi_scale(img=gray, scale_factor=1.2, step_ratio=1, min_size=(min_size, min_size),
                                           max_size=(height, width))
        return np.array([[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found],
                        dtype=np.float64).reshape(-1, 4)
    return detect


def available_models(folders: Folders, names: Iterable[str] = FACEXLIB_WEIGHTS) -> dict[str, Optional[str]]:
    """{model name: path or None} for every facexlib model, for status messages."""
    return {name: find_weights(name, folders) for name in names}
