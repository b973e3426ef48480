"""Stand-In in pure torch: positions, restricted attention, the reference branch, weights and the K/V cache.

Nothing in this package imports ComfyUI; :mod:`nodes` adapts ComfyUI's objects to these functions.
"""
from .attention import JointKVBuffers, reference_logit_bias, restricted_attention, sdpa_attention
from .cache import CacheKey, ReferenceKVCache, kv_cache_bytes
from .positions import (apply_rope, reference_positions, rope_rotations, token_grid, video_positions,
                        wan_rope_axes)
from .reference import (DiTParts, ReferenceKV, build_reference_kv, project_qkv, reference_block,
                        reference_branch, video_self_attention, zero_timestep_modulation)
from .weights import (BlockLoRA, LowRank, StandInWeights, StandInWeightsError, load_standin_weights,
                      standin_state_dict, standin_weights_from_state_dict)

__all__ = [
    "apply_rope", "build_reference_kv", "DiTParts", "reference_branch", "BlockLoRA", "CacheKey", "JointKVBuffers",
    "kv_cache_bytes", "load_standin_weights", "LowRank", "project_qkv", "reference_block", "reference_logit_bias",
    "reference_positions", "ReferenceKV", "ReferenceKVCache", "restricted_attention", "rope_rotations",
    "sdpa_attention", "standin_state_dict", "StandInWeights", "StandInWeightsError", "standin_weights_from_state_dict",
    "token_grid", "video_positions", "video_self_attention", "wan_rope_axes", "zero_timestep_modulation",
]
