"""EncodeReferenceFace and StandInFaceMask inside a real ComfyUI (COMFYUI_PATH), with generated facexlib weights.

The VAE is a recording stand-in: the node's contract is to pass the prepared [1, 512, 512, 3] image to
``vae.encode`` and return its result as the LATENT; the Wan VAE itself is ComfyUI's.
"""
import asyncio
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_standin.standin_core.faces.video import read_video
from comfyui_standin.tests.support.faces import RecordingVAE, assert_shows, comfy_image

pytestmark = pytest.mark.comfyui
DATA = Path(__file__).resolve().parent / "data"
from skimage import data as skimage_data  # noqa: E402  (requirements-test.txt)


@pytest.fixture(scope="module")
def core(comfy):
    return (importlib.import_module("comfyui_standin.standin_core.faces.prepare"),
            importlib.import_module("comfyui_standin.standin_core.faces.models"))


def progress_ticks(monkeypatch) -> list:
    """Every (value, total) the pack's progress bar sends, as ComfyUI's progress hook receives them. ComfyUI v0.28
    and newer throttle the hook (a tick within 0.1 s of the last one is not sent: comfy/utils.py
    PROGRESS_THROTTLE_MIN_INTERVAL); the throttle is set to zero here so the count does not depend on the CPU's
    speed."""
    import comfy.utils
    calls = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        calls.append((value, total)))
    for name in ("PROGRESS_THROTTLE_MIN_INTERVAL", "PROGRESS_THROTTLE_MIN_PERCENT"):
        if hasattr(comfy.utils, name):
            monkeypatch.setattr(comfy.utils, name, 0.0)
    return calls


def test_schemas_are_complete_and_registered(comfy, nodes_faces):
    assert [node.define_schema().node_id for node in nodes_faces.NODES] == ["EncodeReferenceFace", "StandInFaceMask",
                                                                              "StandInFaceSwapPaste"]
    for node in nodes_faces.NODES:
        schema = node.GET_SCHEMA()  # ComfyUI's own validation of the schema
        assert schema.category == "Stand-In" and len(schema.description) > 40
        assert all(item.tooltip for item in schema.inputs), [i.id for i in schema.inputs if not i.tooltip]
        assert all(item.tooltip for item in schema.outputs)
        node.INPUT_TYPES()
    extension = asyncio.run(comfy.comfy_entrypoint())
    ids = {node.define_schema().node_id for node in asyncio.run(extension.get_node_list())}
    assert {"EncodeReferenceFace", "StandInFaceMask", "StandInFaceSwapPaste"} <= ids
    import folder_paths
    assert folder_paths.get_folder_paths("facexlib"), "the pack registers models/facexlib"


def test_subject_mode_needs_no_weights_and_encodes_the_prepared_image(nodes_faces, core, facexlib_folder, tmp_path):
    faces, _ = core
    facexlib_folder(tmp_path)  # empty: subject mode must not touch it
    photo = skimage_data.astronaut()[:, 100:420]
    vae = RecordingVAE()
    latent, prepared, mask, cutout, alpha, report = nodes_faces.EncodeReferenceFace.execute(
        comfy_image(photo), vae, subject_mode=True).result
    expected = faces.prepare_reference(photo, None, None, subject_mode=True)
    assert prepared.shape == (1, 512, 512, 3) and prepared.dtype == torch.float32
    torch.testing.assert_close(prepared, comfy_image(expected.image), rtol=0, atol=0)
    assert len(vae.seen) == 1
    torch.testing.assert_close(vae.seen[0], prepared, rtol=0, atol=0)
    assert set(latent) == {"samples"} and latent["samples"].shape == (1, 16, 1, 64, 64)
    assert mask.shape == (1, 512, 512)  # 320 px wide: 96 white columns on each side
    assert mask[0, :, :95].max() == 0 and mask[0, :, 97:415].min() == 1 and mask[0, :, 417:].max() == 0
    assert torch.equal(cutout, prepared) and torch.equal(alpha, (mask > 0.5).float())  # no parse: the photo's area
    assert report == "subject mode: the whole 320x512 image, padded to a white square"


