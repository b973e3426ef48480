"""The face swap to the end inside a real ComfyUI (COMFYUI_PATH): Stand-In Face Swap Paste's fit and its 'swap'
output, Stand-In Face Swap Composite, and the chain through ComfyUI's own video nodes.

Real data: the clip tests/data/short_hamilton_clip.mp4 (640x360, 275 frames, 29.97 fps, 44.1 kHz stereo AAC) as
ComfyUI's Load Video decodes it, the REAL RetinaFace mobile0.25 weights, and the performer's own face cut from frame
150 of the clip as the reference. The re-sampled frames are stood in for by the pasted frames inverted (1 - x), so
every pixel the composite takes from them differs from the original. The expectation is written out in
tests/support/swap_oracle.py.
"""
import asyncio
import importlib
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_standin.devtools.comfyui_server import combo_options
from comfyui_standin.tests.support import swap_oracle

pytestmark = pytest.mark.comfyui
DATA = Path(__file__).resolve().parent / "data"
CLIP = DATA / "short_hamilton_clip.mp4"
GEOMETRY_TYPE = "STANDIN_SWAP_GEOMETRY"


@pytest.fixture(scope="module")
def nodes_swap(comfy):
    return importlib.import_module("comfyui_standin.nodes.swap")


@pytest.fixture(scope="module")
def clip_components(comfy):
    """The clip as ComfyUI's Load Video / Get Video Components give it: images, audio, fps."""
    from comfy_api.latest import InputImpl
    components = InputImpl.VideoFromFile(str(CLIP)).get_components()
    return components.images, components.audio, float(components.frame_rate)


def performer(images) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference cut-out: the performer's face from frame 150 (rows 0..199, columns 150..349), all opaque."""
    return images[150:151, 0:200, 150:350].clone(), torch.ones(1, 200, 200)


def test_schemas_are_complete_and_the_swap_type_connects(comfy, nodes_swap, nodes_faces):
    composite = nodes_swap.StandInFaceSwapComposite
    schema = composite.GET_SCHEMA()  # ComfyUI's own validation of the schema
    assert (schema.node_id, schema.display_name, schema.category) == (
        "StandInFaceSwapComposite", "Stand-In Face Swap Composite", "Stand-In")
    assert len(schema.description) > 40
    assert all(item.tooltip for item in schema.inputs), [i.id for i in schema.inputs if not i.tooltip]
    assert all(item.tooltip for item in schema.outputs)
    inputs = composite.INPUT_TYPES()
    assert {name: spec[0] for name, spec in inputs["required"].items()} == {
        "original_images": "IMAGE", "generated_images": "IMAGE", "masks": "MASK", "swap": GEOMETRY_TYPE,
        "feather": "INT"}
    assert {name: spec[0] for name, spec in inputs["optional"].items()} == {"audio": "AUDIO", "fps": "FLOAT"}
    assert inputs["optional"]["fps"][1]["forceInput"] is True
    assert tuple(composite.RETURN_TYPES) == ("IMAGE", "AUDIO")
    paste = nodes_faces.StandInFaceSwapPaste
    paste.GET_SCHEMA()
    assert tuple(paste.RETURN_TYPES) == ("IMAGE", "MASK", GEOMETRY_TYPE, "MASK", "MASK", "MASK", "MASK")
    assert tuple(paste.RETURN_NAMES) == ("frames", "masks", "swap", "region_1", "region_2", "region_3", "region_4")
    optional = paste.INPUT_TYPES()["optional"]
    assert combo_options(optional["size"]) == ["480p", "720p", "source"] and optional["size"][1]["default"] == "480p"
    assert optional["first_frame"][1]["default"] == 0 and optional["max_frames"][1]["default"] == 81
    assert all(spec[1].get("tooltip") for spec in optional.values())
    extension = asyncio.run(comfy.comfy_entrypoint())
    ids = [node.define_schema().node_id for node in asyncio.run(extension.get_node_list())]
    assert ids.count("StandInFaceSwapComposite") == 1 and "StandInFaceSwapPaste" in ids


