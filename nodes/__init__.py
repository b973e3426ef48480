"""ComfyUI glue: V3 node classes over standin_core. Imported only inside ComfyUI (see the pack's __init__)."""
from comfy_api.latest import ComfyExtension, io

from .paths import register_model_folders

register_model_folders()


def _node_list() -> list[type[io.ComfyNode]]:
    from . import apply, cache, faces, identity, loaders, raylight, references, swap
    return [*loaders.NODES, *faces.NODES, *swap.NODES, *references.NODES, *apply.NODES, *cache.NODES,
            *identity.NODES, *raylight.NODES]


class StandInExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .examples import add_example_inputs
        add_example_inputs()
        return _node_list()


