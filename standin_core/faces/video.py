"""Video frames from a file, for the command-line tools and the tests (inside ComfyUI, Load Video does this)."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def read_video(path: str, limit: Optional[int] = None) -> np.ndarray:
    """The frames of a video file as RGB uint8 [F, H, W, 3] (the first ``limit`` when given)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        while limit is None or len(frames) < limit:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"no frames could be read from {path!r}")
    return np.stack(frames)
