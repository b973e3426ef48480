"""The face swap's last step: the re-sampled frames put back into the ORIGINAL footage, only where the face went.

The face swap (:mod:`.swap`) hands Wan a fitted copy of the video (:class:`~.swap.SwapGeometry`: which original
frames, which rectangle of them, scaled to which size) with the reference face pasted in, and masks of where it went.
After sampling, every frame Wan gives back differs from the input everywhere a little (denoise 0.85). This module
keeps the original pixels everywhere except where the face was pasted:

  * the paste mask is feathered where it was made (the Wan frames' pixels): a Gaussian blur of radius ``feather``
    (kernel ``2 * feather + 1``, sigma ``feather / 3``, edges mirrored without repeating the edge pixel: OpenCV's
    BORDER_REFLECT_101), so the mask reaches at most ``feather`` pixels beyond where it was;
  * the feathered mask and the generated frame are mapped back onto the crop rectangle of the original frame
    (bilinear, pixel centres aligned: OpenCV's INTER_LINEAR; not resized when the fit did not scale);
  * ``out = original * (1 - m) + generated * m`` there; everywhere else, and wherever ``m`` is 0, the output is the
    original frame bit for bit.

The audio of the original (ComfyUI's AUDIO, whose sample 0 goes with frame 0, as Load Video and Create Video treat
it) is cut to the frames used: samples ``round(first * rate / fps)`` up to ``round((first + count) * rate / fps)``.
Pure numpy / OpenCV; ComfyUI's tensors come in through ``numpy()`` views.
"""
from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np

from .swap import SwapGeometry

FEATHER = 10  # pixels of the Wan frames
ASPECT_TOLERANCE = 0.01  # generated frames or masks of another size are accepted if their aspect ratio is this close


def _float_frame(image) -> np.ndarray:
    """One frame (numpy or a CPU/GPU torch tensor) as float32 numpy, without a copy where it already is one."""
    if hasattr(image, "detach"):
        image = image.detach()
        if image.device.type != "cpu":
            image = image.cpu()
        image = image.float().numpy()
    return np.asarray(image, np.float32)


def feather_mask(mask, feather: int = FEATHER) -> np.ndarray:
    """A paste mask [h, w] in 0..1, softened: Gaussian, radius ``feather`` px (kernel 2r+1, sigma r/3), mirrored
    edges (BORDER_REFLECT_101). ``feather`` 0 returns the mask as float32."""
    mask = np.ascontiguousarray(_float_frame(mask))
    if feather < 0:
        raise ValueError(f"feather must be 0 or more pixels, got {feather}")
    if feather == 0:
        return mask
    size = 2 * feather + 1
    return cv2.GaussianBlur(mask, (size, size), sigmaX=feather / 3, sigmaY=feather / 3,
                            borderType=cv2.BORDER_REFLECT_101)


def _to_crop(image: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """``image`` resized (bilinear, centres aligned) to ``crop_size`` (width, height); as it is when it already fits."""
    if (image.shape[1], image.shape[0]) == tuple(crop_size):
        return image
    return cv2.resize(np.ascontiguousarray(image), tuple(crop_size), interpolation=cv2.INTER_LINEAR)


def _check_size(what: str, shape, geometry: SwapGeometry) -> None:
    height, width = shape
    fit_w, fit_h = geometry.size
    if abs(width * fit_h - height * fit_w) > ASPECT_TOLERANCE * fit_w * height:
        raise ValueError(f"the {what} are {width}x{height}, but Stand-In Face Swap Paste made {fit_w}x{fit_h} frames "
                         "(and an upscale of them keeps their aspect ratio): use the frames and masks of the same "
                         "face swap")


def check_inputs(originals, generated, masks, geometry: SwapGeometry) -> None:
    """Raise ValueError (with what to connect) unless the three batches belong to ``geometry``'s face swap."""
    count, height, width = len(originals), *tuple(originals[0].shape[:2])
    if (width, height) != geometry.source_size or count != geometry.source_frames:
        raise ValueError(
            f"original_images are {count} frames of {width}x{height}, but the face swap was made from "
            f"{geometry.source_frames} frames of {geometry.source_size[0]}x{geometry.source_size[1]}: connect the "
            "same images that went into Stand-In Face Swap Paste (Get Video Components' images)")
    for what, batch in (("generated frames", generated), ("masks", masks)):
        if len(batch) != geometry.frame_count:
            raise ValueError(f"there are {len(batch)} {what}, but Stand-In Face Swap Paste made {geometry.frame_count}"
                             " frames: connect VAE Decode's images (of the sampled latent of those frames) and the "
                             "paste's masks")
        _check_size(what, tuple(batch[0].shape[:2]), geometry)


def composite_frames(originals, generated, masks, geometry: SwapGeometry, feather: int = FEATHER,
                     progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """The original frames ``geometry.frames`` at their own size, with the generated frames through the feathered,
    mapped-back paste masks. ``originals`` [F, H, W, 3] (all the video's frames), ``generated`` [n, h, w, 3] and
    ``masks`` [n, h, w] (the paste's, any size of the paste's aspect ratio), float in 0..1 (numpy or torch).
    Returns float32 [n, H, W, 3]."""
    check_inputs(originals, generated, masks, geometry)
    width, height = geometry.source_size
    left, top, crop_w, crop_h = geometry.crop
    out = np.empty((geometry.frame_count, height, width, 3), np.float32)
    for index, source in enumerate(geometry.frames):
        original = _float_frame(originals[source])[..., :3]
        out[index] = original
        weight = np.clip(_to_crop(feather_mask(masks[index], feather), (crop_w, crop_h)), 0.0, 1.0)
        rows, cols = np.nonzero(weight.any(axis=1))[0], np.nonzero(weight.any(axis=0))[0]
        if len(rows):
            y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            frame = _to_crop(_float_frame(generated[index])[..., :3], (crop_w, crop_h))
            m = weight[y0:y1, x0:x1, None]
            box = out[index, top + y0:top + y1, left + x0:left + x1]
            box[...] = box * (1.0 - m) + frame[y0:y1, x0:x1] * m
        if progress is not None:
            progress(index + 1, geometry.frame_count)
    return out


def audio_span(geometry: SwapGeometry, fps: float, sample_rate: int) -> tuple[int, int]:
    """The samples [start, stop) that go with the frames used, at ``fps`` frames and ``sample_rate`` samples per
    second (sample 0 with frame 0)."""
    if not fps or fps <= 0:
        raise ValueError(f"the video's fps is needed to cut the audio to the frames used, got {fps!r}: connect Get "
                         "Video Components' fps")
    if sample_rate <= 0:
        raise ValueError(f"the audio's sample rate must be positive, got {sample_rate}")
    start = round(geometry.first_frame * sample_rate / fps)
    stop = round((geometry.first_frame + geometry.frame_count) * sample_rate / fps)
    return start, stop


def trim_audio(waveform, sample_rate: int, geometry: SwapGeometry, fps: float):
    """``waveform`` [..., samples] cut to :func:`audio_span` (shorter where the audio ends first), a contiguous
    copy of the same type (numpy or torch)."""
    start, stop = audio_span(geometry, fps, sample_rate)
    part = waveform[..., start:stop]
    return part.clone() if hasattr(part, "clone") else np.ascontiguousarray(part)
