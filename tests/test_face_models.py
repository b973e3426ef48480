"""facexlib models loaded offline through standin_core.faces.models (generated weights, and REAL detector weights
from tests/data); the demo command.

The weight files are random (conftest.py's ``weights_dir``: no download is possible here) but saved under the
official names, so the real facexlib model classes are built and filled from them as in production (safe
weights_only loading, no download).
"""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from comfyui_standin.standin_core.faces import models as face_models, prepare as faces

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]

from skimage import data as skimage_data  # noqa: E402  (requirements-test.txt)
from facexlib.detection.retinaface import RetinaFace  # noqa: E402

URLS = {
    "retinaface_resnet50": "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    "retinaface_mobile0.25":
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
    "bisenet": "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download (the pack's checked download, or facexlib's own) fails the test."""
    import facexlib.utils.misc as misc

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")
    monkeypatch.setattr(misc, "download_url_to_file", refuse)
    monkeypatch.setattr(face_models, "_open_url", refuse)


def assert_same_weights(model, path):
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert set(state) == set(saved)
    for key, value in saved.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)


def test_loads_mobilenet_retinaface_and_bisenet_offline(weights_dir, no_network):
    detector = face_models.load_face_detector(str(weights_dir), "retinaface_mobile0.25")
    parser = face_models.load_face_parser([str(weights_dir / "missing"), str(weights_dir)])
    assert type(detector).__name__ == "RetinaFace" and not detector.training
    assert type(parser).__name__ == "BiSeNet" and not parser.training
    assert_same_weights(detector, weights_dir / "detection_mobilenet0.25_Final.pth")
    assert_same_weights(parser, weights_dir / "parsing_bisenet.pth")


def test_loads_resnet50_retinaface_offline(tmp_path, no_network):
    model = RetinaFace(network_name="resnet50", half=False, device="cpu")  # 110 MB: generated, never committed
    torch.save(model.state_dict(), tmp_path / "detection_Resnet50_Final.pth")
    loaded = face_models.load_face_detector(tmp_path)
    assert loaded.cfg["name"] == "Resnet50"
    assert_same_weights(loaded, tmp_path / "detection_Resnet50_Final.pth")


@pytest.mark.parametrize("name", sorted(URLS))
def test_missing_weights_name_file_folder_and_url_and_download_nothing(tmp_path, no_network, name):
    file_name = os.path.basename(URLS[name])
    load = face_models.load_face_parser if name == "bisenet" else face_models.load_face_detector
    with pytest.raises(face_models.MissingFaceWeightsError) as error:
        load(str(tmp_path), name)
    message = str(error.value)
    assert f"'{file_name}'" in message and str(tmp_path) in message and URLS[name] in message
    assert list(tmp_path.iterdir()) == []


def test_corrupt_file_says_which_and_where_from(tmp_path, no_network):
    (tmp_path / "parsing_bisenet.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="(?s)parsing_bisenet.pth.*download it again from https://github.com/xinntao"):
        face_models.load_face_parser(tmp_path)


def test_unknown_model_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown face detector"):
        face_models.load_face_detector(tmp_path, "bisenet")
    with pytest.raises(ValueError, match="unknown face parser"):
        face_models.load_face_parser(tmp_path, "parsenet")


def test_bisenet_parser_normalises_and_takes_the_main_head(weights_dir):
    from torchvision.transforms.functional import normalize
    model = face_models.load_face_parser(weights_dir)
    rgb = np.ascontiguousarray(skimage_data.astronaut()[40:232, 130:322])  # any size works; small keeps it fast
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    for normalization in (face_models.REFERENCE_NORMALIZATION, face_models.IMAGENET_NORMALIZATION):
        with torch.no_grad():
            expected = model(normalize(pixels, *normalization))[0].argmax(1)[0].numpy()
        parse_map = face_models.bisenet_parser(model, normalization)(rgb)
        assert parse_map.shape == rgb.shape[:2] and parse_map.dtype == np.uint8 and parse_map.max() < 19
        np.testing.assert_array_equal(parse_map, expected)


def test_real_retinaface_through_the_adapter_finds_both_real_faces(no_network):
    """REAL mobile0.25 weights (tests/data) on a real two-person photo: the adapter takes RGB, hands facexlib BGR,
    and returns the same boxes and scores as facexlib called directly: two faces, far apart, both confident."""
    model = face_models.load_face_detector(DATA, "retinaface_mobile0.25")
    rgb = cv2.cvtColor(cv2.imread(str(DATA / "two_people.jpg")), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        expected = model.detect_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), conf_threshold=0.5)
    found = face_models.retinaface_detector(model)(rgb)
    assert found.shape == (2, 5)
    np.testing.assert_allclose(found, expected[:, :5], rtol=1e-5)
    assert found[:, 4].min() > 0.97
    left, right = sorted(found, key=lambda row: row[0])
    assert left[2] < right[0]  # two separate faces, one on each side
    assert all(60 < row[2] - row[0] < 300 and 60 < row[3] - row[1] < 300 for row in found)  # face-sized boxes
    assert face_models.retinaface_detector(model, confidence=1.01)(rgb).shape == (0, 5)