def test_paste_fits_the_video_and_records_where_the_frames_came_from(nodes_faces, facexlib_folder,
                                                                     real_detector_folder, clip_components):
    """The size, first_frame and max_frames inputs reach the fit. A 1920x1080 video without faces: 480p gives
    832x464 from the centred 1920x1071 rectangle, 720p 1280x720 from all of it, crop_and_trim off the frames as
    they are; the clip at its own size: the official 640x352 crop of the frames asked for."""
    facexlib_folder(real_detector_folder)
    images, _, _ = clip_components
    cutout, alpha = performer(images)
    gray = torch.full((7, 1080, 1920, 3), 0.5)
    expected = {"480p": ((0, 4, 1920, 1071), (832, 464)), "720p": ((0, 0, 1920, 1080), (1280, 720))}
    for size, (crop, fitted) in expected.items():
        frames, masks, geometry = nodes_faces.StandInFaceSwapPaste.execute(
            gray, cutout, alpha, detector="retinaface_mobile0.25", size=size, first_frame=1).result[:3]
        assert (geometry.crop, geometry.size, geometry.first_frame, geometry.frame_count) == (crop, fitted, 1, 5)
        assert frames.shape == (5, fitted[1], fitted[0], 3) and masks.shape == (5, fitted[1], fitted[0])
        assert torch.equal(frames, torch.full_like(frames, 128 / 255)) and masks.max() == 0  # no face: unchanged
    frames, _, geometry = nodes_faces.StandInFaceSwapPaste.execute(
        gray[:, :100, :200], cutout, alpha, detector="retinaface_mobile0.25", crop_and_trim=False).result[:3]
    assert (geometry.crop, geometry.size, geometry.frame_count) == ((0, 0, 200, 100), (200, 100), 7)
    assert frames.shape == (7, 100, 200, 3)
    frames, masks, geometry = nodes_faces.StandInFaceSwapPaste.execute(
        images, cutout, alpha, detector="retinaface_mobile0.25", first_frame=100, max_frames=6).result[:3]
    assert (geometry.source_size, geometry.source_frames, geometry.crop, geometry.size) == (
        (640, 360), 275, (0, 4, 640, 352), (640, 352))
    assert list(geometry.frames) == [100, 101, 102, 103, 104] and frames.shape == (5, 352, 640, 3)
    assert all(mask.mean() > 0.01 for mask in masks)  # the face was found and pasted on every frame
    outside = masks == 0
    assert torch.equal(frames[outside], (images[100:105, 4:356] * 255).round().div(255)[outside])
    with pytest.raises(ValueError, match="first_frame 275 is outside the video's 275 frames"):
        nodes_faces.StandInFaceSwapPaste.execute(images, cutout, alpha, detector="retinaface_mobile0.25",
                                                 first_frame=275)


@pytest.fixture(scope="module")
def pasted_clip(comfy, clip_components, real_detector_folder):
    """The paste node on the clip at its own size, frames 100..104 (facexlib folder set for this fixture only)."""
    import folder_paths
    nodes_faces = importlib.import_module("comfyui_standin.nodes.faces")
    images, _, _ = clip_components
    saved = folder_paths.folder_names_and_paths["facexlib"]
    folder_paths.folder_names_and_paths["facexlib"] = ([str(real_detector_folder)], {".pth"})
    try:
        return nodes_faces.StandInFaceSwapPaste.execute(images, *performer(images), detector="retinaface_mobile0.25",
                                                        first_frame=100, max_frames=6).result[:3]
    finally:
        folder_paths.folder_names_and_paths["facexlib"] = saved
        nodes_faces._PATCHERS.clear()


