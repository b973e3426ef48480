"""Regions: each reference bound to the part of the video where its person is (this pack's own, not in the paper).

A video token inside reference j's region attends to [video; ref_j] only; a token in several regions to the video
and each of those references (the union); a token outside every region follows ``outside``: "all" (every
reference, the official several-references behaviour) or "none" (no reference: the base model there).

Pixel masks become token masks by :func:`token_regions`: latent frame 0 is pixel frame 0 and latent frame t >= 1 is
pixel frames 4t-3 .. 4t (Wan's VAE), one latent pixel is 8 x 8 pixels, one token 2 x 2 latent pixels (Wan's patch),
so a token covers 16 x 16 pixels of one frame (t = 0) or four frames; it is in the region when at least half of the
pixels it covers are (tokens the patch padding adds past the frame count only the pixels that exist).
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .attention import AttentionFn, Strength, reference_logit_bias, sdpa_attention, strengths_of

OUTSIDE = ("all", "none")
VAE_TIME, VAE_SPACE = 4, 8  # Wan2.1's VAE: 4 frames and 8 x 8 pixels per latent pixel (after its first frame)


def token_regions(masks: torch.Tensor, token_grid: Sequence[int], patch_size: Sequence[int] = (1, 2, 2),
                  threshold: float = 0.5) -> torch.Tensor:
    """Pixel masks [N, T, H, W] (or [N, 1, H, W] for every frame), values in 0..1, of a video whose token grid is
    ``token_grid`` (F, H', W') -> bool [N, F*H'*W'], row-major over (frames, rows, cols) like the video tokens."""
    if masks.ndim != 4:
        raise ValueError(f"region masks must be [N, frames, height, width], got {tuple(masks.shape)}")
    frames, rows, cols = token_grid
    if patch_size[0] != 1:
        raise ValueError("only Wan's patch of one latent frame is supported")
    masks = masks.float()
    if masks.shape[1] == 1:
        latent_frames = masks.expand(-1, frames, -1, -1)
    else:
        if masks.shape[1] != VAE_TIME * (frames - 1) + 1:
            raise ValueError(f"region masks have {masks.shape[1]} frames; a video of {frames} latent frames has "
                             f"{VAE_TIME * (frames - 1) + 1} (4n+1), or give one mask for every frame")
        later = masks[:, 1:].unflatten(1, (frames - 1, VAE_TIME)).mean(2)
        latent_frames = torch.cat([masks[:, :1], later], dim=1)  # [N, F, H, W]: each latent frame's coverage
    size = VAE_SPACE * patch_size[1], VAE_SPACE * patch_size[2]
    height, width = latent_frames.shape[-2:]
    if -(-height // size[0]) != rows or -(-width // size[1]) != cols:
        raise ValueError(f"region masks of {height} x {width} pixels do not fit a video of {rows} x {cols} tokens "
                         f"({rows * size[0]} x {cols * size[1]} pixels, up to the patch padding)")
    covered = F.avg_pool2d(latent_frames, size, ceil_mode=True, divisor_override=1)  # summed over each token
    counted = F.avg_pool2d(torch.ones_like(latent_frames[:1]), size, ceil_mode=True, divisor_override=1)
    return (covered / counted >= threshold).flatten(1)


def regional_attention(queries: torch.Tensor, video_keys: torch.Tensor, video_values: torch.Tensor,
                       ref_keys: torch.Tensor, ref_values: torch.Tensor, regions: torch.Tensor, heads: int,
                       strength: Strength = 1.0, outside: str = "all",
                       attention: AttentionFn = sdpa_attention) -> torch.Tensor:
    """Video queries [B, S, width] over the video keys and, per token, the references its regions name.

    ``ref_keys``/``ref_values`` [1 or B, N*R, width] hold the N references in order; ``regions`` bool [N, S] says
    which tokens are in which reference's region. The tokens are grouped by the set of references they attend to,
    and each group's queries attend to [video; those references] with the model's own attention function: no
    [S, S + N*R] mask is built.
    """
    if outside not in OUTSIDE:
        raise ValueError(f"outside must be one of {OUTSIDE}, got {outside!r}")
    count, seq = regions.shape
    batch, ref_len = queries.shape[0], ref_keys.shape[1]
    if regions.shape[1] != queries.shape[1] or ref_len % count:
        raise ValueError(f"regions {tuple(regions.shape)} do not fit {queries.shape[1]} video tokens and "
                         f"{ref_len} reference keys")
    per = ref_len // count
    strengths = strengths_of(strength)
    strengths = strengths * count if len(strengths) == 1 else strengths
    ref_keys, ref_values = ref_keys.expand(batch, -1, -1), ref_values.expand(batch, -1, -1)
    chosen = regions.clone()
    if outside == "all":
        chosen[:, ~regions.any(0)] = True
    codes = (chosen.long() * (2 ** torch.arange(count, device=regions.device))[:, None]).sum(0)  # [S]
    out = torch.empty_like(queries)
    for code in codes.unique().tolist():
        rows = (codes == code).nonzero().squeeze(1)
        picked = [j for j in range(count) if code >> j & 1]
        keys, values = video_keys, video_values
        if picked:
            keys = torch.cat([video_keys] + [ref_keys[:, j * per:(j + 1) * per] for j in picked], dim=1)
            values = torch.cat([video_values] + [ref_values[:, j * per:(j + 1) * per] for j in picked], dim=1)
        mask = _bias(seq, per, [strengths[j] for j in picked], queries) if picked else None
        out[:, rows] = attention(queries[:, rows], keys, values, heads, mask=mask)
    return out


def _bias(video_len: int, per: int, strengths: list, like: torch.Tensor) -> Optional[torch.Tensor]:
    if all(value == 1 for value in strengths):
        return None
    return reference_logit_bias(video_len, per * len(strengths), strengths, like.dtype, like.device)


# ---------------------------------------------------------------------------------------------------------------------
# Regions from a control video (pose skeletons, edges ...): one region per person, left to right

POSE_DILATION = 48  # pixels: one head height of a full-body person at 480 pixels (see people_regions)
POSE_THRESHOLD = 0.25
POSE_JOIN = 3  # pixels: parts this close are one component
POSE_MIN_AREA = 1e-4  # components of fewer pixels than this fraction of the frame are codec noise


def people_regions(frames, people: int, dilation: float = POSE_DILATION, threshold: float = POSE_THRESHOLD,
                   join: int = POSE_JOIN, min_area: float = POSE_MIN_AREA) -> torch.Tensor:
    """One region per person, left to right, from control frames [F, H, W, C] (0..1 floats or uint8; numpy or torch):
    float 0/1 masks [people, F, H, W], person j the j-th from the left.

    The rule, per frame:

    1. Foreground: the pixels where some channel differs from the background colour by more than ``threshold`` (of the
       0..1 range). The background colour is the per-channel median of the border pixels of every frame: the frames
       are skeletons (or other control drawings) on one dark colour. The OpenPose colours all have a channel at full
       value, so 0.25 keeps a skeleton's lines and their anti-aliased edges and drops the codec's ringing.
    2. Components: the foreground's 8-connected components after growing it by ``join`` pixels (parts that close
       are one); components of fewer than ``min_area`` of the frame's pixels are noise and dropped.
    3. People, in a frame with at least ``people`` components: the components, sorted by the x of their centroid, are
       cut into ``people`` consecutive groups so that the sum over foreground pixels of the squared distance from the
       pixel's component centroid x to its group's mean x is least (exact 1-D k-means of the pixels, each component
       kept whole: a stray hand or a speck joins the nearest body rather than becoming a person). Group j (from the
       left) is person j.
    4. A frame with fewer components (people touching, or someone out of the frame) keeps the people of the
       neighbouring frame: each foreground pixel goes to the person whose pixels there are nearest, and a person who
       gets no pixel (missing here) keeps their region of that frame. Frames are assigned from the first frame with
       ``people`` components onwards, then the frames before it backwards from it (their neighbour is the next
       frame). No such frame at all is an error. Where one person's limb sweeps across another's while they touch,
       its tip can go to the other person for those frames; heads and bodies, which move less, stay their own.
    5. Region of person j: the convex hull of their pixels, grown by ``dilation`` pixels (every pixel within that
       Euclidean distance). The default 48 pixels is one head height (an eighth of the body) of a full-body person
       at 480 pixels; a skeleton's head keypoints are the eyes, ears and nose, and the crown, hair and chin lie within
       about half a head of them, the shoulders and clothes within a quarter of a head of the limb lines, so the
       grown hull covers the head and shoulders with room for 16-pixel tokens at its edge. Give more for people
       nearer the camera.

    Regions of different people may overlap (Stand-In takes the union there). People are ordered per frame by x, so
    two people who cross change places (and regions) as they pass.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"control frames must be [frames, height, width, channels], got {frames.shape}")
    if not 1 <= people <= 4:
        raise ValueError(f"people must be 1 to 4, got {people}")
    if dilation < 0 or not 0 < threshold < 1:
        raise ValueError(f"dilation must be >= 0 and threshold in (0, 1), got {dilation} and {threshold}")
    scale = 255.0 if frames.dtype == np.uint8 else 1.0
    frames = frames[..., :3]
    count, height, width = frames.shape[:3]
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    background = np.median(border.reshape(-1, frames.shape[-1]).astype(np.float32) / scale, axis=0)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * join + 1, 2 * join + 1))
    smallest = min_area * height * width

    found = []  # per frame: [components], each (pixels x, pixels y) of the foreground
    for frame in frames:
        foreground = (np.abs(frame.astype(np.float32) / scale - background).max(-1) > threshold).astype(np.uint8)
        labels = cv2.connectedComponents(cv2.dilate(foreground, kernel) if join > 0 else foreground, connectivity=8)[1]
        labels = labels * foreground  # the components of the foreground's own pixels
        ys, xs = np.nonzero(labels)
        ids = labels[ys, xs]
        order = np.argsort(ids, kind="stable")
        ys, xs, ids = ys[order], xs[order], ids[order]
        cuts = np.flatnonzero(np.diff(ids)) + 1
        found.append([(x, y) for x, y in zip(np.split(xs, cuts), np.split(ys, cuts)) if x.size >= smallest])

    start = next((i for i, parts in enumerate(found) if len(parts) >= people), None)
    if start is None:
        most = max(len(parts) for parts in found)
        raise ValueError(f"no frame of the control video shows {people} separate people (at most {most} apart): "
                         "lower the threshold, or draw the regions (Stand-In Region)")
    masks = np.zeros((people, count, height, width), np.float32)
    assigned = {}  # frame -> per person: (x, y) of their pixels, or those they keep from the neighbouring frame
    for index in list(range(start, count)) + list(range(start - 1, -1, -1)):
        neighbour = index - 1 if index > start else index + 1 if index < start else None
        parts = found[index]
        if len(parts) >= people:
            pixels = _group_by_x(parts, people)
        elif parts:
            pixels = _nearest_people(parts, assigned[neighbour], height, width)
        else:
            pixels = [None] * people
        for person, own in enumerate(pixels):
            if own is None:
                masks[person, index] = masks[person, neighbour]
                pixels[person] = assigned[neighbour][person]
            else:
                masks[person, index] = _grown_hull(own, dilation, height, width)
        assigned[index] = pixels
    return torch.from_numpy(masks)