def test_face_mode_crops_the_face_the_real_detector_finds(comfy, nodes_faces, core, facexlib_folder,
                                                          real_detector_folder):
    """Real photo, real detector weights: face_index 0/1 pick the left/right face; the prepared reference is the
    official window around that face (restated in tests/support/official_reference.py) wherever the parser kept the
    photo. The boxes come from facexlib's own loader and detector, called here directly."""
    import cv2
    from facexlib.detection import init_detection_model
    from comfyui_standin.tests.support.official_reference import area512, official_window, white_square
    prepare, face_models = core
    facexlib_folder(real_detector_folder)
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "two_people.jpg")), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (1000, 587), interpolation=cv2.INTER_AREA)  # under 1024 px: detected at full size
    detector = init_detection_model("retinaface_mobile0.25", half=False, device="cpu",
                                    model_rootpath=str(real_detector_folder))
    with torch.inference_mode():
        found = detector.detect_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.97)
    boxes = sorted((tuple(int(v) for v in face[:4]) for face in found), key=lambda box: box[0])
    assert len(boxes) == 2
    prepared_per_face = []
    for index, box in enumerate(boxes):
        vae = RecordingVAE()
        latent, prepared, mask, cutout, cutout_alpha, _ = nodes_faces.EncodeReferenceFace.execute(
            comfy_image(rgb), vae, face_index=index, detector="retinaface_mobile0.25").result
        left, top, right, bottom = official_window(box, rgb.shape[1], rgb.shape[0])
        expected = torch.from_numpy(area512(white_square(rgb[top:bottom, left:right]))).float() / 255
        kept = mask[0] > 0.5
        assert kept.float().mean() > 0.05  # the (generated) parser kept part of the photo: something to compare
        assert torch.allclose(prepared[0][kept], expected[kept], atol=1 / 255)
        # ... and the whole image and mask are the core pipeline's, run with a parser (so the background really went
        # through BiSeNet) on the node's own loaded models, with the reference normalisation
        detector_model, parser_model = nodes_faces._facexlib_models(["retinaface_mobile0.25", "bisenet"], False)
        detect = face_models.retinaface_detector(detector_model)
        parse = face_models.bisenet_parser(parser_model, face_models.REFERENCE_NORMALIZATION)
        core_result = prepare.prepare_reference(rgb, detect, parse, face_index=index)
        assert core_result.parse_map is not None
        assert torch.equal(prepared, torch.from_numpy(core_result.image).float().div(255).unsqueeze(0))
        assert torch.equal(mask[0], torch.from_numpy(core_result.mask))
        # the face-swap cut-out: the crop before whitening, alpha = parse class != background
        assert torch.equal(cutout, torch.from_numpy(core_result.resized).float().div(255).unsqueeze(0))
        assert torch.equal(cutout_alpha[0], torch.from_numpy(core_result.parse_map != 0).float())
        assert torch.equal(vae.seen[0], prepared[..., :3]) and latent["samples"].shape == (1, 16, 1, 64, 64)
        prepared_per_face.append(prepared)
    assert not torch.equal(*prepared_per_face)