def test_composite_puts_the_face_back_into_the_original_frames_and_cuts_the_audio(nodes_swap, clip_components,
                                                                                  pasted_clip):
    """On the clip at its own size, fps and audio: the output is original frames 100..104 at 640x360; outside the
    feathered, mapped-back masks they EQUAL the original, everywhere they are the oracle's per-pixel blend; the
    audio is ComfyUI's decoded audio from 100 / 29.97 s to 105 / 29.97 s: samples 147147 up to 154505."""
    images, audio, fps = clip_components
    assert (images.shape, fps, audio["sample_rate"]) == ((275, 360, 640, 3), 29.97, 44100)
    pasted, masks, geometry = pasted_clip
    generated = 1 - pasted
    out, cut = nodes_swap.StandInFaceSwapComposite.execute(images, generated, masks, geometry, feather=10,
                                                           audio=audio, fps=fps).result
    assert out.shape == (5, 360, 640, 3) and out.dtype == torch.float32
    for index in range(5):
        original = images[100 + index].numpy()
        outside = ~swap_oracle.reach(masks[index].numpy(), geometry, 10)
        assert 0.6 < outside.mean() < 0.95  # the whole 200x200 cut-out is pasted: face, hair, shirt
        assert np.array_equal(out[index].numpy()[outside], original[outside])
        expected, weight = swap_oracle.expected_frame(original, generated[index].numpy(), masks[index].numpy(),
                                                      geometry, 10)
        assert np.abs(out[index].numpy() - expected).max() <= 1e-5  # values in 0..1; float32 rounding ~1e-7
        assert np.abs(out[index].numpy() - original)[weight > 0.999].mean() > 0.2  # the face changed
    assert cut["sample_rate"] == 44100
    assert torch.equal(cut["waveform"], audio["waveform"][..., 147147:154505])
    out_silent, no_audio = nodes_swap.StandInFaceSwapComposite.execute(images, generated, masks, geometry).result
    assert no_audio is None and torch.equal(out_silent, nodes_swap.StandInFaceSwapComposite.execute(
        images, generated, masks, geometry, feather=10).result[0])
    with pytest.raises(ValueError, match="connect Get Video Components' fps"):
        nodes_swap.StandInFaceSwapComposite.execute(images, generated, masks, geometry, audio=audio)
    with pytest.raises(ValueError, match="connect the same images that went into Stand-In Face Swap Paste"):
        nodes_swap.StandInFaceSwapComposite.execute(images[:100], generated, masks, geometry)


def two_people_frames() -> torch.Tensor:
    """two_people.jpg (two real faces side by side) as a 5-frame 960x480 IMAGE batch, the frame moving 40 px to
    the right each frame; in frame 2 the left face is covered by a flat grey box."""
    import cv2
    photo = cv2.cvtColor(cv2.imread(str(DATA / "two_people.jpg")), cv2.COLOR_BGR2RGB)
    frames = np.stack([photo[0:480, shift:shift + 960] for shift in (0, 40, 80, 120, 160)]).copy()
    frames[2, 0:300, 130:340] = 128
    return torch.from_numpy(frames).float().div(255)