def _group_by_x(parts, people: int):
    """The components cut into ``people`` consecutive groups by centroid x, least pixel-weighted squared spread."""
    centres = np.array([x.mean() for x, _ in parts])
    weights = np.array([x.size for x, _ in parts], np.float64)
    order = np.argsort(centres, kind="stable")
    centres, weights = centres[order], weights[order]
    total_w = np.concatenate([[0.0], np.cumsum(weights)])
    total_wx = np.concatenate([[0.0], np.cumsum(weights * centres)])
    total_wxx = np.concatenate([[0.0], np.cumsum(weights * centres ** 2)])

    def spread(begin, end):  # components begin .. end-1 as one group (begin: an array)
        w, wx = total_w[end] - total_w[begin], total_wx[end] - total_wx[begin]
        return total_wxx[end] - total_wxx[begin] - wx * wx / w

    size = len(parts)
    cost = np.full((people + 1, size + 1), np.inf)
    cut = np.zeros((people + 1, size + 1), int)
    cost[0, 0] = 0.0
    for groups in range(1, people + 1):
        for end in range(groups, size - (people - groups) + 1):
            begins = np.arange(groups - 1, end)
            options = cost[groups - 1, begins] + spread(begins, end)
            best = int(np.argmin(options))
            cost[groups, end], cut[groups, end] = options[best], begins[best]
    bounds, end = [], size
    for groups in range(people, 0, -1):
        bounds.append((cut[groups, end], end))
        end = cut[groups, end]
    grouped = []
    for begin, end in reversed(bounds):
        members = [parts[i] for i in order[begin:end]]
        grouped.append((np.concatenate([x for x, _ in members]), np.concatenate([y for _, y in members])))
    return grouped


def _nearest_people(parts, previous, height: int, width: int):
    """Each foreground pixel to the person whose pixels in ``previous`` are nearest; None for a person with none."""
    xs, ys = np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])
    distances = []
    for x, y in previous:
        away = np.ones((height, width), np.uint8)
        away[y, x] = 0
        distances.append(cv2.distanceTransform(away, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[ys, xs])
    nearest = np.argmin(np.stack(distances), axis=0)
    return [(xs[nearest == person], ys[nearest == person]) if (nearest == person).any() else None
            for person in range(len(previous))]


def _grown_hull(pixels, dilation: float, height: int, width: int):
    """The convex hull of the pixels (x, y), filled, grown by ``dilation`` pixels (Euclidean)."""
    x, y = pixels
    hull = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.stack([x, y], 1).astype(np.int32)), 1)
    hull[y, x] = 1
    if dilation <= 0:
        return hull.astype(np.float32)
    return (cv2.distanceTransform(1 - hull, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= dilation).astype(np.float32)
