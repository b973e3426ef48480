"""Face tools: EncodeReferenceFace (photo -> the reference Stand-In sees), StandInFaceMask (per-frame face masks) and
StandInFaceSwapPaste (the official face swap's paste).

The work is done by standin_core.faces (prepare, masks, models, swap); these classes validate, load the facexlib models
from models/facexlib (never downloading unless the user allows it) and convert between ComfyUI types and arrays.
The facexlib models are ComfyUI models: each is wrapped in a ModelPatcher and loaded with
``comfy.model_management.load_models_gpu`` before use, so ComfyUI counts their memory and unloads them (to the
offload device) like any other model when it needs room or when the user frees memory.
"""
import logging
import os

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io, ui

from ..standin_core.faces import masks as face_masks, models as face_models, prepare as faces, swap as face_swap
from .paths import FACEXLIB_FOLDER

log = logging.getLogger("standin")

# One ModelPatcher per facexlib model name (at most one per detector/parser kind), replaced when its weight file
# changes. Where the weights live (device or offload device) is ComfyUI's model management's business.
_PATCHERS: dict[str, comfy.model_patcher.ModelPatcher] = {}


def _file_identity(path):
    return None if path is None else (path, os.path.getmtime(path), os.path.getsize(path))


def _facexlib_patcher(name: str, allow_download: bool) -> comfy.model_patcher.ModelPatcher:
    """The cached ModelPatcher of one facexlib model, built (from models/facexlib) when missing or its file changed."""
    folders = folder_paths.get_folder_paths(FACEXLIB_FOLDER)
    device = comfy.model_management.get_torch_device()
    identity = (_file_identity(face_models.find_weights(name, folders)), str(device))
    patcher = _PATCHERS.get(name)
    if patcher is None or identity[0] is None or getattr(patcher, "standin_identity", None) != identity:
        load = face_models.load_face_parser if name in face_models.PARSERS else face_models.load_face_detector
        model = load(folders, name, device, allow_download)  # built on the device: facexlib keeps device tensors
        patcher = comfy.model_patcher.ModelPatcher(model, load_device=device,
                                                   offload_device=comfy.model_management.unet_offload_device())
        patcher.standin_identity = (_file_identity(face_models.find_weights(name, folders)), str(device))
        _PATCHERS[name] = patcher
    return patcher


def _facexlib_models(names, allow_download: bool) -> list:
    """The facexlib models a node needs, loaded together and whole (facexlib's layers cannot run partly offloaded,
    and loading one must not evict the other) by ComfyUI's model management."""
    folders = folder_paths.get_folder_paths(FACEXLIB_FOLDER)
    names = [name if name in face_models.PARSERS else face_models.choose_detector(name, folders, allow_download)
             for name in names]
    patchers = [_facexlib_patcher(name, allow_download) for name in names]
    comfy.model_management.load_models_gpu(patchers, force_full_load=True)
    return [patcher.model for patcher in patchers]


def _detector_and_parser(detector: str, allow_download: bool, normalization):
    detector_model, parser_model = _facexlib_models([detector, "bisenet"], allow_download)
    return face_models.retinaface_detector(detector_model), face_models.bisenet_parser(parser_model, normalization)


def _progress(total: int):
    """A ComfyUI progress bar ``progress(done, total)`` that also stops the node when the user cancels."""
    bar = comfy.utils.ProgressBar(total)

    def progress(done: int, count: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, count)
    return progress


def _detector_input():
    return io.Combo.Input(
        "detector", options=[face_models.AUTO_DETECTOR, *face_models.DETECTORS], default=face_models.AUTO_DETECTOR,
        tooltip=("facexlib RetinaFace, from ComfyUI/models/facexlib/. auto: whichever file is there, "
                 "detection_Resnet50_Final.pth (best) first, then detection_mobilenet0.25_Final.pth (small, faster); "
                 "resnet50 or mobile0.25: that file only."))


def _download_input():
    return io.Boolean.Input(
        "allow_download", default=False,
        tooltip=("Off: a missing facexlib weight file stops the run with the file name, folder and URL. On: missing "
                 "files are downloaded from the facexlib GitHub releases into models/facexlib, and kept only if "
                 "their SHA-256 is the published one."))


