"""Regions from a control video (this pack's own): one region per person, left to right, on the pack's example pose
clips, whose keypoints are known exactly from scripts/make_example_inputs.py, and on drawn blocks whose grown regions
are computed by hand (the Euclidean distance to a rectangle)."""
import asyncio
import importlib.util
import itertools
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from comfyui_standin.standin_core.faces.video import read_video
from comfyui_standin.standin_core.regions import POSE_DILATION, people_regions, token_regions

REPO = Path(__file__).resolve().parents[1]
HEAD = (0, 1, 14, 15, 16, 17)  # nose, neck, eyes, ears: OpenPose's order (make_example_inputs.KEYPOINTS)
ARMS = (2, 3, 4, 5, 6, 7)  # shoulders, elbows and wrists: where one figure reaches towards the other
DRAWN = 5 + 3  # past a keypoint the drawing reaches: a circle of radius 5, its anti-aliasing and the codec's blur


def _examples():
    spec = importlib.util.spec_from_file_location("make_example_inputs", REPO / "scripts" / "make_example_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLES = _examples()


def keypoints(count: int, frame: int) -> list[np.ndarray]:
    """The [18, 2] keypoints (x, y) of each figure of the example clip of ``count`` figures, left to right, as
    make_example_inputs.pose_clip draws them."""
    width, height = EXAMPLES.POSE_SIZE
    return [EXAMPLES.figure(2 * math.pi * frame / (EXAMPLES.POSE_FRAMES - 1) + i * 1.3, width * (i + 1) / (count + 1),
                            0.8 * height, 0.93 * height) for i in range(count)]


def pixels(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rounded = np.round(points).astype(int)
    return rounded[:, 1], rounded[:, 0]


def touching(frame: int) -> bool:
    """Whether the two figures' drawings come within 7 pixels of each other (drawn apart, by the script's own
    drawing): there a frame's drawing holds fewer separate people."""
    first, second = (EXAMPLES.draw_pose([points]).max(-1) > 0 for points in keypoints(2, frame))
    near = cv2.dilate(first.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))).astype(bool)
    return bool((near & second).any())


@pytest.fixture(scope="module")
def two():
    frames = read_video(REPO / "example_inputs" / "standin_example_pose_two.mp4")
    assert frames.shape == (81, 480, 832, 3)
    return frames, people_regions(frames, 2).numpy()


def test_two_figures_each_region_holds_its_own_person(two):
    """The two-figure example clip: every frame, figure j's head (nose, neck, eyes, ears) is inside region j and
    outside the other's, so each face is bound to its own person. Every keypoint of figure j is inside region j,
    except an arm's (shoulder, elbow, wrist) in the frames where the figures touch (the rule's stated limit: at most
    two such misses in the clip). No keypoint of a figure but the arms' (an outstretched arm's grown hull may reach
    the other's shoulder) is in the other's region. Where they are apart, region j lies within figure j's keypoint
    box grown by the dilation and the drawing."""
    _, regions = two
    assert regions.shape == (2, 81, 480, 832) and regions.dtype == np.float32
    assert set(np.unique(regions)) == {0.0, 1.0}
    touched, arms_elsewhere = [], 0
    for frame in range(81):
        figures = keypoints(2, frame)
        assert figures[0][:, 0].mean() < figures[1][:, 0].mean()
        together = touching(frame)
        touched += [frame] if together else []
        for person, points in enumerate(figures):
            own, other = regions[person, frame][pixels(points)], regions[1 - person, frame][pixels(points)]
            assert own[list(HEAD)].all() and not other[list(HEAD)].any(), (frame, person)
            not_arms = [k for k in range(18) if k not in ARMS]
            assert not other[not_arms].any(), (frame, person, other)
            if together:
                assert own[not_arms].all(), (frame, person, own)
                arms_elsewhere += int((own == 0).sum())
                continue
            assert own.all(), (frame, person, own)
            reach = POSE_DILATION + DRAWN
            ys, xs = np.nonzero(regions[person, frame])
            (left, top), (right, bottom) = points.min(0), points.max(0)
            assert xs.min() >= left - reach and xs.max() <= right + reach, (frame, person)
            assert ys.min() >= top - reach and ys.max() <= bottom + reach, (frame, person)
    assert 3 <= len(touched) <= 12, touched  # the clip does test the frames where the people are not apart
    assert arms_elsewhere <= 2


