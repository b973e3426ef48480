"""What a Stand-In sampling run leaves behind, for the cancel and failure tests (comfyui tier).

:class:`RunLeftovers` records, by weak reference, the RunState of every run, the reference K/V, the [video; reference]
buffers and the LoRA's device copies, so that a test can check after a failed run that they are gone;
:func:`standin_state_left_on` lists what a run may not leave on a ModelPatcher.
"""
import gc
import weakref

class RunLeftovers:
    """Records what Stand-In allocates while sampling (weak references only) to check it is gone afterwards.

    Use as a context manager around the runs (it wraps the pack's classes with pytest's ``monkeypatch``):
    ``runs`` are weak references to every RunState; ``tensors`` to every reference K/V entry the cache returned, every
    [video; reference] buffer and every LoRA device copy that is not the weights' own tensor."""

    def __init__(self, monkeypatch):
        from comfyui_standin.nodes.run_state import RunState
        from comfyui_standin.standin_core import JointKVBuffers, ReferenceKVCache
        self.runs, self.tensors = [], []
        tracker = self
        original_init, original_get = RunState.__init__, ReferenceKVCache.get_or_build
        original_prepare, original_loras = JointKVBuffers.prepare, RunState.loras

        def init(run, *args, **kwargs):
            original_init(run, *args, **kwargs)
            tracker.runs.append(weakref.ref(run))

        def get_or_build(cache, *args, **kwargs):
            entry = original_get(cache, *args, **kwargs)
            tracker._track(t for kv in entry for t in (kv.keys, kv.values))
            return entry

        def prepare(buffers, *args, **kwargs):
            keys, values = original_prepare(buffers, *args, **kwargs)
            tracker._track((keys, values))
            return keys, values

        def loras(run, weights, device):
            copies = original_loras(run, weights, device)
            own = {id(t) for block in weights.blocks for low_rank in (block.q, block.k, block.v)
                   for t in (low_rank.down, low_rank.up)}
            tracker._track(t for block in copies for low_rank in (block.q, block.k, block.v)
                           for t in (low_rank.down, low_rank.up) if id(t) not in own)
            return copies

        monkeypatch.setattr(RunState, "__init__", init)
        monkeypatch.setattr(ReferenceKVCache, "get_or_build", get_or_build)
        monkeypatch.setattr(JointKVBuffers, "prepare", prepare)
        monkeypatch.setattr(RunState, "loras", loras)

    def _track(self, tensors):
        known = {id(ref()) for ref in self.tensors if ref() is not None}
        self.tensors += [weakref.ref(t) for t in tensors if id(t) not in known]

    def alive(self):
        """(live RunStates, live tracked tensors) after a full garbage collection."""
        gc.collect()
        return [r() for r in self.runs if r() is not None], [t() for t in self.tensors if t() is not None]


def standin_state_left_on(model) -> dict:
    """What a finished (or failed) run may not leave on a ModelPatcher: a run state in its options, a changed memory
    estimate on its BaseModel."""
    from comfyui_standin.nodes.model_call import CALL_KEY
    from comfyui_standin.nodes.run_state import RUN_KEY
    options = model.model_options.get("transformer_options", {})
    return {"run state in model_options": RUN_KEY in options,
            "call in model_options": CALL_KEY in options,
            "memory_required patched": "memory_required" in vars(model.model)}