def photo_cutout(name: str, rows: slice, cols: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """A cut-out straight from a real photo: the rectangle around its face, all opaque."""
    import cv2
    photo = cv2.cvtColor(cv2.imread(str(DATA / name)), cv2.COLOR_BGR2RGB)[rows, cols]
    return torch.from_numpy(np.ascontiguousarray(photo)).float().div(255)[None], torch.ones(1, *photo.shape[:2])


def test_paste_with_two_cutouts_gives_each_person_a_region_for_stand_in_references(comfy, nodes_faces,
                                                                                   facexlib_folder,
                                                                                   real_detector_folder):
    """Two real cut-outs (biden2.jpg, obama2.jpg) on the two-faces video: masks is the per-pixel max of the two
    persons' pastes (the core's swap_faces with the same cut-outs); region_j is person j's paste grown by 16 px,
    person 1 on the left face, person 2 on the right, person 1 empty in the frame without the left face; every
    pasted pixel is in a region; region_3/4 are one empty frame of the Wan size. Stand-In References takes
    region_1/region_2 with two latents, and its token rule gives each person tokens on their own side."""
    from comfyui_standin.nodes import references
    from comfyui_standin.nodes.install import REGIONS_KEY
    from comfyui_standin.standin_core.faces import models as face_models, swap
    from comfyui_standin.standin_core.regions import token_regions
    facexlib_folder(real_detector_folder)
    images = two_people_frames()
    first = photo_cutout("biden2.jpg", slice(120, 800), slice(380, 910))
    second = photo_cutout("obama2.jpg", slice(180, 680), slice(170, 520))
    result = nodes_faces.StandInFaceSwapPaste.execute(
        images, *first, detector="retinaface_mobile0.25", size="source", reference_cutout_2=second[0],
        reference_alpha_2=second[1]).result
    frames, masks, geometry, *regions = result
    assert len(regions) == 4 and geometry.size == (960, 480) and frames.shape == (5, 480, 960, 3)
    (detector_model,) = nodes_faces._facexlib_models(["retinaface_mobile0.25"], False)
    detector = face_models.retinaface_detector(detector_model, landmarks=True)
    rgba = [np.dstack([(cut[0].numpy() * 255).round().astype(np.uint8), (alpha[0].numpy() * 255).astype(np.uint8)])
            for cut, alpha in (first, second)]
    expected, union, people, how = swap.swap_faces((images.numpy() * 255).round().astype(np.uint8), rgba, detector,
                                                   None, crop=False)
    assert how == [["warped", "warped"]] * 2 + [["no_face", "warped"]] + [["warped", "warped"]] * 2
    people = torch.from_numpy(people)
    assert torch.equal(masks, torch.maximum(people[0], people[1])) and torch.equal(masks, torch.from_numpy(union))
    assert torch.equal(frames, torch.from_numpy(expected).float().div(255))
    for person in range(2):
        assert regions[person].shape == (5, 480, 960)
        assert torch.equal(regions[person], torch.from_numpy(swap.person_regions(people[person:person + 1].numpy())[0]))
        assert regions[person][people[person] > 0].min() == 1  # the whole paste is in the region, grown past it
    assert regions[0][2].max() == 0 and regions[0][[0, 1, 3, 4]].amax(dim=(1, 2)).min() == 1
    for index in (0, 1, 3, 4):  # person 1 left of person 2 in every frame showing both
        left, right = (torch.nonzero(regions[person][index])[:, 1].float().mean() for person in range(2))
        assert left < 480 < right
    assert torch.equal(torch.maximum(regions[0], regions[1])[masks > 0], torch.ones_like(masks[masks > 0]))
    assert all(torch.equal(region, torch.zeros(1, 480, 960)) for region in regions[2:])
    latents = [{"samples": torch.full((1, 16, 1, 64, 64), float(value))} for value in (1, 2)]
    (combined,) = references.StandInReferences.execute(reference_1=latents[0], strength_1=1.0, region_1=regions[0],
                                                       reference_2=latents[1], strength_2=1.0,
                                                       region_2=regions[1]).result
    assert combined[REGIONS_KEY][0] is regions[0] and combined[REGIONS_KEY][1] is regions[1]
    tokens = token_regions(torch.stack(combined[REGIONS_KEY]), (2, 30, 60)).reshape(2, 2, 30, 60)
    assert tokens[0].any() and tokens[1].any() and not (tokens[0] & tokens[1]).any()
    assert tokens[0].nonzero()[:, 2].max() < 30 <= tokens[1].nonzero()[:, 2].min()
    with pytest.raises(ValueError, match="connect both reference_cutout_2 and reference_alpha_2"):
        nodes_faces.StandInFaceSwapPaste.execute(images, *first, detector="retinaface_mobile0.25",
                                                 reference_cutout_2=second[0])
    with pytest.raises(ValueError, match="reference_cutout_3 is connected but reference_cutout_2 is not"):
        nodes_faces.StandInFaceSwapPaste.execute(images, *first, detector="retinaface_mobile0.25",
                                                 reference_cutout_3=second[0], reference_alpha_3=second[1])


def swap_graph(video_file: str, photo: str, first_frame: int, max_frames: int, prefix: str) -> dict:
    """Load Video -> Get Video Components -> Stand-In Face Swap Paste -> (Image Invert, for the sampler) ->
    Stand-In Face Swap Composite (with the audio and fps) -> Create Video (the fps, the composite's audio) ->
    Save Video."""
    return {
        "video": {"class_type": "LoadVideo", "inputs": {"file": video_file}},
        "parts": {"class_type": "GetVideoComponents", "inputs": {"video": ["video", 0]}},
        "photo": {"class_type": "LoadImage", "inputs": {"image": photo}},
        "alpha": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 200, "height": 200}},
        "paste": {"class_type": "StandInFaceSwapPaste", "inputs": {
            "images": ["parts", 0], "reference_cutout": ["photo", 0], "reference_alpha": ["alpha", 0],
            "match_angle_and_size": True, "confidence": 0.5, "crop_scale": 1.5, "dilation": 10, "feather": 21,
            "crop_and_trim": True, "detector": "retinaface_mobile0.25", "allow_download": False, "size": "480p",
            "first_frame": first_frame, "max_frames": max_frames}},
        "resampled": {"class_type": "ImageInvert", "inputs": {"image": ["paste", 0]}},
        "composite": {"class_type": "StandInFaceSwapComposite", "inputs": {
            "original_images": ["parts", 0], "generated_images": ["resampled", 0], "masks": ["paste", 1],
            "swap": ["paste", 2], "feather": 10, "audio": ["parts", 1], "fps": ["parts", 2]}},
        "create": {"class_type": "CreateVideo", "inputs": {
            "images": ["composite", 0], "fps": ["parts", 2], "audio": ["composite", 1]}},
        "save": {"class_type": "SaveVideo", "inputs": {
            "video": ["create", 0], "filename_prefix": f"video/{prefix}", "format": "auto", "codec": "auto"}},
    }


