"""Writes the pack's example inputs (example_inputs/), the files the shipped workflows load on first open.

    .venv/bin/python scripts/make_example_inputs.py

The pack copies them into ComfyUI's input folder when it loads (nodes/examples.py), so no Load Image or Load Video
node of a shipped workflow opens red. Sources (see example_inputs/README.md for the licences):
  * standin_example_face.jpg: scikit-image's astronaut photo (Eileen Collins, NASA, public domain), 512 x 512;
  * standin_example_subject.jpg: scikit-image's cat photo (CC0);
  * standin_example_clip.mp4: tests/data/short_hamilton_clip.mp4 as it is (29.97 fps, with sound; MIT);
  * standin_example_performer.jpg: the face of the man in that clip, cut from a frame the face swap does not use
    (the face swap example gives him his own face back, so no real person's face lands on another's);
  * standin_example_pose.mp4: a drawn stick figure in the OpenPose colours (no person), 81 frames of 832 x 480 at
    16 fps, the size and length the VACE pose workflow samples; standin_example_pose_two.mp4: two of them;
  * standin_example_two_people.mp4: tests/data/two_people.jpg (two real faces side by side, MIT) as a short video, a
    STILL PHOTO moved (a slow zoom towards the faces), 41 frames of 832 x 480 at 16 fps, for the several-people face
    swap; standin_example_person_1.jpg, standin_example_person_2.jpg: the faces of the two people in it, cut from
    other photos of each (tests/data/obama.jpg, biden.jpg; MIT): the example gives each their own face back.
"""
import math
import shutil
import sys
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO.parent))
from comfyui_standin.standin_core.faces.video import read_video  # noqa: E402

OUT = REPO / "example_inputs"
CLIP = REPO / "tests" / "data" / "short_hamilton_clip.mp4"
PERFORMER_FRAME, PERFORMER_BOX = 150, (150, 0, 350, 200)  # (left, top, right, bottom) in that frame
TWO_PEOPLE = REPO / "tests" / "data" / "two_people.jpg"  # 1126 x 661, the left face at x 237..382, the right 788..939
# the two people's own faces from photos of their own: (photo, face box (left, top, right, bottom) by RetinaFace)
PEOPLE = (("obama.jpg", (376, 85, 608, 422)), ("biden.jpg", (425, 169, 712, 567)))
TWO_PEOPLE_SIZE, TWO_PEOPLE_FRAMES, TWO_PEOPLE_FPS = (832, 480), 41, 16

# OpenPose's 18 body keypoints, in its order, and the 17 limbs it draws, each in its own colour (its published format)
KEYPOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip",
             "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
POSE_SIZE, POSE_FRAMES, POSE_FPS = (832, 480), 81, 16


def figure(phase: float, centre_x: float, height: float, floor: float) -> np.ndarray:
    """The 18 keypoints [18, 2] of a person facing the camera who sways and raises the arms with ``phase``."""
    unit = height / 8.0  # a head is about an eighth of a body
    sway = 0.35 * unit * math.sin(phase)
    raise_ = 0.5 + 0.5 * math.sin(2 * phase)  # 0: arms down, 1: arms up
    neck = np.array([centre_x + sway, floor - 6.6 * unit])
    hip_y = floor - 3.9 * unit
    points = {
        "neck": neck, "nose": neck + (0, -0.9 * unit),
        "r_eye": neck + (-0.22 * unit, -1.1 * unit), "l_eye": neck + (0.22 * unit, -1.1 * unit),
        "r_ear": neck + (-0.45 * unit, -1.0 * unit), "l_ear": neck + (0.45 * unit, -1.0 * unit),
        "r_shoulder": neck + (-0.9 * unit, 0.1 * unit), "l_shoulder": neck + (0.9 * unit, 0.1 * unit),
        "r_hip": np.array([centre_x + 0.5 * sway - 0.55 * unit, hip_y]),
        "l_hip": np.array([centre_x + 0.5 * sway + 0.55 * unit, hip_y]),
        "r_ankle": np.array([centre_x - 0.7 * unit, floor]), "l_ankle": np.array([centre_x + 0.7 * unit, floor]),
    }
    points["r_knee"] = (points["r_hip"] + points["r_ankle"]) / 2 + (-0.1 * unit, 0)
    points["l_knee"] = (points["l_hip"] + points["l_ankle"]) / 2 + (0.1 * unit, 0)
    for side, sign in (("r", -1), ("l", 1)):
        angle = math.radians(-80 + 150 * raise_)  # from hanging down to raised above the head
        shoulder = points[f"{side}_shoulder"]
        elbow = shoulder + 1.4 * unit * np.array([sign * math.cos(angle), -math.sin(angle)])
        points[f"{side}_elbow"] = elbow
        points[f"{side}_wrist"] = elbow + 1.3 * unit * np.array([sign * math.cos(angle + 0.3), -math.sin(angle + 0.3)])
    return np.array([points[name] for name in KEYPOINTS])