def test_the_node_shows_the_prepared_face_and_says_what_it_used(comfy, nodes_faces, facexlib_folder,
                                                                real_detector_folder):
    """The node's own UI shows the prepared face and a one-line report, which is also its 'report' output, for a
    face, a small face, a face that fills the photo (the border rule) and a photo without a face. The expected
    facts come from facexlib's detector called directly on the same pixels and the official window rule."""
    import cv2
    from facexlib.detection import init_detection_model
    from comfyui_standin.tests.support.official_reference import official_window
    facexlib_folder(real_detector_folder)
    detector = init_detection_model("retinaface_mobile0.25", half=False, device="cpu",
                                    model_rootpath=str(real_detector_folder))

    def boxes(rgb):
        with torch.inference_mode():
            found = detector.detect_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 0.97)
        return [tuple(int(v) for v in face[:4]) for face in found]

    def run(rgb):
        output = nodes_faces.EncodeReferenceFace.execute(comfy_image(rgb), RecordingVAE())
        prepared, report = output.result[1], output.result[5]
        assert output.ui["text"] == (report,)
        assert_shows(output.ui, prepared[0])
        return report

    obama = cv2.cvtColor(cv2.imread(str(DATA / "obama.jpg")), cv2.COLOR_BGR2RGB)
    face = cv2.cvtColor(cv2.imread(str(DATA / "obama_small.jpg")), cv2.COLOR_BGR2RGB)  # 320x240, under 1024 px
    ((x1, y1, x2, y2),) = boxes(face)
    left, top, right, bottom = official_window((x1, y1, x2, y2), 320, 240)
    assert run(face) == (f"1 face found in the 320x240 photo; using the face at ({x1}, {y1}), {x2 - x1}x{y2 - y1} "
                         f"px, cropped to {right - left}x{bottom - top} and resized to 512x512")

    small = cv2.resize(obama, (152, 190), interpolation=cv2.INTER_AREA)
    ((x1, y1, x2, y2),) = boxes(small)
    assert max(x2 - x1, y2 - y1) < 64
    report = run(small)
    assert report.startswith(f"1 face found in the 152x190 photo; using the face at ({x1}, {y1})"), report
    assert f"the face is only {x2 - x1}x{y2 - y1} px: it is upscaled to 512x512" in report, report

    filled = np.ascontiguousarray(obama[95:412, 386:598])  # the face fills the photo: the official border rule
    ((x1, y1, x2, y2),) = boxes(filled)
    assert x1 <= 10 and y1 <= 10 and x2 >= 212 - 10 and y2 >= 317 - 10, (x1, y1, x2, y2)
    assert run(filled) == ("1 face found in the 212x317 photo; using the WHOLE image. the face reaches all four "
                           "borders of the photo, so it is already a face crop (the official rule): the whole image "
                           "is used")

    coffee = skimage_data.coffee()
    assert boxes(coffee) == []
    report = run(coffee)
    assert report.startswith("0 faces found in the 600x400 photo; using the WHOLE image. no face detected"), report


def test_face_models_are_comfyui_models_that_unload(comfy, nodes_faces, facexlib_folder, real_detector_folder):
    """The facexlib models are loaded through ComfyUI's model management: listed among its loaded models while in
    use, unloaded by it like any other model, reloaded when needed; a replaced weight file is read again."""
    import os
    import comfy.model_management as mm
    facexlib_folder(real_detector_folder)
    photo = comfy_image(skimage_data.astronaut())
    mm.unload_all_models()  # face models earlier tests left loaded (from other folders) are not this test's

    def loaded_face_models():
        return sorted(type(m.model.model).__name__ for m in mm.current_loaded_models
                      if m.model is not None and type(m.model.model).__name__ in ("RetinaFace", "BiSeNet"))

    first = nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE(), detector="retinaface_mobile0.25").result
    assert loaded_face_models() == ["BiSeNet", "RetinaFace"]
    patchers = dict(nodes_faces._PATCHERS)
    mm.unload_all_models()
    assert loaded_face_models() == []
    again = nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE(), detector="retinaface_mobile0.25").result
    assert loaded_face_models() == ["BiSeNet", "RetinaFace"]
    assert torch.equal(first[1], again[1]) and nodes_faces._PATCHERS == patchers  # same models, not read again
    parser_file = real_detector_folder / "parsing_bisenet.pth"
    os.utime(parser_file, (parser_file.stat().st_atime, parser_file.stat().st_mtime + 10))
    nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE(), detector="retinaface_mobile0.25")
    assert nodes_faces._PATCHERS["bisenet"] is not patchers["bisenet"]
    assert nodes_faces._PATCHERS["retinaface_mobile0.25"] is patchers["retinaface_mobile0.25"]


def test_missing_weights_name_the_file_the_folder_and_the_url(nodes_faces, core, facexlib_folder, tmp_path):
    _, face_models = core
    facexlib_folder(tmp_path)
    with pytest.raises(face_models.MissingFaceWeightsError) as error:
        nodes_faces.EncodeReferenceFace.execute(comfy_image(skimage_data.astronaut()), RecordingVAE())
    message = str(error.value)  # the default detector ('auto') names both RetinaFace files
    assert "detection_Resnet50_Final.pth" in message and str(tmp_path) in message
    assert "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth" in message
    assert "detection_mobilenet0.25_Final.pth" in message
    assert list(tmp_path.iterdir()) == []


