"""Helpers of the face tests: a recording VAE, a photo as a ComfyUI IMAGE, an EXIF-rotated JPEG, the overlap of two
boxes."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class RecordingVAE:
    """A VAE that records the pixels it is given and encodes them to a constant latent (1/8 of their size)."""

    def __init__(self):
        self.seen = []

    def encode(self, pixels):
        self.seen.append(pixels.clone())
        return torch.full((1, 16, 1, pixels.shape[1] // 8, pixels.shape[2] // 8), 0.25)


def comfy_image(rgb):
    """An RGB uint8 photo as a ComfyUI IMAGE [1, H, W, 3] in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).float().div(255).unsqueeze(0)


def exif_rotated_jpeg(path: Path, rgb: np.ndarray) -> None:
    """The photo stored turned 90 degrees counter-clockwise, with EXIF orientation 6 ("turn clockwise to show")."""
    image = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, quality=95, exif=exif)


def iou(a, b) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_shows(shown, image):
    """The node's UI output previews ``image`` [H, W, 3] in 0..1: a PNG in ComfyUI's temp folder."""
    import cv2
    import folder_paths
    (saved,) = shown["images"]
    assert saved["type"] == "temp"
    png = cv2.imread(str(Path(folder_paths.get_temp_directory(), saved["subfolder"], saved["filename"])))
    expected = (image.numpy() * 255).round().astype(np.uint8)
    assert png is not None and np.abs(cv2.cvtColor(png, cv2.COLOR_BGR2RGB).astype(int) - expected).max() <= 1