def draw_pose(people: list[np.ndarray], size=POSE_SIZE) -> np.ndarray:
    """RGB uint8 [H, W, 3]: each person's limbs and keypoints on black, in the OpenPose colours."""
    width, height = size
    canvas = np.zeros((height, width, 3), np.uint8)
    for points in people:
        for (a, b), colour in zip(LIMBS, COLOURS):
            cv2.line(canvas, tuple(int(round(v)) for v in points[a]), tuple(int(round(v)) for v in points[b]),
                     colour, 6, cv2.LINE_AA)
        for point, colour in zip(points, COLOURS):
            cv2.circle(canvas, tuple(int(round(v)) for v in point), 5, colour, -1, cv2.LINE_AA)
    return canvas


def write_video(path: Path, frames, fps: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def pose_clip(count: int) -> list[np.ndarray]:
    width, height = POSE_SIZE
    centres = [width * (i + 1) / (count + 1) for i in range(count)]
    return [draw_pose([figure(2 * math.pi * t / (POSE_FRAMES - 1) + i * 1.3, centre, 0.8 * height, 0.93 * height)
                       for i, centre in enumerate(centres)]) for t in range(POSE_FRAMES)]


def face_photo(photo: np.ndarray, box, scale: float = 1.7, side: int = 256) -> np.ndarray:
    """A square ``side`` x ``side`` crop of ``photo`` around the face ``box``, ``scale`` times its longer side."""
    left, top, right, bottom = box
    centre_x, centre_y, half = (left + right) / 2, (top + bottom) / 2, max(right - left, bottom - top) * scale / 2
    x0, y0 = int(max(0, centre_x - half)), int(max(0, centre_y - half))
    x1, y1 = int(min(photo.shape[1], centre_x + half)), int(min(photo.shape[0], centre_y + half))
    return cv2.resize(photo[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA)


def two_people_clip(photo: np.ndarray) -> list[np.ndarray]:
    """The still photo as a video: a slow, eased zoom from the whole photo (cut to the video's aspect ratio) to 80 %
    of it, centred on the two faces' row; both faces stay whole in every frame."""
    width, height = TWO_PEOPLE_SIZE
    photo_height, photo_width = photo.shape[:2]
    full_width = min(photo_width, photo_height * width / height)
    frames = []
    for index in range(TWO_PEOPLE_FRAMES):
        ease = 0.5 - 0.5 * math.cos(math.pi * index / (TWO_PEOPLE_FRAMES - 1))
        crop_width = full_width * (1.0 - 0.2 * ease)
        crop_height = crop_width * height / width
        left = (photo_width - crop_width) / 2
        top = (photo_height - crop_height) * 0.5 * (1 - ease)  # from the centre up to the top (the faces)
        # the crop rectangle mapped onto the video frame: sub-pixel, so the motion is smooth
        matrix = np.array([[width / crop_width, 0, -left * width / crop_width],
                           [0, height / crop_height, -top * height / crop_height]])
        frames.append(cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
    return frames


def main() -> None:
    from skimage import data
    OUT.mkdir(exist_ok=True)
    jpeg = [cv2.IMWRITE_JPEG_QUALITY, 92]
    cv2.imwrite(str(OUT / "standin_example_face.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), jpeg)
    cv2.imwrite(str(OUT / "standin_example_subject.jpg"), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR), jpeg)
    shutil.copyfile(CLIP, OUT / "standin_example_clip.mp4")
    frame = read_video(CLIP, limit=PERFORMER_FRAME + 1)[PERFORMER_FRAME]
    left, top, right, bottom = PERFORMER_BOX
    cv2.imwrite(str(OUT / "standin_example_performer.jpg"),
                cv2.cvtColor(np.ascontiguousarray(frame[top:bottom, left:right]), cv2.COLOR_RGB2BGR), jpeg)
    write_video(OUT / "standin_example_pose.mp4", pose_clip(1), POSE_FPS)
    write_video(OUT / "standin_example_pose_two.mp4", pose_clip(2), POSE_FPS)
    two_people = cv2.cvtColor(cv2.imread(str(TWO_PEOPLE)), cv2.COLOR_BGR2RGB)
    write_video(OUT / "standin_example_two_people.mp4", two_people_clip(two_people), TWO_PEOPLE_FPS)
    for number, (name, box) in enumerate(PEOPLE, start=1):
        cv2.imwrite(str(OUT / f"standin_example_person_{number}.jpg"),
                    face_photo(cv2.imread(str(CLIP.parent / name)), box), jpeg)
    for path in sorted(OUT.glob("standin_example_*")):
        print(f"{path.relative_to(REPO)}: {path.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