def test_a_first_run_with_only_the_mobilenet_detector_works_with_the_default_detector(
        nodes_faces, core, facexlib_folder, real_detector_folder):
    """models/facexlib holds the real mobilenet0.25 detector (and the parser) but not the ResNet-50 one: the face
    nodes' default detector ('auto') takes it, so Encode Reference Face and the face swap paste run on their defaults
    and give exactly what naming the mobilenet detector gives."""
    _, face_models = core
    facexlib_folder(real_detector_folder)
    assert not face_models.find_weights("retinaface_resnet50", real_detector_folder)
    for node in nodes_faces.NODES:
        assert next(item for item in node.define_schema().inputs if item.id == "detector").default == "auto"
    import cv2
    photo = comfy_image(cv2.cvtColor(cv2.imread(str(DATA / "obama.jpg")), cv2.COLOR_BGR2RGB))
    by_default = nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE()).result
    named = nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE(), detector="retinaface_mobile0.25").result
    for got, expected in zip(by_default[1:5], named[1:5]):
        assert torch.equal(got, expected)
    assert by_default[5] == named[5]
    assert by_default[2].min() == 0  # a face was found and parsed: not the whole photo
    frames = comfy_image(read_clip())[0][:5]
    pasted = nodes_faces.StandInFaceSwapPaste.execute(frames, by_default[3], by_default[4]).result
    pasted_named = nodes_faces.StandInFaceSwapPaste.execute(frames, named[3], named[4],
                                                            detector="retinaface_mobile0.25").result
    assert all(torch.equal(a, b) for a, b in zip(pasted[:2], pasted_named[:2])) and pasted[1].amax() > 0
    assert pasted[2] == pasted_named[2]  # the same fit
    with pytest.raises(face_models.MissingFaceWeightsError, match="set the node's detector to 'auto'"):
        nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE(), detector="retinaface_resnet50")


def test_a_batch_of_references_is_refused(nodes_faces, facexlib_folder, tmp_path):
    facexlib_folder(tmp_path)
    batch = torch.rand(2, 64, 64, 3)
    with pytest.raises(ValueError, match="Get Image from Batch"):
        nodes_faces.EncodeReferenceFace.execute(batch, RecordingVAE(), subject_mode=True)


def test_face_mask_node_tracks_the_face_with_progress(comfy, nodes_faces, core, facexlib_folder, weights_dir,
                                                      monkeypatch):
    """Real weights files are loaded; detection is swapped for the bundled cascade (random RetinaFace finds no
    real face) and parsing for 'all skin', so the masks must be the official windows around the moving face."""
    _, face_models = core
    facexlib_folder(weights_dir)
    monkeypatch.setattr(face_models, "retinaface_detector",
                        lambda model, confidence=0.5: face_models.cascade_detector())
    monkeypatch.setattr(face_models, "bisenet_parser",
                        lambda model, normalization: (lambda rgb: np.ones(rgb.shape[:2], np.uint8)))
    calls = progress_ticks(monkeypatch)
    astronaut = skimage_data.astronaut()
    frames = np.full((4, 512, 704, 3), 128, np.uint8)
    for index, shift in enumerate((0, 64, 192)):
        frames[index, :, shift:shift + 512] = astronaut
    (masks,) = nodes_faces.StandInFaceMask.execute(comfy_image(frames)[0], detector="retinaface_mobile0.25").result
    assert masks.shape == (4, 512, 704) and masks.dtype == torch.float32
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert masks[3].max() == 0
    centres = [float(torch.nonzero(m)[:, 1].float().mean()) for m in masks[:3]]
    assert abs(centres[1] - centres[0] - 64) <= 8 and abs(centres[2] - centres[0] - 192) <= 8
    assert set(torch.unique(masks[:3]).tolist()) == {0.0, 1.0}


