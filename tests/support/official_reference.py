"""The official Stand-In reference crop, restated for the tests (independent of standin_core.faces.prepare):
box -> window of side int(1.5 * max(w, h)) around the integer centre, clamped; white centred padding; INTER_AREA
to 512x512."""
import cv2
import numpy as np


def official_window(box, width, height):
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    half = int(max(x2 - x1, y2 - y1) * 1.5) // 2
    return max(cx - half, 0), max(cy - half, 0), min(cx + half, width), min(cy + half, height)


def white_square(image):
    """Centred white padding, written independently of faces.pad_to_square."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def area512(image):
    return cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
