"""The face-swap composite's expectation, written out pixel by pixel in numpy (float64) without the pack's code or
OpenCV: a Gaussian from its formula, bilinear resizing from its formula, the blend, and where the composite may touch
the original at all. Used by tests/test_swap.py (core) and tests/test_nodes_swap.py (nodes)."""
import math

import numpy as np


def gaussian_feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """[h, w] -> float64: weights exp(-k^2 / (2 sigma^2)) for k in -radius..radius, sigma = radius / 3, summing to 1;
    rows then columns, the edges mirrored without repeating the edge pixel (numpy's 'reflect')."""
    mask = np.asarray(mask, np.float64)
    if radius == 0:
        return mask.copy()
    sigma = radius / 3
    weights = np.array([math.exp(-k * k / (2 * sigma * sigma)) for k in range(-radius, radius + 1)])
    weights /= weights.sum()
    padded = np.pad(mask, radius, mode="reflect")
    rows = sum(weights[k] * padded[:, k:k + mask.shape[1]] for k in range(2 * radius + 1))
    return sum(weights[k] * rows[k:k + mask.shape[0], :] for k in range(2 * radius + 1))


def _taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear with pixel centres aligned: output pixel i samples the input at (i + 0.5) * in / out - 0.5, clamped
    to the first and last pixel. Returns the two input indices and the weight of the second."""
    position = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
    low = np.floor(position).astype(int)
    weight = position - low
    weight[low < 0], low[low < 0] = 0.0, 0
    last = low >= in_size - 1
    weight[last], low[last] = 0.0, in_size - 1
    return low, np.minimum(low + 1, in_size - 1), weight


def bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """[h, w] or [h, w, C] -> float64 [height, width(, C)] by :func:`_taps` in each direction."""
    image = np.asarray(image, np.float64)
    x0, x1, wx = _taps(width, image.shape[1])
    y0, y1, wy = _taps(height, image.shape[0])
    wx = wx.reshape((1, -1) + (1,) * (image.ndim - 2))
    wy = wy.reshape((-1,) + (1,) * (image.ndim - 1))
    cols = image[:, x0] * (1 - wx) + image[:, x1] * wx
    return cols[y0] * (1 - wy) + cols[y1] * wy


def expected_frame(original, generated, mask, geometry, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """The composite of one frame, float64 [H, W, 3], and the weight of the generated frame [H, W]: the paste mask
    feathered at its own size, the mask and the generated frame resized to the crop rectangle, placed there, and
    ``original * (1 - m) + generated * m`` for every pixel."""
    left, top, crop_w, crop_h = geometry.crop
    weight = np.zeros(np.asarray(original).shape[:2])
    weight[top:top + crop_h, left:left + crop_w] = bilinear(gaussian_feather(mask, radius), crop_w, crop_h)
    placed = np.zeros(np.asarray(original).shape, np.float64)
    placed[top:top + crop_h, left:left + crop_w] = bilinear(generated, crop_w, crop_h)
    m = weight[..., None]
    return np.asarray(original, np.float64) * (1 - m) + placed * m, weight


def reach(mask, geometry, radius: int) -> np.ndarray:
    """bool [H, W]: where the composite may differ from the original. The paste mask's non-zero pixels grown by
    ``radius`` in x and y (a Gaussian of that radius reaches no further), then every original pixel inside the crop
    whose bilinear taps touch one of them."""
    mask = np.asarray(mask) > 0
    height, width = mask.shape
    grown = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            source = mask[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)]
            grown[max(0, -dy):height + min(0, -dy), max(0, -dx):width + min(0, -dx)] |= source
    left, top, crop_w, crop_h = geometry.crop
    x0, x1, _ = _taps(crop_w, width)
    y0, y1, _ = _taps(crop_h, height)
    touched = np.zeros((crop_h, crop_w), bool)
    for ys in (y0, y1):
        for xs in (x0, x1):
            touched |= grown[ys][:, xs]
    out = np.zeros((geometry.source_size[1], geometry.source_size[0]), bool)
    out[top:top + crop_h, left:left + crop_w] = touched
    return out


def read_audio(path) -> tuple[np.ndarray, int]:
    """A file's first audio stream decoded by PyAV: float32 [channels, samples] and the sample rate."""
    import av
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        chunks = [frame.to_ndarray().reshape(stream.codec_context.channels, -1) if frame.format.is_planar
                  else frame.to_ndarray().reshape(-1, stream.codec_context.channels).T
                  for frame in container.decode(stream)]
    return np.concatenate(chunks, axis=1).astype(np.float32), rate
