"""Load: twenty prompts queued at once on the real server, with changing photos, prompts and strengths.

All complete; each saved latent equals the same prompt run alone on fresh state in this process (the reference
latent the server encoded from the photo, a fresh model, cache off); and the server's memory after the last prompt
equals its memory after the first: the same bytes of gc-tracked tensors, no Stand-In run object alive, and the
process RSS within noise. Tiny real Wan model, real photos through the Wan VAE (at 48 x 48), CPU, comfyui tier.
"""

import pytest
import torch

from comfyui_standin.devtools.comfyui_server import PHOTOS
from comfyui_standin.tests.support.server_graphs import saved_latent, server_files, server_graph, server_oracle
from comfyui_standin.tests.support.tolerance import assert_matches

pytestmark = pytest.mark.comfyui
PROMPTS = 20
STRENGTHS = (1.0, 0.5, 1.5, 0.8, 1.2)
PHOTO_ORDER = [index % 3 for index in range(PROMPTS - 1)] + [0]  # a new photo every prompt; the last prompt uses the
# first one's photo, so the outputs ComfyUI's cache holds (the loaded image) have the same sizes when the memory after
# both is compared
RSS_NOISE = 64 * 2 ** 20  # the RSS swings by up to ~40 MiB between prompts (allocator); the exact check is on tensors


def settings(index: int) -> dict:
    return dict(photo=PHOTOS[PHOTO_ORDER[index]], cond_seed=100 + index, strength=STRENGTHS[index % 5],
                memory=f"prompt {index + 1}", prefix=f"load_{index:02d}")


def test_twenty_queued_prompts_are_all_correct_and_memory_does_not_grow(server):
    prompt_ids = [server.submit(server_graph(**settings(index))) for index in range(PROMPTS)]  # queued at once
    files = server_files(server)
    references, reports = {}, []
    for index, prompt_id in enumerate(prompt_ids):  # each checked as it completes, while the server runs the next
        entry = server.wait(prompt_id)
        status = entry["status"]
        assert status["status_str"] == "success", f"prompt {index + 1}: {status['messages']}\n{server.log_tail()}"
        reference = saved_latent(server, entry, "save_reference")
        photo = settings(index)["photo"]
        assert torch.equal(references.setdefault(photo, reference), reference), "the same photo encoded differently"
        result = saved_latent(server, entry)
        expected = server_oracle(files, reference=reference, **settings(index))
        assert_matches(result, expected, f"prompt {index + 1} against the prompt run alone")
        reports.append(entry["outputs"]["memory"]["memory"][0])
    assert len({tuple(r.flatten()[:4].tolist()) for r in references.values()}) == len(PHOTOS)

    first, last = reports[0], reports[-1]
    print("\nserver memory after each of the twenty prompts (RSS MiB, gc-tracked tensor MiB, tensors):")
    for report in reports:
        print(f"  {report['label']:>10}: {report['rss'] / 2 ** 20:8.1f} {report['tensor_bytes'] / 2 ** 20:8.3f} "
              f"{report['tensors']:5d}")
    print(f"  growth first -> last: RSS {(last['rss'] - first['rss']) / 2 ** 20:+.1f} MiB, tensors "
          f"{last['tensor_bytes'] - first['tensor_bytes']:+d} bytes")
    for report in reports:
        assert (report["RunState"], report["JointKVBuffers"], report["ReferenceKVCache"]) == (0, 0, 0), report
    assert (last["tensor_bytes"], last["tensors"]) == (first["tensor_bytes"], first["tensors"])
    assert last["rss"] - first["rss"] < RSS_NOISE, (first, last)