def test_the_pose_video_shows_the_people_in_both_regions(two):
    """Every drawn pixel of the clip is in at least one region, and in both only where the figures come near each
    other (the overlap is a small part of either region)."""
    frames, regions = two
    drawn = frames.max(-1) > 64
    assert regions.max(0)[drawn].all()
    overlap = (regions[0] * regions[1]).sum((1, 2)) / regions.max(0).sum((1, 2))
    assert overlap.max() < 0.2 and np.median(overlap) < 0.05, overlap


def test_one_figure_one_region_covers_it_by_the_dilation():
    """The one-figure example clip with one person: every frame's region holds every pixel within the dilation
    (48) of every keypoint, and nothing farther than the dilation and the drawing from the keypoints' box; the
    frame's corners are out."""
    frames = read_video(REPO / "example_inputs" / "standin_example_pose.mp4")
    regions = people_regions(frames, 1).numpy()
    assert regions.shape == (1, 81, 480, 832)
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    ring = (POSE_DILATION - 1.5) * np.stack([np.cos(angles), np.sin(angles)], 1)
    for frame in range(81):
        (points,) = keypoints(1, frame)
        region = regions[0, frame]
        around = (points[:, None] + ring[None]).reshape(-1, 2)
        around = around[(around[:, 0] >= 0) & (around[:, 0] <= 831) & (around[:, 1] >= 0) & (around[:, 1] <= 479)]
        assert region[pixels(points)].all() and region[pixels(around)].all(), frame
        ys, xs = np.nonzero(region)
        reach = POSE_DILATION + DRAWN
        (left, top), (right, bottom) = points.min(0), points.max(0)
        assert left - reach <= xs.min() and xs.max() <= right + reach, frame
        assert top - reach <= ys.min() and ys.max() <= bottom + reach, frame
        assert not region[[0, 0, -1, -1], [0, -1, 0, -1]].any()


# ---------------------------------------------------------------------------------------------------------------------
# drawn blocks: the region of a filled rectangle is every pixel within the dilation of it

def grown(box, dilation, height=120, width=240):
    """Pixels within ``dilation`` (Euclidean, pixel centres) of the pixels x0..x1, y0..y1 (inclusive)."""
    x0, y0, x1, y1 = box
    y, x = np.mgrid[:height, :width]
    dx, dy = np.maximum(np.maximum(x0 - x, x - x1), 0), np.maximum(np.maximum(y0 - y, y - y1), 0)
    return (dx ** 2 + dy ** 2 <= dilation ** 2).astype(np.float32)


def canvas(boxes, colours, background=(0, 0, 0), height=120, width=240):
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = background
    for (x0, y0, x1, y1), colour in zip(boxes, colours):
        frame[y0:y1 + 1, x0:x1 + 1] = colour
    return frame


BOXES = [(150, 40, 170, 90), (20, 30, 40, 100), (90, 50, 110, 80)]  # drawn out of order: right, left, middle
COLOURS = [(255, 0, 0), (0, 255, 170), (170, 0, 255)]


def test_three_blocks_left_to_right_by_hand():
    """Three blocks drawn out of order on a dark grey background (itself above the threshold over black), as
    uint8, as floats and as a torch IMAGE: region j is the j-th block from the left grown by exactly the dilation
    (every pixel within 12 of it), the same each way; with no dilation, the block itself."""
    frames = np.stack([canvas(BOXES, COLOURS, background=(70, 70, 70))] * 3)
    regions = people_regions(frames, 3, dilation=12).numpy()
    for person, box in enumerate(sorted(BOXES)):
        for frame in range(3):
            assert np.array_equal(regions[person, frame], grown(box, 12)), (person, frame)
    assert np.array_equal(people_regions(frames.astype(np.float32) / 255, 3, dilation=12).numpy(), regions)
    assert np.array_equal(people_regions(torch.from_numpy(frames).float() / 255, 3, dilation=12).numpy(), regions)
    assert np.array_equal(people_regions(frames, 3, dilation=0).numpy()[0, 0], grown(sorted(BOXES)[0], 0))


def test_the_region_is_the_convex_hull_grown():
    """An arch (two legs and a top, one person): its region is its convex hull, the filled rectangle around it,
    grown by the dilation, so the arch's inside, farther than the dilation from every drawn pixel, is in it."""
    frames = canvas([(20, 20, 25, 100), (80, 20, 85, 100), (20, 20, 85, 25)], COLOURS)[None]
    region = people_regions(frames, 1, dilation=4).numpy()[0, 0]
    assert np.array_equal(region, grown((20, 20, 85, 100), 4)) and region[80, 52] == 1


