"""Model folders the pack reads from (registered with ComfyUI's folder_paths when the nodes load).

    models/standin/   Stand-In weight files (.ckpt / .safetensors); files in models/loras/ are offered too
    models/facexlib/  face detector and parser weights, under the names facexlib uses
    models/insightface/  ArcFace recognition models for the identity score (e.g. antelopev2/glintr100.onnx)
"""
import os

import folder_paths

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


def standin_weight_files() -> list[str]:
    """Files offered by LoadStandInLoRA: models/standin first, then models/loras (prefixed 'loras/')."""
    own = folder_paths.get_filename_list(STANDIN_FOLDER)
    loras = [f"loras/{name}" for name in folder_paths.get_filename_list("loras")]
    return own + loras


def resolve_standin_file(name: str) -> str:
    """The path of one of the files :func:`standin_weight_files` offers; FileNotFoundError for any other name (a
    path that climbs out with '..', an absolute path, a file that is gone). Some ComfyUI versions (v0.3.64) do not
    check a V3 combo's value against its options when a prompt arrives, so the node checks it itself."""
    if name not in standin_weight_files():
        raise FileNotFoundError(name)
    if name.startswith("loras/"):
        return folder_paths.get_full_path_or_raise("loras", name[len("loras/"):])
    return folder_paths.get_full_path_or_raise(STANDIN_FOLDER, name)