class EncodeReferenceFace(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EncodeReferenceFace",
            display_name="Encode Stand-In Reference Face",
            category="Stand-In",
            description=(
                "Prepares a reference photo exactly as Stand-In was trained (largest face, 1.5x square crop, 512x512, "
                "background replaced by white using face parsing) and encodes it with the Wan VAE into the one-frame "
                "reference latent for ApplyStandInToWanModel. The node shows the prepared face (what the model sees) "
                "and a one-line report: the face found, or why the whole image was used. Needs detection and parsing "
                "weights in models/facexlib unless subject mode is on."),
            inputs=[
                io.Image.Input("image", tooltip="One reference photo (a batch of one). The face should be visible; "
                                                "larger and sharper faces keep the identity better."),
                io.Vae.Input("vae", tooltip="The Wan VAE of the model you sample with (Wan2.1 VAE for Wan2.1/2.2 "
                                            "14B)."),
                io.Int.Input("face_index", default=-1, min=-1, max=63,
                             tooltip="Which face when the photo has several: -1 = the largest, 0 = the leftmost, "
                                     "1 = the next one to the right, ..."),
                io.Boolean.Input("subject_mode", default=False, label_on="any subject", label_off="face",
                                 tooltip="Off (face): detect, crop and parse the face. On (any subject): for cartoons, "
                                         "animals or objects: no detection, no parsing, the whole image padded to a "
                                         "white square; needs no face weights."),
                io.Boolean.Input("remove_neck_cloth_hat", default=False,
                                 tooltip="Off: only the background becomes white (the official Stand-In code). On: "
                                         "neck, necklace, clothes and hat become white too (the official ComfyUI "
                                         "preprocessor's default); hair is kept."),
                _detector_input(),
                _download_input(),
            ],
            outputs=[
                io.Latent.Output(display_name="reference_latent",
                                 tooltip="The prepared face through the VAE: one latent frame (raw, not normalised)."),
                io.Image.Output(display_name="prepared_image", tooltip="The 512x512 reference the model sees."),
                io.Mask.Output(display_name="mask", tooltip="1 where the photo shows, 0 where it was made white."),
                io.Image.Output(display_name="cutout", tooltip=(
                    "For face swap (Stand-In Face Swap Paste): the same 512x512 crop before the background was made "
                    "white.")),
                io.Mask.Output(display_name="cutout_alpha", tooltip=(
                    "For face swap: 1 where the face parser saw anything but background (hair, neck and clothes "
                    "included), the official face swap's cut-out.")),
                io.String.Output(display_name="report", tooltip=(
                    "What was found and used, in one line: the face's position and size, or why the whole image was "
                    "used (no face, a face reaching the borders, subject mode), and any warning (a small face, no "
                    "parser). The node shows it too, under the prepared face.")),
            ],
        )

    @classmethod
    def execute(cls, image, vae, face_index=-1, subject_mode=False, remove_neck_cloth_hat=False,
                detector=face_models.AUTO_DETECTOR, allow_download=False) -> io.NodeOutput:
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"EncodeReferenceFace takes one reference photo, got a batch of {image.shape[0]} images: "
                             "pick one with 'Get Image from Batch' (ImageFromBatch)")
        detect = parse = None
        if not subject_mode:
            detect, parse = _detector_and_parser(detector, allow_download, face_models.REFERENCE_NORMALIZATION)
        result = faces.prepare_reference(image, detect, parse, face_index=face_index, subject_mode=subject_mode,
                                         remove_neck_cloth_hat=remove_neck_cloth_hat)
        log.info("Stand-In reference: %s", result.report)
        prepared = torch.from_numpy(result.image).float().div(255.0).unsqueeze(0)
        mask = torch.from_numpy(result.mask).unsqueeze(0)
        latent = vae.encode(prepared[..., :3])
        cutout = face_swap.face_cutout(result)
        cutout_rgb = torch.from_numpy(cutout[..., :3]).float().div(255.0)[None]
        shown = {**ui.PreviewImage(prepared, cls=cls).as_dict(), **ui.PreviewText(result.report).as_dict()}
        return io.NodeOutput({"samples": latent}, prepared, mask, cutout_rgb,
                             torch.from_numpy(cutout[..., 3] > 0).float()[None], result.report, ui=shown)


class StandInFaceMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StandInFaceMask",
            display_name="Stand-In Face Mask (per frame)",
            category="Stand-In",
            description=(
                "One mask per video frame covering the face (skin, brows, eyes, glasses, ears, nose, mouth, lips), "
                "as the official Stand-In face swap builds it in its fallback path (no landmark match: the face-parse "
                "mask of the 1.5x face window, videomask_generator.py): largest face per frame, face parsing, "
                "dilation and feathering. Frames without a face get an empty mask. For the official face swap itself "
                "(reference pasted with landmark matching) use Stand-In Face Swap Paste, which also gives masks."),
            inputs=[
                io.Image.Input("images", tooltip="Video frames (an IMAGE batch)."),
                io.Int.Input("dilation", default=face_masks.DILATION, min=0, max=128,
                             tooltip="Grow the face region by an elliptic kernel of this size (pixels of the 512x512 "
                                     "face crop); 0 = off. Official: 10."),
                io.Int.Input("feather", default=face_masks.FEATHER, min=0, max=255,
                             tooltip="Soften the mask edge with a Gaussian blur of this size (512x512 crop pixels, "
                                     "made odd); 0 = hard edge. Official: 21."),
                _detector_input(),
                _download_input(),
            ],
            outputs=[io.Mask.Output(display_name="face_masks", tooltip="Masks [frames, H, W] in 0..1.")],
        )

    @classmethod
    def execute(cls, images, dilation=face_masks.DILATION, feather=face_masks.FEATHER,
                detector=face_models.AUTO_DETECTOR, allow_download=False) -> io.NodeOutput:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"StandInFaceMask needs an IMAGE batch [frames, H, W, C], got shape {tuple(images.shape)}")
        detect, parse = _detector_and_parser(detector, allow_download, face_models.IMAGENET_NORMALIZATION)
        masks = face_masks.face_masks(images, detect, parse, dilation=dilation, feather=feather,
                                      progress=_progress(images.shape[0]))
        return io.NodeOutput(torch.from_numpy(masks))


