"""Reading a photo file for the reference preparation outside ComfyUI (in ComfyUI, Load Image reads it).

PIL is imported when a file is read, so importing this module stays light.
"""
from __future__ import annotations

import numpy as np


def read_image(path: str) -> np.ndarray:
    """A photo file -> array (EXIF orientation applied; 16-bit and alpha kept for the pipeline to handle): uint8
    gray [H, W], gray with alpha, RGB or RGBA [H, W, C]; or uint16 gray [H, W] for a 16-bit gray file. Any other
    mode is converted to RGB (RGBA when it has alpha). ValueError naming the file when it cannot be read."""
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(image, dtype=np.uint16)
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.array(image)
    except (OSError, ValueError) as error:
        raise ValueError(f"could not read the image {path!r}: {error}") from error