def test_cascade_finds_the_astronaut_face():
    boxes = face_models.cascade_detector()(skimage_data.astronaut())
    truth = np.array([175, 70, 265, 160])  # the face, read off the photo

    def iou(box):
        ix = max(0, min(box[2], truth[2]) - max(box[0], truth[0]))
        iy = max(0, min(box[3], truth[3]) - max(box[1], truth[1]))
        union = (box[2] - box[0]) * (box[3] - box[1]) + 90 * 90 - ix * iy
        return ix * iy / union
    assert max(iou(box) for box in boxes) > 0.6


def test_modules_import_no_facexlib_skimage_or_comfy():
    code = ("import sys; import comfyui_standin.standin_core.faces.prepare, comfyui_standin.standin_core.faces.models, "
            "comfyui_standin.standin_core.faces.masks, comfyui_standin.standin_core.faces.images; "
            "print(sorted(m for m in ('facexlib', 'skimage', 'comfy', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------ demo command

NOWHERE = "http://127.0.0.1:9"  # a proxy that refuses: any download the command tried would fail it


def prepare_command(*args: str) -> subprocess.CompletedProcess:
    """scripts/prepare_reference.py run as a user runs it, offline."""
    offline = {**os.environ, "HTTP_PROXY": NOWHERE, "HTTPS_PROXY": NOWHERE, "http_proxy": NOWHERE,
               "https_proxy": NOWHERE, "NO_PROXY": "", "no_proxy": ""}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_reference.py"), *args],
                          capture_output=True, text=True, env=offline, timeout=600)


def test_demo_without_weights_uses_the_bundled_detector_and_says_parse_was_skipped(tmp_path):
    run = prepare_command("--demo", "--out", str(tmp_path))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "LBP" in out and "background removal SKIPPED" in out and "parsing_bisenet.pth" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1_input.png", "2_detection.png", "3_square.png",
                                                          "5_mask.png", "6_reference.png"]
    reference = cv2.imread(str(tmp_path / "6_reference.png"))
    expected = faces.prepare_reference(skimage_data.astronaut(), face_models.cascade_detector(), None).image
    np.testing.assert_array_equal(reference[:, :, ::-1], expected)


def test_demo_with_weights_and_a_photo_file(tmp_path, weights_dir, no_network):
    """A 16-bit RGBA photo file through the command, with the REAL detector: the reference it writes is exactly the
    core pipeline's on the decoded photo with the same models."""
    import shutil
    folder = tmp_path / "facexlib"
    folder.mkdir()
    shutil.copy(DATA / "detection_mobilenet0.25_Final.pth", folder)
    shutil.copy(weights_dir / "parsing_bisenet.pth", folder)
    photo = tmp_path / "photo.png"
    rgba = np.dstack([skimage_data.astronaut(), np.full((512, 512), 255, np.uint8)]).astype(np.uint16) * 257
    cv2.imwrite(str(photo), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    out_dir = tmp_path / "steps"
    run = prepare_command(str(photo), "--out", str(out_dir), "--weights-dir", str(folder))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "facexlib retinaface_mobile0.25" in out and "parser: facexlib bisenet" in out
    written = cv2.cvtColor(cv2.imread(str(out_dir / "6_reference.png")), cv2.COLOR_BGR2RGB)
    expected = faces.prepare_reference(
        skimage_data.astronaut(),
        face_models.retinaface_detector(face_models.load_face_detector(folder, "retinaface_mobile0.25")),
        face_models.bisenet_parser(face_models.load_face_parser(folder), face_models.REFERENCE_NORMALIZATION))
    assert expected.path == "face_crop"
    np.testing.assert_array_equal(written, expected.image)


def test_demo_explicit_detector_without_weights_fails_clearly(tmp_path):
    run = prepare_command("--demo", "--out", str(tmp_path / "o"), "--weights-dir", str(tmp_path),
                          "--detector", "retinaface_resnet50")
    assert run.returncode == 2
    err = run.stderr
    assert "detection_Resnet50_Final.pth" in err and URLS["retinaface_resnet50"] in err


def test_the_auto_detector_takes_whichever_retinaface_file_is_there(tmp_path):
    """ResNet-50 first, then mobilenet0.25; none: an error naming both files and their URLs; a named detector whose
    file is missing while the other one is there says so."""
    resnet, mobile = (face_models.weights_file(name)[0] for name in face_models.DETECTORS)
    folder = tmp_path / "facexlib"
    folder.mkdir()
    with pytest.raises(face_models.MissingFaceWeightsError) as error:
        face_models.choose_detector("auto", folder)
    for name in face_models.DETECTORS:
        assert face_models.weights_file(name)[0] in str(error.value) and URLS[name] in str(error.value)
    assert str(folder) in str(error.value)
    assert face_models.choose_detector("auto", folder, allow_download=True) == "retinaface_resnet50"
    (folder / mobile).write_bytes(b"weights")
    assert face_models.choose_detector("auto", folder) == "retinaface_mobile0.25"
    assert face_models.choose_detector("retinaface_mobile0.25", folder) == "retinaface_mobile0.25"
    with pytest.raises(face_models.MissingFaceWeightsError, match=f"'{mobile}' is there: set the node's detector"):
        face_models.choose_detector("retinaface_resnet50", folder)
    (folder / resnet).write_bytes(b"weights")
    assert face_models.choose_detector("auto", folder) == "retinaface_resnet50"
    with pytest.raises(ValueError, match="unknown face detector"):
        face_models.choose_detector("yunet", folder)