def test_each_node_parses_with_its_official_normalisation(nodes_faces, core, facexlib_folder, real_detector_folder,
                                                          monkeypatch):
    """The reference (official Stand-In preprocessing) and the face-swap masks (official face-swap code) normalise
    the parser's input differently: each node must hand BiSeNet its own."""
    _, face_models = core
    facexlib_folder(real_detector_folder)
    seen = []
    real_parser = face_models.bisenet_parser
    monkeypatch.setattr(face_models, "bisenet_parser",
                        lambda model, normalization: seen.append(normalization) or real_parser(model, normalization))
    photo = comfy_image(skimage_data.astronaut())
    nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE(), detector="retinaface_mobile0.25")
    nodes_faces.StandInFaceMask.execute(photo, detector="retinaface_mobile0.25")
    assert seen == [face_models.REFERENCE_NORMALIZATION, face_models.IMAGENET_NORMALIZATION]


def read_clip(step=25):
    return read_video(DATA / "short_hamilton_clip.mp4")[::step]


def test_face_swap_paste_node_runs_the_official_paste_with_progress_and_cancel(comfy, nodes_faces, core,
                                                                              facexlib_folder, real_detector_folder,
                                                                              monkeypatch):
    """The node on real frames with the real detector: the core's swap (crop to x16, 4n+1 frames, landmark warp),
    one progress tick per frame, and an interrupt stops it."""
    import comfy.model_management
    import comfy.utils
    from comfyui_standin.standin_core.faces import swap
    _, face_models = core
    facexlib_folder(real_detector_folder)
    frames = comfy_image(read_clip())[0]  # 11 frames of 640x360
    photo = comfy_image(skimage_data.astronaut())
    _, _, _, cutout, alpha, _ = nodes_faces.EncodeReferenceFace.execute(photo, RecordingVAE(),
                                                                       detector="retinaface_mobile0.25").result
    calls = progress_ticks(monkeypatch)
    pasted, masks, _, *regions = nodes_faces.StandInFaceSwapPaste.execute(frames, cutout, alpha,
                                                                       detector="retinaface_mobile0.25").result
    assert pasted.shape == (9, 352, 640, 3) and masks.shape == (9, 352, 640)
    rgba = np.dstack([(cutout[0].numpy() * 255).round().astype(np.uint8), (alpha[0].numpy() * 255).astype(np.uint8)])
    (detector_model,) = nodes_faces._facexlib_models(["retinaface_mobile0.25"], False)
    detector = face_models.retinaface_detector(detector_model, landmarks=True)
    expected, expected_masks, how = swap.swap_faces(frames, rgba, detector, None)
    assert how.count("warped") >= 8
    assert torch.equal(pasted, torch.from_numpy(expected).float().div(255))
    assert torch.equal(masks, torch.from_numpy(expected_masks))
    # one cut-out: region_1 is its paste grown by one token, the other regions one empty frame of the Wan size
    assert torch.equal(regions[0], torch.from_numpy(swap.person_regions(expected_masks[None])[0]))
    assert regions[0].sum() > masks.gt(0).sum() and regions[0][masks > 0].min() == 1
    assert all(torch.equal(region, torch.zeros(1, 352, 640)) for region in regions[1:])
    assert calls == [(done, 9) for done in range(1, 10)]  # one tick per kept frame
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            nodes_faces.StandInFaceSwapPaste.execute(frames, cutout, alpha, detector="retinaface_mobile0.25")
    finally:
        comfy.model_management.interrupt_current_processing(False)


def test_face_swap_paste_refuses_what_is_not_a_cutout(comfy, nodes_faces, facexlib_folder, real_detector_folder):
    facexlib_folder(real_detector_folder)
    frames = torch.rand(5, 64, 64, 3)
    with pytest.raises(ValueError, match="cutout_alpha"):
        nodes_faces.StandInFaceSwapPaste.execute(frames, torch.rand(1, 512, 512, 3), torch.ones(1, 64, 64))
    with pytest.raises(ValueError, match="cutout_alpha"):  # a batch of masks is not one cut-out's alpha
        nodes_faces.StandInFaceSwapPaste.execute(frames, torch.rand(1, 512, 512, 3), torch.ones(2, 512, 512))