def best_lag(recorded: np.ndarray, source: np.ndarray, at: int, search: int) -> tuple[int, float]:
    """The shift of ``recorded`` (mono) within ``source`` around sample ``at`` (+-``search``) where they match best,
    and the normalised correlation there."""
    best = (0, -1.0)
    for lag in range(-search, search + 1, 4):
        part = source[at + lag:at + lag + len(recorded)]
        score = float(np.dot(part, recorded) / (np.linalg.norm(part) * np.linalg.norm(recorded) + 1e-12))
        best = max(best, (lag, score), key=lambda item: item[1])
    return best


def test_real_video_nodes_carry_the_fps_and_the_audio_through_the_composite(server, clip_components):
    """Through the real executor with ComfyUI's own Load Video, Get Video Components, Create Video and Save Video:
    the saved file, read back with PyAV, is 640x360 at exactly 2997/100 fps with the 21 frames the paste used
    (100..120); its audio is 44.1 kHz stereo, as long as those frames, and is the source's audio from frame 100
    on (found by correlation with ComfyUI's decoded audio, within the AAC encoder's 1024-sample delay); its frames
    are the original frames 100..120 (H.264 keeps them within a few levels) except on the face."""
    import av
    from comfyui_standin.devtools.comfyui_server import PERFORMER_PHOTO
    from comfyui_standin.tests.support.server_graphs import assert_success
    images, audio, _ = clip_components
    shutil.copy(CLIP, server.base / "input" / "standin_composite_clip.mp4")
    entry = server.run(swap_graph("standin_composite_clip.mp4", PERFORMER_PHOTO, 100, 21, "standin_composite"))
    assert_success(server, entry)
    (saved,) = sorted((server.base / "output" / "video").glob("standin_composite*.mp4"))
    with av.open(str(saved)) as container:
        stream = container.streams.video[0]
        assert Fraction(stream.average_rate) == Fraction(2997, 100)
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
    assert frames.shape == (21, 360, 640, 3)
    recorded, rate = swap_oracle.read_audio(saved)
    assert rate == 44100 and recorded.shape[0] == 2
    expected_samples = 178048 - 147147  # frames 100..120: 100 / 29.97 s = sample 147147.1, 121 / 29.97 s = 178048.05
    assert abs(recorded.shape[1] - expected_samples) <= 2048, recorded.shape  # AAC frames are 1024 samples
    source = audio["waveform"][0].mean(0).numpy()
    lag, score = best_lag(recorded.mean(0)[2048:2048 + 16384], source, 147147 + 2048, 4096)
    assert abs(lag) <= 1100 and score > 0.9, (lag, score)
    originals = (images[100:121].numpy() * 255).round()
    difference = np.abs(frames.astype(np.float64) - originals).max(axis=3)
    for index, frame_difference in enumerate(difference):
        # the original, but where the (whole 200x200) cut-out went: the inverted face, hair and shirt
        assert np.mean(frame_difference <= 16) > 0.7, index
        assert 0.05 < np.mean(frame_difference > 80) < 0.3, index
        other = np.abs(frames[index].astype(np.float64) - (images[index].numpy() * 255).round()).max(axis=2)
        assert np.mean(other <= 16) < np.mean(frame_difference <= 16) - 0.1  # frame 100 + i, not frame i
