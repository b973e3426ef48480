"""Face detector and parser models: facexlib's RetinaFace and BiSeNet loaded offline, and a bundled fallback.

Nothing here downloads unless ``allow_download=True`` is passed: a missing file raises
:class:`MissingFaceWeightsError` naming the file, the folder it belongs in and its official URL. A download
(:func:`download_weights`) goes to a temporary name in the folder, is checked against the published SHA-256 of that
release file (:data:`KNOWN_SHA256`), and only then renamed into place, so a wrong, cut or interrupted download never
leaves a file that later loads. Weight files are read with ``torch.load(weights_only=True)``: tensors only, no
pickled code ever runs (facexlib's own loaders would use the torch version's default). torch, facexlib and
scikit-image are imported only inside the functions that need them.

The adapters turn the models into the plain callables :mod:`standin_core.faces.prepare` expects:
``retinaface_detector`` / ``cascade_detector`` -> :data:`~standin_core.faces.prepare.Detector` (with
``landmarks=True`` the 5 keypoints too, for :mod:`.swap` and :mod:`.identity`),
``bisenet_parser`` -> :data:`~standin_core.faces.prepare.Parser`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
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
# SHA-256 of the facexlib release files, from public pins of those exact URLs (none is published by facexlib itself):
# the Arch Linux AUR package python-facexlib 0.2.5 (PKGBUILD sha256sums over the release URLs) lists all three;
# clibdev/Pytorch_Retinaface (README: the same two RetinaFace files re-released) and clibdev/face-parsing.PyTorch
# (README: the same BiSeNet file) agree, and several projects pin detection_Resnet50_Final.pth (109,497,761 bytes)
# to the same value. The mobile0.25 file in tests/data is a different file (a Pytorch_Retinaface fork's copy).
KNOWN_SHA256 = {
    "detection_Resnet50_Final.pth": "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
    "detection_mobilenet0.25_Final.pth": "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
    "parsing_bisenet.pth": "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
}
MAX_DOWNLOAD_BYTES = 256 * 2 ** 20  # the largest release file is 110 MB
DOWNLOAD_TIMEOUT_S = 60
DETECTORS = ("retinaface_resnet50", "retinaface_mobile0.25")  # in order of preference
AUTO_DETECTOR = "auto"  # whichever of DETECTORS has its file, the first of them first
_NETWORKS = {"retinaface_resnet50": "resnet50", "retinaface_mobile0.25": "mobile0.25"}  # facexlib's network_name
PARSERS = ("bisenet",)
# Input normalisation of the parser: the official reference preprocessing uses mean = std = 0.5; the official
# face-swap mask (and the official ComfyUI node) use the ImageNet statistics.
REFERENCE_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DETECTION_CONFIDENCE = 0.5  # the official detectors' threshold

Folders = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


def install_command(packages: str) -> str:
    """The pip command that installs ``packages`` into the Python running this code (on a portable ComfyUI that is
    python_embeded/python.exe, not whatever 'pip' is on the PATH)."""
    return f'"{sys.executable}" -m pip install {packages}'


class MissingFaceWeightsError(RuntimeError):
    """A facexlib weight file is not in any of the folders searched (the message says what to do)."""


class UnsafeFaceWeightsError(RuntimeError):
    """A face weight file holds pickled objects other than tensors (it could run code): refused, never run."""


class FaceWeightsDownloadError(RuntimeError):
    """A download was refused or failed; nothing was saved under the weight file's name."""


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


def choose_detector(name: str, folders: Folders, allow_download: bool = False) -> str:
    """The RetinaFace model to load for a node's ``detector`` choice. :data:`AUTO_DETECTOR`: the first of
    :data:`DETECTORS` whose file is in ``folders`` (ResNet-50, then mobilenet0.25); with none present, the first one
    if downloads are allowed, else :class:`MissingFaceWeightsError` naming both files. A named detector whose file is
    missing raises too, saying which other one is there."""
    if name != AUTO_DETECTOR:
        if name not in DETECTORS:
            raise ValueError(f"unknown face detector {name!r}: use {AUTO_DETECTOR!r} or one of {DETECTORS}")
        if allow_download or find_weights(name, folders):
            return name
        present = [other for other in DETECTORS if find_weights(other, folders)]
        if present:
            folder = _folder_list(folders)[0]
            raise MissingFaceWeightsError(
                f"face detector '{name}' needs '{weights_file(name)[0]}', which is not in {folder}; "
                f"'{weights_file(present[0])[0]}' is there: set the node's detector to '{AUTO_DETECTOR}' or "
                f"'{present[0]}', or add the file from {weights_file(name)[1]}.")
        return name  # loading it raises the usual message: file, folder, URL
    for candidate in DETECTORS:
        if find_weights(candidate, folders):
            return candidate
    if allow_download:
        return DETECTORS[0]
    folders = _folder_list(folders)
    files = " or ".join(f"'{weights_file(c)[0]}' ({weights_file(c)[1]})" for c in DETECTORS)
    raise MissingFaceWeightsError(
        f"no RetinaFace face detector in {folders[0]}"
        f"{'' if len(folders) == 1 else ' (searched: ' + ', '.join(folders) + ')'}: put {files} there under that "
        "name (ResNet-50 is the better one), or allow the download.")


