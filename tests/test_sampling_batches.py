"""Batching: cond and uncond in one batch, cfg 1, batch size > 1, several positive conds
(ConditioningCombine), area conds (ConditioningSetArea): every row gets the right reference keys, and the result
equals running the rows one by one and the paper's joint sequence.

"One by one" is the same Stand-In model behind a wrapper that splits every model call into calls of one row each, so
Stand-In never sees a batch. Tiny real Wan models, CPU float32, comfyui tier.
"""
from types import SimpleNamespace

import pytest
import torch

from comfyui_standin.tests.support.sampling import JointModel, conds, sample, standin
from comfyui_standin.tests.support.tolerance import assert_differs, assert_matches

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def scene(wan_base, standin_state, standin_weights):
    """A non-square reference [1, 16, 1, 6, 10] (3 x 5 tokens), then noise of batch 3 [3, 16, 2, 8, 12], both from
    seed 42; conds of seeds 1, 3 (a second positive) and 2."""
    gen = torch.Generator().manual_seed(42)
    reference = torch.randn(1, 16, 1, 6, 10, generator=gen)
    noise = torch.randn(3, 16, 2, 8, 12, generator=gen)
    cond, cond2, uncond = conds(1, 3, 2)
    return SimpleNamespace(base=wan_base, standin_state=standin_state, weights=standin_weights, reference=reference,
                           noise=noise, cond=cond, cond2=cond2, uncond=uncond)


class BatchLog:
    """A DIFFUSION_MODEL wrapper on a clone of the model: records the batch and size of every model call and, with
    ``split``, runs every call one row at a time (the wrappers added after it, Stand-In's, then see batch 1)."""

    def __init__(self, model, split: bool):
        import comfy.patcher_extension
        self.calls = []

        def wrapper(executor, x, timestep, context, *args, **kwargs):
            self.calls.append(tuple(x.shape))
            if not split or x.shape[0] == 1:
                return executor(x, timestep, context, *args, **kwargs)
            rows = []
            for i in range(x.shape[0]):
                row_kwargs = {k: v[i:i + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == x.shape[:1] else v
                              for k, v in kwargs.items()}
                rows.append(executor(x[i:i + 1], timestep[i:i + 1], context[i:i + 1], *args, **row_kwargs))
            return torch.cat(rows)

        self.model = model.clone()
        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_batches", wrapper)


def run_three_ways(scene, positive, negative, cfg, noise, steps=2):
    """(batched Stand-In, Stand-In one row at a time, joint sequence) runs, and the batched run's model calls."""
    batched = BatchLog(scene.base, split=False)
    ours = sample(standin(batched.model, scene.weights, scene.reference), noise, positive, negative, steps=steps,
                  cfg=cfg)
    split = BatchLog(scene.base, split=True)
    one_by_one = sample(standin(split.model, scene.weights, scene.reference), noise, positive, negative, steps=steps,
                        cfg=cfg)
    joint = sample(JointModel(scene.base, scene.reference, scene.standin_state).model, noise, positive, negative,
                   steps=steps, cfg=cfg)
    assert split.calls == batched.calls
    return ours, one_by_one, joint, batched.calls


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_a_batch_of_three_latents_equals_its_rows_one_by_one(scene, cfg):
    """Batch size 3; at cfg 3 cond and uncond go in one model call of 6 rows, at cfg 1 only the 3 cond rows."""
    positive, negative = [[scene.cond, {}]], [[scene.uncond, {}]]
    ours, one_by_one, joint, calls = run_three_ways(scene, positive, negative, cfg, scene.noise)
    assert {shape[0] for shape in calls} == {6 if cfg > 1 else 3}
    assert_matches(ours, one_by_one, "rows one by one")
    assert_matches(ours, joint, "joint sequence")
    # and each latent of the batch equals that latent sampled alone
    for row in range(3):
        alone = sample(standin(scene.base, scene.weights, scene.reference), scene.noise[row:row + 1], positive,
                       negative, cfg=cfg)
        assert_matches(ours[row:row + 1], alone, f"latent {row} sampled alone")
    assert_differs(ours[0], ours[1])  # the rows really differ


def test_several_positive_conds_in_one_batch(scene):
    """ConditioningCombine: two positive conds (the second at strength 0.5) and the negative, three rows of one model
    call per step, each row with the reference keys."""
    import node_helpers
    import nodes
    second = node_helpers.conditioning_set_values([[scene.cond2, {}]], {"strength": 0.5})
    positive = nodes.ConditioningCombine().combine([[scene.cond, {}]], second)[0]
    noise = scene.noise[:1]
    ours, one_by_one, joint, calls = run_three_ways(scene, positive, [[scene.uncond, {}]], 3.0, noise)
    assert {shape[0] for shape in calls} == {3}
    assert_matches(ours, one_by_one, "rows one by one")
    assert_matches(ours, joint, "joint sequence")
    single = sample(standin(scene.base, scene.weights, scene.reference), noise, [[scene.cond, {}]],
                    [[scene.uncond, {}]])
    assert_differs(ours, single)  # the second cond counts


def test_area_conds_crop_the_video_and_still_get_the_right_reference(scene, monkeypatch):
    """ConditioningSetArea: a cond on a 48 x 32 pixel window (4 x 6 latent) beside a full-frame cond. The cropped
    calls have another video grid, so its reference positions differ: each grid gets its own cache entry, built once
    per run and reused at every step, and the result equals the rows one by one and the joint sequence on the same
    crops."""
    import nodes
    from comfyui_standin.standin_core import ReferenceKVCache
    grids = []
    original = ReferenceKVCache.get_or_build

    def recording(cache, key, build, device=None):
        before = cache.builds
        entry = original(cache, key, build, device)
        grids.append((key.video_grid, cache.builds > before))
        return entry

    monkeypatch.setattr(ReferenceKVCache, "get_or_build", recording)
    area = nodes.ConditioningSetArea().append([[scene.cond2, {}]], 48, 32, 32, 16, 1.0)[0]  # width, height, x, y
    assert area[0][1]["area"] == (4, 6, 2, 4)
    positive = nodes.ConditioningCombine().combine([[scene.cond, {}]], area)[0]
    noise = scene.noise[:1]
    ours, one_by_one, joint, calls = run_three_ways(scene, positive, [[scene.uncond, {}]], 3.0, noise)
    # ComfyUI gives the negative a copy on the same area, so each step has one cropped call (area cond + its negative)
    # and one full-frame call (cond + negative)
    assert set(calls) == {(2, 16, 2, 4, 6), (2, 16, 2, 8, 12)}, calls
    ours_calls = grids[:2 * 2]  # the first run (run_three_ways samples ours first): 2 steps, two grids each
    assert {grid for grid, _ in ours_calls} == {(2, 3), (4, 6)}, "the cropped calls must use their own video grid"
    assert sorted(grid for grid, built in ours_calls if built) == [(2, 3), (4, 6)], "each grid is built once"
    assert_matches(ours, one_by_one, "rows one by one")
    assert_matches(ours, joint, "joint sequence")
    full_only = sample(standin(scene.base, scene.weights, scene.reference), noise, [[scene.cond, {}]],
                       [[scene.uncond, {}]])
    assert_differs(ours, full_only)  # the area cond counts