def test_a_small_part_joins_the_nearest_person_and_a_speck_is_noise():
    """Two bodies and, 80 pixels right of the right one, a hand-sized part: the part joins the right body, it is not
    a person of its own (the grouping weighs components by their pixels: counted as points, the part is farther
    from the right body than that is from the left, and the bodies would make one person); a one-pixel speck (under
    1e-4 of the frame's 28,800 pixels: noise) is in no region."""
    frames = canvas([(20, 30, 50, 100), (90, 30, 120, 100), (200, 60, 205, 65)], COLOURS)[None]
    frames[0, 5, 160] = 255
    left, right = people_regions(frames, 2, dilation=4).numpy()[:, 0]
    assert np.array_equal(left, grown((20, 30, 50, 100), 4))
    assert right[62, 202] == 1 and left[62, 202] == 0 and right[62, 160] == 1  # the hull spans body and part
    assert left[5, 160] == 0 and right[5, 160] == 0


@pytest.mark.parametrize("seed", range(4))
def test_the_grouping_is_the_least_spread_cut_of_the_parts(seed):
    """Seven blocks of random sizes side by side, three people: person j's region holds exactly the blocks of the
    j-th group of the cut, found here by trying every cut into three runs of consecutive blocks, that has the least
    sum over the blocks' pixels of the squared distance from their block's centre x to their group's mean x."""
    rng = np.random.default_rng(seed)
    widths, heights = rng.integers(2, 14, 7), rng.integers(3, 40, 7)
    lefts = np.cumsum(np.concatenate([[10], widths[:-1] + rng.integers(8, 60, 6)]))
    boxes = [(int(x), 10, int(x + w - 1), int(10 + h - 1)) for x, w, h in zip(lefts, widths, heights)]
    frames = canvas(boxes, COLOURS * 3, height=60, width=int(lefts[-1] + widths[-1] + 10))[None]
    centres = np.array([(x0 + x1) / 2 for x0, _, x1, _ in boxes])
    weights = np.array([(x1 - x0 + 1) * (y1 - y0 + 1) for x0, y0, x1, y1 in boxes], float)

    def spread(members):
        mean = np.average(centres[members], weights=weights[members])
        return float((weights[members] * (centres[members] - mean) ** 2).sum())

    cuts = min(itertools.combinations(range(1, 7), 2),
               key=lambda cut: sum(spread(list(group)) for group in np.split(np.arange(7), list(cut))))
    regions = people_regions(frames, 3, dilation=0).numpy()[:, 0]
    for person, group in enumerate(np.split(np.arange(7), list(cuts))):
        for index, (x0, y0, x1, y1) in enumerate(boxes):
            inside = regions[person, y0:y1 + 1, x0:x1 + 1]
            assert inside.all() if index in group else not inside.any(), (seed, cuts, person, index)
        xs = np.nonzero(regions[person].any(0))[0]
        assert xs.min() == boxes[group[0]][0] and xs.max() == boxes[group[-1]][2]


def test_a_missing_person_keeps_the_previous_region_and_the_frames_before_the_first_full_one():
    """Frames: 0 the left block only (before any frame with two people), 1 both, 2 the left block moved 10 pixels
    right and the right one gone, 3 both, 4 both joined by a bar (one component). The right person keeps frame 1's
    region in frames 0 and 2 (frame 0 from the frame after it); the left one follows its block; in frame 4 each
    block goes to its own person (the bar is shared at the middle)."""
    a, b, moved, bar = (20, 30, 50, 90), (150, 30, 180, 90), (30, 30, 60, 90), (51, 55, 149, 60)
    frames = np.stack([canvas([a], COLOURS), canvas([a, b], COLOURS), canvas([moved], COLOURS),
                       canvas([a, b], COLOURS), canvas([a, b, bar], COLOURS)])
    left, right = people_regions(frames, 2, dilation=6).numpy()
    for frame in (0, 1, 3):
        assert np.array_equal(left[frame], grown(a, 6)), frame
    assert np.array_equal(left[2], grown(moved, 6))
    for frame in (0, 1, 2, 3):
        assert np.array_equal(right[frame], grown(b, 6)), frame
    assert left[4][60, 35] == 1 and right[4][60, 35] == 0 and right[4][60, 165] == 1 and left[4][60, 165] == 0
    assert left[4][57, 90] == 1 and right[4][57, 110] == 1  # the bar's left part is the left person's