def _import_facexlib():
    try:
        from facexlib.detection.retinaface import RetinaFace
        from facexlib.parsing.bisenet import BiSeNet
    except ImportError as error:
        raise RuntimeError(f"facexlib could not be imported ({error}): install it with "
                           f"{install_command('facexlib')} (it needs torchvision)") from error
    return RetinaFace, BiSeNet


def _open_url(url: str):
    """The HTTP response for ``url`` (the one place that touches the network)."""
    import urllib.request
    return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)


def download_weights(model_name: str, folder: Union[str, os.PathLike], url: Optional[str] = None) -> str:
    """Download a facexlib release file into ``folder`` and return its path, only if its SHA-256 is the published one.

    The bytes go to a temporary file in ``folder`` (``.<name>.*.part``, a name nothing loads), are hashed while they
    arrive, and are renamed to the real name only after the hash matched; on any failure (wrong bytes, a connection
    closed early, too large, an interrupt) the temporary file is removed and a :class:`FaceWeightsDownloadError` says
    what happened. Files with no known hash are never downloaded."""
    file_name, official_url = weights_file(model_name)
    url = url or official_url
    expected = KNOWN_SHA256.get(file_name)
    if expected is None:
        raise FaceWeightsDownloadError(
            f"'{file_name}' has no known SHA-256, so it is not downloaded automatically (an unchecked file could be "
            f"anything). Download it from {url} yourself and put it in {folder}{os.sep}.")
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".part", dir=folder)
    log.warning("Stand-In: downloading %s into %s (allowed explicitly; checked against its SHA-256)", url, folder)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(handle, "wb") as out, _open_url(url) as response:
            declared = response.headers.get("Content-Length")
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise FaceWeightsDownloadError(f"the download of {url} exceeds {MAX_DOWNLOAD_BYTES} bytes, more "
                                                   "than any facexlib file; nothing was saved")
                digest.update(chunk)
                out.write(chunk)
            if declared is not None and size != int(declared):
                raise FaceWeightsDownloadError(f"the download of {url} stopped after {size} of {declared} bytes; "
                                               f"nothing was saved. Try again, or download it by hand and put it in "
                                               f"{folder}{os.sep}.")
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise FaceWeightsDownloadError(
                f"the file downloaded from {url} ({size} bytes) has SHA-256 {digest.hexdigest()}, not the published "
                f"{expected} of '{file_name}': it was deleted. Try again later, or download it by hand and put it in "
                f"{folder}{os.sep}.")
        os.replace(temporary, os.path.join(folder, file_name))
    except BaseException as error:
        os.unlink(temporary)
        if isinstance(error, FaceWeightsDownloadError) or not isinstance(error, Exception):
            raise
        raise FaceWeightsDownloadError(
            f"downloading '{file_name}' from {url} failed ({type(error).__name__}: {error}); nothing was saved. Try "
            f"again, or download it by hand and put it in {folder}{os.sep}.") from error
    return os.path.join(folder, file_name)


def _read_weights(path: str, file_name: str, url: str) -> dict:
    import torch
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if "GLOBAL" in str(error) or "Unsupported global" in str(error):  # a pickled callable: it could run code
            raise UnsafeFaceWeightsError(
                f"refused to load face model '{file_name}' from {path}: it contains pickled Python objects other than "
                f"tensors, which could run code. Replace it with the facexlib release file from {url}") from error
        raise
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a dictionary of tensors")
    return {key[len("module."):] if key.startswith("module.") else key: value for key, value in state.items()}


def _load(model_name: str, folders: Folders, device, allow_download: bool):
    """facexlib's model built here and filled from the file with ``weights_only`` loading (what facexlib's
    init_detection_model / init_parsing_model do, without their unchecked download)."""
    retina_face, bisenet = _import_facexlib()
    file_name, url = weights_file(model_name)
    path = find_weights(model_name, folders)
    if path is None:
        if not allow_download:
            require_weights(model_name, folders)
        path = download_weights(model_name, _folder_list(folders)[0])
    try:
        if model_name in DETECTORS:
            model = retina_face(network_name=_NETWORKS[model_name], half=False, device=device)
        else:
            model = bisenet(num_class=19)
        model.load_state_dict(_read_weights(path, file_name, url), strict=True)
    except UnsafeFaceWeightsError:
        raise
    except Exception as error:  # corrupt / truncated / wrong file: say which one and how to fix it
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(f"could not load face model '{file_name}' from {os.path.dirname(path)} "
                           f"({type(error).__name__}: {reason}). The file may be truncated or not the facexlib "
                           f"release; download it again from {url}") from error
    return model.eval().to(device)


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
        raise RuntimeError(f"the bundled face detector needs scikit-image: {install_command('scikit-image')}") \
            from error
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