class StandInFaceSwapPaste(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from .swap import SwapGeometryType  # the composite node's module owns the type

        def cutout_tip(index):
            return (f"Several people (this pack's own): person {index}'s 'cutout' from Encode Stand-In Reference "
                    f"Face. With several cut-outs, cut-out j goes onto the j-th face from the left of each frame "
                    f"(reference_cutout is person 1); connect them in order, from 2 up.")

        def alpha_tip(index):
            return (f"Person {index}'s 'cutout_alpha' from Encode Stand-In Reference Face (with "
                    f"reference_cutout_{index}).")
        return io.Schema(
            node_id="StandInFaceSwapPaste",
            display_name="Stand-In Face Swap Paste",
            category="Stand-In",
            description=(
                "Step one of the official Stand-In face swap. Fits the video for Wan (scaled to the chosen size "
                "keeping its aspect ratio, sides multiples of 16, at most max_frames frames, 4n+1), then pastes the "
                "reference face onto the largest face of every frame: by default warped by the similarity transform "
                "between the two faces' 5 keypoints (angle and size matched), else resized into the face window "
                "through its face-parse mask. Frames without a face are left as they are. Then VAE Encode the frames "
                "and KSampler at denoise 0.85 with the Stand-In model; to hold the background, put the masks through "
                "Threshold Mask (0.5, the official hard mask) and Set Latent Noise Mask. Finally Stand-In Face Swap "
                "Composite puts the result back into the original video, using the 'swap' output. Several people (this "
                "pack's own): connect reference_cutout_2.._4 too; cut-out j then goes onto the j-th face from the "
                "left of each frame (a frame missing someone: each face to the person nearest in the nearest frame "
                "showing everyone), and region_j, with person j's reference latent, goes into Stand-In "
                "References."),
            inputs=[
                io.Image.Input("images", tooltip="The video's frames (an IMAGE batch, e.g. from Get Video "
                                                 "Components)."),
                io.Image.Input("reference_cutout", tooltip="The 'cutout' output of Encode Stand-In Reference Face."),
                io.Mask.Input("reference_alpha",
                              tooltip="The 'cutout_alpha' output of Encode Stand-In Reference Face."),
                io.Boolean.Input("match_angle_and_size", default=True, tooltip=(
                    "On (official default): warp the face so its eyes, nose and mouth land on the frame face's. Off: "
                    "paste it upright into the 1.5x face window through the face-parse mask.")),
                io.Float.Input("confidence", default=face_swap.SWAP_CONFIDENCE, min=0.0, max=1.0, step=0.01,
                               tooltip="A frame's largest face is replaced only if its detection score is above this "
                                       "(official: 0.5)."),
                io.Float.Input("crop_scale", default=faces.CROP_SCALE, min=1.0, max=3.0, step=0.05,
                               tooltip="Window paste: the face window is this many times the face box "
                                       "(official: 1.5)."),
                io.Int.Input("dilation", default=face_masks.DILATION, min=0, max=128,
                             tooltip="Window paste: grow the face-parse mask by an elliptic kernel of this size "
                                     "(pixels of the 512x512 crop); official: 10."),
                io.Int.Input("feather", default=face_masks.FEATHER, min=0, max=255,
                             tooltip="Window paste: soften the mask edge with a Gaussian of this size; official: 21."),
                io.Boolean.Input("crop_and_trim", default=True, tooltip=(
                    "On: fit the video for Wan as size, first_frame and max_frames say (sides multiples of 16, 4n+1 "
                    "frames). Off: keep the frames exactly as they are, all of them (they must already fit Wan; "
                    "size, first_frame and max_frames are then not used).")),
                _detector_input(),
                _download_input(),
                io.Combo.Input("size", options=list(face_swap.FIT_SIZES), default=face_swap.FIT_DEFAULT,
                               optional=True, tooltip=(
                                   "The most pixels a frame may have for Wan; larger videos are scaled down keeping "
                                   "their aspect ratio (only the remainder to a multiple of 16 is cropped), smaller "
                                   "ones are never scaled up. 480p: 832x480 worth of pixels, the official Stand-In "
                                   "size, the one for 24 GB cards. 720p: 1280x720 worth, about 2.3x the memory and "
                                   "time. source: the video's own size (the official face swap; a 1080p video then "
                                   "goes whole into the sampler).")),
                io.Int.Input("first_frame", default=0, min=0, max=1_000_000, optional=True, tooltip=(
                    "The first frame of the video to use (0 = the start); the audio is cut to match by Stand-In "
                    "Face Swap Composite.")),
                io.Int.Input("max_frames", default=face_swap.MAX_FRAMES, min=1, max=100_001, step=4, optional=True,
                             tooltip=("At most this many frames from first_frame, then the most of the form 4n+1 "
                                      "(Wan's). 81 (official) is about 2.7 s at 30 fps; memory and time grow with "
                                      "it.")),
                io.Image.Input("reference_cutout_2", optional=True, tooltip=cutout_tip(2)),
                io.Mask.Input("reference_alpha_2", optional=True, tooltip=alpha_tip(2)),
                io.Image.Input("reference_cutout_3", optional=True, tooltip=cutout_tip(3)),
                io.Mask.Input("reference_alpha_3", optional=True, tooltip=alpha_tip(3)),
                io.Image.Input("reference_cutout_4", optional=True, tooltip=cutout_tip(4)),
                io.Mask.Input("reference_alpha_4", optional=True, tooltip=alpha_tip(4)),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="The frames with the reference face pasted in."),
                     io.Mask.Output(display_name="masks", tooltip=(
                         "Per frame: where the face was pasted (the warped alpha, or the face-parse mask); empty "
                         "where no face was found. Feed to Set Latent Noise Mask to keep the rest of the video.")),
                     SwapGeometryType.Output(display_name="swap", tooltip=(
                         "Where these frames came from in the original video (frames used, crop rectangle, scale): "
                         "for Stand-In Face Swap Composite, which puts the result back.")),
                     *[io.Mask.Output(f"region_{index}", display_name=f"region_{index}", tooltip=(
                         f"Person {index}'s region for Stand-In References' region_{index} (with the same person's "
                         f"reference_latent): per frame, where their face was pasted, grown by "
                         f"{face_swap.REGION_GROW} px (one Wan token) so every token of the face is in it; empty "
                         f"where their face is missing."
                         + (f" All 0 (one frame) when reference_cutout_{index} is not connected." if index > 1
                            else ""))) for index in range(1, face_swap.MAX_PEOPLE + 1)]],
        )

    @classmethod
    def execute(cls, images, reference_cutout, reference_alpha, match_angle_and_size=True,
                confidence=face_swap.SWAP_CONFIDENCE, crop_scale=faces.CROP_SCALE, dilation=face_masks.DILATION,
                feather=face_masks.FEATHER, crop_and_trim=True, detector=face_models.AUTO_DETECTOR,
                allow_download=False, size=face_swap.FIT_DEFAULT, first_frame=0,
                max_frames=face_swap.MAX_FRAMES, **more) -> io.NodeOutput:
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError("Stand-In Face Swap Paste needs video frames [frames, H, W, C], got "
                             f"{tuple(images.shape)}")
        pairs = [(reference_cutout, reference_alpha, "")]
        for index in range(2, face_swap.MAX_PEOPLE + 1):
            pair = more.pop(f"reference_cutout_{index}", None), more.pop(f"reference_alpha_{index}", None)
            if (pair[0] is None) != (pair[1] is None):
                raise ValueError(f"connect both reference_cutout_{index} and reference_alpha_{index} (the 'cutout' "
                                 "and 'cutout_alpha' outputs of the same Encode Stand-In Reference Face)")
            if pair[0] is not None:
                if len(pairs) != index - 1:
                    raise ValueError(f"reference_cutout_{index} is connected but reference_cutout_{len(pairs) + 1} "
                                     "is not: connect the people in order, from 2 up")
                pairs.append((*pair, f"_{index}"))
        if more:
            raise TypeError(f"Stand-In Face Swap Paste got unknown inputs: {', '.join(sorted(more))}")
        if size not in face_swap.FIT_SIZES:
            raise ValueError(f"size must be one of {', '.join(face_swap.FIT_SIZES)}, got {size!r}")
        geometry = face_swap.plan_fit(images.shape[0], images.shape[2], images.shape[1],
                                      max_pixels=face_swap.FIT_SIZES[size], max_frames=max_frames,
                                      first_frame=first_frame, fit=crop_and_trim)
        cutouts = []
        for cut, cut_alpha, suffix in pairs:
            cut_size = tuple(cut.shape[1:3])
            if cut.ndim != 4 or cut.shape[0] != 1 or tuple(cut_alpha.shape[-2:]) != cut_size \
                    or cut_alpha.numel() != cut_size[0] * cut_size[1]:
                raise ValueError(f"reference_cutout{suffix} and reference_alpha{suffix} must be the 'cutout' and "
                                 "'cutout_alpha' outputs of Encode Stand-In Reference Face (one image and its mask "
                                 "of the same size)")
            rgb = faces.to_rgb_uint8(cut[0])
            alpha = (cut_alpha.reshape(cut_size).clamp(0, 1) * 255).round().to(torch.uint8)
            cutouts.append(np.dstack([rgb, alpha.cpu().numpy()]))
        threshold = min(confidence, face_models.DETECTION_CONFIDENCE)  # the node's own check is `confidence`
        (detector_model,) = _facexlib_models([detector], allow_download)
        detect = face_models.retinaface_detector(detector_model, threshold, landmarks=True)
        parser = None

        def parse(crop):  # the face parser is loaded only if a frame needs the window paste (with the detector)
            nonlocal parser
            if parser is None:
                parser = face_models.bisenet_parser(_facexlib_models([detector, "bisenet"], allow_download)[1],
                                                    face_models.IMAGENET_NORMALIZATION)
            return parser(crop)
        progress = _progress(geometry.frame_count)
        fitted = face_swap.fit_frames(images, geometry)
        options = dict(match_angle_and_size=match_angle_and_size, confidence=confidence, crop_scale=crop_scale,
                       dilation=dilation, feather=feather, crop=False, progress=progress)
        if len(cutouts) == 1:  # the official face swap: the largest face
            frames, masks, how = face_swap.swap_faces(fitted, cutouts[0], detect, parse, **options)
            people, how = masks[None], [[kind] for kind in how]
        else:  # person j on the j-th face from the left
            frames, masks, people, how = face_swap.swap_faces(fitted, cutouts, detect, parse, **options)
        for person in range(len(cutouts)):
            kinds = [frame[person] for frame in how]
            log.info("Stand-In face swap%s: %s; %d warped, %d window pastes, %d without a face",
                     f", person {person + 1}" if len(cutouts) > 1 else "", geometry, kinds.count("warped"),
                     kinds.count("window"), kinds.count("no_face"))
        regions = [torch.from_numpy(region) for region in face_swap.person_regions(people)]
        empty = torch.zeros(1, *masks.shape[1:])
        return io.NodeOutput(torch.from_numpy(frames).float().div(255.0), torch.from_numpy(masks), geometry,
                             *regions, *[empty] * (face_swap.MAX_PEOPLE - len(regions)))


NODES = [EncodeReferenceFace, StandInFaceMask, StandInFaceSwapPaste]
