"""Model folders the pack reads from (registered with ComfyUI's folder_paths when the nodes load).

    models/standin/   Stand-In weight files (.ckpt / .safetensors); Stand-In files in models/loras/ are offered too
    models/facexlib/  face detector and parser weights, under the names facexlib uses
    models/insightface/  ArcFace recognition models for the identity score (e.g. antelopev2/glintr100.onnx)
"""
import logging
import os

import folder_paths

from ..standin_core.weights import looks_like_standin_file

log = logging.getLogger("standin")

STANDIN_FOLDER = "standin"
FACEXLIB_FOLDER = "facexlib"
INSIGHTFACE_FOLDER = "insightface"  # ArcFace recognition ONNX files, where other face packs keep them
STANDIN_EXTENSIONS = {".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".sft"}


def register_model_folders() -> None:
    for name, extensions in ((STANDIN_FOLDER, STANDIN_EXTENSIONS), (FACEXLIB_FOLDER, {".pth"}),
                             (INSIGHTFACE_FOLDER, {".onnx"})):
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, known = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.append(default)
            folder_paths.folder_names_and_paths[name] = (paths, set(known) | extensions)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


# The official weights under their other names: the same file was first published as ..._ver1.0.ckpt, and
# WanVideoWrapper workflows still name it so. A saved workflow naming either finds the one the user has.
ALTERNATE_NAMES = {"Stand-In_wan2.1_T2V_14B_ver1.0.ckpt": "Stand-In_wan2.1_T2V_14B.ckpt"}
ALTERNATE_NAMES.update({current: old for old, current in ALTERNATE_NAMES.items()})

_RECOGNISED: dict[tuple, bool] = {}  # (path, mtime, size) -> holds Stand-In tensors, read once per file version


def _is_standin(path: str) -> bool:
    try:
        key = (path, os.path.getmtime(path), os.path.getsize(path))
    except OSError:
        return False
    if key not in _RECOGNISED:
        _RECOGNISED[key] = looks_like_standin_file(path)
    return _RECOGNISED[key]


def standin_weight_files() -> list[str]:
    """Files offered by LoadStandInLoRA: every file in models/standin, then the files in models/loras (prefixed
    'loras/') whose tensor names are Stand-In's (read from the file's header or index, never its tensors), so the
    list is not buried under the user's style LoRAs."""
    own = folder_paths.get_filename_list(STANDIN_FOLDER)
    loras = [f"loras/{name}" for name in folder_paths.get_filename_list("loras")
             if _is_standin(folder_paths.get_full_path("loras", name) or "")]
    return own + loras


def _candidates(name: str) -> list[str]:
    """``name`` and the names the same weights may have here: the other folder ('loras/' or not) and the official
    file's other name."""
    base = name[len("loras/"):] if name.startswith("loras/") else name
    names = [name, base, f"loras/{base}"]
    folder, file = os.path.split(base)
    if file in ALTERNATE_NAMES:
        other = os.path.join(folder, ALTERNATE_NAMES[file]) if folder else ALTERNATE_NAMES[file]
        names += [other, f"loras/{other}"]
    return list(dict.fromkeys(names))


def resolve_standin_file(name: str) -> str:
    """The path of one of the files :func:`standin_weight_files` offers, or of the same weights under another name
    (:func:`_candidates`: a saved workflow may name the official file's older name or the other folder);
    FileNotFoundError for anything else (a path that climbs out with '..', an absolute path, a file that is gone).
    Some ComfyUI versions (v0.3.64) do not check a V3 combo's value against its options when a prompt arrives, so the
    node checks it itself."""
    offered = standin_weight_files()
    found = next((candidate for candidate in _candidates(name) if candidate in offered), None)
    if found is None:
        raise FileNotFoundError(name)
    if found != name:
        log.info("Stand-In: the workflow names '%s'; using '%s' (the same weights under the name found here)", name,
                 found)
    if found.startswith("loras/"):
        return folder_paths.get_full_path_or_raise("loras", found[len("loras/"):])
    return folder_paths.get_full_path_or_raise(STANDIN_FOLDER, found)