def test_too_few_people_and_wrong_inputs_are_refused():
    with pytest.raises(ValueError, match="2 separate people"):
        people_regions(np.stack([canvas([(20, 30, 50, 90)], COLOURS)] * 2), 2)
    with pytest.raises(ValueError, match="frames, height, width, channels"):
        people_regions(np.zeros((4, 120, 240), np.uint8), 2)
    with pytest.raises(ValueError, match="people must be 1 to 4"):
        people_regions(np.zeros((1, 120, 240, 3), np.uint8), 5)


# ---------------------------------------------------------------------------------------------------------------------
# the node

@pytest.mark.comfyui
def test_the_node_schema(comfy):
    from comfyui_standin.nodes import references
    node = references.StandInRegionsFromPose
    assert node in references.NODES
    schema = node.GET_SCHEMA()
    assert (schema.node_id, schema.display_name, schema.category) == (
        "StandInRegionsFromPose", "Stand-In Regions from Pose Video", "Stand-In")
    assert len(schema.description) > 40
    assert [item.id for item in schema.inputs] == ["control_video", "people", "dilation", "threshold",
                                                      "width", "height"]
    assert all(item.tooltip for item in schema.inputs) and all(item.tooltip for item in schema.outputs)
    assert tuple(node.RETURN_TYPES) == ("MASK",) * 4
    assert [item.id for item in schema.outputs] == ["region_1", "region_2", "region_3", "region_4"]
    required = node.INPUT_TYPES()["required"]
    assert required["people"][1]["default"] == 2 and required["dilation"][1]["default"] == POSE_DILATION
    extension = asyncio.run(comfy.comfy_entrypoint())
    ids = [item.define_schema().node_id for item in asyncio.run(extension.get_node_list())]
    assert ids.count("StandInRegionsFromPose") == 1


@pytest.mark.comfyui
def test_the_node_on_the_pose_clip_wires_into_stand_in_references(comfy, two):
    """The clip as ComfyUI's IMAGE (floats [F, H, W, 3]): region_1 and region_2 are the core's regions, region_3 and
    region_4 empty; wired into Stand-In References they are its regions, and the token rule takes them for the
    81-frame 832 x 480 video (21 x 30 x 52 tokens): the token at figure j's nose in latent frame 0 is in region j
    only."""
    from comfyui_standin.nodes.install import REGIONS_KEY
    from comfyui_standin.nodes.references import StandInReferences, StandInRegionsFromPose
    frames, expected = two
    image = torch.from_numpy(frames).float() / 255
    out = StandInRegionsFromPose.execute(control_video=image, people=2, dilation=POSE_DILATION, threshold=0.25).args
    assert len(out) == 4
    for index in range(2):
        assert out[index].shape == (81, 480, 832) and np.array_equal(out[index].numpy(), expected[index])
    for empty in out[2:]:
        assert empty.shape == (1, 480, 832) and not empty.any()
    latents = [torch.randn(1, 16, 1, 64, 64) for _ in range(2)]
    references = StandInReferences.execute(reference_1={"samples": latents[0]}, reference_2={"samples": latents[1]},
                                           region_1=out[0], region_2=out[1]).args[0]
    regions = references[REGIONS_KEY]
    assert torch.equal(regions[0], out[0]) and torch.equal(regions[1], out[1])
    tokens = torch.stack([token_regions(region[None], (21, 30, 52))[0] for region in regions]).view(2, 21, 30, 52)
    for person, points in enumerate(keypoints(2, 0)):
        x, y = points[0]
        assert tokens[person, 0, int(y) // 16, int(x) // 16] and not tokens[1 - person, 0, int(y) // 16, int(x) // 16]


@pytest.mark.comfyui
def test_the_node_scales_the_regions_to_the_videos_size(comfy, two):
    """width and height: the regions are found at the control video's size and then scaled (bilinear) to the
    video's, here half of it in each direction: each output pixel is the mean of the 2x2 block it covers."""
    from comfyui_standin.nodes.references import StandInRegionsFromPose
    frames, expected = two
    image = torch.from_numpy(frames[:9]).float() / 255
    out = StandInRegionsFromPose.execute(control_video=image, people=2, dilation=POSE_DILATION, threshold=0.25,
                                         width=416, height=240).args
    full = StandInRegionsFromPose.execute(control_video=image, people=2, dilation=POSE_DILATION,
                                          threshold=0.25).args
    for index in range(2):
        halved = full[index].view(9, 240, 2, 416, 2).mean(dim=(2, 4))
        assert out[index].shape == (9, 240, 416)
        assert torch.allclose(out[index], halved, atol=1e-6)
    assert out[2].shape == (1, 240, 416) and not out[2].any()
