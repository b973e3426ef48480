"""The example inputs the shipped workflows load (example_inputs/), put into ComfyUI's input folder when the pack
loads, so no Load Image or Load Video node opens red. Only missing files are copied: a file the user has under
that name is never touched, and nothing is downloaded."""
import logging
import os
import shutil
from pathlib import Path

import folder_paths

log = logging.getLogger("standin")

EXAMPLES = Path(__file__).resolve().parents[1] / "example_inputs"
PATTERN = "standin_example_*"


def add_example_inputs() -> list[str]:
    """Copy the example inputs missing from ComfyUI's input folder there; the names copied."""
    folder = folder_paths.get_input_directory()
    added = []
    for source in sorted(EXAMPLES.glob(PATTERN)):
        target = os.path.join(folder, source.name)
        if os.path.exists(target):
            continue
        try:
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(source, target)
        except OSError as error:
            log.warning("Stand-In: could not copy the example input %s to %s (%s); the example workflows will show "
                        "it as missing until you pick your own file", source.name, folder, error)
            continue
        added.append(source.name)
    if added:
        log.info("Stand-In: added the example inputs %s to %s (the example workflows load them)", ", ".join(added),
                 folder)
    return added
