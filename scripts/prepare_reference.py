"""Try the reference preparation from the command line, with or without the real facexlib weights.

    python scripts/prepare_reference.py --demo                 # scikit-image's astronaut portrait
    python scripts/prepare_reference.py photo.jpg --out steps  # your own photo
    python scripts/prepare_reference.py photo.jpg --weights-dir ComfyUI/models/facexlib

Writes the steps as PNGs: the input, the detections (chosen face green, other faces red, crop window blue), the
padded square, the parse map, the mask and the final 512x512 reference. Without facexlib weights the face is found
by scikit-image's bundled LBP cascade and background removal is skipped (it says which file to add).
"""
from __future__ import annotations

import argparse
import colorsys
import logging
import os
import sys

import cv2
import numpy as np

from comfyui_standin.standin_core.faces import images, models as face_models, prepare as faces


def _read_image(path: str) -> np.ndarray:
    """The pack's reader (standin_core.faces.images); a file it cannot read ends the command with its message."""
    try:
        return images.read_image(path)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error


def _save(folder: str, name: str, rgb: np.ndarray) -> str:
    path = os.path.join(folder, name)
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, image):
        raise SystemExit(f"error: could not write {path}")
    return path


def _parse_colors(parse_map: np.ndarray) -> np.ndarray:
    palette = np.zeros((len(faces.CELEBAMASK_CLASSES), 3), np.uint8)  # background black
    for index in range(1, len(palette)):
        r, g, b = colorsys.hsv_to_rgb((index * 0.618) % 1.0, 0.75, 1.0)
        palette[index] = (round(r * 255), round(g * 255), round(b * 255))
    return palette[np.clip(parse_map, 0, len(palette) - 1)]


def _draw_detections(rgb: np.ndarray, result: faces.PreparedReference) -> np.ndarray:
    canvas = rgb.copy()
    thickness = max(2, max(rgb.shape[:2]) // 300)
    for box in result.boxes.astype(int):
        if result.face_box is None or tuple(box) != tuple(result.face_box):
            cv2.rectangle(canvas, tuple(box[:2]), tuple(box[2:]), (255, 40, 40), thickness)
    if result.face_box is not None:
        cv2.rectangle(canvas, result.face_box[:2], result.face_box[2:], (40, 220, 40), thickness)
    left, top, right, bottom = result.crop_window
    cv2.rectangle(canvas, (left, top), (right - 1, bottom - 1), (40, 90, 255), thickness)
    return canvas


def _pick_models(args) -> tuple[faces.Detector | None, faces.Parser | None, list[str]]:
    """The detector and parser the options ask for, and what to tell the user about them."""
    if args.subject:
        return None, None, ["subject mode: no detection, no parsing"]
    folder, said = args.weights_dir, []
    name = args.detector
    if name == "auto":
        name = next((n for n in face_models.DETECTORS if folder and face_models.find_weights(n, folder)), "lbp")
    if name == "lbp":
        detector = face_models.cascade_detector()
        file_name, url = face_models.weights_file("retinaface_resnet50")
        said.append("detector: scikit-image's bundled LBP frontal-face cascade (a stand-in for RetinaFace: add "
                    f"{file_name} from {url} to --weights-dir for the official detector)")
    else:
        if not folder:
            raise ValueError(f"--detector {name} needs --weights-dir (the folder with its facexlib weights)")
        model = face_models.load_face_detector(folder, name, args.device, args.allow_download)
        detector = face_models.retinaface_detector(model)
        said.append(f"detector: facexlib {name}")
    if folder and (face_models.find_weights("bisenet", folder) or args.allow_download):
        model = face_models.load_face_parser(folder, "bisenet", args.device, args.allow_download)
        parser = face_models.bisenet_parser(model)
        said.append("parser: facexlib bisenet")
    else:
        parser = None
        file_name, url = face_models.weights_file("bisenet")
        said.append(f"parser: none -> background removal SKIPPED (the background is NOT whitened). Add {file_name} "
                    f"from {url} to --weights-dir to remove it")
    return detector, parser, said


def main(argv=None) -> int:
    cli = argparse.ArgumentParser(prog="python scripts/prepare_reference.py", description=__doc__.split("\n")[0])
    cli.add_argument("image", nargs="?", help="the photo to prepare (PNG/JPEG/...)")
    cli.add_argument("--demo", action="store_true", help="use scikit-image's astronaut portrait")
    cli.add_argument("--out", default="standin_reference_steps", help="folder for the step PNGs")
    cli.add_argument("--weights-dir", help="folder with facexlib weights (e.g. ComfyUI/models/facexlib)")
    cli.add_argument("--detector", default="auto", choices=("auto", "lbp", *face_models.DETECTORS),
                     help="auto: RetinaFace if its weights are in --weights-dir, else the bundled LBP cascade")
    cli.add_argument("--face-index", type=int, default=-1, help="-1: largest face; 0, 1, ...: counted from the left")
    cli.add_argument("--subject", action="store_true", help="non-human subject: no detection, no parsing")
    cli.add_argument("--remove-neck-cloth-hat", action="store_true", help="also whiten neck, necklace, cloth, hat")
    cli.add_argument("--device", default="cpu", help="torch device for the facexlib models")
    cli.add_argument("--allow-download", action="store_true",
                     help="download missing facexlib weights into --weights-dir (off by default)")
    args = cli.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.demo == bool(args.image):
        cli.error("give a photo or --demo (not both)")
    if args.allow_download and not args.weights_dir:
        cli.error("--allow-download needs --weights-dir (where the files go)")
    if args.demo:
        from skimage import data
        source, name = data.astronaut(), "scikit-image astronaut"
    else:
        source, name = _read_image(args.image), args.image
    try:
        detector, parser, said = _pick_models(args)
        result = faces.prepare_reference(source, detector, parser, face_index=args.face_index,
                                         subject_mode=args.subject, remove_neck_cloth_hat=args.remove_neck_cloth_hat)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    rgb = faces.to_rgb_uint8(source)
    written = [_save(args.out, "1_input.png", rgb), _save(args.out, "2_detection.png", _draw_detections(rgb, result)),
               _save(args.out, "3_square.png", result.resized)]
    if result.parse_map is not None:
        written.append(_save(args.out, "4_parse.png", _parse_colors(result.parse_map)))
    written += [_save(args.out, "5_mask.png", (result.mask * 255).astype(np.uint8)),
                _save(args.out, "6_reference.png", result.image)]
    print(f"input: {name} ({rgb.shape[1]}x{rgb.shape[0]})")
    for line in said:
        print(line)
    print(f"faces found: {len(result.boxes)}; chosen: {result.face_box}; path: {result.path}; "
          f"window: {result.crop_window}")
    print("wrote:\n  " + "\n  ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
