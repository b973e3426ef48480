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


class FloatFrames:
    """uint8 frames [F, H, W, 3] seen as ComfyUI's IMAGE frames (float32 in 0..1), each converted only when indexed:
    a long clip at full size is never held in float32 all at once (what the composite reads frame by frame)."""

    def __init__(self, frames: np.ndarray):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.frames[index].astype(np.float32) / 255
